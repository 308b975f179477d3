package api

import (
	"regexp"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/audit"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// The JSON objects of docs/api.md. They are exported so that tgctl and the
// control-plane core (GET /api/v1/device/self answers a Device) encode and
// decode exactly what this package does. Times are RFC 3339 UTC; an unset
// time is null.

// Whoami answers GET /api/v1/whoami.
type Whoami struct {
	Tenant     string `json:"tenant"`
	OperatorID string `json:"operator_id"`
	KeyID      string `json:"key_id"`
	Role       string `json:"role"`
}

// CAInfo answers GET /api/v1/ca.
type CAInfo struct {
	PlatformCAPEM string `json:"platform_ca_pem"`
	TenantCAPEM   string `json:"tenant_ca_pem"`
	CAHash        string `json:"ca_hash"`
}

// Operator is a person or automation of the tenant.
type Operator struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
}

// NewOperator renders a stored operator.
func NewOperator(o store.Operator) Operator {
	return Operator{ID: o.ID, Name: o.Name, Role: string(o.Role), Disabled: o.Disabled, CreatedAt: o.CreatedAt}
}

// OperatorCreate is the body of POST /api/v1/operators.
type OperatorCreate struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// OperatorPatch is the body of PATCH /api/v1/operators/{id}.
type OperatorPatch struct {
	Role     *string `json:"role,omitempty"`
	Disabled *bool   `json:"disabled,omitempty"`
}

// APIKey describes an API key, never its secret.
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

// NewAPIKey renders a stored API key.
func NewAPIKey(k store.APIKey) APIKey {
	return APIKey{
		ID: k.ID, Name: k.Name, Role: string(k.Role), OperatorID: k.OperatorID, Prefix: k.Prefix,
		CreatedAt: k.CreatedAt, LastUsedAt: optTime(k.LastUsedAt), ExpiresAt: optTime(k.ExpiresAt), RevokedAt: optTime(k.RevokedAt),
	}
}

// APIKeyCreate is the body of POST /api/v1/api-keys. OperatorID defaults to
// the caller's operator; ExpiresIn is a duration ("720h", "90d"), none
// means the key does not expire.
type APIKeyCreate struct {
	Name       string `json:"name"`
	Role       string `json:"role"`
	OperatorID string `json:"operator_id,omitempty"`
	ExpiresIn  string `json:"expires_in,omitempty"`
}

// APIKeyCreated answers POST /api/v1/api-keys: the key and, this once, its
// secret.
type APIKeyCreated struct {
	APIKey
	Key string `json:"key"`
}

// FleetPolicy is a fleet's enrollment policy. CertTTL is a duration in Go
// syntax ("24h"); input also accepts whole days ("90d").
type FleetPolicy struct {
	AllowNoTPM        bool             `json:"allow_no_tpm"`
	AllowSimulatedTPM bool             `json:"allow_simulated_tpm"`
	CertTTL           string           `json:"cert_ttl"`
	Attestation       FleetAttestation `json:"attestation"`
}

// FleetAttestation is a fleet's attestation policy as shown: the PCRs
// quoted (SHA-256 bank), the rule of each PCR that is not checked against
// the device's baseline, the TPM kinds that can be trusted, the challenge
// interval ("" is the control plane's configured default) and whether an
// untrusted verdict revokes the device.
type FleetAttestation struct {
	Interval          string          `json:"interval"`
	PCRs              []int           `json:"pcrs"`
	Rules             map[int]PCRRule `json:"rules,omitempty"`
	AllowedKinds      []string        `json:"allowed_kinds"`
	RevokeOnUntrusted bool            `json:"revoke_on_untrusted"`
}

// PCRRule is the rule of one PCR: "golden" (equal to one of Allow, hex
// SHA-256 digests) or "baseline" (equal to the value recorded at the
// device's first trusted quote).
type PCRRule struct {
	Mode  string   `json:"mode"`
	Allow []string `json:"allow,omitempty"`
}

// FleetAttestationPatch changes a fleet's attestation policy: absent
// fields keep their value; an empty interval, PCR list or kind list
// restores the default, and rules, when present, replace all rules.
type FleetAttestationPatch struct {
	Interval          *string          `json:"interval,omitempty"`
	PCRs              *[]int           `json:"pcrs,omitempty"`
	Rules             *map[int]PCRRule `json:"rules,omitempty"`
	AllowedKinds      *[]string        `json:"allowed_kinds,omitempty"`
	RevokeOnUntrusted *bool            `json:"revoke_on_untrusted,omitempty"`
}

