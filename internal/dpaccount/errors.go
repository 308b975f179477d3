package dpaccount

import "errors"

// ErrInvalid reports an input outside the accountants' domain: a sampling
// rate not in (0, 1], a noise multiplier ≤ 0, negative steps, δ not in
// (0, 1), a target ε ≤ 0, an unknown accountant, PRV error parameters out
// of range, or any NaN or infinity. Errors wrapping it name the input.
var ErrInvalid = errors.New("invalid accountant input")

// ErrOutOfRange reports a valid question whose answer lies outside what
// the accountant computes: a PRV grid above MaxPRVPoints (raise the ε
// error or use RDP), a δ too close to float64 resolution for the PRV grid,
// or a noise multiplier above MaxNoiseMultiplier. Errors wrapping it say
// which.
var ErrOutOfRange = errors.New("outside the accountant's range")
