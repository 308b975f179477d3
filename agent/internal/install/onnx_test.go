package install

import (
	"encoding/json"
	"testing"

	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxruntimetest"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// onnxPackage packs a real ONNX model (a small MLP) whose self-test holds
// the outputs of expect, computed by the reference implementation.
func onnxPackage(t *testing.T, e *env, version string, m, expect onnxmodel.MLP) *testPackage {
	t.Helper()
	model, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	x := []float32{0.5, -1, 2, 0.25, 1, 1, -0.5, 0}
	want, err := expect.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	class := make([]float32, len(want.Class))
	for i, c := range want.Class {
		class[i] = float32(c)
	}
	spec, _ := json.Marshal(ModelSpec{Schema: ModelSchema, Runtime: inference.RuntimeONNXRuntime, Model: "model.onnx",
		Inputs: []string{onnxmodel.MLPInput}, Outputs: []string{onnxmodel.MLPLogits, onnxmodel.MLPProbs, onnxmodel.MLPClass},
		SelfTest: "selftest.json"})
	st, _ := json.Marshal(SelfTest{Schema: SelfTestSchema, Tolerance: 1e-5, RTol: 1e-4, Cases: []SelfTestCase{{
		Inputs: map[string]Tensor{onnxmodel.MLPInput: {Shape: []int64{2, 4}, Data: x}},
		Outputs: map[string]Tensor{
			onnxmodel.MLPLogits: {Shape: []int64{2, 3}, Data: want.Logits},
			onnxmodel.MLPProbs:  {Shape: []int64{2, 3}, Data: want.Probs},
			onnxmodel.MLPClass:  {Shape: []int64{2}, Data: class},
		},
	}}})
	return e.pkg(pkgOpts{version: version, files: map[string][]byte{ModelSpecPath: spec, "selftest.json": st, "model.onnx": model}})
}

// TestInstallWithONNXRuntime runs the pipeline with the real runtime: an
// MLP installed, served and self-tested by ONNX Runtime, then a model that
// does not reproduce its test vectors rolled back. It needs libonnxruntime
// (fails with the install command when CI=true, skips elsewhere).
func TestInstallWithONNXRuntime(t *testing.T) {
	onnxruntimetest.Init(t)
	e := newEnv(t)
	e.runtime = &inference.ONNXRuntime{}
	good := onnxmodel.NewMLP(4, 16, 3, 1)
	v1 := onnxPackage(t, e, "1.0.0", good, good)
	if rec := e.install("job-1", v1); rec.State != wire.JobCommitted {
		t.Fatalf("install: %s %s %s", rec.State, rec.Reason, rec.Detail)
	}

	p := e.start(nil) // loads the committed model again, from the encrypted package
	defer p.stop()
	p.waitActive("1.0.0")
	x := []float32{1, 2, 3, 4}
	out, err := p.infer(map[string]Tensor{onnxmodel.MLPInput: {Shape: []int64{1, 4}, Data: x}})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := good.Forward(x)
	if err := compareTensor(out[onnxmodel.MLPLogits], Tensor{Shape: []int64{1, 3}, Data: want.Logits}, 1e-5, 1e-4); err != nil {
		t.Errorf("logits: %v", err)
	}

	// Another model shipped with the first one's vectors fails its self-test.
	bad := onnxPackage(t, e, "1.1.0", onnxmodel.NewMLP(4, 16, 3, 2), good)
	e.cp.installJob("job-2", bad)
	p.in.Kick()
	if rec := p.wait("job-2"); rec.State != wire.JobFailed || rec.Reason != wire.JobReasonSelfTest {
		t.Fatalf("bad model: %s %s %s", rec.State, rec.Reason, rec.Detail)
	}
	if s, _ := p.in.Active(); s.Version != "1.0.0" {
		t.Errorf("serving %s after the failed self-test", s.Version)
	}
}
