// Package onnxmodel writes and reads ONNX models in pure Go: it encodes a
// small graph (nodes, initializers, typed inputs and outputs) as ONNX
// ModelProto bytes, reads the inputs and outputs back out of any model's
// bytes, and holds [MLP], a two-layer perceptron with a pure-Go reference
// forward pass.
//
// It has no import "C" and no dependency outside the standard library, so the
// trainer can use it to export models and every test can make real ONNX
// models without files or Python. The protobuf wire format is written by hand
// (a few varint and length-delimited helpers): the ONNX messages involved are
// small and stable, and no generated code is worth carrying for them.
//
// Guarantees:
//   - [Model.Encode] is deterministic: the same Model gives the same bytes
//     (testdata/ holds a golden model that pins them).
//   - [ReadIO] never panics on arbitrary bytes and reports the inputs the way
//     ONNX Runtime does: graph inputs that are also initializers are left out.
//   - [MLP.Forward] computes what ONNX Runtime computes for [MLP.Model], to
//     float32 rounding (the bridge's tests check 1e-5).
package onnxmodel
