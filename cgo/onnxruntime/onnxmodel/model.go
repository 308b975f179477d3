package onnxmodel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// DataType is an ONNX tensor element type (TensorProto.DataType).
type DataType int32

// The element types this package writes. [ReadIO] reports any other ONNX
// type by its number.
const (
	Undefined DataType = 0
	Float     DataType = 1
	Int64     DataType = 7
)

func (d DataType) String() string {
	switch d {
	case Float:
		return "float32"
	case Int64:
		return "int64"
	case Undefined:
		return "undefined"
	}
	return "onnx-type-" + strconv.Itoa(int(d))
}

// Defaults for a [Model] that leaves them zero: IR version 8 and opset 17
// of the default domain (ONNX 1.12, 2022), which every ONNX Runtime from
// 1.13 on loads.
const (
	DefaultIRVersion = 8
	DefaultOpset     = 17
)

// Model is an ONNX model: one graph and the opset it is written against.
type Model struct {
	IRVersion       int64 // 0 means DefaultIRVersion
	Opset           int64 // of the default ("ai.onnx") domain; 0 means DefaultOpset
	ProducerName    string
	ProducerVersion string
	Graph           Graph
}

// Graph is an ONNX graph. Nodes must be in topological order.
type Graph struct {
	Name         string
	Nodes        []Node
	Initializers []Tensor
	Inputs       []ValueInfo
	Outputs      []ValueInfo
}

// Node is one operator application.
type Node struct {
	Name    string
	OpType  string // e.g. "Gemm", "Relu"
	Inputs  []string
	Outputs []string
	Attrs   []Attr
}

// AttrType is an ONNX AttributeProto.AttributeType.
type AttrType int32

// The attribute kinds this package writes.
const (
	AttrFloat AttrType = 1
	AttrInt   AttrType = 2
	AttrInts  AttrType = 7
)

// Attr is a node attribute; build one with [IntAttr], [FloatAttr] or
// [IntsAttr].
type Attr struct {
	Name  string
	Type  AttrType
	Float float32
	Int   int64
	Ints  []int64
}

// IntAttr is an integer attribute such as Softmax's axis.
func IntAttr(name string, v int64) Attr { return Attr{Name: name, Type: AttrInt, Int: v} }

// FloatAttr is a float attribute such as Gemm's alpha.
func FloatAttr(name string, v float32) Attr { return Attr{Name: name, Type: AttrFloat, Float: v} }

// IntsAttr is an integer-list attribute such as Transpose's perm.
func IntsAttr(name string, vs ...int64) Attr { return Attr{Name: name, Type: AttrInts, Ints: vs} }

// Tensor is a constant (an initializer): exactly one of Float and Int64
// holds the data, row-major, as many elements as Dims multiply to.
type Tensor struct {
	Name  string
	Dims  []int64
	Float []float32
	Int64 []int64
}

// ValueInfo names a graph input or output and its tensor type. A negative
// entry in Shape is a dimension whose size is chosen at run time; it is
// written as a symbolic dimension ("batch" at index 0, "d<i>" elsewhere) and
// read back as -1. A nil Shape means the rank is unknown.
type ValueInfo struct {
	Name  string
	Type  DataType // Undefined for a non-tensor value (sequence, map, ...)
	Shape []int64
}

func (v ValueInfo) String() string {
	return fmt.Sprintf("%s %s%v", v.Name, v.Type, v.Shape)
}

// ONNX protobuf field numbers (onnx/onnx.proto3).
const (
	modelIRVersion       = 1
	modelProducerName    = 2
	modelProducerVersion = 3
	modelGraph           = 7
	modelOpsetImport     = 8

	opsetDomain  = 1
	opsetVersion = 2

	graphNode              = 1
	graphName              = 2
	graphInitializer       = 5
	graphInput             = 11
	graphOutput            = 12
	graphSparseInitializer = 15

	nodeInput     = 1
	nodeOutput    = 2
	nodeName      = 3
	nodeOpType    = 4
	nodeAttribute = 5

	attrName = 1
	attrF    = 2
	attrI    = 3
	attrInts = 8
	attrType = 20

	tensorDim      = 1
	tensorDataType = 2
	tensorName     = 8
	tensorRawData  = 9

	sparseValues = 1

	valueInfoName = 1
	valueInfoType = 2

	typeTensor     = 1
	tensorElemType = 1
	tensorShape    = 2
	shapeDim       = 1
	dimValue       = 1
	dimParam       = 2
)

// Encode returns the model as ONNX ModelProto bytes (what an .onnx file
// holds). It checks only what it needs to write a well-formed message;
// ONNX Runtime checks the graph when it loads it.
func (m Model) Encode() ([]byte, error) {
	ir, opset := m.IRVersion, m.Opset
	if ir == 0 {
		ir = DefaultIRVersion
	}
	if opset == 0 {
		opset = DefaultOpset
	}
	graph, err := m.Graph.encode()
	if err != nil {
		return nil, err
	}
	var e enc
	e.int64(modelIRVersion, ir)
	if m.ProducerName != "" {
		e.string(modelProducerName, m.ProducerName)
	}
	if m.ProducerVersion != "" {
		e.string(modelProducerVersion, m.ProducerVersion)
	}
	e.bytes(modelGraph, graph)
	var oe enc
	oe.string(opsetDomain, "")
	oe.int64(opsetVersion, opset)
	e.bytes(modelOpsetImport, oe)
	return e, nil
}

