package tensorrt

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
)

// These tests cover the pure-Go half of the package, which every build
// has: option checks and encodings, input checks and type mapping.

func TestBuildOptionsValidate(t *testing.T) {
	t.Parallel()
	batch := InputProfile{Name: "x", Min: []int64{1, 4}, Opt: []int64{8, 4}, Max: []int64{64, 4}}
	tests := []struct {
		name string
		opts BuildOptions
		ok   bool
	}{
		{"zero", BuildOptions{}, true},
		{"everything", BuildOptions{WorkspaceBytes: 1 << 28, FP16: true, TF32: true, Profiles: []InputProfile{batch, {Name: "y", Min: []int64{}, Opt: []int64{}, Max: []int64{}}}}, true},
		{"equal bounds", BuildOptions{Profiles: []InputProfile{{Name: "x", Min: []int64{2}, Opt: []int64{2}, Max: []int64{2}}}}, true},
		{"negative workspace", BuildOptions{WorkspaceBytes: -1}, false},
		{"empty name", BuildOptions{Profiles: []InputProfile{{Min: []int64{1}, Opt: []int64{1}, Max: []int64{1}}}}, false},
		{"NUL in name", BuildOptions{Profiles: []InputProfile{{Name: "x\x00y", Min: []int64{1}, Opt: []int64{1}, Max: []int64{1}}}}, false},
		{"duplicate", BuildOptions{Profiles: []InputProfile{batch, batch}}, false},
		{"ranks differ", BuildOptions{Profiles: []InputProfile{{Name: "x", Min: []int64{1}, Opt: []int64{1, 2}, Max: []int64{1, 2}}}}, false},
		{"rank too large", BuildOptions{Profiles: []InputProfile{{Name: "x", Min: make([]int64, 9), Opt: make([]int64, 9), Max: make([]int64, 9)}}}, false},
		{"min above opt", BuildOptions{Profiles: []InputProfile{{Name: "x", Min: []int64{4}, Opt: []int64{2}, Max: []int64{8}}}}, false},
		{"opt above max", BuildOptions{Profiles: []InputProfile{{Name: "x", Min: []int64{1}, Opt: []int64{9}, Max: []int64{8}}}}, false},
		{"negative min", BuildOptions{Profiles: []InputProfile{{Name: "x", Min: []int64{-1}, Opt: []int64{1}, Max: []int64{8}}}}, false},
	}
	for _, tt := range tests {
		err := tt.opts.Validate()
		if tt.ok != (err == nil) {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: %v does not wrap ErrInvalidOptions", tt.name, err)
		}
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	x := InputProfile{Name: "x", Min: []int64{1, 4}, Opt: []int64{8, 4}, Max: []int64{64, 4}}
	y := InputProfile{Name: "y", Min: []int64{1}, Opt: []int64{1}, Max: []int64{1}}
	base := BuildOptions{Profiles: []InputProfile{x, y}}
	if a, b := base.Fingerprint(), (BuildOptions{Profiles: []InputProfile{y, x}}).Fingerprint(); a != b {
		t.Errorf("profile order changes the fingerprint:\n%s\n%s", a, b)
	}
	variants := map[string]BuildOptions{
		"base":        base,
		"zero":        {},
		"workspace":   {WorkspaceBytes: 1, Profiles: base.Profiles},
		"fp16":        {FP16: true, Profiles: base.Profiles},
		"tf32":        {TF32: true, Profiles: base.Profiles},
		"one profile": {Profiles: []InputProfile{x}},
		"other max":   {Profiles: []InputProfile{{Name: "x", Min: x.Min, Opt: x.Opt, Max: []int64{32, 4}}, y}},
		"other name":  {Profiles: []InputProfile{{Name: "x2", Min: x.Min, Opt: x.Opt, Max: x.Max}, y}},
		// A quoted name cannot be confused with the text around it.
		"tricky name": {Profiles: []InputProfile{{Name: `x" min=[1 4]`, Min: x.Min, Opt: x.Opt, Max: x.Max}, y}},
	}
	seen := map[string]string{}
	for name, o := range variants {
		fp := o.Fingerprint()
		if other, ok := seen[fp]; ok {
			t.Errorf("%s and %s share the fingerprint %q", name, other, fp)
		}
		seen[fp] = name
	}
}

func TestDataTypeFromTRT(t *testing.T) {
	t.Parallel()
	want := map[int32]DataType{
		trtFloat: Float32, trtHalf: 10, trtInt8: 3, trtInt32: Int64, trtBool: 9,
		trtUint8: 2, trtFP8: 17, trtBF16: 16, trtInt64: Int64, trtInt4: 22, 42: onnxmodel.Undefined,
	}
	for trt, dt := range want {
		if got := dataTypeFromTRT(trt); got != dt {
			t.Errorf("dataTypeFromTRT(%d) = %v, want %v", trt, got, dt)
		}
	}
	if got := trtTypeName(trtBF16); got != "bfloat16" {
		t.Errorf("trtTypeName(bf16) = %q", got)
	}
	if got := trtTypeName(-1); got != "tensorrt-type--1" {
		t.Errorf("trtTypeName(-1) = %q", got)
	}
}

func engineIO() []ioTensor {
	return []ioTensor{
		{TensorInfo: TensorInfo{Name: "x", Type: Float32, Shape: []int64{-1, 4}}, index: 0, trtType: trtFloat, input: true},
		{TensorInfo: TensorInfo{Name: "ids", Type: Int64, Shape: []int64{2}}, index: 1, trtType: trtInt32, input: true},
		{TensorInfo: TensorInfo{Name: "scale", Type: Float32, Shape: []int64{}}, index: 2, trtType: trtFloat, input: true},
	}
}

func TestCheckInputs(t *testing.T) {
	t.Parallel()
	good := func() map[string]Tensor {
		return map[string]Tensor{
			"x":     {Shape: []int64{2, 4}, Float32: make([]float32, 8)},
			"ids":   {Shape: []int64{2}, Int64: []int64{1, 2}},
			"scale": {Shape: []int64{}, Float32: []float32{0.5}},
		}
	}
	tests := []struct {
		name   string
		change func(map[string]Tensor)
		want   string // "" for success, else a part of the message
	}{
		{"good", func(map[string]Tensor) {}, ""},
		{"empty batch", func(m map[string]Tensor) { m["x"] = Tensor{Shape: []int64{0, 4}, Float32: []float32{}} }, ""},
		{"missing", func(m map[string]Tensor) { delete(m, "ids") }, `missing input "ids"`},
		{"unknown", func(m map[string]Tensor) { m["y"] = m["x"] }, `unknown input "y"`},
		{"no data", func(m map[string]Tensor) { m["x"] = Tensor{Shape: []int64{2, 4}} }, "exactly one"},
		{"both", func(m map[string]Tensor) {
			m["x"] = Tensor{Shape: []int64{1, 4}, Float32: make([]float32, 4), Int64: make([]int64, 4)}
		}, "exactly one"},
		{"wrong type", func(m map[string]Tensor) { m["x"] = Tensor{Shape: []int64{1, 4}, Int64: make([]int64, 4)} }, "is float32, got int64"},
		{"wrong rank", func(m map[string]Tensor) { m["x"] = Tensor{Shape: []int64{8}, Float32: make([]float32, 8)} }, "rank 1"},
		{"scalar as vector", func(m map[string]Tensor) { m["scale"] = Tensor{Shape: []int64{1}, Float32: []float32{1}} }, "rank 1"},
		{"fixed dim", func(m map[string]Tensor) { m["x"] = Tensor{Shape: []int64{2, 3}, Float32: make([]float32, 6)} }, "has shape [-1 4]"},
		{"negative dim", func(m map[string]Tensor) { m["x"] = Tensor{Shape: []int64{-2, 4}, Float32: make([]float32, 8)} }, "negative dimension"},
		{"too few values", func(m map[string]Tensor) { m["x"] = Tensor{Shape: []int64{2, 4}, Float32: make([]float32, 7)} }, "needs 8 values, got 7"},
		{"huge", func(m map[string]Tensor) { m["x"] = Tensor{Shape: []int64{1 << 58, 4}, Float32: make([]float32, 1)} }, "too large"},
	}
	for _, tt := range tests {
		in := good()
		tt.change(in)
		err := checkInputs(engineIO(), in)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want an error containing %q", tt.name, err, tt.want)
		case err != nil && !errors.Is(err, ErrInvalidInput):
			t.Errorf("%s: %v does not wrap ErrInvalidInput", tt.name, err)
		}
	}
}

