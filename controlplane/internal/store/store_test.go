package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/attest"
)

func TestParseDSN(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		dsn     string
		dialect dialect
		target  string
	}{
		{"postgres://u:p@db:5432/cp?sslmode=verify-full", dialectPostgres, "postgres://u:p@db:5432/cp?sslmode=verify-full"},
		{"postgresql://u@db/cp", dialectPostgres, "postgresql://u@db/cp"},
		{"sqlite:///var/lib/tensorguard/cp.db", dialectSQLite, "/var/lib/tensorguard/cp.db"},
		{"sqlite://cp.db", dialectSQLite, "cp.db"},
		{"sqlite:cp.db", dialectSQLite, "cp.db"},
		{"file:cp.db", dialectSQLite, "cp.db"},
		{"file:///var/lib/cp.db", dialectSQLite, "/var/lib/cp.db"},
		{"/var/lib/cp.db", dialectSQLite, "/var/lib/cp.db"},
		{"  cp.db ", dialectSQLite, "cp.db"},
	} {
		d, target, err := parseDSN(tc.dsn)
		if err != nil || d != tc.dialect || target != tc.target {
			t.Errorf("parseDSN(%q) = %v, %q, %v; want %v, %q", tc.dsn, d, target, err, tc.dialect, tc.target)
		}
	}
}

func TestOpenMalformedDSN(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	missingDir := filepath.Join(t.TempDir(), "no", "such", "dir", "cp.db")
	for _, tc := range []struct {
		dsn, want string
	}{
		{"", "empty DATABASE_URL"},
		{"mysql://u@h/db", `scheme "mysql" not supported`},
		{"host=localhost dbname=cp", "key=value"},
		{"sqlite://", "no SQLite file path"},
		{":memory:", "in-memory SQLite is not supported"},
		{"sqlite://cp.db?_pragma=foo", "take no parameters"},
		{"file://host/cp.db", "local absolute path"},
		{"postgres://u@h:notaport/db", "parse postgres DATABASE_URL"},
		{"postgres://u:secretpw@127.0.0.1:1/db?connect_timeout=2", "connect to postgres 127.0.0.1/db as u"},
		{"sqlite://" + missingDir, "open sqlite database"},
	} {
		s, err := Open(ctx, tc.dsn)
		if err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", tc.dsn)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want an error containing %q", tc.dsn, err, tc.want)
		}
		if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("Open(%q) error leaks the password: %v", tc.dsn, err)
		}
	}
}

func TestRebind(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, pg string }{
		{`SELECT 1`, `SELECT 1`},
		{`SELECT * FROM x WHERE a = ? AND b = ?`, `SELECT * FROM x WHERE a = $1 AND b = $2`},
		{`SELECT '?' , ? FROM x`, `SELECT '?' , $1 FROM x`},
	} {
		if got := dialectPostgres.rebind(tc.in); got != tc.pg {
			t.Errorf("rebind(%q) = %q, want %q", tc.in, got, tc.pg)
		}
		if got := dialectSQLite.rebind(tc.in); got != tc.in {
			t.Errorf("sqlite rebind(%q) = %q, want it unchanged", tc.in, got)
		}
	}
}

