package agent

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/tensorguard/tensorguardflow/agent/internal/install"
	"github.com/tensorguard/tensorguardflow/agent/internal/keys"
	"github.com/tensorguard/tensorguardflow/agent/internal/state"
)

// Status is what `tg-agent status` prints: the identity from the state file
// (no TPM access needed) and, while the agent runs, its live state.
type Status struct {
	Enrolled        bool      `json:"enrolled"`
	DeviceID        string    `json:"device_id,omitempty"`
	TenantID        string    `json:"tenant_id,omitempty"`
	FleetID         string    `json:"fleet_id,omitempty"`
	TPMKind         string    `json:"tpm_kind,omitempty"`
	CertSerial      string    `json:"cert_serial,omitempty"`
	CertNotAfter    time.Time `json:"cert_not_after,omitzero"`
	EnrolledAt      time.Time `json:"enrolled_at,omitzero"`
	ControlPlaneURL string    `json:"control_plane_url,omitempty"`
	BrokerURL       string    `json:"broker_url,omitempty"`
	// KEMKey is how the package decryption key is protected ("tpm-sealed",
	// or "software" without a TPM; empty: no key yet), and
	// KEMKeyRegistered whether the control plane has its public part (only
	// then can the device receive package key grants).
	KEMKey           string `json:"kem_key,omitempty"`
	KEMKeyRegistered bool   `json:"kem_key_registered"`
	// Model is the active slot's package and PreviousModel the previous
	// one (docs/packages.md, A/B slots); nil when the slot is empty. The
	// active slot is not committed while its self-test runs.
	Model         *ModelStatus `json:"model,omitempty"`
	PreviousModel *ModelStatus `json:"previous_model,omitempty"`
	// Serving is the model the running agent has loaded and answers
	// with: the active slot's once committed (the previous one while the
	// active slot is on trial); nil when none is loaded, and always nil
	// from the state file alone (known only while the agent runs).
	Serving *ModelStatus `json:"serving,omitempty"`
	Session uint64       `json:"session"`
	// Outbox counters are known only while the agent runs.
	OutboxPending int    `json:"outbox_pending"`
	OutboxDropped uint64 `json:"outbox_dropped"`

	// Running, Connected and UpdatedAt come from the running agent's
	// status file; Running is false when read from the state file itself.
	Running   bool      `json:"running"`
	Connected bool      `json:"connected"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	StatePath string    `json:"state_path"`
}

func statusFromDB(db *state.DB) (*Status, error) {
	st := &Status{StatePath: db.Path()}
	id, err := db.Identity()
	switch {
	case errors.Is(err, state.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		st.Enrolled = true
		st.DeviceID, st.TenantID, st.FleetID = id.DeviceID, id.TenantID, id.FleetID
		st.EnrolledAt, st.ControlPlaneURL, st.BrokerURL = id.EnrolledAt, id.ControlPlaneURL, id.BrokerURL
		if b, _ := pem.Decode(id.CertChainPEM); b != nil {
			if c, err := x509.ParseCertificate(b.Bytes); err == nil {
				st.CertSerial, st.CertNotAfter = c.SerialNumber.Text(16), c.NotAfter.UTC()
			}
		}
		if k, err := db.Get(kvNamespace, kvTPMKind); err == nil {
			st.TPMKind = string(k)
		}
		kc := keys.New(db, nil) // reads only what the state says; unseals nothing
		if p, err := kc.Protection(); err == nil {
			st.KEMKey = p
			st.KEMKeyRegistered, _ = kc.Registered()
		}
	}
	active, previous, err := install.ReadSlots(db)
	if err != nil {
		return nil, err
	}
	st.Model, st.PreviousModel = modelStatus(active), modelStatus(previous)
	if st.Session, err = db.Session(); err != nil {
		return nil, err
	}
	return st, nil
}

// ModelStatus names an installed model package.
type ModelStatus struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	PackageID string `json:"package_id"`
	Committed bool   `json:"committed"`
}

func modelStatus(s *install.Slot) *ModelStatus {
	if s == nil {
		return nil
	}
	return &ModelStatus{Name: s.Name, Version: s.Version, PackageID: s.PackageID, Committed: s.Committed}
}

// statusFile is where a running agent mirrors its Status.
func statusFile(statePath string) string { return statePath + ".status.json" }

// writeStatusFile mirrors the live status for `tg-agent status` (the state
// file is locked while the agent runs). Best effort: failures are logged.
func (a *Agent) writeStatusFile(running bool) {
	a.mu.Lock()
	db, sess, box, inst := a.db, a.session, a.box, a.installer
	a.mu.Unlock()
	if db == nil {
		return
	}
	st, err := statusFromDB(db)
	if err != nil {
		a.log.Warn("status file", "err", err)
		return
	}
	st.Running, st.UpdatedAt = running, time.Now().UTC()
	if sess != nil && running {
		st.Connected, _ = sess.Connected()
	}
	if inst != nil && running {
		if slot, ok := inst.Active(); ok {
			st.Serving = modelStatus(&slot)
		}
	}
	if box != nil {
		if s, err := box.Stats(); err == nil {
			st.OutboxPending, st.OutboxDropped = s.Pending, s.Dropped
		}
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	path := statusFile(db.Path())
	tmp := path + ".tmp"
	err = os.WriteFile(tmp, append(b, '\n'), 0o600)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		a.log.Warn("status file", "path", path, "err", err)
	}
}

// ReadStatus reports the device's status without touching the TPM: from the
// state file when no agent holds it, else from the running agent's status
// file.
func ReadStatus(cfg *Config) (*Status, error) {
	if _, err := os.Stat(cfg.StatePath); errors.Is(err, os.ErrNotExist) {
		return &Status{StatePath: cfg.StatePath}, nil
	}
	db, err := state.Open(cfg.StatePath, state.Options{ReadOnly: true, LockTimeout: 200 * time.Millisecond})
	if errors.Is(err, state.ErrLocked) {
		b, ferr := os.ReadFile(statusFile(cfg.StatePath))
		if ferr != nil {
			return nil, fmt.Errorf("%w, and no status file from the running agent: %v", err, ferr)
		}
		var st Status
		if err := json.Unmarshal(b, &st); err != nil {
			return nil, fmt.Errorf("status file %s: %w", statusFile(cfg.StatePath), err)
		}
		return &st, nil
	}
	if err != nil {
		return nil, err
	}
	defer db.Close()
	st, err := statusFromDB(db)
	if err != nil {
		return nil, err
	}
	// Outbox counters need outbox.Open, which writes; a read-only status
	// reports them only from a running agent's status file.
	return st, nil
}
