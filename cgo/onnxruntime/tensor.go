package onnxruntime

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
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
type DataType = onnxmodel.DataType

// The element types Run accepts and returns.
const (
	Float32 = onnxmodel.Float
	Int64   = onnxmodel.Int64
)

// TensorInfo describes a model input or output: its name, element type and
// shape, where -1 marks a dimension chosen at run time.
type TensorInfo = onnxmodel.ValueInfo

// Tensor is a dense row-major tensor: exactly one of Float32 and Int64 holds
// its data, as many elements as Shape multiplies to.
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

func (t Tensor) len() int {
	if t.Float32 != nil {
		return len(t.Float32)
	}
	return len(t.Int64)
}

// check validates t as the value of input want.
func (t Tensor) check(want TensorInfo) error {
	dt := t.DataType()
	if dt == onnxmodel.Undefined {
		return fmt.Errorf("%w: input %q: set exactly one of Float32 and Int64", ErrInvalidInput, want.Name)
	}
	if want.Type != dt {
		return fmt.Errorf("%w: input %q is %s, got %s", ErrInvalidInput, want.Name, want.Type, dt)
	}
	if len(t.Shape) == 0 {
		return fmt.Errorf("%w: input %q: scalar (rank-0) tensors are not supported", ErrInvalidInput, want.Name)
	}
	if want.Shape != nil && len(want.Shape) != len(t.Shape) {
		return fmt.Errorf("%w: input %q has shape %v, got rank %d shape %v", ErrInvalidInput, want.Name, want.Shape, len(t.Shape), t.Shape)
	}
	n := int64(1)
	for i, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("%w: input %q: negative dimension %d in %v", ErrInvalidInput, want.Name, d, t.Shape)
		}
		if want.Shape != nil && want.Shape[i] >= 0 && want.Shape[i] != d {
			return fmt.Errorf("%w: input %q has shape %v, got %v", ErrInvalidInput, want.Name, want.Shape, t.Shape)
		}
		if d != 0 && n > (1<<62)/d {
			return fmt.Errorf("%w: input %q: shape %v is too large", ErrInvalidInput, want.Name, t.Shape)
		}
		n *= d
	}
	if int64(t.len()) != n {
		return fmt.Errorf("%w: input %q: shape %v needs %d values, got %d", ErrInvalidInput, want.Name, t.Shape, n, t.len())
	}
	return nil
}

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

// checkInputs validates a Run's inputs against the model's: every input
// present, no unknown names, each value well formed.
func checkInputs(model []TensorInfo, inputs map[string]Tensor) error {
	for _, info := range model {
		t, ok := inputs[info.Name]
		if !ok {
			return fmt.Errorf("%w: missing input %q (the model's inputs: %s)", ErrInvalidInput, info.Name, names(model))
		}
		if err := t.check(info); err != nil {
			return err
		}
	}
	if len(inputs) != len(model) {
		for name := range inputs {
			if !hasName(model, name) {
				return fmt.Errorf("%w: unknown input %q (the model's inputs: %s)", ErrInvalidInput, name, names(model))
			}
		}
	}
	return nil
}

func hasName(infos []TensorInfo, name string) bool {
	for _, info := range infos {
		if info.Name == name {
			return true
		}
	}
	return false
}

func names(infos []TensorInfo) string {
	s := make([]string, len(infos))
	for i, info := range infos {
		s[i] = fmt.Sprintf("%q", info.Name)
	}
	return strings.Join(s, ", ")
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
