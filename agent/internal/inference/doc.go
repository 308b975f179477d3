// Package inference is the agent's model runtime: one interface over the
// inference backends a device has (ONNX Runtime on the CPU, TensorRT on a
// Jetson's GPU), the choice between them, and the per-model statistics the
// agent reports.
//
// A [Backend] loads a model from plaintext bytes held in memory (they come
// decrypted from a TGSP package and never touch the disk) and returns a
// [Model], which describes its inputs and outputs and runs inferences from
// several goroutines at once. A [Selector] picks the backend for a package
// from two facts:
//
//   - the package's tg-model.json runtime: "onnxruntime" asks for ONNX
//     Runtime, "tensorrt" for TensorRT, and "onnx" for an ONNX model that
//     may run on whatever is best here;
//   - what the device has: the backends the agent was built with and
//     configured for (install.runtime), each of which reports whether it
//     can run here ([Backend.Available]).
//
// For "onnx" the Selector tries TensorRT first where it is available and
// falls back to ONNX Runtime when TensorRT cannot build the model (an
// operator it lacks), so a package built once runs on every device of a
// mixed fleet. An explicit runtime is never substituted.
//
// Tensors are dense and row-major, with float32 (FP32) or int64 (INT64)
// elements, the types our models take and return; the names are the Open
// Inference Protocol's. Inputs that do not fit the model (name, type,
// rank, fixed dimensions, element count) fail with an error wrapping
// [ErrInvalidInput] before they reach a backend's native code.
//
// [Stats] counts inferences, errors and latencies per loaded model
// (a fixed-bucket histogram, lock-free on the inference path); the agent
// exports it as Prometheus metrics and summarizes it in its telemetry.
// [ReadThermal] reads the device's thermal zones (Jetson reports CPU, GPU
// and SoC temperatures there).
package inference
