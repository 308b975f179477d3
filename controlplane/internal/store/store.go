package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base32"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// dialect is the SQL engine behind a Store.
type dialect int

const (
	dialectSQLite dialect = iota + 1
	dialectPostgres
)

func (d dialect) String() string {
	if d == dialectPostgres {
		return "postgres"
	}
	return "sqlite"
}

const (
	// postgresMaxConns bounds one replica's share of the server's
	// max_connections (100 by default).
	postgresMaxConns = 16
	// sqliteReaders is the number of read-only SQLite connections; WAL lets
	// them run beside the single writer.
	sqliteReaders = 4
	// sqliteBusyTimeoutMS is how long a connection waits for another
	// process's lock before SQLITE_BUSY.
	sqliteBusyTimeoutMS = 10000
)

// Store is the control plane's database. It is safe for concurrent use.
// Its data methods (promoted from an embedded type) are also on [Tx].
type Store struct {
	ops
	dialect dialect
	writeDB *sql.DB
	readDB  *sql.DB // the same pool as writeDB on PostgreSQL
}

// Tx is a transaction opened by [Store.WithTx]. It has the same data methods
// as Store; they all run inside the transaction.
type Tx struct {
	ops
}

// Option configures Open.
type Option func(*options)

type options struct {
	now         func() time.Time
	historyKeep int
}

// WithClock replaces time.Now, for tests of expiry.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// Open connects to the database that dsn (a DATABASE_URL) names and migrates
// its schema to the version this binary knows.
//
//	postgres://user:pass@host:5432/db?sslmode=verify-full   PostgreSQL (also postgresql://)
//	sqlite:///var/lib/tensorguard/cp.db                      SQLite, absolute path
//	sqlite://cp.db, file:cp.db, cp.db                        SQLite, relative path
//
// A new SQLite file is created with mode 0600; its directory must exist.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	cfg := options{now: time.Now, historyKeep: DefaultAttestationHistory}
	for _, o := range opts {
		o(&cfg)
	}
	d, target, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	// Several processes opening one new SQLite file at once can meet
	// SQLITE_BUSY where SQLite does not wait (switching the file to WAL
	// needs it alone for a moment): such an open is retried a few times.
	for attempt := 0; ; attempt++ {
		st, err := open(ctx, d, target, cfg)
		if err == nil || d == dialectPostgres || attempt == 4 || !sqliteBusy(err) {
			return st, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Duration(50<<attempt) * time.Millisecond):
		}
	}
}

func open(ctx context.Context, d dialect, target string, cfg options) (*Store, error) {
	s := &Store{dialect: d}
	var err error
	switch d {
	case dialectPostgres:
		err = s.openPostgres(ctx, target)
	default:
		err = s.openSQLite(ctx, target)
	}
	if err != nil {
		return nil, err
	}
	s.ops = ops{d: d, rd: s.readDB, wr: s.writeDB, now: cfg.now, historyKeep: cfg.historyKeep, store: s}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// sqliteBusy reports whether err is SQLite's "database is locked".
func sqliteBusy(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked")
}

var keywordDSN = regexp.MustCompile(`^\s*[a-z_]+\s*=`)

// parseDSN picks the backend and returns what its driver needs: the URL for
// PostgreSQL, the file path for SQLite.
func parseDSN(dsn string) (dialect, string, error) {
	dsn = strings.TrimSpace(dsn)
	lower := strings.ToLower(dsn)
	var path string
	switch {
	case dsn == "":
		return 0, "", errors.New("empty DATABASE_URL: want postgres://…, sqlite://PATH or a file path")
	case strings.HasPrefix(lower, "postgres://"), strings.HasPrefix(lower, "postgresql://"):
		return dialectPostgres, dsn, nil
	case strings.HasPrefix(lower, "sqlite://"):
		path = dsn[len("sqlite://"):]
	case strings.HasPrefix(lower, "sqlite:"):
		path = dsn[len("sqlite:"):]
	case strings.HasPrefix(lower, "file:"):
		path = dsn[len("file:"):]
		if strings.HasPrefix(path, "//") { // file:///abs/path; file://host/… is not a local file
			path = path[2:]
			if !strings.HasPrefix(path, "/") {
				return 0, "", fmt.Errorf("DATABASE_URL %q: file:// URLs must name a local absolute path (file:///path)", dsn)
			}
		}
	case strings.Contains(dsn, "://"):
		scheme, _, _ := strings.Cut(dsn, "://")
		return 0, "", fmt.Errorf("DATABASE_URL scheme %q not supported (use postgres://, postgresql://, sqlite://, file: or a plain path)", scheme)
	case keywordDSN.MatchString(dsn):
		return 0, "", errors.New("DATABASE_URL looks like a PostgreSQL key=value string: use the postgres://user:pass@host/db form")
	default:
		path = dsn
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		return 0, "", fmt.Errorf("DATABASE_URL %q: SQLite URLs take no parameters (the store sets WAL, foreign keys and timeouts itself)", dsn)
	}
	switch {
	case path == "":
		return 0, "", fmt.Errorf("DATABASE_URL %q: no SQLite file path", dsn)
	case path == ":memory:" || strings.HasPrefix(path, ":memory:"):
		return 0, "", errors.New("in-memory SQLite is not supported (readers and the writer would see different databases): use a file, e.g. in a temp dir")
	}
	return dialectSQLite, path, nil
}

func (s *Store) openPostgres(ctx context.Context, url string) error {
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx redacts the password in its message.
		return fmt.Errorf("parse postgres DATABASE_URL: %w", err)
	}
	db := stdlib.OpenDB(*cc)
	db.SetMaxOpenConns(postgresMaxConns)
	db.SetMaxIdleConns(postgresMaxConns / 2)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return fmt.Errorf("connect to postgres %s/%s as %s: %w", cc.Host, cc.Database, cc.User, err)
	}
	s.writeDB, s.readDB = db, db
	return nil
}

