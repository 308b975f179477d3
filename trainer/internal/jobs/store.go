package jobs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Sentinel errors.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	// ErrFinished: the future has already finished (cancel of a finished
	// future).
	ErrFinished = errors.New("future already finished")
)

// Future statuses.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// Backends.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// Store is the queue over a database handle the caller owns.
type Store struct {
	db      *sql.DB
	backend string
	now     func() time.Time
}

// Open migrates the trainer's tables in db (backend SQLite or Postgres)
// and returns the Store.
func Open(ctx context.Context, db *sql.DB, backend string, now func() time.Time) (*Store, error) {
	if backend != SQLite && backend != Postgres {
		return nil, fmt.Errorf("jobs: unknown database backend %q", backend)
	}
	if now == nil {
		now = time.Now
	}
	s := &Store{db: db, backend: backend, now: now}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS trainer_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("jobs: migrate: %w", err)
	}
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	bytesType := "BLOB"
	if s.backend == Postgres {
		bytesType = "BYTEA"
	}
	for _, e := range entries {
		num, _, _ := strings.Cut(e.Name(), "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return fmt.Errorf("jobs: migration %s: bad name", e.Name())
		}
		b, err := fs.ReadFile(migrationFS, "migrations/"+e.Name())
		if err != nil {
			return err
		}
		err = s.tx(ctx, func(tx *sql.Tx) error {
			if s.backend == Postgres {
				// Replicas starting together migrate one after the other.
				if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(746774726169)`); err != nil {
					return err
				}
			}
			var n int
			if err := tx.QueryRowContext(ctx, s.rebind(`SELECT COUNT(*) FROM trainer_migrations WHERE version = ?`), v).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			for _, stmt := range strings.Split(strings.ReplaceAll(string(b), "{{BYTES}}", bytesType), ";") {
				if strings.TrimSpace(stripComments(stmt)) == "" {
					continue
				}
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("%s: %w", e.Name(), err)
				}
			}
			_, err := tx.ExecContext(ctx, s.rebind(`INSERT INTO trainer_migrations (version, name, applied_at) VALUES (?, ?, ?)`), v, e.Name(), s.now().UnixMicro())
			return err
		})
		if err != nil {
			return fmt.Errorf("jobs: migrate: %w", err)
		}
	}
	return nil
}

func stripComments(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "--") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func (s *Store) rebind(q string) string {
	if s.backend != Postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

func (s *Store) tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// NewID returns prefix-<20 random base32 characters>.
func NewID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// Client is a training client's row.
type Client struct {
	ID, Tenant string
	Config     string // JSON
	CreatedAt  time.Time
	State      []byte // sealed, nil before the first stateful future
	StateSeq   int64  // seq of the future that wrote State
	Steps      int64
	Ledger     string // JSON privacy events
}

// CreateClient stores a new client.
func (s *Store) CreateClient(ctx context.Context, c Client) error {
	_, err := s.db.ExecContext(ctx, s.rebind(`INSERT INTO trainer_clients (id, tenant, config, created_at) VALUES (?, ?, ?, ?)`),
		c.ID, c.Tenant, c.Config, c.CreatedAt.UnixMicro())
	return err
}

// GetClient returns tenant's client id.
func (s *Store) GetClient(ctx context.Context, tenant, id string) (Client, error) {
	var c Client
	var created int64
	err := s.db.QueryRowContext(ctx, s.rebind(`SELECT id, tenant, config, created_at, state, state_seq, steps, ledger FROM trainer_clients WHERE tenant = ? AND id = ?`), tenant, id).
		Scan(&c.ID, &c.Tenant, &c.Config, &created, &c.State, &c.StateSeq, &c.Steps, &c.Ledger)
	if errors.Is(err, sql.ErrNoRows) {
		return Client{}, ErrNotFound
	}
	c.CreatedAt = time.UnixMicro(created).UTC()
	return c, err
}

// ListClients returns tenant's clients, newest first (without states).
func (s *Store) ListClients(ctx context.Context, tenant string) ([]Client, error) {
	rows, err := s.db.QueryContext(ctx, s.rebind(`SELECT id, tenant, config, created_at, state_seq, steps, ledger FROM trainer_clients WHERE tenant = ? ORDER BY created_at DESC, id`), tenant)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Client
	for rows.Next() {
		var c Client
		var created int64
		if err := rows.Scan(&c.ID, &c.Tenant, &c.Config, &created, &c.StateSeq, &c.Steps, &c.Ledger); err != nil {
			return nil, err
		}
		c.CreatedAt = time.UnixMicro(created).UTC()
		out = append(out, c)
	}
	return out, rows.Err()
}

// Future is one submitted operation.
type Future struct {
	ID, Tenant, ClientID string
	Seq                  int64
	Op                   string
	Request              []byte // sealed
	RequestHash          string
	IdempotencyKey       string
	Actor                string
	Status               string
	Cancel               bool
	Result               []byte // sealed
	ErrorCode, ErrorMsg  string
	CreatedAt            time.Time
	StartedAt            time.Time
	FinishedAt           time.Time
	ExpiresAt            time.Time
}

// HashRequest is the request hash idempotent retries compare.
func HashRequest(op string, plaintext []byte) string {
	h := sha256.New()
	h.Write([]byte(op))
	h.Write([]byte{0})
	h.Write(plaintext)
	return hex.EncodeToString(h.Sum(nil))
}

// Submit queues f (ID, Tenant, ClientID, Op, Request, RequestHash and the
// optional IdempotencyKey set) as the client's next operation and returns
// it with its seq. A reused idempotency key returns the first future when
// the request hash matches, else ErrConflict. check, when set, runs in the
// same transaction with the client's queued and running futures by op
// (admission control: a budget that queued work would exceed).
func (s *Store) Submit(ctx context.Context, f Future, check func(c Client, pending map[string]int) error) (Future, bool, error) {
	var out Future
	existed := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if f.IdempotencyKey != "" {
			prev, err := s.futureTx(ctx, tx, `tenant = ? AND idempotency_key = ?`, f.Tenant, f.IdempotencyKey)
			if err == nil {
				if prev.RequestHash != f.RequestHash || prev.ClientID != f.ClientID || prev.Op != f.Op {
					return fmt.Errorf("%w: idempotency key %q was used for another request", ErrConflict, f.IdempotencyKey)
				}
				out, existed = prev, true
				return nil
			}
			if !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		var c Client
		var created int64
		var seq int64
		err := tx.QueryRowContext(ctx, s.rebind(`SELECT id, tenant, config, created_at, state_seq, steps, ledger, next_seq FROM trainer_clients WHERE tenant = ? AND id = ?`), f.Tenant, f.ClientID).
			Scan(&c.ID, &c.Tenant, &c.Config, &created, &c.StateSeq, &c.Steps, &c.Ledger, &seq)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if check != nil {
			pending := map[string]int{}
			rows, err := tx.QueryContext(ctx, s.rebind(`SELECT op, COUNT(*) FROM trainer_futures WHERE client_id = ? AND status IN ('queued', 'running') GROUP BY op`), f.ClientID)
			if err != nil {
				return err
			}
			for rows.Next() {
				var op string
				var n int
				if err := rows.Scan(&op, &n); err != nil {
					rows.Close()
					return err
				}
				pending[op] = n
			}
			rows.Close()
			if err := check(c, pending); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, s.rebind(`UPDATE trainer_clients SET next_seq = next_seq + 1 WHERE id = ?`), f.ClientID); err != nil {
			return err
		}
		f.Seq, f.Status, f.CreatedAt = seq, StatusQueued, s.now().UTC()
		var idem any
		if f.IdempotencyKey != "" {
			idem = f.IdempotencyKey
		}
		_, err = tx.ExecContext(ctx, s.rebind(`INSERT INTO trainer_futures (id, tenant, client_id, seq, op, request, request_hash, idempotency_key, actor, status, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			f.ID, f.Tenant, f.ClientID, f.Seq, f.Op, f.Request, f.RequestHash, idem, f.Actor, f.Status, f.CreatedAt.UnixMicro())
		out = f
		return err
	})
	return out, existed, err
}

const futureCols = `id, tenant, client_id, seq, op, request, request_hash, idempotency_key, actor, status, cancel, result, error_code, error_message, created_at, started_at, finished_at, expires_at`

type scanner interface{ Scan(dest ...any) error }

func scanFuture(r scanner) (Future, error) {
	var f Future
	var idem, code, msg sql.NullString
	var cancel int
	var created int64
	var started, finished, expires sql.NullInt64
	err := r.Scan(&f.ID, &f.Tenant, &f.ClientID, &f.Seq, &f.Op, &f.Request, &f.RequestHash, &idem, &f.Actor, &f.Status, &cancel, &f.Result,
		&code, &msg, &created, &started, &finished, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return Future{}, ErrNotFound
	}
	if err != nil {
		return Future{}, err
	}
	f.IdempotencyKey, f.ErrorCode, f.ErrorMsg, f.Cancel = idem.String, code.String, msg.String, cancel != 0
	f.CreatedAt = time.UnixMicro(created).UTC()
	t := func(v sql.NullInt64) time.Time {
		if !v.Valid {
			return time.Time{}
		}
		return time.UnixMicro(v.Int64).UTC()
	}
	f.StartedAt, f.FinishedAt, f.ExpiresAt = t(started), t(finished), t(expires)
	return f, nil
}

func (s *Store) futureTx(ctx context.Context, tx *sql.Tx, where string, args ...any) (Future, error) {
	return scanFuture(tx.QueryRowContext(ctx, s.rebind(`SELECT `+futureCols+` FROM trainer_futures WHERE `+where), args...))
}

// GetFuture returns tenant's future id.
func (s *Store) GetFuture(ctx context.Context, tenant, id string) (Future, error) {
	return scanFuture(s.db.QueryRowContext(ctx, s.rebind(`SELECT `+futureCols+` FROM trainer_futures WHERE tenant = ? AND id = ?`), tenant, id))
}

// Cancel cancels a queued future at once (true) or marks a running one
// for its worker (false); a finished one is ErrFinished.
func (s *Store) Cancel(ctx context.Context, tenant, id string, ttl time.Duration) (Future, error) {
	var out Future
	err := s.tx(ctx, func(tx *sql.Tx) error {
		f, err := s.futureTx(ctx, tx, `tenant = ? AND id = ?`, tenant, id)
		if err != nil {
			return err
		}
		now := s.now().UTC()
		switch f.Status {
		case StatusQueued:
			_, err = tx.ExecContext(ctx, s.rebind(`UPDATE trainer_futures SET status = ?, cancel = 1, error_code = ?, error_message = ?, finished_at = ?, expires_at = ? WHERE id = ?`),
				StatusCancelled, "CANCELLED", "cancelled before it started", now.UnixMicro(), now.Add(ttl).UnixMicro(), id)
			f.Status, f.Cancel, f.ErrorCode = StatusCancelled, true, "CANCELLED"
		case StatusRunning:
			_, err = tx.ExecContext(ctx, s.rebind(`UPDATE trainer_futures SET cancel = 1 WHERE id = ?`), id)
			f.Cancel = true
		default:
			return ErrFinished
		}
		out = f
		return err
	})
	return out, err
}

// Claim takes the next runnable future for owner, leased until now+lease:
// the lowest-seq unfinished future of a client with none running, or a
// running one whose lease expired (its worker died). It returns
// ErrNotFound when there is nothing to do.
func (s *Store) Claim(ctx context.Context, owner string, lease time.Duration) (Future, error) {
	var out Future
	err := s.tx(ctx, func(tx *sql.Tx) error {
		now := s.now().UnixMicro()
		// A running future whose worker stopped renewing its lease runs again.
		if _, err := tx.ExecContext(ctx, s.rebind(`UPDATE trainer_futures SET status = 'queued', lease_owner = NULL, lease_until = NULL
			WHERE status = 'running' AND lease_until < ?`), now); err != nil {
			return err
		}
		f, err := scanFuture(tx.QueryRowContext(ctx, s.rebind(`SELECT `+futureCols+` FROM trainer_futures f WHERE status = 'queued'
			AND seq = (SELECT MIN(seq) FROM trainer_futures g WHERE g.client_id = f.client_id AND g.status IN ('queued', 'running'))
			ORDER BY created_at, id LIMIT 1`)))
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, s.rebind(`UPDATE trainer_futures SET status = 'running', lease_owner = ?, lease_until = ?, started_at = ? WHERE id = ? AND status = 'queued'`),
			owner, now+lease.Microseconds(), now, f.ID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotFound // another worker won
		}
		f.Status, f.StartedAt = StatusRunning, time.UnixMicro(now).UTC()
		out = f
		return nil
	})
	return out, err
}

