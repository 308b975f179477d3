package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/attest"
)

// Fleet groups a tenant's devices under one enrollment and attestation
// policy.
type Fleet struct {
	ID        string
	Tenant    string
	Name      string
	Policy    FleetPolicy
	CreatedAt time.Time
}

// FleetPolicy is stored as JSON; unknown fields written by a newer binary are
// dropped on update by an older one, so add fields only with defaults that
// are safe when absent.
type FleetPolicy struct {
	// AllowNoTPM lets devices without a TPM enroll (they are marked so).
	AllowNoTPM bool `json:"allow_no_tpm,omitempty"`
	// AllowSimulatedTPM accepts software TPMs (swtpm, the simulator): for
	// development and tests, refused in production.
	AllowSimulatedTPM bool `json:"allow_simulated_tpm,omitempty"`
	// CertTTL is the lifetime of device certificates; zero means the
	// control plane's default.
	CertTTL Duration `json:"cert_ttl,omitempty"`
	// Attestation is the fleet's attestation policy; the zero value is the
	// strict default (see FleetAttestation).
	Attestation FleetAttestation `json:"attestation,omitzero"`
}

// FleetAttestation is a fleet's attestation policy: the verifier's PCR
// policy and admitted TPM kinds (attest.Policy, inlined), how often the
// fleet's devices are challenged, and whether an untrusted verdict revokes
// the device.
type FleetAttestation struct {
	attest.Policy
	// Interval between challenges of a device; zero means the control
	// plane's configured attestation.interval.
	Interval Duration `json:"interval,omitempty"`
	// RevokeOnUntrusted revokes a device (its certificates, its broker
	// session) when its verdict turns untrusted; a stale device is only
	// quarantined, since silence may be the network's fault.
	RevokeOnUntrusted bool `json:"revoke_on_untrusted,omitempty"`
}

