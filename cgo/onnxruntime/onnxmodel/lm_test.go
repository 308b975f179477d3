package onnxmodel

import (
	"bytes"
	"errors"
	"math"
	"os"
	"reflect"
	"strings"
	"testing"
)

// tinyLM is the golden file's shape: every kind of tensor, a few KB.
var tinyLM = LMConfig{Vocab: 256, Context: 8, Dim: 8, Layers: 1, Heads: 2, FF: 16}

const goldenLM = "testdata/lm-tiny-seed1.onnx"

func mustLM(t testing.TB, cfg LMConfig, seed uint64) LM {
	t.Helper()
	m, err := NewLM(cfg, seed)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLMConfigValidate(t *testing.T) {
	t.Parallel()
	ok := LMConfig{Vocab: 256, Context: 4, Dim: 6, Layers: 1, Heads: 3, FF: 5}
	if err := ok.Validate(); err != nil {
		t.Fatalf("%v: %v", ok, err)
	}
	if err := DefaultLMConfig().Validate(); err != nil {
		t.Fatalf("DefaultLMConfig: %v", err)
	}
	with := func(f func(c *LMConfig)) LMConfig { c := ok; f(&c); return c }
	tests := []struct {
		name string
		cfg  LMConfig
		want string
	}{
		{"zero", LMConfig{}, "Vocab is 0"},
		{"no vocab", with(func(c *LMConfig) { c.Vocab = 0 }), "Vocab"},
		{"no context", with(func(c *LMConfig) { c.Context = 0 }), "Context"},
		{"negative dim", with(func(c *LMConfig) { c.Dim = -6 }), "Dim"},
		{"no layers", with(func(c *LMConfig) { c.Layers = 0 }), "Layers"},
		{"no heads", with(func(c *LMConfig) { c.Heads = 0 }), "Heads is 0"},
		{"no ff", with(func(c *LMConfig) { c.FF = 0 }), "FF"},
		{"heads do not divide dim", with(func(c *LMConfig) { c.Heads = 4 }), "does not divide"},
		{"huge dimension", with(func(c *LMConfig) { c.FF = 1 << 30 }), "FF"},
		{"too many parameters", LMConfig{Vocab: 1 << 20, Context: 1, Dim: 1 << 10, Layers: 1, Heads: 1, FF: 1}, "parameters"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Validate(%v) = %v, want an error mentioning %q", tt.name, tt.cfg, err, tt.want)
		}
		if _, err := NewLM(tt.cfg, 1); err == nil {
			t.Errorf("%s: NewLM succeeded", tt.name)
		}
	}
}

// TestLMParams pins the weight contract the trainer fills: names, order,
// shapes, and that Data is the LM's own storage.
func TestLMParams(t *testing.T) {
	t.Parallel()
	cfg := LMConfig{Vocab: 256, Context: 4, Dim: 6, Layers: 2, Heads: 3, FF: 5}
	m := mustLM(t, cfg, 1)
	ps := m.Params()
	type spec struct {
		name  string
		shape []int
	}
	want := []spec{{"token_embedding", []int{256, 6}}, {"position_embedding", []int{4, 6}}}
	for _, b := range []string{"blocks.0.", "blocks.1."} {
		want = append(want,
			spec{b + "ln1.scale", []int{6}}, spec{b + "ln1.bias", []int{6}},
			spec{b + "attn.wq", []int{6, 6}}, spec{b + "attn.bq", []int{6}},
			spec{b + "attn.wk", []int{6, 6}}, spec{b + "attn.bk", []int{6}},
			spec{b + "attn.wv", []int{6, 6}}, spec{b + "attn.bv", []int{6}},
			spec{b + "attn.wo", []int{6, 6}}, spec{b + "attn.bo", []int{6}},
			spec{b + "ln2.scale", []int{6}}, spec{b + "ln2.bias", []int{6}},
			spec{b + "mlp.w1", []int{6, 5}}, spec{b + "mlp.b1", []int{5}},
			spec{b + "mlp.w2", []int{5, 6}}, spec{b + "mlp.b2", []int{6}},
		)
	}
	want = append(want, spec{"final_ln.scale", []int{6}}, spec{"final_ln.bias", []int{6}})
	var got []spec
	var total int64
	for _, p := range ps {
		got = append(got, spec{p.Name, p.Shape})
		if len(p.Data) != p.Len() {
			t.Errorf("%s: %d values for shape %v", p.Name, len(p.Data), p.Shape)
		}
		total += int64(p.Len())
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Params:\n got %v\nwant %v", got, want)
	}
	if total != cfg.NumParams() {
		t.Errorf("NumParams = %d, the tensors hold %d", cfg.NumParams(), total)
	}
	if n := DefaultLMConfig().NumParams(); n != 842496 {
		t.Errorf("DefaultLMConfig has %d parameters; the package doc says 842,496", n)
	}
	// Writing through Data changes the LM.
	for _, p := range ps {
		if p.Name == "blocks.1.attn.wo" {
			p.Data[0] = 42
		}
	}
	if m.Blocks[1].WO[0] != 42 {
		t.Error("Params' Data is not the LM's own slice")
	}
}

func TestNewLMDeterministic(t *testing.T) {
	t.Parallel()
	a, b, c := mustLM(t, tinyLM, 7), mustLM(t, tinyLM, 7), mustLM(t, tinyLM, 8)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different weights")
	}
	if reflect.DeepEqual(a.TokenEmbedding, c.TokenEmbedding) {
		t.Fatal("different seeds, same weights")
	}
	for _, p := range a.Params() {
		lo, hi := float32(-0.035), float32(0.035)
		switch {
		case strings.HasSuffix(p.Name, ".scale"):
			lo, hi = 0.9, 1.1
		case len(p.Shape) == 2 && !strings.HasSuffix(p.Name, "_embedding"):
			limit := float32(math.Sqrt(6 / float64(p.Shape[0]+p.Shape[1])))
			lo, hi = -limit, limit
		}
		for _, v := range p.Data {
			if v < lo || v > hi || v == 0 {
				t.Fatalf("%s: %v outside (%v, %v) or zero", p.Name, v, lo, hi)
			}
		}
	}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestLMValidateWeights: a weight of the wrong size, a missing block or a
// non-finite value is refused by Validate, Model and Encode, and (all but
// the non-finite value) by Forward.
func TestLMValidateWeights(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		break_ func(m *LM)
		want   string
		finite bool // only the finiteness check catches it
	}{
		{"short token embedding", func(m *LM) { m.TokenEmbedding = m.TokenEmbedding[1:] }, "token_embedding has 2047 values, shape [256 8] needs 2048", false},
		{"nil position embedding", func(m *LM) { m.PositionEmbedding = nil }, "position_embedding has 0 values", false},
		{"long w1", func(m *LM) { m.Blocks[0].W1 = append(m.Blocks[0].W1, 0) }, "blocks.0.mlp.w1 has 129 values", false},
		{"missing bk", func(m *LM) { m.Blocks[0].BK = nil }, "blocks.0.attn.bk", false},
		{"missing final bias", func(m *LM) { m.FinalNormBias = nil }, "final_ln.bias", false},
		{"no blocks", func(m *LM) { m.Blocks = nil }, "0 blocks, config says 1", false},
		{"bad config", func(m *LM) { m.Config.Heads = 3 }, "does not divide", false},
		{"config and weights disagree", func(m *LM) { m.Config.FF = 32 }, "blocks.0.mlp.w1 has 128 values, shape [8 32] needs 256", false},
		{"NaN", func(m *LM) { m.Blocks[0].WV[5] = float32(math.NaN()) }, "blocks.0.attn.wv[5] is NaN", true},
		{"infinity", func(m *LM) { m.FinalNormScale[1] = float32(math.Inf(-1)) }, "final_ln.scale[1] is -Inf", true},
	}
	tokens := [][]int64{{1, 2, 3}}
	for _, tt := range tests {
		m := mustLM(t, tinyLM, 1)
		tt.break_(&m)
		for _, f := range []struct {
			name string
			err  error
		}{
			{"Validate", m.Validate()},
			{"Model", func() error { _, err := m.Model(); return err }()},
			{"Encode", func() error { _, err := m.Encode(); return err }()},
		} {
			if f.err == nil || !strings.Contains(f.err.Error(), tt.want) {
				t.Errorf("%s: %s = %v, want an error mentioning %q", tt.name, f.name, f.err, tt.want)
			}
		}
		_, err := m.Forward(tokens)
		if tt.finite && err != nil {
			t.Errorf("%s: Forward = %v; it checks shapes only", tt.name, err)
		}
		if !tt.finite && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: Forward = %v, want an error mentioning %q", tt.name, err, tt.want)
		}
	}
}