// Renew extends the lease of a running future and reports whether it was
// asked to cancel. ErrNotFound: the lease was lost.
func (s *Store) Renew(ctx context.Context, id, owner string, lease time.Duration) (cancel bool, err error) {
	res, err := s.db.ExecContext(ctx, s.rebind(`UPDATE trainer_futures SET lease_until = ? WHERE id = ? AND lease_owner = ? AND status = 'running'`),
		s.now().Add(lease).UnixMicro(), id, owner)
	if err != nil {
		return false, err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return false, ErrNotFound
	}
	var c int
	err = s.db.QueryRowContext(ctx, s.rebind(`SELECT cancel FROM trainer_futures WHERE id = ?`), id).Scan(&c)
	return c != 0, err
}

// Outcome is how a future ended.
type Outcome struct {
	Status     string // succeeded, failed or cancelled
	Result     []byte // sealed, for succeeded
	ErrorCode  string
	ErrorMsg   string
	State      []byte // sealed new client state (nil: unchanged)
	StepsDelta int64
	Ledger     string // new privacy ledger ("" unchanged)
}

// Finish records how future f (leased by owner) ended and, in the same
// transaction, the client's new state. ErrNotFound: the lease was lost
// (another worker runs it now); nothing was written.
func (s *Store) Finish(ctx context.Context, f Future, owner string, o Outcome, ttl time.Duration) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		now := s.now().UTC()
		res, err := tx.ExecContext(ctx, s.rebind(`UPDATE trainer_futures SET status = ?, result = ?, error_code = ?, error_message = ?, finished_at = ?, expires_at = ?,
			lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ? AND status = 'running'`),
			o.Status, o.Result, nullStr(o.ErrorCode), nullStr(o.ErrorMsg), now.UnixMicro(), now.Add(ttl).UnixMicro(), f.ID, owner)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotFound
		}
		if o.State != nil || o.StepsDelta != 0 || o.Ledger != "" {
			q := `UPDATE trainer_clients SET steps = steps + ?`
			args := []any{o.StepsDelta}
			if o.State != nil {
				q += `, state = ?, state_seq = ?`
				args = append(args, o.State, f.Seq)
			}
			if o.Ledger != "" {
				q += `, ledger = ?`
				args = append(args, o.Ledger)
			}
			args = append(args, f.ClientID)
			if _, err := tx.ExecContext(ctx, s.rebind(q+` WHERE id = ?`), args...); err != nil {
				return err
			}
		}
		return nil
	})
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// TombstoneFor is how long an expired future's id is remembered (so it is
// answered "expired", not "not found").
const TombstoneFor = 7 * 24 * time.Hour

