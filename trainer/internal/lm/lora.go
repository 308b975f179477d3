package lm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/trainer/internal/dpsgd"
)

// The projections LoRA can adapt, named by their suffix in the onnxmodel
// layout (blocks.<l>.<target>).
var loraTargets = []string{"attn.wq", "attn.wk", "attn.wv", "attn.wo", "mlp.w1", "mlp.w2"}

// DefaultLoRATargets are the query and value projections of every block,
// the choice of Hu et al. 2021 (LoRA, §7.1) for a fixed parameter budget.
func DefaultLoRATargets() []string { return []string{"attn.wq", "attn.wv"} }

// Reduction is how a sequence's per-position losses become the example's
// loss, the quantity whose gradient DP-SGD clips.
type Reduction int

const (
	// ReduceMean: Σ w_i·ℓ_i / Σ w_i (0 for an example with no weight). An
	// example's gradient does not grow with its length, so the clipping
	// norm means the same for short and long examples.
	ReduceMean Reduction = iota
	// ReduceSum: Σ w_i·ℓ_i, Tinker's cross_entropy loss.
	ReduceSum
)

// LoRAConfig describes the adapters of a LoRA fine-tune.
type LoRAConfig struct {
	// Rank r of every adapter: W + (Alpha/r)·A·B with A [in, r], B [r, out].
	Rank int
	// Alpha scales the adapters' product (Alpha/Rank); 0 means 2·Rank.
	Alpha float64
	// Targets lists the adapted projections of every block, from
	// "attn.wq", "attn.wk", "attn.wv", "attn.wo", "mlp.w1", "mlp.w2";
	// nil means DefaultLoRATargets.
	Targets []string
	// SeqLen is the padded length of the training examples, at most the
	// base model's context; 0 means the context. Shorter is cheaper.
	SeqLen int
	// Reduction of the per-position losses; ReduceMean by default.
	Reduction Reduction
}

// DefaultLoRAConfig is rank 8, α 16, on the query and value projections.
func DefaultLoRAConfig() LoRAConfig { return LoRAConfig{Rank: 8, Alpha: 16} }

func (c LoRAConfig) withDefaults(base onnxmodel.LMConfig) LoRAConfig {
	if c.Alpha == 0 {
		c.Alpha = 2 * float64(c.Rank)
	}
	if c.Targets == nil {
		c.Targets = DefaultLoRATargets()
	}
	if c.SeqLen == 0 {
		c.SeqLen = base.Context
	}
	return c
}

// Validate checks the configuration against a base model's shape.
func (c LoRAConfig) Validate(base onnxmodel.LMConfig) error {
	c = c.withDefaults(base)
	if c.Rank < 1 || c.Rank > min(base.Dim, base.FF) {
		return fmt.Errorf("lora: rank %d, want 1..%d", c.Rank, min(base.Dim, base.FF))
	}
	if !(c.Alpha > 0) || math.IsInf(c.Alpha, 0) {
		return fmt.Errorf("lora: alpha %v must be > 0", c.Alpha)
	}
	if len(c.Targets) == 0 {
		return fmt.Errorf("lora: no target projections")
	}
	for i, t := range c.Targets {
		if !slices.Contains(loraTargets, t) {
			return fmt.Errorf("lora: unknown target %q (want one of %s)", t, strings.Join(loraTargets, ", "))
		}
		if slices.Contains(c.Targets[:i], t) {
			return fmt.Errorf("lora: target %q listed twice", t)
		}
	}
	if c.SeqLen < 1 || c.SeqLen > base.Context {
		return fmt.Errorf("lora: sequence length %d, want 1..%d", c.SeqLen, base.Context)
	}
	if c.Reduction != ReduceMean && c.Reduction != ReduceSum {
		return fmt.Errorf("lora: unknown reduction %d", c.Reduction)
	}
	return nil
}

// Scale is Alpha/Rank, the factor on A·B.
func (c LoRAConfig) Scale() float64 { return c.Alpha / float64(c.Rank) }

// LoRA is the LM with frozen base weights and trainable low-rank adapters:
// a dpsgd.Model whose only parameters are the adapters, so they are all
// that DP-SGD clips, noises and updates. The base weights enter every graph
// as constants and never change.
//
// Inputs per example: "tokens" [SeqLen] int32, "targets" [SeqLen] int32
// and "weights" [SeqLen] float32 (see Example and Batch). Parameters, for
// every block l and target t: "blocks.<l>.<t>.lora_a" [in, r], drawn from
// U(±1/√in) (PEFT's default), and "blocks.<l>.<t>.lora_b" [r, out], zero,
// so training starts from the base model exactly.
type LoRA struct {
	base onnxmodel.LM
	cfg  LoRAConfig
}

