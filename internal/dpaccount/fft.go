package dpaccount

import (
	"math"
	"math/bits"
	"sync"
)

// A small FFT for the PRV accountant: radix 2, with stages fused in pairs
// (radix 2²) to halve the passes over memory. The forward transform is
// decimation in frequency and leaves its output in bit-reversed order; the
// inverse is decimation in time and takes its input in that order; so no
// bit-reversal permutation is ever done (on 2^19 points it costs as much
// as the transform). The twiddle factors are computed directly, not by
// recurrence, and cached per length.

var twiddleCache sync.Map // int → []complex128

// maxCachedTwiddles is the largest length whose twiddles are kept (8 MiB;
// all cached lengths together at most twice that). Longer transforms
// recompute theirs, which costs little next to the transform itself.
const maxCachedTwiddles = 1 << 19

// stageTwiddles returns the twiddle factors of every stage of a length-n
// transform, laid out so that each stage reads them contiguously: the
// stage combining halves of length m uses w[m+k] = exp(−πik/m), k < m.
// The last stage's n/2 factors come from n/8+1 sines and cosines of
// angles up to π/4 (the most accurate range) by the symmetries of the
// circle; every earlier stage's are a subsample of them. Nothing is
// computed by recurrence, which would lose accuracy over 2^20 points.
func stageTwiddles(n int) []complex128 {
	if w, ok := twiddleCache.Load(n); ok {
		return w.([]complex128)
	}
	w := make([]complex128, n)
	last := w[n/2:]
	if n < 8 {
		for k := range last {
			s, c := math.Sincos(-2 * math.Pi * float64(k) / float64(n))
			last[k] = complex(c, s)
		}
	} else {
		e := n / 8
		cos, sin := make([]float64, e+1), make([]float64, e+1)
		for k := range cos {
			sin[k], cos[k] = math.Sincos(2 * math.Pi * float64(k) / float64(n))
		}
		// exp(−iθ) = cos θ − i sin θ with θ = 2πk/n in [0, π), by octant.
		for k := range last {
			switch {
			case k <= e: // θ ≤ π/4
				last[k] = complex(cos[k], -sin[k])
			case k <= 2*e: // cos θ = sin(π/2−θ), sin θ = cos(π/2−θ)
				last[k] = complex(sin[2*e-k], -cos[2*e-k])
			case k <= 3*e: // cos θ = −sin(θ−π/2), sin θ = cos(θ−π/2)
				last[k] = complex(-sin[k-2*e], -cos[k-2*e])
			default: // cos θ = −cos(π−θ), sin θ = sin(π−θ)
				last[k] = complex(-cos[4*e-k], -sin[4*e-k])
			}
		}
	}
	for m := n / 4; m >= 1; m >>= 1 {
		step := n / (2 * m)
		for k := range m {
			w[m+k] = last[k*step]
		}
	}
	if n > maxCachedTwiddles {
		return w
	}
	v, _ := twiddleCache.LoadOrStore(n, w)
	return v.([]complex128)
}

// fftForward transforms a in place, leaving the result in bit-reversed
// order: afterwards a[p] = Σ_j x[j]·exp(−2πij·rev(p)/n) for the input x,
// rev reversing the log2(n) bits of p. len(a) must be a power of two.
// Decimation in frequency needs no permutation of its natural-order input,
// and nothing downstream needs the spectrum in natural order: see
// pairPartner and fftInverse.
func fftForward(a []complex128) {
	n := checkLen(a)
	w := stageTwiddles(n)
	m := n / 2 // half length of the stage's groups
	for ; m >= 2; m >>= 2 {
		difRadix4(a, w[m/2:m], w[m:2*m])
	}
	if m == 1 {
		difRadix2(a, w[1:2])
	}
}

// fftInverse is the inverse of fftForward: it takes a spectrum in
// bit-reversed order and leaves Σ_p a[p]·exp(+2πij·rev(p)/n) / n at a[j],
// in natural order (decimation in time, by conjugation).
func fftInverse(a []complex128) {
	n := checkLen(a)
	for i, v := range a {
		a[i] = complex(real(v), -imag(v))
	}
	w := stageTwiddles(n)
	m := 1
	for ; 4*m <= n; m <<= 2 {
		ditRadix4(a, w[m:2*m], w[2*m:4*m])
	}
	if 2*m <= n {
		ditRadix2(a, w[m:2*m])
	}
	scale := 1 / float64(n)
	for i, v := range a {
		a[i] = complex(real(v)*scale, -imag(v)*scale)
	}
}

