package lm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/trainer/internal/dpsgd"
)

// tinyLoRA adapts a tiny LM on every kind of projection (square and not),
// with short sequences.
func tinyLoRA(t testing.TB, base onnxmodel.LM, r Reduction) *LoRA {
	t.Helper()
	m, err := NewLoRA(base, LoRAConfig{Rank: 3, Alpha: 5, Targets: []string{"attn.wq", "attn.wv", "mlp.w1", "mlp.w2"}, SeqLen: 8, Reduction: r})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// randomAdapters draws every adapter (B included, unlike the zero
// initialisation) so that all gradients and the merge are non-trivial.
func randomAdapters(m *LoRA, seed uint64, scale float64) []dpsgd.NamedParam {
	r := rand.New(rand.NewPCG(seed, 7))
	var out []dpsgd.NamedParam
	for _, s := range m.Params() {
		d := make([]float32, dims(s.Shape))
		for i := range d {
			d[i] = float32(r.NormFloat64() * scale)
		}
		out = append(out, dpsgd.NamedParam{Name: s.Name, Shape: slices.Clone(s.Shape), Data: d})
	}
	return out
}

// testExamples are short examples in all three input styles, with some
// unscored positions.
func testExamples(t testing.TB) []Example {
	t.Helper()
	hf, err := HFExample([]int64{72, 105, 33, 32, 104, 105, 0, 0}, []int64{1, 1, 1, 1, 1, 1, 0, 0}, []int64{-100, -100, 33, 32, 104, 105, -100, -100})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := TinkerExample([]int64{97, 98, 99, 100, 101}, []int64{98, 99, 100, 101, 102}, []float32{0, 0.5, 1, 1, 2})
	if err != nil {
		t.Fatal(err)
	}
	return []Example{
		TextExample([]byte("the cat sat")[:9]),
		hf,
		tk,
		TextExample([]byte("dog.")),
		TextExample([]byte("a tree, tall")[:9]),
	}
}

func newLoRAEngine(t testing.TB, m *LoRA, cfg dpsgd.Config) *dpsgd.Engine {
	t.Helper()
	e, err := dpsgd.New(cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func testDPConfig(n int) dpsgd.Config {
	c := dpsgd.DefaultConfig()
	c.SampleRate = 0.5
	c.DatasetSize = n
	c.BucketMultiple = 8
	c.Seed = 5
	return c
}

// TestLoRAPerExampleGradientsMatchOneAtATime: the adapters' per-example
// gradients from the dpsgd engine (its linear taps over the token axis,
// and this package's matrix-product gradients for everything else; also
// with the engine's expanded-weights method) equal
// GoMLX's own autodiff run on one example at a time, with every product a
// plain DotGeneral — an independent computation.
func TestLoRAPerExampleGradientsMatchOneAtATime(t *testing.T) {
	for _, c := range []struct {
		red    Reduction
		method dpsgd.PerExampleMethod
	}{{ReduceMean, dpsgd.PerExampleTapped}, {ReduceSum, dpsgd.PerExampleTapped}, {ReduceMean, dpsgd.PerExampleExpanded}} {
		red := c.red
		m := tinyLoRA(t, tinyLM(t, 21), red)
		examples := testExamples(t)
		cfg := testDPConfig(len(examples))
		cfg.PerExample = c.method
		e := newLoRAEngine(t, m, cfg)
		adapters := randomAdapters(m, 1, 0.3)
		if err := e.SetParams(adapters); err != nil {
			t.Fatal(err)
		}
		b, err := m.Batch(examples)
		if err != nil {
			t.Fatal(err)
		}
		got, normSq, err := e.PerExampleGradients(b)
		if err != nil {
			t.Fatal(err)
		}
		specs := m.Params()
		wantNormSq := make([]float64, len(examples))
		for ex := range examples {
			want := oneExampleGradients(t, m, adapters, examples[ex])
			for i, s := range specs {
				n := dims(s.Shape)
				g := got[i][ex*n : (ex+1)*n]
				var scale float64
				for j, w := range want[i] {
					scale = max(scale, math.Abs(float64(w)))
					wantNormSq[ex] += float64(w) * float64(w)
					if d := math.Abs(float64(g[j]) - float64(w)); d > 1e-5*(1+math.Abs(float64(w))) {
						t.Fatalf("reduction %d, method %d, example %d, %s[%d] = %g, one-at-a-time autodiff %g", red, c.method, ex, s.Name, j, g[j], w)
					}
				}
				if scale == 0 {
					t.Errorf("example %d: %s has a zero gradient; the test would not see a wrong one", ex, s.Name)
				}
			}
			if d := math.Abs(float64(normSq[ex]) - wantNormSq[ex]); d > 1e-4*wantNormSq[ex] {
				t.Errorf("example %d: squared norm %g, want %g", ex, normSq[ex], wantNormSq[ex])
			}
		}
	}
}

// oneExampleGradients is the reference: the loss of one example,
// differentiated by GoMLX with respect to the adapters.
func oneExampleGradients(t *testing.T, m *LoRA, adapters []dpsgd.NamedParam, ex Example) [][]float32 {
	t.Helper()
	seq := m.cfg.SeqLen
	tok, tgt, w := make([]int32, seq), make([]int32, seq), make([]float32, seq)
	copy(tok, ex.Tokens)
	copy(tgt, ex.Targets)
	copy(w, ex.Weights)
	na := len(adapters)
	fn := func(ins []*graph.Node) []*graph.Node {
		byName := map[string]*graph.Node{}
		for i, a := range adapters {
			byName[a.Name] = ins[i]
		}
		n := m.network(ins[0].Graph(), graph.DotGeneral, func(x *graph.Node, name string) *graph.Node {
			return graph.DotGeneral(x, []int{2}, nil, byName[name], []int{0}, nil)
		})
		loss, _ := exampleLoss(n, ins[na], ins[na+1], ins[na+2], m.cfg.Reduction)
		return graph.Gradient(graph.ReduceAllSum(loss), ins[:na]...)
	}
	var args []any
	for _, a := range adapters {
		args = append(args, tensors.FromFlatDataAndDimensions(a.Data, a.Shape...))
	}
	args = append(args,
		tensors.FromFlatDataAndDimensions(tok, 1, seq),
		tensors.FromFlatDataAndDimensions(tgt, 1, seq),
		tensors.FromFlatDataAndDimensions(w, 1, seq))
	return execAll(t, testBackend(t), fn, args...)
}

// loraLogits runs the LoRA network (base constants + adapters, as
// training builds it) and returns its logits.
func loraLogits(t *testing.T, m *LoRA, adapters []dpsgd.NamedParam, tokens [][]int32) [][][]float32 {
	t.Helper()
	na := len(adapters)
	fn := func(ins []*graph.Node) []*graph.Node {
		byName := map[string]*graph.Node{}
		for i, a := range adapters {
			byName[a.Name] = ins[i]
		}
		n := m.network(ins[0].Graph(), dot, func(x *graph.Node, name string) *graph.Node {
			return dot(x, []int{2}, nil, byName[name], []int{0}, nil)
		})
		return []*graph.Node{n.logits(n.hidden(ins[na]))}
	}
	var args []any
	for _, a := range adapters {
		args = append(args, tensors.FromFlatDataAndDimensions(a.Data, a.Shape...))
	}
	seq := len(tokens[0])
	var flat []int32
	for _, row := range tokens {
		flat = append(flat, row...)
	}
	args = append(args, tensors.FromFlatDataAndDimensions(flat, len(tokens), seq))
	data := execAll(t, testBackend(t), fn, args...)[0]
	v := m.base.Config.Vocab
	out := make([][][]float32, len(tokens))
	for b := range out {
		for i := range seq {
			out[b] = append(out[b], data[(b*seq+i)*v:(b*seq+i+1)*v])
		}
	}
	return out
}

// TestMergeMatchesLoRAForward: the merged LM (W + Scale·A·B) gives the
// logits of the LoRA network, in the pure-Go onnxmodel reference and in
// GoMLX, with zero adapters (= the base) and with random ones, on a tiny
// model and on the shipped base (whose logits are large).
func TestMergeMatchesLoRAForward(t *testing.T) {
	shipped, _, err := LoadBase()
	if err != nil {
		t.Fatal(err)
	}
	for _, base := range []onnxmodel.LM{tinyLM(t, 31), shipped} {
		m := tinyLoRA(t, base, ReduceMean)
		r := rand.New(rand.NewPCG(2, 3))
		t32, t64 := randomTokens(r, 2, base.Config.Context)
		for _, c := range []struct {
			name     string
			adapters []dpsgd.NamedParam
		}{{"zero adapters", randomAdapters(m, 0, 0)}, {"random adapters", randomAdapters(m, 9, 0.3)}} {
			t.Run(fmt.Sprintf("dim %d/%s", base.Config.Dim, c.name), func(t *testing.T) {
				testMerge(t, m, c.adapters, c.name == "zero adapters", t32, t64)
			})
		}
	}
}

func testMerge(t *testing.T, m *LoRA, adapters []dpsgd.NamedParam, zero bool, t32 [][]int32, t64 [][]int64) {
	merged, err := m.Merge(adapters)
	if err != nil {
		t.Fatal(err)
	}
	if zero != sameLM(merged, m.base) {
		t.Fatalf("zero adapters %v, merged equals base %v", zero, !zero)
	}
	// The merged model is what onnxmodel exports.
	onnx, err := merged.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if ins, outs, err := onnxmodel.ReadIO(onnx); err != nil || len(ins) != 1 || ins[0].Name != onnxmodel.LMInput || len(outs) != 1 || outs[0].Name != onnxmodel.LMLogits {
		t.Fatalf("exported ONNX model: inputs %v, outputs %v, %v", ins, outs, err)
	}
	lora := loraLogits(t, m, adapters, t32)
	ref, err := merged.Forward(t64)
	if err != nil {
		t.Fatal(err)
	}
	run, err := NewRunner(merged)
	if err != nil {
		t.Fatal(err)
	}
	gomlx, err := run.Logits(t32)
	if err != nil {
		t.Fatal(err)
	}
	d1, scale := logitsDiff(lora, ref)
	d2, _ := logitsDiff(gomlx, ref)
	t.Logf("max |LoRA forward − merged reference| = %.3g, |merged GoMLX − merged reference| = %.3g (logits up to %.3g)", d1, d2, scale)
	if d1 > referenceTolerance*max(1, scale) || d2 > referenceTolerance*max(1, scale) {
		t.Errorf("logits differ: %g, %g", d1, d2)
	}
}

// TestLoRATrainingLeavesBaseUnchanged: DP-SGD steps change the adapters
// only; the engine holds no base weight, and the model's base stays bit
// for bit what it was given.
func TestLoRATrainingLeavesBaseUnchanged(t *testing.T) {
	t.Setenv(dpsgd.DeterministicEnv, "true")
	base := tinyLM(t, 41)
	m := tinyLoRA(t, base, ReduceMean)
	examples := testExamples(t)
	ds := m.Dataset(examples)
	cfg := testDPConfig(ds.Len())
	cfg.LR = 0.05
	e := newLoRAEngine(t, m, cfg)
	before := e.Params()
	for _, p := range before {
		if !strings.HasSuffix(p.Name, ".lora_a") && !strings.HasSuffix(p.Name, ".lora_b") {
			t.Errorf("engine parameter %q is not an adapter", p.Name)
		}
	}
	if len(before) != 2*len(m.cfg.Targets)*base.Config.Layers {
		t.Errorf("%d trainable tensors, want %d", len(before), 2*len(m.cfg.Targets)*base.Config.Layers)
	}
	for range 3 {
		b, err := e.SampleBatch(ds)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Step(b); err != nil {
			t.Fatal(err)
		}
	}
	after := e.Params()
	changed := 0
	for i := range after {
		if !slices.Equal(after[i].Data, before[i].Data) {
			changed++
		}
	}
	if changed != len(after) {
		t.Errorf("%d of %d adapter tensors changed, want all", changed, len(after))
	}
	if !sameLM(m.Base(), base) || !sameLM(m.base, base) {
		t.Error("the base weights changed under LoRA training")
	}
	merged, err := m.Merge(after)
	if err != nil {
		t.Fatal(err)
	}
	if sameLM(merged, base) {
		t.Error("the merged model equals the base after training")
	}
}