// VerifierPolicy returns the fleet's attestation policy for the verifier:
// without explicit allowed kinds, hardware TPMs, plus swtpm and simulated
// ones when the fleet admits simulated TPMs.
func (p FleetPolicy) VerifierPolicy() attest.Policy {
	v := p.Attestation.Policy
	if len(v.AllowedKinds) == 0 {
		v.AllowedKinds = []string{string(TPMHardware)}
		if p.AllowSimulatedTPM {
			v.AllowedKinds = append(v.AllowedKinds, string(TPMSoftware), string(TPMSimulator))
		}
	}
	return v
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("24h0m0s").
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"24h\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// CreateFleet stores a new fleet of tenant; ID is generated unless set.
// Names are unique per tenant.
func (o *ops) CreateFleet(ctx context.Context, tenant string, f Fleet) (Fleet, error) {
	var err error
	if f.ID, err = idOrNew(PrefixFleet, f.ID); err != nil {
		return Fleet{}, err
	}
	if f.Name == "" {
		return Fleet{}, fmt.Errorf("%w: fleet needs a name", ErrInvalid)
	}
	policy, err := json.Marshal(f.Policy)
	if err != nil {
		return Fleet{}, err
	}
	f.Tenant, f.CreatedAt = tenant, o.clock()
	if _, err := o.exec(ctx, `INSERT INTO fleets (id, tenant_id, name, policy, created_at) VALUES (?, ?, ?, ?, ?)`,
		f.ID, tenant, f.Name, string(policy), micros(f.CreatedAt)); err != nil {
		return Fleet{}, fmt.Errorf("create fleet %q: %w", f.Name, mapInsertErr(err))
	}
	return f, nil
}

const fleetCols = `id, tenant_id, name, policy, created_at`

func scanFleet(sc scanner) (Fleet, error) {
	var f Fleet
	var policy string
	var created int64
	if err := sc.Scan(&f.ID, &f.Tenant, &f.Name, &policy, &created); err != nil {
		return Fleet{}, mapErr(err)
	}
	if err := json.Unmarshal([]byte(policy), &f.Policy); err != nil {
		return Fleet{}, fmt.Errorf("fleet %s: stored policy: %w", f.ID, err)
	}
	f.CreatedAt = fromMicros(created)
	return f, nil
}

// GetFleet returns one fleet of tenant.
func (o *ops) GetFleet(ctx context.Context, tenant, id string) (Fleet, error) {
	f, err := scanFleet(o.queryRow(ctx, `SELECT `+fleetCols+` FROM fleets WHERE tenant_id = ? AND id = ?`, tenant, id))
	if err != nil {
		return Fleet{}, fmt.Errorf("fleet %s: %w", id, err)
	}
	return f, nil
}

// GetFleetByName returns the fleet of tenant with this name.
func (o *ops) GetFleetByName(ctx context.Context, tenant, name string) (Fleet, error) {
	f, err := scanFleet(o.queryRow(ctx, `SELECT `+fleetCols+` FROM fleets WHERE tenant_id = ? AND name = ?`, tenant, name))
	if err != nil {
		return Fleet{}, fmt.Errorf("fleet %q: %w", name, err)
	}
	return f, nil
}

// ListFleets returns tenant's fleets by name.
func (o *ops) ListFleets(ctx context.Context, tenant string) ([]Fleet, error) {
	return queryAll(ctx, o, scanFleet, `SELECT `+fleetCols+` FROM fleets WHERE tenant_id = ? ORDER BY name`, tenant)
}

// FleetUpdate lists the fields to change; nil leaves a field alone.
type FleetUpdate struct {
	Name   *string
	Policy *FleetPolicy
}

// UpdateFleet changes a fleet of tenant and returns the result.
func (o *ops) UpdateFleet(ctx context.Context, tenant, id string, u FleetUpdate) (Fleet, error) {
	var set []string
	var args []any
	if u.Name != nil {
		if *u.Name == "" {
			return Fleet{}, fmt.Errorf("%w: empty fleet name", ErrInvalid)
		}
		set, args = append(set, "name = ?"), append(args, *u.Name)
	}
	if u.Policy != nil {
		policy, err := json.Marshal(*u.Policy)
		if err != nil {
			return Fleet{}, err
		}
		set, args = append(set, "policy = ?"), append(args, string(policy))
	}
	if len(set) == 0 {
		return o.GetFleet(ctx, tenant, id)
	}
	args = append(args, tenant, id)
	f, err := scanFleet(o.queryRowW(ctx, `UPDATE fleets SET `+strings.Join(set, ", ")+
		` WHERE tenant_id = ? AND id = ? RETURNING `+fleetCols, args...))
	if err != nil {
		return Fleet{}, fmt.Errorf("update fleet %s: %w", id, err)
	}
	return f, nil
}

// DeleteFleet removes an empty fleet of tenant and its enrollment tokens. A
// fleet that still has devices, or rollouts, is ErrConflict.
func (o *ops) DeleteFleet(ctx context.Context, tenant, id string) error {
	if err := o.execOne(ctx, `DELETE FROM fleets WHERE tenant_id = ? AND id = ?`, tenant, id); err != nil {
		return fmt.Errorf("delete fleet %s: %w", id, err)
	}
	return nil
}

// TPMKind says what holds a device's keys.
type TPMKind string

// TPM kinds. Only TPMHardware is acceptable in production.
const (
	TPMNone      TPMKind = "none"      // no TPM: keys on disk, fleet policy must allow it
	TPMHardware  TPMKind = "hardware"  // a physical or firmware TPM
	TPMSoftware  TPMKind = "swtpm"     // swtpm
	TPMSimulator TPMKind = "simulated" // the in-process go-tpm-tools simulator (DESIGN.md names it "simulated")
)

// Valid reports whether k is a known kind.
func (k TPMKind) Valid() bool {
	switch k {
	case TPMNone, TPMHardware, TPMSoftware, TPMSimulator:
		return true
	}
	return false
}

// DeviceStatus is a device's enrollment state.
type DeviceStatus string

// Device states.
const (
	DeviceEnrolled DeviceStatus = "enrolled"
	DeviceRevoked  DeviceStatus = "revoked"
)

// Device is an enrolled edge device. EKFingerprint identifies its TPM (empty
// for TPMNone) and is unique per tenant. Zero times mean unset.
type Device struct {
	ID            string
	Tenant        string
	FleetID       string
	Name          string
	Labels        map[string]string
	DeviceType    string
	TPMKind       TPMKind
	EKFingerprint string
	EKPublic      []byte
	AKPublic      []byte
	// KEMPublic is the device's X-Wing public key for package key grants
	// (tgsp recipient encoding); nil when it has none.
	KEMPublic    []byte
	CertSerial   string
	CertNotAfter time.Time
	Status       DeviceStatus
	LastSeenAt   time.Time
	Online       bool
	CreatedAt    time.Time
	RevokedAt    time.Time
	// Quarantined mirrors the device's attestation quarantine flag
	// (SetQuarantined): a quarantined device gets no rollouts and no
	// key releases. Read-only here.
	Quarantined bool
}

// CreateDevice stores a newly enrolled device of tenant in fleet d.FleetID
// (which must belong to tenant). ID is generated unless set — set it when the
// certificate naming the device is issued first. A TPM whose EK fingerprint is
// already enrolled in tenant is ErrConflict.
func (o *ops) CreateDevice(ctx context.Context, tenant string, d Device) (Device, error) {
	var err error
	if d.ID, err = idOrNew(PrefixDevice, d.ID); err != nil {
		return Device{}, err
	}
	switch {
	case !d.TPMKind.Valid():
		return Device{}, fmt.Errorf("%w: TPM kind %q", ErrInvalid, d.TPMKind)
	case d.TPMKind != TPMNone && d.EKFingerprint == "":
		return Device{}, fmt.Errorf("%w: a %s device needs its EK fingerprint", ErrInvalid, d.TPMKind)
	case d.TPMKind == TPMNone && (d.EKFingerprint != "" || d.EKPublic != nil || d.AKPublic != nil):
		return Device{}, fmt.Errorf("%w: a device without TPM has no EK or AK", ErrInvalid)
	}
	labels, err := json.Marshal(nonNil(d.Labels))
	if err != nil {
		return Device{}, err
	}
	d.Tenant, d.Status, d.Online, d.CreatedAt = tenant, DeviceEnrolled, false, o.clock()
	d.LastSeenAt, d.RevokedAt = time.Time{}, time.Time{}
	d.CertNotAfter = d.CertNotAfter.UTC().Truncate(time.Microsecond)
	d.Labels = nonNil(d.Labels)
	if _, err := o.exec(ctx, `INSERT INTO devices (id, tenant_id, fleet_id, name, labels, device_type, tpm_kind,
		ek_fingerprint, ek_public, ak_public, kem_public, cert_serial, cert_not_after, status, online, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.ID, tenant, d.FleetID, d.Name, string(labels), d.DeviceType, string(d.TPMKind),
		nullString(d.EKFingerprint), d.EKPublic, d.AKPublic, d.KEMPublic, nullString(d.CertSerial), nullMicros(d.CertNotAfter),
		string(d.Status), false, micros(d.CreatedAt)); err != nil {
		return Device{}, fmt.Errorf("create device in fleet %s: %w", d.FleetID, mapInsertErr(err))
	}
	return d, nil
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

const deviceCols = `id, tenant_id, fleet_id, name, labels, device_type, tpm_kind, ek_fingerprint, ek_public, ak_public, kem_public,
	cert_serial, cert_not_after, status, last_seen_at, online, created_at, revoked_at,
	(SELECT a.quarantined FROM attestation_state a WHERE a.tenant_id = devices.tenant_id AND a.device_id = devices.id)`

func scanDevice(sc scanner) (Device, error) {
	var d Device
	var labels string
	var ek, serial sql.NullString
	var notAfter, lastSeen, revoked sql.NullInt64
	var created int64
	var quarantined sql.NullBool
	if err := sc.Scan(&d.ID, &d.Tenant, &d.FleetID, &d.Name, &labels, &d.DeviceType, &d.TPMKind, &ek, &d.EKPublic, &d.AKPublic, &d.KEMPublic,
		&serial, &notAfter, &d.Status, &lastSeen, &d.Online, &created, &revoked, &quarantined); err != nil {
		return Device{}, mapErr(err)
	}
	if err := json.Unmarshal([]byte(labels), &d.Labels); err != nil {
		return Device{}, fmt.Errorf("device %s: stored labels: %w", d.ID, err)
	}
	d.Labels = nonNil(d.Labels)
	d.EKFingerprint, d.CertSerial = ek.String, serial.String
	d.CertNotAfter, d.LastSeenAt, d.RevokedAt = fromNullMicros(notAfter), fromNullMicros(lastSeen), fromNullMicros(revoked)
	d.CreatedAt = fromMicros(created)
	d.Quarantined = quarantined.Bool
	return d, nil
}

// GetDevice returns one device of tenant.
func (o *ops) GetDevice(ctx context.Context, tenant, id string) (Device, error) {
	d, err := scanDevice(o.queryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE tenant_id = ? AND id = ?`, tenant, id))
	if err != nil {
		return Device{}, fmt.Errorf("device %s: %w", id, err)
	}
	return d, nil
}

