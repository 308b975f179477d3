//go:build cgo && tensorrt

package tensorrt

/*
#cgo CXXFLAGS: -std=c++17 -O2 -Wall
#cgo linux,arm64 CXXFLAGS: -I/usr/include/aarch64-linux-gnu -I/usr/local/cuda/include
#cgo linux,arm64 LDFLAGS: -L/usr/lib/aarch64-linux-gnu -L/usr/local/cuda/lib64
#cgo !linux !arm64 CXXFLAGS: -I/usr/local/cuda/include
#cgo !linux !arm64 LDFLAGS: -L/usr/local/cuda/lib64
#cgo LDFLAGS: -lnvinfer -lnvonnxparser -lcudart
#include <stdlib.h>
#include "bridge.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"unsafe"
)

// maxContexts is how many Runs of one engine execute at once, each in its
// own execution context (activation memory) and CUDA stream. Two keep the
// GPU busy while one call copies; more would only cost device memory,
// which a Jetson shares with the CPU.
const maxContexts = 2

// buildMu serializes builds: TensorRT's builder is usable from one thread
// at a time, and two builds at once would each tune kernels against the
// other's load (and double the peak memory).
var buildMu sync.Mutex

// cerr takes a bridge error: nil for NULL, else its message (freed).
func cerr(e C.tg_trt_error) error {
	if e == nil {
		return nil
	}
	defer C.tg_trt_error_free(e)
	return errors.New(C.GoString(e))
}

// Available reports whether this process can use TensorRT: a CUDA device
// is present and the TensorRT library has the major version the bridge was
// compiled against. Errors wrap [ErrNoDevice].
func Available() error {
	if _, err := Device(); err != nil {
		return err
	}
	lib, hdr := int(C.tg_trt_library_version()), int(C.tg_trt_header_version())
	if lib/10000 != hdr/10000 {
		return fmt.Errorf("%w: the TensorRT library is %s, the bridge was built against %s", ErrNoDevice, formatVersion(lib), formatVersion(hdr))
	}
	return nil
}

// Version returns the loaded TensorRT library's version ("10.3.0").
func Version() string { return formatVersion(int(C.tg_trt_library_version())) }

// Device describes the CUDA device engines run on (device 0). Errors wrap
// [ErrNoDevice].
func Device() (DeviceInfo, error) {
	var name [256]C.char
	var major, minor, rt C.int32_t
	if err := cerr(C.tg_trt_device(&name[0], C.size_t(len(name)), &major, &minor, &rt)); err != nil {
		return DeviceInfo{}, fmt.Errorf("%w: %w", ErrNoDevice, err)
	}
	return DeviceInfo{Name: C.GoString(&name[0]), ComputeMajor: int(major), ComputeMinor: int(minor), CUDARuntime: int(rt)}, nil
}

func setDims(d *C.tg_trt_dims, shape []int64) {
	d.rank = C.int32_t(len(shape))
	for i, v := range shape {
		d.d[i] = C.int64_t(v)
	}
}

func getDims(d *C.tg_trt_dims) []int64 {
	n := min(max(int(d.rank), 0), MaxRank)
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(d.d[i])
	}
	return out
}

// BuildPlan builds a serialized engine (a plan) for this device from an
// ONNX model in memory; the bytes are not retained or written anywhere.
// Building takes seconds to minutes; builds run one at a time. The plan
// holds the model's weights: keep it only encrypted (see package
// agent/internal/plancache).
func BuildPlan(onnx []byte, opts BuildOptions) ([]byte, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if len(onnx) == 0 {
		return nil, errors.New("tensorrt: build plan: empty model")
	}
	var copts C.tg_trt_build_options
	copts.workspace_bytes = C.uint64_t(opts.WorkspaceBytes)
	if opts.FP16 {
		copts.fp16 = 1
	}
	if opts.TF32 {
		copts.tf32 = 1
	}
	if n := len(opts.Profiles); n > 0 {
		// C memory: the array holds C strings, and Go memory passed to C
		// may not hold pointers to unpinned Go memory.
		arr := (*C.tg_trt_profile_input)(C.calloc(C.size_t(n), C.sizeof_tg_trt_profile_input))
		if arr == nil {
			return nil, errors.New("tensorrt: build plan: out of memory")
		}
		defer C.free(unsafe.Pointer(arr))
		profiles := unsafe.Slice(arr, n)
		for i, p := range opts.Profiles {
			name := C.CString(p.Name)
			defer C.free(unsafe.Pointer(name))
			profiles[i].name = name
			setDims(&profiles[i].min, p.Min)
			setDims(&profiles[i].opt, p.Opt)
			setDims(&profiles[i].max, p.Max)
		}
		copts.n_profile_inputs = C.int32_t(n)
		copts.profile_inputs = arr
	}

	buildMu.Lock()
	defer buildMu.Unlock()
	var blob *C.tg_trt_blob
	if err := cerr(C.tg_trt_build_plan(unsafe.Pointer(&onnx[0]), C.size_t(len(onnx)), &copts, &blob)); err != nil {
		return nil, fmt.Errorf("tensorrt: %w", err)
	}
	defer C.tg_trt_blob_free(blob)
	size := int(C.tg_trt_blob_size(blob))
	return slices.Clone(unsafe.Slice((*byte)(C.tg_trt_blob_data(blob)), size)), nil
}

// Engine is a deserialized plan, ready to run. It is safe for concurrent
// use; Close it to free its device memory.
type Engine struct {
	inputs, outputs []ioTensor

	// mu is held for reading by every Run and for writing by Close, so
	// Close never frees the engine under a running call.
	mu  sync.RWMutex
	eng *C.tg_trt_engine // nil once closed

	// slots bounds the contexts in use; idle holds the free ones.
	slots  chan struct{}
	idleMu sync.Mutex
	idle   []*C.tg_trt_context
}

// LoadEngine deserializes a plan built by [BuildPlan] with this TensorRT
// version for this GPU model; any other plan fails with TensorRT's message.
// The bytes are not retained. Engines whose inputs or outputs are not
// float32, int32 or int64 are refused ([ErrUnsupportedModel]).
func LoadEngine(plan []byte) (*Engine, error) {
	if len(plan) == 0 {
		return nil, errors.New("tensorrt: load engine: empty plan")
	}
	var eng *C.tg_trt_engine
	if err := cerr(C.tg_trt_engine_load(unsafe.Pointer(&plan[0]), C.size_t(len(plan)), &eng)); err != nil {
		return nil, fmt.Errorf("tensorrt: %w", err)
	}
	e := &Engine{eng: eng, slots: make(chan struct{}, maxContexts)}
	var io []ioTensor
	for i := range int32(C.tg_trt_engine_num_io(eng)) {
		var info C.tg_trt_io_info
		if err := cerr(C.tg_trt_engine_io(eng, C.int32_t(i), &info)); err != nil {
			C.tg_trt_engine_free(eng)
			return nil, fmt.Errorf("tensorrt: %w", err)
		}
		t := ioTensor{
			TensorInfo: TensorInfo{Name: C.GoString(info.name), Type: dataTypeFromTRT(int32(info.dtype)), Shape: getDims(&info.shape)},
			index:      i,
			trtType:    int32(info.dtype),
			input:      info.is_input != 0,
		}
		io = append(io, t)
		if t.input {
			e.inputs = append(e.inputs, t)
		} else {
			e.outputs = append(e.outputs, t)
		}
	}
	if err := checkEngineIO(io); err != nil {
		C.tg_trt_engine_free(eng)
		return nil, err
	}
	return e, nil
}

// Inputs describes the engine's inputs, in the engine's order.
func (e *Engine) Inputs() []TensorInfo { return infos(e.inputs) }

// Outputs describes the engine's outputs, in the engine's order.
func (e *Engine) Outputs() []TensorInfo { return infos(e.outputs) }

func infos(io []ioTensor) []TensorInfo {
	out := make([]TensorInfo, len(io))
	for i, t := range io {
		out[i] = t.TensorInfo
		out[i].Shape = slices.Clone(t.Shape)
	}
	return out
}

// Run evaluates the engine on inputs, which must name every engine input
// and nothing else, and returns every output by name. It copies the inputs
// to the GPU, runs, and copies the outputs back before it returns; the
// outputs are fresh Go memory owned by the caller. Concurrent calls are
// safe: up to two run at once, each in its own execution context, and
// later ones wait for a free one.
func (e *Engine) Run(inputs map[string]Tensor) (map[string]Tensor, error) {
	if err := checkInputs(e.inputs, inputs); err != nil {
		return nil, err
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.eng == nil {
		return nil, ErrClosed
	}
	ctx, err := e.acquire()
	if err != nil {
		return nil, err
	}
	out, err := e.infer(ctx, inputs)
	// A context whose call failed may hold a half-set state (or a CUDA
	// error): do not reuse it.
	e.release(ctx, err == nil)
	return out, err
}

// acquire takes a free execution context, creating one while fewer than
// maxContexts exist. The caller holds e.mu for reading.
func (e *Engine) acquire() (*C.tg_trt_context, error) {
	e.slots <- struct{}{}
	e.idleMu.Lock()
	defer e.idleMu.Unlock()
	if n := len(e.idle); n > 0 {
		ctx := e.idle[n-1]
		e.idle = e.idle[:n-1]
		return ctx, nil
	}
	var ctx *C.tg_trt_context
	if err := cerr(C.tg_trt_context_create(e.eng, &ctx)); err != nil {
		<-e.slots
		return nil, fmt.Errorf("tensorrt: %w", err)
	}
	return ctx, nil
}

func (e *Engine) release(ctx *C.tg_trt_context, reuse bool) {
	if reuse {
		e.idleMu.Lock()
		e.idle = append(e.idle, ctx)
		e.idleMu.Unlock()
	} else {
		C.tg_trt_context_free(ctx)
	}
	<-e.slots
}

func (e *Engine) infer(ctx *C.tg_trt_context, inputs map[string]Tensor) (map[string]Tensor, error) {
	// The bridge reads the inputs' Go memory during the call; pinned, their
	// addresses may sit in the (Go) tensor array handed to C.
	var pin runtime.Pinner
	defer pin.Unpin()
	in := make([]C.tg_trt_tensor, len(e.inputs))
	for i, info := range e.inputs {
		t := inputs[info.Name]
		c := &in[i]
		c.io_index = C.int32_t(info.index)
		c.dtype = C.int32_t(info.trtType)
		setDims(&c.shape, t.Shape)
		var data unsafe.Pointer
		var nbytes int
		switch {
		case info.trtType == trtFloat && len(t.Float32) > 0:
			data, nbytes = unsafe.Pointer(&t.Float32[0]), 4*len(t.Float32)
		case info.trtType == trtInt64 && len(t.Int64) > 0:
			data, nbytes = unsafe.Pointer(&t.Int64[0]), 8*len(t.Int64)
		case info.trtType == trtInt32 && len(t.Int64) > 0:
			v, err := narrowInt32(info.Name, t.Int64)
			if err != nil {
				return nil, err
			}
			data, nbytes = unsafe.Pointer(&v[0]), 4*len(v)
		}
		if data != nil {
			pin.Pin(data)
		}
		c.data, c.nbytes = data, C.uint64_t(nbytes)
	}
	out := make([]C.tg_trt_tensor, len(e.outputs))
	for i, info := range e.outputs {
		out[i].io_index = C.int32_t(info.index)
	}
	var inPtr, outPtr *C.tg_trt_tensor
	if len(in) > 0 {
		inPtr = &in[0]
	}
	if len(out) > 0 {
		outPtr = &out[0]
	}
	if err := cerr(C.tg_trt_infer(ctx, inPtr, C.int32_t(len(in)), outPtr, C.int32_t(len(out)))); err != nil {
		return nil, fmt.Errorf("tensorrt: run: %w", err)
	}
	// The output data is C memory the bridge allocated: copy it out, and
	// free all of it even if a conversion fails.
	defer func() {
		for i := range out {
			C.tg_trt_free(out[i].data)
		}
	}()
	res := make(map[string]Tensor, len(out))
	for i, info := range e.outputs {
		t, err := fromC(&out[i])
		if err != nil {
			return nil, fmt.Errorf("tensorrt: output %q: %w", info.Name, err)
		}
		res[info.Name] = t
	}
	return res, nil
}

// fromC copies an output of the bridge into Go memory, widening int32 to
// int64.
func fromC(c *C.tg_trt_tensor) (Tensor, error) {
	shape := getDims(&c.shape)
	n := 1
	for _, d := range shape {
		n *= int(d)
	}
	nbytes := int(c.nbytes)
	t := Tensor{Shape: shape}
	switch int32(c.dtype) {
	case trtFloat:
		if nbytes != 4*n {
			return Tensor{}, fmt.Errorf("%d bytes for shape %v", nbytes, shape)
		}
		t.Float32 = make([]float32, n)
		if n > 0 {
			copy(t.Float32, unsafe.Slice((*float32)(c.data), n))
		}
	case trtInt64:
		if nbytes != 8*n {
			return Tensor{}, fmt.Errorf("%d bytes for shape %v", nbytes, shape)
		}
		t.Int64 = make([]int64, n)
		if n > 0 {
			copy(t.Int64, unsafe.Slice((*int64)(c.data), n))
		}
	case trtInt32:
		if nbytes != 4*n {
			return Tensor{}, fmt.Errorf("%d bytes for shape %v", nbytes, shape)
		}
		t.Int64 = make([]int64, n)
		if n > 0 {
			for i, v := range unsafe.Slice((*int32)(c.data), n) {
				t.Int64[i] = int64(v)
			}
		}
	default:
		return Tensor{}, fmt.Errorf("element type %s", trtTypeName(int32(c.dtype)))
	}
	return t, nil
}

// Close frees the engine and its execution contexts. It waits for running
// Run calls; later calls fail with [ErrClosed]. Closing twice is harmless.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.eng == nil {
		return nil
	}
	// No Run holds a context now (each holds e.mu for reading until it has
	// released its context), so every context is idle.
	e.idleMu.Lock()
	for _, ctx := range e.idle {
		C.tg_trt_context_free(ctx)
	}
	e.idle = nil
	e.idleMu.Unlock()
	C.tg_trt_engine_free(e.eng)
	e.eng = nil
	return nil
}
