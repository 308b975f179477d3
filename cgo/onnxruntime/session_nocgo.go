//go:build !cgo

package onnxruntime

// Without cgo there is no ONNX Runtime: these stand-ins keep the package's
// API so that importers cross-build with CGO_ENABLED=0, and fail at run
// time with ErrNoCgo.

// Init fails with [ErrNoCgo].
func Init(libPath string) error { return ErrNoCgo }

// Version returns "".
func Version() string { return "" }

// Session is unavailable without cgo.
type Session struct{}

// NewSession fails with [ErrNoCgo].
func NewSession(model []byte, opts Options) (*Session, error) { return nil, ErrNoCgo }

// Inputs returns nil.
func (s *Session) Inputs() []TensorInfo { return nil }

// Outputs returns nil.
func (s *Session) Outputs() []TensorInfo { return nil }

// Run fails with [ErrNoCgo].
func (s *Session) Run(inputs map[string]Tensor) (map[string]Tensor, error) { return nil, ErrNoCgo }

// Close does nothing.
func (s *Session) Close() error { return nil }
