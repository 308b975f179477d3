package onnxmodel

import (
	"fmt"
	"math"
)

// The names of the MLP model's input and outputs.
const (
	MLPInput  = "x"      // float32 [batch, In]
	MLPLogits = "logits" // float32 [batch, Out]
	MLPProbs  = "probs"  // float32 [batch, Out], softmax of the logits
	MLPClass  = "class"  // int64 [batch], argmax of the logits
)

// MLP is a two-layer perceptron, logits = relu(x·W1 + B1)·W2 + B2, with
// row-major weights: W1 is In×Hidden, W2 is Hidden×Out.
type MLP struct {
	In, Hidden, Out int
	W1, B1, W2, B2  []float32
}

// NewMLP returns an MLP whose weights are drawn from seed by a fixed
// generator (Glorot-uniform weights, small biases), so the same arguments
// give the same model on every machine and Go version.
func NewMLP(in, hidden, out int, seed uint64) MLP {
	r := splitmix64(seed)
	uniform := func(n int, limit float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32((r.float64()*2 - 1) * limit)
		}
		return v
	}
	return MLP{
		In: in, Hidden: hidden, Out: out,
		W1: uniform(in*hidden, math.Sqrt(6/float64(in+hidden))),
		B1: uniform(hidden, 0.1),
		W2: uniform(hidden*out, math.Sqrt(6/float64(hidden+out))),
		B2: uniform(out, 0.1),
	}
}

func (m MLP) check() error {
	if m.In <= 0 || m.Hidden <= 0 || m.Out <= 0 {
		return fmt.Errorf("onnxmodel: MLP sizes must be positive, got %d×%d×%d", m.In, m.Hidden, m.Out)
	}
	if len(m.W1) != m.In*m.Hidden || len(m.B1) != m.Hidden || len(m.W2) != m.Hidden*m.Out || len(m.B2) != m.Out {
		return fmt.Errorf("onnxmodel: MLP %d×%d×%d has weights of the wrong sizes", m.In, m.Hidden, m.Out)
	}
	return nil
}

// Model returns the MLP as an ONNX graph: Gemm, Relu, Gemm, then Softmax
// and ArgMax over the logits. The batch dimension is dynamic.
func (m MLP) Model() (Model, error) {
	if err := m.check(); err != nil {
		return Model{}, err
	}
	in, hid, out := int64(m.In), int64(m.Hidden), int64(m.Out)
	return Model{
		ProducerName: "tensorguardflow-onnxmodel",
		Graph: Graph{
			Name: "mlp",
			Nodes: []Node{
				{Name: "fc1", OpType: "Gemm", Inputs: []string{MLPInput, "W1", "B1"}, Outputs: []string{"fc1"}},
				{Name: "relu", OpType: "Relu", Inputs: []string{"fc1"}, Outputs: []string{"hidden"}},
				{Name: "fc2", OpType: "Gemm", Inputs: []string{"hidden", "W2", "B2"}, Outputs: []string{MLPLogits}},
				{Name: "softmax", OpType: "Softmax", Inputs: []string{MLPLogits}, Outputs: []string{MLPProbs}, Attrs: []Attr{IntAttr("axis", 1)}},
				{Name: "argmax", OpType: "ArgMax", Inputs: []string{MLPLogits}, Outputs: []string{MLPClass}, Attrs: []Attr{IntAttr("axis", 1), IntAttr("keepdims", 0)}},
			},
			Initializers: []Tensor{
				{Name: "W1", Dims: []int64{in, hid}, Float: m.W1},
				{Name: "B1", Dims: []int64{hid}, Float: m.B1},
				{Name: "W2", Dims: []int64{hid, out}, Float: m.W2},
				{Name: "B2", Dims: []int64{out}, Float: m.B2},
			},
			Inputs: []ValueInfo{{Name: MLPInput, Type: Float, Shape: []int64{-1, in}}},
			Outputs: []ValueInfo{
				{Name: MLPLogits, Type: Float, Shape: []int64{-1, out}},
				{Name: MLPProbs, Type: Float, Shape: []int64{-1, out}},
				{Name: MLPClass, Type: Int64, Shape: []int64{-1}},
			},
		},
	}, nil
}

// Encode is m.Model() encoded: the MLP as .onnx bytes.
func (m MLP) Encode() ([]byte, error) {
	model, err := m.Model()
	if err != nil {
		return nil, err
	}
	return model.Encode()
}

// MLPOutput is what the MLP computes for a batch, row-major.
type MLPOutput struct {
	Logits []float32 // batch×Out
	Probs  []float32 // batch×Out
	Class  []int64   // batch
}

// Forward is the reference evaluation of the MLP on a batch: x holds
// batch×In values, row-major. Sums are taken in float64 and rounded once, so
// the result is the float32 nearest the exact one; ONNX Runtime's float32
// kernels land within a few ulps of it.
func (m MLP) Forward(x []float32) (MLPOutput, error) {
	if err := m.check(); err != nil {
		return MLPOutput{}, err
	}
	if len(x) == 0 || len(x)%m.In != 0 {
		return MLPOutput{}, fmt.Errorf("onnxmodel: MLP input has %d values, not a positive multiple of %d", len(x), m.In)
	}
	batch := len(x) / m.In
	out := MLPOutput{
		Logits: make([]float32, batch*m.Out),
		Probs:  make([]float32, batch*m.Out),
		Class:  make([]int64, batch),
	}
	hidden := make([]float32, m.Hidden)
	for b := range batch {
		row := x[b*m.In : (b+1)*m.In]
		for j := range m.Hidden {
			s := float64(m.B1[j])
			for k, xv := range row {
				s += float64(xv) * float64(m.W1[k*m.Hidden+j])
			}
			hidden[j] = float32(max(s, 0))
		}
		logits := out.Logits[b*m.Out : (b+1)*m.Out]
		for j := range m.Out {
			s := float64(m.B2[j])
			for k, h := range hidden {
				s += float64(h) * float64(m.W2[k*m.Out+j])
			}
			logits[j] = float32(s)
		}
		best := 0
		for j, l := range logits {
			if l > logits[best] {
				best = j
			}
		}
		out.Class[b] = int64(best)
		var sum float64
		for _, l := range logits {
			sum += math.Exp(float64(l - logits[best]))
		}
		for j, l := range logits {
			out.Probs[b*m.Out+j] = float32(math.Exp(float64(l-logits[best])) / sum)
		}
	}
	return out, nil
}

// rng is splitmix64: tiny, fixed, and good enough for test weights.
type rng struct{ state uint64 }

func splitmix64(seed uint64) *rng { return &rng{state: seed} }

func (r *rng) next() uint64 {
	r.state += 0x9e3779b97f4a7c15
	z := r.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// float64 returns a value in [0, 1) with 53 random bits.
func (r *rng) float64() float64 { return float64(r.next()>>11) / (1 << 53) }

// RandomInputs returns n values uniform in [-1, 1), drawn from seed by the
// same fixed generator as NewMLP: reproducible inputs for tests and
// benchmarks.
func RandomInputs(n int, seed uint64) []float32 {
	r := splitmix64(seed)
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.float64()*2 - 1)
	}
	return v
}
