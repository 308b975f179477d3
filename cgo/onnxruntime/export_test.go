//go:build cgo

package onnxruntime

// ORTIO exposes ortIO (ONNX Runtime's own view of a model's inputs and
// outputs) to the external tests, which compare the pure-Go reader with it.
var ORTIO = ortIO

// CheckVersion exposes checkVersion.
var CheckVersion = checkVersion