func checkLen(a []complex128) int {
	n := len(a)
	if n == 0 || n&(n-1) != 0 {
		panic("dpaccount: fft length is not a power of two")
	}
	return n
}

// bitReverse returns p with its log2(n) low bits reversed.
func bitReverse(p, n int) int {
	return int(bits.Reverse64(uint64(p)) >> (64 - bits.TrailingZeros(uint(n))))
}

// pairPartner returns the position, in a bit-reversed spectrum of length
// n, of the bin n−k paired with the bin k at position p (k = rev(p)). For
// k ≠ 0 with j trailing zero bits, both sit in the block [B, 2B) with
// B = n/2^(j+1), and reversing bits turns n−k into the mirror image
// 3B−1−p of p within the block; bins 0 and n/2 (positions 0 and 1) are
// their own partners. So the pairs are visited in order by walking each
// block from both ends.
func pairPartner(p int) int {
	if p <= 1 {
		return p
	}
	b := 1 << (bits.Len(uint(p)) - 1)
	return 3*b - 1 - p
}

// difRadix4 runs two decimation-in-frequency stages in one pass over each
// group of 4m elements: the stage with twiddles w2 (halves of length 2m),
// then the one with w1 (halves of length m).
func difRadix4(a, w1, w2 []complex128) {
	m := len(w1)
	for start := 0; start < len(a); start += 4 * m {
		x0 := a[start : start+m]
		x1 := a[start+m : start+2*m]
		x2 := a[start+2*m : start+3*m]
		x3 := a[start+3*m : start+4*m]
		x1, x2, x3 = x1[:len(x0)], x2[:len(x0)], x3[:len(x0)]
		w1 := w1[:len(x0)]
		w2lo, w2hi := w2[:len(x0)], w2[m:2*m]
		w2hi = w2hi[:len(x0)]
		for k := range x0 {
			u0, u1, u2, u3 := x0[k], x1[k], x2[k], x3[k]
			b0, b2 := u0+u2, (u0-u2)*w2lo[k]
			b1, b3 := u1+u3, (u1-u3)*w2hi[k]
			x0[k], x1[k] = b0+b1, (b0-b1)*w1[k]
			x2[k], x3[k] = b2+b3, (b2-b3)*w1[k]
		}
	}
}

// difRadix2 runs one decimation-in-frequency stage: each group of 2·len(w)
// elements becomes its halves' sum and their difference times w.
func difRadix2(a, w []complex128) {
	m := len(w)
	for start := 0; start < len(a); start += 2 * m {
		lo := a[start : start+m]
		hi := a[start+m : start+2*m]
		hi = hi[:len(lo)]
		w := w[:len(lo)]
		for k, u := range lo {
			v := hi[k]
			lo[k] = u + v
			hi[k] = (u - v) * w[k]
		}
	}
}

// ditRadix2 runs one decimation-in-time stage: each group of 2·len(w)
// elements combines its halves with the twiddles w.
func ditRadix2(a, w []complex128) {
	m := len(w)
	for start := 0; start < len(a); start += 2 * m {
		lo := a[start : start+m]
		hi := a[start+m : start+2*m]
		hi = hi[:len(lo)]
		w := w[:len(lo)]
		for k, u := range lo {
			t := hi[k] * w[k]
			lo[k] = u + t
			hi[k] = u - t
		}
	}
}

// ditRadix4 runs two decimation-in-time stages in one pass over each
// group of 4m elements: the stage with twiddles w1 (halves of length m),
// then the one with w2 (halves of length 2m).
func ditRadix4(a, w1, w2 []complex128) {
	m := len(w1)
	for start := 0; start < len(a); start += 4 * m {
		x0 := a[start : start+m]
		x1 := a[start+m : start+2*m]
		x2 := a[start+2*m : start+3*m]
		x3 := a[start+3*m : start+4*m]
		x1, x2, x3 = x1[:len(x0)], x2[:len(x0)], x3[:len(x0)]
		w1 := w1[:len(x0)]
		w2lo, w2hi := w2[:len(x0)], w2[m:2*m]
		w2hi = w2hi[:len(x0)]
		for k := range x0 {
			a1 := x1[k] * w1[k]
			a3 := x3[k] * w1[k]
			b0, b1 := x0[k]+a1, x0[k]-a1
			b2, b3 := x2[k]+a3, x2[k]-a3
			t2 := b2 * w2lo[k]
			t3 := b3 * w2hi[k]
			x0[k], x2[k] = b0+t2, b0-t2
			x1[k], x3[k] = b1+t3, b1-t3
		}
	}
}
