package inference

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
)

// ONNXRuntime is the backend for ONNX models on the CPU through the cgo
// bridge (cgo/onnxruntime), with the model loaded from memory.
// libonnxruntime is loaded at the first Load, not at start: an agent
// without it keeps running and attesting, and its installs fail naming the
// missing library.
type ONNXRuntime struct {
	// Library is the configured path of libonnxruntime ("": the bridge's
	// search, $TG_ONNXRUNTIME_LIB then the development cache).
	Library string
	Options onnxruntime.Options

	once   sync.Once
	lib    string
	libErr error
}

var _ Backend = (*ONNXRuntime)(nil)

// Name implements Backend.
func (*ONNXRuntime) Name() string { return RuntimeONNXRuntime }

// Runs implements Backend: ONNX Runtime runs "onnxruntime" and "onnx".
func (*ONNXRuntime) Runs(runtime string) bool {
	return runtime == RuntimeONNXRuntime || runtime == RuntimeONNX
}

// Available implements Backend: the library must be found (it is loaded
// by Load).
func (r *ONNXRuntime) Available() error {
	r.once.Do(func() { r.lib, r.libErr = onnxruntime.FindLibrary(r.Library) })
	if r.libErr != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, r.libErr)
	}
	return nil
}

// Load implements Backend.
func (r *ONNXRuntime) Load(files map[string][]byte, meta Meta) (Model, error) {
	if err := r.Available(); err != nil {
		return nil, err
	}
	if err := onnxruntime.Init(r.lib); err != nil {
		return nil, err
	}
	s, err := onnxruntime.NewSession(files[meta.Model], r.Options)
	if err != nil {
		return nil, err
	}
	m := &onnxModel{s: s}
	if m.inputs, err = fromONNX(s.Inputs()); err == nil {
		m.outputs, err = fromONNX(s.Outputs())
	}
	if err == nil {
		err = checkNames(meta, m.inputs, m.outputs)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return m, nil
}

// checkNames makes sure the model has the inputs and outputs the package
// says it has.
func checkNames(meta Meta, inputs, outputs []TensorInfo) error {
	has := func(infos []TensorInfo, name string) bool {
		return slices.ContainsFunc(infos, func(i TensorInfo) bool { return i.Name == name })
	}
	for _, n := range meta.Inputs {
		if !has(inputs, n) {
			return fmt.Errorf("the model has no input %q", n)
		}
	}
	for _, n := range meta.Outputs {
		if !has(outputs, n) {
			return fmt.Errorf("the model has no output %q", n)
		}
	}
	return nil
}

type onnxModel struct {
	s               *onnxruntime.Session
	inputs, outputs []TensorInfo
}

func (m *onnxModel) Backend() string       { return RuntimeONNXRuntime }
func (m *onnxModel) Inputs() []TensorInfo  { return m.inputs }
func (m *onnxModel) Outputs() []TensorInfo { return m.outputs }
func (m *onnxModel) Close() error          { return m.s.Close() }

func (m *onnxModel) Infer(inputs map[string]Tensor) (map[string]Tensor, error) {
	out, err := m.s.Run(inputs)
	if errors.Is(err, onnxruntime.ErrInvalidInput) {
		return nil, invalidInput{err}
	}
	return out, err
}

// invalidInput marks a backend's input error as ErrInvalidInput without
// repeating it in the message.
type invalidInput struct{ err error }

func (e invalidInput) Error() string        { return e.err.Error() }
func (e invalidInput) Unwrap() error        { return e.err }
func (e invalidInput) Is(target error) bool { return target == ErrInvalidInput }
