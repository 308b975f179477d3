package dpsgd

import (
	"math"
)

// adamState holds AdamW's moment estimates and step count.
type adamState struct {
	m, v [][]float32
	t    int
}

func newAdamState(params [][]float32) adamState {
	s := adamState{m: make([][]float32, len(params)), v: make([][]float32, len(params))}
	for i, p := range params {
		s.m[i] = make([]float32, len(p))
		s.v[i] = make([]float32, len(p))
	}
	return s
}

// update applies one AdamW step (Loshchilov & Hutter; PyTorch's AdamW):
// θ ← θ·(1 − lr·λ) − lr·m̂/(√v̂ + ε).
func (s *adamState) update(params [][]float32, grads [][]float64, cfg Config) {
	s.t++
	b1, b2 := cfg.Beta1, cfg.Beta2
	c1 := 1 - math.Pow(b1, float64(s.t))
	c2 := 1 - math.Pow(b2, float64(s.t))
	decay := 1 - cfg.LR*cfg.WeightDecay
	for i, p := range params {
		m, v, g := s.m[i], s.v[i], grads[i]
		for j := range p {
			mj := b1*float64(m[j]) + (1-b1)*g[j]
			vj := b2*float64(v[j]) + (1-b2)*g[j]*g[j]
			m[j], v[j] = float32(mj), float32(vj)
			step := cfg.LR * (mj / c1) / (math.Sqrt(vj/c2) + cfg.Eps)
			p[j] = float32(float64(p[j])*decay - step)
		}
	}
}
