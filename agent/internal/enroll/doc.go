// Package enroll is the agent's client for the control plane's device API:
// TPM-backed enrollment (POST /api/v1/enroll, then /api/v1/enroll/activate)
// and certificate renewal (POST /api/v1/device/renew), as docs/api.md
// describes them.
//
// # Trust
//
// The first contact with a control plane trusts nothing the network says.
// The agent is given either a pin, "sha256:<hex>" of the platform CA
// certificate's DER (what `tgctl token create` prints), or a CA file. With a
// pin, the server's TLS chain must contain a certificate with that hash, and
// the leaf must verify (name and signature) up to that certificate; anything
// else fails with ErrPinMismatch before a byte of the request is sent. The
// control plane therefore has to send its platform CA certificate as part of
// its TLS chain.
//
// After enrollment the device trusts the CA bundle of its Identity (the
// response's CA root plus the pinned platform CA) and presents its
// TPM-backed client certificate; Renew uses that transport.
//
// # What Enroll proves
//
// Enroll builds the CSR with the TPM-resident TLS key (the TPM signs it),
// has the attestation key certify the TLS key over
// enrollbind.QualifyingDataKEM(token, CSR, KEM public key) (binding the
// certification to this token, this CSR and the device's package-key
// public key), sends the EK, AK and TLS key public areas and the KEM public
// key, and answers
// the credential-activation challenge with TPM2_ActivateCredential, which
// the TPM performs only if the EK and the AK live in it. The returned
// certificate is checked before it is accepted: its key must be the TLS key,
// it must chain to the returned CA, and its SPIFFE URI SAN must name the
// device id the server stated.
//
// # Without a TPM
//
// EnrollWithoutTPM is the path of a device configured without a TPM: it
// sends the token and a CSR signed by a software key, tpm_kind "none" and no
// evidence, and the control plane answers 201 with the certificate at once,
// if the fleet's policy allows devices without a TPM. The returned
// certificate is checked as above. Nothing is proven about the key beyond
// possession, which is why such devices are marked "none" and are never
// attestable.
//
// # KEM key
//
// A device enrolled without a KEM public key (by an agent from before
// package key grants) registers one with RegisterKEMKey (PUT
// /api/v1/device/kem-key, device mTLS), once.
//
// # Errors
//
// Server refusals are *APIError values wrapping a sentinel for the codes a
// caller acts on (ErrTokenUsed, ErrTokenExpired, ErrRefused, ErrRevoked).
// Retryable tells transient failures (network, 5xx, 429) from permanent
// ones; the caller owns the retry loop and its backoff.
//
// One gap is inherent in a single-use token: if the connection breaks after
// the control plane consumed the token in /activate but before the response
// arrived, a retry gets TOKEN_USED and the device needs a new token.
package enroll
