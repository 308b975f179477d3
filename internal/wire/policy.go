package wire

import "time"

// Policy bundles (docs/policy.md): the control plane tells a device a new
// revision of its fleet's policy exists (MQTT cmd/policy); the device
// fetches the signed bundle over mTLS HTTPS, verifies it with the key it
// pinned, refuses a revision not newer than the one it has, and reports
// what it did on its telemetry topic.

// Schemas.
const (
	PolicyNotifySchema = "tg.policy.notify.v1"
	PolicyEventSchema  = "tg.policy.event.v1"
)

// PolicyNotify is published (QoS 1, not retained) on
// tg/v1/<tenant>/devices/<device>/cmd/policy to every enrolled device of a
// fleet when a bundle is pushed. It carries no authority: the device
// fetches GET /api/v1/device/policy and verifies what it gets.
type PolicyNotify struct {
	Schema   string `json:"schema"`
	Revision int64  `json:"revision"`
}

// Device policy routes (device mTLS).
const (
	// PathDevicePolicy answers the signed bundle of the device's fleet
	// (Content-Type PolicyBundleContentType), 404 NOT_FOUND when the fleet
	// has none; with If-None-Match of the current ETag, 304.
	PathDevicePolicy = "/api/v1/device/policy"
	// PathDevicePolicyKey answers PolicyKey, 404 NOT_FOUND before the
	// tenant's first push.
	PathDevicePolicyKey = "/api/v1/device/policy/key"
)

// PolicyBundleContentType is the media type of a signed policy bundle (an
// OPA bundle: a gzipped tar).
const PolicyBundleContentType = "application/vnd.openpolicyagent.bundle+gzip"

// Headers of GET /api/v1/device/policy (informational: the device trusts
// only what the signed manifest says). The ETag is the quoted hex SHA-256
// of the bundle.
const (
	HeaderPolicyRevision = "X-TG-Policy-Revision"
	HeaderPolicyKeyID    = "X-TG-Policy-Key-Id"
)

// PolicyKey is the tenant's policy verification key, which a device pins
// on first fetch and never lets change.
type PolicyKey struct {
	KeyID        string `json:"key_id"`
	Algorithm    string `json:"algorithm"` // "ES256"
	PublicKeyPEM string `json:"public_key_pem"`
}

// Policy event kinds.
const (
	PolicyEventInstalled = "installed" // a newer revision verified and became active
	PolicyEventRefused   = "refused"   // a bundle was refused; Reason says why
)

// Machine-readable reasons of a refused bundle.
const (
	PolicyReasonSignature  = "SIGNATURE"      // not signed by the pinned key, or changed after signing
	PolicyReasonKeyChange  = "KEY_CHANGED"    // the control plane now serves another key than the pinned one
	PolicyReasonOlder      = "OLDER_REVISION" // not newer than the active revision (anti-rollback)
	PolicyReasonWrongFleet = "WRONG_FLEET"    // signed for another tenant or fleet
	PolicyReasonInvalid    = "INVALID"        // verified but does not compile on the device
)

// PolicyEvent is published by a device through its outbox (QoS 1) on its
// telemetry topic, tg/v1/<tenant>/devices/<device>/telemetry, with kind
// "policy", when it installs or refuses a bundle.
type PolicyEvent struct {
	Schema string `json:"schema"`
	MsgID  string `json:"msg_id"`
	Kind   string `json:"kind"` // "policy"
	Device string `json:"device"`
	Event  string `json:"event"` // PolicyEventInstalled or PolicyEventRefused
	// Revision is the bundle's (0 when it could not be read).
	Revision int64 `json:"revision,omitempty"`
	// Active is the revision in force after the event (0: none).
	Active int64     `json:"active"`
	SHA256 string    `json:"sha256,omitempty"`
	Reason string    `json:"reason,omitempty"` // a PolicyReason* code for refused
	Detail string    `json:"detail,omitempty"`
	TS     time.Time `json:"ts"`
}
