package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"regexp"
	"slices"

	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// The package convention for models (docs/packages.md): a package the
// agent installs carries tg-model.json at its root, naming the runtime, the
// model file, its input and output names and the self-test file.
const (
	ModelSpecPath  = "tg-model.json"
	ModelSchema    = "tg.model.v1"
	SelfTestSchema = "tg.selftest.v1"
)

// Bounds on what the agent decrypts into memory for the convention files.
const (
	maxSpecSize     = 64 << 10
	maxSelfTestSize = 64 << 20
	maxCases        = 1024
	maxNames        = 64
	maxRank         = 8
)

// Tensor is a dense float32 tensor in row-major order.
type Tensor struct {
	Shape []int64   `json:"shape"`
	Data  []float32 `json:"data"`
}

// ModelSpec is tg-model.json.
type ModelSpec struct {
	Schema  string `json:"schema"`
	Runtime string `json:"runtime"` // e.g. "onnxruntime"
	Model   string `json:"model"`   // path of the model file in the package
	// Files are further files the runtime needs beside the model (external
	// weights), handed to it under their paths.
	Files    []string `json:"files,omitempty"`
	Inputs   []string `json:"inputs"`  // input names, in the model's order
	Outputs  []string `json:"outputs"` // output names, in the model's order
	SelfTest string   `json:"selftest"`
}

// SelfTest is the self-test file: cases whose outputs the model must
// reproduce. An output element passes when
// |got − want| ≤ tolerance + rtol·|want| (numpy's allclose rule; rtol
// defaults to 0, making tolerance a plain absolute bound); a NaN or an
// infinity in the output never passes.
type SelfTest struct {
	Schema    string         `json:"schema"`
	Tolerance float64        `json:"tolerance"`
	RTol      float64        `json:"rtol,omitempty"`
	Cases     []SelfTestCase `json:"cases"`
}

// SelfTestCase feeds Inputs (every model input) and expects Outputs (some
// or all model outputs).
type SelfTestCase struct {
	Name    string            `json:"name,omitempty"`
	Inputs  map[string]Tensor `json:"inputs"`
	Outputs map[string]Tensor `json:"outputs"`
}

var runtimeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// errMalformedSpec marks a package that does not follow the convention.
var errMalformedSpec = errors.New("package does not follow the model convention")

func specErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMalformedSpec, fmt.Sprintf(format, args...))
}

// decodeJSON decodes exactly one JSON object, refusing unknown fields and
// trailing data.
func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// ParseModelSpec decodes and checks tg-model.json.
func ParseModelSpec(b []byte) (*ModelSpec, error) {
	var s ModelSpec
	if err := decodeJSON(b, &s); err != nil {
		return nil, specErr("%s: %v", ModelSpecPath, err)
	}
	if s.Schema != ModelSchema {
		return nil, specErr("%s: schema %q, want %q", ModelSpecPath, s.Schema, ModelSchema)
	}
	if !runtimeRE.MatchString(s.Runtime) {
		return nil, specErr("%s: runtime %q must match %s", ModelSpecPath, s.Runtime, runtimeRE)
	}
	seen := map[string]bool{ModelSpecPath: true}
	for _, p := range append([]string{s.Model, s.SelfTest}, s.Files...) {
		if err := tgsp.ValidPath(p); err != nil {
			return nil, specErr("%s: path %q: %v", ModelSpecPath, p, err)
		}
		if seen[p] {
			return nil, specErr("%s: path %q named twice", ModelSpecPath, p)
		}
		seen[p] = true
	}
	if err := checkNames("inputs", s.Inputs); err != nil {
		return nil, err
	}
	if err := checkNames("outputs", s.Outputs); err != nil {
		return nil, err
	}
	return &s, nil
}

func checkNames(field string, names []string) error {
	if len(names) == 0 || len(names) > maxNames {
		return specErr("%s: %s must list 1 to %d names", ModelSpecPath, field, maxNames)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if n == "" || len(n) > 256 || seen[n] {
			return specErr("%s: %s: name %q is empty, too long or repeated", ModelSpecPath, field, n)
		}
		seen[n] = true
	}
	return nil
}

