package lm

import (
	"bytes"
	"math"
	"testing"

	"github.com/tensorguard/tensorguardflow/trainer/internal/dpsgd"
)

func loadBase(t testing.TB) *LoRA {
	t.Helper()
	m, _, err := LoadBase()
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLoRA(m, LoRAConfig{Rank: 4, Alpha: 8, SeqLen: 12})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestBaseCheckpoint: the embedded base model decodes, has the documented
// shape and pinned hash, and its encoding is canonical (decode → encode
// gives the same bytes, so the hash names the weights).
func TestBaseCheckpoint(t *testing.T) {
	m, hash, err := LoadBase()
	if err != nil {
		t.Fatal(err)
	}
	if hash != BaseModelSHA256 {
		t.Errorf("embedded checkpoint hash %s, BaseModelSHA256 says %s", hash, BaseModelSHA256)
	}
	if m.Config != BaseConfig() {
		t.Errorf("config %v, BaseConfig is %v", m.Config, BaseConfig())
	}
	again, err := EncodeCheckpoint(m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, BaseCheckpoint()) {
		t.Error("re-encoding the base model changes its bytes")
	}
	if n := len(BaseCheckpoint()); n > 4<<20 {
		t.Errorf("base checkpoint is %d bytes; keep it a few MB", n)
	}
}

// baseText is English the base model has not been trained on verbatim.
const baseText = "squirrel: a small animal that lives in trees and eats nuts and seeds; \"the squirrel hid the acorn\""

// TestBaseMatchesReferenceAndKnowsEnglish: on the real weights (large
// logits, unlike a fresh initialisation), GoMLX agrees with onnxmodel's
// float64 reference, and the model predicts English far better than a
// unigram byte model (about 4.5 bits per byte on its corpus).
func TestBaseMatchesReferenceAndKnowsEnglish(t *testing.T) {
	m, _, err := LoadBase()
	if err != nil {
		t.Fatal(err)
	}
	text := []byte(baseText)[:m.Config.Context]
	t32 := [][]int32{make([]int32, len(text))}
	t64 := [][]int64{make([]int64, len(text))}
	for i, b := range text {
		t32[0][i], t64[0][i] = int32(b), int64(b)
	}
	run, err := NewRunner(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := run.Logits(t32)
	if err != nil {
		t.Fatal(err)
	}
	want, err := m.Forward(t64)
	if err != nil {
		t.Fatal(err)
	}
	diff, scale := logitsDiff(got, want)
	t.Logf("base model: max |GoMLX − reference| = %.3g (logits up to %.3g)", diff, scale)
	if diff > referenceTolerance*max(1, scale) {
		t.Errorf("logits differ by %g", diff)
	}
	var bits float64
	for i := 0; i+1 < len(text); i++ {
		bits -= logSoftmaxAt(want[0][i], int(text[i+1])) / math.Ln2
	}
	bits /= float64(len(text) - 1)
	t.Logf("base model: %.3f bits/byte on %q", bits, text)
	if bits > 3.5 {
		t.Errorf("%.3f bits/byte: not clearly better than a unigram model", bits)
	}
}

// TestDPFineTuneReducesLoss fine-tunes the shipped base with LoRA under
// DP-SGD, noise on, on a short repeated text, and checks that its loss on
// that text goes down.
func TestDPFineTuneReducesLoss(t *testing.T) {
	// Reproducible noise for a stable test (the engine warns loudly).
	t.Setenv(dpsgd.DeterministicEnv, "true")
	m := loadBase(t)
	text := bytes.Repeat([]byte("a cat sat on a mat. "), 3)
	var examples []Example
	for at := range 12 {
		examples = append(examples, TextExample(text[at:at+m.Config().SeqLen+1]))
	}
	ds := m.Dataset(examples)
	cfg := dpsgd.DefaultConfig()
	cfg.NoiseMultiplier = 0.5
	cfg.MaxGradNorm = 1
	cfg.SampleRate = 0.5
	cfg.DatasetSize = ds.Len()
	cfg.LR = 0.02
	cfg.BucketMultiple = 4
	cfg.Seed = 3
	e, err := dpsgd.New(cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	before, err := e.Evaluate(ds, ds.Len())
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		b, err := e.SampleBatch(ds)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Step(b); err != nil {
			t.Fatal(err)
		}
	}
	after, err := e.Evaluate(ds, ds.Len())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loss on the fine-tuning text: %.4f → %.4f nats/byte after %d DP-SGD steps (σ=%g, C=%g)", before.Loss, after.Loss, e.Steps(), cfg.NoiseMultiplier, cfg.MaxGradNorm)
	if !(after.Loss < before.Loss-0.05) {
		t.Errorf("loss %.4f → %.4f: fine-tuning did not reduce it", before.Loss, after.Loss)
	}
}
