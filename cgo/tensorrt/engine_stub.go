//go:build !cgo || !tensorrt

package tensorrt

// Without cgo or without the tensorrt build tag there is no TensorRT in the
// binary: these stand-ins keep the package's API, so importers build
// everywhere (CGO_ENABLED=0, amd64 CI, a developer's laptop), and fail at
// run time with ErrNotAvailable.

// Available fails with [ErrNotAvailable].
func Available() error { return ErrNotAvailable }

// Version returns "".
func Version() string { return "" }

// Device fails with [ErrNotAvailable].
func Device() (DeviceInfo, error) { return DeviceInfo{}, ErrNotAvailable }

// BuildPlan fails with [ErrNotAvailable].
func BuildPlan(onnx []byte, opts BuildOptions) ([]byte, error) { return nil, ErrNotAvailable }

// Engine is unavailable in this build.
type Engine struct{}

// LoadEngine fails with [ErrNotAvailable].
func LoadEngine(plan []byte) (*Engine, error) { return nil, ErrNotAvailable }

// Inputs returns nil.
func (e *Engine) Inputs() []TensorInfo { return nil }

// Outputs returns nil.
func (e *Engine) Outputs() []TensorInfo { return nil }

// Run fails with [ErrNotAvailable].
func (e *Engine) Run(inputs map[string]Tensor) (map[string]Tensor, error) {
	return nil, ErrNotAvailable
}

// Close does nothing.
func (e *Engine) Close() error { return nil }
