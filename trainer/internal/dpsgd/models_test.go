package dpsgd

import (
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
)

func TestMain(m *testing.M) {
	if _, ok := os.LookupEnv(BackendEnv); !ok {
		os.Setenv(BackendEnv, DefaultBackendConfig)
	}
	os.Exit(m.Run())
}

func uniformInit(fanIn int) func([]float32, *rand.Rand) {
	bound := 1 / math.Sqrt(float64(fanIn))
	return func(d []float32, r *rand.Rand) {
		for i := range d {
			d[i] = float32((2*r.Float64() - 1) * bound)
		}
	}
}

// tinyMLP: x[6] → dense 5 → tanh → dense 3.
type tinyMLP struct{}

func (tinyMLP) Name() string { return "tiny-mlp" }
func (tinyMLP) Inputs() []InputSpec {
	return []InputSpec{{Name: "x", Kind: Float32, Shape: []int{6}}, {Name: "y", Kind: Int32}}
}
func (tinyMLP) Params() []ParamSpec {
	return []ParamSpec{
		{Name: "w1", Shape: []int{6, 5}, Init: uniformInit(6)},
		{Name: "b1", Shape: []int{5}, Init: uniformInit(6)},
		{Name: "w2", Shape: []int{5, 3}, Init: uniformInit(5)},
		{Name: "b2", Shape: []int{3}, Init: uniformInit(5)},
	}
}
func (tinyMLP) Forward(b *Builder, in []*graph.Node) Output {
	h := graph.Tanh(b.Dense(in[0], "w1", "b1"))
	loss, correct := SoftmaxCrossEntropy(b.Dense(h, "w2", "b2"), in[1])
	return Output{Loss: loss, Correct: correct}
}

// tinyCNN: x[7,7] → conv 3 3×3 stride 2 pad 1 → tanh → maxpool 2/1 →
// conv 4 2×2 stride 1 → tanh → dense 3: every layer kind, token axes,
// padding, a pooled input feeding a convolution.
type tinyCNN struct{}

func (tinyCNN) Name() string { return "tiny-cnn" }
func (tinyCNN) Inputs() []InputSpec {
	return []InputSpec{{Name: "x", Kind: Float32, Shape: []int{7, 7}}, {Name: "y", Kind: Int32}}
}
func (tinyCNN) Params() []ParamSpec {
	return []ParamSpec{
		{Name: "c1", Shape: []int{3, 3, 1, 3}, Init: uniformInit(9)},
		{Name: "c1b", Shape: []int{3}, Init: uniformInit(9)},
		{Name: "c2", Shape: []int{2, 2, 3, 4}, Init: uniformInit(12)},
		{Name: "c2b", Shape: []int{4}, Init: uniformInit(12)},
		{Name: "fc", Shape: []int{2, 2, 4, 3}, Init: uniformInit(16)},
		{Name: "fcb", Shape: []int{3}, Init: uniformInit(16)},
	}
}
func (tinyCNN) Forward(b *Builder, in []*graph.Node) Output {
	// [B, 7, 7] → [7, 7, B, 1]
	x := graph.InsertAxes(graph.TransposeAllAxes(in[0], 1, 2, 0), -1)
	h := graph.Tanh(b.Conv2D(x, "c1", "c1b", 2, 1)) // [4, 4, B, 3]
	h = MaxPool2D(h, 2, 1)                          // [3, 3, B, 3]
	h = graph.Tanh(b.Conv2D(h, "c2", "c2b", 1, 0))  // [2, 2, B, 4]
	logits := b.Linear(h, 2, []int{0, 1, 3}, "fc", "fcb")
	loss, correct := SoftmaxCrossEntropy(logits, in[1])
	return Output{Loss: loss, Correct: correct}
}

// memDataset is a synthetic labelled dataset.
type memDataset struct {
	model Model
	x     []float32
	y     []int32
}

func newMemDataset(m Model, n int, seed uint64) *memDataset {
	r := rand.New(rand.NewPCG(seed, 1))
	per := numElements(m.Inputs()[0].Shape)
	d := &memDataset{model: m, x: make([]float32, n*per), y: make([]int32, n)}
	for i := range n {
		d.y[i] = int32(r.IntN(3))
		for j := range per {
			// Class-dependent mean so there is something to learn.
			d.x[i*per+j] = float32(r.NormFloat64() + float64(d.y[i]-1)*float64(j%3-1))
		}
	}
	return d
}

func (d *memDataset) Len() int { return len(d.y) }

func (d *memDataset) Batch(idx []int) (Batch, error) {
	per := len(d.x) / len(d.y)
	x := make([]float32, 0, len(idx)*per)
	y := make([]int32, 0, len(idx))
	for _, i := range idx {
		x = append(x, d.x[i*per:(i+1)*per]...)
		y = append(y, d.y[i])
	}
	return Batch{Size: len(idx), Inputs: []any{x, y}}, nil
}

func firstN(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}
