package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// Attestation history paging limits.
const (
	DefaultAttestationLimit = 100
	MaxAttestationLimit     = store.MaxHistoryPage
)

// AttestationRecord is one entry of a device's attestation verdict history
// (GET /api/v1/devices/{id}/attestations), as it was published.
type AttestationRecord struct {
	State      string               `json:"state"`
	Reasons    []wire.VerdictReason `json:"reasons"`
	PCRDigest  string               `json:"pcr_digest"`
	EvidenceAt *time.Time           `json:"evidence_at"`
	VerdictAt  time.Time            `json:"verdict_at"`
	Reboot     bool                 `json:"reboot"`
}

// NewAttestationRecord is the API view of a history entry.
func NewAttestationRecord(r store.AttestationRecord) (AttestationRecord, error) {
	out := AttestationRecord{State: string(r.State), Reasons: []wire.VerdictReason{}, PCRDigest: r.PCRDigest,
		EvidenceAt: optTime(r.EvidenceAt), VerdictAt: r.VerdictAt.UTC(), Reboot: r.Reboot}
	if len(r.Reasons) > 0 {
		if err := json.Unmarshal(r.Reasons, &out.Reasons); err != nil {
			return AttestationRecord{}, fmt.Errorf("attestation history of device %s, entry %d: reasons: %w", r.DeviceID, r.Seq, err)
		}
		if out.Reasons == nil {
			out.Reasons = []wire.VerdictReason{}
		}
	}
	return out, nil
}

func (a *handler) listAttestations(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if err := checkQuery(q, "before", "limit"); err != nil {
		return err
	}
	var before time.Time
	if s, err := singleQuery(q, "before"); err != nil {
		return err
	} else if s != "" {
		if before, err = time.Parse(time.RFC3339Nano, s); err != nil {
			return badRequest("query parameter \"before\": %q is not an RFC 3339 time", s)
		}
	}
	limit := DefaultAttestationLimit
	if s, err := singleQuery(q, "limit"); err != nil {
		return err
	} else if s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxAttestationLimit {
			return badRequest("query parameter \"limit\": %q is not a number from 1 to %d", s, MaxAttestationLimit)
		}
		limit = n
	}
	// Another tenant's device (or none) is 404, not an empty history.
	d, err := a.store.GetDevice(r.Context(), p.Tenant, r.PathValue("id"))
	if err != nil {
		return err
	}
	recs, err := a.store.ListAttestationHistory(r.Context(), p.Tenant, d.ID, before, limit)
	if err != nil {
		return err
	}
	out := make([]AttestationRecord, 0, len(recs))
	for _, rec := range recs {
		v, err := NewAttestationRecord(rec)
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
