//go:build cgo && tensorrt

package tensorrt_test

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/cgo/tensorrt"
)

// These tests run only where the package is built with the tensorrt tag: on
// a Jetson with JetPack 6.1+ (`go test -tags tensorrt ./cgo/tensorrt/`).
// There TensorRT is expected, so its absence fails them.

var testMLP = onnxmodel.NewMLP(4, 16, 3, 7)

// mlpOptions covers batches of 1 to 64 for the MLP's dynamic batch.
var mlpOptions = tensorrt.BuildOptions{
	WorkspaceBytes: 64 << 20,
	Profiles: []tensorrt.InputProfile{{
		Name: onnxmodel.MLPInput,
		Min:  []int64{1, int64(testMLP.In)},
		Opt:  []int64{8, int64(testMLP.In)},
		Max:  []int64{64, int64(testMLP.In)},
	}},
}

func requireTensorRT(t testing.TB) {
	t.Helper()
	if err := tensorrt.Available(); err != nil {
		t.Fatalf("built with -tags tensorrt, but TensorRT cannot run here: %v (needs a CUDA GPU and JetPack 6.1+'s TensorRT 10)", err)
	}
}

var (
	planOnce sync.Once
	mlpPlan  []byte
	planErr  error
)

// plan builds the MLP's plan once per test binary: builds take seconds.
func plan(t testing.TB) []byte {
	t.Helper()
	requireTensorRT(t)
	planOnce.Do(func() {
		model, err := testMLP.Encode()
		if err != nil {
			planErr = err
			return
		}
		mlpPlan, planErr = tensorrt.BuildPlan(model, mlpOptions)
	})
	if planErr != nil {
		t.Fatalf("BuildPlan: %v", planErr)
	}
	return mlpPlan
}

func loadMLP(t testing.TB) *tensorrt.Engine {
	t.Helper()
	e, err := tensorrt.LoadEngine(plan(t))
	if err != nil {
		t.Fatalf("LoadEngine: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Error(err)
		}
	})
	return e
}

func runMLP(e *tensorrt.Engine, x []float32) (map[string]tensorrt.Tensor, error) {
	return e.Run(map[string]tensorrt.Tensor{
		onnxmodel.MLPInput: {Shape: []int64{int64(len(x) / testMLP.In), int64(testMLP.In)}, Float32: x},
	})
}

// checkMLP compares the engine's outputs with the pure-Go reference. An
// FP32 engine (TF32 off) lands within float32 rounding of it; tol allows
// for FP16 kernels too.
func checkMLP(x []float32, got map[string]tensorrt.Tensor, tol float64) error {
	want, err := testMLP.Forward(x)
	if err != nil {
		return err
	}
	batch, out := int64(len(x)/testMLP.In), int64(testMLP.Out)
	for _, c := range []struct {
		name string
		want []float32
	}{{onnxmodel.MLPLogits, want.Logits}, {onnxmodel.MLPProbs, want.Probs}} {
		g := got[c.name]
		if !reflect.DeepEqual(g.Shape, []int64{batch, out}) || len(g.Float32) != len(c.want) {
			return fmt.Errorf("%s: shape %v with %d values, want [%d %d]", c.name, g.Shape, len(g.Float32), batch, out)
		}
		for i := range c.want {
			if d := math.Abs(float64(g.Float32[i] - c.want[i])); d > tol || math.IsNaN(d) {
				return fmt.Errorf("%s[%d] = %v, reference %v (|Δ| %g > %g)", c.name, i, g.Float32[i], c.want[i], d, tol)
			}
		}
	}
	class := got[onnxmodel.MLPClass]
	if !reflect.DeepEqual(class.Shape, []int64{batch}) || len(class.Int64) != int(batch) {
		return fmt.Errorf("class: shape %v, %d values", class.Shape, len(class.Int64))
	}
	for b := range int(batch) {
		if class.Int64[b] != want.Class[b] {
			// A near tie may go either way under other rounding.
			l := want.Logits[b*int(out) : (b+1)*int(out)]
			if math.Abs(float64(l[class.Int64[b]]-l[want.Class[b]])) > tol {
				return fmt.Errorf("class[%d] = %d, reference %d", b, class.Int64[b], want.Class[b])
			}
		}
	}
	return nil
}

func TestDevice(t *testing.T) {
	requireTensorRT(t)
	d, err := tensorrt.Device()
	if err != nil {
		t.Fatal(err)
	}
	if d.Name == "" || d.ComputeMajor < 5 || d.CUDARuntime < 11000 {
		t.Errorf("Device() = %+v", d)
	}
	if v := tensorrt.Version(); !strings.HasPrefix(v, "10.") {
		t.Errorf("Version() = %q, want 10.x", v)
	}
	t.Logf("TensorRT %s on %s", tensorrt.Version(), d)
}

