package state

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var fixedNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func openTemp(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.db")
	db, err := Open(path, Options{Now: func() time.Time { return fixedNow }})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db, path
}

func sampleIdentity() Identity {
	return Identity{
		DeviceID:        "dev-aaaaaaaaaaaaaaaaaaaa",
		TenantID:        "acme",
		FleetID:         "flt-bbbbbbbbbbbbbbbbbbbb",
		CertChainPEM:    []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
		KeyRef:          []byte{0x81, 0x00, 0x00, 0x02},
		ControlPlaneURL: "https://cp.example:8000",
		BrokerURL:       "tls://cp.example:8883",
		EnrolledAt:      fixedNow,
	}
}

func TestOpenNewFileIsCurrentSchema(t *testing.T) {
	t.Parallel()
	db, path := openTemp(t)
	v, err := db.SchemaVersion()
	if err != nil || v != SchemaVersion {
		t.Fatalf("SchemaVersion = %d, %v; want %d", v, err, SchemaVersion)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode %o, want 600", perm)
	}
	if _, err := db.Identity(); !errors.Is(err, ErrNotFound) {
		t.Errorf("Identity on a new file: %v, want ErrNotFound", err)
	}
}

func TestIdentityRoundTripAcrossReopen(t *testing.T) {
	t.Parallel()
	db, path := openTemp(t)
	want := sampleIdentity()
	if err := db.SetIdentity(want); err != nil {
		t.Fatal(err)
	}
	if err := db.SetIdentity(Identity{DeviceID: "x"}); err == nil {
		t.Error("SetIdentity without tenant succeeded")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	got, err := db2.Identity()
	if err != nil {
		t.Fatal(err)
	}
	if got.DeviceID != want.DeviceID || got.TenantID != want.TenantID || got.FleetID != want.FleetID ||
		!bytes.Equal(got.CertChainPEM, want.CertChainPEM) || !bytes.Equal(got.KeyRef, want.KeyRef) ||
		got.ControlPlaneURL != want.ControlPlaneURL || got.BrokerURL != want.BrokerURL ||
		!got.EnrolledAt.Equal(want.EnrolledAt) {
		t.Errorf("identity round trip:\n got %+v\nwant %+v", got, want)
	}
}

func TestNextSessionIsMonotonicAcrossReopen(t *testing.T) {
	t.Parallel()
	db, path := openTemp(t)
	for want := uint64(1); want <= 3; want++ {
		got, err := db.NextSession()
		if err != nil || got != want {
			t.Fatalf("NextSession = %d, %v; want %d", got, err, want)
		}
	}
	_ = db.Close()
	db2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if cur, _ := db2.Session(); cur != 3 {
		t.Errorf("Session after reopen = %d, want 3", cur)
	}
	if got, err := db2.NextSession(); err != nil || got != 4 {
		t.Errorf("NextSession after reopen = %d, %v; want 4", got, err)
	}
}

func TestKV(t *testing.T) {
	t.Parallel()
	db, _ := openTemp(t)
	if _, err := db.Get("policy", "bundle"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get missing namespace: %v", err)
	}
	if err := db.Put("policy", "bundle", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get("policy", "other"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get missing key: %v", err)
	}
	got, err := db.Get("policy", "bundle")
	if err != nil || string(got) != "v1" {
		t.Fatalf("Get = %q, %v", got, err)
	}
	got[0] = 'X' // the returned slice must be a copy, safe to keep after the tx
	if again, _ := db.Get("policy", "bundle"); string(again) != "v1" {
		t.Fatalf("Get returned an alias of the mmap: %q", again)
	}
	if err := db.Put("", "k", nil); err == nil {
		t.Error("Put with empty namespace succeeded")
	}
	if err := db.Delete("policy", "bundle"); err != nil {
		t.Fatal(err)
	}
	if err := db.Delete("nope", "bundle"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get("policy", "bundle"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
}

func TestSecondOpenFailsClearly(t *testing.T) {
	t.Parallel()
	_, path := openTemp(t)
	start := time.Now()
	_, err := Open(path, Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), "state database locked by another tg-agent process") ||
		!strings.Contains(err.Error(), path) {
		t.Errorf("error %q should say the database is locked and name %s", err, path)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Open took %v; the lock timeout is not honoured", d)
	}
}

// writeBigDB creates a healthy multi-page database and returns its bytes and
// its high-water mark (the bytes bbolt actually uses; the file may be longer).
func writeBigDB(t *testing.T) ([]byte, int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "big.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.SetIdentity(sampleIdentity()); err != nil {
		t.Fatal(err)
	}
	val := bytes.Repeat([]byte("x"), 3000)
	for i := range 100 {
		if err := db.Put("bulk", fmt.Sprintf("k%03d", i), val); err != nil {
			t.Fatal(err)
		}
	}
	var used int64
	_ = db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil })
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw, int(used)
}

