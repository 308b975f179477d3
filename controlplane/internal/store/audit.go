package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"time"
)

// AuditRow is one entry of a tenant's audit chain as stored. The store keeps
// what the caller computed, byte for byte (Details is raw JSON, hashes are
// opaque), and returns Time in UTC at microsecond precision.
type AuditRow struct {
	Tenant    string
	Seq       int64 // 1, 2, 3, … per tenant
	Time      time.Time
	Actor     string
	Action    string
	Target    string
	RequestID string
	Details   json.RawMessage
	PrevHash  []byte
	Hash      []byte
}

// NextAuditSeq is the sequence number of the entry that follows prev (nil:
// the tenant's first entry).
func NextAuditSeq(prev *AuditRow) int64 {
	if prev == nil {
		return 1
	}
	return prev.Seq + 1
}

// AppendAudit appends an entry to tenant's chain. It locks the tenant's
// chain, reads the last entry and calls build with it (nil if the chain is
// empty); build returns the new entry with Seq = NextAuditSeq(prev), PrevHash
// = prev.Hash and its own Hash. Concurrent appends to one tenant are
// serialised, so the chain never forks and has no gaps. Inside a Tx the entry
// commits with the transaction's other changes; call it last there, because
// the tenant's chain stays locked until commit.
//
// The entry is refused if it does not continue the chain, or if its Time has
// sub-microsecond precision (it would not read back as hashed).
func (o *ops) AppendAudit(ctx context.Context, tenant string, build func(prev *AuditRow) AuditRow) (AuditRow, error) {
	var row AuditRow
	err := o.inTx(ctx, func(o *ops) error {
		var seq int64
		// Taking the head's row lock is what serialises appenders.
		if err := o.queryRowW(ctx, `UPDATE audit_heads SET seq = seq + 1 WHERE tenant_id = ? RETURNING seq`, tenant).Scan(&seq); err != nil {
			return mapErr(err)
		}
		var prev *AuditRow
		if seq > 1 {
			p, err := scanAudit(o.queryRowW(ctx, `SELECT `+auditCols+` FROM audit_log WHERE tenant_id = ? AND seq = ?`, tenant, seq-1))
			if err != nil {
				return fmt.Errorf("read entry %d: %w", seq-1, err)
			}
			prev = &p
		}
		row = build(prev)
		if row.Tenant == "" {
			row.Tenant = tenant
		}
		switch {
		case row.Tenant != tenant:
			return fmt.Errorf("%w: entry for tenant %q appended to %q", ErrInvalid, row.Tenant, tenant)
		case row.Seq != seq:
			return fmt.Errorf("%w: entry has seq %d, the chain is at %d", ErrInvalid, row.Seq, seq)
		case prev != nil && !bytes.Equal(row.PrevHash, prev.Hash):
			return fmt.Errorf("%w: entry's prev_hash is not the hash of entry %d", ErrInvalid, prev.Seq)
		case len(row.Hash) == 0:
			return fmt.Errorf("%w: entry has no hash", ErrInvalid)
		case row.Time.IsZero() || !row.Time.Equal(row.Time.Truncate(time.Microsecond)):
			return fmt.Errorf("%w: entry time %v must be set, at microsecond precision", ErrInvalid, row.Time)
		}
		row.Time = row.Time.UTC()
		if row.PrevHash == nil {
			row.PrevHash = []byte{}
		}
		_, err := o.exec(ctx, `INSERT INTO audit_log (tenant_id, seq, at, actor, action, target, request_id, details, prev_hash, hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			tenant, row.Seq, micros(row.Time), row.Actor, row.Action, row.Target, row.RequestID, string(row.Details), row.PrevHash, row.Hash)
		return mapErr(err)
	})
	if err != nil {
		return AuditRow{}, fmt.Errorf("append audit entry for tenant %s: %w", tenant, err)
	}
	return row, nil
}

const auditCols = `tenant_id, seq, at, actor, action, target, request_id, details, prev_hash, hash`

func scanAudit(sc scanner) (AuditRow, error) {
	var r AuditRow
	var at int64
	var details string
	if err := sc.Scan(&r.Tenant, &r.Seq, &at, &r.Actor, &r.Action, &r.Target, &r.RequestID, &details, &r.PrevHash, &r.Hash); err != nil {
		return AuditRow{}, mapErr(err)
	}
	r.Time = fromMicros(at)
	if details != "" {
		r.Details = json.RawMessage(details)
	}
	if r.PrevHash == nil {
		r.PrevHash = []byte{}
	}
	return r, nil
}

// LastAudit returns tenant's newest audit entry; an empty chain is
// ErrNotFound.
func (o *ops) LastAudit(ctx context.Context, tenant string) (AuditRow, error) {
	r, err := scanAudit(o.queryRow(ctx, `SELECT `+auditCols+` FROM audit_log WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1`, tenant))
	if err != nil {
		return AuditRow{}, fmt.Errorf("last audit entry of tenant %s: %w", tenant, err)
	}
	return r, nil
}

// ListAudit streams tenant's entries with seq > afterSeq in order, at most
// limit of them (limit <= 0: all). Rows are read as the caller iterates;
// an error ends the sequence. While iterating on a Tx, do not use that Tx
// for anything else.
func (o *ops) ListAudit(ctx context.Context, tenant string, afterSeq int64, limit int) iter.Seq2[AuditRow, error] {
	return func(yield func(AuditRow, error) bool) {
		q, args := `SELECT `+auditCols+` FROM audit_log WHERE tenant_id = ? AND seq > ? ORDER BY seq`, []any{tenant, afterSeq}
		if limit > 0 {
			q, args = q+` LIMIT ?`, append(args, limit)
		}
		rows, err := o.query(ctx, q, args...)
		if err != nil {
			yield(AuditRow{}, fmt.Errorf("list audit of tenant %s: %w", tenant, err))
			return
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanAudit(rows)
			if err != nil {
				yield(AuditRow{}, fmt.Errorf("list audit of tenant %s: %w", tenant, err))
				return
			}
			if !yield(r, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(AuditRow{}, fmt.Errorf("list audit of tenant %s: %w", tenant, err))
		}
	}
}