var _ dpsgd.Model = (*LoRA)(nil)

// NewLoRA adapts base (which it copies; it must be valid).
func NewLoRA(base onnxmodel.LM, cfg LoRAConfig) (*LoRA, error) {
	if err := base.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(base.Config); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults(base.Config)
	cfg.Targets = slices.Clone(cfg.Targets)
	return &LoRA{base: CloneLM(base), cfg: cfg}, nil
}

// Config returns the adapters' configuration, defaults filled in.
func (m *LoRA) Config() LoRAConfig {
	c := m.cfg
	c.Targets = slices.Clone(c.Targets)
	return c
}

// Base returns a copy of the frozen base weights.
func (m *LoRA) Base() onnxmodel.LM { return CloneLM(m.base) }

// Name identifies the model in logs.
func (m *LoRA) Name() string { return "tg-lm-lora" }

// Inputs are the tokens, the targets and the per-position loss weights.
func (m *LoRA) Inputs() []dpsgd.InputSpec {
	s := []int{m.cfg.SeqLen}
	return []dpsgd.InputSpec{
		{Name: "tokens", Kind: dpsgd.Int32, Shape: s},
		{Name: "targets", Kind: dpsgd.Int32, Shape: s},
		{Name: "weights", Kind: dpsgd.Float32, Shape: s},
	}
}

// adapted is one adapted projection: its onnxmodel weight name and shape.
type adapted struct {
	weight  string
	in, out int
}

func (m *LoRA) adapted() []adapted {
	shapes := map[string][2]int{}
	for _, p := range paramLayout(m.base.Config) {
		if len(p.Shape) == 2 {
			shapes[p.Name] = [2]int{p.Shape[0], p.Shape[1]}
		}
	}
	var out []adapted
	for l := range m.base.Config.Layers {
		for _, t := range m.cfg.Targets {
			name := "blocks." + strconv.Itoa(l) + "." + t
			s := shapes[name]
			out = append(out, adapted{weight: name, in: s[0], out: s[1]})
		}
	}
	return out
}

// Params are the adapters, A then B for each adapted projection, blocks in
// order.
func (m *LoRA) Params() []dpsgd.ParamSpec {
	var ps []dpsgd.ParamSpec
	r := m.cfg.Rank
	for _, a := range m.adapted() {
		bound := 1 / math.Sqrt(float64(a.in))
		ps = append(ps,
			dpsgd.ParamSpec{Name: a.weight + ".lora_a", Shape: []int{a.in, r}, Init: func(d []float32, rng *rand.Rand) {
				for i := range d {
					d[i] = float32((2*rng.Float64() - 1) * bound)
				}
			}},
			dpsgd.ParamSpec{Name: a.weight + ".lora_b", Shape: []int{r, a.out}}, // zero
		)
	}
	return ps
}

// Forward computes each example's loss (Reduction of the weighted
// per-position cross-entropies) and, as Correct, the weighted fraction of
// positions whose argmax is the target. The adapted projections are
// x·W + Scale·(x·A)·B, the adapters through the engine's Linear so that it
// computes their per-example gradients; everything else is a constant.
func (m *LoRA) Forward(b *dpsgd.Builder, in []*graph.Node) dpsgd.Output {
	n := m.network(b.Graph(), dot, func(x *graph.Node, name string) *graph.Node {
		return b.Linear(x, 0, []int{2}, name, "")
	})
	loss, acc := exampleLoss(n, in[0], in[1], in[2], m.cfg.Reduction)
	return dpsgd.Output{Loss: loss, Correct: acc}
}

