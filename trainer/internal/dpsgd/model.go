package dpsgd

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/gomlx/gomlx/pkg/core/graph"
)

// InputKind is the element type of one model input.
type InputKind int

// Input element types. Batches carry []float32 or []int32 slices to match.
const (
	Float32 InputKind = iota
	Int32
)

// InputSpec describes one per-example input tensor of a model (an image, a
// label, a token sequence). Shape excludes the batch axis.
type InputSpec struct {
	Name  string
	Kind  InputKind
	Shape []int
}

// ParamSpec describes one trainable parameter. Init fills data (of length
// the product of Shape) with its initial values.
type ParamSpec struct {
	Name  string
	Shape []int
	Init  func(data []float32, rng *rand.Rand)
}

// Output is what a model's Forward returns, one value per example (shape
// [B]). Loss is the per-example loss; Correct is 1 where the prediction is
// right and 0 elsewhere (nil if the model has no notion of accuracy).
type Output struct {
	Loss    *graph.Node
	Correct *graph.Node
}

// Model is a network the engine can train with DP-SGD.
//
// Forward must create every trainable weight through the Builder's linear
// primitives (Linear, Dense, Conv2D): those are the operations whose
// per-example gradients the engine knows how to compute cheaply, and the
// only place parameters enter the graph. Everything between them (tanh,
// pooling, reshapes, the loss) is differentiated by GoMLX's autodiff.
type Model interface {
	Name() string
	Inputs() []InputSpec
	Params() []ParamSpec
	Forward(b *Builder, inputs []*graph.Node) Output
}

// tap records one linear operation z = a·W (+ bias): the engine
// differentiates the network with respect to z and forms the weight
// gradients itself, as matrix products, per example when DP is on.
type tap struct {
	a            *graph.Node // input activations; the graph sees StopGradient(a)
	z            *graph.Node // output, including the bias
	w            *graph.Node
	weight, bias string // parameter names; bias may be ""
	batchAxis    int    // axis of a holding the examples
	contractAxes []int  // axes of a contracted with W's leading axes, ascending
	tokenAxes    []int  // the other axes of a (positions, sequence steps), ascending
	// Expanded-weights mode: the per-example copies of W and the bias.
	wExp, bExp *graph.Node
}

// Builder is handed to Model.Forward. It owns the graph's parameter nodes
// and records the linear operations.
type Builder struct {
	g      *graph.Graph
	batch  int
	params map[string]*graph.Node
	specs  map[string]ParamSpec
	used   map[string]bool
	taps   []*tap
	mode   linearMode
}

// linearMode is how Linear builds its product.
type linearMode int

const (
	// linearTapped: z = StopGradient(a)·W; the engine backpropagates
	// through the linear operations itself (graph.go).
	linearTapped linearMode = iota
	// linearDirect: autodiff sees a·W (GoMLX's generic, slow product
	// gradient); the tests' reference.
	linearDirect
	// linearExpanded: "expanded weights" (Opacus): W is broadcast to one
	// copy per example and autodiff's gradient with respect to the copies
	// is the per-example gradient.
	linearExpanded
)

func newBuilder(g *graph.Graph, batch int, specs []ParamSpec, nodes []*graph.Node) *Builder {
	b := &Builder{
		g:      g,
		batch:  batch,
		params: make(map[string]*graph.Node, len(specs)),
		specs:  make(map[string]ParamSpec, len(specs)),
		used:   make(map[string]bool, len(specs)),
	}
	for i, s := range specs {
		b.params[s.Name] = nodes[i]
		b.specs[s.Name] = s
	}
	return b
}

// Graph is the graph being built.
func (b *Builder) Graph() *graph.Graph { return b.g }

// BatchSize is the (padded) number of examples in this graph.
func (b *Builder) BatchSize() int { return b.batch }

func (b *Builder) param(name string) *graph.Node {
	n, ok := b.params[name]
	if !ok {
		panic(fmt.Errorf("dpsgd: model uses unknown parameter %q", name))
	}
	if b.used[name] {
		// A weight shared by two linear operations would need its two
		// per-example contributions added before the norm is taken.
		panic(fmt.Errorf("dpsgd: parameter %q used twice; shared weights are not supported", name))
	}
	b.used[name] = true
	return n
}

