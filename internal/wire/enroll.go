package wire

import "time"

// Enrollment exchange (JSON; []byte fields are base64 standard encoding, as
// encoding/json writes them). See docs/api.md for the routes.

// TPM kinds a Request may state.
const (
	TPMKindHardware  = "hardware"
	TPMKindSWTPM     = "swtpm"
	TPMKindSimulated = "simulated"
	TPMKindNone      = "none"
)

// EnrollRequest is the device's first message: POST /api/v1/enroll.
type EnrollRequest struct {
	// Token is the fleet's one-time enrollment token.
	Token string `json:"token"`
	// CSR is the PKCS #10 request for the TLS key, DER (PEM is accepted).
	CSR []byte `json:"csr"`
	// TPMKind is "hardware", "swtpm", "simulated" or "none".
	TPMKind string `json:"tpm_kind"`
	// TPM is the TPM evidence; absent exactly when TPMKind is "none".
	TPM *TPMEvidence `json:"tpm,omitempty"`
	// KEMPublic is the device's X-Wing public key (tgsp recipient
	// encoding), the key package DEKs are granted to; its private part
	// stays on the device, sealed by the TPM where there is one. Optional
	// (devices without it get no key grants). With TPM evidence it is
	// bound into the TLS key's certification (enrollbind.QualifyingDataKEM).
	KEMPublic []byte `json:"kem_public,omitempty"`
}

// KEMKeyRequest is the body of PUT /api/v1/device/kem-key: a device
// enrolled without a KEM key registers one, once.
type KEMKeyRequest struct {
	// KEMPublic is the X-Wing public key (tgsp recipient encoding).
	KEMPublic []byte `json:"kem_public"`
}

// TPMEvidence is what the device's TPM produced for enrollment.
type TPMEvidence struct {
	// EKPublic is the endorsement key's TPMT_PUBLIC.
	EKPublic []byte `json:"ek_public"`
	// EKCert is the DER EK certificate from the TPM's NV, when present.
	EKCert []byte `json:"ek_cert,omitempty"`
	// AKPublic is the attestation key's TPMT_PUBLIC.
	AKPublic []byte `json:"ak_public"`
	// TLSKeyPublic is the TLS key's TPMT_PUBLIC.
	TLSKeyPublic []byte `json:"tls_key_public"`
	// TLSKeyCertify is the TPMS_ATTEST from TPM2_Certify(TLS key, AK,
	// enrollbind.QualifyingDataKEM(Token, CSR, KEMPublic)).
	TLSKeyCertify []byte `json:"tls_key_certify"`
	// TLSKeyCertifySignature is the AK's TPMT_SIGNATURE over TLSKeyCertify.
	TLSKeyCertifySignature []byte `json:"tls_key_certify_signature"`
}

// Challenge is the control plane's answer to an EnrollRequest with TPM evidence.
type Challenge struct {
	SessionID string `json:"session_id"`
	// CredentialBlob is a TPM2B_ID_OBJECT and EncryptedSecret a
	// TPM2B_ENCRYPTED_SECRET, both with their 2-byte size prefix, ready for
	// TPM2_ActivateCredential(AK, EK).
	CredentialBlob  []byte    `json:"credential_blob"`
	EncryptedSecret []byte    `json:"encrypted_secret"`
	ExpiresAt       time.Time `json:"expires_at"`
}

// ChallengeAnswer is the device's second message: the secret its TPM
// released.
type ChallengeAnswer struct {
	SessionID string `json:"session_id"`
	Secret    []byte `json:"secret"`
}

// EnrollResponse carries the issued identity back to the device.
type EnrollResponse struct {
	DeviceID string `json:"device_id"`
	// CertificatePEM is the device certificate followed by the chain up to,
	// but excluding, the fleet CA root.
	CertificatePEM string `json:"certificate_pem"`
	// CAPEM is the fleet CA root the device trusts for the control plane and
	// the broker.
	CAPEM string `json:"ca_pem"`
	// BrokerURL is the MQTT broker the device should connect to
	// (mqtts://host:port), as the control plane advertises it; empty when
	// it has no opinion.
	BrokerURL string `json:"broker_url,omitempty"`
}
