// Package enrollbind defines the qualifying data a device's TPM signs into
// the TPM2_Certify of its TLS key during enrollment. Both sides compute it:
// the agent (through package tpmdev) before certifying, the control plane
// when verifying. It binds the certification to this enrollment's one-time
// token, to the exact CSR and, when the request carries one, to the
// device's KEM public key (the key package DEKs are granted to), so a
// certification cannot be replayed into another enrollment or paired with
// another request, and the KEM key cannot be swapped on the way.
//
// The package is pure Go and imports nothing TPM-specific, so the control
// plane can use it without linking a TPM stack.
package enrollbind