func (g Graph) encode() ([]byte, error) {
	var e enc
	for _, n := range g.Nodes {
		if n.OpType == "" {
			return nil, fmt.Errorf("node %q has no op type", n.Name)
		}
		var ne enc
		for _, in := range n.Inputs {
			ne.string(nodeInput, in)
		}
		for _, out := range n.Outputs {
			ne.string(nodeOutput, out)
		}
		if n.Name != "" {
			ne.string(nodeName, n.Name)
		}
		ne.string(nodeOpType, n.OpType)
		for _, a := range n.Attrs {
			b, err := a.encode()
			if err != nil {
				return nil, fmt.Errorf("node %q: %w", n.Name, err)
			}
			ne.bytes(nodeAttribute, b)
		}
		e.bytes(graphNode, ne)
	}
	name := g.Name
	if name == "" {
		name = "graph"
	}
	e.string(graphName, name)
	for _, t := range g.Initializers {
		b, err := t.encode()
		if err != nil {
			return nil, err
		}
		e.bytes(graphInitializer, b)
	}
	for _, v := range g.Inputs {
		e.bytes(graphInput, v.encode())
	}
	for _, v := range g.Outputs {
		e.bytes(graphOutput, v.encode())
	}
	return e, nil
}

func (a Attr) encode() ([]byte, error) {
	var e enc
	e.string(attrName, a.Name)
	switch a.Type {
	case AttrFloat:
		e.float32(attrF, a.Float)
	case AttrInt:
		e.int64(attrI, a.Int)
	case AttrInts:
		// AttributeProto.ints is proto2 ([packed] unset), so ONNX's own
		// writer emits one field per element; do the same.
		for _, v := range a.Ints {
			e.int64(attrInts, v)
		}
	default:
		return nil, fmt.Errorf("attribute %q: unsupported type %d", a.Name, a.Type)
	}
	e.varint(attrType, uint64(a.Type))
	return e, nil
}

// encode writes the tensor's data as raw_data (little-endian), as the
// PyTorch and ONNX exporters do for anything but tiny constants.
func (t Tensor) encode() ([]byte, error) {
	n := int64(1)
	for _, d := range t.Dims {
		if d < 0 {
			return nil, fmt.Errorf("initializer %q: negative dimension %d", t.Name, d)
		}
		n *= d
	}
	var e enc
	for _, d := range t.Dims {
		e.int64(tensorDim, d)
	}
	var raw []byte
	switch {
	case t.Float != nil && t.Int64 == nil:
		if int64(len(t.Float)) != n {
			return nil, fmt.Errorf("initializer %q: %d values for dims %v", t.Name, len(t.Float), t.Dims)
		}
		e.varint(tensorDataType, uint64(Float))
		raw = make([]byte, 0, 4*len(t.Float))
		for _, f := range t.Float {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f))
		}
	case t.Int64 != nil && t.Float == nil:
		if int64(len(t.Int64)) != n {
			return nil, fmt.Errorf("initializer %q: %d values for dims %v", t.Name, len(t.Int64), t.Dims)
		}
		e.varint(tensorDataType, uint64(Int64))
		raw = make([]byte, 0, 8*len(t.Int64))
		for _, v := range t.Int64 {
			raw = binary.LittleEndian.AppendUint64(raw, uint64(v))
		}
	default:
		return nil, fmt.Errorf("initializer %q: set exactly one of Float and Int64", t.Name)
	}
	e.string(tensorName, t.Name)
	e.bytes(tensorRawData, raw)
	return e, nil
}

func (v ValueInfo) encode() []byte {
	var tt enc
	tt.varint(tensorElemType, uint64(v.Type))
	if v.Shape != nil {
		var shape enc
		for i, d := range v.Shape {
			var dim enc
			if d < 0 {
				name := "batch"
				if i > 0 {
					name = "d" + strconv.Itoa(i)
				}
				dim.string(dimParam, name)
			} else {
				dim.int64(dimValue, d)
			}
			shape.bytes(shapeDim, dim)
		}
		// An empty TensorShapeProto (rank 0, a scalar) must still be
		// present, so write the field even when shape is empty.
		tt.bytes(tensorShape, shape)
	}
	var typ enc
	typ.bytes(typeTensor, tt)
	var e enc
	e.string(valueInfoName, v.Name)
	e.bytes(valueInfoType, typ)
	return e
}

// ErrNoGraph is returned by [ReadIO] for bytes that hold no ONNX graph.
var ErrNoGraph = errors.New("onnxmodel: not an ONNX model (no graph)")

