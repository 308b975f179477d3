package onnxmodel

import (
	"bytes"
	"errors"
	"flag"
	"math"
	"os"
	"reflect"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const goldenMLP = "testdata/mlp-4x8x3-seed1.onnx"

func encodeMLP(t testing.TB) []byte {
	t.Helper()
	b, err := NewMLP(4, 8, 3, 1).Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGolden pins the bytes Encode writes: a change in the encoder (field
// order, packing, defaults) or in NewMLP's generator shows up here, and the
// golden file is a real model other tools can load.
func TestGolden(t *testing.T) {
	t.Parallel()
	got := encodeMLP(t)
	if *update {
		if err := os.WriteFile(goldenMLP, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(goldenMLP)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode differs from %s (%d vs %d bytes); if intended, rerun with -update", goldenMLP, len(got), len(want))
	}
	again := encodeMLP(t)
	if !bytes.Equal(got, again) {
		t.Fatal("Encode is not deterministic")
	}
}

// TestEncodeLayout checks the encoder against protobuf bytes written out by
// hand, so the golden file is not its only witness.
func TestEncodeLayout(t *testing.T) {
	t.Parallel()
	m := Model{Graph: Graph{
		Name:    "g",
		Nodes:   []Node{{OpType: "Relu", Inputs: []string{"a"}, Outputs: []string{"b"}, Attrs: []Attr{IntAttr("k", -1)}}},
		Inputs:  []ValueInfo{{Name: "a", Type: Float, Shape: []int64{-1, 2}}},
		Outputs: []ValueInfo{{Name: "b", Type: Float}},
	}}
	got, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	neg1 := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}
	attr := cat([]byte{0x0a, 1, 'k', 0x18}, neg1, []byte{0xa0, 0x01, 2}) // name, i=-1, type=INT
	node := cat([]byte{0x0a, 1, 'a', 0x12, 1, 'b', 0x22, 4}, []byte("Relu"), []byte{0x2a, byte(len(attr))}, attr)
	dims := cat([]byte{0x0a, 7, 0x12, 5}, []byte("batch"), []byte{0x0a, 2, 0x08, 2})
	in := cat([]byte{0x0a, 1, 'a', 0x12, byte(len(dims) + 6), 0x0a, byte(len(dims) + 4), 0x08, 1, 0x12, byte(len(dims))}, dims)
	out := []byte{0x0a, 1, 'b', 0x12, 4, 0x0a, 2, 0x08, 1}
	graph := cat([]byte{0x0a, byte(len(node))}, node, []byte{0x12, 1, 'g'},
		[]byte{0x5a, byte(len(in))}, in, []byte{0x62, byte(len(out))}, out)
	want := cat([]byte{0x08, DefaultIRVersion, 0x3a, byte(len(graph))}, graph,
		[]byte{0x42, 4, 0x0a, 0, 0x10, DefaultOpset})
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode:\n got %x\nwant %x", got, want)
	}
}

func TestEncodeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		g    Graph
	}{
		{"node without op", Graph{Nodes: []Node{{Name: "n"}}}},
		{"bad attribute type", Graph{Nodes: []Node{{OpType: "Relu", Attrs: []Attr{{Name: "a", Type: 99}}}}}},
		{"initializer without data", Graph{Initializers: []Tensor{{Name: "w", Dims: []int64{1}}}}},
		{"initializer with both", Graph{Initializers: []Tensor{{Name: "w", Dims: []int64{1}, Float: []float32{1}, Int64: []int64{1}}}}},
		{"initializer of wrong size", Graph{Initializers: []Tensor{{Name: "w", Dims: []int64{2, 2}, Float: []float32{1, 2, 3}}}}},
		{"initializer with negative dim", Graph{Initializers: []Tensor{{Name: "w", Dims: []int64{-1}, Int64: []int64{}}}}},
	}
	for _, tt := range tests {
		if _, err := (Model{Graph: tt.g}).Encode(); err == nil {
			t.Errorf("%s: Encode succeeded", tt.name)
		}
	}
	if _, err := (MLP{In: 2, Hidden: 2, Out: 2}).Encode(); err == nil {
		t.Error("MLP without weights encoded")
	}
}

