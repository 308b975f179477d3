// Package tensor is what the inference bridges (cgo/onnxruntime,
// cgo/tensorrt) share of their Go API: the dense tensor they take and
// return and the checks an input passes before it reaches native code. It
// is pure Go, so each bridge can use it without linking the other's
// library, and the agent sees one tensor type from both.
package tensor

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
)

// DataType is an element type, numbered as ONNX numbers them.
type DataType = onnxmodel.DataType

// The element types the bridges exchange.
const (
	Float32 = onnxmodel.Float
	Int64   = onnxmodel.Int64
)

// Info describes a model input or output: its name, element type and
// shape, where -1 marks a dimension chosen at run time (nil: rank unknown).
type Info = onnxmodel.ValueInfo

// Tensor is a dense row-major tensor: exactly one of Float32 and Int64
// holds its data, as many elements as Shape multiplies to.
type Tensor struct {
	Shape   []int64
	Float32 []float32
	Int64   []int64
}

// DataType reports which field holds the data (Undefined when none or both
// do).
func (t Tensor) DataType() DataType {
	switch {
	case t.Float32 != nil && t.Int64 == nil:
		return Float32
	case t.Int64 != nil && t.Float32 == nil:
		return Int64
	}
	return onnxmodel.Undefined
}

// Len is the number of elements held.
func (t Tensor) Len() int {
	if t.Float32 != nil {
		return len(t.Float32)
	}
	return len(t.Int64)
}

// maxElements bounds a tensor's element count (far above any real input).
const maxElements = 1 << 59

// Check reports why t cannot be the value of input want: the data type,
// the rank (a scalar only where the model declares one), a fixed
// dimension, a negative or oversized shape, or an element count that does
// not match the shape.
func (t Tensor) Check(want Info) error {
	dt := t.DataType()
	if dt == onnxmodel.Undefined {
		return fmt.Errorf("input %q: set exactly one of Float32 and Int64", want.Name)
	}
	if want.Type != dt {
		return fmt.Errorf("input %q is %s, got %s", want.Name, want.Type, dt)
	}
	if len(t.Shape) == 0 && len(want.Shape) != 0 {
		return fmt.Errorf("input %q has shape %v, got a scalar", want.Name, want.Shape)
	}
	if want.Shape != nil && len(want.Shape) != len(t.Shape) {
		return fmt.Errorf("input %q has shape %v, got rank %d shape %v", want.Name, want.Shape, len(t.Shape), t.Shape)
	}
	n := int64(1)
	for i, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("input %q: negative dimension %d in %v", want.Name, d, t.Shape)
		}
		if want.Shape != nil && want.Shape[i] >= 0 && want.Shape[i] != d {
			return fmt.Errorf("input %q has shape %v, got %v", want.Name, want.Shape, t.Shape)
		}
		if d != 0 && n > maxElements/d {
			return fmt.Errorf("input %q: shape %v is too large", want.Name, t.Shape)
		}
		n *= d
	}
	if int64(t.Len()) != n {
		return fmt.Errorf("input %q: shape %v needs %d values, got %d", want.Name, t.Shape, n, t.Len())
	}
	return nil
}

// CheckInputs reports why inputs cannot be a run's inputs for a model with
// these: every input present, no unknown name, each one well formed.
func CheckInputs(model []Info, inputs map[string]Tensor) error {
	for _, info := range model {
		t, ok := inputs[info.Name]
		if !ok {
			return fmt.Errorf("missing input %q (the model's inputs: %s)", info.Name, Names(model))
		}
		if err := t.Check(info); err != nil {
			return err
		}
	}
	if len(inputs) != len(model) {
		for name := range inputs {
			if !slices.ContainsFunc(model, func(i Info) bool { return i.Name == name }) {
				return fmt.Errorf("unknown input %q (the model's inputs: %s)", name, Names(model))
			}
		}
	}
	return nil
}

// Names lists infos' names, quoted, for messages.
func Names(infos []Info) string {
	s := make([]string, len(infos))
	for i, info := range infos {
		s[i] = strconv.Quote(info.Name)
	}
	return strings.Join(s, ", ")
}
