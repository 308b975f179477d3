package tensorrt

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/cgo/tensor"
)

// This file is pure Go and part of every build: the types, checks and
// option encodings that do not need TensorRT, so they are tested everywhere.

// Sentinel errors; returned errors wrap them.
var (
	// ErrNotAvailable: the binary was built without cgo or without the
	// tensorrt build tag, so there is no TensorRT in it.
	ErrNotAvailable = errors.New("tensorrt: not available in this build (build with -tags tensorrt on a device with JetPack's TensorRT)")
	// ErrNoDevice: TensorRT is built in, but this machine has no usable
	// CUDA device, or its TensorRT library is not the major version the
	// bridge was compiled against.
	ErrNoDevice = errors.New("tensorrt: no usable CUDA device or TensorRT library")
	// ErrClosed: a call on a closed [Engine].
	ErrClosed = errors.New("tensorrt: engine closed")
	// ErrInvalidInput: Run's inputs do not match the engine (name, element
	// type, shape, data length); nothing reached TensorRT.
	ErrInvalidInput = errors.New("tensorrt: invalid input")
	// ErrInvalidOptions: [BuildOptions] that TensorRT would refuse.
	ErrInvalidOptions = errors.New("tensorrt: invalid build options")
	// ErrUnsupportedModel: an engine with an input or output whose element
	// type Run cannot exchange (only float32, int32 and int64 are).
	ErrUnsupportedModel = errors.New("tensorrt: unsupported engine")
)

// MaxRank is the most dimensions a TensorRT tensor has.
const MaxRank = 8

// DataType is a tensor element type, numbered as ONNX numbers them
// (cgo/tensor, as in package onnxruntime).
type DataType = tensor.DataType

// The element types Run accepts and returns.
const (
	Float32 = tensor.Float32
	Int64   = tensor.Int64
)

// TensorInfo describes an engine input or output: its name, element type
// and shape, where -1 marks a dimension chosen at run time. It is the same
// type as onnxruntime.TensorInfo.
type TensorInfo = tensor.Info

// Tensor is a dense row-major tensor (cgo/tensor): the same type as
// onnxruntime.Tensor.
type Tensor = tensor.Tensor

// TensorRT's element types (nvinfer1::DataType; bridge.h's TG_TRT_*).
const (
	trtFloat = 0
	trtHalf  = 1
	trtInt8  = 2
	trtInt32 = 3
	trtBool  = 4
	trtUint8 = 5
	trtFP8   = 6
	trtBF16  = 7
	trtInt64 = 8
	trtInt4  = 9
)

// dataTypeFromTRT maps a TensorRT element type to the ONNX number of the
// same type. int32 maps to int64: Run widens int32 outputs and narrows
// int64 inputs for such tensors, so callers see one integer type from both
// bridges (TensorRT's ONNX parser produced int32 where the model said int64
// before TensorRT 10).
func dataTypeFromTRT(t int32) DataType {
	switch t {
	case trtFloat:
		return Float32
	case trtHalf:
		return 10 // FLOAT16
	case trtInt8:
		return 3 // INT8
	case trtInt32, trtInt64:
		return Int64
	case trtBool:
		return 9 // BOOL
	case trtUint8:
		return 2 // UINT8
	case trtFP8:
		return 17 // FLOAT8E4M3FN
	case trtBF16:
		return 16 // BFLOAT16
	case trtInt4:
		return 22 // INT4
	}
	return onnxmodel.Undefined
}

// trtTypeName names a TensorRT element type for messages.
func trtTypeName(t int32) string {
	names := [...]string{"float32", "float16", "int8", "int32", "bool", "uint8", "fp8", "bfloat16", "int64", "int4"}
	if t >= 0 && int(t) < len(names) {
		return names[t]
	}
	return "tensorrt-type-" + strconv.Itoa(int(t))
}

// exchangeable reports whether Run can pass tensors of TensorRT type t.
func exchangeable(t int32) bool { return t == trtFloat || t == trtInt32 || t == trtInt64 }

// ioTensor is one engine input or output as the engine reports it.
type ioTensor struct {
	TensorInfo
	index   int32 // in the engine's IO list
	trtType int32 // TensorRT's element type (TensorInfo.Type is its ONNX equivalent)
	input   bool
}

// checkEngineIO refuses an engine whose tensors Run cannot exchange, at
// load time rather than on the first request.
func checkEngineIO(io []ioTensor) error {
	outputs := 0
	for _, t := range io {
		if !exchangeable(t.trtType) {
			return fmt.Errorf("%w: tensor %q is %s; Run exchanges float32, int32 and int64 tensors only (build with FP16 keeps float32 inputs and outputs)",
				ErrUnsupportedModel, t.Name, trtTypeName(t.trtType))
		}
		if len(t.Shape) > MaxRank {
			return fmt.Errorf("%w: tensor %q has rank %d", ErrUnsupportedModel, t.Name, len(t.Shape))
		}
		if !t.input {
			outputs++
		}
	}
	if outputs == 0 {
		return fmt.Errorf("%w: the engine has no outputs", ErrUnsupportedModel)
	}
	return nil
}

