package dpsgd

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// BackendEnv names GoMLX's backend configuration variable. Only the
// pure-Go backend ("go") is compiled in.
const BackendEnv = backends.ConfigEnvVar

// DefaultBackendConfig is used when BackendEnv is unset: the pure-Go
// backend with unlimited parallelism (its default worker limit deadlocks on
// two cores).
const DefaultBackendConfig = "go:parallelism=-1"

var sharedBackend = sync.OnceValues(func() (backends.Backend, error) {
	return NewBackend()
})

// SharedBackend returns one process-wide backend, created on first use
// with NewBackend. Engines share it unless given their own.
func SharedBackend() (backends.Backend, error) { return sharedBackend() }

// NewBackend creates the pure-Go GoMLX backend from $GOMLX_BACKEND, or
// DefaultBackendConfig when unset. Any backend other than "go" is refused:
// the others download native plugins.
func NewBackend() (backends.Backend, error) {
	config, ok := os.LookupEnv(BackendEnv)
	if !ok || config == "" {
		config = DefaultBackendConfig
	}
	name, opts, _ := strings.Cut(config, ":")
	if name != simplego.BackendName {
		return nil, fmt.Errorf("%s=%q: only the pure-Go backend %q is supported", BackendEnv, config, simplego.BackendName)
	}
	b, err := simplego.New(backendOptions(opts))
	if err != nil {
		return nil, fmt.Errorf("create gomlx backend %q: %w", config, err)
	}
	return b, nil
}

// backendOptions adjusts the simplego options for -race builds: GoMLX
// v0.26.0's parallel op scheduler reads a buffer's use count without its
// lock (simplego/exec.go, executeNode), a race the detector reports in
// every test. Reading it stale only skips an in-place buffer reuse, so
// production keeps the faster parallel scheduler; -race builds execute
// ops one at a time (each op still uses all workers).
func backendOptions(opts string) string {
	if !raceDetector || strings.Contains(opts, "ops_") {
		return opts
	}
	if opts == "" {
		return "ops_sequential"
	}
	return opts + ",ops_sequential"
}

// Batch is a set of examples: for each of the model's inputs, in order, a
// []float32 or []int32 holding Size examples back to back.
type Batch struct {
	Size   int
	Inputs []any
}

// Dataset is an indexable in-memory set of examples.
type Dataset interface {
	Len() int
	// Batch gathers the examples at the given indices.
	Batch(indices []int) (Batch, error)
}

// StepStats describes one ForwardBackward or Step.
type StepStats struct {
	BatchSize int
	// Loss is the mean per-example loss of the batch (before the update).
	Loss float64
	// ClipFraction is the fraction of examples whose gradient norm
	// exceeded MaxGradNorm (0 with DP off).
	ClipFraction float64
}

// EvalStats is the result of Evaluate.
type EvalStats struct {
	Examples int
	Loss     float64
	Accuracy float64
}

// NamedParam is one parameter tensor, for checkpoints.
type NamedParam struct {
	Name  string
	Shape []int
	Data  []float32
}

// ErrClosed is returned by an engine after Close.
var ErrClosed = errors.New("dpsgd: engine closed")

// Option configures New.
type Option func(*Engine)

// WithBackend makes the engine use b instead of SharedBackend.
func WithBackend(b backends.Backend) Option { return func(e *Engine) { e.backend = b } }

// WithLogger sets the engine's logger.
func WithLogger(l *slog.Logger) Option { return func(e *Engine) { e.log = l } }

// Engine trains one model with DP-SGD (or plain SGD) and AdamW. It is not
// safe for concurrent use; a job queue runs one operation at a time per
// engine.
type Engine struct {
	cfg           Config
	model         Model
	specs         []ParamSpec
	backend       backends.Backend
	log           *slog.Logger
	deterministic bool

	params [][]float32
	adam   adamState

	// Accumulated since the last OptimStep; scratch holds one
	// ForwardBackward's sum until all its pieces have succeeded.
	accGrad  [][]float64
	accCount int
	scratch  [][]float64

	steps      uint64 // optimizer steps taken
	rngCounter uint64 // deterministic mode: generators handed out

	execPlain, execClipped, execPerExample, execEval *graph.Exec
}

