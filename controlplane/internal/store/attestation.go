package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Fleet attestation (issue 4): per device, the current verdict and the state
// the verifier carries from one quote to the next; the verdict history; and
// single-use challenge nonces that work across control-plane replicas.

// DefaultAttestationHistory is how many history entries are kept per device
// unless [WithAttestationHistory] says otherwise.
const DefaultAttestationHistory = 1000

// WithAttestationHistory sets how many verdict history entries
// AppendAttestationHistory keeps per device, the newest ones; n <= 0 keeps
// the default.
func WithAttestationHistory(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.historyKeep = n
		}
	}
}

// VerdictState is a device's attestation verdict. The values are those of
// wire.Verdict.State.
type VerdictState string

// Verdict states.
const (
	VerdictTrusted   VerdictState = "trusted"
	VerdictUntrusted VerdictState = "untrusted"
	VerdictStale     VerdictState = "stale"   // no valid answer in time
	VerdictUnknown   VerdictState = "unknown" // never attested
)

// Valid reports whether v is a known state.
func (v VerdictState) Valid() bool {
	switch v {
	case VerdictTrusted, VerdictUntrusted, VerdictStale, VerdictUnknown:
		return true
	}
	return false
}

// TPMClockState is the TPM clock information of a device's last trusted
// quote, against which the next quote's counters are checked (a reset count
// that grew is a reboot, one that went back a rollback).
type TPMClockState struct {
	Clock           uint64 // TPM Clock, milliseconds
	ResetCount      uint32
	RestartCount    uint32
	FirmwareVersion uint64
	VerifiedAt      time.Time // when that quote was verified
}

// AttestationState is one device's current attestation state. A device that
// was never attested, challenged or quarantined reads as State
// VerdictUnknown with everything else zero. Zero times mean unset; nil
// Reasons, TPM and BaselinePCRs are stored as NULL and read back as nil.
type AttestationState struct {
	Tenant   string
	DeviceID string
	// FleetID is the device's fleet, filled in on reads and ignored by
	// PutAttestationState.
	FleetID string

	// The current verdict, as published.
	State      VerdictState
	Reasons    json.RawMessage // JSON, stored byte for byte ([]wire.VerdictReason)
	PCRDigest  string          // hex SHA-256 of the quoted PCRs
	EvidenceAt time.Time
	VerdictAt  time.Time // required unless State is VerdictUnknown
	NonceAgeMS int64
	Reboot     bool

	// TPM is the clock state of the last trusted quote; nil before the first.
	TPM *TPMClockState
	// BaselinePCRs are the SHA-256 PCR values taken as the device's
	// baseline, by PCR index; nil when none has been recorded.
	BaselinePCRs map[int][]byte

	// Quarantined excludes the device from rollouts and key releases.
	Quarantined bool
	// LastChallengeAt is when the last nonce was issued to the device;
	// IssueNonce keeps it up to date.
	LastChallengeAt     time.Time
	ConsecutiveFailures int
}

// stateCols reads an attestation_state row a with its device d; the a
// columns are NULL for a device without a row (LEFT JOIN).
const stateCols = `d.id, d.tenant_id, d.fleet_id, a.state, a.reasons, a.pcr_digest, a.evidence_at, a.verdict_at,
	a.nonce_age_ms, a.reboot, a.tpm_clock, a.reset_count, a.restart_count, a.firmware_version, a.trusted_at,
	a.baseline_pcrs, a.quarantined, a.last_challenge_at, a.consecutive_failures`

