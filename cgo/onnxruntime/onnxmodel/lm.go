package onnxmodel

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// The names of the LM model's input and output.
const (
	LMInput  = "input_ids" // int64 [batch, seq], 1 ≤ seq ≤ Context, tokens in [0, Vocab)
	LMLogits = "logits"    // float32 [batch, seq, Vocab]
)

// LayerNormEpsilon is the ε of every LayerNorm in the LM: (x−mean)/√(var+ε).
const LayerNormEpsilon = 1e-5

// ErrInvalidTokens wraps every error about an LM input (an empty batch or
// sequence, a ragged batch, a sequence longer than the context, a token
// outside the vocabulary) from [LMConfig.InputIDs] and [LM.Forward].
var ErrInvalidTokens = errors.New("onnxmodel: invalid LM input")

// Limits that keep every size and index of an LM in an int (and the
// encoded model under protobuf's 2 GiB) on every platform.
const (
	maxLMDim    = 1 << 20
	maxLMParams = 1 << 28 // float32 values: 1 GiB of weights
)

// LMConfig is the shape of a byte-level causal transformer LM (see the
// package doc for the architecture and the weight layout).
type LMConfig struct {
	Vocab   int // tokens; 256 for a byte-level LM
	Context int // longest sequence: the number of learned positions
	Dim     int // width of the residual stream
	Layers  int // transformer blocks
	Heads   int // attention heads per block; must divide Dim
	FF      int // width of each block's MLP
}

// DefaultLMConfig is the LM the trainer pretrains and fine-tunes: 256
// bytes, 128 positions, 4 blocks of width 128 with 4 heads and an MLP of
// 512; 842,496 parameters, 3.4 MB as float32.
func DefaultLMConfig() LMConfig {
	return LMConfig{Vocab: 256, Context: 128, Dim: 128, Layers: 4, Heads: 4, FF: 512}
}

// Validate checks that the sizes are positive, that Heads divides Dim, and
// that the model is small enough to encode.
func (c LMConfig) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{{"Vocab", c.Vocab}, {"Context", c.Context}, {"Dim", c.Dim}, {"Layers", c.Layers}, {"Heads", c.Heads}, {"FF", c.FF}} {
		if f.v <= 0 || f.v > maxLMDim {
			return fmt.Errorf("onnxmodel: LM config: %s is %d, want 1..%d", f.name, f.v, maxLMDim)
		}
	}
	if c.Dim%c.Heads != 0 {
		return fmt.Errorf("onnxmodel: LM config: Heads (%d) does not divide Dim (%d)", c.Heads, c.Dim)
	}
	if n := c.NumParams(); n > maxLMParams {
		return fmt.Errorf("onnxmodel: LM config: %d parameters, more than the %d an ONNX file can hold here", n, maxLMParams)
	}
	return nil
}

// NumParams is the number of float32 values in an LM of this shape. It is
// meaningful only for sizes within Validate's limits.
func (c LMConfig) NumParams() int64 {
	d, ff := int64(c.Dim), int64(c.FF)
	perLayer := 4*d + // two LayerNorms
		4*(d*d+d) + // Q, K, V, O projections
		d*ff + ff + ff*d + d // MLP
	return int64(c.Vocab)*d + int64(c.Context)*d + int64(c.Layers)*perLayer + 2*d
}

func (c LMConfig) String() string {
	return fmt.Sprintf("vocab=%d context=%d dim=%d layers=%d heads=%d ff=%d", c.Vocab, c.Context, c.Dim, c.Layers, c.Heads, c.FF)
}