// New creates an engine for model with freshly initialised parameters.
func New(cfg Config, model Model, opts ...Option) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BucketMultiple == 0 {
		cfg.BucketMultiple = 32
	}
	e := &Engine{cfg: cfg, model: model, specs: model.Params(), log: slog.Default()}
	for _, o := range opts {
		o(e)
	}
	if e.backend == nil {
		b, err := SharedBackend()
		if err != nil {
			return nil, err
		}
		e.backend = b
	}
	e.log = e.log.With("subsystem", "dpsgd", "model", model.Name())
	e.deterministic = deterministicFromEnv()
	if e.deterministic {
		e.log.Warn("TG_DETERMINISTIC=true: DP noise and sampling are derived from the configured seed; "+
			"anyone who knows the seed can remove the noise, so the run has NO differential-privacy guarantee. "+
			"Use only for tests and debugging.", "seed", cfg.Seed)
	}
	seen := map[string]bool{}
	for _, s := range e.specs {
		if seen[s.Name] {
			return nil, fmt.Errorf("model %s: duplicate parameter %q", model.Name(), s.Name)
		}
		seen[s.Name] = true
	}
	initRNG := newRNG(true, cfg.Seed, streamInit, 0)
	e.params = make([][]float32, len(e.specs))
	for i, s := range e.specs {
		e.params[i] = make([]float32, numElements(s.Shape))
		if s.Init != nil {
			s.Init(e.params[i], initRNG)
		}
	}
	e.adam = newAdamState(e.params)
	e.resetAccumulator()

	var err error
	if e.execPlain, err = e.newTrainExec(gradPlain); err != nil {
		return nil, err
	}
	if e.execClipped, err = e.newTrainExec(gradClipped); err != nil {
		return nil, err
	}
	if e.execPerExample, err = e.newTrainExec(gradPerExample); err != nil {
		return nil, err
	}
	e.execEval, err = graph.NewExec(e.backend, func(ins []*graph.Node) []*graph.Node {
		return buildEval(e.model, e.specs, ins[len(e.specs)].Shape().Dimensions[0], ins)
	})
	if err != nil {
		return nil, fmt.Errorf("create eval graph: %w", err)
	}
	for _, x := range []*graph.Exec{e.execPlain, e.execClipped, e.execPerExample, e.execEval} {
		x.SetMaxCache(64)
	}
	return e, nil
}

func (e *Engine) newTrainExec(mode gradMode) (*graph.Exec, error) {
	x, err := graph.NewExec(e.backend, func(ins []*graph.Node) []*graph.Node {
		return buildTrain(e.model, e.specs, ins[len(e.specs)].Shape().Dimensions[0], mode, e.cfg.PerExample, ins)
	})
	if err != nil {
		return nil, fmt.Errorf("create training graph: %w", err)
	}
	return x.WithName(fmt.Sprintf("%s-train-%d", e.model.Name(), mode)), nil
}

// Close releases the compiled graphs; the engine is unusable afterwards.
// The backend (usually shared) stays open.
func (e *Engine) Close() {
	for _, x := range []*graph.Exec{e.execPlain, e.execClipped, e.execPerExample, e.execEval} {
		if x != nil {
			x.Finalize()
		}
	}
	e.execPlain, e.execClipped, e.execPerExample, e.execEval = nil, nil, nil, nil
}

// Config returns the engine's configuration.
func (e *Engine) Config() Config { return e.cfg }

// Steps returns the number of optimizer steps taken.
func (e *Engine) Steps() uint64 { return e.steps }

// Deterministic reports whether TG_DETERMINISTIC=true was in effect at New.
func (e *Engine) Deterministic() bool { return e.deterministic }

// rng hands out a generator for one use (see newRNG).
func (e *Engine) rng(stream string) *rand.Rand {
	e.rngCounter++
	return newRNG(e.deterministic, e.cfg.Seed, stream, e.rngCounter)
}

// SampleIndices draws a Poisson sample of [0, n) at the configured rate.
func (e *Engine) SampleIndices(n int) []int {
	return PoissonSample(e.rng(streamSample), n, e.cfg.SampleRate)
}

// SampleBatch draws a Poisson sample of ds at the configured rate. Its size
// varies from step to step, as the accountant assumes.
func (e *Engine) SampleBatch(ds Dataset) (Batch, error) {
	if e.cfg.Enabled && ds.Len() != e.cfg.DatasetSize {
		return Batch{}, fmt.Errorf("dataset has %d examples, config says %d", ds.Len(), e.cfg.DatasetSize)
	}
	return ds.Batch(e.SampleIndices(ds.Len()))
}

// Step is ForwardBackward then OptimStep on one batch.
func (e *Engine) Step(b Batch) (StepStats, error) {
	st, err := e.ForwardBackward(b)
	if err != nil {
		return st, err
	}
	return st, e.OptimStep()
}