func scanState(sc scanner) (AttestationState, error) {
	var st AttestationState
	var state, reasons, digest, baseline sql.NullString
	var evidence, verdict, nonceAge, clk, resets, restarts, firmware, trusted, challenge, failures sql.NullInt64
	var reboot, quarantined sql.NullBool
	if err := sc.Scan(&st.DeviceID, &st.Tenant, &st.FleetID, &state, &reasons, &digest, &evidence, &verdict,
		&nonceAge, &reboot, &clk, &resets, &restarts, &firmware, &trusted,
		&baseline, &quarantined, &challenge, &failures); err != nil {
		return AttestationState{}, mapErr(err)
	}
	st.State = VerdictUnknown
	if state.Valid {
		st.State = VerdictState(state.String)
	}
	if reasons.Valid {
		st.Reasons = json.RawMessage(reasons.String)
	}
	st.PCRDigest = digest.String
	st.EvidenceAt, st.VerdictAt = fromNullMicros(evidence), fromNullMicros(verdict)
	st.NonceAgeMS, st.Reboot = nonceAge.Int64, reboot.Bool
	if clk.Valid {
		st.TPM = &TPMClockState{
			// The bits of the uint64 values, see the migration.
			Clock: uint64(clk.Int64), FirmwareVersion: uint64(firmware.Int64),
			ResetCount: uint32(resets.Int64), RestartCount: uint32(restarts.Int64),
			VerifiedAt: fromNullMicros(trusted),
		}
	}
	if baseline.Valid {
		var err error
		if st.BaselinePCRs, err = decodeBaseline(baseline.String); err != nil {
			return AttestationState{}, fmt.Errorf("device %s: stored baseline: %w", st.DeviceID, err)
		}
	}
	st.Quarantined = quarantined.Bool
	st.LastChallengeAt = fromNullMicros(challenge)
	st.ConsecutiveFailures = int(failures.Int64)
	return st, nil
}

