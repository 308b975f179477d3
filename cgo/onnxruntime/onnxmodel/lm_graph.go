package onnxmodel

import (
	"math"
	"strconv"
)

// Model returns the LM as an ONNX graph at opset 17 (the first with
// LayerNormalization) from the input input_ids, int64 [batch, seq], to the
// output logits, float32 [batch, seq, Vocab]; batch and seq are dynamic.
// The weights become initializers named as [LM.Params] names them, holding
// the LM's own slices (not copies). It refuses an LM that [LM.Validate]
// refuses.
//
// The graph uses only standard ops: Gather for both embeddings (so a
// sequence longer than Context fails in ONNX Runtime as an out-of-range
// position instead of being cut), Shape/Gather/Range for the positions,
// Greater and Where for the causal mask (−∞ above the diagonal, so masked
// weights are exactly 0 after Softmax), Reshape with 0 ("keep this
// dimension") and Transpose to split and merge heads, LayerNormalization,
// MatMul/Add, Erf for the exact GELU, and a Transpose of token_embedding for
// the tied output head (ONNX Runtime folds it at load).
func (m LM) Model() (Model, error) {
	if err := m.Validate(); err != nil {
		return Model{}, err
	}
	c := m.Config
	g := &lmGraph{}
	for _, p := range m.Params() {
		dims := make([]int64, len(p.Shape))
		for i, d := range p.Shape {
			dims[i] = int64(d)
		}
		g.inits = append(g.inits, Tensor{Name: p.Name, Dims: dims, Float: p.Data})
	}
	headDim := c.Dim / c.Heads
	var (
		zero        = g.constInt("const.zero", nil, 0)
		one         = g.constInt("const.one", nil, 1)
		axis0       = g.constInt("const.axes0", []int64{1}, 0)
		axis1       = g.constInt("const.axes1", []int64{1}, 1)
		splitHeads  = g.constInt("const.split_heads_shape", []int64{4}, 0, 0, int64(c.Heads), int64(headDim))
		mergeHeads  = g.constInt("const.merge_heads_shape", []int64{3}, 0, 0, int64(c.Dim))
		negInf      = g.constFloat("const.neg_inf", float32(math.Inf(-1)))
		attnScale   = g.constFloat("const.attn_scale", float32(1/math.Sqrt(float64(headDim))))
		invSqrt2    = g.constFloat("const.inv_sqrt2", float32(1/math.Sqrt2))
		half        = g.constFloat("const.half", 0.5)
		oneF        = g.constFloat("const.one_f", 1)
		lnEpsilon   = FloatAttr("epsilon", LayerNormEpsilon)
		lastAxis    = IntAttr("axis", -1)
		layerNormOp = func(name, x, prefix string) string {
			return g.node(name, "LayerNormalization", []string{x, prefix + ".scale", prefix + ".bias"}, lastAxis, lnEpsilon)
		}
		linear = func(name, x, w, b string) string {
			return g.node(name, "Add", []string{g.node(name+".matmul", "MatMul", []string{x, w}), b})
		}
	)

	// Positions 0..seq-1 and the causal mask: mask[i][j] = j > i.
	seqLen := g.node("seq_len", "Gather", []string{g.node("input_shape", "Shape", []string{LMInput}), one}, IntAttr("axis", 0))
	positions := g.node("positions", "Range", []string{zero, seqLen, one})
	mask := g.node("causal_mask", "Greater", []string{
		g.node("key_positions", "Unsqueeze", []string{positions, axis0}),   // [1, seq]
		g.node("query_positions", "Unsqueeze", []string{positions, axis1}), // [seq, 1]
	})

	x := g.node("embed", "Add", []string{
		g.node("token_embed", "Gather", []string{"token_embedding", LMInput}, IntAttr("axis", 0)),         // [batch, seq, Dim]
		g.node("position_embed", "Gather", []string{"position_embedding", positions}, IntAttr("axis", 0)), // [seq, Dim]
	})
	for i := range c.Layers {
		p := "blocks." + strconv.Itoa(i) + "."
		h := layerNormOp(p+"ln1", x, p+"ln1")
		// heads projects h and splits the result into heads:
		// [batch, seq, Dim] → [batch, seq, Heads, headDim] → perm.
		heads := func(name string, perm ...int64) string {
			proj := linear(p+"attn."+name, h, p+"attn.w"+name, p+"attn.b"+name)
			split := g.node(p+"attn."+name+".split", "Reshape", []string{proj, splitHeads})
			return g.node(p+"attn."+name+".heads", "Transpose", []string{split}, IntsAttr("perm", perm...))
		}
		q := heads("q", 0, 2, 1, 3) // [batch, Heads, seq, headDim]
		k := heads("k", 0, 2, 3, 1) // [batch, Heads, headDim, seq]
		v := heads("v", 0, 2, 1, 3) // [batch, Heads, seq, headDim]
		scores := g.node(p+"attn.scores", "Mul", []string{g.node(p+"attn.qk", "MatMul", []string{q, k}), attnScale})
		masked := g.node(p+"attn.masked", "Where", []string{mask, negInf, scores})
		weights := g.node(p+"attn.weights", "Softmax", []string{masked}, lastAxis)
		context := g.node(p+"attn.context", "MatMul", []string{weights, v}) // [batch, Heads, seq, headDim]
		merged := g.node(p+"attn.merged", "Reshape", []string{
			g.node(p+"attn.context_t", "Transpose", []string{context}, IntsAttr("perm", 0, 2, 1, 3)),
			mergeHeads,
		})
		x = g.node(p+"attn.residual", "Add", []string{x, linear(p+"attn.o", merged, p+"attn.wo", p+"attn.bo")})

		h = layerNormOp(p+"ln2", x, p+"ln2")
		a := linear(p+"mlp.fc1", h, p+"mlp.w1", p+"mlp.b1")
		// GELU, exact: 0.5·a·(1 + erf(a/√2)).
		erf := g.node(p+"mlp.erf", "Erf", []string{g.node(p+"mlp.scaled", "Mul", []string{a, invSqrt2})})
		gelu := g.node(p+"mlp.gelu", "Mul", []string{
			g.node(p+"mlp.half_a", "Mul", []string{a, half}),
			g.node(p+"mlp.erf_plus_1", "Add", []string{erf, oneF}),
		})
		x = g.node(p+"mlp.residual", "Add", []string{x, linear(p+"mlp.fc2", gelu, p+"mlp.w2", p+"mlp.b2")})
	}
	h := layerNormOp("final_ln", x, "final_ln")
	head := g.node("output_head", "Transpose", []string{"token_embedding"}, IntsAttr("perm", 1, 0)) // [Dim, Vocab]
	g.nodes = append(g.nodes, Node{Name: "logits", OpType: "MatMul", Inputs: []string{h, head}, Outputs: []string{LMLogits}})

	return Model{
		ProducerName: "tensorguardflow-onnxmodel",
		Graph: Graph{
			Name:         "byte_lm",
			Nodes:        g.nodes,
			Initializers: g.inits,
			Inputs:       []ValueInfo{{Name: LMInput, Type: Int64, Shape: []int64{-1, -1}}},
			Outputs:      []ValueInfo{{Name: LMLogits, Type: Float, Shape: []int64{-1, -1, int64(c.Vocab)}}},
		},
	}, nil
}

// Encode is m.Model() encoded: the LM as .onnx bytes.
func (m LM) Encode() ([]byte, error) {
	model, err := m.Model()
	if err != nil {
		return nil, err
	}
	return model.Encode()
}

// lmGraph collects nodes and constants; every node has one output, named
// after the node.
type lmGraph struct {
	nodes []Node
	inits []Tensor
}

func (g *lmGraph) node(name, op string, inputs []string, attrs ...Attr) string {
	g.nodes = append(g.nodes, Node{Name: name, OpType: op, Inputs: inputs, Outputs: []string{name}, Attrs: attrs})
	return name
}

// constInt adds an int64 constant; nil dims make a scalar.
func (g *lmGraph) constInt(name string, dims []int64, vs ...int64) string {
	g.inits = append(g.inits, Tensor{Name: name, Dims: dims, Int64: vs})
	return name
}

// constFloat adds a float32 scalar constant.
func (g *lmGraph) constFloat(name string, v float32) string {
	g.inits = append(g.inits, Tensor{Name: name, Float: []float32{v}})
	return name
}
