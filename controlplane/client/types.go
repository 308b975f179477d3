package client

import (
	"time"

	"github.com/tensorguard/tensorguardflow/internal/audit"
)

// The API's objects, as docs/api.md defines them. Times are RFC 3339 UTC;
// an optional time the server leaves out or sends as null is nil.

// Whoami is GET /api/v1/whoami.
type Whoami struct {
	Tenant     string `json:"tenant"`
	OperatorID string `json:"operator_id"`
	KeyID      string `json:"key_id"`
	Role       string `json:"role"`
}

// CAInfo is GET /api/v1/ca.
type CAInfo struct {
	PlatformCAPEM string `json:"platform_ca_pem"`
	TenantCAPEM   string `json:"tenant_ca_pem"`
	// CAHash is "sha256:<hex>" of the platform CA certificate's DER.
	CAHash string `json:"ca_hash"`
}

// Roles of operators and API keys.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
)

// Operator is a person or system acting on a tenant.
type Operator struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
}

// OperatorCreate is the body of POST /api/v1/operators.
type OperatorCreate struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// OperatorUpdate is the body of PATCH /api/v1/operators/{id}; nil fields
// are left as they are.
type OperatorUpdate struct {
	Role     *string `json:"role,omitempty"`
	Disabled *bool   `json:"disabled,omitempty"`
}

