package dpsgd

import (
	"fmt"
	"slices"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
)

// gradMode selects what the training graph computes.
type gradMode int

const (
	gradPlain gradMode = iota // Σ_b ∇ℓ_b, no per-example work
	gradClipped
	gradPerExample // the per-example gradients themselves (tests)
)

// clipStabilizer keeps C / (‖g‖ + ε) finite for zero gradients (Opacus uses
// the same constant).
const clipStabilizer = 1e-6

// clipFactor returns, for per-example squared gradient norms normSq and
// the clipping bound clip, each example's factor min(1, C / (‖g‖ + ε)) and
// how many of the examples sent (weights w) were clipped (‖g‖ > C).
func clipFactor(normSq, clip, w *graph.Node) (factor, clipped *graph.Node) {
	norm := graph.Sqrt(normSq)
	factor = graph.Min(graph.OnesLike(norm), graph.Div(clip, graph.AddScalar(norm, clipStabilizer)))
	clipped = graph.ReduceAllSum(graph.Mul(w,
		graph.ConvertDType(graph.GreaterThan(norm, graph.BroadcastToShape(clip, norm.Shape())), w.DType())))
	return factor, clipped
}

// A training graph's results, in order: the weighted loss sum, the number
// of clipped examples (per-example mode: the squared norms), the weighted
// number of correct predictions, then one gradient per parameter in spec
// order.
const (
	outLossSum = iota
	outClipped
	outCorrect
	outGrads
)

// buildForward runs the model and returns its output and builder.
func buildForward(m Model, specs []ParamSpec, batch int, mode linearMode, ins []*graph.Node) (*Builder, Output, []*graph.Node) {
	g := ins[0].Graph()
	b := newBuilder(g, batch, specs, ins[:len(specs)])
	b.mode = mode
	rest := ins[len(specs):]
	out := m.Forward(b, rest[:len(m.Inputs())])
	if out.Loss == nil || !slices.Equal(out.Loss.Shape().Dimensions, []int{batch}) {
		panic(fmt.Errorf("dpsgd: model %s: Forward must return a loss of shape [%d]", m.Name(), batch))
	}
	return b, out, rest[len(m.Inputs()):]
}

// buildEval returns [weighted loss sum, weighted correct count].
func buildEval(m Model, specs []ParamSpec, batch int, ins []*graph.Node) []*graph.Node {
	_, out, rest := buildForward(m, specs, batch, linearTapped, ins)
	w := rest[0]
	return []*graph.Node{
		graph.ReduceAllSum(graph.Mul(graph.StopGradient(out.Loss), w)),
		correctSum(out, w),
	}
}

func correctSum(out Output, w *graph.Node) *graph.Node {
	if out.Correct == nil {
		return graph.ScalarZero(w.Graph(), w.DType())
	}
	return graph.ReduceAllSum(graph.Mul(graph.StopGradient(graph.ConvertDType(out.Correct, w.DType())), w))
}

// buildTrain builds the gradient graph. Its inputs are the parameters, the
// model inputs, the 0/1 example weights [B] and (gradClipped) the clipping
// norm C as a scalar.
//
// Differentiation: every linear operation reads StopGradient(a), so
// autodiff never crosses a matrix product (whose generic GoMLX gradient
// materialises a broadcast product — the ~10× slow path of DESIGN.md §3).
// The engine walks the linear operations from last to first: δ = ∂L/∂z
// comes from autodiff over the non-linear segment after z, and the
// gradient flowing into a is δ·Wᵀ, a matrix product fed back into the
// next autodiff call as the constant coefficient of Σ a·(δ·Wᵀ). Weight
// gradients are formed from (a, δ) directly:
//
//   - without token axes (dense layers), the per-example norm is the
//     "ghost" product ‖a_b‖·‖δ_b‖ (Goodfellow 2015) and the clipped sum is aᵀ·(c⊙δ), one
//     matrix product — nothing per example is materialised;
//   - with token axes (convolutions over positions, sequences), the
//     per-example gradients G_b = a_bᵀ·δ_b come from one batched matrix
//     product, and the clipped sum is Σ_b c_b·G_b.
func buildTrain(m Model, specs []ParamSpec, batch int, mode gradMode, method PerExampleMethod, ins []*graph.Node) []*graph.Node {
	lm := linearTapped
	if method == PerExampleExpanded && mode != gradPlain {
		lm = linearExpanded
	}
	b, out, rest := buildForward(m, specs, batch, lm, ins)
	g := b.g
	w := rest[0]
	dtype := w.DType()
	lossSum := graph.ReduceAllSum(graph.Mul(out.Loss, w))

	results := make([]*graph.Node, outGrads+len(specs))
	results[outLossSum] = graph.StopGradient(lossSum)
	results[outCorrect] = correctSum(out, w)
	results[outClipped] = graph.ScalarZero(g, dtype)

	grads := make(map[string]*graph.Node, len(specs))
	var deltas []*graph.Node
	if lm == linearTapped {
		deltas = backprop(b.taps, lossSum)
	}
	switch {
	case lm == linearExpanded:
		expandedGrads(b, lossSum, mode, rest, grads, results)
	case mode == gradPlain:
		for i, t := range b.taps {
			gw, gb := plainGrads(t, deltas[i])
			grads[t.weight] = gw
			if t.bias != "" {
				grads[t.bias] = gb
			}
		}
	default:
		per := make([]perExample, len(b.taps))
		normSq := graph.Zeros(g, shapes.Make(dtype, batch))
		for i, t := range b.taps {
			per[i] = perExampleOf(t, deltas[i])
			normSq = graph.Add(normSq, per[i].normSq)
		}
		if mode == gradPerExample {
			for i, t := range b.taps {
				grads[t.weight] = per[i].materialize(t, deltas[i])
				if t.bias != "" {
					grads[t.bias] = per[i].biasPer
				}
			}
			// The squared norms travel in the "clipped" slot.
			results[outClipped] = normSq
			break
		}
		var factor *graph.Node
		factor, results[outClipped] = clipFactor(normSq, rest[1], w)
		for i, t := range b.taps {
			gw, gb := per[i].clippedSum(t, deltas[i], factor)
			grads[t.weight] = gw
			if t.bias != "" {
				grads[t.bias] = gb
			}
		}
	}
	for i, s := range specs {
		gr, ok := grads[s.Name]
		if !ok {
			gr = graph.Zeros(g, shapes.Make(dtype, s.Shape...))
		}
		results[outGrads+i] = gr
	}
	return results
}