func TestReadIO(t *testing.T) {
	t.Parallel()
	mlpIn := []ValueInfo{{Name: MLPInput, Type: Float, Shape: []int64{-1, 4}}}
	mlpOut := []ValueInfo{
		{Name: MLPLogits, Type: Float, Shape: []int64{-1, 3}},
		{Name: MLPProbs, Type: Float, Shape: []int64{-1, 3}},
		{Name: MLPClass, Type: Int64, Shape: []int64{-1}},
	}
	// A graph that lists an initializer among its inputs (as exporters for
	// IR < 4 did): ONNX Runtime does not count it as an input.
	withInitInput := Model{Graph: Graph{
		Nodes:        []Node{{OpType: "Add", Inputs: []string{"a", "w"}, Outputs: []string{"y"}}},
		Initializers: []Tensor{{Name: "w", Dims: []int64{2}, Int64: []int64{1, 2}}},
		Inputs: []ValueInfo{
			{Name: "a", Type: Int64, Shape: []int64{2}},
			{Name: "w", Type: Int64, Shape: []int64{2}},
			{Name: "s", Type: Float, Shape: []int64{}}, // a scalar
			{Name: "u", Type: Float},                   // unknown rank
		},
		Outputs: []ValueInfo{{Name: "y", Type: Int64, Shape: []int64{2}}},
	}}
	// A sequence input and a sparse initializer, written by hand.
	var seqType, seqIn, sparseVals, sparse, graph, model enc
	seqType.bytes(4, []byte{0x0a, 0x02, 0x08, 0x01}) // sequence_type{elem_type: tensor(float)}
	seqIn.string(valueInfoName, "seq")
	seqIn.bytes(valueInfoType, seqType)
	sparseVals.string(tensorName, "sp")
	sparse.bytes(sparseValues, sparseVals)
	graph.bytes(graphInput, seqIn)
	graph.bytes(graphInput, ValueInfo{Name: "sp", Type: Float, Shape: []int64{3}}.encode())
	graph.bytes(graphSparseInitializer, sparse)
	graph.bytes(graphOutput, ValueInfo{Name: "o", Type: Float, Shape: []int64{3}}.encode())
	model.bytes(modelGraph, graph)

	tests := []struct {
		name      string
		model     []byte
		in, out   []ValueInfo
		wantError error // nil: success; errNotNil: any error
	}{
		{name: "mlp", model: encodeMLP(t), in: mlpIn, out: mlpOut},
		{name: "initializer listed as input", model: mustEncode(t, withInitInput),
			in: []ValueInfo{
				{Name: "a", Type: Int64, Shape: []int64{2}},
				{Name: "s", Type: Float, Shape: []int64{}},
				{Name: "u", Type: Float},
			},
			out: []ValueInfo{{Name: "y", Type: Int64, Shape: []int64{2}}}},
		{name: "sequence input and sparse initializer", model: model,
			in:  []ValueInfo{{Name: "seq"}},
			out: []ValueInfo{{Name: "o", Type: Float, Shape: []int64{3}}}},
		{name: "empty", model: nil, wantError: ErrNoGraph},
		{name: "no graph", model: []byte{0x08, 0x08}, wantError: ErrNoGraph},
		{name: "graph as varint", model: []byte{0x38, 0x01}, wantError: errNotNil},
		{name: "truncated length", model: []byte{0x3a, 0x05, 0x00}, wantError: errNotNil},
		{name: "group wire type", model: []byte{0x3b}, wantError: errNotNil},
		{name: "field zero", model: []byte{0x02, 0x00}, wantError: errNotNil},
		{name: "overlong varint", model: bytes.Repeat([]byte{0xff}, 11), wantError: errNotNil},
		{name: "name not utf-8", model: mustEncode(t, Model{Graph: Graph{Inputs: []ValueInfo{{Name: "\xff"}}}}), wantError: errNotNil},
	}
	for _, tt := range tests {
		in, out, err := ReadIO(tt.model)
		switch {
		case tt.wantError == nil && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.wantError == nil:
			if !reflect.DeepEqual(in, tt.in) || !reflect.DeepEqual(out, tt.out) {
				t.Errorf("%s: ReadIO = %v, %v; want %v, %v", tt.name, in, out, tt.in, tt.out)
			}
		case err == nil:
			t.Errorf("%s: ReadIO succeeded: %v %v", tt.name, in, out)
		case tt.wantError != errNotNil && !errors.Is(err, tt.wantError):
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.wantError)
		}
	}
}

var errNotNil = errors.New("any error")