func TestDamagedFilesAreReportedNotPanicked(t *testing.T) {
	t.Parallel()
	good, used := writeBigDB(t)
	garbage := make([]byte, 64<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	pageSize := os.Getpagesize()
	// Valid meta pages, then zeroes where the data pages were.
	zeroedTail := append(append([]byte(nil), good[:2*pageSize]...), make([]byte, len(good)-2*pageSize)...)

	cases := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"garbage", garbage},
		{"short garbage", garbage[:100]},
		{"truncated to 100 bytes", good[:100]},
		{"truncated to one page", good[:pageSize]},
		{"truncated to meta pages", good[:2*pageSize]},
		{"truncated to half", good[:len(good)/2]},
		{"last used page cut off", good[:used-pageSize]},
		{"data pages zeroed", zeroedTail},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "agent.db")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			db, err := Open(path, Options{LockTimeout: 100 * time.Millisecond})
			if err == nil {
				_ = db.Close()
				t.Fatalf("Open of a damaged file succeeded")
			}
			t.Logf("Open: %v", err)
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("error %v does not wrap ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	t.Parallel()
	_, path := openTemp(t)
	db, _ := Open(path+".2", Options{})
	_ = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchemaVersion, u64(SchemaVersion+1))
	})
	_ = db.Close()
	_, err := Open(path+".2", Options{})
	if !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("Open of a newer schema: %v, want ErrNewerSchema", err)
	}
}

func TestForeignBoltFileIsRefused(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "other.db")
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = bdb.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("someone-else"))
		return err
	})
	_ = bdb.Close()
	if _, err := Open(path, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of a foreign bbolt file: %v, want ErrCorrupt", err)
	}
}

func TestReadOnly(t *testing.T) {
	t.Parallel()
	db, path := openTemp(t)
	if err := db.SetIdentity(sampleIdentity()); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Identity(); err != nil {
		t.Errorf("Identity read-only: %v", err)
	}
	if _, err := ro.NextSession(); !errors.Is(err, berrors.ErrDatabaseReadOnly) {
		t.Errorf("NextSession read-only: %v, want ErrDatabaseReadOnly", err)
	}

	// A read-only open of an unmigrated (empty) bbolt file cannot migrate.
	empty := filepath.Join(t.TempDir(), "empty.db")
	bdb, err := bolt.Open(empty, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = bdb.Close()
	if _, err := Open(empty, Options{ReadOnly: true}); !errors.Is(err, ErrNeedsMigration) {
		t.Errorf("read-only Open of a v0 file: %v, want ErrNeedsMigration", err)
	}
}

// The fixture is a file written by schema version 1 and never rewritten: an
// agent that stops reading it has broken upgrades. Regenerate only when
// adding a new version's fixture: TG_WRITE_STATE_FIXTURE=1 go test -run TestWriteFixture.
const fixtureV1 = "testdata/agent-v1.db"

func TestWriteFixture(t *testing.T) {
	if os.Getenv("TG_WRITE_STATE_FIXTURE") != "1" {
		t.Skip("writes testdata; set TG_WRITE_STATE_FIXTURE=1 to regenerate " + fixtureV1)
	}
	_ = os.Remove(fixtureV1)
	db, err := Open(fixtureV1, Options{Now: func() time.Time { return fixedNow }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.SetIdentity(sampleIdentity()); err != nil {
		t.Fatal(err)
	}
	for range 7 {
		if _, err := db.NextSession(); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Put("policy", "bundle_version", []byte("3")); err != nil {
		t.Fatal(err)
	}
}

func TestOpensV1Fixture(t *testing.T) {
	t.Parallel()
	src, err := os.Open(fixtureV1)
	if err != nil {
		t.Fatalf("fixture missing: %v", err)
	}
	defer src.Close()
	path := filepath.Join(t.TempDir(), "agent.db")
	dst, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	_ = dst.Close()

	db, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open v1 fixture: %v", err)
	}
	defer db.Close()
	id, err := db.Identity()
	if err != nil {
		t.Fatal(err)
	}
	want := sampleIdentity()
	if id.DeviceID != want.DeviceID || id.TenantID != want.TenantID || !bytes.Equal(id.KeyRef, want.KeyRef) ||
		!id.EnrolledAt.Equal(want.EnrolledAt) || id.BrokerURL != want.BrokerURL {
		t.Errorf("fixture identity = %+v", id)
	}
	if n, _ := db.Session(); n != 7 {
		t.Errorf("fixture session = %d, want 7", n)
	}
	if v, err := db.Get("policy", "bundle_version"); err != nil || string(v) != "3" {
		t.Errorf("fixture kv = %q, %v", v, err)
	}
	if n, err := db.NextSession(); err != nil || n != 8 {
		t.Errorf("NextSession on fixture = %d, %v; want 8", n, err)
	}
}
