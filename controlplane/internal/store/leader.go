package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"hash/fnv"
	"sync"
	"time"
)

// Leadership: a task that must run on one replica at a time (the rollout
// engine) takes a named lease. On PostgreSQL the lease is a session-level
// advisory lock held on a connection of its own, which the database
// releases when that session ends — also when the replica dies or loses
// the network, so a crashed leader never blocks the others. On SQLite
// (single node) the lease is always granted.

// leaseCheckInterval is how often a held lease checks that its connection
// (and with it the lock) is alive.
const leaseCheckInterval = 2 * time.Second

// Lease is leadership of one task. Release it when done; Lost is closed
// when it is gone (its connection failed), after which the holder must
// stop acting as leader.
type Lease struct {
	name string
	key  int64
	conn *sql.Conn // nil on SQLite

	lost     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	lostOnce sync.Once
	release  sync.Once
}

// leaseKey maps a lease name to the advisory lock key: FNV-64a of
// "tensorguardflow/lease/" and the name (the migration lock uses a key of
// its own).
func leaseKey(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("tensorguardflow/lease/" + name))
	return int64(h.Sum64())
}

// TryLead takes the lease name if no other session holds it. It returns
// nil (and no error) when another holds it: try again later.
func (s *Store) TryLead(ctx context.Context, name string) (*Lease, error) {
	l := &Lease{name: name, key: leaseKey(name), lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	if s.dialect != dialectPostgres {
		close(l.done)
		return l, nil
	}
	conn, err := s.writeDB.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("lease %s: connect: %w", name, err)
	}
	var got bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, l.key).Scan(&got); err != nil {
		discardConn(conn)
		return nil, fmt.Errorf("lease %s: %w", name, err)
	}
	if !got {
		_ = conn.Close()
		return nil, nil
	}
	l.conn = conn
	go l.watch()
	return l, nil
}

// watch closes lost when the lease's connection stops answering.
func (l *Lease) watch() {
	defer close(l.done)
	t := time.NewTicker(leaseCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), leaseCheckInterval)
			var held bool
			// Ask the database, not just the connection: the lock is what
			// matters.
			err := l.conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
				AND pid = pg_backend_pid() AND granted AND ((classid::bigint << 32) | objid::bigint) = $1)`, l.key).Scan(&held)
			cancel()
			if err != nil || !held {
				l.lostOnce.Do(func() { close(l.lost) })
				return
			}
		}
	}
}

// Name is the lease's name.
func (l *Lease) Name() string { return l.name }

// Lost is closed when the lease is gone without Release.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Release gives the lease up. It is safe to call more than once.
func (l *Lease) Release() {
	l.release.Do(func() {
		close(l.stop)
		<-l.done
		if l.conn == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = l.conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, l.key)
		// Close the session rather than return it to the pool: should the
		// unlock have failed, the lock dies with it.
		discardConn(l.conn)
	})
}

// discardConn closes a dedicated connection for good instead of returning
// it to the pool.
func discardConn(c *sql.Conn) {
	_ = c.Raw(func(any) error { return driver.ErrBadConn })
	_ = c.Close()
}