// FleetPolicyPatch is a policy in a request: absent fields keep their
// value (on create: the default).
type FleetPolicyPatch struct {
	AllowNoTPM        *bool                  `json:"allow_no_tpm,omitempty"`
	AllowSimulatedTPM *bool                  `json:"allow_simulated_tpm,omitempty"`
	CertTTL           *string                `json:"cert_ttl,omitempty"`
	Attestation       *FleetAttestationPatch `json:"attestation,omitempty"`
}

// Fleet is a group of devices under one policy.
type Fleet struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	Policy    FleetPolicy `json:"policy"`
	CreatedAt time.Time   `json:"created_at"`
}

// NewFleet renders a stored fleet.
func NewFleet(f store.Fleet) Fleet {
	ttl := time.Duration(f.Policy.CertTTL)
	if ttl == 0 {
		ttl = DefaultCertTTL
	}
	return Fleet{
		ID: f.ID, Name: f.Name, CreatedAt: f.CreatedAt,
		Policy: FleetPolicy{AllowNoTPM: f.Policy.AllowNoTPM, AllowSimulatedTPM: f.Policy.AllowSimulatedTPM, CertTTL: FormatDuration(ttl),
			Attestation: newFleetAttestation(f.Policy)},
	}
}

func newFleetAttestation(p store.FleetPolicy) FleetAttestation {
	v := p.VerifierPolicy()
	out := FleetAttestation{PCRs: v.Selection(), AllowedKinds: v.AllowedKinds, RevokeOnUntrusted: p.Attestation.RevokeOnUntrusted}
	if p.Attestation.Interval != 0 {
		out.Interval = FormatDuration(time.Duration(p.Attestation.Interval))
	}
	if len(v.Rules) > 0 {
		out.Rules = make(map[int]PCRRule, len(v.Rules))
		for i, r := range v.Rules {
			out.Rules[i] = PCRRule{Mode: r.Mode, Allow: r.Allow}
		}
	}
	return out
}

// FleetCreate is the body of POST /api/v1/fleets.
type FleetCreate struct {
	Name   string            `json:"name"`
	Policy *FleetPolicyPatch `json:"policy,omitempty"`
}

// FleetPatch is the body of PATCH /api/v1/fleets/{fleet}.
type FleetPatch struct {
	Policy *FleetPolicyPatch `json:"policy"`
}

// EnrollmentTokenCreate is the body of POST
// /api/v1/fleets/{fleet}/enrollment-tokens; TTL defaults to 1h, at most 7d.
type EnrollmentTokenCreate struct {
	TTL string `json:"ttl,omitempty"`
}

// EnrollmentTokenCreated answers a token creation: the token is shown once.
type EnrollmentTokenCreated struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	FleetID   string    `json:"fleet_id"`
	ExpiresAt time.Time `json:"expires_at"`
	CAHash    string    `json:"ca_hash"`
}

// EnrollmentToken describes a token, never its secret. State is "active",
// "used" or "expired".
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

// NewEnrollmentToken renders a stored token as of now.
func NewEnrollmentToken(t store.EnrollmentToken, now time.Time) EnrollmentToken {
	state := "active"
	switch {
	case !t.UsedAt.IsZero():
		state = "used"
	case !now.Before(t.ExpiresAt):
		state = "expired"
	}
	v := EnrollmentToken{ID: t.ID, FleetID: t.FleetID, CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt,
		ExpiresAt: t.ExpiresAt, UsedAt: optTime(t.UsedAt), State: state}
	if t.UsedByDevice != "" {
		v.UsedByDevice = &t.UsedByDevice
	}
	return v
}

// Device is an enrolled device.
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
	Quarantined   bool              `json:"quarantined"`
	// KEMKey says whether the device registered its KEM public key, the
	// key package DEKs are granted to (the key itself is not shown):
	// without one it can receive no key grants.
	KEMKey     bool       `json:"kem_key"`
	LastSeenAt *time.Time `json:"last_seen_at"`
	CreatedAt  time.Time  `json:"created_at"`
}

// NewDevice renders a stored device.
func NewDevice(d store.Device) Device {
	labels := d.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	return Device{
		ID: d.ID, FleetID: d.FleetID, Name: d.Name, Labels: labels, DeviceType: d.DeviceType,
		TPMKind: string(d.TPMKind), EKFingerprint: d.EKFingerprint, CertSerial: d.CertSerial,
		CertNotAfter: optTime(d.CertNotAfter), Status: string(d.Status), Online: d.Online,
		Quarantined: d.Quarantined, KEMKey: len(d.KEMPublic) > 0, LastSeenAt: optTime(d.LastSeenAt), CreatedAt: d.CreatedAt,
	}
}

