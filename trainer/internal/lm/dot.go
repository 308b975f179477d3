package lm

import (
	"fmt"
	"slices"

	"github.com/gomlx/gomlx/pkg/core/graph"
)

// dot is graph.DotGeneral whose gradient is itself two DotGenerals.
//
// GoMLX's registered gradient of DotGeneral broadcasts the output
// gradient against the other operand and reduces the product
// ([batch, cross, cross, contracted] materialised); in the pure-Go
// backend that is about 10× slower than a matrix product and, for the
// attention products, hundreds of megabytes per call (DESIGN.md §3).
// Here the product is computed from StopGradient'ed operands, so autodiff
// never visits it, and the gradients reach the operands through
// custom-gradient identities instead:
//
//	l, r := Identity*(lhs), Identity*(rhs)      (custom gradients below)
//	z    := DotGeneral(SG(l), SG(r)) + 0·(Σl + Σr)
//	out  := Identity*(z)                         (records ∂/∂out = v)
//
// The zero term keeps l and r on autodiff's path (costing one reduction
// each); reverse mode visits out before l and r (nodes are processed in
// reverse creation order), so when their gradient functions run, v has
// been recorded and they return v·rᵀ and lᵀ·v as DotGenerals. Every
// Gradient call that reaches out records its own v before it reaches l
// and r, so repeated Gradient calls on one graph (the dpsgd engine makes
// one per linear operation) each see their own v.
//
// An operand that is a constant (frozen weights) gets no gradient.
func dot(lhs *graph.Node, lhsContract, lhsBatch []int, rhs *graph.Node, rhsContract, rhsBatch []int) *graph.Node {
	if len(lhsContract) != len(rhsContract) || len(lhsBatch) != len(rhsBatch) {
		panic(fmt.Errorf("lm: dot: %d/%d contracting and %d/%d batch axes", len(lhsContract), len(rhsContract), len(lhsBatch), len(rhsBatch)))
	}
	g := lhs.Graph()
	var v *graph.Node // ∂root/∂out of the Gradient call in progress
	recorded := func() *graph.Node {
		if v == nil {
			panic("lm: dot: operand gradient requested before the output's (autodiff order changed?)")
		}
		return v
	}
	l, r := lhs, rhs
	var keep *graph.Node
	if wantsGradient(lhs) {
		l = graph.IdentityWithCustomGradient(lhs, func(_, _ *graph.Node) *graph.Node {
			return dotGradLHS(recorded(), lhs, lhsContract, lhsBatch, rhs, rhsContract, rhsBatch)
		})
		keep = graph.ReduceAllSum(l)
	}
	if wantsGradient(rhs) {
		r = graph.IdentityWithCustomGradient(rhs, func(_, _ *graph.Node) *graph.Node {
			return dotGradRHS(recorded(), lhs, lhsContract, lhsBatch, rhs, rhsContract, rhsBatch)
		})
		s := graph.ReduceAllSum(r)
		if keep == nil {
			keep = s
		} else {
			keep = graph.Add(keep, s)
		}
	}
	z := graph.DotGeneral(graph.StopGradient(l), lhsContract, lhsBatch, graph.StopGradient(r), rhsContract, rhsBatch)
	if keep == nil {
		return z
	}
	z = graph.Add(z, graph.Mul(graph.ScalarZero(g, z.DType()), keep))
	return graph.IdentityWithCustomGradient(z, func(_, grad *graph.Node) *graph.Node {
		v = grad
		return grad
	})
}

// wantsGradient is false for constants, which have no gradient to
// receive.
func wantsGradient(n *graph.Node) bool {
	return n.Type() != graph.NodeTypeConstant
}

// crossAxes are the axes of an operand that are neither contracted nor
// batch axes, ascending: they appear in the product's output in this order.
func crossAxes(rank int, contract, batch []int) []int {
	var out []int
	for ax := range rank {
		if !slices.Contains(contract, ax) && !slices.Contains(batch, ax) {
			out = append(out, ax)
		}
	}
	return out
}

// dotGradLHS is ∂/∂lhs given v = ∂/∂out, out = [batch, lhsCross, rhsCross]:
// v contracted with rhs over rhs's cross axes (batch axes aligned), giving
// [batch, lhsCross, rhsContract (ascending rhs order)], then transposed to
// lhs's axis order.
func dotGradLHS(v, lhs *graph.Node, lhsContract, lhsBatch []int, rhs *graph.Node, rhsContract, rhsBatch []int) *graph.Node {
	nb := len(lhsBatch)
	lCross := crossAxes(lhs.Rank(), lhsContract, lhsBatch)
	rCross := crossAxes(rhs.Rank(), rhsContract, rhsBatch)
	vBatch := axesFrom(0, nb)
	vContract := axesFrom(nb+len(lCross), len(rCross))
	d := graph.DotGeneral(v, vContract, vBatch, rhs, rCross, rhsBatch)
	// d's axes name lhs axes: the batch ones, the cross ones, then the
	// lhs partners of rhs's contracting axes in ascending rhs order.
	rest := crossAxes(rhs.Rank(), rCross, rhsBatch) // = rhsContract, ascending
	order := slices.Clone(lhsBatch)
	order = append(order, lCross...)
	for _, ra := range rest {
		order = append(order, lhsContract[slices.Index(rhsContract, ra)])
	}
	return toAxisOrder(d, order)
}

// dotGradRHS is ∂/∂rhs: lhs contracted with v over lhs's cross axes,
// giving [batch, lhsContract (ascending lhs order), rhsCross], then
// transposed to rhs's axis order.
func dotGradRHS(v, lhs *graph.Node, lhsContract, lhsBatch []int, rhs *graph.Node, rhsContract, rhsBatch []int) *graph.Node {
	nb := len(lhsBatch)
	lCross := crossAxes(lhs.Rank(), lhsContract, lhsBatch)
	rCross := crossAxes(rhs.Rank(), rhsContract, rhsBatch)
	vBatch := axesFrom(0, nb)
	vContract := axesFrom(nb, len(lCross))
	d := graph.DotGeneral(lhs, lCross, lhsBatch, v, vContract, vBatch)
	rest := crossAxes(lhs.Rank(), lCross, lhsBatch) // = lhsContract, ascending
	order := slices.Clone(rhsBatch)
	for _, la := range rest {
		order = append(order, rhsContract[slices.Index(lhsContract, la)])
	}
	order = append(order, rCross...)
	return toAxisOrder(d, order)
}

// toAxisOrder transposes x, whose axis i is axis order[i] of the wanted
// result, into that result.
func toAxisOrder(x *graph.Node, order []int) *graph.Node {
	perm := make([]int, len(order))
	for i := range perm {
		perm[i] = slices.Index(order, i)
	}
	if slices.IsSorted(perm) {
		return x
	}
	return graph.TransposeAllAxes(x, perm...)
}

func axesFrom(start, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = start + i
	}
	return out
}
