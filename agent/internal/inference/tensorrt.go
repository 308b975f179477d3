package inference

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/tensorguard/tensorguardflow/agent/internal/plancache"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/cgo/tensorrt"
)

// TensorRT is the backend for a Jetson's GPU through the cgo bridge
// (cgo/tensorrt, built only with the tensorrt tag). An ONNX model is built
// into an engine on the device; the built plan is kept in an encrypted
// cache whose key only this device's TPM unseals, so the next start loads
// it in seconds instead of building for minutes. A package may also ship
// a serialized plan (a model file ending in .plan or .engine) built for
// this device type.
type TensorRT struct {
	// OpenCache opens the plan cache at the first build (nil, or an error:
	// plans are rebuilt at every load, and the reason is logged once).
	OpenCache func() (*plancache.Cache, error)
	// Options are the engine build options; dynamic dimensions the options
	// leave out get a profile of 1…MaxDynamic (batch 1…MaxBatch).
	Options    tensorrt.BuildOptions
	MaxBatch   int64 // default 8
	MaxDynamic int64 // default 512
	Logger     *slog.Logger

	once  sync.Once
	cache *plancache.Cache
}

var _ Backend = (*TensorRT)(nil)

// Name implements Backend.
func (*TensorRT) Name() string { return RuntimeTensorRT }

// Runs implements Backend: TensorRT runs "tensorrt" and "onnx".
func (*TensorRT) Runs(runtime string) bool {
	return runtime == RuntimeTensorRT || runtime == RuntimeONNX
}

// Available implements Backend: the agent must be built with TensorRT and
// a CUDA device must answer.
func (*TensorRT) Available() error {
	if err := tensorrt.Available(); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

func (r *TensorRT) log() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

// Load implements Backend.
func (r *TensorRT) Load(files map[string][]byte, meta Meta) (Model, error) {
	model := files[meta.Model]
	var (
		engine *tensorrt.Engine
		err    error
	)
	if strings.HasSuffix(meta.Model, ".plan") || strings.HasSuffix(meta.Model, ".engine") {
		engine, err = tensorrt.LoadEngine(model)
	} else {
		engine, err = r.buildOrLoad(model)
	}
	if err != nil {
		return nil, err
	}
	m := &trtModel{e: engine}
	if m.inputs, err = fromONNX(engine.Inputs()); err == nil {
		m.outputs, err = fromONNX(engine.Outputs())
	}
	if err == nil {
		err = checkNames(meta, m.inputs, m.outputs)
	}
	if err != nil {
		engine.Close()
		return nil, err
	}
	return m, nil
}

// buildOrLoad returns the engine for an ONNX model, from the plan cache
// when it holds a plan that loads, else built now (and cached).
func (r *TensorRT) buildOrLoad(onnx []byte) (*tensorrt.Engine, error) {
	opts, err := r.profiles(onnx)
	if err != nil {
		return nil, err
	}
	dev, err := tensorrt.Device()
	if err != nil {
		return nil, err
	}
	r.once.Do(func() {
		if r.OpenCache == nil {
			return
		}
		c, err := r.OpenCache()
		if err != nil {
			r.log().Warn("TensorRT plans are not cached; every load builds the engine again", "err", err)
			return
		}
		r.cache = c
	})
	key := plancache.NewKey(onnx, tensorrt.Version(), opts.Fingerprint(), dev.String())
	if r.cache != nil {
		plan, err := r.cache.Get(key)
		switch {
		case err == nil:
			e, lerr := tensorrt.LoadEngine(plan)
			if lerr == nil {
				return e, nil
			}
			r.log().Warn("cached TensorRT plan does not load; building it again", "err", lerr)
			_ = r.cache.Remove(key)
		case errors.Is(err, plancache.ErrCorrupt):
			r.log().Warn("cached TensorRT plan was damaged and removed; building it again", "err", err)
		case !errors.Is(err, plancache.ErrMiss):
			r.log().Warn("TensorRT plan cache", "err", err)
		}
	}
	plan, err := tensorrt.BuildPlan(onnx, opts)
	if err != nil {
		return nil, err
	}
	if r.cache != nil {
		if err := r.cache.Put(key, plan); err != nil {
			r.log().Warn("TensorRT plan not cached", "err", err)
		}
	}
	return tensorrt.LoadEngine(plan)
}

// profiles completes the build options with an optimization profile for
// every input dimension the model leaves dynamic: the batch (the first
// dimension) from 1 to MaxBatch, others from 1 to MaxDynamic, optimized
// for 1.
func (r *TensorRT) profiles(onnx []byte) (tensorrt.BuildOptions, error) {
	opts := r.Options
	inputs, _, err := onnxmodel.ReadIO(onnx)
	if err != nil {
		return opts, err
	}
	maxBatch, maxDyn := r.MaxBatch, r.MaxDynamic
	if maxBatch <= 0 {
		maxBatch = 8
	}
	if maxDyn <= 0 {
		maxDyn = 512
	}
	for _, in := range inputs {
		if profiled(opts.Profiles, in.Name) {
			continue
		}
		p := tensorrt.InputProfile{Name: in.Name}
		dynamic := false
		for i, d := range in.Shape {
			lo, hi := d, d
			if d < 0 {
				dynamic, lo, hi = true, 1, maxDyn
				if i == 0 {
					hi = maxBatch
				}
			}
			p.Min, p.Opt, p.Max = append(p.Min, lo), append(p.Opt, lo), append(p.Max, hi)
		}
		if dynamic {
			opts.Profiles = append(opts.Profiles, p)
		}
	}
	return opts, opts.Validate()
}

func profiled(ps []tensorrt.InputProfile, name string) bool {
	for _, p := range ps {
		if p.Name == name {
			return true
		}
	}
	return false
}

type trtModel struct {
	e               *tensorrt.Engine
	inputs, outputs []TensorInfo
}

func (m *trtModel) Backend() string       { return RuntimeTensorRT }
func (m *trtModel) Inputs() []TensorInfo  { return m.inputs }
func (m *trtModel) Outputs() []TensorInfo { return m.outputs }
func (m *trtModel) Close() error          { return m.e.Close() }

func (m *trtModel) Infer(inputs map[string]Tensor) (map[string]Tensor, error) {
	out, err := m.e.Run(inputs)
	if errors.Is(err, tensorrt.ErrInvalidInput) {
		return nil, invalidInput{err}
	}
	return out, err
}
