package install

import (
	"fmt"
	"math"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
)

// RuntimeONNX is the tg-model.json runtime ONNXRuntime runs.
const RuntimeONNX = "onnxruntime"

// ONNXRuntime is the Runtime for packages of runtime "onnxruntime": ONNX
// Runtime on the CPU through the cgo bridge (cgo/onnxruntime), with the
// model loaded from memory. libonnxruntime is loaded at the first Load, not
// at start: an agent without it keeps running and attesting, and its
// installs fail with ACTIVATION naming the missing library.
type ONNXRuntime struct {
	// Library is the configured path of libonnxruntime ("": the bridge's
	// search, $TG_ONNXRUNTIME_LIB then the development cache).
	Library string
	Options onnxruntime.Options
}

var _ Runtime = (*ONNXRuntime)(nil)

// Load implements Runtime. Inputs are fed as float32, or as int64 to a
// model input of that type (the values must then be whole numbers); int64
// outputs are returned as float32 (exact up to 2^24, enough for class ids).
func (r *ONNXRuntime) Load(files map[string][]byte, meta ModelMeta) (Model, error) {
	if meta.Runtime != RuntimeONNX {
		return nil, fmt.Errorf("runtime %q is not %s", meta.Runtime, RuntimeONNX)
	}
	lib, err := onnxruntime.FindLibrary(r.Library)
	if err != nil {
		return nil, err
	}
	if err := onnxruntime.Init(lib); err != nil {
		return nil, err
	}
	s, err := onnxruntime.NewSession(files[meta.Model], r.Options)
	if err != nil {
		return nil, err
	}
	m := &onnxModel{s: s, int64In: map[string]bool{}}
	have := map[string]bool{}
	for _, in := range s.Inputs() {
		have[in.Name] = true
		m.int64In[in.Name] = in.Type == onnxruntime.Int64
	}
	for _, out := range s.Outputs() {
		have["out:"+out.Name] = true
	}
	for _, n := range meta.Inputs {
		if !have[n] {
			s.Close()
			return nil, fmt.Errorf("the model has no input %q", n)
		}
	}
	for _, n := range meta.Outputs {
		if !have["out:"+n] {
			s.Close()
			return nil, fmt.Errorf("the model has no output %q", n)
		}
	}
	return m, nil
}

type onnxModel struct {
	s       *onnxruntime.Session
	int64In map[string]bool
}

func (m *onnxModel) Run(inputs map[string]Tensor) (map[string]Tensor, error) {
	in := make(map[string]onnxruntime.Tensor, len(inputs))
	for name, t := range inputs {
		if !m.int64In[name] {
			in[name] = onnxruntime.Tensor{Shape: t.Shape, Float32: t.Data}
			continue
		}
		v := make([]int64, len(t.Data))
		for i, f := range t.Data {
			if f != float32(math.Trunc(float64(f))) {
				return nil, fmt.Errorf("input %q is int64; value %d (%g) is not a whole number", name, i, f)
			}
			v[i] = int64(f)
		}
		in[name] = onnxruntime.Tensor{Shape: t.Shape, Int64: v}
	}
	out, err := m.s.Run(in)
	if err != nil {
		return nil, err
	}
	res := make(map[string]Tensor, len(out))
	for name, t := range out {
		data := t.Float32
		if t.Int64 != nil {
			data = make([]float32, len(t.Int64))
			for i, v := range t.Int64 {
				data[i] = float32(v)
			}
		}
		res[name] = Tensor{Shape: t.Shape, Data: data}
	}
	return res, nil
}

func (m *onnxModel) Close() error { return m.s.Close() }