func TestLMInputIDs(t *testing.T) {
	t.Parallel()
	cfg := tinyLM
	shape, ids, err := cfg.InputIDs([][]int64{{0, 1, 255}, {3, 4, 5}})
	if err != nil || !reflect.DeepEqual(shape, []int64{2, 3}) || !reflect.DeepEqual(ids, []int64{0, 1, 255, 3, 4, 5}) {
		t.Fatalf("InputIDs = %v %v %v", shape, ids, err)
	}
	full := make([]int64, cfg.Context)
	if shape, _, err := cfg.InputIDs([][]int64{full}); err != nil || shape[1] != int64(cfg.Context) {
		t.Fatalf("InputIDs of Context tokens = %v, %v", shape, err)
	}
	for _, tt := range []struct {
		name   string
		tokens [][]int64
		want   string
	}{
		{"nil batch", nil, "empty batch"},
		{"empty sequence", [][]int64{{}}, "empty sequence"},
		{"too long", [][]int64{make([]int64, cfg.Context+1)}, "sequence of 9 tokens is longer than the context of 8"},
		{"ragged", [][]int64{{1, 2}, {1}}, "sequence 1 has 1 tokens, sequence 0 has 2"},
		{"ragged empty", [][]int64{{1, 2}, {}}, "sequence 1 has 0 tokens"},
		{"negative token", [][]int64{{1, -1}}, "token -1 at [0][1]"},
		{"token past vocab", [][]int64{{1}, {256}}, "token 256 at [1][0] is outside the vocabulary [0, 256)"},
	} {
		_, _, err := cfg.InputIDs(tt.tokens)
		if !errors.Is(err, ErrInvalidTokens) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: InputIDs = %v, want ErrInvalidTokens mentioning %q", tt.name, err, tt.want)
		}
		if _, err := mustLM(t, cfg, 1).Forward(tt.tokens); !errors.Is(err, ErrInvalidTokens) {
			t.Errorf("%s: Forward = %v, want ErrInvalidTokens", tt.name, err)
		}
	}
}