// GetDeviceByEK returns the device of tenant whose TPM has this EK
// fingerprint.
func (o *ops) GetDeviceByEK(ctx context.Context, tenant, ekFingerprint string) (Device, error) {
	d, err := scanDevice(o.queryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE tenant_id = ? AND ek_fingerprint = ?`, tenant, ekFingerprint))
	if err != nil {
		return Device{}, fmt.Errorf("device with EK %s: %w", ekFingerprint, err)
	}
	return d, nil
}

// DeviceFilter narrows ListDevices; zero fields match everything.
type DeviceFilter struct {
	FleetID string
	Status  DeviceStatus
}

// ListDevices returns tenant's devices matching f, oldest first.
func (o *ops) ListDevices(ctx context.Context, tenant string, f DeviceFilter) ([]Device, error) {
	q, args := `SELECT `+deviceCols+` FROM devices WHERE tenant_id = ?`, []any{tenant}
	if f.FleetID != "" {
		q, args = q+` AND fleet_id = ?`, append(args, f.FleetID)
	}
	if f.Status != "" {
		q, args = q+` AND status = ?`, append(args, string(f.Status))
	}
	return queryAll(ctx, o, scanDevice, q+` ORDER BY created_at, id`, args...)
}

// DeviceUpdate lists the operator-editable fields to change; nil leaves a
// field alone. Labels replaces the whole set.
type DeviceUpdate struct {
	Name       *string
	Labels     map[string]string // nil: unchanged; empty: remove all
	DeviceType *string
}

// UpdateDevice changes a device of tenant and returns the result.
func (o *ops) UpdateDevice(ctx context.Context, tenant, id string, u DeviceUpdate) (Device, error) {
	var set []string
	var args []any
	if u.Name != nil {
		set, args = append(set, "name = ?"), append(args, *u.Name)
	}
	if u.Labels != nil {
		labels, err := json.Marshal(u.Labels)
		if err != nil {
			return Device{}, err
		}
		set, args = append(set, "labels = ?"), append(args, string(labels))
	}
	if u.DeviceType != nil {
		set, args = append(set, "device_type = ?"), append(args, *u.DeviceType)
	}
	if len(set) == 0 {
		return o.GetDevice(ctx, tenant, id)
	}
	args = append(args, tenant, id)
	d, err := scanDevice(o.queryRowW(ctx, `UPDATE devices SET `+strings.Join(set, ", ")+
		` WHERE tenant_id = ? AND id = ? RETURNING `+deviceCols, args...))
	if err != nil {
		return Device{}, fmt.Errorf("update device %s: %w", id, err)
	}
	return d, nil
}

// SetDevicePresence records that a device of tenant was seen at seenAt and
// whether it is online. last_seen_at never moves backwards, so a late,
// reordered message cannot make a device look older than it is.
func (o *ops) SetDevicePresence(ctx context.Context, tenant, id string, online bool, seenAt time.Time) error {
	seen := micros(seenAt)
	if err := o.execOne(ctx, `UPDATE devices SET online = ?,
		last_seen_at = CASE WHEN last_seen_at IS NULL OR last_seen_at < ? THEN ? ELSE last_seen_at END
		WHERE tenant_id = ? AND id = ?`, online, seen, seen, tenant, id); err != nil {
		return fmt.Errorf("set presence of device %s: %w", id, err)
	}
	return nil
}

// RevokeDevice marks a device of tenant revoked and offline and revokes every
// certificate issued to it, atomically; it returns the device. Revoking a
// revoked device changes nothing.
func (o *ops) RevokeDevice(ctx context.Context, tenant, id string) (Device, error) {
	var d Device
	err := o.inTx(ctx, func(o *ops) error {
		now := micros(o.clock())
		var err error
		d, err = scanDevice(o.queryRowW(ctx, `UPDATE devices SET status = ?, online = ?, revoked_at = COALESCE(revoked_at, ?)
			WHERE tenant_id = ? AND id = ? RETURNING `+deviceCols, string(DeviceRevoked), false, now, tenant, id))
		if err != nil {
			return err
		}
		_, err = o.exec(ctx, `UPDATE issued_certs SET revoked_at = ? WHERE tenant_id = ? AND device_id = ? AND revoked_at IS NULL`,
			now, tenant, id)
		return err
	})
	if err != nil {
		return Device{}, fmt.Errorf("revoke device %s: %w", id, err)
	}
	return d, nil
}

// DeleteDevice removes a device of tenant, first revoking its certificates
// (their records stay, so revocation lists keep them). Its TPM may then enroll
// again.
func (o *ops) DeleteDevice(ctx context.Context, tenant, id string) error {
	err := o.inTx(ctx, func(o *ops) error {
		if _, err := o.exec(ctx, `UPDATE issued_certs SET revoked_at = ? WHERE tenant_id = ? AND device_id = ? AND revoked_at IS NULL`,
			micros(o.clock()), tenant, id); err != nil {
			return err
		}
		return o.execOne(ctx, `DELETE FROM devices WHERE tenant_id = ? AND id = ?`, tenant, id)
	})
	if err != nil {
		return fmt.Errorf("delete device %s: %w", id, err)
	}
	return nil
}
