package dpaccount

import (
	"errors"
	"math"
	"testing"
)

// FuzzEpsilon checks that no input makes an accountant panic or return a
// NaN, negative or unbracketed ε: invalid inputs fail with ErrInvalid,
// valid ones succeed (PRV may also answer ErrOutOfRange). PRV runs with a
// coarse ε error and only where its grid stays small, to keep each input
// fast.
func FuzzEpsilon(f *testing.F) {
	for _, s := range []struct {
		q, sigma float64
		steps    int
		delta    float64
		kind     uint8
	}{
		{256.0 / 60000, 1.1, 14062, 1e-5, 0},
		{0.01, 1, 300, 1e-5, 1},
		{0.01, 4, 10000, 1e-5, 2},
		{1, 10, 100, 1e-6, 1},
		{1, 1e-3, 1, 0.5, 0},
		{1e-300, 1e300, 1 << 40, 1e-300, 0},
		{0.999999, 0.05, 3, 0.1, 2},
		{0.5, 1e-170, 7, 1e-5, 0},
		{0, 1, 1, 1e-5, 0},
		{0.1, -1, 1, 1e-5, 1},
		{0.1, 1, -1, 1e-5, 2},
		{0.1, 1, 1, 0, 0},
		{math.NaN(), 1, 1, 1e-5, 0},
		{0.1, math.Inf(1), 1, 1e-5, 1},
	} {
		f.Add(s.q, s.sigma, s.steps, s.delta, s.kind)
	}
	f.Fuzz(func(t *testing.T, q, sigma float64, steps int, delta float64, kindByte uint8) {
		kind := kinds[int(kindByte)%len(kinds)]
		events := []Event{{q, sigma, steps}}
		valid := q > 0 && q <= 1 && sigma > 0 && !math.IsInf(sigma, 0) && steps >= 0 && delta > 0 && delta < 1
		var r Result
		var err error
		if kind == PRV {
			opts := PRVOptions{EpsError: 0.1}
			if valid && steps > 0 {
				if g, gerr := newPRVGrid(events, opts.EpsError, delta/1000); gerr != nil || g.n > 1<<16 {
					return // too costly for a fuzz iteration (or out of range)
				}
			}
			r, err = EpsilonPRV(events, delta, opts)
		} else {
			r, err = Epsilon(kind, events, delta)
		}
		if !valid {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%s q=%v σ=%v steps=%d δ=%v: error %v, want ErrInvalid", kind, q, sigma, steps, delta, err)
			}
			return
		}
		if err != nil {
			if kind == PRV && errors.Is(err, ErrOutOfRange) {
				return
			}
			t.Fatalf("%s q=%v σ=%v steps=%d δ=%v: %v", kind, q, sigma, steps, delta, err)
		}
		if math.IsNaN(r.Epsilon) || r.Epsilon < 0 || math.IsNaN(r.EpsilonLow) || math.IsNaN(r.EpsilonHigh) ||
			r.EpsilonLow < 0 || r.EpsilonLow > r.Epsilon || r.Epsilon > r.EpsilonHigh || math.IsNaN(r.Order) || r.Order < 0 {
			t.Fatalf("%s q=%v σ=%v steps=%d δ=%v: %+v", kind, q, sigma, steps, delta, r)
		}
	})
}