// ForwardBackward computes the (clipped, with DP) gradient sum of the batch
// and adds it to the accumulator; OptimStep consumes it. A logical batch
// may arrive in several calls: noise is added once, in OptimStep. On error
// the accumulator is unchanged.
func (e *Engine) ForwardBackward(b Batch) (StepStats, error) {
	if err := e.checkBatch(b); err != nil {
		return StepStats{}, err
	}
	st := StepStats{BatchSize: b.Size}
	if b.Size == 0 {
		return st, nil
	}
	exec := e.execPlain
	if e.cfg.Enabled {
		exec = e.execClipped
	}
	for _, s := range e.scratch {
		clear(s)
	}
	var lossSum, clipped float64
	for _, piece := range e.split(b) {
		outs, err := e.run(exec, piece)
		if err != nil {
			return StepStats{}, err
		}
		lossSum += scalar(outs[outLossSum])
		clipped += scalar(outs[outClipped])
		for i := range e.specs {
			err := tensors.ConstFlatData(outs[outGrads+i], func(g []float32) {
				sum := e.scratch[i]
				for j, v := range g {
					sum[j] += float64(v)
				}
			})
			if err != nil {
				finalize(outs)
				return StepStats{}, fmt.Errorf("read gradient %s: %w", e.specs[i].Name, err)
			}
		}
		finalize(outs)
	}
	for i, sum := range e.scratch {
		acc := e.accGrad[i]
		for j, v := range sum {
			acc[j] += v
		}
	}
	e.accCount += b.Size
	st.Loss = lossSum / float64(b.Size)
	st.ClipFraction = clipped / float64(b.Size)
	return st, nil
}

// OptimStep turns the accumulated sum into the update direction and
// applies AdamW. With DP: adds N(0, σ²C²) to every coordinate of the
// clipped sum, divides by the expected batch size q·N, and always takes
// the step, also for an empty sample. Without DP: the mean over the
// accumulated examples (no step if there were none).
func (e *Engine) OptimStep() error {
	defer e.resetAccumulator()
	if !e.privatizeGradient() {
		return nil
	}
	e.steps++
	e.adam.update(e.params, e.accGrad, e.cfg)
	return nil
}

// privatizeGradient turns the accumulated sum, in place, into the update
// direction; false means there is nothing to apply.
func (e *Engine) privatizeGradient() bool {
	var scale float64
	if e.cfg.Enabled {
		std := e.cfg.NoiseMultiplier * e.cfg.MaxGradNorm
		if std > 0 {
			rng := e.rng(streamNoise)
			for _, acc := range e.accGrad {
				for j := range acc {
					acc[j] += std * rng.NormFloat64()
				}
			}
		}
		scale = 1 / e.cfg.ExpectedBatchSize()
	} else {
		if e.accCount == 0 {
			return false
		}
		scale = 1 / float64(e.accCount)
	}
	for _, acc := range e.accGrad {
		for j := range acc {
			acc[j] *= scale
		}
	}
	return true
}

func (e *Engine) resetAccumulator() {
	if e.accGrad == nil {
		e.accGrad = make([][]float64, len(e.params))
		e.scratch = make([][]float64, len(e.params))
		for i, p := range e.params {
			e.accGrad[i] = make([]float64, len(p))
			e.scratch[i] = make([]float64, len(p))
		}
	} else {
		for _, a := range e.accGrad {
			clear(a)
		}
	}
	e.accCount = 0
}

// PerExampleGradients returns, for each parameter, the unclipped gradients
// of the batch's examples ([Size, shape...] flattened), and each example's
// squared norm over all parameters. For tests and diagnostics.
func (e *Engine) PerExampleGradients(b Batch) ([][]float32, []float32, error) {
	if err := e.checkBatch(b); err != nil {
		return nil, nil, err
	}
	outs, err := e.run(e.execPerExample, b)
	if err != nil {
		return nil, nil, err
	}
	defer finalize(outs)
	normSq, err := tensors.CopyFlatData[float32](outs[outClipped])
	if err != nil {
		return nil, nil, err
	}
	grads := make([][]float32, len(e.specs))
	for i := range e.specs {
		g, err := tensors.CopyFlatData[float32](outs[outGrads+i])
		if err != nil {
			return nil, nil, err
		}
		n := numElements(e.specs[i].Shape)
		grads[i] = g[:b.Size*n] // drop the padding rows
	}
	return grads, normSq[:b.Size], nil
}