// TestLMGolden pins the bytes of a tiny LM: a change in the graph, the
// parameter order or names, or NewLM's generator shows up here. The file is
// a real model other tools (onnx.checker, Netron, onnxruntime) can load.
func TestLMGolden(t *testing.T) {
	t.Parallel()
	got, err := mustLM(t, tinyLM, 1).Encode()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(goldenLM, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(goldenLM)
	if err != nil {
		t.Fatalf("%v (run go test -run TestLMGolden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode differs from %s (%d vs %d bytes); if intended, rerun with -update", goldenLM, len(got), len(want))
	}
	again, err := mustLM(t, tinyLM, 1).Encode()
	if err != nil || !bytes.Equal(got, again) {
		t.Fatalf("Encode is not deterministic (%v)", err)
	}
}

// TestLMEncodeIO: the encoded graph declares exactly input_ids int64
// [batch, seq] and logits float32 [batch, seq, Vocab]; no weight leaks out
// as an input.
func TestLMEncodeIO(t *testing.T) {
	t.Parallel()
	for _, cfg := range []LMConfig{tinyLM, DefaultLMConfig()} {
		m := mustLM(t, cfg, 3)
		b, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		in, out, err := ReadIO(b)
		if err != nil {
			t.Fatal(err)
		}
		wantIn := []ValueInfo{{Name: LMInput, Type: Int64, Shape: []int64{-1, -1}}}
		wantOut := []ValueInfo{{Name: LMLogits, Type: Float, Shape: []int64{-1, -1, int64(cfg.Vocab)}}}
		if !reflect.DeepEqual(in, wantIn) || !reflect.DeepEqual(out, wantOut) {
			t.Errorf("%v: ReadIO = %v %v, want %v %v", cfg, in, out, wantIn, wantOut)
		}
		// The weights are all there, as float32 raw data: the file is
		// the parameters plus a small graph.
		if weights := 4 * cfg.NumParams(); int64(len(b)) < weights || int64(len(b)) > weights+64<<10 {
			t.Errorf("%v: %d bytes for %d bytes of weights", cfg, len(b), weights)
		}
		model, err := m.Model()
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for _, init := range model.Graph.Initializers {
			names[init.Name] = true
		}
		for _, p := range m.Params() {
			if !names[p.Name] {
				t.Errorf("%v: no initializer %s", cfg, p.Name)
			}
		}
	}
}

// TestLMForwardByHand checks the reference against small cases worked out
// independently: blocks that add nothing (only embeddings, final
// LayerNorm and the tied head remain), attention that averages (zero
// queries and keys make every visible key equally weighted, identity
// values and output show the causal window), and an identity MLP (shows
// the exact GELU).
func TestLMForwardByHand(t *testing.T) {
	t.Parallel()
	cfg := LMConfig{Vocab: 5, Context: 4, Dim: 4, Layers: 1, Heads: 2, FF: 4}
	base := func() LM {
		m := mustLM(t, cfg, 9)
		b := &m.Blocks[0]
		for _, w := range [][]float32{b.WQ, b.BQ, b.WK, b.BK, b.WV, b.BV, b.WO, b.BO, b.W1, b.B1, b.W2, b.B2} {
			clear(w)
		}
		for j := range cfg.Dim {
			b.Norm1Scale[j], b.Norm1Bias[j], b.Norm2Scale[j], b.Norm2Bias[j] = 1, 0, 1, 0
		}
		return m
	}
	identity := func(w []float32) {
		clear(w)
		for i := range cfg.Dim {
			w[i*cfg.Dim+i] = 1
		}
	}
	norm := func(x []float64) []float64 {
		var mean, sq float64
		for _, v := range x {
			mean += v / float64(len(x))
		}
		for _, v := range x {
			sq += (v - mean) * (v - mean) / float64(len(x))
		}
		out := make([]float64, len(x))
		for i, v := range x {
			out[i] = (v - mean) / math.Sqrt(sq+1e-5)
		}
		return out
	}
	tokens := []int64{3, 0, 4, 3}
	embed := func(m LM, i int) []float64 {
		x := make([]float64, cfg.Dim)
		for j := range x {
			x[j] = float64(m.TokenEmbedding[int(tokens[i])*cfg.Dim+j]) + float64(m.PositionEmbedding[i*cfg.Dim+j])
		}
		return x
	}
	logits := func(m LM, x []float64) []float64 {
		h := norm(x)
		for j := range h {
			h[j] = h[j]*float64(m.FinalNormScale[j]) + float64(m.FinalNormBias[j])
		}
		out := make([]float64, cfg.Vocab)
		for v := range out {
			for j := range h {
				out[v] += h[j] * float64(m.TokenEmbedding[v*cfg.Dim+j])
			}
		}
		return out
	}

	identityMLP := base()
	identity(identityMLP.Blocks[0].W1)
	identity(identityMLP.Blocks[0].W2)
	averaging := base()
	identity(averaging.Blocks[0].WV)
	identity(averaging.Blocks[0].WO)
	for _, tt := range []struct {
		name string
		m    LM
		want func(m LM, i int) []float64 // the residual stream at position i
	}{
		{"blocks add nothing", base(), embed},
		{"attention averages the visible positions", averaging, func(m LM, i int) []float64 {
			x := embed(m, i)
			for j := 0; j <= i; j++ {
				for d, v := range norm(embed(m, j)) {
					x[d] += v / float64(i+1)
				}
			}
			return x
		}},
		{"identity MLP applies GELU", identityMLP, func(m LM, i int) []float64 {
			x := embed(m, i)
			for d, v := range norm(x) {
				x[d] += v * (1 + math.Erf(v/math.Sqrt2)) / 2
			}
			return x
		}},
	} {
		got, err := tt.m.Forward([][]int64{tokens})
		if err != nil {
			t.Fatal(err)
		}
		for i := range tokens {
			want := logits(tt.m, tt.want(tt.m, i))
			for v, w := range want {
				if d := math.Abs(float64(got[0][i][v]) - w); d > 1e-6 {
					t.Errorf("%s: logits[%d][%d] = %v, want %v", tt.name, i, v, got[0][i][v], w)
				}
			}
		}
	}
}

// TestLMForwardCausal: the reference's logits at a position do not depend
// on later tokens, do depend on earlier ones, and a batch is its sequences
// evaluated one by one.
func TestLMForwardCausal(t *testing.T) {
	t.Parallel()
	m := mustLM(t, tinyLM, 4)
	a := []int64{10, 20, 30, 40, 50, 60, 70, 80}
	b := []int64{10, 20, 30, 41, 50, 60, 70, 80}
	got, err := m.Forward([][]int64{a, b})
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		same := reflect.DeepEqual(got[0][i], got[1][i])
		if i < 3 && !same {
			t.Errorf("position %d depends on the token at 3", i)
		}
		if i >= 3 && same {
			t.Errorf("position %d does not depend on the token at 3", i)
		}
	}
	alone, err := m.Forward([][]int64{b})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(alone[0], got[1]) {
		t.Error("a sequence's logits depend on the rest of the batch")
	}
	prefix, err := m.Forward([][]int64{b[:5]})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(prefix[0], got[1][:5]) {
		t.Error("a prefix's logits differ from the full sequence's")
	}
}