// ReadIO returns the inputs and outputs of the ONNX model in b, in the
// model's order, without loading it: graph inputs that are also
// initializers are left out (they are constants with a default, as ONNX
// Runtime treats them). It reads only the fields it needs and never
// allocates in proportion to the weights, so it is cheap on a large model.
func ReadIO(b []byte) (inputs, outputs []ValueInfo, err error) {
	var graph []byte
	err = fields(b, func(f field) error {
		if f.num == modelGraph {
			if f.wire != wireBytes {
				return fmt.Errorf("model.graph has wire type %d", f.wire)
			}
			// Protobuf merges repeated occurrences of a message field;
			// real models have one graph, so the last one wins here.
			graph = f.data
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("onnxmodel: read model: %w", err)
	}
	if graph == nil {
		return nil, nil, ErrNoGraph
	}
	initialized := map[string]bool{}
	var all []ValueInfo
	err = fields(graph, func(f field) error {
		switch f.num {
		case graphInitializer, graphSparseInitializer, graphInput, graphOutput:
		default:
			return nil
		}
		if f.wire != wireBytes {
			return fmt.Errorf("graph field %d has wire type %d", f.num, f.wire)
		}
		switch f.num {
		case graphInitializer:
			name, err := stringField(f.data, tensorName)
			if err != nil {
				return fmt.Errorf("initializer: %w", err)
			}
			initialized[name] = true
		case graphSparseInitializer:
			values, err := bytesField(f.data, sparseValues)
			if err != nil {
				return fmt.Errorf("sparse initializer: %w", err)
			}
			name, err := stringField(values, tensorName)
			if err != nil {
				return fmt.Errorf("sparse initializer: %w", err)
			}
			initialized[name] = true
		case graphInput:
			v, err := readValueInfo(f.data)
			if err != nil {
				return fmt.Errorf("input: %w", err)
			}
			all = append(all, v)
		case graphOutput:
			v, err := readValueInfo(f.data)
			if err != nil {
				return fmt.Errorf("output: %w", err)
			}
			outputs = append(outputs, v)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("onnxmodel: read graph: %w", err)
	}
	for _, v := range all {
		if !initialized[v.Name] {
			inputs = append(inputs, v)
		}
	}
	return inputs, outputs, nil
}

func readValueInfo(b []byte) (ValueInfo, error) {
	var v ValueInfo
	var typ []byte
	err := fields(b, func(f field) error {
		switch f.num {
		case valueInfoName:
			s, err := asString(f)
			v.Name = s
			return err
		case valueInfoType:
			if f.wire != wireBytes {
				return fmt.Errorf("type has wire type %d", f.wire)
			}
			typ = f.data
		}
		return nil
	})
	if err != nil {
		return v, err
	}
	tensorType, err := bytesField(typ, typeTensor)
	if err != nil || tensorType == nil {
		// Not a dense tensor (sequence, map, sparse, optional): report it
		// by name with an undefined type.
		return v, err
	}
	var shape []byte
	hasShape := false
	err = fields(tensorType, func(f field) error {
		switch f.num {
		case tensorElemType:
			if f.wire != wireVarint {
				return fmt.Errorf("elem_type has wire type %d", f.wire)
			}
			v.Type = DataType(int32(f.val))
		case tensorShape:
			if f.wire != wireBytes {
				return fmt.Errorf("shape has wire type %d", f.wire)
			}
			shape, hasShape = f.data, true
		}
		return nil
	})
	if err != nil || !hasShape {
		return v, err
	}
	v.Shape = []int64{}
	err = fields(shape, func(f field) error {
		if f.num != shapeDim {
			return nil
		}
		if f.wire != wireBytes {
			return fmt.Errorf("dim has wire type %d", f.wire)
		}
		// A symbolic or absent size, and an (invalid) negative one, all
		// read as -1: "chosen at run time".
		d := int64(-1)
		err := fields(f.data, func(f field) error {
			if f.num == dimValue && f.wire == wireVarint && int64(f.val) >= 0 {
				d = int64(f.val)
			}
			return nil
		})
		v.Shape = append(v.Shape, d)
		return err
	})
	return v, err
}

// bytesField returns the payload of the last occurrence of a
// length-delimited field, or nil when it is absent.
func bytesField(msg []byte, num int) ([]byte, error) {
	var out []byte
	err := fields(msg, func(f field) error {
		if f.num != num {
			return nil
		}
		if f.wire != wireBytes {
			return fmt.Errorf("field %d has wire type %d", num, f.wire)
		}
		out = f.data
		if out == nil {
			out = []byte{}
		}
		return nil
	})
	return out, err
}

func stringField(msg []byte, num int) (string, error) {
	b, err := bytesField(msg, num)
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("field %d is not UTF-8", num)
	}
	return string(b), nil
}

func asString(f field) (string, error) {
	if f.wire != wireBytes {
		return "", fmt.Errorf("field %d has wire type %d", f.num, f.wire)
	}
	if !utf8.Valid(f.data) {
		return "", fmt.Errorf("field %d is not UTF-8", f.num)
	}
	return string(f.data), nil
}