func TestCheckEngineIO(t *testing.T) {
	t.Parallel()
	out := ioTensor{TensorInfo: TensorInfo{Name: "y", Type: Float32, Shape: []int64{-1}}, index: 3, trtType: trtFloat}
	if err := checkEngineIO(append(engineIO(), out)); err != nil {
		t.Fatal(err)
	}
	half := out
	half.trtType, half.Type = trtHalf, dataTypeFromTRT(trtHalf)
	for name, io := range map[string][]ioTensor{
		"float16 output": append(engineIO(), half),
		"no outputs":     engineIO(),
		"rank 9":         {{TensorInfo: TensorInfo{Name: "y", Type: Float32, Shape: make([]int64, 9)}, trtType: trtFloat}},
	} {
		if err := checkEngineIO(io); !errors.Is(err, ErrUnsupportedModel) {
			t.Errorf("%s: %v, want ErrUnsupportedModel", name, err)
		}
	}
}

func TestNarrowInt32(t *testing.T) {
	t.Parallel()
	got, err := narrowInt32("ids", []int64{0, -1 << 31, 1<<31 - 1})
	if err != nil || !reflect.DeepEqual(got, []int32{0, -1 << 31, 1<<31 - 1}) {
		t.Fatalf("narrowInt32 = %v, %v", got, err)
	}
	for _, v := range []int64{1 << 31, -1<<31 - 1} {
		if _, err := narrowInt32("ids", []int64{v}); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("narrowInt32(%d): %v, want ErrInvalidInput", v, err)
		}
	}
}

func TestFormats(t *testing.T) {
	t.Parallel()
	for v, want := range map[int]string{100300: "10.3.0", 101601: "10.16.1", 0: ""} {
		if got := formatVersion(v); got != want {
			t.Errorf("formatVersion(%d) = %q, want %q", v, got, want)
		}
	}
	d := DeviceInfo{Name: "Orin", ComputeMajor: 8, ComputeMinor: 7, CUDARuntime: 12060}
	if got := d.String(); got != "Orin sm_87 cuda 12.6" {
		t.Errorf("DeviceInfo.String() = %q", got)
	}
}

func TestTensorDataType(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		t    Tensor
		want DataType
	}{
		{Tensor{Float32: []float32{}}, Float32},
		{Tensor{Int64: []int64{1}}, Int64},
		{Tensor{}, onnxmodel.Undefined},
		{Tensor{Float32: []float32{1}, Int64: []int64{1}}, onnxmodel.Undefined},
	} {
		if got := c.t.DataType(); got != c.want {
			t.Errorf("%+v.DataType() = %v, want %v", c.t, got, c.want)
		}
	}
}
