package install

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
)

const goodSpec = `{"schema":"tg.model.v1","runtime":"onnxruntime","model":"model.onnx","files":["model.onnx.data"],` +
	`"inputs":["x"],"outputs":["y","z"],"selftest":"selftest.json"}`

func TestParseModelSpec(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, doc, err string
	}{
		{"valid", goodSpec, ""},
		{"minimal", `{"schema":"tg.model.v1","runtime":"onnxruntime","model":"m/model.onnx","inputs":["x"],"outputs":["y"],"selftest":"t.json"}`, ""},
		{"wrong schema", strings.Replace(goodSpec, "tg.model.v1", "tg.model.v2", 1), "schema"},
		{"unknown field", strings.Replace(goodSpec, `"runtime"`, `"opset":17,"runtime"`, 1), "unknown field"},
		{"trailing data", goodSpec + `{}`, "trailing"},
		{"bad runtime", strings.Replace(goodSpec, "onnxruntime", "ONNX Runtime", 1), "runtime"},
		{"escaping path", strings.Replace(goodSpec, `"model.onnx"`, `"../model.onnx"`, 1), "path"},
		{"absolute path", strings.Replace(goodSpec, `"model.onnx"`, `"/model.onnx"`, 1), "path"},
		{"the spec itself", strings.Replace(goodSpec, `"selftest.json"`, `"tg-model.json"`, 1), "twice"},
		{"path twice", strings.Replace(goodSpec, `"model.onnx.data"`, `"model.onnx"`, 1), "twice"},
		{"no inputs", strings.Replace(goodSpec, `["x"]`, `[]`, 1), "inputs"},
		{"repeated output", strings.Replace(goodSpec, `["y","z"]`, `["y","y"]`, 1), "outputs"},
		{"empty name", strings.Replace(goodSpec, `["x"]`, `[""]`, 1), "inputs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseModelSpec([]byte(tc.doc))
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, errMalformedSpec) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %v, want an errMalformedSpec naming %q", err, tc.err)
			}
		})
	}
}

func testSpec(t testing.TB) *ModelSpec {
	s, err := ParseModelSpec([]byte(goodSpec))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const goodSelfTest = `{"schema":"tg.selftest.v1","tolerance":1e-4,"rtol":1e-3,"cases":[` +
	`{"name":"zeros","inputs":{"x":{"shape":[1,4],"data":[0,0,0,0]}},"outputs":{"y":{"shape":[1,3],"data":[0.1,0.2,0.7]}}},` +
	`{"inputs":{"x":{"shape":[2,2],"data":[1,2,3,4]}},"outputs":{"y":{"shape":[3],"data":[1,2,3]},"z":{"shape":[],"data":[5]}}}]}`

var selfTestTable = []struct {
	name, doc, err string
}{
	{"valid", goodSelfTest, ""},
	{"empty tensor", `{"schema":"tg.selftest.v1","tolerance":0,"cases":[{"inputs":{"x":{"shape":[3,0],"data":[]}},"outputs":{"y":{"shape":[0],"data":[]}}}]}`, ""},
	{"wrong schema", strings.Replace(goodSelfTest, "tg.selftest.v1", "tg.selftest", 1), "schema"},
	{"unknown field", strings.Replace(goodSelfTest, `"tolerance"`, `"atol":1,"tolerance"`, 1), "unknown field"},
	{"negative tolerance", strings.Replace(goodSelfTest, "1e-4", "-1e-4", 1), "tolerance"},
	{"negative rtol", strings.Replace(goodSelfTest, "1e-3", "-1", 1), "tolerance"},
	{"no cases", `{"schema":"tg.selftest.v1","tolerance":0,"cases":[]}`, "cases"},
	{"missing input", strings.Replace(goodSelfTest, `"inputs":{"x":{"shape":[1,4],"data":[0,0,0,0]}}`, `"inputs":{}`, 1), "every input"},
	{"unknown input", strings.Replace(goodSelfTest, `"inputs":{"x":{"shape":[1,4]`, `"inputs":{"w":{"shape":[1,4]`, 1), "not an input"},
	{"unknown output", strings.Replace(goodSelfTest, `"z":{"shape"`, `"q":{"shape"`, 1), "not an output"},
	{"no outputs", strings.Replace(goodSelfTest, `"outputs":{"y":{"shape":[1,3],"data":[0.1,0.2,0.7]}}`, `"outputs":{}`, 1), "no output"},
	{"shape too big", strings.Replace(goodSelfTest, `"shape":[1,4]`, `"shape":[2,4]`, 1), "shape"},
	{"shape too small", strings.Replace(goodSelfTest, `"shape":[1,4]`, `"shape":[1,3]`, 1), "shape"},
	{"negative dimension", strings.Replace(goodSelfTest, `"shape":[1,4]`, `"shape":[-1,-4]`, 1), "negative"},
	{"overflowing shape", strings.Replace(goodSelfTest, `"shape":[1,4]`, `"shape":[4611686018427387904,4611686018427387904,4]`, 1), "shape"},
	{"rank 9", strings.Replace(goodSelfTest, `"shape":[1,4]`, `"shape":[1,1,1,1,1,1,1,1,4]`, 1), "rank"},
	{"not a number", strings.Replace(goodSelfTest, `[0,0,0,0]`, `[0,0,0,"NaN"]`, 1), "cannot unmarshal"},
}

func TestParseSelfTest(t *testing.T) {
	t.Parallel()
	spec := testSpec(t)
	for _, tc := range selfTestTable {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, err := ParseSelfTest([]byte(tc.doc), spec)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(st.Cases) == 0 {
					t.Fatal("no cases")
				}
				return
			}
			if !errors.Is(err, errMalformedSpec) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %v, want an errMalformedSpec naming %q", err, tc.err)
			}
		})
	}
}