// InputIDs checks a batch of token sequences against the graph's input
// contract — at least one sequence, all of one length between 1 and
// Context, every token in [0, Vocab) — and returns the input_ids tensor's
// shape [batch, seq] and row-major data. Errors wrap [ErrInvalidTokens].
//
// Callers that feed the ONNX model should check with it first: the graph
// itself rejects a too-long sequence and a token ≥ Vocab (ONNX Runtime
// fails the Gather), but ONNX's Gather takes a negative token −k as
// token Vocab−k instead of failing.
func (c LMConfig) InputIDs(tokens [][]int64) (shape, ids []int64, err error) {
	if len(tokens) == 0 {
		return nil, nil, fmt.Errorf("%w: empty batch", ErrInvalidTokens)
	}
	seq := len(tokens[0])
	if seq == 0 {
		return nil, nil, fmt.Errorf("%w: empty sequence", ErrInvalidTokens)
	}
	if seq > c.Context {
		return nil, nil, fmt.Errorf("%w: sequence of %d tokens is longer than the context of %d", ErrInvalidTokens, seq, c.Context)
	}
	ids = make([]int64, 0, len(tokens)*seq)
	for b, row := range tokens {
		if len(row) != seq {
			return nil, nil, fmt.Errorf("%w: sequence %d has %d tokens, sequence 0 has %d (a batch is rectangular)", ErrInvalidTokens, b, len(row), seq)
		}
		for i, tok := range row {
			if tok < 0 || tok >= int64(c.Vocab) {
				return nil, nil, fmt.Errorf("%w: token %d at [%d][%d] is outside the vocabulary [0, %d)", ErrInvalidTokens, tok, b, i, c.Vocab)
			}
		}
		ids = append(ids, row...)
	}
	return []int64{int64(len(tokens)), int64(seq)}, ids, nil
}

// LM is a byte-level causal transformer language model: its shape and its
// weights, each a row-major float32 slice whose shape and name the package
// doc lists ([LM.Params] gives them in the canonical order).
type LM struct {
	Config LMConfig

	TokenEmbedding    []float32 // [Vocab, Dim]; also the output head (tied)
	PositionEmbedding []float32 // [Context, Dim]
	Blocks            []LMBlock // Layers of them, input side first
	FinalNormScale    []float32 // [Dim]
	FinalNormBias     []float32 // [Dim]
}

// LMBlock is one pre-LN transformer block:
// x += Attn(LN1(x)); x += MLP(LN2(x)). Projections are y = x·W + b with W
// stored [in, out] row-major.
type LMBlock struct {
	Norm1Scale, Norm1Bias []float32 // [Dim]
	WQ, WK, WV, WO        []float32 // [Dim, Dim]
	BQ, BK, BV, BO        []float32 // [Dim]
	Norm2Scale, Norm2Bias []float32 // [Dim]
	W1                    []float32 // [Dim, FF]
	B1                    []float32 // [FF]
	W2                    []float32 // [FF, Dim]
	B2                    []float32 // [Dim]
}

// LMParam is one weight tensor of an [LM]: its name (also the ONNX
// initializer's name), its shape, and its data, which is the LM's own
// slice (writing into it changes the LM).
type LMParam struct {
	Name  string
	Shape []int
	Data  []float32
}

// Len is the number of values the shape holds.
func (p LMParam) Len() int {
	n := 1
	for _, d := range p.Shape {
		n *= d
	}
	return n
}

// Params returns the LM's weight tensors in the canonical order the
// package doc lists: token_embedding, position_embedding, then each
// block's, then the final LayerNorm's. Shapes come from m.Config; Data is
// whatever slice the LM holds (nil when unset), so after NewLM a caller can
// fill the weights by copying into each Data.
func (m LM) Params() []LMParam {
	c := m.Config
	d, ff := c.Dim, c.FF
	ps := []LMParam{
		{"token_embedding", []int{c.Vocab, d}, m.TokenEmbedding},
		{"position_embedding", []int{c.Context, d}, m.PositionEmbedding},
	}
	for i := range m.Blocks {
		b := &m.Blocks[i]
		p := "blocks." + strconv.Itoa(i) + "."
		ps = append(ps,
			LMParam{p + "ln1.scale", []int{d}, b.Norm1Scale},
			LMParam{p + "ln1.bias", []int{d}, b.Norm1Bias},
			LMParam{p + "attn.wq", []int{d, d}, b.WQ},
			LMParam{p + "attn.bq", []int{d}, b.BQ},
			LMParam{p + "attn.wk", []int{d, d}, b.WK},
			LMParam{p + "attn.bk", []int{d}, b.BK},
			LMParam{p + "attn.wv", []int{d, d}, b.WV},
			LMParam{p + "attn.bv", []int{d}, b.BV},
			LMParam{p + "attn.wo", []int{d, d}, b.WO},
			LMParam{p + "attn.bo", []int{d}, b.BO},
			LMParam{p + "ln2.scale", []int{d}, b.Norm2Scale},
			LMParam{p + "ln2.bias", []int{d}, b.Norm2Bias},
			LMParam{p + "mlp.w1", []int{d, ff}, b.W1},
			LMParam{p + "mlp.b1", []int{ff}, b.B1},
			LMParam{p + "mlp.w2", []int{ff, d}, b.W2},
			LMParam{p + "mlp.b2", []int{d}, b.B2},
		)
	}
	return append(ps,
		LMParam{"final_ln.scale", []int{d}, m.FinalNormScale},
		LMParam{"final_ln.bias", []int{d}, m.FinalNormBias},
	)
}