// ParseSelfTest decodes and checks the self-test file against spec.
func ParseSelfTest(b []byte, spec *ModelSpec) (*SelfTest, error) {
	var st SelfTest
	if err := decodeJSON(b, &st); err != nil {
		return nil, specErr("%s: %v", spec.SelfTest, err)
	}
	if st.Schema != SelfTestSchema {
		return nil, specErr("%s: schema %q, want %q", spec.SelfTest, st.Schema, SelfTestSchema)
	}
	if !(st.Tolerance >= 0) || math.IsInf(st.Tolerance, 0) || !(st.RTol >= 0) || math.IsInf(st.RTol, 0) {
		return nil, specErr("%s: tolerance and rtol must be finite and not negative", spec.SelfTest)
	}
	if len(st.Cases) == 0 || len(st.Cases) > maxCases {
		return nil, specErr("%s: %d cases; want 1 to %d", spec.SelfTest, len(st.Cases), maxCases)
	}
	inputs := setOf(spec.Inputs)
	outputs := setOf(spec.Outputs)
	for i, c := range st.Cases {
		if len(c.Inputs) != len(inputs) {
			return nil, specErr("%s: case %d must give every input (%v)", spec.SelfTest, i, spec.Inputs)
		}
		for name, t := range c.Inputs {
			if !inputs[name] {
				return nil, specErr("%s: case %d: %q is not an input of the model", spec.SelfTest, i, name)
			}
			if err := t.check(); err != nil {
				return nil, specErr("%s: case %d input %q: %v", spec.SelfTest, i, name, err)
			}
		}
		if len(c.Outputs) == 0 {
			return nil, specErr("%s: case %d expects no output", spec.SelfTest, i)
		}
		for name, t := range c.Outputs {
			if !outputs[name] {
				return nil, specErr("%s: case %d: %q is not an output of the model", spec.SelfTest, i, name)
			}
			if err := t.check(); err != nil {
				return nil, specErr("%s: case %d output %q: %v", spec.SelfTest, i, name, err)
			}
		}
	}
	return &st, nil
}

func setOf(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// check verifies that the shape is sane and matches the data.
func (t Tensor) check() error {
	if len(t.Shape) > maxRank {
		return fmt.Errorf("rank %d exceeds %d", len(t.Shape), maxRank)
	}
	zero := false
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("negative dimension in shape %v", t.Shape)
		}
		zero = zero || d == 0
	}
	n, limit := int64(1), int64(len(t.Data))
	if zero {
		n = 0
	}
	for _, d := range t.Shape {
		if n == 0 {
			break
		}
		if n > limit/d { // n·d > limit, without overflowing
			return fmt.Errorf("shape %v holds more than the %d values given", t.Shape, limit)
		}
		n *= d
	}
	if n != limit {
		return fmt.Errorf("shape %v holds %d values, data has %d", t.Shape, n, limit)
	}
	return nil
}

// errSelfTest marks a model that did not reproduce its test vectors.
var errSelfTest = errors.New("self-test failed")

// runSelfTest feeds every case to m and compares the outputs.
func runSelfTest(m Model, st *SelfTest) error {
	for i, c := range st.Cases {
		got, err := runFloat(m, c.Inputs)
		if err != nil {
			return fmt.Errorf("%w: case %d: run: %v", errSelfTest, i, err)
		}
		for _, name := range slices.Sorted(maps.Keys(c.Outputs)) { // the first failure, always the same
			want := c.Outputs[name]
			g, ok := got[name]
			if !ok {
				return fmt.Errorf("%w: case %d: the model gave no output %q", errSelfTest, i, name)
			}
			if err := compareTensor(g, want, st.Tolerance, st.RTol); err != nil {
				return fmt.Errorf("%w: case %d output %q: %v", errSelfTest, i, name, err)
			}
		}
	}
	return nil
}

// compareTensor applies the self-test rule to every element.
func compareTensor(got, want Tensor, atol, rtol float64) error {
	if !equalShape(got.Shape, want.Shape) || len(got.Data) != len(want.Data) {
		return fmt.Errorf("shape %v (%d values), want %v", got.Shape, len(got.Data), want.Shape)
	}
	for i := range want.Data {
		g, w := float64(got.Data[i]), float64(want.Data[i])
		if math.IsNaN(g) || math.IsInf(g, 0) || math.Abs(g-w) > atol+rtol*math.Abs(w) {
			return fmt.Errorf("element %d is %g, want %g (tolerance %g, rtol %g)", i, g, w, atol, rtol)
		}
	}
	return nil
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// runFloat runs m on float inputs, as the self-test file writes them:
// an input the model declares INT64 must hold whole numbers; INT64 outputs
// come back as float32 (exact up to 2^24, enough for class and token ids).
func runFloat(m Model, inputs map[string]Tensor) (map[string]Tensor, error) {
	types := map[string]inference.DataType{}
	for _, info := range m.Inputs() {
		types[info.Name] = info.DataType
	}
	in := make(map[string]inference.Tensor, len(inputs))
	for name, t := range inputs {
		if types[name] != inference.INT64 {
			in[name] = inference.Tensor{Shape: t.Shape, Float32: t.Data}
			continue
		}
		v := make([]int64, len(t.Data))
		for i, f := range t.Data {
			if f != float32(math.Trunc(float64(f))) {
				return nil, fmt.Errorf("input %q is INT64; value %d (%g) is not a whole number", name, i, f)
			}
			v[i] = int64(f)
		}
		in[name] = inference.Tensor{Shape: t.Shape, Int64: v}
	}
	out, err := m.Infer(in)
	if err != nil {
		return nil, err
	}
	res := make(map[string]Tensor, len(out))
	for name, t := range out {
		data := t.Float32
		if t.Int64 != nil {
			data = make([]float32, len(t.Int64))
			for i, v := range t.Int64 {
				data[i] = float32(v)
			}
		}
		res[name] = Tensor{Shape: t.Shape, Data: data}
	}
	return res, nil
}