// expandedGrads fills grads (and the clipped-count slot) from the
// per-example gradients that autodiff returns for the expanded weights.
func expandedGrads(b *Builder, lossSum *graph.Node, mode gradMode, rest []*graph.Node, grads map[string]*graph.Node, results []*graph.Node) {
	var nodes []*graph.Node
	var names []string
	for _, t := range b.taps {
		nodes, names = append(nodes, t.wExp), append(names, t.weight)
		if t.bias != "" {
			nodes, names = append(nodes, t.bExp), append(names, t.bias)
		}
	}
	per := graph.Gradient(lossSum, nodes...)
	w := rest[0]
	normSq := graph.Zeros(b.g, shapes.Make(w.DType(), b.batch))
	for _, gr := range per {
		axes := make([]int, gr.Rank()-1)
		for i := range axes {
			axes[i] = i + 1
		}
		normSq = graph.Add(normSq, graph.ReduceSum(graph.Square(gr), axes...))
	}
	if mode == gradPerExample {
		for i, gr := range per {
			grads[names[i]] = gr
		}
		results[outClipped] = normSq
		return
	}
	var factor *graph.Node
	factor, results[outClipped] = clipFactor(normSq, rest[1], w)
	for i, gr := range per {
		grads[names[i]] = graph.DotGeneral(factor, []int{0}, nil, gr, []int{0}, nil)
	}
}

// backprop returns δ_t = ∂loss/∂z_t for every tap.
func backprop(taps []*tap, loss *graph.Node) []*graph.Node {
	deltas := make([]*graph.Node, len(taps))
	root := loss
	for i := len(taps) - 1; i >= 0; i-- {
		t := taps[i]
		deltas[i] = graph.Gradient(root, t.z)[0]
		if !dependsOnAny(t.a, taps[:i]) {
			continue
		}
		// ∂loss/∂a = δ·Wᵀ, then carried into a by autodiff as the
		// coefficient of a linear term.
		da := inputGrad(t, deltas[i])
		root = graph.Add(root, graph.ReduceAllSum(graph.Mul(t.a, graph.StopGradient(da))))
	}
	return deltas
}

// dependsOnAny reports whether node is computed from any of the taps'
// outputs.
func dependsOnAny(node *graph.Node, taps []*tap) bool {
	targets := make(map[*graph.Node]bool, len(taps))
	for _, t := range taps {
		targets[t.z] = true
	}
	seen := make(map[*graph.Node]bool)
	stack := []*graph.Node{node}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[n] {
			continue
		}
		seen[n] = true
		if targets[n] {
			return true
		}
		stack = append(stack, n.Inputs()...)
	}
	return false
}

// nonContract lists a's axes that survive into z, in order.
func (t *tap) nonContract() []int {
	var axes []int
	for ax := range t.a.Rank() {
		if !slices.Contains(t.contractAxes, ax) {
			axes = append(axes, ax)
		}
	}
	return axes
}

// deltaAxis maps an uncontracted axis of a to its position in z (and δ).
func (t *tap) deltaAxis(aAxis int) int {
	return slices.Index(t.nonContract(), aAxis)
}

func (t *tap) numOut() int { return t.w.Rank() - len(t.contractAxes) }