func (s *Store) openSQLite(ctx context.Context, path string) error {
	// Create the file ourselves so that it (and the -wal and -shm files,
	// which SQLite gives the same mode) is private: it holds key hashes and
	// wrapped keys.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open sqlite database: %w", err)
	}
	f.Close()

	common := "_pragma=busy_timeout(" + strconv.Itoa(sqliteBusyTimeoutMS) + ")&_pragma=foreign_keys(1)"
	w, err := sql.Open("sqlite", path+"?"+common+"&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		return fmt.Errorf("open sqlite database: %w", err)
	}
	// One writer: SQLite allows one at a time anyway, and queueing here
	// instead of in SQLite's busy handler means no SQLITE_BUSY under load
	// and no deadlock between two deferred transactions upgrading to write.
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return fmt.Errorf("open sqlite database %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", path+"?"+common+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return fmt.Errorf("open sqlite database: %w", err)
	}
	r.SetMaxOpenConns(sqliteReaders)
	r.SetMaxIdleConns(sqliteReaders)
	s.writeDB, s.readDB = w, r
	return nil
}

// Close closes the database connections.
func (s *Store) Close() error {
	err := s.writeDB.Close()
	if s.readDB != s.writeDB {
		err = errors.Join(err, s.readDB.Close())
	}
	return err
}

// SQLDB returns the database handle writes go through and the backend's
// name ("sqlite" or "postgres"), for a component that keeps its own tables
// in the same database (the trainer's job queue). On SQLite it is the one
// writer connection, so the component's writes queue with the store's.
func (s *Store) SQLDB() (*sql.DB, string) { return s.writeDB, s.dialect.String() }

// Backend returns "sqlite" or "postgres".
func (s *Store) Backend() string { return s.dialect.String() }

// Ping checks that the database answers, for readiness probes.
func (s *Store) Ping(ctx context.Context) error {
	return s.writeDB.PingContext(ctx)
}

// WithTx runs fn in a transaction, committing if fn returns nil and rolling
// back otherwise (also when fn panics). Use only tx inside fn.
func (s *Store) WithTx(ctx context.Context, fn func(tx *Tx) error) error {
	sqlTx, err := s.writeDB.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	done := false
	defer func() {
		if !done {
			_ = sqlTx.Rollback()
		}
	}()
	tx := &Tx{ops: ops{d: s.dialect, rd: sqlTx, wr: sqlTx, now: s.now, historyKeep: s.historyKeep, tx: sqlTx}}
	if err := fn(tx); err != nil {
		return err
	}
	done = true
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", mapErr(err))
	}
	return nil
}

// runner is what *sql.DB and *sql.Tx have in common.
type runner interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// ops holds the data methods shared by Store and Tx.
type ops struct {
	d     dialect
	rd    runner // reads
	wr    runner // writes, and reads that must see this transaction's writes
	now   func() time.Time
	store *Store  // set on a Store's ops
	tx    *sql.Tx // set on a Tx's ops
	// historyKeep is how many attestation history entries are kept per
	// device.
	historyKeep int
}

// inTx runs fn atomically: inside the current transaction on a Tx, in a new
// one on a Store.
func (o *ops) inTx(ctx context.Context, fn func(o *ops) error) error {
	if o.tx != nil {
		return fn(o)
	}
	return o.store.WithTx(ctx, func(tx *Tx) error { return fn(&tx.ops) })
}

