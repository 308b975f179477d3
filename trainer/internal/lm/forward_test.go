package lm

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
)

// tinyConfig is small enough for every test to compile and run its graphs
// in well under a second, and has every feature of the real shape: more
// than one block and head, FF ≠ Dim.
func tinyConfig() onnxmodel.LMConfig {
	return onnxmodel.LMConfig{Vocab: 256, Context: 16, Dim: 16, Layers: 2, Heads: 2, FF: 24}
}

func tinyLM(t testing.TB, seed uint64) onnxmodel.LM {
	t.Helper()
	m, err := onnxmodel.NewLM(tinyConfig(), seed)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func randomTokens(r *rand.Rand, batch, seq int) ([][]int32, [][]int64) {
	t32 := make([][]int32, batch)
	t64 := make([][]int64, batch)
	for b := range batch {
		for range seq {
			v := r.IntN(256)
			t32[b] = append(t32[b], int32(v))
			t64[b] = append(t64[b], int64(v))
		}
	}
	return t32, t64
}

// logitsDiff is the largest |a − b| over all logits, and the largest |b|.
func logitsDiff(a, b [][][]float32) (diff, scale float64) {
	for i := range a {
		for j := range a[i] {
			for k := range a[i][j] {
				diff = max(diff, math.Abs(float64(a[i][j][k])-float64(b[i][j][k])))
				scale = max(scale, math.Abs(float64(b[i][j][k])))
			}
		}
	}
	return diff, scale
}

// referenceTolerance bounds |GoMLX float32 − reference float64| on the
// logits: float32 rounding through a few blocks.
const referenceTolerance = 1e-4

func TestRunnerMatchesReference(t *testing.T) {
	fresh := tinyLM(t, 3)
	// A fresh model's logits are ~0.3; scaling the final LayerNorm makes
	// them ~10, so that float32 error would show.
	sharp := tinyLM(t, 3)
	for i := range sharp.FinalNormScale {
		sharp.FinalNormScale[i] *= 40
	}
	for name, m := range map[string]onnxmodel.LM{"fresh": fresh, "sharp": sharp} {
		run, err := NewRunner(m)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(4, 5))
		for _, seq := range []int{1, 7, tinyConfig().Context} {
			t32, t64 := randomTokens(r, 3, seq)
			got, err := run.Logits(t32)
			if err != nil {
				t.Fatal(err)
			}
			want, err := m.Forward(t64)
			if err != nil {
				t.Fatal(err)
			}
			diff, scale := logitsDiff(got, want)
			t.Logf("%s, seq %d: max |GoMLX − reference| = %.3g (logits up to %.3g)", name, seq, diff, scale)
			if diff > referenceTolerance*max(1, scale) {
				t.Errorf("%s, seq %d: logits differ by %g", name, seq, diff)
			}
		}
	}
}