// Evaluate returns the mean loss and accuracy over ds, batchSize examples
// per graph call.
func (e *Engine) Evaluate(ds Dataset, batchSize int) (EvalStats, error) {
	if batchSize <= 0 {
		return EvalStats{}, errors.New("evaluate: batch size must be > 0")
	}
	var st EvalStats
	var lossSum, correct float64
	n := ds.Len()
	idx := make([]int, 0, batchSize)
	for start := 0; start < n; start += batchSize {
		idx = idx[:0]
		for i := start; i < min(n, start+batchSize); i++ {
			idx = append(idx, i)
		}
		b, err := ds.Batch(idx)
		if err != nil {
			return EvalStats{}, err
		}
		if err := e.checkBatch(b); err != nil {
			return EvalStats{}, err
		}
		outs, err := e.runPadded(e.execEval, b, batchSize)
		if err != nil {
			return EvalStats{}, err
		}
		lossSum += scalar(outs[0])
		correct += scalar(outs[1])
		finalize(outs)
		st.Examples += b.Size
	}
	if st.Examples > 0 {
		st.Loss = lossSum / float64(st.Examples)
		st.Accuracy = correct / float64(st.Examples)
	}
	return st, nil
}

// split cuts b into pieces of at most MaxPhysicalBatch examples.
func (e *Engine) split(b Batch) []Batch {
	max := e.cfg.MaxPhysicalBatch
	if max == 0 || b.Size <= max {
		return []Batch{b}
	}
	var pieces []Batch
	for start := 0; start < b.Size; start += max {
		end := min(b.Size, start+max)
		p := Batch{Size: end - start, Inputs: make([]any, len(b.Inputs))}
		for i, in := range b.Inputs {
			per := numElements(e.model.Inputs()[i].Shape)
			switch v := in.(type) {
			case []float32:
				p.Inputs[i] = v[start*per : end*per]
			case []int32:
				p.Inputs[i] = v[start*per : end*per]
			}
		}
		pieces = append(pieces, p)
	}
	return pieces
}

func (e *Engine) checkBatch(b Batch) error {
	specs := e.model.Inputs()
	if len(b.Inputs) != len(specs) {
		return fmt.Errorf("batch has %d inputs, model %s wants %d", len(b.Inputs), e.model.Name(), len(specs))
	}
	if b.Size < 0 {
		return fmt.Errorf("batch size %d < 0", b.Size)
	}
	for i, s := range specs {
		want := b.Size * numElements(s.Shape)
		var got int
		switch v := b.Inputs[i].(type) {
		case []float32:
			if s.Kind != Float32 {
				return fmt.Errorf("input %s: got float32, want int32", s.Name)
			}
			got = len(v)
		case []int32:
			if s.Kind != Int32 {
				return fmt.Errorf("input %s: got int32, want float32", s.Name)
			}
			got = len(v)
		default:
			return fmt.Errorf("input %s: unsupported type %T", s.Name, v)
		}
		if got != want {
			return fmt.Errorf("input %s: %d values for %d examples of shape %v", s.Name, got, b.Size, s.Shape)
		}
	}
	return nil
}

// bucket is the padded size for n examples.
func (e *Engine) bucket(n int) int {
	m := e.cfg.BucketMultiple
	return (n + m - 1) / m * m
}

func (e *Engine) run(exec *graph.Exec, b Batch) ([]*tensors.Tensor, error) {
	return e.runPadded(exec, b, e.bucket(b.Size))
}

// runPadded executes exec on b padded to size rows (weight 0 on padding).
// The clipping graph also gets C as a scalar, so changing it needs no
// recompilation.
func (e *Engine) runPadded(exec *graph.Exec, b Batch, size int) (outs []*tensors.Tensor, err error) {
	if exec == nil {
		return nil, ErrClosed
	}
	specs := e.model.Inputs()
	// The tensors copy the Go slices; they are released after the run.
	inputs := make([]*tensors.Tensor, 0, len(e.specs)+len(specs)+1)
	for i, s := range e.specs {
		inputs = append(inputs, tensors.FromFlatDataAndDimensions(e.params[i], s.Shape...))
	}
	for i, s := range specs {
		dims := append([]int{size}, s.Shape...)
		switch v := b.Inputs[i].(type) {
		case []float32:
			inputs = append(inputs, tensors.FromFlatDataAndDimensions(padded(v, size*numElements(s.Shape)), dims...))
		case []int32:
			inputs = append(inputs, tensors.FromFlatDataAndDimensions(padded(v, size*numElements(s.Shape)), dims...))
		}
	}
	w := make([]float32, size)
	for i := range b.Size {
		w[i] = 1
	}
	inputs = append(inputs, tensors.FromFlatDataAndDimensions(w, size))
	defer finalize(inputs)
	args := make([]any, 0, len(inputs)+1)
	for _, t := range inputs {
		args = append(args, t)
	}
	if exec == e.execClipped {
		args = append(args, float32(e.cfg.MaxGradNorm))
	}
	// GoMLX reports graph-construction errors by panicking.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("run %s: %v", exec.Name(), r)
		}
	}()
	outs, err = exec.Exec(args...)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", exec.Name(), err)
	}
	return outs, nil
}

