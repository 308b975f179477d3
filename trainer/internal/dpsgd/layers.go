package dpsgd

import (
	"fmt"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// Convolution and pooling for images held "spatial-major", as
// [H, W, B, C]: height, width, batch, channels. With the positions leading,
// a window of positions is one Gather of whole [B, C] slabs, whose gradient
// is a ScatterSum; both exist in the pure-Go backend, while the gradients of
// its native convolution, Pad, Slice and max-pooling do not (DESIGN.md §3).

// Conv2D is a 2-D convolution of x [H, W, B, C] with weight
// [kh, kw, C, N] (and bias [N], optional): zero padding pad on every side,
// the given stride; the result is [Ho, Wo, B, N]. It is Linear over the
// image patches, so its per-example gradient is a batched matrix product.
func (b *Builder) Conv2D(x *graph.Node, weight, bias string, stride, pad int) *graph.Node {
	if x.Rank() != 4 {
		panic(fmt.Errorf("dpsgd: Conv2D(%s) wants [H, W, B, C], got %s", weight, x.Shape()))
	}
	spec, ok := b.specs[weight]
	if !ok || len(spec.Shape) != 4 {
		panic(fmt.Errorf("dpsgd: Conv2D(%s): weight must be [kh, kw, C, N]", weight))
	}
	kh, kw := spec.Shape[0], spec.Shape[1]
	patches := Patches(ZeroPad2D(x, pad), kh, kw, stride)
	// patches: [Ho, Wo, kh, kw, B, C]; contract kh, kw, C with the weight.
	return b.Linear(patches, 4, []int{2, 3, 5}, weight, bias)
}

// ZeroPad2D adds pad zero rows and columns on each side of x [H, W, ...].
func ZeroPad2D(x *graph.Node, pad int) *graph.Node {
	if pad == 0 {
		return x
	}
	for axis := range 2 {
		dims := x.Shape().Clone().Dimensions
		dims[axis] = pad
		zeros := graph.Zeros(x.Graph(), shapes.Make(x.DType(), dims...))
		x = graph.Concatenate([]*graph.Node{zeros, x, zeros}, axis)
	}
	return x
}

// Patches extracts the kh×kw windows of x [H, W, rest...] at the given
// stride (no padding): [Ho, Wo, kh, kw, rest...].
func Patches(x *graph.Node, kh, kw, stride int) *graph.Node {
	h, w := x.Shape().Dimensions[0], x.Shape().Dimensions[1]
	ho, wo := (h-kh)/stride+1, (w-kw)/stride+1
	if ho <= 0 || wo <= 0 {
		panic(fmt.Errorf("dpsgd: window %dx%d larger than input %dx%d", kh, kw, h, w))
	}
	idx := make([]int32, 0, ho*wo*kh*kw*2)
	for i := range ho {
		for j := range wo {
			for di := range kh {
				for dj := range kw {
					idx = append(idx, int32(i*stride+di), int32(j*stride+dj))
				}
			}
		}
	}
	indices := graph.ConstTensor(x.Graph(), tensors.FromFlatDataAndDimensions(idx, ho, wo, kh, kw, 2))
	return graph.Gather(x, indices)
}

// MaxPool2D is max pooling over windows of x [H, W, B, C], as the maximum of
// window-many shifted gathers (each differentiable).
func MaxPool2D(x *graph.Node, window, stride int) *graph.Node {
	h, w := x.Shape().Dimensions[0], x.Shape().Dimensions[1]
	ho, wo := (h-window)/stride+1, (w-window)/stride+1
	if ho <= 0 || wo <= 0 {
		panic(fmt.Errorf("dpsgd: pooling window %d larger than input %dx%d", window, h, w))
	}
	var out *graph.Node
	for di := range window {
		for dj := range window {
			idx := make([]int32, 0, ho*wo*2)
			for i := range ho {
				for j := range wo {
					idx = append(idx, int32(i*stride+di), int32(j*stride+dj))
				}
			}
			indices := graph.ConstTensor(x.Graph(), tensors.FromFlatDataAndDimensions(idx, ho, wo, 2))
			shifted := graph.Gather(x, indices)
			if out == nil {
				out = shifted
			} else {
				out = graph.Max(out, shifted)
			}
		}
	}
	return out
}

// SoftmaxCrossEntropy returns the per-example cross-entropy of logits
// [B, K] against integer labels [B], and 1/0 for a correct/wrong argmax.
func SoftmaxCrossEntropy(logits, labels *graph.Node) (loss, correct *graph.Node) {
	k := logits.Shape().Dimensions[1]
	top := graph.StopGradient(graph.ReduceMax(logits, 1))
	shifted := graph.Sub(logits, graph.InsertAxes(top, -1))
	logSumExp := graph.Log(graph.ReduceSum(graph.Exp(shifted), 1))
	oneHot := graph.ConvertDType(graph.Equal(
		graph.Iota(logits.Graph(), shapes.Make(labels.DType(), labels.Shape().Dimensions[0], k), 1),
		graph.InsertAxes(labels, -1)), logits.DType())
	picked := graph.ReduceSum(graph.Mul(shifted, oneHot), 1)
	loss = graph.Sub(logSumExp, picked)
	pred := graph.ArgMax(logits, 1, labels.DType())
	correct = graph.ConvertDType(graph.Equal(pred, labels), logits.DType())
	return loss, correct
}
