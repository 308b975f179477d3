package wire

import "time"

// Package rollouts (issue 5): the control plane tells a device it has a job
// (MQTT cmd/job), the device fetches the job over mTLS HTTPS, downloads the
// package (HTTP range requests, so an interrupted download resumes),
// requests the package's key grant, installs, and reports each step on its
// jobs/<job id> topic through its outbox. JSON; []byte fields are base64.

// Schemas.
const (
	JobNotifySchema = "tg.job.notify.v1"
	JobSchema       = "tg.job.v1"
	JobReportSchema = "tg.job.report.v1"
	KeyGrantSchema  = "tg.keygrant.v1"
)

// Job kinds.
const (
	// JobInstall installs Package (strictly newer than the installed one)
	// as the new active slot, self-tests it, and commits or rolls back.
	JobInstall = "install"
	// JobRollback makes the previous slot active again (the operator's
	// rollout rollback); the package named is the one to return to.
	JobRollback = "rollback"
)

// JobNotify is published (QoS 1, not retained) on
// tg/v1/<tenant>/devices/<device>/cmd/job when a device has a job, and
// again when the control plane wants an answer (a retry). The device
// fetches the job itself: the notification carries no authority.
type JobNotify struct {
	Schema string `json:"schema"`
	JobID  string `json:"job_id"`
}

// Job is GET /api/v1/device/jobs/{id} (device mTLS; a device sees only its
// own jobs). GET /api/v1/device/jobs lists the device's open jobs, oldest
// first, so a device that missed a notification catches up on connect.
type Job struct {
	Schema    string     `json:"schema"`
	ID        string     `json:"id"`
	RolloutID string     `json:"rollout_id"`
	Kind      string     `json:"kind"` // JobInstall or JobRollback
	Package   PackageRef `json:"package"`
	// Publishers are the signer public keys (tgsp key bytes) the tenant
	// pinned: the package must verify against one of them.
	Publishers [][]byte `json:"publishers"`
	// Attempt counts from 1; a retried job keeps its id.
	Attempt int `json:"attempt"`
	// Deadline is when the control plane stops waiting for a terminal
	// report and counts the device as failed (zero: no deadline).
	Deadline  time.Time `json:"deadline,omitzero"`
	CreatedAt time.Time `json:"created_at"`
}

// PackageRef names a package in the control plane's registry.
type PackageRef struct {
	// ID is the lowercase hex SHA-256 of the whole .tgsp file (the
	// registry is content-addressed).
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
	Size    int64  `json:"size"`
	// URL is the path of the blob on the control plane
	// (/api/v1/device/packages/<id>), served with range support.
	URL string `json:"url"`
}

// KeyGrantRequest is POST /api/v1/device/key-grants (device mTLS).
type KeyGrantRequest struct {
	JobID     string `json:"job_id"`
	PackageID string `json:"package_id"`
}

// KeyGrant is the answer: the package's DEK wrapped to the device's KEM
// key (tgsp.Package.GrantKey), openable only with the device's private key
// (tgsp.Package.OpenGrant). The control plane grants only to an enrolled
// device of the job's fleet whose attestation verdict is trusted and that
// is not quarantined; otherwise 403 with the error code KEY_GRANT_REFUSED
// and the reason in the message — or 503 (same code, Retry-After) when the
// refusal may pass by itself: the device's attestation is not current yet.
type KeyGrant struct {
	Schema    string `json:"schema"`
	PackageID string `json:"package_id"`
	Grant     []byte `json:"grant"`
}

// Job states a device reports, in pipeline order. The terminal ones are
// JobCommitted (success), JobFailed (installed but failed its self-test or
// activation: rolled back to the previous slot), JobRefused (refused
// before installing: nothing changed) and JobRolledBack (a rollback job
// done).
const (
	JobReceived    = "received"
	JobDownloading = "downloading"
	JobVerifying   = "verifying"
	JobPolicy      = "policy"
	JobKeyGrant    = "key_grant"
	JobInstalling  = "installing"
	JobSelfTest    = "self_test"
	JobCommitted   = "committed"
	JobFailed      = "failed"
	JobRefused     = "refused"
	JobRolledBack  = "rolled_back"
)

// JobTerminal reports whether state ends a job.
func JobTerminal(state string) bool {
	switch state {
	case JobCommitted, JobFailed, JobRefused, JobRolledBack:
		return true
	}
	return false
}

// Machine-readable reasons of a failed or refused job.
const (
	JobReasonSignature     = "SIGNATURE"         // bad signature or hashes
	JobReasonPublisher     = "UNKNOWN_PUBLISHER" // not signed by a pinned publisher
	JobReasonExpired       = "EXPIRED"           // the package's expiry has passed
	JobReasonDeviceType    = "DEVICE_TYPE"       // not built for this device type
	JobReasonOlderVersion  = "OLDER_VERSION"     // not newer than the installed version (anti-rollback)
	JobReasonPolicyDeny    = "POLICY_DENY"       // the fleet's OPA policy said no
	JobReasonKeyGrant      = "KEY_GRANT_REFUSED" // the control plane refused the key (e.g. not trusted)
	JobReasonDownload      = "DOWNLOAD"          // could not download (after retries)
	JobReasonMalformed     = "MALFORMED_PACKAGE" // the package is not a TGSP package the agent can use
	JobReasonSelfTest      = "SELF_TEST"         // the model failed its shipped test vectors
	JobReasonActivation    = "ACTIVATION"        // the runtime could not load the model
	JobReasonNoPrevious    = "NO_PREVIOUS"       // rollback with no previous slot
	JobReasonInternal      = "INTERNAL"          // an agent-side error (disk full, …)
	JobReasonDeadline      = "DEADLINE"          // set by the control plane: no terminal report in time
	JobReasonDeviceRevoked = "DEVICE_REVOKED"    // set by the control plane
)

// JobReport is published by the device on
// tg/v1/<tenant>/devices/<device>/jobs/<job id> through its outbox (QoS 1,
// at least once: MsgID de-duplicates) at every state change.
type JobReport struct {
	Schema    string `json:"schema"`
	MsgID     string `json:"msg_id"`
	JobID     string `json:"job_id"`
	RolloutID string `json:"rollout_id"`
	Attempt   int    `json:"attempt"`
	State     string `json:"state"`
	Reason    string `json:"reason,omitempty"` // a JobReason* code for failed or refused
	Detail    string `json:"detail,omitempty"`
	// Downloaded bytes of the package so far (JobDownloading).
	Downloaded int64 `json:"downloaded,omitempty"`
	// Installed is the package active on the device after this step (name
	// and version; empty when none).
	InstalledName    string    `json:"installed_name,omitempty"`
	InstalledVersion string    `json:"installed_version,omitempty"`
	At               time.Time `json:"at"`
}
