//go:build cgo

package onnxruntime

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
)

// The binding keeps one ONNX Runtime environment per process in package
// variables; initMu serializes Init, and loaded records what it loaded.
var (
	initMu  sync.Mutex
	loaded  string // library path, "" until Init succeeds
	version string
)

// Init loads libonnxruntime from libPath and creates the process's ONNX
// Runtime environment. It succeeds once per process: a later call with the
// same path returns nil, one with another path an error. A failed call
// leaves nothing loaded, so it may be retried with another path.
//
// The library must be ONNX Runtime 1.24.x: an older one lacks the C API
// version the binding asks for and fails to load; a newer one is unloaded
// again and refused with [ErrUnsupportedVersion].
func Init(libPath string) error {
	initMu.Lock()
	defer initMu.Unlock()
	if loaded != "" {
		if libPath == loaded {
			return nil
		}
		return fmt.Errorf("onnxruntime: already initialized with %s (ONNX Runtime %s); one library per process, not %s", loaded, version, libPath)
	}
	if libPath == "" {
		return fmt.Errorf("onnxruntime: init: %w: empty library path", ErrLibraryNotFound)
	}
	// dlopen's own message for a missing file is terse and, for a bare
	// name, searches the system; a clear error for a path that is not there
	// helps the operator who mistyped the config.
	if _, err := os.Stat(libPath); err != nil {
		return fmt.Errorf("onnxruntime: init: %w: %w", ErrLibraryNotFound, err)
	}
	ort.SetSharedLibraryPath(libPath)
	// ONNX Runtime logs to stderr, in color. Every error it reports to a
	// call is returned to the caller too (and logged by it, once), so let
	// only fatal messages through.
	if err := ort.InitializeEnvironment(ort.WithLogLevelFatal()); err != nil {
		return fmt.Errorf("onnxruntime: load %s (it must be ONNX Runtime 1.24.x, which provides C API 24): %w", libPath, err)
	}
	v := ort.GetVersion()
	if err := checkVersion(v); err != nil {
		if derr := ort.DestroyEnvironment(); derr != nil {
			return fmt.Errorf("onnxruntime: %s: %w (and unloading it failed: %v)", libPath, err, derr)
		}
		return fmt.Errorf("onnxruntime: %s: %w", libPath, err)
	}
	loaded, version = libPath, v
	return nil
}

// Version returns the loaded library's version ("1.24.1"), or "" before
// [Init] succeeds.
func Version() string {
	initMu.Lock()
	defer initMu.Unlock()
	return version
}

func initialized() bool {
	initMu.Lock()
	defer initMu.Unlock()
	return loaded != ""
}

// Session is a model loaded into ONNX Runtime. It is safe for concurrent
// use; Close it to free the model's memory and threads.
type Session struct {
	inputs, outputs []TensorInfo

	// mu is held for reading by every Run and for writing by Close, so
	// Close never frees the session under a running call.
	mu   sync.RWMutex
	sess *ort.DynamicAdvancedSession // nil once closed
}

// NewSession loads an ONNX model from memory. The bytes are not retained
// and never written anywhere; the caller may wipe them once this returns.
func NewSession(model []byte, opts Options) (*Session, error) {
	if !initialized() {
		return nil, ErrNotInitialized
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if len(model) == 0 {
		return nil, fmt.Errorf("onnxruntime: load model: empty model")
	}
	inputs, outputs, err := onnxmodel.ReadIO(model)
	if err != nil {
		// Let ONNX Runtime judge the bytes: its message is the one an
		// operator can act on, and if it accepts what the pure-Go reader
		// did not, its view of the inputs and outputs is authoritative.
		inputs, outputs, err = ortIO(model)
		if err != nil {
			return nil, fmt.Errorf("onnxruntime: load model: %w", ortError(err))
		}
	}
	if len(inputs) == 0 || len(outputs) == 0 {
		// The binding indexes the first input and output name on every Run.
		return nil, fmt.Errorf("onnxruntime: load model: a model with %d inputs and %d outputs is not supported (need at least one of each)", len(inputs), len(outputs))
	}
	so, err := sessionOptions(opts)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(model, infoNames(inputs), infoNames(outputs), so)
	if err != nil {
		return nil, fmt.Errorf("onnxruntime: load model: %w", ortError(err))
	}
	return &Session{inputs: inputs, outputs: outputs, sess: sess}, nil
}

// ortIO asks ONNX Runtime for a model's inputs and outputs (by loading it
// once, in memory).
func ortIO(model []byte) (inputs, outputs []TensorInfo, err error) {
	in, out, err := ort.GetInputOutputInfoWithONNXData(model)
	if err != nil {
		return nil, nil, err
	}
	return fromORT(in), fromORT(out), nil
}

// ortError drops the binding's wrapping ("Error creating C session: ...")
// to leave ONNX Runtime's own status message, which it wraps innermost, and
// labels it as such.
func ortError(err error) error {
	inner := err
	for {
		next := errors.Unwrap(inner)
		if next == nil {
			break
		}
		inner = next
	}
	return fmt.Errorf("ONNX Runtime: %w", inner)
}

func fromORT(infos []ort.InputOutputInfo) []TensorInfo {
	out := make([]TensorInfo, len(infos))
	for i, info := range infos {
		out[i].Name = info.Name
		if info.OrtValueType == ort.ONNXTypeTensor {
			out[i].Type = DataType(info.DataType)
			// The C API reports an unknown rank as zero dimensions, like a
			// scalar; scalars are not supported, so read it as unknown.
			if len(info.Dimensions) > 0 {
				out[i].Shape = slices.Clone([]int64(info.Dimensions))
			}
		}
	}
	return out
}

func infoNames(infos []TensorInfo) []string {
	out := make([]string, len(infos))
	for i, info := range infos {
		out[i] = info.Name
	}
	return out
}

func sessionOptions(opts Options) (*ort.SessionOptions, error) {
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("onnxruntime: session options: %w", err)
	}
	set := func(what string, err error) error {
		if err != nil {
			so.Destroy()
			return fmt.Errorf("onnxruntime: session options: %s: %w", what, err)
		}
		return nil
	}
	if opts.IntraOpThreads > 0 {
		if err := set("intra-op threads", so.SetIntraOpNumThreads(opts.IntraOpThreads)); err != nil {
			return nil, err
		}
	}
	if opts.InterOpThreads > 0 {
		if err := set("execution mode", so.SetExecutionMode(ort.ExecutionModeParallel)); err != nil {
			return nil, err
		}
		if err := set("inter-op threads", so.SetInterOpNumThreads(opts.InterOpThreads)); err != nil {
			return nil, err
		}
	}
	if opts.GraphOptimization != OptimizeDefault {
		level := map[GraphOptimization]ort.GraphOptimizationLevel{
			OptimizeDisabled: ort.GraphOptimizationLevelDisableAll,
			OptimizeBasic:    ort.GraphOptimizationLevelEnableBasic,
			OptimizeExtended: ort.GraphOptimizationLevelEnableExtended,
			OptimizeAll:      ort.GraphOptimizationLevelEnableAll,
		}[opts.GraphOptimization]
		if err := set("graph optimization", so.SetGraphOptimizationLevel(level)); err != nil {
			return nil, err
		}
	}
	return so, nil
}

