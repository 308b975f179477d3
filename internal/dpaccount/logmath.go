package dpaccount

import "math"

// Log-space helpers. Everything the accountants sum is a probability or a
// moment that may be far outside float64's range, so they add and
// subtract logarithms of magnitudes instead.

// logAddExp returns log(exp(a) + exp(b)).
func logAddExp(a, b float64) float64 {
	if a < b {
		a, b = b, a
	}
	if math.IsInf(b, -1) {
		return a
	}
	return a + math.Log1p(math.Exp(b-a))
}

// signedLog is a real number as a sign and the logarithm of its magnitude;
// zero is {neg: false, log: -Inf}. Series with alternating terms (the
// fractional-order RDP) accumulate in it.
type signedLog struct {
	neg bool
	log float64
}

var zeroLog = signedLog{log: math.Inf(-1)}

// add returns s + t.
func (s signedLog) add(t signedLog) signedLog {
	if math.IsInf(t.log, -1) {
		return s
	}
	if math.IsInf(s.log, -1) {
		return t
	}
	if s.neg == t.neg {
		return signedLog{s.neg, logAddExp(s.log, t.log)}
	}
	// Opposite signs: the larger magnitude keeps its sign.
	if s.log < t.log {
		s, t = t, s
	}
	if s.log == t.log {
		return zeroLog
	}
	return signedLog{s.neg, s.log + math.Log1p(-math.Exp(t.log-s.log))}
}

// logExpm1 returns log(exp(x) - 1) for x > 0 without overflow or loss of
// precision near 0.
func logExpm1(x float64) float64 {
	if x > 36 { // exp(-x) is below float64's resolution next to 1
		return x + math.Log1p(-math.Exp(-x))
	}
	return math.Log(math.Expm1(x))
}

// logErfc returns log(erfc(x)), accurate in the far tail where erfc
// underflows: past x = 26 it uses the asymptotic series
// erfc(x) = exp(-x²)/(x√π) · (1 − 1/(2x²) + 3/(2x²)² − 15/(2x²)³ + …),
// whose next term is below 1e-16 there.
func logErfc(x float64) float64 {
	if x < 26 {
		return math.Log(math.Erfc(x))
	}
	y := 1 / (2 * x * x)
	series := 1 - y*(1-3*y*(1-5*y*(1-7*y*(1-9*y*(1-11*y)))))
	return -x*x - math.Log(x) - 0.5*math.Log(math.Pi) + math.Log(series)
}

// normalCDF returns Φ(x), the standard normal distribution function, and
// normalSF returns 1 − Φ(x); each is accurate where it is small.
func normalCDF(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }
func normalSF(x float64) float64  { return 0.5 * math.Erfc(x/math.Sqrt2) }