// checkInputs validates a Run's inputs against the engine's: every input
// present, no unknown names, each value well formed and of a shape the
// engine can take.
func checkInputs(want []ioTensor, inputs map[string]Tensor) error {
	infos := make([]TensorInfo, len(want))
	for i, t := range want {
		infos[i] = t.TensorInfo
	}
	if err := tensor.CheckInputs(infos, inputs); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidInput, err)
	}
	return nil
}

// narrowInt32 converts int64 input values to the int32 an engine tensor
// holds, refusing values that do not fit.
func narrowInt32(name string, v []int64) ([]int32, error) {
	out := make([]int32, len(v))
	for i, x := range v {
		if x < -1<<31 || x > 1<<31-1 {
			return nil, fmt.Errorf("%w: input %q is int32 in the engine; value %d at index %d does not fit", ErrInvalidInput, name, x, i)
		}
		out[i] = int32(x)
	}
	return out, nil
}

// formatVersion renders TensorRT's version number (major*10000 + minor*100
// + patch) as "major.minor.patch".
func formatVersion(v int) string {
	if v <= 0 {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", v/10000, v/100%100, v%100)
}

// BuildOptions configure how [BuildPlan] turns an ONNX model into an
// engine plan. The zero value builds an FP32 engine (TF32 off) with
// TensorRT's default workspace for a model whose inputs have fixed shapes.
type BuildOptions struct {
	// WorkspaceBytes caps the scratch memory a layer's kernels may use
	// (TensorRT's kWORKSPACE pool); 0 keeps TensorRT's default, the
	// device's total memory, which on a Jetson is shared with the CPU.
	WorkspaceBytes int64
	// FP16 lets TensorRT pick half-precision kernels where faster. Inputs
	// and outputs stay float32; results differ from FP32 by FP16 rounding.
	FP16 bool
	// TF32 lets TensorRT use TF32 tensor cores for FP32 math (Ampere and
	// later, e.g. Orin). Off by default so that an FP32 engine computes
	// what the model's reference computes, to float32 rounding.
	TF32 bool
	// Profiles gives the shapes each input with a dynamic dimension may
	// take at run time; every such input needs one. Run refuses shapes
	// outside [Min, Max]; the kernels are tuned for Opt.
	Profiles []InputProfile
}

// InputProfile is the range of shapes of one dynamic input.
type InputProfile struct {
	Name          string
	Min, Opt, Max []int64
}

// Validate reports options TensorRT would refuse.
func (o BuildOptions) Validate() error {
	if o.WorkspaceBytes < 0 {
		return fmt.Errorf("%w: WorkspaceBytes %d is negative", ErrInvalidOptions, o.WorkspaceBytes)
	}
	seen := make(map[string]bool, len(o.Profiles))
	for _, p := range o.Profiles {
		if p.Name == "" || strings.IndexByte(p.Name, 0) >= 0 {
			return fmt.Errorf("%w: profile with empty or NUL-containing input name %q", ErrInvalidOptions, p.Name)
		}
		if seen[p.Name] {
			return fmt.Errorf("%w: two profiles for input %q", ErrInvalidOptions, p.Name)
		}
		seen[p.Name] = true
		if len(p.Min) != len(p.Opt) || len(p.Opt) != len(p.Max) || len(p.Max) > MaxRank {
			return fmt.Errorf("%w: input %q: min %v, opt %v and max %v need one rank of at most %d", ErrInvalidOptions, p.Name, p.Min, p.Opt, p.Max, MaxRank)
		}
		for i := range p.Min {
			if p.Min[i] < 0 || p.Min[i] > p.Opt[i] || p.Opt[i] > p.Max[i] {
				return fmt.Errorf("%w: input %q: need 0 ≤ min ≤ opt ≤ max in every dimension, got min %v, opt %v, max %v", ErrInvalidOptions, p.Name, p.Min, p.Opt, p.Max)
			}
		}
	}
	return nil
}

// Fingerprint is a canonical text of the options: equal options give equal
// fingerprints whatever the order of Profiles, different options different
// ones. A plan cache keys plans by it (with the model, the TensorRT version
// and the device).
func (o BuildOptions) Fingerprint() string {
	var b strings.Builder
	fmt.Fprintf(&b, "v1 workspace=%d fp16=%t tf32=%t", o.WorkspaceBytes, o.FP16, o.TF32)
	profiles := slices.Clone(o.Profiles)
	slices.SortFunc(profiles, func(a, b InputProfile) int { return strings.Compare(a.Name, b.Name) })
	for _, p := range profiles {
		fmt.Fprintf(&b, " profile %s min=%v opt=%v max=%v", strconv.Quote(p.Name), p.Min, p.Opt, p.Max)
	}
	return b.String()
}

// DeviceInfo identifies the GPU an engine is built for: a plan runs only on
// the GPU model and TensorRT version it was built with.
type DeviceInfo struct {
	Name                       string // e.g. "Orin"
	ComputeMajor, ComputeMinor int    // compute capability, e.g. 8.7
	CUDARuntime                int    // e.g. 12060 for CUDA 12.6
}

// String is a stable identity of the device for cache keys, e.g.
// "Orin sm_87 cuda 12.6".
func (d DeviceInfo) String() string {
	return fmt.Sprintf("%s sm_%d%d cuda %d.%d", d.Name, d.ComputeMajor, d.ComputeMinor, d.CUDARuntime/1000, d.CUDARuntime%1000/10)
}
