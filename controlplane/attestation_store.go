package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/attest"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// dbAttestStore adapts the store's attestation tables (attestation_state,
// attestation_history) to AttestationStateStore and AttestationHistory.
// It writes only the fields the attestation service owns, and the
// quarantine the verdict calls for (see quarantineFor) in the same
// transaction; the challenge bookkeeping of the row is kept
// (read-modify-write in one transaction).
type dbAttestStore struct{ st *store.Store }

var (
	_ AttestationStateStore = dbAttestStore{}
	_ AttestationHistory    = dbAttestStore{}
)

func (d dbAttestStore) GetAttestation(ctx context.Context, tenant, device string) (attestRecord, bool, error) {
	s, err := d.st.GetAttestationState(ctx, tenant, device)
	if err != nil {
		return attestRecord{}, false, err
	}
	var rec attestRecord
	if t := s.TPM; t != nil {
		rec.State = &attest.DeviceState{Clock: t.Clock, ResetCount: t.ResetCount, RestartCount: t.RestartCount,
			FirmwareVersion: t.FirmwareVersion, VerifiedAt: t.VerifiedAt}
	}
	rec.Baseline = s.BaselinePCRs
	if s.State == store.VerdictUnknown && s.VerdictAt.IsZero() {
		return rec, rec.State != nil || rec.Baseline != nil, nil // never attested
	}
	v := &wire.Verdict{Schema: wire.VerdictSchema, Tenant: tenant, Fleet: s.FleetID, Device: device, State: string(s.State),
		PCRDigest: s.PCRDigest, EvidenceAt: s.EvidenceAt, NonceAgeMS: s.NonceAgeMS, Reboot: s.Reboot, VerdictAt: s.VerdictAt}
	if len(s.Reasons) > 0 {
		if err := json.Unmarshal(s.Reasons, &v.Reasons); err != nil {
			return attestRecord{}, false, fmt.Errorf("attestation state of %s: reasons: %w", device, err)
		}
	}
	rec.Verdict = v
	return rec, true, nil
}

func reasonsJSON(v *wire.Verdict) (json.RawMessage, error) {
	if v == nil || len(v.Reasons) == 0 {
		return nil, nil
	}
	return json.Marshal(v.Reasons)
}

func (d dbAttestStore) PutAttestation(ctx context.Context, tenant, device string, rec attestRecord) error {
	reasons, err := reasonsJSON(rec.Verdict)
	if err != nil {
		return err
	}
	return d.st.WithTx(ctx, func(tx *store.Tx) error {
		s, err := tx.GetAttestationState(ctx, tenant, device)
		if err != nil {
			return err
		}
		s.TPM = nil
		if t := rec.State; t != nil {
			s.TPM = &store.TPMClockState{Clock: t.Clock, ResetCount: t.ResetCount, RestartCount: t.RestartCount,
				FirmwareVersion: t.FirmwareVersion, VerifiedAt: t.VerifiedAt}
		}
		s.BaselinePCRs = rec.Baseline
		if v := rec.Verdict; v != nil {
			s.State, s.Reasons, s.PCRDigest = store.VerdictState(v.State), reasons, v.PCRDigest
			s.EvidenceAt, s.VerdictAt, s.NonceAgeMS, s.Reboot = v.EvidenceAt, v.VerdictAt, v.NonceAgeMS, v.Reboot
			if q, ok := quarantineFor(v.State); ok {
				s.Quarantined = q
			}
		}
		return tx.PutAttestationState(ctx, tenant, s)
	})
}

// quarantineFor is the quarantine a verdict state calls for: an untrusted
// or stale device is quarantined, a trusted one released; ok=false (an
// unknown verdict) leaves the quarantine as it is.
func quarantineFor(state string) (quarantined, ok bool) {
	switch state {
	case wire.VerdictUntrusted, wire.VerdictStale:
		return true, true
	case wire.VerdictTrusted:
		return false, true
	}
	return false, false
}

func (d dbAttestStore) AppendVerdict(ctx context.Context, v wire.Verdict) error {
	reasons, err := reasonsJSON(&v)
	if err != nil {
		return err
	}
	_, err = d.st.AppendAttestationHistory(ctx, v.Tenant, store.AttestationRecord{
		DeviceID: v.Device, State: store.VerdictState(v.State), Reasons: reasons, PCRDigest: v.PCRDigest,
		EvidenceAt: v.EvidenceAt, VerdictAt: v.VerdictAt, NonceAgeMS: v.NonceAgeMS, Reboot: v.Reboot,
	})
	return err
}

// dbNonces adapts the store's attestation nonces to attest.NonceStore: a
// nonce is consumed at most once across restarts and replicas.
type dbNonces struct{ st *store.Store }

var _ attest.NonceStore = dbNonces{}

func (d dbNonces) Issue(ctx context.Context, tenant, device string, ttl time.Duration) (attest.Nonce, error) {
	n, err := d.st.IssueNonce(ctx, tenant, device, ttl)
	if err != nil {
		return attest.Nonce{}, err
	}
	return attest.Nonce{ID: n.ID, Value: n.Value, IssuedAt: n.IssuedAt, ExpiresAt: n.ExpiresAt}, nil
}

func (d dbNonces) Consume(ctx context.Context, tenant, device, id string, nonce []byte) (time.Time, error) {
	t, err := d.st.ConsumeNonce(ctx, tenant, device, id, nonce)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return time.Time{}, attest.ErrNonceUnknown
	case errors.Is(err, store.ErrNonceUsed):
		return time.Time{}, attest.ErrNonceReplayed
	case errors.Is(err, store.ErrNonceExpired):
		return time.Time{}, attest.ErrNonceExpired
	}
	return t, err
}
