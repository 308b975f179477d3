// Package onnxruntime runs ONNX models on the CPU through ONNX Runtime
// (github.com/yalue/onnxruntime_go v1.27.0), with libonnxruntime loaded at
// run time from a path the caller chooses.
//
// Use:
//
//	lib, err := onnxruntime.FindLibrary(cfg.LibraryPath) // config, then TG_ONNXRUNTIME_LIB, then the dev cache
//	err = onnxruntime.Init(lib)                          // once per process; refuses anything but 1.24.x
//	s, err := onnxruntime.NewSession(modelBytes, onnxruntime.Options{IntraOpThreads: 2})
//	out, err := s.Run(map[string]onnxruntime.Tensor{"x": {Shape: []int64{1, 4}, Float32: x}})
//	s.Close()
//
// Guarantees:
//
//   - Versions: the binding speaks ORT C API version 24, so [Init] accepts only
//     a library that reports version 1.24.x (asked through the binding after
//     loading). An older library lacks API 24 and fails to load; a newer one is
//     refused and unloaded. The binding is never newer than the library.
//   - Models are loaded from memory: [NewSession] hands the bytes straight to
//     ONNX Runtime, so a decrypted model never touches the disk. The inputs and
//     outputs are read from the bytes in pure Go (package onnxmodel) rather
//     than by loading the model twice, which would double the peak memory.
//   - Bad model bytes give an error carrying ONNX Runtime's own message, never
//     a crash. Inputs are checked (names, element type, rank, fixed
//     dimensions) before they reach ONNX Runtime; such errors wrap
//     [ErrInvalidInput]. So does a Run that ONNX Runtime fails because of
//     the input's values (an index out of range, such as a token id past
//     the vocabulary or a sequence past the model's context).
//   - A [Session] is safe for concurrent use: ONNX Runtime allows concurrent
//     Run calls on one session, and [Session.Close] waits for running calls and
//     makes later ones fail with [ErrClosed].
//   - Threads: [Options] sets the session's intra-op and inter-op thread counts;
//     zero keeps ONNX Runtime's default (one intra-op thread per core).
//
// Supported element types are float32 and int64, for inputs and outputs.
// Scalars (rank-0 tensors) are not supported by the binding's tensors.
//
// Built without cgo (CGO_ENABLED=0, as `make check` cross-builds the tree),
// the package compiles and every call fails with [ErrNoCgo], so code that
// imports it still cross-builds.
package onnxruntime
