package onnxruntime_test

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
)

// lmTolerance bounds how far ONNX Runtime's float32 logits may be from the
// float64 reference: max |Δ| ≤ lmTolerance · max(1, max |logit|). Four
// blocks of float32 matmuls, LayerNorms and softmaxes land near 1e-6 of
// the logits' scale; a wrong op (a mask off by one, heads split the wrong
// way, two tensors swapped) moves them by far more than 1e-4 with the sharp
// weights below.
const lmTolerance = 1e-4

// smallLM is a quick shape with everything the default has (several
// blocks, several heads, FF ≠ Dim); Context is short so that seq =
// Context is cheap under -race.
var smallLM = onnxmodel.LMConfig{Vocab: 256, Context: 16, Dim: 32, Layers: 2, Heads: 4, FF: 64}

func newLM(t testing.TB, cfg onnxmodel.LMConfig, seed uint64) onnxmodel.LM {
	t.Helper()
	m, err := onnxmodel.NewLM(cfg, seed)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// sharpLM is an LM whose weights are redrawn large enough that attention is
// peaked (score spread of a few units per head), LayerNorm scales and
// shifts are far from 1 and 0, and the logits spread over several units:
// NewLM's training start is close to uniform attention, where a broken
// mask or head layout would hide under the tolerance.
func sharpLM(t testing.TB, cfg onnxmodel.LMConfig, seed uint64) onnxmodel.LM {
	t.Helper()
	m := newLM(t, cfg, seed)
	for i, p := range m.Params() {
		center, limit := 0.0, 0.5
		switch {
		case strings.HasSuffix(p.Name, ".scale"):
			center = 1
		case strings.HasSuffix(p.Name, "mlp.w2"):
			limit = 3.5 / math.Sqrt(float64(cfg.FF))
		case len(p.Shape) == 2:
			limit = 3.5 / math.Sqrt(float64(cfg.Dim))
		}
		for j, r := range onnxmodel.RandomInputs(len(p.Data), seed<<16+uint64(i)) {
			p.Data[j] = float32(center + float64(r)*limit)
		}
	}
	return m
}

// lmTokens returns batch sequences of seq bytes drawn from seed.
func lmTokens(batch, seq int, seed uint64) [][]int64 {
	r := onnxmodel.RandomInputs(batch*seq, seed)
	tokens := make([][]int64, batch)
	for b := range tokens {
		tokens[b] = make([]int64, seq)
		for i := range tokens[b] {
			tokens[b][i] = int64((r[b*seq+i] + 1) * 128) // [-1, 1) → 0..255
		}
	}
	return tokens
}

func lmSession(t testing.TB, m onnxmodel.LM, opts onnxruntime.Options) *onnxruntime.Session {
	t.Helper()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return newSession(t, b, opts)
}

// runLM checks tokens with the model's own input check and runs them.
func runLM(s *onnxruntime.Session, cfg onnxmodel.LMConfig, tokens [][]int64) (onnxruntime.Tensor, error) {
	shape, ids, err := cfg.InputIDs(tokens)
	if err != nil {
		return onnxruntime.Tensor{}, err
	}
	out, err := s.Run(map[string]onnxruntime.Tensor{onnxmodel.LMInput: {Shape: shape, Int64: ids}})
	if err != nil {
		return onnxruntime.Tensor{}, err
	}
	return out[onnxmodel.LMLogits], nil
}

// compareLogits checks ONNX Runtime's logits against the reference's and
// returns the largest |Δ| and the logits' scale (largest |logit|).
func compareLogits(want [][][]float32, got onnxruntime.Tensor, vocab int) (maxDiff, scale float64, err error) {
	batch, seq := len(want), len(want[0])
	if wantShape := []int64{int64(batch), int64(seq), int64(vocab)}; !reflect.DeepEqual(got.Shape, wantShape) || got.Float32 == nil {
		return 0, 0, fmt.Errorf("logits: shape %v (float32 %v), want float32 %v", got.Shape, got.Float32 != nil, wantShape)
	}
	for b := range want {
		for i := range want[b] {
			for v, w := range want[b][i] {
				scale = max(scale, math.Abs(float64(w)))
				g := got.Float32[(b*seq+i)*vocab+v]
				d := math.Abs(float64(g - w))
				if math.IsNaN(d) {
					return 0, 0, fmt.Errorf("logits[%d][%d][%d] = %v, reference %v", b, i, v, g, w)
				}
				maxDiff = max(maxDiff, d)
			}
		}
	}
	if maxDiff > lmTolerance*max(1, scale) {
		return maxDiff, scale, fmt.Errorf("max |Δ| %.3g > %g · max(1, %.3g)", maxDiff, lmTolerance, scale)
	}
	return maxDiff, scale, nil
}

// TestLMMatchesReference runs LMs written by onnxmodel through ONNX Runtime
// and compares every logit with the pure-Go reference, for batches of 1 and
// 3 and sequences of 1, 7 and Context tokens, with ONNX Runtime's graph
// optimizations off (the graph as written) and on (fused LayerNorm, GELU,
// MatMul+Add, as a device runs it).
func TestLMMatchesReference(t *testing.T) {
	t.Parallel()
	models := []struct {
		name string
		lm   onnxmodel.LM
	}{
		{"small/sharp", sharpLM(t, smallLM, 1)},
		{"small/init", newLM(t, smallLM, 2)},
		{"default/init", newLM(t, onnxmodel.DefaultLMConfig(), 3)},
		{"default/sharp", sharpLM(t, onnxmodel.DefaultLMConfig(), 4)},
	}
	var worst float64
	for _, mc := range models {
		cfg := mc.lm.Config
		for _, oc := range []struct {
			name string
			opts onnxruntime.Options
		}{
			{"opt=off", onnxruntime.Options{IntraOpThreads: 1, GraphOptimization: onnxruntime.OptimizeDisabled}},
			{"opt=all", onnxruntime.Options{GraphOptimization: onnxruntime.OptimizeAll}},
		} {
			s := lmSession(t, mc.lm, oc.opts)
			for _, batch := range []int{1, 3} {
				for _, seq := range []int{1, 7, cfg.Context} {
					name := fmt.Sprintf("%s/%s/batch=%d/seq=%d", mc.name, oc.name, batch, seq)
					tokens := lmTokens(batch, seq, uint64(batch*1000+seq))
					want, err := mc.lm.Forward(tokens)
					if err != nil {
						t.Fatalf("%s: reference: %v", name, err)
					}
					got, err := runLM(s, cfg, tokens)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					d, scale, err := compareLogits(want, got, cfg.Vocab)
					if err != nil {
						t.Errorf("%s: %v", name, err)
					}
					t.Logf("%s: max |Δ| %.3g, max |logit| %.3g, relative %.3g", name, d, scale, d/max(1, scale))
					worst = max(worst, d/max(1, scale))
				}
			}
		}
	}
	t.Logf("worst max |Δ| / max(1, max |logit|): %.3g (tolerance %g)", worst, lmTolerance)
}

func TestLMSessionIO(t *testing.T) {
	t.Parallel()
	s := lmSession(t, newLM(t, smallLM, 1), onnxruntime.Options{IntraOpThreads: 1})
	wantIn := []onnxruntime.TensorInfo{{Name: onnxmodel.LMInput, Type: onnxruntime.Int64, Shape: []int64{-1, -1}}}
	wantOut := []onnxruntime.TensorInfo{{Name: onnxmodel.LMLogits, Type: onnxruntime.Float32, Shape: []int64{-1, -1, 256}}}
	if got := s.Inputs(); !reflect.DeepEqual(got, wantIn) {
		t.Errorf("Inputs = %v, want %v", got, wantIn)
	}
	if got := s.Outputs(); !reflect.DeepEqual(got, wantOut) {
		t.Errorf("Outputs = %v, want %v", got, wantOut)
	}
}

// TestLMCausal: through ONNX Runtime, changing the token at position p
// leaves the logits at positions before p bit-for-bit unchanged (masked
// attention weights are exactly 0), changes them from p on, and leaves the
// other sequences of the batch alone.
func TestLMCausal(t *testing.T) {
	t.Parallel()
	m := sharpLM(t, smallLM, 5)
	s := lmSession(t, m, onnxruntime.Options{IntraOpThreads: 1})
	vocab := smallLM.Vocab
	seq := smallLM.Context
	at := func(x onnxruntime.Tensor, b, i int) []float32 {
		return x.Float32[(b*seq+i)*vocab : (b*seq+i+1)*vocab]
	}
	for _, p := range []int{0, 1, seq / 2, seq - 1} {
		tokens := lmTokens(2, seq, 77)
		before, err := runLM(s, smallLM, tokens)
		if err != nil {
			t.Fatal(err)
		}
		tokens[1][p] = (tokens[1][p] + 1 + int64(p)) % int64(vocab)
		after, err := runLM(s, smallLM, tokens)
		if err != nil {
			t.Fatal(err)
		}
		for i := range seq {
			if !reflect.DeepEqual(at(before, 0, i), at(after, 0, i)) {
				t.Errorf("p=%d: sequence 0, position %d changed with a token of sequence 1", p, i)
			}
			same := reflect.DeepEqual(at(before, 1, i), at(after, 1, i))
			if i < p && !same {
				t.Errorf("p=%d: position %d changed with a later token", p, i)
			}
			if i >= p && same {
				t.Errorf("p=%d: position %d did not change with the token at %d", p, i, p)
			}
		}
	}
}

// TestLMBadInputs: a sequence longer than Context, a token past the
// vocabulary and an empty sequence are refused by the input check with
// ErrInvalidTokens and, sent anyway, by ONNX Runtime (the position or token
// Gather is out of range) — never cut short or wrapped into an answer. A
// negative token is the one case the graph does not refuse (ONNX's Gather
// counts it from the end), which is why callers check with InputIDs.
func TestLMBadInputs(t *testing.T) {
	t.Parallel()
	m := newLM(t, smallLM, 6)
	s := lmSession(t, m, onnxruntime.Options{IntraOpThreads: 1})
	tooLong := lmTokens(1, smallLM.Context+1, 1)
	tooBig := lmTokens(2, 4, 2)
	tooBig[1][3] = int64(smallLM.Vocab)
	for _, tt := range []struct {
		name   string
		shape  []int64
		tokens [][]int64
		check  string // in InputIDs' error
		ort    string // in ONNX Runtime's error; "" when it does not get them
	}{
		{"seq > Context", []int64{1, int64(smallLM.Context + 1)}, tooLong, "longer than the context of 16", "position_embed"},
		{"token = Vocab", []int64{2, 4}, tooBig, "outside the vocabulary", "token_embed"},
		{"empty sequence", []int64{1, 0}, [][]int64{{}}, "empty sequence", ""},
	} {
		if _, err := runLM(s, smallLM, tt.tokens); !errors.Is(err, onnxmodel.ErrInvalidTokens) || !strings.Contains(err.Error(), tt.check) {
			t.Errorf("%s: input check = %v, want ErrInvalidTokens mentioning %q", tt.name, err, tt.check)
		}
		if _, err := m.Forward(tt.tokens); !errors.Is(err, onnxmodel.ErrInvalidTokens) {
			t.Errorf("%s: reference = %v, want ErrInvalidTokens", tt.name, err)
		}
		if tt.ort == "" {
			continue
		}
		var ids []int64
		for _, row := range tt.tokens {
			ids = append(ids, row...)
		}
		out, err := s.Run(map[string]onnxruntime.Tensor{onnxmodel.LMInput: {Shape: tt.shape, Int64: ids}})
		if err == nil || !strings.Contains(err.Error(), "ONNX Runtime") || !strings.Contains(err.Error(), tt.ort) {
			t.Errorf("%s: ONNX Runtime = %v, %v; want its error naming %s", tt.name, out, err, tt.ort)
		}
		t.Logf("%s: %v", tt.name, err)
	}

	wrapped, err := s.Run(map[string]onnxruntime.Tensor{onnxmodel.LMInput: {Shape: []int64{1, 2}, Int64: []int64{7, -1}}})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := runLM(s, smallLM, [][]int64{{7, int64(smallLM.Vocab - 1)}})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(wrapped, map[string]onnxruntime.Tensor{onnxmodel.LMLogits: plain}) {
		t.Error("the graph no longer reads token -1 as Vocab-1; update InputIDs' doc")
	}
}

// BenchmarkLMForward measures one forward pass of the default LM (batch 1,
// 64 tokens) through ONNX Runtime (one intra-op thread, all graph
// optimizations) against the pure-Go reference of the same model, in the
// same run, and reports the ratio (ort/go < 1: ONNX Runtime is faster).
// The reference computes in float64 with plain loops; it is a correctness
// baseline, not a tuned kernel.
//
//	go test -run '^$' -bench LMForward ./cgo/onnxruntime/
func BenchmarkLMForward(b *testing.B) {
	cfg := onnxmodel.DefaultLMConfig()
	m := newLM(b, cfg, 1)
	s := lmSession(b, m, onnxruntime.Options{IntraOpThreads: 1, GraphOptimization: onnxruntime.OptimizeAll})
	tokens := lmTokens(1, 64, 1)
	shape, ids, err := cfg.InputIDs(tokens)
	if err != nil {
		b.Fatal(err)
	}
	in := map[string]onnxruntime.Tensor{onnxmodel.LMInput: {Shape: shape, Int64: ids}}
	// Correct before fast.
	want, err := m.Forward(tokens)
	if err != nil {
		b.Fatal(err)
	}
	got, err := s.Run(in)
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := compareLogits(want, got[onnxmodel.LMLogits], cfg.Vocab); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Run(in); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	ortNs := float64(b.Elapsed().Nanoseconds()) / float64(b.N)

	// The baseline: reference passes for as long as ONNX Runtime ran (at
	// most as many passes, at least one), timed the same way.
	start := time.Now()
	n := 0
	for n < b.N && (n == 0 || time.Since(start) < b.Elapsed()) {
		if _, err := m.Forward(tokens); err != nil {
			b.Fatal(err)
		}
		n++
	}
	goNs := float64(time.Since(start).Nanoseconds()) / float64(n)
	b.ReportMetric(goNs, "go-ns/op")
	b.ReportMetric(ortNs/goNs, "ort/go")
}