// network is the LM with the base weights as constants of g and the
// adapters applied through adapter(x, adapter name), which computes x·A
// or u·B: Builder.Linear in training graphs, a plain product in tests.
func (m *LoRA) network(g *graph.Graph, d dotFunc, adapter func(x *graph.Node, name string) *graph.Node) network {
	consts := map[string]*graph.Node{}
	data := map[string]onnxmodel.LMParam{}
	for _, p := range m.base.Params() {
		data[p.Name] = p
	}
	adapted := map[string]bool{}
	for _, a := range m.adapted() {
		adapted[a.weight] = true
	}
	n := network{cfg: m.base.Config, dot: d}
	n.weight = func(name string) *graph.Node {
		if c, ok := consts[name]; ok {
			return c
		}
		p, ok := data[name]
		if !ok {
			panic(fmt.Errorf("lm: no weight %q", name))
		}
		c := graph.ConstTensor(g, tensors.FromFlatDataAndDimensions(p.Data, p.Shape...))
		consts[name] = c
		return c
	}
	scale := m.cfg.Scale()
	n.project = func(x *graph.Node, name string) *graph.Node {
		z := n.plainProject(x, name)
		if !adapted[name] {
			return z
		}
		u := graph.MulScalar(adapter(x, name+".lora_a"), scale)
		return graph.Add(z, adapter(u, name+".lora_b"))
	}
	return n
}

// exampleLoss is each example's loss [B] (the reduction of its weighted
// per-position cross-entropies) and the weighted fraction of its positions
// whose argmax is the target [B].
func exampleLoss(n network, tokens, targets, w *graph.Node, r Reduction) (loss, acc *graph.Node) {
	ce, correct := tokenLoss(n.logits(n.hidden(tokens)), targets)
	lossSum := graph.ReduceSum(graph.Mul(ce, w), 1)
	wSum := graph.ReduceSum(w, 1)
	// Where Σw = 0 the sums are 0; divide by 1 there instead of 0.
	denom := graph.Where(graph.GreaterThan(wSum, graph.ZerosLike(wSum)), wSum, graph.OnesLike(wSum))
	loss = lossSum
	if r == ReduceMean {
		loss = graph.Div(lossSum, denom)
	}
	return loss, graph.Div(graph.ReduceSum(graph.Mul(correct, w), 1), denom)
}

// Batch packs examples (at most SeqLen positions each) into this model's
// engine inputs.
func (m *LoRA) Batch(examples []Example) (dpsgd.Batch, error) {
	return Batch(m.inputShape(), examples)
}

// Dataset holds examples for the engine's Poisson sampling.
func (m *LoRA) Dataset(examples []Example) *Dataset {
	return &Dataset{Config: m.inputShape(), Examples: examples}
}

// inputShape is the base shape with the context cut to SeqLen: what
// examples are checked against and padded to.
func (m *LoRA) inputShape() onnxmodel.LMConfig {
	c := m.base.Config
	c.Context = m.cfg.SeqLen
	return c
}

// Merge folds trained adapters into a copy of the base weights:
// W ← W + Scale·A·B for every adapted projection (in float64, rounded
// once). The result is an ordinary LM: what onnxmodel exports and a device
// runs. adapters must be exactly this model's parameters (e.g.
// dpsgd.Engine.Params()).
func (m *LoRA) Merge(adapters []dpsgd.NamedParam) (onnxmodel.LM, error) {
	specs := m.Params()
	byName := make(map[string]dpsgd.NamedParam, len(adapters))
	for _, p := range adapters {
		byName[p.Name] = p
	}
	if len(byName) != len(specs) || len(adapters) != len(specs) {
		return onnxmodel.LM{}, fmt.Errorf("lora merge: %d tensors, the model has %d adapters", len(adapters), len(specs))
	}
	for _, s := range specs {
		p, ok := byName[s.Name]
		if !ok {
			return onnxmodel.LM{}, fmt.Errorf("lora merge: missing %q", s.Name)
		}
		if !slices.Equal(p.Shape, s.Shape) || len(p.Data) != dims(s.Shape) {
			return onnxmodel.LM{}, fmt.Errorf("lora merge: %q has shape %v, want %v", s.Name, p.Shape, s.Shape)
		}
	}
	out := CloneLM(m.base)
	weights := map[string][]float32{}
	for _, p := range out.Params() {
		weights[p.Name] = p.Data
	}
	r, scale := m.cfg.Rank, m.cfg.Scale()
	for _, a := range m.adapted() {
		A, B, W := byName[a.weight+".lora_a"].Data, byName[a.weight+".lora_b"].Data, weights[a.weight]
		for i := range a.in {
			for j := range a.out {
				var s float64
				for k := range r {
					s += float64(A[i*r+k]) * float64(B[k*a.out+j])
				}
				W[i*a.out+j] = float32(float64(W[i*a.out+j]) + scale*s)
			}
		}
	}
	if err := out.Validate(); err != nil {
		return onnxmodel.LM{}, fmt.Errorf("lora merge: %w", err)
	}
	return out, nil
}

func dims(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}
