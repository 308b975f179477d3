package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations
var migrationFS embed.FS

// migrationLockKey is the PostgreSQL advisory lock held while migrating, so
// replicas starting together migrate one after the other ("tgflow" in ASCII).
const migrationLockKey = 0x7467666c6f77

type migration struct {
	version int64
	name    string // file name, for schema_migrations and errors
	sql     string
}

// loadMigrations returns d's migrations in order: migrations/NNNN_*.sql,
// each replaced by migrations/<dialect>/NNNN_*.sql where that exists.
// Versions must run 1, 2, 3, … without gaps.
func loadMigrations(d dialect) ([]migration, error) {
	byVersion := map[int64]migration{}
	for _, dir := range []string{"migrations", "migrations/" + d.String()} {
		entries, err := fs.ReadDir(migrationFS, dir)
		if err != nil {
			if dir != "migrations" {
				continue // no dialect-specific files
			}
			return nil, err
		}
		seen := map[int64]bool{}
		for _, e := range entries {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
				continue
			}
			num, _, ok := strings.Cut(e.Name(), "_")
			v, err := strconv.ParseInt(num, 10, 64)
			if !ok || err != nil || v <= 0 {
				return nil, fmt.Errorf("migration %s/%s: name must be NNNN_description.sql", dir, e.Name())
			}
			if seen[v] {
				return nil, fmt.Errorf("migration %s/%s: version %d defined twice", dir, e.Name(), v)
			}
			seen[v] = true
			b, err := fs.ReadFile(migrationFS, path.Join(dir, e.Name()))
			if err != nil {
				return nil, err
			}
			byVersion[v] = migration{version: v, name: e.Name(), sql: string(b)}
		}
	}
	ms := make([]migration, 0, len(byVersion))
	for _, m := range byVersion {
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != int64(i+1) {
			return nil, fmt.Errorf("migration %s: expected version %d (versions must be contiguous)", m.name, i+1)
		}
	}
	return ms, nil
}

// SchemaVersion is the newest schema version this binary knows.
func SchemaVersion() int64 {
	ms, err := loadMigrations(dialectSQLite)
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// migrate brings the schema to the newest version in one transaction.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations(s.dialect)
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	latest := ms[len(ms)-1].version
	return s.WithTx(ctx, func(tx *Tx) error {
		if s.dialect == dialectPostgres {
			if _, err := tx.exec(ctx, `SELECT pg_advisory_xact_lock(?)`, int64(migrationLockKey)); err != nil {
				return fmt.Errorf("lock for migration: %w", err)
			}
		}
		if _, err := tx.exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    BIGINT PRIMARY KEY,
			name       TEXT   NOT NULL,
			applied_at BIGINT NOT NULL
		)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var current int64
		if err := tx.queryRowW(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if current > latest {
			return fmt.Errorf("%w: the database is at schema version %d but this binary knows versions up to %d; run a newer release (or restore a backup taken before the upgrade)",
				ErrSchemaTooNew, current, latest)
		}
		for _, m := range ms {
			if m.version <= current {
				continue
			}
			// Not through exec: a script is not a query to rebind.
			if _, err := tx.wr.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s (%s): %w", m.name, s.dialect, err)
			}
			if _, err := tx.exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.version, m.name, micros(tx.clock())); err != nil {
				return fmt.Errorf("record migration %s: %w", m.name, err)
			}
		}
		return nil
	})
}
