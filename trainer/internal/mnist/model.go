package mnist

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/gomlx/gomlx/pkg/core/graph"

	"github.com/tensorguard/tensorguardflow/trainer/internal/dpsgd"
)

func inputs() []dpsgd.InputSpec {
	return []dpsgd.InputSpec{
		{Name: "image", Kind: dpsgd.Float32, Shape: []int{Side, Side}},
		{Name: "label", Kind: dpsgd.Int32},
	}
}

// uniformInit is PyTorch's default for linear and convolution layers
// (weights and biases): U(−1/√fan_in, 1/√fan_in).
func uniformInit(fanIn int) func([]float32, *rand.Rand) {
	bound := 1 / math.Sqrt(float64(fanIn))
	return func(d []float32, r *rand.Rand) {
		for i := range d {
			d[i] = float32((2*r.Float64() - 1) * bound)
		}
	}
}

// CNN is the small tanh network of Papernot et al. 2020 ("Tempered
// Sigmoid Activations for Deep Learning with Differential Privacy"), the
// end-to-end MNIST baseline of Tramer & Boneh 2021:
//
//	conv 16 8×8 stride 2 pad 2 → tanh → maxpool 2 stride 1
//	conv 32 4×4 stride 2       → tanh → maxpool 2 stride 1
//	dense 512→32 → tanh → dense 32→10
//
// 26,010 parameters.
type CNN struct{}

var _ dpsgd.Model = CNN{}

// Name identifies the model in logs and checkpoints.
func (CNN) Name() string { return "mnist-cnn" }

// Inputs are the image and its label.
func (CNN) Inputs() []dpsgd.InputSpec { return inputs() }

// Params lists the weights; convolution kernels are [kh, kw, in, out].
func (CNN) Params() []dpsgd.ParamSpec {
	return []dpsgd.ParamSpec{
		{Name: "conv1/w", Shape: []int{8, 8, 1, 16}, Init: uniformInit(64)},
		{Name: "conv1/b", Shape: []int{16}, Init: uniformInit(64)},
		{Name: "conv2/w", Shape: []int{4, 4, 16, 32}, Init: uniformInit(256)},
		{Name: "conv2/b", Shape: []int{32}, Init: uniformInit(256)},
		{Name: "fc1/w", Shape: []int{4, 4, 32, 32}, Init: uniformInit(512)},
		{Name: "fc1/b", Shape: []int{32}, Init: uniformInit(512)},
		{Name: "fc2/w", Shape: []int{32, Classes}, Init: uniformInit(32)},
		{Name: "fc2/b", Shape: []int{Classes}, Init: uniformInit(32)},
	}
}

// Forward computes the per-example cross-entropy. Images go spatial-major
// ([28, 28, B, 1]) for the convolutions; fc1 contracts the last feature map
// [4, 4, B, 32] directly, without a transpose.
func (CNN) Forward(b *dpsgd.Builder, in []*graph.Node) dpsgd.Output {
	x := graph.InsertAxes(graph.TransposeAllAxes(in[0], 1, 2, 0), -1)
	h := graph.Tanh(b.Conv2D(x, "conv1/w", "conv1/b", 2, 2)) // [13, 13, B, 16]
	h = dpsgd.MaxPool2D(h, 2, 1)                             // [12, 12, B, 16]
	h = graph.Tanh(b.Conv2D(h, "conv2/w", "conv2/b", 2, 0))  // [5, 5, B, 32]
	h = dpsgd.MaxPool2D(h, 2, 1)                             // [4, 4, B, 32]
	h = graph.Tanh(b.Linear(h, 2, []int{0, 1, 3}, "fc1/w", "fc1/b"))
	loss, correct := dpsgd.SoftmaxCrossEntropy(b.Dense(h, "fc2/w", "fc2/b"), in[1])
	return dpsgd.Output{Loss: loss, Correct: correct}
}

// MLP is a one-hidden-layer tanh network 784 → Hidden → 10 (Abadi et al.
// 2016 used 1,000 ReLU units after a PCA projection).
type MLP struct{ Hidden int }

var _ dpsgd.Model = MLP{}

// Name identifies the model in logs and checkpoints.
func (m MLP) Name() string { return fmt.Sprintf("mnist-mlp-%d", m.Hidden) }

// Inputs are the image and its label.
func (MLP) Inputs() []dpsgd.InputSpec { return inputs() }

// Params lists the two dense layers.
func (m MLP) Params() []dpsgd.ParamSpec {
	return []dpsgd.ParamSpec{
		{Name: "fc1/w", Shape: []int{Side * Side, m.Hidden}, Init: uniformInit(Side * Side)},
		{Name: "fc1/b", Shape: []int{m.Hidden}, Init: uniformInit(Side * Side)},
		{Name: "fc2/w", Shape: []int{m.Hidden, Classes}, Init: uniformInit(m.Hidden)},
		{Name: "fc2/b", Shape: []int{Classes}, Init: uniformInit(m.Hidden)},
	}
}

// Forward computes the per-example cross-entropy.
func (m MLP) Forward(b *dpsgd.Builder, in []*graph.Node) dpsgd.Output {
	x := graph.Reshape(in[0], b.BatchSize(), Side*Side)
	h := graph.Tanh(b.Dense(x, "fc1/w", "fc1/b"))
	loss, correct := dpsgd.SoftmaxCrossEntropy(b.Dense(h, "fc2/w", "fc2/b"), in[1])
	return dpsgd.Output{Loss: loss, Correct: correct}
}