// TestLMForwardUsesEveryWeight: shifting any one tensor changes the
// reference's logits, so none is ignored (and the ONNX Runtime comparison
// in package onnxruntime covers them all) — except the key bias, which adds
// q_i·bk to every score of query i alike, and softmax takes no notice.
func TestLMForwardUsesEveryWeight(t *testing.T) {
	t.Parallel()
	tokens := [][]int64{{5, 6, 7, 8}}
	base, err := mustLM(t, tinyLM, 2).Forward(tokens)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range mustLM(t, tinyLM, 2).Params() {
		m := mustLM(t, tinyLM, 2)
		q := m.Params()[i]
		for j := range q.Data {
			q.Data[j] += 0.1 * float32(1+j%3)
		}
		got, err := m.Forward(tokens)
		if err != nil {
			t.Fatal(err)
		}
		var diff float64
		for s := range got[0] {
			for v, l := range got[0][s] {
				diff = max(diff, math.Abs(float64(l-base[0][s][v])))
			}
		}
		keyBias := strings.HasSuffix(p.Name, "attn.bk")
		if keyBias && diff > 1e-6 {
			t.Errorf("changing %s changes the logits by %g", p.Name, diff)
		}
		if !keyBias && diff < 1e-4 {
			t.Errorf("changing %s changes the logits by only %g", p.Name, diff)
		}
	}
}
