package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/audit"
)

// EntryFromRow converts a stored audit row to an audit.Entry. A row whose
// hashes are not 32 bytes (or whose seq is not positive) cannot be an
// entry: that is an error, never a silently repaired entry.
func EntryFromRow(r store.AuditRow) (audit.Entry, error) {
	e := audit.Entry{
		Tenant: r.Tenant, Time: r.Time, Actor: r.Actor, Action: r.Action,
		Target: r.Target, RequestID: r.RequestID, Details: r.Details,
	}
	if r.Seq <= 0 {
		return audit.Entry{}, fmt.Errorf("audit row of tenant %s has seq %d", r.Tenant, r.Seq)
	}
	e.Seq = uint64(r.Seq)
	if len(r.PrevHash) != len(e.PrevHash) || len(r.Hash) != len(e.Hash) {
		return audit.Entry{}, fmt.Errorf("audit row %d of tenant %s: hashes of %d and %d bytes, want %d",
			r.Seq, r.Tenant, len(r.PrevHash), len(r.Hash), len(e.Hash))
	}
	copy(e.PrevHash[:], r.PrevHash)
	copy(e.Hash[:], r.Hash)
	return e, nil
}

// RowFromEntry converts an audit.Entry to the row the store keeps.
func RowFromEntry(e audit.Entry) store.AuditRow {
	return store.AuditRow{
		Tenant: e.Tenant, Seq: int64(e.Seq), Time: e.Time, Actor: e.Actor, Action: e.Action,
		Target: e.Target, RequestID: e.RequestID, Details: e.Details,
		PrevHash: append([]byte(nil), e.PrevHash[:]...), Hash: append([]byte(nil), e.Hash[:]...),
	}
}

// AppendAudit appends e (Tenant, Time, Actor, Action and optionally
// Target, RequestID and Details set) to its tenant's chain inside tx,
// chaining it to the last stored entry with audit.Next, and returns the
// entry as stored. Call it last in the transaction (see store.AppendAudit).
// The control-plane core uses it for enrollment and device events.
func AppendAudit(ctx context.Context, tx *store.Tx, e audit.Entry) (audit.Entry, error) {
	var out audit.Entry
	var buildErr error
	_, err := tx.AppendAudit(ctx, e.Tenant, func(prev *store.AuditRow) store.AuditRow {
		var p *audit.Entry
		if prev != nil {
			pe, err := EntryFromRow(*prev)
			if err != nil {
				buildErr = err
				return store.AuditRow{} // refused by the store; buildErr is reported
			}
			p = &pe
		}
		next, err := audit.Next(p, e)
		if err != nil {
			buildErr = err
			return store.AuditRow{}
		}
		out = next
		return RowFromEntry(next)
	})
	if buildErr != nil {
		return audit.Entry{}, fmt.Errorf("audit entry %s: %w", e.Action, buildErr)
	}
	if err != nil {
		return audit.Entry{}, err
	}
	return out, nil
}

// change is what a mutation reports for its audit entry.
type change struct {
	target  string
	details map[string]any // non-secret fields only
}

// mutate runs fn and the audit entry describing its change in one
// transaction: action like "fleet.create", actor the caller's key id.
func (a *handler) mutate(r *http.Request, action string, fn func(tx *store.Tx, p principal) (change, error)) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	return a.store.WithTx(ctx, func(tx *store.Tx) error {
		c, err := fn(tx, p)
		if err != nil {
			return err
		}
		return a.appendChange(ctx, tx, p, action, c)
	})
}

// appendChange appends the audit entry of a change made by p in tx; for
// mutations whose transaction another package runs (the registry's).
func (a *handler) appendChange(ctx context.Context, tx *store.Tx, p principal, action string, c change) error {
	var details json.RawMessage
	if len(c.details) > 0 {
		var err error
		if details, err = json.Marshal(c.details); err != nil {
			return fmt.Errorf("audit details of %s: %w", action, err)
		}
	}
	_, err := AppendAudit(ctx, tx, audit.Entry{
		Tenant: p.Tenant, Time: a.now(), Actor: p.ID, Action: action,
		Target: c.target, RequestID: RequestID(ctx), Details: details,
	})
	return err
}
