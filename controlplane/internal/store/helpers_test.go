package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/testpg"
)

func TestMain(m *testing.M) { testpg.Main(m) }

// clock is a settable clock shared by a test and its Store.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 678912345, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// backendDSN returns a DSN for a fresh, empty database of the named backend.
func backendDSN(t *testing.T, backend string) string {
	t.Helper()
	if backend == "postgres" {
		return testpg.Start(t)
	}
	return "sqlite://" + filepath.Join(t.TempDir(), "cp.db")
}

var backends = []string{"sqlite", "postgres"}

// forEachBackend runs fn as parallel subtests, once against SQLite in a
// temp dir and once against a fresh PostgreSQL database.
func forEachBackend(t *testing.T, fn func(t *testing.T, s *Store)) {
	t.Helper()
	forEachBackendClock(t, func(t *testing.T, s *Store, _ *clock) { fn(t, s) })
}

// forEachBackendClock is forEachBackend with the Store's clock at hand.
func forEachBackendClock(t *testing.T, fn func(t *testing.T, s *Store, clk *clock)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			s := openStore(t, backendDSN(t, b), WithClock(clk.Now))
			fn(t, s, clk)
		})
	}
}

func openStore(t *testing.T, dsn string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, opts...)
	if err != nil {
		t.Fatalf("Open(%s): %v", dsn, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// fixture is a tenant with one operator and one fleet.
type fixture struct {
	tenant   Tenant
	operator Operator
	fleet    Fleet
}

func mustFixture(t *testing.T, s *Store, tenant string) fixture {
	t.Helper()
	ctx := context.Background()
	ten, err := s.CreateTenant(ctx, Tenant{ID: tenant, Name: "Tenant " + tenant, WrappedDEK: []byte("dek-" + tenant)})
	if err != nil {
		t.Fatal(err)
	}
	op, err := s.CreateOperator(ctx, tenant, Operator{Name: "alice", Role: RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.CreateFleet(ctx, tenant, Fleet{Name: "edge", Policy: FleetPolicy{CertTTL: Duration(24 * time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	return fixture{tenant: ten, operator: op, fleet: f}
}

func mustDevice(t *testing.T, s *Store, tenant, fleet, ek string) Device {
	t.Helper()
	d, err := s.CreateDevice(context.Background(), tenant, Device{
		FleetID: fleet, Name: "jetson-" + ek, DeviceType: "jetson-orin", TPMKind: TPMHardware,
		EKFingerprint: ek, EKPublic: []byte("ek-" + ek), AKPublic: []byte("ak-" + ek),
		Labels: map[string]string{"site": "berlin"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

// chainEntry builds the audit entry that follows prev, hashing like a
// simple chain would (the real one lives in internal/audit).
func chainEntry(tenant, action string, at time.Time) func(prev *AuditRow) AuditRow {
	return func(prev *AuditRow) AuditRow {
		r := AuditRow{
			Tenant: tenant, Seq: NextAuditSeq(prev), Time: at, Actor: "op-test", Action: action,
			Target: "fleet/x", RequestID: "req-1", Details: []byte(`{"b":1,  "a":[2]}`),
		}
		if prev != nil {
			r.PrevHash = prev.Hash
		}
		h := sha256.Sum256(append(append([]byte{}, r.PrevHash...), []byte(action)...))
		r.Hash = h[:]
		return r
	}
}