func TestIDs(t *testing.T) {
	t.Parallel()
	id := NewID(PrefixDevice)
	if !ValidID(PrefixDevice, id) || len(id) != len("dev-")+20 {
		t.Fatalf("NewID = %q, not a valid device id", id)
	}
	if ValidID(PrefixFleet, id) || ValidID(PrefixDevice, id+"a") || ValidID(PrefixDevice, "dev-"+strings.Repeat("A", 20)) {
		t.Error("ValidID accepts a malformed id")
	}
	if NewID(PrefixDevice) == id {
		t.Error("NewID repeats")
	}
	for id, ok := range map[string]bool{"acme": true, "a": true, "acme-2": true, "-acme": false, "Acme": false, "ac/me": false, "": false, strings.Repeat("a", 64): false} {
		if ValidTenantID(id) != ok {
			t.Errorf("ValidTenantID(%q) = %v", id, !ok)
		}
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dsn := backendDSN(t, b)
			s1 := openStore(t, dsn)
			mustFixture(t, s1, "acme")
			s1.Close()
			s2 := openStore(t, dsn) // second Open: nothing to apply, data intact
			if _, err := s2.GetTenant(ctx, "acme"); err != nil {
				t.Fatalf("after reopening: %v", err)
			}
			var n, max int64
			if err := s2.writeDB.QueryRowContext(ctx, `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &max); err != nil {
				t.Fatal(err)
			}
			if n != SchemaVersion() || max != SchemaVersion() {
				t.Fatalf("schema_migrations has %d rows up to %d, want %d", n, max, SchemaVersion())
			}
		})
	}
}

func TestConcurrentOpenMigratesOnce(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			dsn := backendDSN(t, b)
			var wg sync.WaitGroup
			errs := make([]error, 4)
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s, err := Open(context.Background(), dsn)
					if err == nil {
						s.Close()
					}
					errs[i] = err
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("Open #%d: %v", i, err)
				}
			}
		})
	}
}

func TestSchemaTooNew(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dsn := backendDSN(t, b)
			s := openStore(t, dsn)
			future := SchemaVersion() + 1
			if _, err := s.writeDB.ExecContext(ctx, s.dialect.rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
				future, fmt.Sprintf("%04d_from_the_future.sql", future), 0); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s2, err := Open(ctx, dsn)
			if err == nil {
				s2.Close()
				t.Fatal("Open of a database with a newer schema succeeded")
			}
			wantErr(t, "Open", err, ErrSchemaTooNew)
			if !strings.Contains(err.Error(), fmt.Sprintf("schema version %d", future)) {
				t.Errorf("error does not name the version: %v", err)
			}
		})
	}
}

func TestLoadMigrations(t *testing.T) {
	t.Parallel()
	for _, d := range []dialect{dialectSQLite, dialectPostgres} {
		ms, err := loadMigrations(d)
		if err != nil || len(ms) == 0 || ms[0].version != 1 {
			t.Fatalf("loadMigrations(%v) = %v, %v", d, ms, err)
		}
	}
}

func TestSQLiteFileIsPrivate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cp.db")
	s := openStore(t, path)
	mustFixture(t, s, "acme")
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v, want no group/other access", p, fi.Mode().Perm())
		}
	}
	var mode string
	if err := s.readDB.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
}

func TestTenants(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		got, err := s.CreateTenant(ctx, Tenant{ID: "acme", WrappedDEK: []byte{0, 1, 2, 255}})
		if err != nil {
			t.Fatal(err)
		}
		want := Tenant{ID: "acme", Name: "acme", CreatedAt: clk.Now().UTC().Truncate(time.Microsecond), WrappedDEK: []byte{0, 1, 2, 255}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("CreateTenant = %+v, want %+v", got, want)
		}
		read, err := s.GetTenant(ctx, "acme")
		if err != nil || !reflect.DeepEqual(read, want) {
			t.Errorf("GetTenant = %+v, %v; want %+v", read, err, want)
		}
		_, err = s.CreateTenant(ctx, Tenant{ID: "acme"})
		wantErr(t, "duplicate tenant", err, ErrConflict)
		_, err = s.CreateTenant(ctx, Tenant{ID: "Not A Slug"})
		wantErr(t, "bad tenant id", err, ErrInvalid)
		_, err = s.GetTenant(ctx, "nope")
		wantErr(t, "unknown tenant", err, ErrNotFound)

		if err := s.SetTenantDEK(ctx, "acme", []byte("rewrapped")); err != nil {
			t.Fatal(err)
		}
		if read, _ := s.GetTenant(ctx, "acme"); string(read.WrappedDEK) != "rewrapped" {
			t.Errorf("WrappedDEK after SetTenantDEK = %q", read.WrappedDEK)
		}
		wantErr(t, "SetTenantDEK of unknown tenant", s.SetTenantDEK(ctx, "nope", nil), ErrNotFound)

		if _, err := s.CreateTenant(ctx, Tenant{ID: "beta"}); err != nil {
			t.Fatal(err)
		}
		list, err := s.ListTenants(ctx)
		if err != nil || len(list) != 2 || list[0].ID != "acme" || list[1].ID != "beta" {
			t.Errorf("ListTenants = %+v, %v", list, err)
		}
	})
}

func TestOperators(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		bob, err := s.CreateOperator(ctx, "acme", Operator{Name: "bob", Role: RoleViewer})
		if err != nil {
			t.Fatal(err)
		}
		if !ValidID(PrefixOperator, bob.ID) || bob.Tenant != "acme" {
			t.Errorf("CreateOperator = %+v", bob)
		}
		for _, tc := range []struct {
			name string
			op   Operator
			want error
		}{
			{"duplicate name", Operator{Name: "bob", Role: RoleViewer}, ErrConflict},
			{"no role", Operator{Name: "carol"}, ErrInvalid},
			{"unknown role", Operator{Name: "carol", Role: "root"}, ErrInvalid},
			{"bad id", Operator{ID: "op-short", Name: "carol", Role: RoleViewer}, ErrInvalid},
		} {
			_, err := s.CreateOperator(ctx, "acme", tc.op)
			wantErr(t, tc.name, err, tc.want)
		}
		_, err = s.CreateOperator(ctx, "no-such-tenant", Operator{Name: "x", Role: RoleViewer})
		wantErr(t, "operator of unknown tenant", err, ErrNotFound)

		role, disabled := RoleOperator, true
		up, err := s.UpdateOperator(ctx, "acme", bob.ID, OperatorUpdate{Role: &role, Disabled: &disabled})
		if err != nil || up.Role != RoleOperator || !up.Disabled || up.Name != "bob" {
			t.Fatalf("UpdateOperator = %+v, %v", up, err)
		}
		taken := "alice"
		_, err = s.UpdateOperator(ctx, "acme", bob.ID, OperatorUpdate{Name: &taken})
		wantErr(t, "rename onto a taken name", err, ErrConflict)

		list, err := s.ListOperators(ctx, "acme")
		if err != nil || len(list) != 2 || list[0].ID != fx.operator.ID || list[1].ID != bob.ID {
			t.Fatalf("ListOperators = %+v, %v", list, err)
		}
		if err := s.DeleteOperator(ctx, "acme", bob.ID); err != nil {
			t.Fatal(err)
		}
		_, err = s.GetOperator(ctx, "acme", bob.ID)
		wantErr(t, "deleted operator", err, ErrNotFound)
	})
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		key, secret, err := s.CreateAPIKey(ctx, "acme", APIKey{OperatorID: fx.operator.ID, Role: RoleOperator, Name: "ci"})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(secret, "tgk_"+key.ID+"_") || !strings.HasPrefix(secret, key.Prefix) || len(key.Prefix) >= len(secret) {
			t.Fatalf("presented key %q, prefix %q", secret, key.Prefix)
		}

		got, err := s.AuthenticateAPIKey(ctx, secret)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != key.ID || got.Tenant != "acme" || got.Role != RoleOperator || got.OperatorID != fx.operator.ID {
			t.Errorf("AuthenticateAPIKey = %+v", got)
		}
		if !got.LastUsedAt.Equal(clk.Now().Truncate(time.Microsecond)) {
			t.Errorf("LastUsedAt = %v, want now", got.LastUsedAt)
		}
		stored, _ := s.GetAPIKey(ctx, "acme", key.ID)
		if !stored.LastUsedAt.Equal(got.LastUsedAt) {
			t.Errorf("stored LastUsedAt = %v, want %v", stored.LastUsedAt, got.LastUsedAt)
		}

		// The secret is never stored in the clear.
		var hash []byte
		if err := s.readDB.QueryRow(s.dialect.rebind(`SELECT secret_hash FROM api_keys WHERE id = ?`), key.ID).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		if len(hash) != 32 || strings.Contains(string(hash), secret[len(secret)-52:]) {
			t.Errorf("stored secret_hash %x is not a SHA-256", hash)
		}

		wrong := secret[:len(secret)-1] + map[bool]string{true: "b", false: "a"}[strings.HasSuffix(secret, "a")]
		for name, presented := range map[string]string{
			"wrong secret":  wrong,
			"malformed":     "Bearer " + secret,
			"empty":         "",
			"unknown key":   "tgk_" + NewID(PrefixAPIKey) + "_" + secret[len(secret)-52:],
			"short secret":  secret[:len(secret)-2],
			"other scheme":  "tgt" + secret[3:],
			"id only":       "tgk_" + key.ID,
			"trailing junk": secret + "_x",
		} {
			_, err := s.AuthenticateAPIKey(ctx, presented)
			wantErr(t, name, err, ErrUnauthenticated)
		}

		// A key cannot outrank its operator, and an operator's demotion
		// demotes its keys at once.
		_, _, err = s.CreateAPIKey(ctx, "acme", APIKey{OperatorID: fx.operator.ID, Role: "superuser"})
		wantErr(t, "bad role", err, ErrInvalid)
		viewer, _ := s.CreateOperator(ctx, "acme", Operator{Name: "vic", Role: RoleViewer})
		_, _, err = s.CreateAPIKey(ctx, "acme", APIKey{OperatorID: viewer.ID, Role: RoleAdmin})
		wantErr(t, "key above its operator", err, ErrInvalid)
		_, _, err = s.CreateAPIKey(ctx, "acme", APIKey{OperatorID: NewID(PrefixOperator), Role: RoleViewer})
		wantErr(t, "key of unknown operator", err, ErrNotFound)
		demoted := RoleViewer
		if _, err := s.UpdateOperator(ctx, "acme", fx.operator.ID, OperatorUpdate{Role: &demoted}); err != nil {
			t.Fatal(err)
		}
		if got, err := s.AuthenticateAPIKey(ctx, secret); err != nil || got.Role != RoleViewer {
			t.Errorf("after demoting the operator: role %q, %v; want viewer", got.Role, err)
		}

		disabled, enabled := true, false
		s.UpdateOperator(ctx, "acme", fx.operator.ID, OperatorUpdate{Disabled: &disabled})
		_, err = s.AuthenticateAPIKey(ctx, secret)
		wantErr(t, "disabled operator", err, ErrUnauthenticated)
		s.UpdateOperator(ctx, "acme", fx.operator.ID, OperatorUpdate{Disabled: &enabled})

		// Expiry.
		_, expiring, err := s.CreateAPIKey(ctx, "acme", APIKey{OperatorID: fx.operator.ID, Role: RoleViewer, ExpiresAt: clk.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AuthenticateAPIKey(ctx, expiring); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Hour)
		_, err = s.AuthenticateAPIKey(ctx, expiring)
		wantErr(t, "expired key", err, ErrUnauthenticated)
		_, _, err = s.CreateAPIKey(ctx, "acme", APIKey{OperatorID: fx.operator.ID, Role: RoleViewer, ExpiresAt: clk.Now()})
		wantErr(t, "key expiring at once", err, ErrInvalid)

		// Revocation.
		if err := s.RevokeAPIKey(ctx, "acme", key.ID); err != nil {
			t.Fatal(err)
		}
		_, err = s.AuthenticateAPIKey(ctx, secret)
		wantErr(t, "revoked key", err, ErrUnauthenticated)
		if err := s.RevokeAPIKey(ctx, "acme", key.ID); err != nil {
			t.Errorf("revoking twice: %v", err)
		}

		keys, err := s.ListAPIKeys(ctx, "acme", fx.operator.ID)
		if err != nil || len(keys) != 2 {
			t.Errorf("ListAPIKeys = %+v, %v; want 2 keys", keys, err)
		}
		for _, k := range keys {
			if k.ID == key.ID && k.RevokedAt.IsZero() {
				t.Errorf("listed key %s is not revoked", k.ID)
			}
		}

		// Deleting the operator removes its keys.
		if err := s.DeleteOperator(ctx, "acme", fx.operator.ID); err != nil {
			t.Fatal(err)
		}
		if keys, _ := s.ListAPIKeys(ctx, "acme", ""); len(keys) != 0 {
			t.Errorf("keys left after deleting their operator: %+v", keys)
		}
	})
}

func TestLastUsedWrittenAtMostOncePerMinute(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		key, secret, _ := s.CreateAPIKey(ctx, "acme", APIKey{OperatorID: fx.operator.ID, Role: RoleViewer})
		first, _ := s.AuthenticateAPIKey(ctx, secret)
		clk.Advance(30 * time.Second)
		s.AuthenticateAPIKey(ctx, secret)
		if k, _ := s.GetAPIKey(ctx, "acme", key.ID); !k.LastUsedAt.Equal(first.LastUsedAt) {
			t.Errorf("last_used_at moved after 30 s: %v -> %v", first.LastUsedAt, k.LastUsedAt)
		}
		clk.Advance(31 * time.Second)
		s.AuthenticateAPIKey(ctx, secret)
		if k, _ := s.GetAPIKey(ctx, "acme", key.ID); !k.LastUsedAt.After(first.LastUsedAt) {
			t.Errorf("last_used_at not updated after 61 s: %v", k.LastUsedAt)
		}
	})
}

func TestFleets(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		got, err := s.GetFleet(ctx, "acme", fx.fleet.ID)
		if err != nil || !reflect.DeepEqual(got, fx.fleet) {
			t.Fatalf("GetFleet = %+v, %v; want %+v", got, err, fx.fleet)
		}
		if byName, err := s.GetFleetByName(ctx, "acme", "edge"); err != nil || byName.ID != fx.fleet.ID {
			t.Errorf("GetFleetByName = %+v, %v", byName, err)
		}
		_, err = s.CreateFleet(ctx, "acme", Fleet{Name: "edge"})
		wantErr(t, "duplicate fleet name", err, ErrConflict)
		_, err = s.CreateFleet(ctx, "acme", Fleet{ID: fx.fleet.ID, Name: "other"})
		wantErr(t, "duplicate fleet id", err, ErrConflict)
		_, err = s.CreateFleet(ctx, "acme", Fleet{})
		wantErr(t, "fleet without name", err, ErrInvalid)

		lab, err := s.CreateFleet(ctx, "acme", Fleet{Name: "lab", Policy: FleetPolicy{AllowNoTPM: true, AllowSimulatedTPM: true}})
		if err != nil {
			t.Fatal(err)
		}
		policy := FleetPolicy{AllowNoTPM: false, AllowSimulatedTPM: true, CertTTL: Duration(90 * time.Minute)}
		name := "lab-2"
		up, err := s.UpdateFleet(ctx, "acme", lab.ID, FleetUpdate{Name: &name, Policy: &policy})
		if err != nil || up.Name != "lab-2" || !reflect.DeepEqual(up.Policy, policy) {
			t.Fatalf("UpdateFleet = %+v, %v", up, err)
		}
		var raw string
		s.readDB.QueryRow(s.dialect.rebind(`SELECT policy FROM fleets WHERE id = ?`), lab.ID).Scan(&raw)
		if raw != `{"allow_simulated_tpm":true,"cert_ttl":"1h30m0s"}` {
			t.Errorf("stored policy %s (a default attestation policy is not written)", raw)
		}
		policy.Attestation = FleetAttestation{Interval: Duration(10 * time.Second), RevokeOnUntrusted: true,
			Policy: attest.Policy{PCRs: []int{0, 7}, Rules: map[int]attest.PCRRule{7: {Mode: attest.ModeGolden, Allow: []string{strings.Repeat("ab", 32)}}},
				AllowedKinds: []string{"hardware"}}}
		if up, err = s.UpdateFleet(ctx, "acme", lab.ID, FleetUpdate{Policy: &policy}); err != nil || !reflect.DeepEqual(up.Policy, policy) {
			t.Fatalf("UpdateFleet(attestation) = %+v, %v", up, err)
		}
		if got, err := s.GetFleet(ctx, "acme", lab.ID); err != nil || !reflect.DeepEqual(got.Policy, policy) {
			t.Fatalf("attestation policy read back %+v, %v; want %+v", got.Policy, err, policy)
		}
		if v := policy.VerifierPolicy(); !slices.Equal(v.AllowedKinds, []string{"hardware"}) {
			t.Errorf("explicit kinds replaced: %v", v.AllowedKinds)
		}
		if v := (FleetPolicy{AllowSimulatedTPM: true}).VerifierPolicy(); !slices.Equal(v.AllowedKinds, []string{"hardware", "swtpm", "simulated"}) {
			t.Errorf("default kinds with simulated TPMs: %v", v.AllowedKinds)
		}
		list, err := s.ListFleets(ctx, "acme")
		if err != nil || len(list) != 2 || list[0].Name != "edge" || list[1].Name != "lab-2" {
			t.Errorf("ListFleets = %+v, %v", list, err)
		}

		// A fleet with devices cannot go; an empty one takes its tokens along.
		mustDevice(t, s, "acme", fx.fleet.ID, "ek1")
		wantErr(t, "delete fleet with devices", s.DeleteFleet(ctx, "acme", fx.fleet.ID), ErrConflict)
		tok, _, err := s.CreateEnrollmentToken(ctx, "acme", EnrollmentToken{FleetID: lab.ID, ExpiresAt: time.Now().AddDate(10, 0, 0)})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteFleet(ctx, "acme", lab.ID); err != nil {
			t.Fatal(err)
		}
		_, err = s.GetEnrollmentToken(ctx, "acme", tok.ID)
		wantErr(t, "token of deleted fleet", err, ErrNotFound)
		wantErr(t, "delete fleet twice", s.DeleteFleet(ctx, "acme", lab.ID), ErrNotFound)
	})
}

func TestDevices(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		d := mustDevice(t, s, "acme", fx.fleet.ID, "ek1")
		got, err := s.GetDevice(ctx, "acme", d.ID)
		if err != nil || !reflect.DeepEqual(got, d) {
			t.Fatalf("GetDevice =\n %+v, %v; want\n %+v", got, err, d)
		}
		if got.Status != DeviceEnrolled || got.Online || !got.LastSeenAt.IsZero() {
			t.Errorf("new device %+v", got)
		}
		if byEK, err := s.GetDeviceByEK(ctx, "acme", "ek1"); err != nil || byEK.ID != d.ID {
			t.Errorf("GetDeviceByEK = %+v, %v", byEK, err)
		}

		// One TPM enrolls once per tenant, however often it tries.
		_, err = s.CreateDevice(ctx, "acme", Device{FleetID: fx.fleet.ID, TPMKind: TPMSoftware, EKFingerprint: "ek1"})
		wantErr(t, "same EK twice", err, ErrConflict)
		// Devices without a TPM have no fingerprint and do not collide.
		for i := range 2 {
			nd, err := s.CreateDevice(ctx, "acme", Device{FleetID: fx.fleet.ID, Name: fmt.Sprint("plain", i), TPMKind: TPMNone})
			if err != nil || nd.EKFingerprint != "" {
				t.Fatalf("device without TPM: %+v, %v", nd, err)
			}
		}
		for _, tc := range []struct {
			name string
			d    Device
			want error
		}{
			{"unknown TPM kind", Device{FleetID: fx.fleet.ID, TPMKind: "quantum"}, ErrInvalid},
			{"TPM without EK", Device{FleetID: fx.fleet.ID, TPMKind: TPMHardware}, ErrInvalid},
			{"no TPM but an EK", Device{FleetID: fx.fleet.ID, TPMKind: TPMNone, EKFingerprint: "x"}, ErrInvalid},
			{"unknown fleet", Device{FleetID: NewID(PrefixFleet), TPMKind: TPMHardware, EKFingerprint: "ek9"}, ErrNotFound},
			{"duplicate id", Device{ID: d.ID, FleetID: fx.fleet.ID, TPMKind: TPMNone}, ErrConflict},
		} {
			_, err := s.CreateDevice(ctx, "acme", tc.d)
			wantErr(t, tc.name, err, tc.want)
		}

		// Caller-chosen ids (the certificate is issued before the row).
		id := NewID(PrefixDevice)
		if nd, err := s.CreateDevice(ctx, "acme", Device{ID: id, FleetID: fx.fleet.ID, TPMKind: TPMSimulator, EKFingerprint: "ek2"}); err != nil || nd.ID != id {
			t.Fatalf("CreateDevice with id: %+v, %v", nd, err)
		}

		name, typ := "renamed", "x86-64"
		up, err := s.UpdateDevice(ctx, "acme", d.ID, DeviceUpdate{Name: &name, DeviceType: &typ, Labels: map[string]string{"rack": "7"}})
		if err != nil || up.Name != name || up.DeviceType != typ || !reflect.DeepEqual(up.Labels, map[string]string{"rack": "7"}) {
			t.Fatalf("UpdateDevice = %+v, %v", up, err)
		}
		up, err = s.UpdateDevice(ctx, "acme", d.ID, DeviceUpdate{Labels: map[string]string{}})
		if err != nil || len(up.Labels) != 0 || up.Labels == nil {
			t.Fatalf("clearing labels: %+v, %v", up.Labels, err)
		}

		// Presence: last_seen_at only moves forward.
		t1 := clk.Now().Truncate(time.Microsecond)
		if err := s.SetDevicePresence(ctx, "acme", d.ID, true, t1); err != nil {
			t.Fatal(err)
		}
		if err := s.SetDevicePresence(ctx, "acme", d.ID, false, t1.Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		got, _ = s.GetDevice(ctx, "acme", d.ID)
		if got.Online || !got.LastSeenAt.Equal(t1) {
			t.Errorf("presence: online=%v last seen %v, want false and %v", got.Online, got.LastSeenAt, t1)
		}
		wantErr(t, "presence of unknown device", s.SetDevicePresence(ctx, "acme", NewID(PrefixDevice), true, t1), ErrNotFound)

		enrolled, err := s.ListDevices(ctx, "acme", DeviceFilter{FleetID: fx.fleet.ID, Status: DeviceEnrolled})
		if err != nil || len(enrolled) != 4 {
			t.Fatalf("ListDevices = %d devices, %v; want 4", len(enrolled), err)
		}

		// Revocation revokes the device's certificates too.
		notAfter := clk.Now().Add(24 * time.Hour)
		for _, serial := range []string{"0A", "0b"} {
			if err := s.RecordCertificate(ctx, "acme", IssuedCert{Serial: serial, DeviceID: d.ID, NotBefore: clk.Now(), NotAfter: notAfter}); err != nil {
				t.Fatal(err)
			}
		}
		rev, err := s.RevokeDevice(ctx, "acme", d.ID)
		if err != nil || rev.Status != DeviceRevoked || rev.RevokedAt.IsZero() || rev.Online {
			t.Fatalf("RevokeDevice = %+v, %v", rev, err)
		}
		for _, serial := range []string{"0a", "0B"} {
			if revoked, err := s.IsRevoked(ctx, "acme", serial); err != nil || !revoked {
				t.Errorf("IsRevoked(%s) after revoking the device = %v, %v", serial, revoked, err)
			}
		}
		again, err := s.RevokeDevice(ctx, "acme", d.ID)
		if err != nil || !again.RevokedAt.Equal(rev.RevokedAt) {
			t.Errorf("revoking twice: %+v, %v", again, err)
		}
		if revoked, _ := s.ListDevices(ctx, "acme", DeviceFilter{Status: DeviceRevoked}); len(revoked) != 1 {
			t.Errorf("%d revoked devices, want 1", len(revoked))
		}
		// Still one record per TPM while revoked.
		_, err = s.CreateDevice(ctx, "acme", Device{FleetID: fx.fleet.ID, TPMKind: TPMHardware, EKFingerprint: "ek1"})
		wantErr(t, "re-enrolling a revoked TPM", err, ErrConflict)

		// Deleting keeps the revocations and frees the TPM.
		if err := s.DeleteDevice(ctx, "acme", d.ID); err != nil {
			t.Fatal(err)
		}
		if serials, err := s.RevokedSerials(ctx, "acme"); err != nil || len(serials) != 2 {
			t.Errorf("RevokedSerials after delete = %+v, %v", serials, err)
		}
		mustDevice(t, s, "acme", fx.fleet.ID, "ek1")
		wantErr(t, "delete twice", s.DeleteDevice(ctx, "acme", d.ID), ErrNotFound)
	})
}

func TestCAAndCertificates(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		_, err := s.GetCA(ctx, "acme")
		wantErr(t, "no CA yet", err, ErrNotFound)
		ca, err := s.CreateCA(ctx, "acme", CA{CertDER: []byte{0x30, 0x82, 0}, WrappedKey: []byte("sealed")})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetCA(ctx, "acme"); err != nil || !reflect.DeepEqual(got, ca) {
			t.Errorf("GetCA = %+v, %v; want %+v", got, err, ca)
		}
		_, err = s.CreateCA(ctx, "acme", ca)
		wantErr(t, "second CA", err, ErrConflict)
		_, err = s.CreateCA(ctx, "acme", CA{})
		wantErr(t, "empty CA", err, ErrInvalid)
		_, err = s.CreateCA(ctx, "ghost", ca)
		wantErr(t, "CA of unknown tenant", err, ErrNotFound)

		d := mustDevice(t, s, "acme", fx.fleet.ID, "ek1")
		now := clk.Now()
		certs := []IssuedCert{
			{Serial: "1f", DeviceID: d.ID, NotBefore: now, NotAfter: now.Add(time.Hour)},
			{Serial: "2f", DeviceID: d.ID, NotBefore: now, NotAfter: now.Add(48 * time.Hour)},
		}
		for _, c := range certs {
			if err := s.RecordCertificate(ctx, "acme", c); err != nil {
				t.Fatal(err)
			}
		}
		got, _ := s.GetDevice(ctx, "acme", d.ID)
		if got.CertSerial != "2f" || !got.CertNotAfter.Equal(now.Add(48*time.Hour).Truncate(time.Microsecond)) {
			t.Errorf("device cert = %s until %v, want the latest", got.CertSerial, got.CertNotAfter)
		}
		wantErr(t, "same serial twice", s.RecordCertificate(ctx, "acme", certs[0]), ErrConflict)
		wantErr(t, "cert for unknown device",
			s.RecordCertificate(ctx, "acme", IssuedCert{Serial: "3f", DeviceID: NewID(PrefixDevice), NotAfter: now}), ErrNotFound)

		if revoked, err := s.IsRevoked(ctx, "acme", "1F"); err != nil || revoked {
			t.Errorf("IsRevoked before revocation = %v, %v", revoked, err)
		}
		_, err = s.IsRevoked(ctx, "acme", "ffff")
		wantErr(t, "never issued", err, ErrNotFound)

		for _, serial := range []string{"1f", "2f"} {
			if err := s.RevokeCertificate(ctx, "acme", serial); err != nil {
				t.Fatal(err)
			}
		}
		wantErr(t, "revoke unknown serial", s.RevokeCertificate(ctx, "acme", "ffff"), ErrNotFound)
		if revoked, err := s.IsRevoked(ctx, "acme", "1f"); err != nil || !revoked {
			t.Errorf("IsRevoked after revocation = %v, %v", revoked, err)
		}
		list, err := s.RevokedSerials(ctx, "acme")
		if err != nil || len(list) != 2 || list[0].Serial != "1f" || list[0].RevokedAt.IsZero() {
			t.Fatalf("RevokedSerials = %+v, %v", list, err)
		}
		// Expired certificates drop out of the list.
		clk.Advance(2 * time.Hour)
		if list, _ := s.RevokedSerials(ctx, "acme"); len(list) != 1 || list[0].Serial != "2f" {
			t.Errorf("RevokedSerials after the first expired = %+v", list)
		}
	})
}

func TestWithTx(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		mustFixture(t, s, "acme")
		at := time.Now().UTC().Truncate(time.Microsecond)

		// A mutation and its audit entry commit together ...
		var fleet Fleet
		err := s.WithTx(ctx, func(tx *Tx) error {
			var err error
			if fleet, err = tx.CreateFleet(ctx, "acme", Fleet{Name: "committed"}); err != nil {
				return err
			}
			_, err = tx.AppendAudit(ctx, "acme", chainEntry("acme", "fleet.create", at))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetFleet(ctx, "acme", fleet.ID); err != nil {
			t.Errorf("committed fleet: %v", err)
		}
		// ... or not at all.
		boom := errors.New("boom")
		err = s.WithTx(ctx, func(tx *Tx) error {
			if _, err := tx.CreateFleet(ctx, "acme", Fleet{Name: "rolled-back"}); err != nil {
				return err
			}
			if _, err := tx.AppendAudit(ctx, "acme", chainEntry("acme", "fleet.create", at)); err != nil {
				return err
			}
			// Reads inside the transaction see its writes.
			if _, err := tx.GetFleetByName(ctx, "acme", "rolled-back"); err != nil {
				return err
			}
			return boom
		})
		wantErr(t, "WithTx", err, boom)
		_, err = s.GetFleetByName(ctx, "acme", "rolled-back")
		wantErr(t, "rolled-back fleet", err, ErrNotFound)
		if last, err := s.LastAudit(ctx, "acme"); err != nil || last.Seq != 1 {
			t.Errorf("LastAudit after rollback = seq %d, %v; want 1", last.Seq, err)
		}

		// A panic rolls back and propagates.
		func() {
			defer func() {
				if recover() == nil {
					t.Error("panic swallowed")
				}
			}()
			s.WithTx(ctx, func(tx *Tx) error {
				tx.CreateFleet(ctx, "acme", Fleet{Name: "panicked"})
				panic("boom")
			})
		}()
		_, err = s.GetFleetByName(ctx, "acme", "panicked")
		wantErr(t, "fleet of a panicked transaction", err, ErrNotFound)
		// The writer is usable again.
		if _, err := s.CreateFleet(ctx, "acme", Fleet{Name: "after-panic"}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestConcurrentWrites hammers the store from many goroutines: SQLite must
// queue its writers rather than fail with SQLITE_BUSY.
func TestConcurrentWrites(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		const n = 24
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d, err := s.CreateDevice(ctx, "acme", Device{FleetID: fx.fleet.ID, TPMKind: TPMHardware, EKFingerprint: fmt.Sprint("ek", i)})
				if err == nil {
					err = s.SetDevicePresence(ctx, "acme", d.ID, true, time.Now())
				}
				if err == nil {
					_, err = s.ListDevices(ctx, "acme", DeviceFilter{})
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	})
}

// TestTwoSQLiteStoresOneFile is two processes sharing one file: the busy
// timeout and IMMEDIATE transactions keep them from failing.
func TestTwoSQLiteStoresOneFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cp.db")
	a, b := openStore(t, path), openStore(t, path)
	fx := mustFixture(t, a, "acme")
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.AppendAudit(ctx, "acme", chainEntry("acme", fmt.Sprint("a", i), time.Unix(1, 0)))
			if err == nil {
				_, err = s.CreateDevice(ctx, "acme", Device{FleetID: fx.fleet.ID, TPMKind: TPMNone})
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if last, err := b.LastAudit(ctx, "acme"); err != nil || last.Seq != 40 {
		t.Errorf("LastAudit = %d, %v; want 40", last.Seq, err)
	}
}