// FuzzParseSelfTest: never panics; whatever parses survives a round trip
// through JSON unchanged.
func FuzzParseSelfTest(f *testing.F) {
	for _, tc := range selfTestTable {
		f.Add([]byte(tc.doc))
	}
	spec := testSpec(f)
	f.Fuzz(func(t *testing.T, doc []byte) {
		st, err := ParseSelfTest(doc, spec)
		if err != nil {
			return
		}
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseSelfTest(b, spec)
		if err != nil {
			t.Fatalf("re-encoded self-test does not parse: %v\n%s", err, b)
		}
		if !reflect.DeepEqual(normal(st), normal(again)) {
			t.Fatalf("round trip changed the self-test:\n%+v\n%+v", st, again)
		}
	})
}

// normal makes empty and nil slices alike (omitempty drops neither here,
// but "[]" and null decode differently).
func normal(st *SelfTest) *SelfTest {
	for _, c := range st.Cases {
		for _, m := range []map[string]Tensor{c.Inputs, c.Outputs} {
			for k, v := range m {
				if len(v.Shape) == 0 {
					v.Shape = nil
				}
				if len(v.Data) == 0 {
					v.Data = nil
				}
				m[k] = v
			}
		}
	}
	return st
}

func TestCompareTensor(t *testing.T) {
	t.Parallel()
	want := Tensor{Shape: []int64{1, 3}, Data: []float32{1, -2, 1000}}
	tests := []struct {
		name       string
		got        Tensor
		atol, rtol float64
		ok         bool
	}{
		{"exact", want, 0, 0, true},
		{"within absolute", Tensor{Shape: []int64{1, 3}, Data: []float32{1.00005, -2.00005, 1000}}, 1e-4, 0, true},
		{"outside absolute", Tensor{Shape: []int64{1, 3}, Data: []float32{1.001, -2, 1000}}, 1e-4, 0, false},
		{"relative admits large values", Tensor{Shape: []int64{1, 3}, Data: []float32{1, -2, 1000.5}}, 1e-4, 1e-3, true},
		{"relative is not absolute", Tensor{Shape: []int64{1, 3}, Data: []float32{1.01, -2, 1000}}, 1e-4, 1e-3, false},
		{"NaN never passes", Tensor{Shape: []int64{1, 3}, Data: []float32{float32(math.NaN()), -2, 1000}}, math.MaxFloat64, 0, false},
		{"Inf never passes", Tensor{Shape: []int64{1, 3}, Data: []float32{1, float32(math.Inf(-1)), 1000}}, math.MaxFloat64, 0, false},
		{"shape differs", Tensor{Shape: []int64{3}, Data: []float32{1, -2, 1000}}, 1, 0, false},
		{"length differs", Tensor{Shape: []int64{1, 3}, Data: []float32{1, -2}}, 1, 0, false},
	}
	for _, tc := range tests {
		err := compareTensor(tc.got, want, tc.atol, tc.rtol)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

type constModel map[string]Tensor

func (m constModel) Infer(map[string]inference.Tensor) (map[string]inference.Tensor, error) {
	out := map[string]inference.Tensor{}
	for name, t := range m {
		out[name] = inference.Tensor{Shape: t.Shape, Float32: t.Data}
	}
	return out, nil
}
func (constModel) Backend() string                 { return "const" }
func (constModel) Inputs() []inference.TensorInfo  { return nil }
func (constModel) Outputs() []inference.TensorInfo { return nil }
func (constModel) Close() error                    { return nil }

func TestRunSelfTest(t *testing.T) {
	t.Parallel()
	st, err := ParseSelfTest([]byte(`{"schema":"tg.selftest.v1","tolerance":0.01,"cases":[`+
		`{"inputs":{"x":{"shape":[1],"data":[1]}},"outputs":{"y":{"shape":[2],"data":[0.5,0.5]}}}]}`), testSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := runSelfTest(constModel{"y": {Shape: []int64{2}, Data: []float32{0.505, 0.495}}}, st); err != nil {
		t.Errorf("within tolerance: %v", err)
	}
	if err := runSelfTest(constModel{"y": {Shape: []int64{2}, Data: []float32{0.52, 0.5}}}, st); !errors.Is(err, errSelfTest) {
		t.Errorf("off by 0.02: %v", err)
	}
	if err := runSelfTest(constModel{"z": {Shape: []int64{2}, Data: []float32{0.5, 0.5}}}, st); !errors.Is(err, errSelfTest) {
		t.Errorf("output missing: %v", err)
	}
}
