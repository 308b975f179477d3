// Package inferapi serves the device's loaded model to local applications
// over the Open Inference Protocol (KServe v2) REST API, so stock clients
// (KServe's and Triton's v2 clients, curl) work unchanged:
//
//	GET  /v2                                         server metadata
//	GET  /v2/health/live                             the agent answers
//	GET  /v2/health/ready                            a model is serving
//	GET  /v2/models/{name}[/versions/{version}]      model metadata
//	GET  /v2/models/{name}[/versions/{version}]/ready
//	POST /v2/models/{name}[/versions/{version}]/infer
//
// A model's name is its package's name and its version the package
// version; the agent serves one model, the active slot's. Tensors are
// JSON with FP32 or INT64 data, flat (row-major) or nested as the shape
// says, or raw little-endian bytes after the JSON with the binary tensor
// data extension (binary_tensor_data: Inference-Header-Content-Length and
// binary_data_size, binary_data, binary_data_output); the datatype must
// be the model's. Binary sizes must match the shapes and add up to the
// body exactly.
//
// Errors are {"error":"message"} with the status saying whose fault it is:
// 400 for a request that does not fit the model (unknown input, wrong
// datatype, shape or element count, malformed JSON), 404 for an unknown
// model or version, 413 for a body over the limit, 503 when no model is
// loaded (or it is being replaced), 500 when the backend fails. A bad
// request never reaches the backend's native code.
//
// The API listens on a Unix socket (mode 0660, group chosen by the
// operator, so only members of that group can infer) and optionally on a
// loopback TCP address; it refuses to listen anywhere else. Every
// inference is recorded in the agent's inference statistics.
package inferapi
