package inference

import (
	"errors"
	"fmt"
	"log/slog"
)

// Runtimes a package's tg-model.json may name.
const (
	// RuntimeONNXRuntime: an ONNX model for ONNX Runtime, and only it.
	RuntimeONNXRuntime = "onnxruntime"
	// RuntimeTensorRT: an ONNX model (or a serialized plan) for TensorRT,
	// and only it.
	RuntimeTensorRT = "tensorrt"
	// RuntimeONNX: an ONNX model for the best backend the device has.
	RuntimeONNX = "onnx"
)

// Meta tells a backend what it loads.
type Meta struct {
	Name    string // package name, the model's name on the inference API
	Version string // package version
	Runtime string // tg-model.json runtime
	Model   string // key of the model file in the files map
	Inputs  []string
	Outputs []string
}

// Model is a loaded model. Infer may be called from several goroutines;
// Close is called once, after the last Infer returned.
type Model interface {
	// Backend names the backend running the model ("onnxruntime").
	Backend() string
	Inputs() []TensorInfo
	Outputs() []TensorInfo
	// Infer evaluates the model; inputs must name every model input and
	// nothing else. It returns every output by name.
	Infer(inputs map[string]Tensor) (map[string]Tensor, error)
	Close() error
}

// Backend loads models of the runtimes it supports.
type Backend interface {
	Name() string
	// Runs reports whether the backend loads packages of this runtime.
	Runs(runtime string) bool
	// Available is nil when the backend can run on this device (library
	// present, GPU present); else an error wrapping ErrUnavailable that
	// says what is missing.
	Available() error
	// Load builds a model from files (path in the package → plaintext),
	// never writing them anywhere.
	Load(files map[string][]byte, meta Meta) (Model, error)
}

// Selector chooses the backend for each package among the configured ones,
// in order of preference.
type Selector struct {
	backends []Backend
	log      *slog.Logger
}

// NewSelector returns a Selector over backends, most preferred first.
func NewSelector(log *slog.Logger, backends ...Backend) *Selector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Selector{backends: backends, log: log}
}

// Load loads the model with the first backend that runs meta.Runtime and is
// available. For RuntimeONNX a backend that fails to build the model hands
// it to the next one; for an explicit runtime its error is final.
func (s *Selector) Load(files map[string][]byte, meta Meta) (Model, error) {
	var errs []error
	for _, b := range s.backends {
		if !b.Runs(meta.Runtime) {
			continue
		}
		if err := b.Available(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", b.Name(), err))
			continue
		}
		m, err := b.Load(files, meta)
		if err == nil {
			return m, nil
		}
		err = fmt.Errorf("%s: %w", b.Name(), err)
		if meta.Runtime != RuntimeONNX {
			return nil, err
		}
		s.log.Warn("backend could not load the model; trying the next", "backend", b.Name(), "model", meta.Name, "err", err)
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%w %q on this agent (backends: %s)", ErrNoBackend, meta.Runtime, s.names())
	}
	return nil, errors.Join(errs...)
}

// Backends lists the configured backends and whether each is available
// here (nil) or why not.
func (s *Selector) Backends() map[string]error {
	out := make(map[string]error, len(s.backends))
	for _, b := range s.backends {
		out[b.Name()] = b.Available()
	}
	return out
}

func (s *Selector) names() string {
	if len(s.backends) == 0 {
		return "none"
	}
	out := ""
	for i, b := range s.backends {
		if i > 0 {
			out += ", "
		}
		out += b.Name()
	}
	return out
}
