package lm

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/trainer/internal/dpsgd"
)

// PretrainConfig is the optimiser of a full-parameter, non-private
// training run (the base model's pretraining): AdamW with linear warm-up
// then cosine decay to MinLR at TotalSteps, and the batch gradient clipped
// to ClipNorm (0: no clipping).
type PretrainConfig struct {
	LR, MinLR         float64
	Beta1, Beta2, Eps float64
	WeightDecay       float64 // on projection matrices only
	WarmupSteps       int
	TotalSteps        int
	ClipNorm          float64
}

// DefaultPretrainConfig is the schedule hack/pretrain-lm uses.
func DefaultPretrainConfig(totalSteps int) PretrainConfig {
	return PretrainConfig{
		LR: 3e-3, MinLR: 3e-4, Beta1: 0.9, Beta2: 0.98, Eps: 1e-8,
		WeightDecay: 0.01, WarmupSteps: min(200, totalSteps/10), TotalSteps: totalSteps, ClipNorm: 1,
	}
}

// Validate reports the first setting that cannot work.
func (c PretrainConfig) Validate() error {
	switch {
	case !(c.LR > 0) || math.IsInf(c.LR, 0) || c.MinLR < 0 || c.MinLR > c.LR:
		return fmt.Errorf("pretrain: learning rates %g → %g", c.LR, c.MinLR)
	case !(c.Beta1 >= 0 && c.Beta1 < 1 && c.Beta2 >= 0 && c.Beta2 < 1) || !(c.Eps > 0):
		return fmt.Errorf("pretrain: adam betas (%g, %g), eps %g", c.Beta1, c.Beta2, c.Eps)
	case c.WeightDecay < 0 || c.ClipNorm < 0 || c.WarmupSteps < 0 || c.TotalSteps <= 0:
		return errors.New("pretrain: negative weight decay, clip norm or warm-up, or no steps")
	}
	return nil
}

// lrAt is the learning rate of step (0-based) when the run is a fraction
// progress of the way through (step/TotalSteps for a run of fixed length):
// linear warm-up over WarmupSteps, then cosine decay from LR to MinLR as
// progress goes from the end of the warm-up to 1.
func (c PretrainConfig) lrAt(step int, progress float64) float64 {
	if step < c.WarmupSteps {
		return c.LR * float64(step+1) / float64(c.WarmupSteps)
	}
	start := float64(c.WarmupSteps) / float64(max(1, c.TotalSteps))
	p := min(1, max(0, (progress-start)/max(1e-9, 1-start)))
	return c.MinLR + (c.LR-c.MinLR)*0.5*(1+math.Cos(math.Pi*p))
}

// Pretrainer trains every weight of an LM without differential privacy:
// it is how the shipped base model is made, not something a tenant's data
// goes through. The loss is the mean cross-entropy over all weighted
// positions of a batch. Not safe for concurrent use.
type Pretrainer struct {
	cfg     PretrainConfig
	model   onnxmodel.LM // its slices are the live parameters
	params  []onnxmodel.LMParam
	decay   []bool
	m, v    [][]float32
	step    int
	backend backends.Backend
	exec    *graph.Exec // weights, tokens, targets, weights → loss sum, weight sum, grads…
	eval    *graph.Exec // weights, tokens, targets, weights → loss sum, weight sum
}

// NewPretrainer starts from init (copied).
func NewPretrainer(init onnxmodel.LM, cfg PretrainConfig) (*Pretrainer, error) {
	if err := init.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	backend, err := dpsgd.SharedBackend()
	if err != nil {
		return nil, err
	}
	p := &Pretrainer{cfg: cfg, model: CloneLM(init), backend: backend}
	p.params = p.model.Params()
	for _, q := range p.params {
		p.m = append(p.m, make([]float32, len(q.Data)))
		p.v = append(p.v, make([]float32, len(q.Data)))
		s := q.Name[strings.LastIndexByte(q.Name, '.')+1:]
		p.decay = append(p.decay, s == "wq" || s == "wk" || s == "wv" || s == "wo" || s == "w1" || s == "w2")
	}
	nw := len(p.params)
	lmCfg := init.Config
	build := func(withGrads bool) func([]*graph.Node) []*graph.Node {
		return func(ins []*graph.Node) []*graph.Node {
			d := graph.DotGeneral
			if withGrads {
				d = dot
			}
			n := weightsAsParams(lmCfg, ins[:nw], d)
			ce, _ := tokenLoss(n.logits(n.hidden(ins[nw])), ins[nw+1])
			w := ins[nw+2]
			lossSum := graph.ReduceAllSum(graph.Mul(ce, w))
			outs := []*graph.Node{lossSum, graph.ReduceAllSum(w)}
			if withGrads {
				outs = append(outs, graph.Gradient(lossSum, ins[:nw]...)...)
			}
			return outs
		}
	}
	if p.exec, err = graph.NewExec(backend, build(true)); err != nil {
		return nil, fmt.Errorf("pretrain: compile training graph: %w", err)
	}
	if p.eval, err = graph.NewExec(backend, build(false)); err != nil {
		return nil, fmt.Errorf("pretrain: compile eval graph: %w", err)
	}
	return p, nil
}

// Steps is the number of optimizer steps taken.
func (p *Pretrainer) Steps() int { return p.step }

// Model returns a copy of the current weights.
func (p *Pretrainer) Model() onnxmodel.LM { return CloneLM(p.model) }

// Step takes one AdamW step on the batch and returns its mean loss (nats
// per weighted position) before the update.
func (p *Pretrainer) Step(examples []Example) (float64, error) {
	return p.StepAt(examples, float64(p.step)/float64(p.cfg.TotalSteps))
}