// Params returns a copy of the parameters, for checkpoints.
func (e *Engine) Params() []NamedParam {
	out := make([]NamedParam, len(e.specs))
	for i, s := range e.specs {
		out[i] = NamedParam{Name: s.Name, Shape: slices.Clone(s.Shape), Data: slices.Clone(e.params[i])}
	}
	return out
}

// SetParams replaces the parameters (all of them, matched by name and
// shape) and resets the optimizer's moments.
func (e *Engine) SetParams(ps []NamedParam) error {
	if err := e.setNamed(e.params, ps); err != nil {
		return fmt.Errorf("set params: %w", err)
	}
	e.adam = newAdamState(e.params)
	e.resetAccumulator()
	return nil
}

// Checkpoint is the engine's whole training state: parameters, AdamW
// moments and step counts. Pending ForwardBackward sums are not included.
type Checkpoint struct {
	Params   []NamedParam
	AdamM    []NamedParam
	AdamV    []NamedParam
	AdamStep int
	Steps    uint64
}

// Checkpoint returns a copy of the training state.
func (e *Engine) Checkpoint() Checkpoint {
	named := func(data [][]float32) []NamedParam {
		out := make([]NamedParam, len(e.specs))
		for i, s := range e.specs {
			out[i] = NamedParam{Name: s.Name, Shape: slices.Clone(s.Shape), Data: slices.Clone(data[i])}
		}
		return out
	}
	return Checkpoint{
		Params: named(e.params), AdamM: named(e.adam.m), AdamV: named(e.adam.v),
		AdamStep: e.adam.t, Steps: e.steps,
	}
}

// Restore replaces the training state with c, all or nothing.
func (e *Engine) Restore(c Checkpoint) error {
	fresh := newAdamState(e.params)
	params := make([][]float32, len(e.params))
	for i := range params {
		params[i] = make([]float32, len(e.params[i]))
	}
	if err := e.setNamed(params, c.Params); err != nil {
		return fmt.Errorf("restore params: %w", err)
	}
	if err := e.setNamed(fresh.m, c.AdamM); err != nil {
		return fmt.Errorf("restore adam m: %w", err)
	}
	if err := e.setNamed(fresh.v, c.AdamV); err != nil {
		return fmt.Errorf("restore adam v: %w", err)
	}
	if c.AdamStep < 0 {
		return fmt.Errorf("restore: adam step %d < 0", c.AdamStep)
	}
	for _, v := range fresh.v {
		for _, x := range v {
			if x < 0 {
				return errors.New("restore: negative second moment")
			}
		}
	}
	fresh.t = c.AdamStep
	e.params, e.adam, e.steps = params, fresh, c.Steps
	e.resetAccumulator()
	return nil
}

// setNamed copies ps into dst (one slice per spec), checking that ps holds
// exactly the model's tensors with the right shapes and finite values.
func (e *Engine) setNamed(dst [][]float32, ps []NamedParam) error {
	byName := make(map[string]NamedParam, len(ps))
	for _, p := range ps {
		byName[p.Name] = p
	}
	if len(byName) != len(e.specs) || len(ps) != len(e.specs) {
		return fmt.Errorf("got %d tensors, model %s has %d", len(ps), e.model.Name(), len(e.specs))
	}
	for _, s := range e.specs {
		p, ok := byName[s.Name]
		if !ok {
			return fmt.Errorf("missing %q", s.Name)
		}
		if !slices.Equal(p.Shape, s.Shape) || len(p.Data) != numElements(s.Shape) {
			return fmt.Errorf("%q has shape %v (%d values), want %v", s.Name, p.Shape, len(p.Data), s.Shape)
		}
		for _, v := range p.Data {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("%q holds a non-finite value", s.Name)
			}
		}
	}
	for i, s := range e.specs {
		copy(dst[i], byName[s.Name].Data)
	}
	return nil
}

func padded[T float32 | int32](v []T, n int) []T {
	if len(v) == n {
		return v
	}
	out := make([]T, n)
	copy(out, v)
	return out
}

func scalar(t *tensors.Tensor) float64 {
	v, err := tensors.CopyFlatData[float32](t)
	if err != nil || len(v) == 0 {
		return math.NaN()
	}
	return float64(v[0])
}

func finalize(ts []*tensors.Tensor) {
	for _, t := range ts {
		_ = t.FinalizeAll()
	}
}

func numElements(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}
