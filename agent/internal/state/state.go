package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the schema this build writes. Bump it together with a new
// entry in migrations and a new fixture in testdata/.
const SchemaVersion uint64 = 1

// Sentinel errors. Errors returned by this package wrap them (test with
// errors.Is) and name the database file.
var (
	// ErrLocked means another process holds the database open: two agents
	// must never share one state file.
	ErrLocked = errors.New("state database locked by another tg-agent process")

	// ErrCorrupt means the file is not a readable bbolt database (garbage,
	// truncated, or failing bbolt's consistency check). The agent must not
	// guess: an operator moves the file away and the device re-enrolls.
	ErrCorrupt = errors.New("state database is corrupt")

	// ErrNewerSchema means the file was written by a newer agent (its schema
	// version is higher than SchemaVersion). Downgrading state is refused.
	ErrNewerSchema = errors.New("state database was written by a newer tg-agent")

	// ErrNeedsMigration means a read-only open found an older schema that
	// would have to be migrated first.
	ErrNeedsMigration = errors.New("state database needs a schema migration; open it read-write")

	// ErrNotFound means the requested record does not exist (for example the
	// device has not enrolled yet).
	ErrNotFound = errors.New("not found")
)

// Bucket and key names of schema version 1. Never rename one: old files
// must stay readable.
var (
	bucketMeta     = []byte("meta")
	bucketIdentity = []byte("identity")
	bucketSession  = []byte("session")
	bucketKV       = []byte("kv")

	keySchemaVersion = []byte("schema_version")
	keyCreatedAt     = []byte("created_at")
	keyIdentity      = []byte("current")
	keySessionCount  = []byte("counter")
)

// migrations[i] upgrades a file from schema version i to i+1 inside one
// read-write transaction. Version 0 is a file without a meta bucket: a new,
// empty database.
var migrations = []func(tx *bolt.Tx, now time.Time) error{
	0: migrateV0toV1,
}

func migrateV0toV1(tx *bolt.Tx, now time.Time) error {
	for _, name := range [][]byte{bucketMeta, bucketIdentity, bucketSession, bucketKV} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return tx.Bucket(bucketMeta).Put(keyCreatedAt, []byte(now.UTC().Format(time.RFC3339)))
}

// Options tunes Open. The zero value is usable.
type Options struct {
	// LockTimeout bounds the wait for the file lock held by another process.
	// Default 1s.
	LockTimeout time.Duration
	// ReadOnly opens the file with a shared lock and no writes (for
	// diagnostics such as `tg-agent state show`). Migrations are not run.
	ReadOnly bool
	// Now is the clock used for timestamps written by migrations. Default
	// time.Now.
	Now func() time.Time
}

// DB is an open state database. It is safe for concurrent use.
type DB struct {
	path string
	bolt *bolt.DB
}

// Open opens (creating if needed, mode 0600) the state database at path,
// verifies it and migrates it to SchemaVersion.
func Open(path string, opts Options) (*DB, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	bdb, err := openBolt(path, opts)
	if err != nil {
		return nil, err
	}
	db := &DB{path: path, bolt: bdb}
	if err := db.checkAndMigrate(opts); err != nil {
		_ = bdb.Close()
		return nil, err
	}
	return db, nil
}

