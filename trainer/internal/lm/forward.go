package lm

import (
	"fmt"
	"math"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
)

// maskedScore is added to the attention score of a key a query may not see.
// exp(maskedScore − max) is exactly 0 in float32, so masked keys get
// exactly the zero weight onnxmodel.LM.Forward gives them by not looping
// over them.
const maskedScore = -1e9

// dotFunc is the matrix product the network uses: dot (gradients as
// matrix products) where gradients are taken, graph.DotGeneral where they
// are not.
type dotFunc func(lhs *graph.Node, lhsContract, lhsBatch []int, rhs *graph.Node, rhsContract, rhsBatch []int) *graph.Node

// network builds the LM of onnxmodel's contract in a GoMLX graph. Where its
// weights come from is up to the caller: weight returns any tensor by its
// onnxmodel name, project computes x·W for a projection weight (so LoRA
// can add its adapters there).
type network struct {
	cfg     onnxmodel.LMConfig
	weight  func(name string) *graph.Node
	project func(x *graph.Node, name string) *graph.Node
	dot     dotFunc
}

// plainProject is x·W with W = weight(name): x [B, T, in] → [B, T, out].
func (n network) plainProject(x *graph.Node, name string) *graph.Node {
	return n.dot(x, []int{2}, nil, n.weight(name), []int{0}, nil)
}

// affine is project plus the bias stored under biasName.
func (n network) affine(x *graph.Node, weightName, biasName string) *graph.Node {
	z := n.project(x, weightName)
	return graph.Add(z, graph.ExpandLeftToRank(n.weight(biasName), z.Rank()))
}

// hidden maps tokens [B, T] (int32, 1 ≤ T ≤ Context) to the final
// LayerNorm's output [B, T, Dim].
func (n network) hidden(tokens *graph.Node) *graph.Node {
	c := n.cfg
	g := tokens.Graph()
	bsz, seq := tokens.Shape().Dimensions[0], tokens.Shape().Dimensions[1]
	if seq < 1 || seq > c.Context {
		panic(fmt.Errorf("lm: sequence of %d tokens, context is %d", seq, c.Context))
	}
	x := graph.Gather(n.weight("token_embedding"), graph.InsertAxes(tokens, -1)) // [B, T, D]
	// Positions through a Gather, not a Slice: the pure-Go backend has a
	// gradient for the one and not the other.
	pos := graph.Gather(n.weight("position_embedding"),
		graph.Iota(g, shapes.Make(dtypes.Int32, seq, 1), 0)) // [T, D]
	x = graph.Add(x, graph.InsertAxes(pos, 0))

	d, heads := c.Dim, c.Heads
	hd := d / heads
	mask := causalMask(g, seq)
	for l := range c.Layers {
		p := fmt.Sprintf("blocks.%d.", l)
		h := n.layerNorm(x, p+"ln1")
		q := graph.Reshape(n.affine(h, p+"attn.wq", p+"attn.bq"), bsz, seq, heads, hd)
		k := graph.Reshape(n.affine(h, p+"attn.wk", p+"attn.bk"), bsz, seq, heads, hd)
		v := graph.Reshape(n.affine(h, p+"attn.wv", p+"attn.bv"), bsz, seq, heads, hd)
		// scores [B, H, Tq, Tk]
		s := n.dot(q, []int{3}, []int{0, 2}, k, []int{3}, []int{0, 2})
		s = graph.Add(graph.MulScalar(s, 1/math.Sqrt(float64(hd))), mask)
		s = graph.Sub(s, graph.StopGradient(graph.ReduceAndKeep(s, graph.ReduceMax, 3)))
		e := graph.Exp(s)
		attn := graph.Div(e, graph.ReduceAndKeep(e, graph.ReduceSum, 3))
		// [B, H, Tq, hd] → [B, Tq, H, hd] → [B, T, D]: head e fills columns e·hd…
		ctx := n.dot(attn, []int{3}, []int{0, 1}, v, []int{1}, []int{0, 2})
		ctx = graph.Reshape(graph.TransposeAllAxes(ctx, 0, 2, 1, 3), bsz, seq, d)
		x = graph.Add(x, n.affine(ctx, p+"attn.wo", p+"attn.bo"))

		h = n.layerNorm(x, p+"ln2")
		a := gelu(n.affine(h, p+"mlp.w1", p+"mlp.b1"))
		x = graph.Add(x, n.affine(a, p+"mlp.w2", p+"mlp.b2"))
	}
	return n.layerNorm(x, "final_ln")
}

