// Package tensorrt runs ONNX models on NVIDIA GPUs through TensorRT 10: it
// builds an engine plan from ONNX bytes with TensorRT's ONNX parser,
// deserializes plans, and runs them through execution contexts, with CUDA
// device buffers and a stream per context.
//
// Use:
//
//	if err := tensorrt.Available(); err != nil { /* fall back to ONNX Runtime */ }
//	plan, err := tensorrt.BuildPlan(onnxBytes, tensorrt.BuildOptions{
//		Profiles: []tensorrt.InputProfile{{Name: "x", Min: []int64{1, 4}, Opt: []int64{8, 4}, Max: []int64{64, 4}}},
//	})
//	e, err := tensorrt.LoadEngine(plan)
//	out, err := e.Run(map[string]tensorrt.Tensor{"x": {Shape: []int64{2, 4}, Float32: x}})
//	e.Close()
//
// The API mirrors package onnxruntime: [Tensor] has the same fields (the
// two convert with a plain conversion) and [TensorInfo] is the same type,
// so one runtime interface in the agent serves both bridges.
//
// # Guarantees
//
//   - Models and plans stay in memory: [BuildPlan] and [LoadEngine] take
//     bytes and write nothing to disk. A plan contains the model's weights;
//     a caller that keeps plans must encrypt them (the agent's plan cache,
//     agent/internal/plancache, seals its key with the TPM).
//   - No C++ exception and no crash for bad bytes: the C ABI (bridge.h)
//     catches everything, and a bad model, a plan built by another TensorRT
//     version or for another GPU, or an input TensorRT refuses gives an
//     error carrying TensorRT's own message (its logger keeps the last
//     error of the calling thread).
//   - Inputs are checked in Go (names, element type, rank, fixed
//     dimensions, data length) before they reach TensorRT; such errors wrap
//     [ErrInvalidInput]. Shapes outside the build's optimization profile
//     are refused by TensorRT, with its message.
//   - An [Engine] is safe for concurrent use: up to two Runs execute at
//     once, each in its own execution context and CUDA stream (contexts are
//     created on demand and reused); more wait. A Run that fails drops its
//     context. [Engine.Close] waits for running calls; later ones fail with
//     [ErrClosed].
//   - Run is synchronous: it copies the inputs to device buffers, enqueues
//     the engine (enqueueV3), copies the outputs back and waits for the
//     stream; the outputs are fresh Go memory.
//   - Element types: float32, int64 and int32 inputs and outputs. int32
//     tensors are presented as int64 ([TensorInfo] says int64; Run narrows
//     inputs, refusing values out of range, and widens outputs). An engine
//     with any other input or output type (e.g. float16 IO) is refused at
//     load with [ErrUnsupportedModel]; building with FP16 keeps float32 IO.
//     Outputs whose shape depends on input values (NonZero and the like) are
//     not supported.
//   - Builds run one at a time in a process.
//
// # Builds and availability
//
// The bridge needs cgo and the build tag tensorrt. Without either (plain
// `go build`, CGO_ENABLED=0, every CI build) the package still compiles and
// every call returns [ErrNotAvailable]; with them, the binary links
// libnvinfer, libnvonnxparser and libcudart and does not start on a machine
// without them, so only device builds use the tag.
//
// On a Jetson with JetPack 6.1 or later (TensorRT 10.3, CUDA 12.6;
// JetPack 6.0 has TensorRT 8.6, which the bridge does not support):
//
//	sudo apt-get install nvidia-jetpack   # or at least libnvinfer-dev libnvonnxparsers-dev cuda-cudart-dev-12-6
//	go build -tags tensorrt ./agent/cmd/tg-agent
//	go test -tags tensorrt ./cgo/tensorrt/
//
// The cgo directives look for TensorRT's headers and libraries under
// /usr/include/aarch64-linux-gnu and /usr/lib/aarch64-linux-gnu (where
// JetPack puts them) and for CUDA under /usr/local/cuda, on linux/arm64;
// elsewhere under /usr/local/cuda and the compiler's default paths (the
// x86-64 TensorRT packages use /usr/include/x86_64-linux-gnu, a default
// path). Other locations go in CGO_CXXFLAGS and CGO_LDFLAGS, e.g.
// CGO_CXXFLAGS=-I/opt/TensorRT-10/include CGO_LDFLAGS=-L/opt/TensorRT-10/lib;
// at run time the libraries must be on the loader's path (ldconfig or
// LD_LIBRARY_PATH). The C++ needs C++17.
//
// A plan runs only with the TensorRT version and on the GPU model it was
// built for: key cached plans by [Version], [BuildOptions.Fingerprint] and
// [Device] (its String form), as agent/internal/plancache does.
package tensorrt
