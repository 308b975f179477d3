package lmsession

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/trainer"
	"github.com/tensorguard/tensorguardflow/trainer/client"
	"github.com/tensorguard/tensorguardflow/trainer/internal/dpsgd"
	"github.com/tensorguard/tensorguardflow/trainer/trainertest"
)

func TestMain(m *testing.M) {
	if _, ok := os.LookupEnv(dpsgd.BackendEnv); !ok {
		os.Setenv(dpsgd.BackendEnv, dpsgd.DefaultBackendConfig)
	}
	os.Exit(m.Run())
}

// small is a random LM small enough for tests under the race detector;
// TestBaseModel covers the shipped one.
func small(t *testing.T, cfg client.TrainingClientConfig, dp trainer.DPParams) *Session {
	t.Helper()
	b, err := onnxmodel.NewLM(onnxmodel.LMConfig{Vocab: 256, Context: 32, Dim: 16, Layers: 1, Heads: 2, FF: 32}, 3)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newSession(b, "test", cfg, dp)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestBaseModel: the shipped base loads as a session with its hash and
// context.
func TestBaseModel(t *testing.T) {
	s, err := New(client.TrainingClientConfig{BaseModel: Name}, trainer.DPParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.BaseSHA256()) != 64 || s.Context() != 64 {
		t.Fatalf("base hash %q, context %d", s.BaseSHA256(), s.Context())
	}
}

func text(s string) trainer.Example {
	e := trainer.Example{Input: make([]int32, len(s)-1), Targets: make([]int32, len(s)-1), Weights: make([]float32, len(s)-1)}
	for i := range len(s) - 1 {
		e.Input[i], e.Targets[i], e.Weights[i] = int32(s[i]), int32(s[i+1]), 1
	}
	return e
}

func params(t *testing.T, s *Session) []float32 {
	var out []float32
	for _, p := range s.engine.Params() {
		out = append(out, p.Data...)
	}
	return out
}

// TestStateRoundTrip: a session restored from its marshalled state,
// mid-step (gradients accumulated, not applied), takes exactly the step
// the original takes.
func TestStateRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, dp := range []trainer.DPParams{{}, {Enabled: true, NoiseMultiplier: 0, MaxGradNorm: 0.5, SampleRate: 0.5}} {
		mk := func() *Session { return small(t, client.TrainingClientConfig{BaseModel: Name, Seed: 5}, dp) }
		a := mk()
		ex := []trainer.Example{text("the edge keeps the keys"), text("keys at the edge")}
		if _, err := a.ForwardBackward(ctx, ex, 0.5*float64(len(ex))); err != nil {
			t.Fatal(err)
		}
		if err := a.OptimStep(ctx, client.AdamParams{}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.ForwardBackward(ctx, ex[:1], 0.5*2); err != nil {
			t.Fatal(err)
		}
		raw, err := a.MarshalState()
		if err != nil {
			t.Fatal(err)
		}
		b := mk()
		if err := b.UnmarshalState(raw); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*Session{a, b} {
			if err := s.OptimStep(ctx, client.AdamParams{}); err != nil {
				t.Fatal(err)
			}
		}
		pa, pb := params(t, a), params(t, b)
		for i := range pa {
			if pa[i] != pb[i] {
				t.Fatalf("dp=%v: parameter %d differs after the restored step: %v vs %v", dp.Enabled, i, pa[i], pb[i])
			}
		}
		if !json.Valid(raw) {
			t.Fatal("state is not JSON")
		}
	}
}

// TestFineTuneExportsRunnableModel: DP-SGD steps (noise on) lower the loss
// on a repeated text; the export runs in ONNX Runtime and reproduces its
// self-test; sampling is deterministic with a seed.
func TestFineTuneExportsRunnableModel(t *testing.T) {
	ctx := context.Background()
	s := small(t, client.TrainingClientConfig{BaseModel: Name, Adam: client.AdamParams{LearningRate: 3e-2}},
		trainer.DPParams{Enabled: true, NoiseMultiplier: 0.3, MaxGradNorm: 1, SampleRate: 1})
	var ex []trainer.Example
	for range 8 {
		ex = append(ex, text("tensorguard keeps models private"))
	}
	before, err := s.Forward(ctx, ex[:1])
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if _, err := s.ForwardBackward(ctx, ex, float64(len(ex))); err != nil {
			t.Fatal(err)
		}
		if err := s.OptimStep(ctx, client.AdamParams{}); err != nil {
			t.Fatal(err)
		}
	}
	after, err := s.Forward(ctx, ex[:1])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loss %.3f → %.3f nats/byte", before.Loss, after.Loss)
	if !(after.Loss < before.Loss) {
		t.Errorf("loss %v after 4 DP steps, %v before", after.Loss, before.Loss)
	}
	seed := uint64(9)
	p := client.SamplingParams{MaxTokens: 8, Temperature: 0.8, Seed: &seed}
	x, err := s.Sample(ctx, []int32{'t', 'e'}, 2, p)
	if err != nil {
		t.Fatal(err)
	}
	y, _ := s.Sample(ctx, []int32{'t', 'e'}, 2, p)
	if x[0].Text != y[0].Text || len(x[0].Tokens) == 0 {
		t.Fatalf("seeded samples differ: %q %q", x[0].Text, y[0].Text)
	}

	exp, err := s.Export()
	if err != nil {
		t.Fatal(err)
	}
	worst, tolerance := trainertest.SelfTestDiff(t, exp.Files["model.onnx"], exp.Files["selftest.json"])
	t.Logf("exported model vs the trainer's self-test: max |Δlogit| %.2g (tolerance %g)", worst, tolerance)
	if worst > tolerance {
		t.Fatalf("ONNX Runtime differs from the self-test by %g", worst)
	}
}
