// Package enroll verifies a device's TPM-backed enrollment request on the
// control plane. It is pure Go: it needs no TPM, only the evidence the
// device sends, and it decides whether the control plane may issue the
// device's mTLS certificate. Issuing the certificate, checking and
// consuming the one-time token and storing the device are the caller's job.
//
// # Protocol
//
// The agent creates an attestation key (AK, restricted signing) and its TLS
// key (unrestricted ECDSA P-256 signing) inside its TPM, certifies the TLS
// key with the AK (TPM2_Certify over qualifying data
// enrollbind.QualifyingDataKEM(token, CSR, KEM public key)) and sends a
// Request: token, CSR, EK public area and certificate, AK public area, TLS
// key public area and its certification, its TPM kind and its KEM public
// key (the X-Wing key package DEKs are granted to; optional for agents
// from before key grants).
//
//  1. Begin checks, in order: the request is well formed (a KEM public
//     key, when present, must parse) and its TPM kind allowed
//     (ErrMalformedRequest, ErrTPMKindRefused); the EK certificate
//     chains to the configured manufacturer roots and is for the EK public
//     area sent (ErrEKUntrusted); the AK is a restricted, fixedTPM,
//     fixedParent, TPM-generated signing key (ErrAKInvalid); the CSR is
//     signed by, and for, the TLS key (ErrCSRMismatch); the TLS key is a
//     non-duplicable TPM-generated unrestricted P-256 signing key
//     (ErrTLSKeyNotTPM); the certification is a TPM-generated
//     TPMS_ATTEST of type certify, names the TLS key and is signed by the AK
//     (ErrTLSKeyNotTPM) and binds this token, CSR and KEM key
//     (ErrCertifyNotBound: also what a KEM key swapped, added or removed
//     after certification gives).
//     It then makes a credential (TPM2_MakeCredential done in software with
//     go-tpm's credactivation) that only the TPM holding the EK can open,
//     and only for the AK's Name, around a random 32-byte secret, stores a
//     single-use session and returns the Challenge.
//  2. The device runs TPM2_ActivateCredential and returns the secret. Finish
//     takes the session (it cannot be tried twice), compares the secret in
//     constant time (ErrAKNotInSameTPM) and returns the verified Facts.
//
// # Why this proves what it claims
//
// The EK certificate proves the EK belongs to a genuine TPM of a trusted
// manufacturer. ActivateCredential releases the secret only inside the TPM
// that holds the EK private key and only when an object with exactly the
// AK's Name is loaded there; the Name covers the AK's attributes, and a TPM
// refuses to load an object marked fixedTPM that it did not create, so the
// AK is a key of that TPM. A restricted AK signs only TPM-generated
// structures (TPM_GENERATED_VALUE), so its certification of the TLS key's
// Name — whose attributes say fixedTPM, fixedParent, sensitiveDataOrigin —
// proves the TLS key was generated in, and cannot leave, the same TPM. (A
// TPM also refuses to certify a public-only external object, and an object
// loaded with its private part must have fixedTPM clear.)
//
// The TPM kind in a request is self-reported. What makes a simulated or
// swtpm device untrusted in production is that its EK certificate does not
// chain to a production root; Config.AllowedKinds is a second, coarse gate.
//
// Devices without a TPM use VerifyCSROnly, which only checks the CSR (and
// that a KEM key parses); the caller must allow that by fleet policy and
// record the device as kind "none". Their KEM key is as trustworthy as the
// pinned TLS channel that carried it: nothing in the TPM vouches for it.
//
// The KEM key's private part never reaches the control plane, and nothing
// proves here that the device holds it or that its TPM seals it: the
// binding only guarantees that the key stored for the device is the one
// the device's agent sent with its TPM evidence. A device that sent a key
// it does not hold can only fail to open its own key grants.
package enroll