// APIKey is an API key's metadata; the secret is never listed.
type APIKey struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	OperatorID string     `json:"operator_id"`
	Prefix     string     `json:"prefix"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
}

// APIKeyCreate is the body of POST /api/v1/api-keys.
type APIKeyCreate struct {
	Name       string `json:"name"`
	Role       string `json:"role"`
	OperatorID string `json:"operator_id,omitempty"`
	// ExpiresIn is a Go duration ("720h"); empty: the key does not expire.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// CreatedAPIKey is POST /api/v1/api-keys: the metadata and, this once, the
// key itself.
type CreatedAPIKey struct {
	APIKey
	Key string `json:"key"`
}

// FleetPolicy is what a fleet admits and issues. CertTTL is a duration
// ("24h").
type FleetPolicy struct {
	AllowNoTPM        bool             `json:"allow_no_tpm"`
	AllowSimulatedTPM bool             `json:"allow_simulated_tpm"`
	CertTTL           string           `json:"cert_ttl"`
	Attestation       FleetAttestation `json:"attestation"`
}

// FleetAttestation is a fleet's attestation policy: the SHA-256 PCRs
// quoted, the rule of each PCR not checked against the device's baseline,
// the TPM kinds that can be trusted, the challenge interval ("" is the
// control plane's default) and whether an untrusted verdict revokes the
// device.
type FleetAttestation struct {
	Interval          string          `json:"interval"`
	PCRs              []int           `json:"pcrs"`
	Rules             map[int]PCRRule `json:"rules,omitempty"`
	AllowedKinds      []string        `json:"allowed_kinds"`
	RevokeOnUntrusted bool            `json:"revoke_on_untrusted"`
}

// PCR rule modes.
const (
	PCRGolden   = "golden"   // equal to one of Allow
	PCRBaseline = "baseline" // equal to the value at the first trusted quote
)

// PCRRule is the rule of one PCR; Allow are hex SHA-256 digests.
type PCRRule struct {
	Mode  string   `json:"mode"`
	Allow []string `json:"allow,omitempty"`
}

// FleetPolicyPatch is a policy in a request: nil fields keep their value
// (on create: the server's default).
type FleetPolicyPatch struct {
	AllowNoTPM        *bool                  `json:"allow_no_tpm,omitempty"`
	AllowSimulatedTPM *bool                  `json:"allow_simulated_tpm,omitempty"`
	CertTTL           *string                `json:"cert_ttl,omitempty"`
	Attestation       *FleetAttestationPatch `json:"attestation,omitempty"`
}

// FleetAttestationPatch changes an attestation policy: nil fields keep
// their value; an empty interval, PCR list or kind list restores the
// default; Rules, when set, replace all rules.
type FleetAttestationPatch struct {
	Interval          *string          `json:"interval,omitempty"`
	PCRs              *[]int           `json:"pcrs,omitempty"`
	Rules             *map[int]PCRRule `json:"rules,omitempty"`
	AllowedKinds      *[]string        `json:"allowed_kinds,omitempty"`
	RevokeOnUntrusted *bool            `json:"revoke_on_untrusted,omitempty"`
}

// Fleet is a group of devices under one enrollment policy.
type Fleet struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	Policy    FleetPolicy `json:"policy"`
	CreatedAt time.Time   `json:"created_at"`
}

// FleetCreate is the body of POST /api/v1/fleets.
type FleetCreate struct {
	Name   string            `json:"name"`
	Policy *FleetPolicyPatch `json:"policy,omitempty"`
}

// FleetUpdate is the body of PATCH /api/v1/fleets/{fleet}.
type FleetUpdate struct {
	Policy *FleetPolicyPatch `json:"policy"`
}

// Token states.
const (
	TokenActive  = "active"
	TokenUsed    = "used"
	TokenExpired = "expired"
)

// EnrollmentToken is a fleet's one-time enrollment token as listed: never
// the secret.
type EnrollmentToken struct {
	ID           string     `json:"id"`
	FleetID      string     `json:"fleet_id"`
	CreatedBy    string     `json:"created_by"`
	CreatedAt    time.Time  `json:"created_at"`
	ExpiresAt    time.Time  `json:"expires_at"`
	UsedAt       *time.Time `json:"used_at"`
	UsedByDevice *string    `json:"used_by_device"`
	State        string     `json:"state"`
}

// CreatedToken is POST /api/v1/fleets/{fleet}/enrollment-tokens: the token
// (shown once) and the CA hash an agent pins.
type CreatedToken struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	FleetID   string    `json:"fleet_id"`
	ExpiresAt time.Time `json:"expires_at"`
	CAHash    string    `json:"ca_hash"`
}

// Device is an enrolled (or revoked) device.
type Device struct {
	ID            string            `json:"id"`
	FleetID       string            `json:"fleet_id"`
	Name          string            `json:"name"`
	Labels        map[string]string `json:"labels"`
	DeviceType    string            `json:"device_type"`
	TPMKind       string            `json:"tpm_kind"`
	EKFingerprint string            `json:"ek_fingerprint"`
	CertSerial    string            `json:"cert_serial"`
	CertNotAfter  *time.Time        `json:"cert_not_after"`
	Status        string            `json:"status"`
	Online        bool              `json:"online"`
	// Quarantined: the last attestation verdict was untrusted or stale.
	Quarantined bool `json:"quarantined"`
	// KEMKey: the device registered the KEM public key package keys are
	// granted to; without one it can receive no key grants.
	KEMKey     bool       `json:"kem_key"`
	LastSeenAt *time.Time `json:"last_seen_at"`
	CreatedAt  time.Time  `json:"created_at"`
}

// DeviceUpdate is the body of PATCH /api/v1/devices/{id}. Labels, when not
// nil, replace the device's labels.
type DeviceUpdate struct {
	Name   *string           `json:"name,omitempty"`
	Labels map[string]string `json:"labels,omitzero"`
}

// DeviceFilter narrows GET /api/v1/devices; zero fields do not filter.
type DeviceFilter struct {
	Fleet  string // id or name
	Online *bool
	Labels []string // "k=v", all must match
}

// AuditPage is GET /api/v1/audit.
type AuditPage struct {
	Entries   []audit.Entry `json:"entries"`
	NextAfter uint64        `json:"next_after"`
}

// MQTTCredentials is POST /api/v1/mqtt/credentials: a read-only operator
// certificate for the tenant's topics.
type MQTTCredentials struct {
	CertificatePEM string `json:"certificate_pem"`
	CAPEM          string `json:"ca_pem"`
	BrokerURL      string `json:"broker_url"`
	Tenant         string `json:"tenant"`
}

// AttestChallengeSent is the answer of POST /api/v1/devices/{id}/attest.
type AttestChallengeSent struct {
	ChallengeID string    `json:"challenge_id"`
	Device      string    `json:"device"`
	PCRs        []int     `json:"pcrs"`
	IssuedAt    time.Time `json:"issued_at"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// AttestationRecord is one entry of GET /api/v1/devices/{id}/attestations:
// a verdict of the device's attestation history, as it was published.
type AttestationRecord struct {
	State      string          `json:"state"`
	Reasons    []VerdictReason `json:"reasons"`
	PCRDigest  string          `json:"pcr_digest"`
	EvidenceAt *time.Time      `json:"evidence_at"`
	VerdictAt  time.Time       `json:"verdict_at"`
	Reboot     bool            `json:"reboot"`
}

// VerdictReason is a machine-readable reason of an attestation verdict.
type VerdictReason struct {
	Code   string `json:"code"`
	Detail string `json:"detail,omitempty"`
	PCR    *int   `json:"pcr,omitempty"`
}