// Prune wipes the request and result of finished futures whose results
// expired, and forgets them TombstoneFor later. It returns how many it
// wiped.
func (s *Store) Prune(ctx context.Context) (int64, error) {
	now := s.now()
	if _, err := s.db.ExecContext(ctx, s.rebind(`DELETE FROM trainer_futures WHERE status IN ('succeeded', 'failed', 'cancelled') AND expires_at < ?`),
		now.Add(-TombstoneFor).UnixMicro()); err != nil {
		return 0, err
	}
	res, err := s.db.ExecContext(ctx, s.rebind(`UPDATE trainer_futures SET request = ?, result = NULL WHERE status IN ('succeeded', 'failed', 'cancelled') AND expires_at < ? AND result IS NOT NULL`),
		[]byte{}, now.UnixMicro())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Expired reports whether f's result has expired.
func (f Future) Expired(now time.Time) bool { return !f.ExpiresAt.IsZero() && now.After(f.ExpiresAt) }

// Artifact is a stored checkpoint or package.
type Artifact struct {
	ID, Tenant, ClientID string
	Kind, Name           string
	Size                 int64
	Blob                 []byte // sealed
	CreatedAt            time.Time
}

// PutArtifact stores a.
func (s *Store) PutArtifact(ctx context.Context, a Artifact) error {
	_, err := s.db.ExecContext(ctx, s.rebind(`INSERT INTO trainer_artifacts (id, tenant, client_id, kind, name, size, blob, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		a.ID, a.Tenant, a.ClientID, a.Kind, a.Name, a.Size, a.Blob, a.CreatedAt.UnixMicro())
	return err
}

// GetArtifact returns tenant's artifact id.
func (s *Store) GetArtifact(ctx context.Context, tenant, id string) (Artifact, error) {
	var a Artifact
	var created int64
	err := s.db.QueryRowContext(ctx, s.rebind(`SELECT id, tenant, client_id, kind, name, size, blob, created_at FROM trainer_artifacts WHERE tenant = ? AND id = ?`), tenant, id).
		Scan(&a.ID, &a.Tenant, &a.ClientID, &a.Kind, &a.Name, &a.Size, &a.Blob, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Artifact{}, ErrNotFound
	}
	a.CreatedAt = time.UnixMicro(created).UTC()
	return a, err
}
