package wire

import "time"

// Fleet attestation over MQTT (issue 4; docs/attestation.md when it lands).
//
//	cp → device   tg/v1/<tenant>/devices/<device>/cmd/attest        AttestChallenge
//	device → cp   tg/v1/<tenant>/devices/<device>/attestation       AttestEvidence
//	cp → watchers tg/v1/<tenant>/fleets/<fleet>/attestation/<device> Verdict (retained)
//
// []byte fields are base64 (encoding/json's standard encoding).

// Schema values.
const (
	AttestChallengeSchema = "tg.attest.challenge.v1"
	AttestEvidenceSchema  = "tg.attest.evidence.v1"
	VerdictSchema         = "tg.attest.verdict.v1"
)

// AttestChallenge asks a device for a quote over PCRs (SHA-256 bank) bound
// to Nonce. A nonce is single-use and issued to one device only.
type AttestChallenge struct {
	Schema    string    `json:"schema"`
	ID        string    `json:"id"`    // challenge id, echoed in the evidence
	Nonce     []byte    `json:"nonce"` // 32 random bytes
	PCRs      []int     `json:"pcrs"`  // PCR indices of the SHA-256 bank, ascending
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// AttestEvidence answers a challenge.
type AttestEvidence struct {
	Schema      string `json:"schema"`
	MsgID       string `json:"msg_id"` // the outbox message id, for de-duplication
	Device      string `json:"device"`
	ChallengeID string `json:"challenge_id"`
	Nonce       []byte `json:"nonce"`
	// Quote is the TPMS_ATTEST the AK signed; Signature its TPMT_SIGNATURE.
	Quote     []byte `json:"quote"`
	Signature []byte `json:"signature"`
	// PCRValues are the SHA-256 bank values read with the quote, by index;
	// the verifier recomputes their digest and compares it with the quote's.
	PCRValues map[int][]byte `json:"pcr_values"`
	// EventLog is the platform's binary TCG measurement log, when it has one
	// (x86 UEFI usually does; a Jetson's fTPM usually does not).
	EventLog []byte `json:"event_log,omitempty"`
	// Error is set instead of a quote when the device could not produce one.
	Error string `json:"error,omitempty"`
}

// Verdict states.
const (
	VerdictTrusted   = "trusted"
	VerdictUntrusted = "untrusted"
	VerdictStale     = "stale"   // no valid answer within two intervals
	VerdictUnknown   = "unknown" // never attested
)

// Verdict reason codes (machine-readable, stable).
const (
	ReasonMalformed        = "MALFORMED_EVIDENCE"
	ReasonBadSignature     = "BAD_SIGNATURE"       // not signed by the enrolled AK
	ReasonNonceUnknown     = "NONCE_UNKNOWN"       // never issued, or issued to another device
	ReasonNonceExpired     = "NONCE_EXPIRED"       //
	ReasonNonceReplayed    = "NONCE_REPLAYED"      // already used
	ReasonPCRDigest        = "PCR_DIGEST_MISMATCH" // reported values do not match the quoted digest
	ReasonPCRPolicy        = "PCR_POLICY"          // a PCR value the fleet policy does not allow
	ReasonEventLog         = "EVENT_LOG_MISMATCH"  // replaying the log does not give the quoted PCRs
	ReasonClockRollback    = "CLOCK_ROLLBACK"      // TPM clock or reset/restart counters went back
	ReasonTPMKindRefused   = "TPM_KIND_REFUSED"    // e.g. a simulated TPM where the policy refuses it
	ReasonNoAnswer         = "NO_ANSWER"           // stale
	ReasonDeviceError      = "DEVICE_ERROR"        // the device reported it could not quote
	ReasonNotAttestable    = "NOT_ATTESTABLE"      // enrolled without a TPM
	ReasonWrongTenantTopic = "WRONG_TENANT"        // evidence for a device of another tenant
)

// VerdictReason explains an untrusted or stale verdict.
type VerdictReason struct {
	Code   string `json:"code"`
	Detail string `json:"detail,omitempty"`
	PCR    *int   `json:"pcr,omitempty"`
}

// Verdict is the retained attestation state of one device.
type Verdict struct {
	Schema     string          `json:"schema"`
	Tenant     string          `json:"tenant"`
	Fleet      string          `json:"fleet"`
	Device     string          `json:"device"`
	State      string          `json:"state"`
	Reasons    []VerdictReason `json:"reasons,omitempty"`
	TPMKind    string          `json:"tpm_kind"`
	PCRDigest  string          `json:"pcr_digest,omitempty"` // hex SHA-256 of the quoted PCRs
	EvidenceAt time.Time       `json:"evidence_at,omitzero"`
	NonceAgeMS int64           `json:"nonce_age_ms,omitempty"`
	// Reboot is true when the TPM's reset count grew since the last
	// trusted evidence (the device rebooted); it does not make a device
	// untrusted by itself.
	Reboot    bool      `json:"reboot,omitempty"`
	VerdictAt time.Time `json:"verdict_at"`
}