// DevicePatch is the body of PATCH /api/v1/devices/{id}. Labels replaces
// the whole set ({} removes all); absent or null leaves it alone.
type DevicePatch struct {
	Name   *string           `json:"name,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// AuditPage answers GET /api/v1/audit. NextAfter is the seq to pass as
// ?after= for the next page (the last entry's, or the request's after
// when there are none).
type AuditPage struct {
	Entries   []audit.Entry `json:"entries"`
	NextAfter uint64        `json:"next_after"`
}

// MQTTCredentialsRequest is the body of POST /api/v1/mqtt/credentials.
type MQTTCredentialsRequest struct {
	CSR string `json:"csr"`
}

// MQTTCredentials answers POST /api/v1/mqtt/credentials. CAPEM is the
// platform CA, which verifies the broker's server certificate.
type MQTTCredentials struct {
	CertificatePEM string `json:"certificate_pem"`
	CAPEM          string `json:"ca_pem"`
	BrokerURL      string `json:"broker_url"`
	Tenant         string `json:"tenant"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// Durations and limits of docs/api.md.
const (
	DefaultCertTTL         = 24 * time.Hour
	MinAttestationInterval = time.Second
	MaxAttestationInterval = 24 * time.Hour
	MinCertTTL             = time.Hour
	MaxCertTTL             = 90 * 24 * time.Hour
	DefaultTokenTTL        = time.Hour
	MinTokenTTL            = time.Minute
	MaxTokenTTL            = 7 * 24 * time.Hour
)

// ParseDuration and FormatDuration are the wire forms of durations
// (internal/wire), re-exported for this package's callers.
var (
	ParseDuration  = wire.ParseDuration
	FormatDuration = wire.FormatDuration
)

// durationField parses a duration field and checks its range.
func durationField(field, s string, min, max time.Duration) (time.Duration, error) {
	d, err := ParseDuration(s)
	if err != nil {
		return 0, badRequest("field %q: %v", field, err)
	}
	if d < min || d > max {
		return 0, badRequest("field %q: %s is outside %s to %s", field, s, FormatDuration(min), FormatDuration(max))
	}
	return d, nil
}

var (
	fleetNameRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	operatorNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$`)
	labelKeyRe     = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$`)
	labelValueRe   = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$`)
)

const maxLabels = 64

func validateFleetName(name string) error {
	switch {
	case !fleetNameRe.MatchString(name):
		return badRequest("field \"name\": fleet name %q must be 1 to 63 of [A-Za-z0-9._-], starting with a letter or digit", name)
	case store.ValidID(store.PrefixFleet, name):
		return badRequest("field \"name\": fleet name %q looks like a fleet id", name)
	}
	return nil
}

func validateOperatorName(name string) error {
	if !operatorNameRe.MatchString(name) {
		return badRequest("field \"name\": operator name %q must be 1 to 128 of [A-Za-z0-9._@+-], starting with a letter or digit", name)
	}
	return nil
}

// validateText checks a free-form name: 1 to 128 characters of printable
// UTF-8.
func validateText(field, s string) error {
	if s == "" || utf8.RuneCountInString(s) > 128 || !utf8.ValidString(s) {
		return badRequest("field %q: must be 1 to 128 characters", field)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return badRequest("field %q: must not contain control characters", field)
		}
	}
	return nil
}

func validateLabels(labels map[string]string) error {
	if len(labels) > maxLabels {
		return badRequest("field \"labels\": at most %d labels", maxLabels)
	}
	for k, v := range labels {
		if !labelKeyRe.MatchString(k) {
			return badRequest("field \"labels\": key %q must be 1 to 63 of [A-Za-z0-9._/-], starting and ending with a letter or digit", k)
		}
		if !labelValueRe.MatchString(v) {
			return badRequest("field \"labels.%s\": value %q must be empty or 1 to 63 of [A-Za-z0-9._-], starting and ending with a letter or digit", k, v)
		}
	}
	return nil
}

func parseRole(field, s string) (store.Role, error) {
	r := store.Role(s)
	if !r.Valid() {
		return "", badRequest("field %q: role %q must be admin, operator or viewer", field, s)
	}
	return r, nil
}