// openBolt opens the bbolt file, turning every way a damaged file can fail
// (including a fault while reading the memory map of a truncated file, which
// the Go runtime would otherwise treat as fatal) into ErrCorrupt.
func openBolt(path string, opts Options) (bdb *bolt.DB, err error) {
	fi, statErr := os.Stat(path)
	exists := statErr == nil
	if exists && fi.Size() == 0 {
		// bbolt would silently initialise an empty file; an existing empty
		// state file means it was truncated, not that it is new.
		return nil, fmt.Errorf("open state %s: %w: empty file", path, ErrCorrupt)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if bdb != nil {
				_ = bdb.Close()
			}
			bdb, err = nil, fmt.Errorf("open state %s: %w: %v", path, ErrCorrupt, r)
		}
	}()
	bdb, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout:  opts.LockTimeout,
		ReadOnly: opts.ReadOnly,
	})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("open state %s: %w", path, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
		errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrInvalidMapping):
		return nil, fmt.Errorf("open state %s: %w: %v", path, ErrCorrupt, err)
	case err != nil && exists:
		// Anything else on an existing file (short reads, "file size too
		// small", bad page size) is damage too; permission errors are not.
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("open state %s: %w", path, err)
		}
		return nil, fmt.Errorf("open state %s: %w: %v", path, ErrCorrupt, err)
	case err != nil:
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	if !exists {
		return bdb, nil
	}
	// A truncated file can carry valid meta pages that point past its end;
	// reading those pages would fault. Compare the high-water mark with the
	// real size, then walk every page once (bbolt's own consistency check).
	err = bdb.View(func(tx *bolt.Tx) error {
		if tx.Size() > fi.Size() {
			return fmt.Errorf("truncated: file is %d bytes, database needs %d", fi.Size(), tx.Size())
		}
		// Drain the channel: the checker goroutine reads the memory map
		// and must finish before the file can be closed.
		var first error
		for cerr := range tx.Check() {
			if first == nil {
				first = cerr
			}
		}
		return first
	})
	if err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("open state %s: %w: %v", path, ErrCorrupt, err)
	}
	return bdb, nil
}

func (db *DB) checkAndMigrate(opts Options) error {
	var version uint64
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		version, err = schemaVersion(tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("open state %s: %w", db.path, err)
	}
	switch {
	case version > SchemaVersion:
		return fmt.Errorf("open state %s: %w (file has schema %d, this agent supports up to %d)",
			db.path, ErrNewerSchema, version, SchemaVersion)
	case version == SchemaVersion:
		return nil
	case opts.ReadOnly:
		return fmt.Errorf("open state %s: %w (schema %d, current %d)", db.path, ErrNeedsMigration, version, SchemaVersion)
	}
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		for v := version; v < SchemaVersion; v++ {
			if err := migrations[v](tx, opts.Now()); err != nil {
				return fmt.Errorf("migrate schema %d to %d: %w", v, v+1, err)
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchemaVersion, u64(SchemaVersion))
	})
	if err != nil {
		return fmt.Errorf("open state %s: %w", db.path, err)
	}
	return nil
}

func schemaVersion(tx *bolt.Tx) (uint64, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		// A file without a meta bucket is only acceptable when it is empty;
		// anything else is not ours.
		if k, _ := tx.Cursor().First(); k != nil {
			return 0, fmt.Errorf("%w: no meta bucket but bucket %q present", ErrCorrupt, k)
		}
		return 0, nil
	}
	raw := meta.Get(keySchemaVersion)
	if len(raw) != 8 {
		return 0, fmt.Errorf("%w: bad schema_version record", ErrCorrupt)
	}
	return binary.BigEndian.Uint64(raw), nil
}

// Path returns the file the database was opened from.
func (db *DB) Path() string { return db.path }

// Close releases the file lock. Pending transactions finish first.
func (db *DB) Close() error {
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("close state %s: %w", db.path, err)
	}
	return nil
}

// SchemaVersion returns the schema version recorded in the file.
func (db *DB) SchemaVersion() (uint64, error) {
	var v uint64
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		v, err = schemaVersion(tx)
		return err
	})
	return v, err
}

// Update runs fn in a read-write transaction, committed (and fsynced) when
// fn returns nil. It is meant for packages that own a reserved bucket.
func (db *DB) Update(fn func(*bolt.Tx) error) error { return db.bolt.Update(fn) }

// View runs fn in a read-only transaction.
func (db *DB) View(fn func(*bolt.Tx) error) error { return db.bolt.View(fn) }