func (t *tap) outAxesOf(rank int) []int {
	axes := make([]int, t.numOut())
	for i := range axes {
		axes[i] = rank - t.numOut() + i
	}
	return axes
}

// inputGrad is δ·Wᵀ laid out like a.
func inputGrad(t *tap, delta *graph.Node) *graph.Node {
	wOut := make([]int, t.numOut())
	for i := range wOut {
		wOut[i] = len(t.contractAxes) + i
	}
	da := graph.DotGeneral(delta, t.outAxesOf(delta.Rank()), nil, t.w, wOut, nil)
	// da axes: a's uncontracted axes, then a's contracted axes.
	order := append(t.nonContract(), t.contractAxes...)
	perm := make([]int, len(order))
	for i := range perm {
		perm[i] = slices.Index(order, i)
	}
	if slices.IsSorted(perm) {
		return da
	}
	return graph.TransposeAllAxes(da, perm...)
}

// plainGrads is Σ_b ∇_W ℓ_b = aᵀ·δ over batch and token axes.
func plainGrads(t *tap, delta *graph.Node) (gw, gb *graph.Node) {
	aAxes := append(slices.Clone(t.tokenAxes), t.batchAxis)
	slices.Sort(aAxes)
	dAxes := make([]int, len(aAxes))
	for i, ax := range aAxes {
		dAxes[i] = t.deltaAxis(ax)
	}
	gw = graph.DotGeneral(t.a, aAxes, nil, delta, dAxes, nil)
	if t.bias != "" {
		gb = graph.ReduceSum(delta, dAxes...)
	}
	return gw, gb
}

// perExample holds what one tap contributes to the per-example gradients.
type perExample struct {
	normSq  *graph.Node // [B]
	perW    *graph.Node // [B, W...]: only with token axes
	biasPer *graph.Node // [B, out...]
}

func perExampleOf(t *tap, delta *graph.Node) perExample {
	var p perExample
	dTokens := make([]int, len(t.tokenAxes))
	for i, ax := range t.tokenAxes {
		dTokens[i] = t.deltaAxis(ax)
	}
	allButFirst := func(n *graph.Node) []int {
		axes := make([]int, n.Rank()-1)
		for i := range axes {
			axes[i] = i + 1
		}
		return axes
	}
	if t.bias != "" {
		bp := delta
		if len(dTokens) > 0 {
			bp = graph.ReduceSum(delta, dTokens...)
		}
		// After removing the tokens, δ is [B, out...].
		p.biasPer = bp
	}
	if len(t.tokenAxes) == 0 {
		// Ghost norm: ‖a_b ⊗ δ_b‖² = ‖a_b‖²·‖δ_b‖².
		aSq := graph.ReduceSum(graph.Square(t.a), t.contractAxes...)
		dSq := graph.ReduceSum(graph.Square(delta), t.outAxesOf(delta.Rank())...)
		p.normSq = graph.Mul(aSq, dSq)
		if t.bias != "" {
			p.normSq = graph.Add(p.normSq, dSq)
		}
		return p
	}
	p.perW = graph.DotGeneral(t.a, t.tokenAxes, []int{t.batchAxis}, delta, dTokens, []int{t.deltaAxis(t.batchAxis)})
	p.normSq = graph.ReduceSum(graph.Square(p.perW), allButFirst(p.perW)...)
	if t.bias != "" {
		p.normSq = graph.Add(p.normSq, graph.ReduceSum(graph.Square(p.biasPer), allButFirst(p.biasPer)...))
	}
	return p
}

// materialize returns the per-example weight gradients [B, W...].
func (p perExample) materialize(t *tap, delta *graph.Node) *graph.Node {
	if p.perW != nil {
		return p.perW
	}
	dBatch := t.deltaAxis(t.batchAxis)
	return graph.DotGeneral(t.a, nil, []int{t.batchAxis}, delta, nil, []int{dBatch})
}

// clippedSum is Σ_b c_b·∇_W ℓ_b.
func (p perExample) clippedSum(t *tap, delta, factor *graph.Node) (gw, gb *graph.Node) {
	if p.perW != nil {
		gw = graph.DotGeneral(factor, []int{0}, nil, p.perW, []int{0}, nil)
		if t.bias != "" {
			gb = graph.DotGeneral(factor, []int{0}, nil, p.biasPer, []int{0}, nil)
		}
		return gw, gb
	}
	dBatch := t.deltaAxis(t.batchAxis)
	dims := make([]int, delta.Rank())
	for i := range dims {
		dims[i] = 1
	}
	dims[dBatch] = factor.Shape().Dimensions[0]
	scaled := graph.Mul(delta, graph.Reshape(factor, dims...))
	gw = graph.DotGeneral(t.a, []int{t.batchAxis}, nil, scaled, []int{dBatch}, nil)
	if t.bias != "" {
		gb = graph.ReduceSum(scaled, dBatch)
	}
	return gw, gb
}
