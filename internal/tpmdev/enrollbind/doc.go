// Package enrollbind defines the qualifying data a device's TPM signs into
// the TPM2_Certify of its TLS key during enrollment. Both sides compute it:
// the agent (through package tpmdev) before certifying, the control plane
// when verifying. It binds the certification to this enrollment's one-time
// token and to the exact CSR, so a certification cannot be replayed into
// another enrollment or paired with another request.
//
// The package is pure Go and imports nothing TPM-specific, so the control
// plane can use it without linking a TPM stack.
package enrollbind