// NewLM returns an LM of shape cfg with every weight allocated and drawn
// from seed by a fixed generator, so the same arguments give the same model
// on every machine and Go version. The draw is a GPT-2-style start for
// training: embeddings with standard deviation 0.02, projections
// Glorot-uniform (the residual outputs attn.wo and mlp.w2 scaled down by
// √(2·Layers)), LayerNorm scales near 1, and small nonzero biases and
// LayerNorm shifts — nonzero so that every tensor moves the logits from the
// start and a mix-up of two tensors by an exporter shows in tests.
func NewLM(cfg LMConfig, seed uint64) (LM, error) {
	if err := cfg.Validate(); err != nil {
		return LM{}, err
	}
	m := LM{Config: cfg, Blocks: make([]LMBlock, cfg.Layers)}
	alloc := func(n int) []float32 { return make([]float32, n) }
	d, ff := cfg.Dim, cfg.FF
	m.TokenEmbedding, m.PositionEmbedding = alloc(cfg.Vocab*d), alloc(cfg.Context*d)
	for i := range m.Blocks {
		m.Blocks[i] = LMBlock{
			Norm1Scale: alloc(d), Norm1Bias: alloc(d),
			WQ: alloc(d * d), BQ: alloc(d), WK: alloc(d * d), BK: alloc(d),
			WV: alloc(d * d), BV: alloc(d), WO: alloc(d * d), BO: alloc(d),
			Norm2Scale: alloc(d), Norm2Bias: alloc(d),
			W1: alloc(d * ff), B1: alloc(ff), W2: alloc(ff * d), B2: alloc(d),
		}
	}
	m.FinalNormScale, m.FinalNormBias = alloc(d), alloc(d)

	r := splitmix64(seed)
	residual := 1 / math.Sqrt(2*float64(cfg.Layers))
	for _, p := range m.Params() {
		// Uniform on (center−limit, center+limit); a uniform variable of
		// standard deviation s has limit s·√3.
		center, limit := 0.0, 0.02
		switch suffix(p.Name) {
		case "token_embedding", "position_embedding":
			limit = 0.02 * math.Sqrt(3)
		case "wq", "wk", "wv", "wo", "w1", "w2":
			limit = math.Sqrt(6 / float64(p.Shape[0]+p.Shape[1]))
			if s := suffix(p.Name); s == "wo" || s == "w2" {
				limit *= residual
			}
		case "scale":
			center, limit = 1, 0.1
		}
		for i := range p.Data {
			p.Data[i] = float32(center + (r.float64()*2-1)*limit)
		}
	}
	return m, nil
}

// suffix is what follows a parameter name's last dot.
func suffix(name string) string {
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '.' {
			return name[i+1:]
		}
	}
	return name
}

// checkShapes checks the config and that every weight has the length its
// shape needs.
func (m LM) checkShapes() error {
	if err := m.Config.Validate(); err != nil {
		return err
	}
	if len(m.Blocks) != m.Config.Layers {
		return fmt.Errorf("onnxmodel: LM has %d blocks, config says %d layers", len(m.Blocks), m.Config.Layers)
	}
	for _, p := range m.Params() {
		if len(p.Data) != p.Len() {
			return fmt.Errorf("onnxmodel: LM weight %s has %d values, shape %v needs %d", p.Name, len(p.Data), p.Shape, p.Len())
		}
	}
	return nil
}

// Validate checks the config, that every weight has the length its shape
// needs, and that every weight is finite: a NaN or an infinity from a
// diverged training run is refused rather than exported.
func (m LM) Validate() error {
	if err := m.checkShapes(); err != nil {
		return err
	}
	for _, p := range m.Params() {
		for i, v := range p.Data {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("onnxmodel: LM weight %s[%d] is %v", p.Name, i, v)
			}
		}
	}
	return nil
}