func mustEncode(t testing.TB, m Model) []byte {
	t.Helper()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadIOTruncated reads every prefix of a real model: a cut inside a
// field is an error, never a panic, and no prefix yields other I/O.
func TestReadIOTruncated(t *testing.T) {
	t.Parallel()
	b := encodeMLP(t)
	wantIn, wantOut, err := ReadIO(b)
	if err != nil {
		t.Fatal(err)
	}
	ok := 0
	for n := range len(b) {
		in, out, err := ReadIO(b[:n])
		if err != nil {
			continue
		}
		ok++
		if !reflect.DeepEqual(in, wantIn) || !reflect.DeepEqual(out, wantOut) {
			t.Fatalf("prefix of %d bytes read as %v %v", n, in, out)
		}
	}
	// Only the cut between the graph and the trailing opset field leaves a
	// well-formed message.
	if ok != 1 {
		t.Errorf("%d prefixes parsed, want 1", ok)
	}
}

// FuzzReadIO: arbitrary bytes never panic ReadIO, and whatever it reads
// survives a round trip through Encode.
func FuzzReadIO(f *testing.F) {
	f.Add(encodeMLP(f))
	b := encodeMLP(f)
	f.Add(b[:len(b)/2])
	f.Add([]byte{})
	f.Add([]byte{0x3a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		in, out, err := ReadIO(data)
		if err != nil {
			return
		}
		again, err := Model{Graph: Graph{Inputs: in, Outputs: out}}.Encode()
		if err != nil {
			t.Fatalf("re-encode %v %v: %v", in, out, err)
		}
		in2, out2, err := ReadIO(again)
		if err != nil {
			t.Fatalf("read re-encoded: %v", err)
		}
		if !reflect.DeepEqual(in, in2) || !reflect.DeepEqual(out, out2) {
			t.Fatalf("round trip: %v %v became %v %v", in, out, in2, out2)
		}
	})
}

// TestForward checks the reference evaluator against values worked out by
// hand, including a tie (ArgMax picks the first) and a negative
// pre-activation (ReLU clips it).
func TestForward(t *testing.T) {
	t.Parallel()
	m := MLP{
		In: 2, Hidden: 2, Out: 2,
		W1: []float32{1, -1, 2, 0.5}, // rows are inputs
		B1: []float32{0, 1},
		W2: []float32{1, 0, 0, 1},
		B2: []float32{0.5, 0},
	}
	x := []float32{1, 2, -1, 0, 0, -1, -1, 1}
	wantLogits := []float32{5.5, 1, 0.5, 2, 0.5, 0.5, 1.5, 2.5}
	wantClass := []int64{0, 1, 0, 1}
	got, err := m.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Logits, wantLogits) || !reflect.DeepEqual(got.Class, wantClass) {
		t.Fatalf("Forward = %v %v, want %v %v", got.Logits, got.Class, wantLogits, wantClass)
	}
	for b := range 4 {
		l0, l1 := float64(wantLogits[2*b]), float64(wantLogits[2*b+1])
		p0 := 1 / (1 + math.Exp(l1-l0))
		if math.Abs(float64(got.Probs[2*b])-p0) > 1e-7 || math.Abs(float64(got.Probs[2*b+1])-(1-p0)) > 1e-7 {
			t.Errorf("row %d: probs %v, want [%v %v]", b, got.Probs[2*b:2*b+2], p0, 1-p0)
		}
	}
	for _, bad := range [][]float32{nil, {1, 2, 3}} {
		if _, err := m.Forward(bad); err == nil {
			t.Errorf("Forward(%v) succeeded", bad)
		}
	}
}

func TestNewMLPDeterministic(t *testing.T) {
	t.Parallel()
	a, b, c := NewMLP(4, 8, 3, 7), NewMLP(4, 8, 3, 7), NewMLP(4, 8, 3, 8)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different weights")
	}
	if reflect.DeepEqual(a.W1, c.W1) {
		t.Fatal("different seeds, same weights")
	}
	limit := float32(math.Sqrt(6.0 / 12))
	for _, w := range a.W1 {
		if w < -limit || w > limit || w == 0 {
			t.Fatalf("W1 weight %v outside (-%v, %v)", w, limit, limit)
		}
	}
	if !reflect.DeepEqual(RandomInputs(5, 3), RandomInputs(5, 3)) {
		t.Fatal("RandomInputs is not reproducible")
	}
}
