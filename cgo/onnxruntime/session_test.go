package onnxruntime_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxruntimetest"
)

// tolerance is how far ONNX Runtime's float32 outputs may be from the
// pure-Go reference (issue 6).
const tolerance = 1e-5

var testMLP = onnxmodel.NewMLP(4, 8, 3, 1)

func mlpBytes(t testing.TB) []byte {
	t.Helper()
	b, err := testMLP.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newSession(t testing.TB, model []byte, opts onnxruntime.Options) *onnxruntime.Session {
	t.Helper()
	onnxruntimetest.Init(t)
	s, err := onnxruntime.NewSession(model, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func runMLP(s *onnxruntime.Session, x []float32) (map[string]onnxruntime.Tensor, error) {
	return s.Run(map[string]onnxruntime.Tensor{
		onnxmodel.MLPInput: {Shape: []int64{int64(len(x) / testMLP.In), int64(testMLP.In)}, Float32: x},
	})
}

// checkMLP compares ONNX Runtime's outputs for testMLP with the reference's.
func checkMLP(x []float32, got map[string]onnxruntime.Tensor) error {
	return checkOutputs(testMLP, x, got)
}

// checkOutputs compares ONNX Runtime's outputs for m with the reference's.
func checkOutputs(m onnxmodel.MLP, x []float32, got map[string]onnxruntime.Tensor) error {
	want, err := m.Forward(x)
	if err != nil {
		return err
	}
	batch := int64(len(x) / m.In)
	out := int64(m.Out)
	if len(got) != 3 {
		return fmt.Errorf("%d outputs, want 3", len(got))
	}
	for _, c := range []struct {
		name string
		want []float32
	}{{onnxmodel.MLPLogits, want.Logits}, {onnxmodel.MLPProbs, want.Probs}} {
		g := got[c.name]
		if !reflect.DeepEqual(g.Shape, []int64{batch, out}) || g.Int64 != nil {
			return fmt.Errorf("%s: shape %v (int64 %v), want float32 [%d %d]", c.name, g.Shape, g.Int64 != nil, batch, out)
		}
		for i := range c.want {
			if d := math.Abs(float64(g.Float32[i] - c.want[i])); d > tolerance || math.IsNaN(d) {
				return fmt.Errorf("%s[%d] = %v, reference %v (|Δ| %g > %g)", c.name, i, g.Float32[i], c.want[i], d, tolerance)
			}
		}
	}
	class := got[onnxmodel.MLPClass]
	if !reflect.DeepEqual(class.Shape, []int64{batch}) || class.Int64 == nil {
		return fmt.Errorf("class: shape %v, want int64 [%d]", class.Shape, batch)
	}
	for b := range want.Class {
		if class.Int64[b] == want.Class[b] {
			continue
		}
		// Rounding may flip ArgMax only between logits closer than the
		// tolerance; anything else is a real difference.
		l := want.Logits[b*int(out) : (b+1)*int(out)]
		if math.Abs(float64(l[class.Int64[b]]-l[want.Class[b]])) > tolerance {
			return fmt.Errorf("class[%d] = %d, reference %d (logits %v)", b, class.Int64[b], want.Class[b], l)
		}
	}
	return nil
}

func TestMLPMatchesReference(t *testing.T) {
	t.Parallel()
	s := newSession(t, mlpBytes(t), onnxruntime.Options{})
	for _, batch := range []int{1, 2, 17, 256} {
		x := onnxmodel.RandomInputs(batch*testMLP.In, uint64(batch))
		got, err := runMLP(s, x)
		if err != nil {
			t.Fatalf("batch %d: %v", batch, err)
		}
		if err := checkMLP(x, got); err != nil {
			t.Fatalf("batch %d: %v", batch, err)
		}
	}
	// Larger inputs, so that ReLU clips and the classes vary.
	x := onnxmodel.RandomInputs(64*testMLP.In, 99)
	for i := range x {
		x[i] *= 10
	}
	got, err := runMLP(s, x)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMLP(x, got); err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for _, c := range got[onnxmodel.MLPClass].Int64 {
		seen[c] = true
	}
	if len(seen) < 2 {
		t.Errorf("64 inputs all fell in class %v; the comparison does not exercise ArgMax", seen)
	}
}

func TestSessionIO(t *testing.T) {
	t.Parallel()
	s := newSession(t, mlpBytes(t), onnxruntime.Options{})
	wantIn := []onnxruntime.TensorInfo{{Name: "x", Type: onnxruntime.Float32, Shape: []int64{-1, 4}}}
	wantOut := []onnxruntime.TensorInfo{
		{Name: "logits", Type: onnxruntime.Float32, Shape: []int64{-1, 3}},
		{Name: "probs", Type: onnxruntime.Float32, Shape: []int64{-1, 3}},
		{Name: "class", Type: onnxruntime.Int64, Shape: []int64{-1}},
	}
	if got := s.Inputs(); !reflect.DeepEqual(got, wantIn) {
		t.Errorf("Inputs = %v, want %v", got, wantIn)
	}
	if got := s.Outputs(); !reflect.DeepEqual(got, wantOut) {
		t.Errorf("Outputs = %v, want %v", got, wantOut)
	}
	// The descriptions are copies.
	s.Inputs()[0].Shape[1] = 99
	if s.Inputs()[0].Shape[1] != 4 {
		t.Error("Inputs returned the session's own slice")
	}
}

// int64Model adds a constant to int64 ids and casts the sum to float32:
// int64 in, int64 and float32 out, and a second input.
func int64Model(t testing.TB) []byte {
	t.Helper()
	b, err := onnxmodel.Model{Graph: onnxmodel.Graph{
		Nodes: []onnxmodel.Node{
			{OpType: "Add", Inputs: []string{"ids", "offset"}, Outputs: []string{"sum"}},
			{OpType: "Cast", Inputs: []string{"sum"}, Outputs: []string{"sum_f"}, Attrs: []onnxmodel.Attr{onnxmodel.IntAttr("to", int64(onnxmodel.Float))}},
			{OpType: "Mul", Inputs: []string{"sum_f", "scale"}, Outputs: []string{"scaled"}},
		},
		Initializers: []onnxmodel.Tensor{{Name: "offset", Dims: []int64{3}, Int64: []int64{10, 20, 1 << 40}}},
		Inputs: []onnxmodel.ValueInfo{
			{Name: "ids", Type: onnxmodel.Int64, Shape: []int64{-1, 3}},
			{Name: "scale", Type: onnxmodel.Float, Shape: []int64{1}},
		},
		Outputs: []onnxmodel.ValueInfo{
			{Name: "sum", Type: onnxmodel.Int64, Shape: []int64{-1, 3}},
			{Name: "scaled", Type: onnxmodel.Float, Shape: []int64{-1, 3}},
		},
	}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInt64Tensors(t *testing.T) {
	t.Parallel()
	s := newSession(t, int64Model(t), onnxruntime.Options{})
	got, err := s.Run(map[string]onnxruntime.Tensor{
		"ids":   {Shape: []int64{2, 3}, Int64: []int64{1, 2, 3, -4, -5, -6}},
		"scale": {Shape: []int64{1}, Float32: []float32{0.5}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]onnxruntime.Tensor{
		"sum":    {Shape: []int64{2, 3}, Int64: []int64{11, 22, 1<<40 + 3, 6, 15, 1<<40 - 6}},
		"scaled": {Shape: []int64{2, 3}, Float32: []float32{5.5, 11, 1 << 39, 3, 7.5, 1 << 39}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Run = %v, want %v", got, want)
	}
}

// unknownRankModel adds two float tensors whose ranks the model leaves open.
func unknownRankModel(t testing.TB) []byte {
	return mustEncode(t, onnxmodel.Model{Graph: onnxmodel.Graph{
		Nodes: []onnxmodel.Node{{OpType: "Add", Inputs: []string{"a", "b"}, Outputs: []string{"y"}}},
		Inputs: []onnxmodel.ValueInfo{
			{Name: "a", Type: onnxmodel.Float},
			{Name: "b", Type: onnxmodel.Float},
		},
		Outputs: []onnxmodel.ValueInfo{{Name: "y", Type: onnxmodel.Float}},
	}})
}

// TestBadModels: bytes ONNX Runtime cannot load give an error that carries
// its message; nothing crashes and no session is returned.
func TestBadModels(t *testing.T) {
	t.Parallel()
	onnxruntimetest.Init(t)
	good := mlpBytes(t)
	unknownOp, err := testMLP.Model()
	if err != nil {
		t.Fatal(err)
	}
	unknownOp.Graph.Nodes[1].OpType = "NoSuchOp"
	dangling, _ := testMLP.Model()
	dangling.Graph.Nodes[2].Inputs[0] = "nowhere"
	garbage := make([]byte, 4096)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range garbage {
		garbage[i] = byte(r.Uint32())
	}
	tests := []struct {
		name  string
		model []byte
		want  string // in the error; ONNX Runtime's words where it judged
	}{
		{"empty", nil, "load model: empty model"},
		{"garbage", garbage, "ONNX Runtime: "},
		{"text", []byte("this is not an onnx model"), "ONNX Runtime: "},
		{"truncated", good[:len(good)/2], "ONNX Runtime: "},
		{"truncated by one byte", good[:len(good)-1], "ONNX Runtime: "},
		{"unknown operator", mustEncode(t, unknownOp), "NoSuchOp"},
		{"dangling edge", mustEncode(t, dangling), "nowhere"},
		{"no inputs", mustEncode(t, onnxmodel.Model{Graph: onnxmodel.Graph{
			Nodes:        []onnxmodel.Node{{OpType: "Identity", Inputs: []string{"c"}, Outputs: []string{"y"}}},
			Initializers: []onnxmodel.Tensor{{Name: "c", Dims: []int64{1}, Float: []float32{1}}},
			Outputs:      []onnxmodel.ValueInfo{{Name: "y", Type: onnxmodel.Float, Shape: []int64{1}}},
		}}), "not supported"},
	}
	for _, tt := range tests {
		s, err := onnxruntime.NewSession(tt.model, onnxruntime.Options{})
		if err == nil {
			s.Close()
			t.Errorf("%s: NewSession succeeded", tt.name)
			continue
		}
		if s != nil {
			t.Errorf("%s: got a session with the error", tt.name)
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %q does not contain %q", tt.name, err, tt.want)
		}
		t.Logf("%s: %v", tt.name, err)
	}
}

func mustEncode(t testing.TB, m onnxmodel.Model) []byte {
	t.Helper()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRunInvalidInputs(t *testing.T) {
	t.Parallel()
	s := newSession(t, mlpBytes(t), onnxruntime.Options{})
	x := onnxmodel.RandomInputs(8, 1)
	tests := []struct {
		name   string
		inputs map[string]onnxruntime.Tensor
		want   string
	}{
		{"no inputs", nil, `missing input "x"`},
		{"wrong name", map[string]onnxruntime.Tensor{"y": {Shape: []int64{2, 4}, Float32: x}}, `missing input "x"`},
		{"extra name", map[string]onnxruntime.Tensor{"x": {Shape: []int64{2, 4}, Float32: x}, "y": {Shape: []int64{1}, Float32: x[:1]}}, `unknown input "y"`},
		{"wrong type", map[string]onnxruntime.Tensor{"x": {Shape: []int64{2, 4}, Int64: make([]int64, 8)}}, "is float32, got int64"},
		{"no data", map[string]onnxruntime.Tensor{"x": {Shape: []int64{2, 4}}}, "exactly one of"},
		{"both data", map[string]onnxruntime.Tensor{"x": {Shape: []int64{2, 4}, Float32: x, Int64: make([]int64, 8)}}, "exactly one of"},
		{"wrong rank", map[string]onnxruntime.Tensor{"x": {Shape: []int64{8}, Float32: x}}, "rank 1"},
		{"scalar", map[string]onnxruntime.Tensor{"x": {Float32: x[:1]}}, "scalar"},
		{"wrong fixed dimension", map[string]onnxruntime.Tensor{"x": {Shape: []int64{4, 2}, Float32: x}}, "has shape [-1 4], got [4 2]"},
		{"negative dimension", map[string]onnxruntime.Tensor{"x": {Shape: []int64{-2, 4}, Float32: x}}, "negative"},
		{"short data", map[string]onnxruntime.Tensor{"x": {Shape: []int64{3, 4}, Float32: x}}, "needs 12 values, got 8"},
		{"long data", map[string]onnxruntime.Tensor{"x": {Shape: []int64{1, 4}, Float32: x}}, "needs 4 values, got 8"},
		{"overflowing shape", map[string]onnxruntime.Tensor{"x": {Shape: []int64{1 << 61, 4}, Float32: x}}, "too large"},
	}
	for _, tt := range tests {
		out, err := s.Run(tt.inputs)
		if !errors.Is(err, onnxruntime.ErrInvalidInput) {
			t.Errorf("%s: Run = %v, %v; want ErrInvalidInput", tt.name, out, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %q does not contain %q", tt.name, err, tt.want)
		}
	}
	// The session still works after all that.
	got, err := runMLP(s, x)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMLP(x, got); err != nil {
		t.Fatal(err)
	}
}

// TestRunError: a failure inside ONNX Runtime (here a shape the graph
// cannot broadcast, which only the kernel sees) carries its message.
func TestRunError(t *testing.T) {
	t.Parallel()
	s := newSession(t, int64Model(t), onnxruntime.Options{})
	_, err := s.Run(map[string]onnxruntime.Tensor{
		"ids":   {Shape: []int64{2, 3}, Int64: make([]int64, 6)},
		"scale": {Shape: []int64{1}, Float32: []float32{1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// scale is declared [1]; 3 would broadcast but the declared dimension
	// is fixed, so the bridge refuses it before ONNX Runtime does.
	_, err = s.Run(map[string]onnxruntime.Tensor{
		"ids":   {Shape: []int64{2, 3}, Int64: make([]int64, 6)},
		"scale": {Shape: []int64{3}, Float32: []float32{1, 2, 3}},
	})
	if !errors.Is(err, onnxruntime.ErrInvalidInput) {
		t.Fatalf("Run with scale [3] = %v, want ErrInvalidInput", err)
	}
	// With no declared shape, ONNX Runtime itself must reject it.
	s2 := newSession(t, unknownRankModel(t), onnxruntime.Options{})
	got, err := s2.Run(map[string]onnxruntime.Tensor{
		"a": {Shape: []int64{1, 2}, Float32: []float32{1, 2}},
		"b": {Shape: []int64{3, 1}, Float32: []float32{10, 20, 30}},
	})
	want := map[string]onnxruntime.Tensor{"y": {Shape: []int64{3, 2}, Float32: []float32{11, 12, 21, 22, 31, 32}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Run on unknown-rank inputs = %v, %v; want %v", got, err, want)
	}
	_, err = s2.Run(map[string]onnxruntime.Tensor{
		"a": {Shape: []int64{2}, Float32: []float32{1, 2}},
		"b": {Shape: []int64{3}, Float32: []float32{1, 2, 3}},
	})
	if err == nil || errors.Is(err, onnxruntime.ErrInvalidInput) || !strings.Contains(err.Error(), "ONNX Runtime: ") {
		t.Fatalf("Run with unbroadcastable shapes = %v; want ONNX Runtime's error", err)
	}
	t.Log(err)
}

func TestConcurrentRuns(t *testing.T) {
	t.Parallel()
	s := newSession(t, mlpBytes(t), onnxruntime.Options{IntraOpThreads: 2})
	const workers, runs = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range runs {
				batch := 1 + (w+i)%7
				x := onnxmodel.RandomInputs(batch*testMLP.In, uint64(w*1000+i))
				got, err := runMLP(s, x)
				if err == nil {
					err = checkMLP(x, got)
				}
				if err != nil {
					errs <- fmt.Errorf("worker %d run %d: %w", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	onnxruntimetest.Init(t)
	s, err := onnxruntime.NewSession(mlpBytes(t), onnxruntime.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	x := onnxmodel.RandomInputs(4*testMLP.In, 1)
	// Close while Runs are in flight: each Run either completes correctly
	// or reports ErrClosed, and every worker sees ErrClosed in the end.
	var (
		wg           sync.WaitGroup
		mu           sync.Mutex
		ran, closed  int
		warm         = make(chan struct{})
		warmOnce     sync.Once
		maxRuns      = 100000
		closeAfterOK = 20
	)
	for range 4 {
		wg.Go(func() {
			for range maxRuns {
				got, err := runMLP(s, x)
				if err == nil {
					err = checkMLP(x, got)
				}
				mu.Lock()
				switch {
				case errors.Is(err, onnxruntime.ErrClosed):
					closed++
				case err != nil:
					t.Error(err)
				default:
					ran++
					if ran == closeAfterOK {
						warmOnce.Do(func() { close(warm) })
					}
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Go(func() {
		<-warm
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	t.Logf("%d runs completed, %d workers saw the session closed", ran, closed)
	if ran < closeAfterOK || closed != 4 {
		t.Errorf("%d runs completed and %d of 4 workers saw ErrClosed; want >= %d and 4", ran, closed, closeAfterOK)
	}
	if _, err := runMLP(s, x); !errors.Is(err, onnxruntime.ErrClosed) {
		t.Fatalf("Run after Close = %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	onnxruntimetest.Init(t)
	model := mlpBytes(t)
	x := onnxmodel.RandomInputs(32*testMLP.In, 5)
	for _, opts := range []onnxruntime.Options{
		{},
		{IntraOpThreads: 1, GraphOptimization: onnxruntime.OptimizeDisabled},
		{IntraOpThreads: 2, InterOpThreads: 2, GraphOptimization: onnxruntime.OptimizeBasic},
		{IntraOpThreads: 3, GraphOptimization: onnxruntime.OptimizeExtended},
		{InterOpThreads: 1, GraphOptimization: onnxruntime.OptimizeAll},
	} {
		s := newSession(t, model, opts)
		got, err := runMLP(s, x)
		if err == nil {
			err = checkMLP(x, got)
		}
		if err != nil {
			t.Errorf("%+v: %v", opts, err)
		}
	}
	for _, opts := range []onnxruntime.Options{
		{IntraOpThreads: -1},
		{InterOpThreads: -2},
		{GraphOptimization: onnxruntime.OptimizeAll + 1},
		{GraphOptimization: -1},
	} {
		if s, err := onnxruntime.NewSession(model, opts); err == nil {
			s.Close()
			t.Errorf("%+v: NewSession succeeded", opts)
		}
	}
}
