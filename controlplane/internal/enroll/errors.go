package enroll

import "errors"

// Refusals. Each error Begin, Finish or VerifyCSROnly returns wraps exactly
// one of these (test with errors.Is); the wrapped text says why and is safe
// to log (it never contains the token or the secret).
var (
	// ErrMalformedRequest: a field is missing or does not parse.
	ErrMalformedRequest = errors.New("enroll: malformed request")
	// ErrTPMKindRefused: the stated TPM kind is not allowed here.
	ErrTPMKindRefused = errors.New("enroll: tpm kind refused")
	// ErrEKUntrusted: no EK certificate where one is required, a certificate
	// that does not chain to the configured roots, or one for another key;
	// or an EK public area that is not a TCG-style restricted decryption key.
	ErrEKUntrusted = errors.New("enroll: endorsement key not trusted")
	// ErrAKInvalid: the AK is not a restricted, fixedTPM, fixedParent,
	// TPM-generated signing key with a supported scheme.
	ErrAKInvalid = errors.New("enroll: attestation key not acceptable")
	// ErrTLSKeyNotTPM: the TLS key's attributes do not make it a
	// non-duplicable TPM-generated signing key, or its certification is not a
	// TPM-generated certify of that key signed by the AK.
	ErrTLSKeyNotTPM = errors.New("enroll: tls key not proven to be a tpm key")
	// ErrCertifyNotBound: the certification's qualifying data is not the one
	// for this token, CSR and KEM public key (a replayed or foreign
	// certification, or a KEM key swapped after the TPM certified).
	ErrCertifyNotBound = errors.New("enroll: tls key certification not bound to this enrollment")
	// ErrCSRMismatch: the CSR's signature is invalid or it is for another key.
	ErrCSRMismatch = errors.New("enroll: csr does not match the tls key")
	// ErrAKNotInSameTPM: credential activation failed (wrong secret).
	ErrAKNotInSameTPM = errors.New("enroll: attestation key not in the same tpm as the endorsement key")
	// ErrSessionUnknown: no such session, already used, or expired.
	ErrSessionUnknown = errors.New("enroll: unknown or expired enrollment session")
	// ErrTooManySessions: the session store is full.
	ErrTooManySessions = errors.New("enroll: too many pending enrollment sessions")
)
