package onnxmodel

import "math"

// Forward is the reference evaluation of the LM: for a batch of token
// sequences (checked as [LMConfig.InputIDs] checks them) it returns the
// logits, [batch][seq][Vocab]. It is written from the architecture in the
// package doc, not from the graph [LM.Model] builds: it loops over the keys
// j ≤ i instead of masking, and computes in float64 throughout, rounding
// once at the end, so it is the float32 nearest the exact result and
// ONNX Runtime's float32 kernels can be judged against it.
func (m LM) Forward(tokens [][]int64) ([][][]float32, error) {
	if err := m.checkShapes(); err != nil {
		return nil, err
	}
	if _, _, err := m.Config.InputIDs(tokens); err != nil {
		return nil, err
	}
	out := make([][][]float32, len(tokens))
	for b, seq := range tokens {
		out[b] = m.forwardSequence(seq)
	}
	return out, nil
}

// forwardSequence evaluates one sequence; activations are [seq][width]
// flattened row-major in float64.
func (m LM) forwardSequence(tokens []int64) [][]float32 {
	c := m.Config
	n, d := len(tokens), c.Dim
	x := make([]float64, n*d)
	for i, tok := range tokens {
		for j := range d {
			x[i*d+j] = float64(m.TokenEmbedding[int(tok)*d+j]) + float64(m.PositionEmbedding[i*d+j])
		}
	}
	headDim := d / c.Heads
	scale := 1 / math.Sqrt(float64(headDim))
	context := make([]float64, n*d)
	weights := make([]float64, n)
	for _, blk := range m.Blocks {
		h := layerNorm(x, d, blk.Norm1Scale, blk.Norm1Bias)
		q := affine(h, d, d, blk.WQ, blk.BQ)
		k := affine(h, d, d, blk.WK, blk.BK)
		v := affine(h, d, d, blk.WV, blk.BV)
		clear(context)
		for hd := range c.Heads {
			off := hd * headDim
			for i := range n {
				qi := q[i*d+off : i*d+off+headDim]
				// Causal: query i sees keys 0..i only.
				best := math.Inf(-1)
				for j := 0; j <= i; j++ {
					kj := k[j*d+off : j*d+off+headDim]
					var s float64
					for t, qv := range qi {
						s += qv * kj[t]
					}
					weights[j] = s * scale
					best = max(best, weights[j])
				}
				var sum float64
				for j := 0; j <= i; j++ {
					weights[j] = math.Exp(weights[j] - best)
					sum += weights[j]
				}
				ci := context[i*d+off : i*d+off+headDim]
				for j := 0; j <= i; j++ {
					w := weights[j] / sum
					vj := v[j*d+off : j*d+off+headDim]
					for t := range ci {
						ci[t] += w * vj[t]
					}
				}
			}
		}
		addInto(x, affine(context, d, d, blk.WO, blk.BO))

		h = layerNorm(x, d, blk.Norm2Scale, blk.Norm2Bias)
		a := affine(h, d, c.FF, blk.W1, blk.B1)
		for i, av := range a {
			a[i] = 0.5 * av * (1 + math.Erf(av/math.Sqrt2))
		}
		addInto(x, affine(a, c.FF, d, blk.W2, blk.B2))
	}
	h := layerNorm(x, d, m.FinalNormScale, m.FinalNormBias)
	logits := make([][]float32, n)
	for i := range n {
		hi := h[i*d : (i+1)*d]
		row := make([]float32, c.Vocab)
		for tok := range row {
			// Tied head: the logit of a token is h · its embedding.
			e := m.TokenEmbedding[tok*d : (tok+1)*d]
			var s float64
			for j, hv := range hi {
				s += hv * float64(e[j])
			}
			row[tok] = float32(s)
		}
		logits[i] = row
	}
	return logits
}

// layerNorm normalizes each row of x (width d) over its d values, with the
// population variance, and applies scale and bias.
func layerNorm(x []float64, d int, scale, bias []float32) []float64 {
	out := make([]float64, len(x))
	for r := 0; r < len(x); r += d {
		row := x[r : r+d]
		var mean float64
		for _, v := range row {
			mean += v
		}
		mean /= float64(d)
		var variance float64
		for _, v := range row {
			variance += (v - mean) * (v - mean)
		}
		variance /= float64(d)
		inv := 1 / math.Sqrt(variance+LayerNormEpsilon)
		for j, v := range row {
			out[r+j] = (v-mean)*inv*float64(scale[j]) + float64(bias[j])
		}
	}
	return out
}

// affine returns x·W + b for the rows of x (width in); W is [in, out]
// row-major.
func affine(x []float64, in, out int, w, b []float32) []float64 {
	rows := len(x) / in
	y := make([]float64, rows*out)
	for r := range rows {
		yr := y[r*out : (r+1)*out]
		for j, bv := range b {
			yr[j] = float64(bv)
		}
		for k, xv := range x[r*in : (r+1)*in] {
			wk := w[k*out : (k+1)*out]
			for j, wv := range wk {
				yr[j] += xv * float64(wv)
			}
		}
	}
	return y
}

func addInto(x, y []float64) {
	for i, v := range y {
		x[i] += v
	}
}
