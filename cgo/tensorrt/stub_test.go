//go:build !cgo || !tensorrt

package tensorrt_test

import (
	"errors"
	"testing"

	"github.com/tensorguard/tensorguardflow/cgo/tensorrt"
)

// TestStub: without the tensorrt tag (or without cgo) every call fails with
// ErrNotAvailable and its message tells the operator how to get TensorRT.
func TestStub(t *testing.T) {
	t.Parallel()
	const msg = "tensorrt: not available in this build (build with -tags tensorrt on a device with JetPack's TensorRT)"
	if got := tensorrt.ErrNotAvailable.Error(); got != msg {
		t.Fatalf("ErrNotAvailable = %q, want %q", got, msg)
	}
	check := func(call string, err error) {
		t.Helper()
		if !errors.Is(err, tensorrt.ErrNotAvailable) {
			t.Errorf("%s: %v, want ErrNotAvailable", call, err)
		}
	}
	check("Available", tensorrt.Available())
	_, err := tensorrt.Device()
	check("Device", err)
	plan, err := tensorrt.BuildPlan([]byte("onnx"), tensorrt.BuildOptions{FP16: true})
	check("BuildPlan", err)
	if plan != nil {
		t.Errorf("BuildPlan returned %d bytes", len(plan))
	}
	e, err := tensorrt.LoadEngine([]byte("plan"))
	check("LoadEngine", err)
	if e != nil {
		t.Errorf("LoadEngine returned an engine")
	}
	var zero tensorrt.Engine
	for _, eng := range []*tensorrt.Engine{nil, &zero} {
		_, err = eng.Run(map[string]tensorrt.Tensor{"x": {Shape: []int64{1}, Float32: []float32{1}}})
		check("Run", err)
		if eng.Inputs() != nil || eng.Outputs() != nil {
			t.Error("Inputs or Outputs not nil")
		}
		if err := eng.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	if v := tensorrt.Version(); v != "" {
		t.Errorf("Version() = %q, want empty", v)
	}
}