// Identity is the device's enrolled identity. Field names are part of the
// on-disk format (JSON in the identity bucket); add fields, never rename.
type Identity struct {
	DeviceID string `json:"device_id"`
	TenantID string `json:"tenant_id"`
	FleetID  string `json:"fleet_id"`
	// CertChainPEM is the device certificate followed by its issuing chain.
	CertChainPEM []byte `json:"cert_chain_pem"`
	// KeyRef locates the private key: a TPM handle or key template name.
	// Opaque to this package; never key material.
	KeyRef          []byte    `json:"key_ref"`
	ControlPlaneURL string    `json:"control_plane_url"`
	BrokerURL       string    `json:"broker_url"`
	EnrolledAt      time.Time `json:"enrolled_at"`
}

// Identity returns the stored identity, or ErrNotFound before enrollment.
func (db *DB) Identity() (Identity, error) {
	var id Identity
	err := db.bolt.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketIdentity).Get(keyIdentity)
		if raw == nil {
			return ErrNotFound
		}
		if err := json.Unmarshal(raw, &id); err != nil {
			return fmt.Errorf("%w: identity record: %v", ErrCorrupt, err)
		}
		return nil
	})
	if err != nil {
		return Identity{}, fmt.Errorf("read identity from %s: %w", db.path, err)
	}
	return id, nil
}

// SetIdentity replaces the stored identity (enrollment, certificate renewal).
func (db *DB) SetIdentity(id Identity) error {
	if id.DeviceID == "" || id.TenantID == "" {
		return errors.New("set identity: device id and tenant id are required")
	}
	raw, err := json.Marshal(id)
	if err != nil {
		return fmt.Errorf("set identity: %w", err)
	}
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketIdentity).Put(keyIdentity, raw)
	})
	if err != nil {
		return fmt.Errorf("set identity in %s: %w", db.path, err)
	}
	return nil
}

// Session returns the last session number handed out (0 if none).
func (db *DB) Session() (uint64, error) {
	var n uint64
	err := db.bolt.View(func(tx *bolt.Tx) error {
		n = decodeCounter(tx.Bucket(bucketSession).Get(keySessionCount))
		return nil
	})
	return n, err
}

// NextSession increments the session counter and returns the new value.
// The increment is committed and fsynced before NextSession returns, so a
// number is never handed out twice, even across crashes: call it before
// every MQTT connect attempt.
func (db *DB) NextSession() (uint64, error) {
	var n uint64
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSession)
		n = decodeCounter(b.Get(keySessionCount)) + 1
		return b.Put(keySessionCount, u64(n))
	})
	if err != nil {
		return 0, fmt.Errorf("next session in %s: %w", db.path, err)
	}
	return n, nil
}

// Get returns a copy of the value stored under key in namespace ns, or
// ErrNotFound. Namespaces keep subsystems apart ("policy", "install", …).
func (db *DB) Get(ns, key string) ([]byte, error) {
	var out []byte
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV).Bucket([]byte(ns))
		if b == nil {
			return ErrNotFound
		}
		v := b.Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		out = append([]byte(nil), v...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", ns, key, err)
	}
	return out, nil
}

// Put stores value under key in namespace ns.
func (db *DB) Put(ns, key string, value []byte) error {
	if ns == "" || key == "" {
		return errors.New("put: namespace and key must not be empty")
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketKV).CreateBucketIfNotExists([]byte(ns))
		if err != nil {
			return err
		}
		return b.Put([]byte(key), value)
	})
	if err != nil {
		return fmt.Errorf("put %s/%s in %s: %w", ns, key, db.path, err)
	}
	return nil
}

// Delete removes key from namespace ns; deleting a missing key is not an
// error.
func (db *DB) Delete(ns, key string) error {
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV).Bucket([]byte(ns))
		if b == nil {
			return nil
		}
		return b.Delete([]byte(key))
	})
	if err != nil {
		return fmt.Errorf("delete %s/%s in %s: %w", ns, key, db.path, err)
	}
	return nil
}

func u64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

func decodeCounter(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