// StepAt is Step with the learning-rate schedule's progress (0…1) given by
// the caller, e.g. the fraction of a time budget used, so that a run cut
// short by time still decays its learning rate fully.
func (p *Pretrainer) StepAt(examples []Example, progress float64) (float64, error) {
	outs, err := p.run(p.exec, examples)
	if err != nil {
		return 0, err
	}
	defer finalizeAll(outs)
	lossSum, wSum := scalarOf(outs[0]), scalarOf(outs[1])
	if wSum <= 0 {
		return 0, fmt.Errorf("%w: batch has no weighted position", ErrInvalidInput)
	}
	grads := make([][]float32, len(p.params))
	var normSq float64
	for i := range p.params {
		grads[i] = tensors.MustCopyFlatData[float32](outs[2+i])
		for _, g := range grads[i] {
			normSq += float64(g) * float64(g)
		}
	}
	// The gradient of the mean, clipped as a whole.
	scale := 1 / wSum
	if norm := math.Sqrt(normSq) * scale; p.cfg.ClipNorm > 0 && norm > p.cfg.ClipNorm {
		scale *= p.cfg.ClipNorm / norm
	}
	if math.IsNaN(normSq) || math.IsInf(normSq, 0) {
		return 0, errors.New("pretrain: gradient is not finite")
	}
	p.adamW(grads, scale, progress)
	return lossSum / wSum, nil
}

// adamW applies one AdamW step with the gradients times scale.
func (p *Pretrainer) adamW(grads [][]float32, scale, progress float64) {
	c := p.cfg
	lr := c.lrAt(p.step, progress)
	p.step++
	c1 := 1 - math.Pow(c.Beta1, float64(p.step))
	c2 := 1 - math.Pow(c.Beta2, float64(p.step))
	for i, q := range p.params {
		decay := 1.0
		if p.decay[i] {
			decay = 1 - lr*c.WeightDecay
		}
		m, v := p.m[i], p.v[i]
		for j, g32 := range grads[i] {
			g := float64(g32) * scale
			mj := c.Beta1*float64(m[j]) + (1-c.Beta1)*g
			vj := c.Beta2*float64(v[j]) + (1-c.Beta2)*g*g
			m[j], v[j] = float32(mj), float32(vj)
			q.Data[j] = float32(float64(q.Data[j])*decay - lr*(mj/c1)/(math.Sqrt(vj/c2)+c.Eps))
		}
	}
}

// Evaluate returns the mean loss over the examples' weighted positions,
// batchSize examples per graph call.
func (p *Pretrainer) Evaluate(examples []Example, batchSize int) (float64, error) {
	var lossSum, wSum float64
	for start := 0; start < len(examples); start += batchSize {
		outs, err := p.run(p.eval, examples[start:min(len(examples), start+batchSize)])
		if err != nil {
			return 0, err
		}
		lossSum += scalarOf(outs[0])
		wSum += scalarOf(outs[1])
		finalizeAll(outs)
	}
	if wSum <= 0 {
		return 0, fmt.Errorf("%w: no weighted position to evaluate", ErrInvalidInput)
	}
	return lossSum / wSum, nil
}

func (p *Pretrainer) run(exec *graph.Exec, examples []Example) ([]*tensors.Tensor, error) {
	if len(examples) == 0 {
		return nil, fmt.Errorf("%w: empty batch", ErrInvalidInput)
	}
	b, err := Batch(p.model.Config, examples)
	if err != nil {
		return nil, err
	}
	seq := p.model.Config.Context
	args := make([]any, 0, len(p.params)+3)
	for _, q := range p.params {
		args = append(args, tensors.FromFlatDataAndDimensions(q.Data, q.Shape...))
	}
	args = append(args,
		tensors.FromFlatDataAndDimensions(b.Inputs[0].([]int32), b.Size, seq),
		tensors.FromFlatDataAndDimensions(b.Inputs[1].([]int32), b.Size, seq),
		tensors.FromFlatDataAndDimensions(b.Inputs[2].([]float32), b.Size, seq))
	outs, err := exec.Exec(args...)
	if err != nil {
		return nil, fmt.Errorf("pretrain: run graph: %w", err)
	}
	return outs, nil
}

func scalarOf(t *tensors.Tensor) float64 {
	v := tensors.MustCopyFlatData[float32](t)
	return float64(v[0])
}

// CloneLM returns a deep copy of m.
func CloneLM(m onnxmodel.LM) onnxmodel.LM {
	c := onnxmodel.LM{Config: m.Config, Blocks: make([]onnxmodel.LMBlock, len(m.Blocks))}
	c.TokenEmbedding = slices.Clone(m.TokenEmbedding)
	c.PositionEmbedding = slices.Clone(m.PositionEmbedding)
	c.FinalNormScale = slices.Clone(m.FinalNormScale)
	c.FinalNormBias = slices.Clone(m.FinalNormBias)
	for i, b := range m.Blocks {
		c.Blocks[i] = onnxmodel.LMBlock{
			Norm1Scale: slices.Clone(b.Norm1Scale), Norm1Bias: slices.Clone(b.Norm1Bias),
			WQ: slices.Clone(b.WQ), WK: slices.Clone(b.WK), WV: slices.Clone(b.WV), WO: slices.Clone(b.WO),
			BQ: slices.Clone(b.BQ), BK: slices.Clone(b.BK), BV: slices.Clone(b.BV), BO: slices.Clone(b.BO),
			Norm2Scale: slices.Clone(b.Norm2Scale), Norm2Bias: slices.Clone(b.Norm2Bias),
			W1: slices.Clone(b.W1), B1: slices.Clone(b.B1), W2: slices.Clone(b.W2), B2: slices.Clone(b.B2),
		}
	}
	return c
}
