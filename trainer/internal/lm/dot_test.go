package lm

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// TestDotGradientMatchesAutodiff compares dot's hand-written gradients with
// GoMLX's own DotGeneral gradient on the layouts the model uses, and some
// it does not (batch axes not leading, several contracted axes).
func TestDotGradientMatchesAutodiff(t *testing.T) {
	cases := []struct {
		name             string
		lhsDims, rhsDims []int
		lc, lb, rc, rb   []int
		constRHS         bool
	}{
		{"projection", []int{2, 3, 4}, []int{4, 5}, []int{2}, nil, []int{0}, nil, false},
		{"frozen projection", []int{2, 3, 4}, []int{4, 5}, []int{2}, nil, []int{0}, nil, true},
		{"tied head", []int{2, 3, 4}, []int{7, 4}, []int{2}, nil, []int{1}, nil, false},
		{"attention scores", []int{2, 3, 2, 4}, []int{2, 3, 2, 4}, []int{3}, []int{0, 2}, []int{3}, []int{0, 2}, false},
		{"attention values", []int{2, 2, 3, 3}, []int{2, 3, 2, 4}, []int{3}, []int{0, 1}, []int{1}, []int{0, 2}, false},
		{"two contracted, batch last", []int{3, 4, 2, 5}, []int{5, 3, 6, 2}, []int{0, 3}, []int{2}, []int{1, 0}, []int{3}, false},
	}
	backend := testBackend(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			lhs := randTensor(r, c.lhsDims)
			rhs := randTensor(r, c.rhsDims)
			build := func(custom bool) func(ins []*graph.Node) []*graph.Node {
				return func(ins []*graph.Node) []*graph.Node {
					l, rr := ins[0], ins[1]
					if c.constRHS {
						rr = graph.ConstTensor(l.Graph(), rhs)
					}
					var z *graph.Node
					if custom {
						z = dot(l, c.lc, c.lb, rr, c.rc, c.rb)
					} else {
						z = graph.DotGeneral(l, c.lc, c.lb, rr, c.rc, c.rb)
					}
					// A non-uniform output gradient.
					w := graph.Sin(graph.IotaFull(l.Graph(), z.Shape()))
					loss := graph.ReduceAllSum(graph.Mul(graph.Square(z), w))
					grads := graph.Gradient(loss, ins[0], ins[1])
					return []*graph.Node{z, grads[0], grads[1]}
				}
			}
			want := execAll(t, backend, build(false), lhs, rhs)
			got := execAll(t, backend, build(true), lhs, rhs)
			for i, name := range []string{"output", "∂lhs", "∂rhs"} {
				if c.constRHS && i == 2 {
					continue
				}
				if d := maxAbsDiff(got[i], want[i]); d > 1e-4 {
					t.Errorf("%s differs by %g", name, d)
				}
			}
		})
	}
}

func randTensor(r *rand.Rand, dims []int) *tensors.Tensor {
	n := 1
	for _, d := range dims {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return tensors.FromFlatDataAndDimensions(v, dims...)
}

func execAll(t *testing.T, backend backendT, fn func([]*graph.Node) []*graph.Node, args ...any) [][]float32 {
	t.Helper()
	exec, err := graph.NewExec(backend, fn)
	if err != nil {
		t.Fatal(err)
	}
	outs, err := exec.Exec(args...)
	if err != nil {
		t.Fatal(err)
	}
	res := make([][]float32, len(outs))
	for i, o := range outs {
		res[i] = tensors.MustCopyFlatData[float32](o)
	}
	return res
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var m float64
	for i := range a {
		m = max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}
