package lm

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// TestTrainingGradientMatchesAutodiff: the network with dot (gradients as
// matrix products, what the pretrainer and the LoRA model use) has the
// same gradient with respect to every weight as the same network built
// from GoMLX's own DotGeneral and differentiated by GoMLX alone.
func TestTrainingGradientMatchesAutodiff(t *testing.T) {
	m := tinyLM(t, 11)
	cfg := m.Config
	r := rand.New(rand.NewPCG(1, 1))
	var ex []Example
	for range 3 {
		text := make([]byte, 12)
		for j := range text {
			text[j] = byte('a' + r.IntN(26))
		}
		ex = append(ex, TextExample(text))
	}
	b, err := Batch(cfg, ex)
	if err != nil {
		t.Fatal(err)
	}
	params := m.Params()
	nw := len(params)
	args := []any{}
	for _, p := range params {
		args = append(args, tensors.FromFlatDataAndDimensions(p.Data, p.Shape...))
	}
	args = append(args,
		tensors.FromFlatDataAndDimensions(b.Inputs[0].([]int32), b.Size, cfg.Context),
		tensors.FromFlatDataAndDimensions(b.Inputs[1].([]int32), b.Size, cfg.Context),
		tensors.FromFlatDataAndDimensions(b.Inputs[2].([]float32), b.Size, cfg.Context))
	build := func(d dotFunc) func([]*graph.Node) []*graph.Node {
		return func(ins []*graph.Node) []*graph.Node {
			n := weightsAsParams(cfg, ins[:nw], d)
			ce, _ := tokenLoss(n.logits(n.hidden(ins[nw])), ins[nw+1])
			loss := graph.ReduceAllSum(graph.Mul(ce, ins[nw+2]))
			return append([]*graph.Node{loss}, graph.Gradient(loss, ins[:nw]...)...)
		}
	}
	backend := testBackend(t)
	got := execAll(t, backend, build(dot), args...)
	want := execAll(t, backend, build(graph.DotGeneral), args...)
	for i := range got {
		name := "loss"
		if i > 0 {
			name = params[i-1].Name
		}
		var scale float64
		for _, v := range want[i] {
			scale = max(scale, math.Abs(float64(v)))
		}
		if scale == 0 {
			t.Errorf("%s: zero gradient, the comparison would not see a wrong one", name)
		}
		if d := maxAbsDiff(got[i], want[i]); d > 1e-5*max(1, scale) {
			t.Errorf("%s: differs by %g (scale %g)", name, d, scale)
		}
	}
}
