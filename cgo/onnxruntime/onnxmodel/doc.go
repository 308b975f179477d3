// Package onnxmodel writes and reads ONNX models in pure Go: it encodes a
// small graph (nodes, initializers, typed inputs and outputs) as ONNX
// ModelProto bytes, reads the inputs and outputs back out of any model's
// bytes, and holds two models with pure-Go reference forward passes: [MLP],
// a two-layer perceptron, and [LM], the byte-level causal transformer
// language model the trainer fine-tunes and exports.
//
// It has no import "C" and no dependency outside the standard library, so the
// trainer can use it to export models and every test can make real ONNX
// models without files or Python. The protobuf wire format is written by hand
// (a few varint and length-delimited helpers): the ONNX messages involved are
// small and stable, and no generated code is worth carrying for them.
//
// Guarantees:
//   - [Model.Encode] is deterministic: the same Model gives the same bytes
//     (testdata/ holds a golden model that pins them).
//   - [ReadIO] never panics on arbitrary bytes and reports the inputs the way
//     ONNX Runtime does: graph inputs that are also initializers are left out.
//   - [MLP.Forward] computes what ONNX Runtime computes for [MLP.Model], to
//     float32 rounding (the bridge's tests check 1e-5).
//   - [LM.Forward] computes what ONNX Runtime computes for [LM.Model]: the
//     bridge's tests allow 1e-4 of the logits' scale (max(1, max |logit|))
//     and measure about 2e-6.
//
// # The LM contract
//
// This is what the trainer fills from its own parameters and what a device
// runs; changing any of it changes the meaning of exported checkpoints.
//
// Shape ([LMConfig]): Vocab tokens (256: one per byte, no special tokens),
// Context positions, residual width Dim, Layers blocks, Heads heads of
// width Dim/Heads, MLP width FF. [DefaultLMConfig] is 256/128/128/4/4/512:
// 842,496 parameters, 3.4 MB as float32.
//
// Computation, for tokens t_0..t_{n-1} with 1 ≤ n ≤ Context:
//
//	x_i = E[t_i] + P[i]                                   (embeddings)
//	for each block:
//	    x += Attn(LN1(x));  x += MLP(LN2(x))              (pre-LN)
//	logits_i = LN_f(x_i) · Eᵀ                             (head tied to E)
//
//	LN(x)   = (x − mean(x)) / √(var(x) + 1e-5) · scale + bias, over the Dim
//	          values of one position, var the population variance
//	Attn(h) = concat_heads(softmax_j≤i(q_i·k_j / √(Dim/Heads)) · v_j) · Wo + bo,
//	          q = h·Wq + bq, k = h·Wk + bk, v = h·Wv + bv; head e takes columns
//	          e·Dim/Heads … (e+1)·Dim/Heads − 1 of q, k and v, and its output
//	          fills the same columns of the concatenation; position i attends
//	          to positions 0..i only
//	MLP(h)  = GELU(h·W1 + b1) · W2 + b2, GELU exact: 0.5·a·(1 + erf(a/√2))
//
// There is no dropout and no output bias. The key bias bk is part of the
// layout but cannot change the output (it adds the same q_i·bk to every
// score of query i).
//
// Weights ([LM.Params] lists them in this order; the names are also the
// ONNX initializer names). Every tensor is float32, row-major, and every
// projection is y = x·W + b with W stored [in, out], so W[r*out+c] connects
// input r to output c (the transpose of PyTorch's nn.Linear.weight; the
// layout of GoMLX's dense layers):
//
//	token_embedding         [Vocab, Dim]    E, row t is token t; also the output head
//	position_embedding      [Context, Dim]  P, row i is position i (learned)
//	blocks.<l>.ln1.scale    [Dim]           l = 0..Layers−1, input side first
//	blocks.<l>.ln1.bias     [Dim]
//	blocks.<l>.attn.wq      [Dim, Dim]
//	blocks.<l>.attn.bq      [Dim]
//	blocks.<l>.attn.wk      [Dim, Dim]
//	blocks.<l>.attn.bk      [Dim]
//	blocks.<l>.attn.wv      [Dim, Dim]
//	blocks.<l>.attn.bv      [Dim]
//	blocks.<l>.attn.wo      [Dim, Dim]      rows are the concatenated head outputs
//	blocks.<l>.attn.bo      [Dim]
//	blocks.<l>.ln2.scale    [Dim]
//	blocks.<l>.ln2.bias     [Dim]
//	blocks.<l>.mlp.w1       [Dim, FF]
//	blocks.<l>.mlp.b1       [FF]
//	blocks.<l>.mlp.w2       [FF, Dim]
//	blocks.<l>.mlp.b2       [Dim]
//	final_ln.scale          [Dim]
//	final_ln.bias           [Dim]
//
// The ONNX model ([LM.Model], opset 17) takes input_ids, int64 [batch, seq],
// and returns logits, float32 [batch, seq, Vocab], where logits[b][i] scores
// the token that follows position i; batch and seq are dynamic. A sequence
// longer than Context or a token ≥ Vocab fails in ONNX Runtime (its Gather
// is out of range); a negative token is not refused by the graph (ONNX's
// Gather counts it from the end), so callers check their input with
// [LMConfig.InputIDs] first. [LM.Validate] refuses, and [LM.Model] will not
// export, weights of the wrong size or that are not finite.
package onnxmodel
