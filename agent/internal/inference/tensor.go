package inference

import (
	"errors"
	"fmt"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
)

// Sentinel errors.
var (
	// ErrInvalidInput: the inputs do not fit the model; nothing ran.
	ErrInvalidInput = errors.New("invalid input")
	// ErrUnavailable: the backend cannot run on this device or build.
	ErrUnavailable = errors.New("backend not available")
	// ErrNoBackend: no configured backend runs the package's runtime.
	ErrNoBackend = errors.New("no backend for this runtime")
)

// DataType is a tensor element type, named as in the Open Inference
// Protocol.
type DataType string

// The element types models take and return.
const (
	FP32  DataType = "FP32"
	INT64 DataType = "INT64"
)

// Tensor is a dense row-major tensor: exactly one of Float32 and Int64
// holds as many elements as Shape multiplies to.
type Tensor = onnxruntime.Tensor

// TensorInfo describes an input or output; -1 in Shape marks a dimension
// chosen per call.
type TensorInfo struct {
	Name     string
	DataType DataType
	Shape    []int64
}

// TypeOf names t's element type ("" when neither or both fields are set).
func TypeOf(t Tensor) DataType {
	switch t.DataType() {
	case onnxruntime.Float32:
		return FP32
	case onnxruntime.Int64:
		return INT64
	}
	return ""
}

// fromONNX converts ONNX value infos, refusing element types the agent
// does not serve.
func fromONNX(infos []onnxmodel.ValueInfo) ([]TensorInfo, error) {
	out := make([]TensorInfo, len(infos))
	for i, in := range infos {
		var dt DataType
		switch in.Type {
		case onnxmodel.Float:
			dt = FP32
		case onnxmodel.Int64:
			dt = INT64
		default:
			return nil, fmt.Errorf("%q has element type %s; the agent serves float32 and int64 tensors", in.Name, in.Type)
		}
		out[i] = TensorInfo{Name: in.Name, DataType: dt, Shape: append([]int64(nil), in.Shape...)}
	}
	return out, nil
}

// Elements returns how many values a tensor of shape holds, or an error
// for a negative dimension or a product beyond limit.
func Elements(shape []int64, limit int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		if d != 0 && n > limit/d {
			return 0, fmt.Errorf("shape %v holds more than %d values", shape, limit)
		}
		n *= d
	}
	return n, nil
}