// encodeBaseline stores PCR values as a JSON object of index → hex.
func encodeBaseline(pcrs map[int][]byte) (any, error) {
	if pcrs == nil {
		return nil, nil
	}
	m := make(map[int]string, len(pcrs))
	for i, v := range pcrs {
		if i < 0 {
			return nil, fmt.Errorf("%w: baseline PCR index %d", ErrInvalid, i)
		}
		m[i] = hex.EncodeToString(v)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

func decodeBaseline(s string) (map[int][]byte, error) {
	var m map[int]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, err
	}
	pcrs := make(map[int][]byte, len(m))
	for i, h := range m {
		v, err := hex.DecodeString(h)
		if err != nil {
			return nil, fmt.Errorf("PCR %d: %w", i, err)
		}
		pcrs[i] = v
	}
	return pcrs, nil
}

// nullJSON checks raw JSON and returns it for a TEXT column (nil: NULL).
func nullJSON(what string, raw json.RawMessage) (any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	if !json.Valid(raw) {
		return nil, fmt.Errorf("%w: %s is not valid JSON", ErrInvalid, what)
	}
	return string(raw), nil
}

// GetAttestationState returns the attestation state of a device of tenant:
// VerdictUnknown and zero values when it has none yet, ErrNotFound when
// tenant has no such device.
//
// Inside a Tx it locks the state row until commit (PostgreSQL; a SQLite
// transaction holds the whole database), so reading, verifying and then
// PutAttestationState in one transaction cannot lose a concurrent change
// made by another replica.
func (o *ops) GetAttestationState(ctx context.Context, tenant, device string) (AttestationState, error) {
	q := `SELECT ` + stateCols + ` FROM attestation_state a
		JOIN devices d ON d.tenant_id = a.tenant_id AND d.id = a.device_id
		WHERE a.tenant_id = ? AND a.device_id = ?`
	if o.tx != nil && o.d == dialectPostgres {
		q += ` FOR UPDATE OF a`
	}
	st, err := scanState(o.queryRow(ctx, q, tenant, device))
	if errors.Is(err, ErrNotFound) {
		st = AttestationState{Tenant: tenant, DeviceID: device, State: VerdictUnknown}
		err = mapErr(o.queryRow(ctx, `SELECT fleet_id FROM devices WHERE tenant_id = ? AND id = ?`, tenant, device).Scan(&st.FleetID))
	}
	if err != nil {
		return AttestationState{}, fmt.Errorf("attestation state of device %s: %w", device, err)
	}
	return st, nil
}

// stateWriteCols are the columns PutAttestationState writes, in the order of
// stateArgs.
var stateWriteCols = []string{"state", "reasons", "pcr_digest", "evidence_at", "verdict_at", "nonce_age_ms", "reboot",
	"tpm_clock", "reset_count", "restart_count", "firmware_version", "trusted_at",
	"baseline_pcrs", "quarantined", "last_challenge_at", "consecutive_failures"}

var putStateSQL = func() string {
	set := make([]string, len(stateWriteCols))
	for i, c := range stateWriteCols {
		set[i] = c + " = excluded." + c
	}
	return `INSERT INTO attestation_state (tenant_id, device_id, ` + strings.Join(stateWriteCols, ", ") + `)
		VALUES (?, ?` + strings.Repeat(", ?", len(stateWriteCols)) + `)
		ON CONFLICT (tenant_id, device_id) DO UPDATE SET ` + strings.Join(set, ", ")
}()

// PutAttestationState creates or replaces the attestation state of device
// st.DeviceID of tenant: every field, including Quarantined and
// LastChallengeAt, so read-modify-write it inside WithTx (see
// GetAttestationState). Times are stored at microsecond precision. A device
// tenant does not have is ErrNotFound.
func (o *ops) PutAttestationState(ctx context.Context, tenant string, st AttestationState) error {
	switch {
	case st.DeviceID == "":
		return fmt.Errorf("%w: attestation state needs a device", ErrInvalid)
	case !st.State.Valid():
		return fmt.Errorf("%w: verdict state %q", ErrInvalid, st.State)
	case st.VerdictAt.IsZero() && st.State != VerdictUnknown:
		return fmt.Errorf("%w: a %s verdict needs its time", ErrInvalid, st.State)
	case st.ConsecutiveFailures < 0:
		return fmt.Errorf("%w: negative failure count", ErrInvalid)
	}
	reasons, err := nullJSON("reasons", st.Reasons)
	if err != nil {
		return err
	}
	baseline, err := encodeBaseline(st.BaselinePCRs)
	if err != nil {
		return err
	}
	var clk, resets, restarts, firmware, trusted any
	if t := st.TPM; t != nil {
		// uint64 values keep their bits in the int64 column.
		clk, firmware = int64(t.Clock), int64(t.FirmwareVersion)
		resets, restarts, trusted = int64(t.ResetCount), int64(t.RestartCount), nullMicros(t.VerifiedAt)
	}
	if _, err := o.exec(ctx, putStateSQL, tenant, st.DeviceID,
		string(st.State), reasons, nullString(st.PCRDigest), nullMicros(st.EvidenceAt), nullMicros(st.VerdictAt),
		st.NonceAgeMS, st.Reboot, clk, resets, restarts, firmware, trusted,
		baseline, st.Quarantined, nullMicros(st.LastChallengeAt), st.ConsecutiveFailures); err != nil {
		return fmt.Errorf("put attestation state of device %s: %w", st.DeviceID, mapInsertErr(err))
	}
	return nil
}

// AttestationFilter narrows ListAttestationStates; zero fields match
// everything.
type AttestationFilter struct {
	FleetID string
	// States keeps devices in any of these states; VerdictUnknown also
	// matches devices that have no state yet.
	States []VerdictState
	// VerdictBefore keeps devices whose last verdict is older than this;
	// devices without a verdict never match. With States {trusted,
	// untrusted} it is the stale sweep's query.
	VerdictBefore time.Time
}

// ListAttestationStates returns the attestation state of every device of
// tenant that matches f, including devices never attested (as
// VerdictUnknown), in the order of ListDevices.
func (o *ops) ListAttestationStates(ctx context.Context, tenant string, f AttestationFilter) ([]AttestationState, error) {
	q := `SELECT ` + stateCols + ` FROM devices d
		LEFT JOIN attestation_state a ON a.tenant_id = d.tenant_id AND a.device_id = d.id
		WHERE d.tenant_id = ?`
	args := []any{tenant}
	if f.FleetID != "" {
		q, args = q+` AND d.fleet_id = ?`, append(args, f.FleetID)
	}
	if len(f.States) > 0 {
		q += ` AND COALESCE(a.state, 'unknown') IN (?` + strings.Repeat(", ?", len(f.States)-1) + `)`
		for _, s := range f.States {
			args = append(args, string(s))
		}
	}
	if !f.VerdictBefore.IsZero() {
		q, args = q+` AND a.verdict_at < ?`, append(args, micros(f.VerdictBefore))
	}
	states, err := queryAll(ctx, o, scanState, q+` ORDER BY d.created_at, d.id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list attestation states: %w", err)
	}
	return states, nil
}

// SetQuarantined sets or lifts the quarantine of a device of tenant (a
// device without attestation state gets one, unknown). A device tenant does
// not have is ErrNotFound.
func (o *ops) SetQuarantined(ctx context.Context, tenant, device string, quarantined bool) error {
	if _, err := o.exec(ctx, `INSERT INTO attestation_state (tenant_id, device_id, state, quarantined) VALUES (?, ?, ?, ?)
		ON CONFLICT (tenant_id, device_id) DO UPDATE SET quarantined = excluded.quarantined`,
		tenant, device, string(VerdictUnknown), quarantined); err != nil {
		return fmt.Errorf("set quarantine of device %s: %w", device, mapInsertErr(err))
	}
	return nil
}

// Quarantined reports whether a device of tenant is quarantined (never
// attested is not quarantined). A device tenant does not have is
// ErrNotFound, so a caller that refuses on error refuses unknown devices.
func (o *ops) Quarantined(ctx context.Context, tenant, device string) (bool, error) {
	var q sql.NullBool
	if err := o.queryRow(ctx, `SELECT a.quarantined FROM devices d
		LEFT JOIN attestation_state a ON a.tenant_id = d.tenant_id AND a.device_id = d.id
		WHERE d.tenant_id = ? AND d.id = ?`, tenant, device).Scan(&q); err != nil {
		return false, fmt.Errorf("quarantine of device %s: %w", device, mapErr(err))
	}
	return q.Bool, nil
}

// AttestationRecord is one entry of a device's verdict history.
type AttestationRecord struct {
	Tenant     string
	DeviceID   string
	Seq        int64 // 1, 2, 3, … per device, set by AppendAttestationHistory
	State      VerdictState
	Reasons    json.RawMessage // JSON, stored byte for byte
	PCRDigest  string
	EvidenceAt time.Time
	VerdictAt  time.Time
	NonceAgeMS int64
	Reboot     bool
}

const historyCols = `tenant_id, device_id, seq, state, reasons, pcr_digest, evidence_at, verdict_at, nonce_age_ms, reboot`

func scanRecord(sc scanner) (AttestationRecord, error) {
	var r AttestationRecord
	var reasons, digest sql.NullString
	var evidence sql.NullInt64
	var verdict int64
	if err := sc.Scan(&r.Tenant, &r.DeviceID, &r.Seq, &r.State, &reasons, &digest, &evidence, &verdict,
		&r.NonceAgeMS, &r.Reboot); err != nil {
		return AttestationRecord{}, mapErr(err)
	}
	if reasons.Valid {
		r.Reasons = json.RawMessage(reasons.String)
	}
	r.PCRDigest, r.EvidenceAt, r.VerdictAt = digest.String, fromNullMicros(evidence), fromMicros(verdict)
	return r, nil
}

// AppendAttestationHistory appends r to the history of device r.DeviceID of
// tenant, numbering it after the device's previous entry, and drops the
// device's entries beyond the newest N (WithAttestationHistory). It returns
// the stored entry. Appends to one device are serialised; inside a Tx the
// device's history stays locked until commit. A device tenant does not have
// is ErrNotFound.
func (o *ops) AppendAttestationHistory(ctx context.Context, tenant string, r AttestationRecord) (AttestationRecord, error) {
	switch {
	case r.DeviceID == "":
		return AttestationRecord{}, fmt.Errorf("%w: history entry needs a device", ErrInvalid)
	case !r.State.Valid():
		return AttestationRecord{}, fmt.Errorf("%w: verdict state %q", ErrInvalid, r.State)
	case r.VerdictAt.IsZero():
		return AttestationRecord{}, fmt.Errorf("%w: history entry needs its verdict time", ErrInvalid)
	}
	reasons, err := nullJSON("reasons", r.Reasons)
	if err != nil {
		return AttestationRecord{}, err
	}
	r.Tenant = tenant
	r.VerdictAt = r.VerdictAt.UTC().Truncate(time.Microsecond)
	if !r.EvidenceAt.IsZero() {
		r.EvidenceAt = r.EvidenceAt.UTC().Truncate(time.Microsecond)
	}
	keep := o.historyKeep
	if keep <= 0 {
		keep = DefaultAttestationHistory
	}
	err = o.inTx(ctx, func(o *ops) error {
		// Taking the head's row lock is what serialises appenders.
		if err := o.queryRowW(ctx, `INSERT INTO attestation_history_heads (tenant_id, device_id, seq) VALUES (?, ?, 1)
			ON CONFLICT (tenant_id, device_id) DO UPDATE SET seq = attestation_history_heads.seq + 1
			RETURNING seq`, tenant, r.DeviceID).Scan(&r.Seq); err != nil {
			return mapInsertErr(err)
		}
		if _, err := o.exec(ctx, `INSERT INTO attestation_history (`+historyCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			tenant, r.DeviceID, r.Seq, string(r.State), reasons, nullString(r.PCRDigest), nullMicros(r.EvidenceAt),
			micros(r.VerdictAt), r.NonceAgeMS, r.Reboot); err != nil {
			return mapInsertErr(err)
		}
		// Sequence numbers are contiguous, so the entries to drop are a range.
		if r.Seq > int64(keep) {
			if _, err := o.exec(ctx, `DELETE FROM attestation_history WHERE tenant_id = ? AND device_id = ? AND seq <= ?`,
				tenant, r.DeviceID, r.Seq-int64(keep)); err != nil {
				return fmt.Errorf("trim: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return AttestationRecord{}, fmt.Errorf("append attestation history of device %s: %w", r.DeviceID, err)
	}
	return r, nil
}

// MaxHistoryPage bounds one ListAttestationHistory call.
const MaxHistoryPage = 1000

// ListAttestationHistory returns up to limit history entries of a device of
// tenant, newest first, only those with a verdict before before when it is
// not zero (pass the last entry's VerdictAt to page on). limit <= 0 means
// 100; it is capped at MaxHistoryPage. An unknown device has no history.
func (o *ops) ListAttestationHistory(ctx context.Context, tenant, device string, before time.Time, limit int) ([]AttestationRecord, error) {
	switch {
	case limit <= 0:
		limit = 100
	case limit > MaxHistoryPage:
		limit = MaxHistoryPage
	}
	q, args := `SELECT `+historyCols+` FROM attestation_history WHERE tenant_id = ? AND device_id = ?`, []any{tenant, device}
	if !before.IsZero() {
		q, args = q+` AND verdict_at < ?`, append(args, micros(before))
	}
	recs, err := queryAll(ctx, o, scanRecord, q+` ORDER BY verdict_at DESC, seq DESC LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("attestation history of device %s: %w", device, err)
	}
	return recs, nil
}

// NonceSize is the length of an attestation nonce in bytes.
const NonceSize = 32

// PrefixChallenge starts attestation challenge (nonce) ids.
const PrefixChallenge = "chl"

// AttestationNonce is a challenge nonce issued to one device. Value, the
// nonce itself, exists only in IssueNonce's result: the store keeps its
// SHA-256.
type AttestationNonce struct {
	ID        string
	Tenant    string
	DeviceID  string
	Value     []byte
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// IssueNonce creates a fresh random nonce for a device of tenant, valid for
// ttl by the store's clock, and records the time as the device's
// LastChallengeAt. A device tenant does not have is ErrNotFound.
func (o *ops) IssueNonce(ctx context.Context, tenant, device string, ttl time.Duration) (AttestationNonce, error) {
	if ttl < time.Microsecond {
		return AttestationNonce{}, fmt.Errorf("%w: nonce lifetime %v", ErrInvalid, ttl)
	}
	n := AttestationNonce{ID: NewID(PrefixChallenge), Tenant: tenant, DeviceID: device, Value: make([]byte, NonceSize)}
	_, _ = rand.Read(n.Value) // never fails (crypto/rand crashes instead)
	n.IssuedAt = o.clock()
	n.ExpiresAt = n.IssuedAt.Add(ttl).Truncate(time.Microsecond)
	hash := sha256.Sum256(n.Value)
	err := o.inTx(ctx, func(o *ops) error {
		if _, err := o.exec(ctx, `INSERT INTO attestation_nonces (id, tenant_id, device_id, nonce_hash, issued_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?)`, n.ID, tenant, device, hash[:], micros(n.IssuedAt), micros(n.ExpiresAt)); err != nil {
			return mapInsertErr(err)
		}
		// Never backwards: replicas' clocks differ a little.
		_, err := o.exec(ctx, `INSERT INTO attestation_state (tenant_id, device_id, state, last_challenge_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (tenant_id, device_id) DO UPDATE SET last_challenge_at = CASE
				WHEN attestation_state.last_challenge_at IS NULL OR attestation_state.last_challenge_at < excluded.last_challenge_at
				THEN excluded.last_challenge_at ELSE attestation_state.last_challenge_at END`,
			tenant, device, string(VerdictUnknown), micros(n.IssuedAt))
		return mapInsertErr(err)
	})
	if err != nil {
		return AttestationNonce{}, fmt.Errorf("issue nonce to device %s: %w", device, err)
	}
	return n, nil
}

// ConsumeNonce uses up nonce id, presented by a device of tenant with value
// nonce, and returns when it was issued. It is atomic: of any number of
// concurrent consumers, on any number of replicas, exactly one succeeds.
// A nonce that was never issued, or was issued to another device or tenant,
// or presented with another value is ErrNotFound (and stays usable by its
// own device); one already used is ErrNonceUsed; one past its expiry (by the
// store's clock) ErrNonceExpired.
func (o *ops) ConsumeNonce(ctx context.Context, tenant, device, id string, nonce []byte) (time.Time, error) {
	now := micros(o.clock())
	// Comparing hashes in SQL is safe: timing may leak bytes of the
	// SHA-256 of a 256-bit random value, which says nothing about the value.
	hash := sha256.Sum256(nonce)
	var issued int64
	// One statement decides: PostgreSQL re-checks used_at after waiting for
	// a concurrent consumer's row lock, SQLite runs one writer at a time.
	err := o.queryRowW(ctx, `UPDATE attestation_nonces SET used_at = ?
		WHERE id = ? AND tenant_id = ? AND device_id = ? AND nonce_hash = ? AND used_at IS NULL AND expires_at > ?
		RETURNING issued_at`, now, id, tenant, device, hash[:], now).Scan(&issued)
	if err == nil {
		return fromMicros(issued), nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, fmt.Errorf("consume nonce %s: %w", id, err)
	}
	// Refused: find out why.
	var used sql.NullInt64
	err = o.queryRowW(ctx, `SELECT used_at FROM attestation_nonces
		WHERE id = ? AND tenant_id = ? AND device_id = ? AND nonce_hash = ?`, id, tenant, device, hash[:]).Scan(&used)
	switch {
	case err != nil:
		err = mapErr(err)
	case used.Valid:
		err = ErrNonceUsed
	default:
		err = ErrNonceExpired
	}
	return time.Time{}, fmt.Errorf("consume nonce %s: %w", id, err)
}

// PruneNonces deletes the nonces of every tenant that expired before before,
// used or not, and returns how many. Until a nonce is pruned, presenting it
// again is reported as ErrNonceUsed or ErrNonceExpired; afterwards as
// ErrNotFound, which refuses it all the same.
func (o *ops) PruneNonces(ctx context.Context, before time.Time) (int64, error) {
	res, err := o.exec(ctx, `DELETE FROM attestation_nonces WHERE expires_at < ?`, micros(before))
	if err != nil {
		return 0, fmt.Errorf("prune nonces: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune nonces: %w", err)
	}
	return n, nil
}