// Linear computes z = Σ a·W over contractAxes of a, plus bias. W's shape
// must be a's contracted dimensions (in ascending axis order) followed by
// the output dimensions; bias (optional, "" for none) has the output
// dimensions. z's axes are a's remaining axes in order, then the output
// axes. batchAxis names the examples' axis of a; any other uncontracted
// axes (image positions, sequence steps) are "token" axes, summed over in
// a weight's per-example gradient.
func (b *Builder) Linear(a *graph.Node, batchAxis int, contractAxes []int, weight, bias string) *graph.Node {
	contract := slices.Clone(contractAxes)
	slices.Sort(contract)
	if a.Shape().Dimensions[batchAxis] != b.batch {
		panic(fmt.Errorf("dpsgd: Linear(%s): batch axis %d of %s is not the batch size %d", weight, batchAxis, a.Shape(), b.batch))
	}
	if slices.Contains(contract, batchAxis) {
		panic(fmt.Errorf("dpsgd: Linear(%s): the batch axis cannot be contracted", weight))
	}
	w := b.param(weight)
	wDims := w.Shape().Dimensions
	if len(wDims) <= len(contract) {
		panic(fmt.Errorf("dpsgd: Linear(%s): weight %v has no output axes beyond the %d contracted ones", weight, wDims, len(contract)))
	}
	for i, ax := range contract {
		if a.Shape().Dimensions[ax] != wDims[i] {
			panic(fmt.Errorf("dpsgd: Linear(%s): a %s axis %d does not match weight %v", weight, a.Shape(), ax, wDims))
		}
	}
	wContract := make([]int, len(contract))
	for i := range wContract {
		wContract[i] = i
	}
	var tokens, nonContract []int
	for ax := range a.Rank() {
		if !slices.Contains(contract, ax) {
			nonContract = append(nonContract, ax)
			if ax != batchAxis {
				tokens = append(tokens, ax)
			}
		}
	}
	t := &tap{
		a: a, w: w, weight: weight, bias: bias,
		batchAxis: batchAxis, contractAxes: contract, tokenAxes: tokens,
	}
	var z *graph.Node
	switch b.mode {
	case linearTapped:
		z = graph.DotGeneral(graph.StopGradient(a), contract, nil, w, wContract, nil)
	case linearDirect:
		z = graph.DotGeneral(a, contract, nil, w, wContract, nil)
	case linearExpanded:
		t.wExp = graph.BroadcastPrefix(w, b.batch)
		wExpContract := make([]int, len(contract))
		for i := range wExpContract {
			wExpContract[i] = i + 1
		}
		// [B, tokens..., out...] → batch back to its place among a's axes.
		z = graph.DotGeneral(a, contract, []int{batchAxis}, t.wExp, wExpContract, []int{0})
		p := slices.Index(nonContract, batchAxis)
		perm := make([]int, z.Rank())
		for i := range perm {
			switch {
			case i < p:
				perm[i] = i + 1
			case i == p:
				perm[i] = 0
			default:
				perm[i] = i
			}
		}
		if p != 0 {
			z = graph.TransposeAllAxes(z, perm...)
		}
	}
	if bias != "" {
		bn := b.param(bias)
		outDims := wDims[len(contract):]
		if !slices.Equal(bn.Shape().Dimensions, outDims) {
			panic(fmt.Errorf("dpsgd: Linear(%s): bias %s has shape %v, want %v", weight, bias, bn.Shape().Dimensions, outDims))
		}
		if b.mode == linearExpanded {
			t.bExp = graph.BroadcastPrefix(bn, b.batch)
			dims := make([]int, z.Rank())
			for i := range dims {
				dims[i] = 1
			}
			dims[slices.Index(nonContract, batchAxis)] = b.batch
			copy(dims[len(nonContract):], outDims)
			z = graph.Add(z, graph.Reshape(t.bExp, dims...))
		} else {
			z = graph.Add(z, graph.ExpandLeftToRank(bn, z.Rank()))
		}
	}
	t.z = z
	b.taps = append(b.taps, t)
	return z
}

// Dense is Linear for x of shape [B, K] and a weight [K, N]: z is [B, N].
func (b *Builder) Dense(x *graph.Node, weight, bias string) *graph.Node {
	if x.Rank() != 2 {
		panic(fmt.Errorf("dpsgd: Dense(%s) wants [B, K], got %s", weight, x.Shape()))
	}
	return b.Linear(x, 0, []int{1}, weight, bias)
}