// logits applies the tied head: h [B, T, D] · Eᵀ → [B, T, Vocab].
func (n network) logits(h *graph.Node) *graph.Node {
	return n.dot(h, []int{h.Rank() - 1}, nil, n.weight("token_embedding"), []int{1}, nil)
}

// layerNorm normalises the last axis with the population variance, as
// (x − mean)/√(var + ε)·scale + bias. It divides by Sqrt instead of using
// Rsqrt, which has no gradient in the pure-Go backend.
func (n network) layerNorm(x *graph.Node, prefix string) *graph.Node {
	axis := x.Rank() - 1
	mean := graph.ReduceAndKeep(x, graph.ReduceMean, axis)
	xc := graph.Sub(x, mean)
	variance := graph.ReduceAndKeep(graph.Square(xc), graph.ReduceMean, axis)
	y := graph.Div(xc, graph.Sqrt(graph.AddScalar(variance, onnxmodel.LayerNormEpsilon)))
	scale := graph.ExpandLeftToRank(n.weight(prefix+".scale"), x.Rank())
	bias := graph.ExpandLeftToRank(n.weight(prefix+".bias"), x.Rank())
	return graph.Add(graph.Mul(y, scale), bias)
}

// gelu is the exact GELU, 0.5·x·(1 + erf(x/√2)); GoMLX has Erf, with a
// gradient, in the pure-Go backend.
func gelu(x *graph.Node) *graph.Node {
	return graph.Mul(graph.MulScalar(x, 0.5), graph.OnePlus(graph.Erf(graph.MulScalar(x, 1/math.Sqrt2))))
}

// causalMask is [1, 1, T, T]: 0 where key ≤ query, maskedScore above.
func causalMask(g *graph.Graph, seq int) *graph.Node {
	m := make([]float32, seq*seq)
	for i := range seq {
		for j := i + 1; j < seq; j++ {
			m[i*seq+j] = maskedScore
		}
	}
	return graph.ConstTensor(g, tensors.FromFlatDataAndDimensions(m, 1, 1, seq, seq))
}

// tokenLoss returns each position's cross-entropy −log p(target) [B, T]
// and whether the argmax is the target (1/0) [B, T], from logits
// [B, T, V] and int32 targets [B, T].
func tokenLoss(logits, targets *graph.Node) (ce, correct *graph.Node) {
	axis := logits.Rank() - 1
	vocab := logits.Shape().Dimensions[axis]
	shifted := graph.Sub(logits, graph.StopGradient(graph.ReduceAndKeep(logits, graph.ReduceMax, axis)))
	logSumExp := graph.Log(graph.ReduceSum(graph.Exp(shifted), axis))
	dims := append(targets.Shape().Clone().Dimensions, vocab)
	oneHot := graph.ConvertDType(graph.Equal(
		graph.Iota(logits.Graph(), shapes.Make(targets.DType(), dims...), axis),
		graph.InsertAxes(targets, -1)), logits.DType())
	picked := graph.ReduceSum(graph.Mul(shifted, oneHot), axis)
	ce = graph.Sub(logSumExp, picked)
	pred := graph.ArgMax(logits, axis, targets.DType())
	correct = graph.ConvertDType(graph.Equal(pred, targets), logits.DType())
	return ce, correct
}

// weightsAsParams is a network whose weights are graph parameters, in
// onnxmodel.LM.Params order (the Runner's and the pretrainer's).
func weightsAsParams(cfg onnxmodel.LMConfig, nodes []*graph.Node, d dotFunc) network {
	byName := make(map[string]*graph.Node, len(nodes))
	for i, p := range paramLayout(cfg) {
		byName[p.Name] = nodes[i]
	}
	n := network{cfg: cfg, dot: d}
	n.weight = func(name string) *graph.Node {
		w, ok := byName[name]
		if !ok {
			panic(fmt.Errorf("lm: no weight %q", name))
		}
		return w
	}
	n.project = n.plainProject
	return n
}

// paramLayout is the names and shapes of an LM of shape cfg, in the
// canonical order, without data.
func paramLayout(cfg onnxmodel.LMConfig) []onnxmodel.LMParam {
	return onnxmodel.LM{Config: cfg, Blocks: make([]onnxmodel.LMBlock, cfg.Layers)}.Params()
}
