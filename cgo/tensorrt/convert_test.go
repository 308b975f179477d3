package tensorrt_test

import (
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
	"github.com/tensorguard/tensorguardflow/cgo/tensorrt"
)

// The two bridges share one tensor type and describe their inputs and
// outputs with one type (cgo/tensor), so the agent's runtime layer treats
// them alike. These lines stop compiling if that drifts.
var (
	_ onnxruntime.Tensor = tensorrt.Tensor{}

	_ onnxruntime.TensorInfo = tensorrt.TensorInfo{}
	_ onnxruntime.DataType   = tensorrt.Float32
)