// TestRunMLP builds the MLP, checks the engine's view of its inputs and
// outputs, and compares its outputs with the reference at several batch
// sizes, including the profile's bounds.
func TestRunMLP(t *testing.T) {
	e := loadMLP(t)
	in := []tensorrt.TensorInfo{{Name: onnxmodel.MLPInput, Type: tensorrt.Float32, Shape: []int64{-1, int64(testMLP.In)}}}
	if got := e.Inputs(); !reflect.DeepEqual(got, in) {
		t.Errorf("Inputs() = %v, want %v", got, in)
	}
	out := e.Outputs()
	if len(out) != 3 {
		t.Fatalf("Outputs() = %v", out)
	}
	for _, batch := range []int{1, 5, 8, 64} {
		x := onnxmodel.RandomInputs(batch*testMLP.In, uint64(batch))
		got, err := runMLP(e, x)
		if err != nil {
			t.Fatalf("batch %d: %v", batch, err)
		}
		if err := checkMLP(x, got, 1e-4); err != nil {
			t.Errorf("batch %d: %v", batch, err)
		}
	}
}

// TestFP16 builds with half-precision kernels allowed: inputs and outputs
// stay float32 and the results stay close to the reference.
func TestFP16(t *testing.T) {
	requireTensorRT(t)
	model, err := testMLP.Encode()
	if err != nil {
		t.Fatal(err)
	}
	opts := mlpOptions
	opts.FP16 = true
	p, err := tensorrt.BuildPlan(model, opts)
	if err != nil {
		t.Fatal(err)
	}
	e, err := tensorrt.LoadEngine(p)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	x := onnxmodel.RandomInputs(3*testMLP.In, 3)
	got, err := runMLP(e, x)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMLP(x, got, 2e-2); err != nil {
		t.Error(err)
	}
}

// TestErrors: bad bytes, a dynamic input without a profile, inputs that do
// not fit the engine — each is an error with a useful message, never a
// crash, and the engine keeps working after a refused run.
func TestErrors(t *testing.T) {
	requireTensorRT(t)
	model, err := testMLP.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tensorrt.BuildPlan(model, tensorrt.BuildOptions{}); err == nil || !strings.Contains(err.Error(), "dynamic shape") {
		t.Errorf("build without a profile: %v, want a dynamic shape error", err)
	}
	unknown := mlpOptions
	unknown.Profiles = append(slices.Clone(mlpOptions.Profiles), tensorrt.InputProfile{Name: "nope", Min: []int64{1}, Opt: []int64{1}, Max: []int64{1}})
	if _, err := tensorrt.BuildPlan(model, unknown); err == nil || !strings.Contains(err.Error(), "not an input") {
		t.Errorf("build with a profile for an unknown input: %v", err)
	}
	if _, err := tensorrt.BuildPlan([]byte("not an onnx model"), mlpOptions); err == nil {
		t.Error("built a plan from garbage")
	}
	if _, err := tensorrt.BuildPlan(model, tensorrt.BuildOptions{WorkspaceBytes: -1}); !errors.Is(err, tensorrt.ErrInvalidOptions) {
		t.Errorf("negative workspace: %v", err)
	}
	if _, err := tensorrt.LoadEngine([]byte("not a plan, not at all")); err == nil {
		t.Error("loaded an engine from garbage")
	}
	truncated := plan(t)[:len(plan(t))/2]
	if _, err := tensorrt.LoadEngine(truncated); err == nil {
		t.Error("loaded an engine from half a plan")
	}

	e := loadMLP(t)
	if _, err := runMLP(e, make([]float32, 65*testMLP.In)); err == nil || errors.Is(err, tensorrt.ErrInvalidInput) {
		t.Errorf("batch 65 (beyond the profile): %v, want TensorRT's refusal", err)
	}
	if _, err := e.Run(map[string]tensorrt.Tensor{onnxmodel.MLPInput: {Shape: []int64{1, 3}, Float32: make([]float32, 3)}}); !errors.Is(err, tensorrt.ErrInvalidInput) {
		t.Errorf("wrong width: %v, want ErrInvalidInput", err)
	}
	x := onnxmodel.RandomInputs(2*testMLP.In, 9)
	got, err := runMLP(e, x)
	if err != nil {
		t.Fatalf("run after refusals: %v", err)
	}
	if err := checkMLP(x, got, 1e-4); err != nil {
		t.Error(err)
	}
}

// TestConcurrentRun runs one engine from many goroutines (more than it has
// contexts), then closes it under load: every call either returns the
// reference's outputs or ErrClosed.
func TestConcurrentRun(t *testing.T) {
	requireTensorRT(t)
	e, err := tensorrt.LoadEngine(plan(t))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				batch := 1 + (g+i)%16
				x := onnxmodel.RandomInputs(batch*testMLP.In, uint64(g*1000+i))
				got, err := runMLP(e, x)
				if errors.Is(err, tensorrt.ErrClosed) {
					return
				}
				if err == nil {
					err = checkMLP(x, got, 1e-4)
				}
				if err != nil {
					errs <- fmt.Errorf("goroutine %d run %d: %w", g, i, err)
					return
				}
			}
		}()
	}
	// Let the goroutines get going, then close under them.
	x := onnxmodel.RandomInputs(testMLP.In, 1)
	for range 20 {
		if _, err := runMLP(e, x); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, err := runMLP(e, x); !errors.Is(err, tensorrt.ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