// Inputs describes the model's inputs, in the model's order.
func (s *Session) Inputs() []TensorInfo { return cloneInfos(s.inputs) }

// Outputs describes the model's outputs, in the model's order.
func (s *Session) Outputs() []TensorInfo { return cloneInfos(s.outputs) }

func cloneInfos(infos []TensorInfo) []TensorInfo {
	out := make([]TensorInfo, len(infos))
	for i, info := range infos {
		out[i] = info
		out[i].Shape = slices.Clone(info.Shape)
	}
	return out
}

// Run evaluates the model on inputs, which must name every model input and
// nothing else, and returns every output by name. Run reads the inputs'
// data in place (no copy) and does not retain it; the outputs are fresh Go
// memory owned by the caller. Concurrent calls are safe.
func (s *Session) Run(inputs map[string]Tensor) (map[string]Tensor, error) {
	if err := checkInputs(s.inputs, inputs); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.sess == nil {
		return nil, ErrClosed
	}
	in := make([]ort.Value, len(s.inputs))
	defer destroyAll(in)
	for i, info := range s.inputs {
		v, err := toORT(inputs[info.Name])
		if err != nil {
			return nil, fmt.Errorf("onnxruntime: input %q: %w", info.Name, err)
		}
		in[i] = v
	}
	out := make([]ort.Value, len(s.outputs))
	defer destroyAll(out)
	if err := s.sess.Run(in, out); err != nil {
		err = ortError(err)
		if rejectsInput(err.Error()) {
			return nil, fmt.Errorf("%w: the model rejected the values: %w", ErrInvalidInput, err)
		}
		return nil, fmt.Errorf("onnxruntime: run: %w", err)
	}
	res := make(map[string]Tensor, len(out))
	for i, v := range out {
		t, err := fromORTValue(v)
		if err != nil {
			return nil, fmt.Errorf("onnxruntime: output %q: %w", s.outputs[i].Name, err)
		}
		res[s.outputs[i].Name] = t
	}
	return res, nil
}

// toORT wraps t's data (not a copy: the binding hands the Go slice to ONNX
// Runtime for the duration of the call) in an ONNX Runtime tensor.
func toORT(t Tensor) (ort.Value, error) {
	shape := ort.NewShape(t.Shape...)
	switch t.DataType() {
	case Float32:
		return ort.NewTensor(shape, t.Float32)
	case Int64:
		return ort.NewTensor(shape, t.Int64)
	}
	return nil, fmt.Errorf("%w: no data", ErrInvalidInput)
}

// fromORTValue takes the data of an output the binding has already copied
// into Go memory; destroying the ONNX Runtime value afterwards leaves it
// intact.
func fromORTValue(v ort.Value) (Tensor, error) {
	switch t := v.(type) {
	case *ort.Tensor[float32]:
		return Tensor{Shape: slices.Clone([]int64(t.GetShape())), Float32: t.GetData()}, nil
	case *ort.Tensor[int64]:
		return Tensor{Shape: slices.Clone([]int64(t.GetShape())), Int64: t.GetData()}, nil
	case nil:
		return Tensor{}, fmt.Errorf("no value")
	}
	return Tensor{}, fmt.Errorf("unsupported output type %T (float32 and int64 tensors only)", v)
}

func destroyAll(vs []ort.Value) {
	for _, v := range vs {
		if v != nil {
			v.Destroy()
		}
	}
}

// Close frees the session. It waits for running Run calls; later calls fail
// with [ErrClosed]. Closing twice is harmless.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == nil {
		return nil
	}
	err := s.sess.Destroy()
	s.sess = nil
	if err != nil {
		return fmt.Errorf("onnxruntime: close session: %w", err)
	}
	return nil
}
