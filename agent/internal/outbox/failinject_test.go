package outbox

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// faultyStore is a real bbolt database whose commits can be made to fail the
// way a failing disk does: the transaction runs, then is rolled back and the
// error returned, so nothing of it is persisted.
type faultyStore struct {
	db         *bolt.DB
	failCommit atomic.Bool
}

func (s *faultyStore) View(fn func(*bolt.Tx) error) error { return s.db.View(fn) }

func (s *faultyStore) Update(fn func(*bolt.Tx) error) error {
	if !s.failCommit.Load() {
		return s.db.Update(fn)
	}
	tx, err := s.db.Begin(true)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	return &errCommit{syscall.EIO}
}

type errCommit struct{ err error }

func (e *errCommit) Error() string { return "commit: write agent.db: " + e.err.Error() }
func (e *errCommit) Unwrap() error { return e.err }

func TestEnqueueCommitFailureStoresNothing(t *testing.T) {
	t.Parallel()
	db := openBolt(t, filepath.Join(t.TempDir(), "agent.db"))
	defer db.Close()
	fs := &faultyStore{db: db}
	o, err := Open(fs, Config{})
	if err != nil {
		t.Fatal(err)
	}
	fs.failCommit.Store(true)
	_, err = o.Enqueue("t/jobs/1", []byte("result"), 1, false)
	if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "outbox: enqueue t/jobs/1") {
		t.Fatalf("Enqueue with failing commit: %v", err)
	}
	fs.failCommit.Store(false)
	st, _ := o.Stats()
	if st.Pending != 0 || st.Enqueued != 0 {
		t.Errorf("a failed commit left state behind: %+v", st)
	}
	if seq, err := o.Enqueue("t/jobs/1", []byte("result"), 1, false); err != nil || seq != 1 {
		t.Errorf("Enqueue after recovery = %d, %v; want seq 1", seq, err)
	}
}

// A crash (here: a failed delete) between the broker's ack and the delete
// must lead to redelivery, not loss: the at-least-once half of the contract.
func TestDeleteFailureAfterAckRedelivers(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "agent.db")
	db := openBolt(t, path)
	fs := &faultyStore{db: db}
	o, err := Open(fs, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Enqueue("t/attestation", []byte("evidence"), 1, false); err != nil {
		t.Fatal(err)
	}
	fs.failCommit.Store(true)
	b := newFakeBroker()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = o.Run(ctx, b)
	if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "sent again") {
		t.Fatalf("Run with failing delete: %v", err)
	}
	_ = db.Close()

	db = openBolt(t, path)
	defer db.Close()
	o2, err := Open(db, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	b.cancel, b.stopAfter = cancel2, 2
	if err := o2.Run(ctx2, b); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(b.payloads(), ","); got != "evidence,evidence" {
		t.Errorf("deliveries %q, want the entry twice", got)
	}
}

func TestReadOnlyDatabaseFailsClearly(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "agent.db")
	db := openBolt(t, path)
	if _, err := Open(db, Config{}); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	ro, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	_, err = Open(ro, Config{})
	if !errors.Is(err, berrors.ErrDatabaseReadOnly) || !strings.HasPrefix(err.Error(), "open outbox:") {
		t.Fatalf("Open on a read-only database: %v", err)
	}
}

func TestNewerFormatIsRefused(t *testing.T) {
	t.Parallel()
	db := openBolt(t, filepath.Join(t.TempDir(), "agent.db"))
	defer db.Close()
	if _, err := Open(db, Config{}); err != nil {
		t.Fatal(err)
	}
	_ = db.Update(func(tx *bolt.Tx) error {
		return putU64(tx.Bucket(bucketOutbox).Bucket(bucketMeta), keyFormat, formatVersion+1)
	})
	if _, err := Open(db, Config{}); !errors.Is(err, ErrNewerFormat) {
		t.Fatalf("Open of a newer format: %v", err)
	}
}

func TestCorruptEntryStopsRunWithError(t *testing.T) {
	t.Parallel()
	db := openBolt(t, filepath.Join(t.TempDir(), "agent.db"))
	defer db.Close()
	o, err := Open(db, Config{})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).Bucket(bucketEntries).Put(seqKey(1), []byte{9, 9})
	})
	err = o.Run(context.Background(), newFakeBroker())
	if !errors.Is(err, errBadEntry) {
		t.Fatalf("Run over a corrupt entry: %v", err)
	}
}