// clock returns the current time as stored: UTC, whole microseconds.
func (o *ops) clock() time.Time {
	return o.now().UTC().Truncate(time.Microsecond)
}

func (o *ops) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return o.wr.ExecContext(ctx, o.d.rebind(q), args...)
}

// execOne runs a statement that must change exactly one row; none is
// ErrNotFound.
func (o *ops) execOne(ctx context.Context, q string, args ...any) error {
	res, err := o.exec(ctx, q, args...)
	if err != nil {
		return mapErr(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

func (o *ops) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return o.rd.QueryContext(ctx, o.d.rebind(q), args...)
}

func (o *ops) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	return o.rd.QueryRowContext(ctx, o.d.rebind(q), args...)
}

// queryRowW reads through the writer: for RETURNING, and for reads whose
// result decides a write.
func (o *ops) queryRowW(ctx context.Context, q string, args ...any) *sql.Row {
	return o.wr.QueryRowContext(ctx, o.d.rebind(q), args...)
}

// rebind turns ? placeholders into PostgreSQL's $1, $2, … . Queries are
// written once, for SQLite; a ? inside a quoted literal is left alone.
func (d dialect) rebind(q string) string {
	if d != dialectPostgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n, quoted := 0, false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'':
			quoted = !quoted
		case c == '?' && !quoted:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// mapErr turns driver errors into sentinels: no rows is ErrNotFound, a
// violated unique, primary-key or foreign-key constraint is ErrConflict.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505", "23503": // unique_violation, foreign_key_violation
			return fmt.Errorf("%w (%s)", ErrConflict, pgErr.ConstraintName)
		}
		return err
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		switch liteErr.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return fmt.Errorf("%w (%s)", ErrConflict, liteErr.Error())
		}
	}
	return err
}

// mapInsertErr is mapErr for INSERTs: there a foreign-key violation means
// the parent row (in this tenant) does not exist, which is ErrNotFound.
func mapInsertErr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" {
		return fmt.Errorf("%w (%s)", ErrNotFound, pgErr.ConstraintName)
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) && liteErr.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY {
		return fmt.Errorf("%w (referenced row)", ErrNotFound)
	}
	return mapErr(err)
}

// Times are stored as BIGINT microseconds since the Unix epoch, UTC; zero
// time.Time is NULL.

func micros(t time.Time) int64 { return t.UnixMicro() }

func nullMicros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func fromNullMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMicros(v.Int64)
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Identifiers: see docs/identity.md.

// Id prefixes, one per kind of object.
const (
	PrefixFleet    = "flt"
	PrefixDevice   = "dev"
	PrefixOperator = "op"
	PrefixAPIKey   = "key"
	PrefixToken    = "tok"
)

var (
	idEncoding  = base32.StdEncoding.WithPadding(base32.NoPadding)
	tenantIDRe  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	idSuffixLen = 20 // 100 bits of base32
)

// NewID returns a fresh id such as "dev-" followed by 20 lowercase base32
// characters (100 random bits).
func NewID(prefix string) string {
	var b [13]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand crashes instead)
	return prefix + "-" + strings.ToLower(idEncoding.EncodeToString(b[:]))[:idSuffixLen]
}

// ValidID reports whether id has the form NewID(prefix) produces.
func ValidID(prefix, id string) bool {
	rest, ok := strings.CutPrefix(id, prefix+"-")
	if !ok || len(rest) != idSuffixLen {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// ValidTenantID reports whether id is a tenant slug: ^[a-z0-9][a-z0-9-]{0,62}$.
func ValidTenantID(id string) bool { return tenantIDRe.MatchString(id) }

// idOrNew returns id if set (validating it) or a fresh one.
func idOrNew(prefix, id string) (string, error) {
	if id == "" {
		return NewID(prefix), nil
	}
	if !ValidID(prefix, id) {
		return "", fmt.Errorf("%w: id %q is not a %s-… id", ErrInvalid, id, prefix)
	}
	return id, nil
}

// Secrets (API keys, enrollment tokens): <scheme>_<id>_<secret>, where the
// secret is 256 random bits in lowercase base32.

const secretLen = 52 // base32 of 32 bytes, unpadded

func newSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(idEncoding.EncodeToString(b[:]))
}

func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// parseSecret splits a presented credential into id and secret.
func parseSecret(presented, scheme, idPrefix string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(presented, scheme+"_")
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || !ValidID(idPrefix, id) || len(secret) != secretLen {
		return "", "", false
	}
	return id, secret, true
}

func secretMatches(secret string, hash []byte) bool {
	return subtle.ConstantTimeCompare(hashSecret(secret), hash) == 1
}
