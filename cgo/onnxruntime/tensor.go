package onnxruntime

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tensorguard/tensorguardflow/cgo/tensor"
)

// Sentinel errors.
var (
	// ErrNotInitialized: [NewSession] before a successful [Init].
	ErrNotInitialized = errors.New("onnxruntime: not initialized (call Init first)")
	// ErrUnsupportedVersion: the library is not ONNX Runtime 1.24.x.
	ErrUnsupportedVersion = errors.New("unsupported ONNX Runtime version")
	// ErrClosed: a call on a closed [Session].
	ErrClosed = errors.New("onnxruntime: session closed")
	// ErrInvalidInput: Run's inputs do not match the model (name, element
	// type, shape, data length); nothing reached ONNX Runtime.
	ErrInvalidInput = errors.New("onnxruntime: invalid input")
	// ErrNoCgo: the binary was built with CGO_ENABLED=0.
	ErrNoCgo = errors.New("onnxruntime: built without cgo; ONNX Runtime is unavailable")
)

// DataType is a tensor element type.
type DataType = tensor.DataType

// The element types Run accepts and returns.
const (
	Float32 = tensor.Float32
	Int64   = tensor.Int64
)

// TensorInfo describes a model input or output: its name, element type and
// shape, where -1 marks a dimension chosen at run time.
type TensorInfo = tensor.Info

// Tensor is a dense row-major tensor: exactly one of Float32 and Int64 holds
// its data, as many elements as Shape multiplies to. It is cgo/tensor's,
// shared with the TensorRT bridge.
type Tensor = tensor.Tensor

// inputRejections are the ONNX Runtime kernel messages that blame the
// values of an input which passed the checks on names, types and shapes:
// an index out of range (Gather, an embedding's token id or a position
// beyond the model's context), or a value a kernel refuses. The binding
// gives the message without ONNX Runtime's status code, so the message
// decides.
var inputRejections = []string{"out of data bounds", "Invalid input", "invalid argument"}

func rejectsInput(msg string) bool {
	for _, r := range inputRejections {
		if strings.Contains(msg, r) {
			return true
		}
	}
	return false
}

// checkInputs validates a Run's inputs against the model's (tensor.CheckInputs).
func checkInputs(model []TensorInfo, inputs map[string]Tensor) error {
	for name, t := range inputs {
		if len(t.Shape) == 0 { // the binding's tensors have at least one dimension
			return fmt.Errorf("%w: input %q: scalar (rank-0) tensors are not supported", ErrInvalidInput, name)
		}
	}
	if err := tensor.CheckInputs(model, inputs); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidInput, err)
	}
	return nil
}

// GraphOptimization is ONNX Runtime's graph optimization level.
type GraphOptimization int

// Graph optimization levels; the zero value keeps ONNX Runtime's default,
// which is [OptimizeAll].
const (
	OptimizeDefault GraphOptimization = iota
	OptimizeDisabled
	OptimizeBasic
	OptimizeExtended
	OptimizeAll
)

// Options configure a session. The zero value is ONNX Runtime's defaults.
type Options struct {
	// IntraOpThreads is the size of the pool that parallelizes one operator
	// (0: one thread per physical core; 1: run on the calling thread only).
	IntraOpThreads int
	// InterOpThreads, when positive, selects ONNX Runtime's parallel
	// execution mode (independent branches of the graph run at once) with a
	// pool of this many threads. 0 keeps sequential execution, where there is
	// no inter-op pool.
	InterOpThreads int
	// GraphOptimization is applied when the session is created.
	GraphOptimization GraphOptimization
}

// Validate reports options that ONNX Runtime would reject or misread.
func (o Options) Validate() error {
	if o.IntraOpThreads < 0 {
		return fmt.Errorf("onnxruntime: IntraOpThreads %d is negative", o.IntraOpThreads)
	}
	if o.InterOpThreads < 0 {
		return fmt.Errorf("onnxruntime: InterOpThreads %d is negative", o.InterOpThreads)
	}
	if o.GraphOptimization < OptimizeDefault || o.GraphOptimization > OptimizeAll {
		return fmt.Errorf("onnxruntime: unknown GraphOptimization %d", o.GraphOptimization)
	}
	return nil
}

// checkVersion accepts the ONNX Runtime versions this binding is built for.
func checkVersion(v string) error {
	if !strings.HasPrefix(v, "1.24.") {
		return fmt.Errorf("%w: %q, need 1.24.x (ORT C API 24, the API of binding %s)", ErrUnsupportedVersion, v, BindingVersion)
	}
	return nil
}
