package store

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestPolicySigningKey(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		mustFixture(t, s, "acme")
		mustFixture(t, s, "beta")
		if _, err := s.GetPolicySigningKey(ctx, "acme"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("before any key: %v", err)
		}
		k := PolicySigningKey{KeyID: "tgpol-" + strings.Repeat("a", 32), PublicKey: []byte("pub"), WrappedKey: []byte("sealed")}
		got, created, err := s.EnsurePolicySigningKey(ctx, "acme", k)
		if err != nil || !created || got.KeyID != k.KeyID || !bytes.Equal(got.WrappedKey, k.WrappedKey) || got.Tenant != "acme" {
			t.Fatalf("first ensure = %+v, %v, %v", got, created, err)
		}
		// A second key (another replica's) loses: the first stays.
		k2 := PolicySigningKey{KeyID: "tgpol-" + strings.Repeat("b", 32), PublicKey: []byte("pub2"), WrappedKey: []byte("sealed2")}
		got, created, err = s.EnsurePolicySigningKey(ctx, "acme", k2)
		if err != nil || created || got.KeyID != k.KeyID {
			t.Fatalf("second ensure = %+v, %v, %v", got, created, err)
		}
		if g, err := s.GetPolicySigningKey(ctx, "acme"); err != nil || g.KeyID != k.KeyID || !bytes.Equal(g.PublicKey, k.PublicKey) {
			t.Errorf("get = %+v, %v", g, err)
		}
		if _, err := s.GetPolicySigningKey(ctx, "beta"); !errors.Is(err, ErrNotFound) {
			t.Errorf("beta sees a key: %v", err)
		}
		for name, bad := range map[string]PolicySigningKey{
			"bad id":     {KeyID: "key", PublicKey: []byte("p"), WrappedKey: []byte("w")},
			"no public":  {KeyID: k.KeyID, WrappedKey: []byte("w")},
			"no wrapped": {KeyID: k.KeyID, PublicKey: []byte("p")},
		} {
			if _, _, err := s.EnsurePolicySigningKey(ctx, "beta", bad); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: %v", name, err)
			}
		}
		if _, _, err := s.EnsurePolicySigningKey(ctx, "nobody", k); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown tenant: %v", err)
		}
	})
}

func TestPolicyBundles(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		beta := mustFixture(t, s, "beta")
		if _, err := s.LatestPolicyBundle(ctx, "acme", fx.fleet.ID, true); !errors.Is(err, ErrNotFound) {
			t.Fatalf("no bundle yet: %v", err)
		}
		push := func(tenant, fleet string, content string) PolicyBundle {
			t.Helper()
			var out PolicyBundle
			err := s.WithTx(ctx, func(tx *Tx) error {
				rev, err := tx.NextPolicyRevision(ctx, tenant, fleet)
				if err != nil {
					return err
				}
				out, err = tx.CreatePolicyBundle(ctx, tenant, PolicyBundle{FleetID: fleet, Revision: rev, SHA256: "sha-" + content,
					KeyID: "tgpol-x", Bundle: []byte(content), CreatedBy: "key-1"})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		b1 := push("acme", fx.fleet.ID, "one")
		clk.Advance(1)
		b2 := push("acme", fx.fleet.ID, "two")
		if b1.Revision != 1 || b2.Revision != 2 || b2.Size != 3 {
			t.Fatalf("revisions %d, %d (size %d)", b1.Revision, b2.Revision, b2.Size)
		}
		// Revisions are per fleet and per tenant.
		if b := push("beta", beta.fleet.ID, "b"); b.Revision != 1 {
			t.Errorf("beta's first revision = %d", b.Revision)
		}
		got, err := s.LatestPolicyBundle(ctx, "acme", fx.fleet.ID, true)
		if err != nil || got.Revision != 2 || string(got.Bundle) != "two" || got.SHA256 != "sha-two" || got.CreatedBy != "key-1" {
			t.Errorf("latest = %+v, %v", got, err)
		}
		meta, err := s.LatestPolicyBundle(ctx, "acme", fx.fleet.ID, false)
		if err != nil || meta.Bundle != nil || meta.Revision != 2 || meta.Size != 3 {
			t.Errorf("latest without bytes = %+v, %v", meta, err)
		}
		if _, err := s.LatestPolicyBundle(ctx, "beta", fx.fleet.ID, false); !errors.Is(err, ErrNotFound) {
			t.Errorf("beta reads acme's fleet: %v", err)
		}
		list, err := s.ListPolicyBundles(ctx, "acme", fx.fleet.ID, 10)
		if err != nil || len(list) != 2 || list[0].Revision != 2 || list[1].Revision != 1 {
			t.Errorf("list = %+v, %v", list, err)
		}
		// A failed push does not reuse its revision, and a revision is
		// stored once.
		_ = s.WithTx(ctx, func(tx *Tx) error {
			_, _ = tx.NextPolicyRevision(ctx, "acme", fx.fleet.ID)
			return errors.New("rolled back")
		})
		if b := push("acme", fx.fleet.ID, "three"); b.Revision != 3 {
			t.Errorf("after a rolled-back push: revision %d, want 3", b.Revision)
		}
		if _, err := s.CreatePolicyBundle(ctx, "acme", PolicyBundle{FleetID: fx.fleet.ID, Revision: 3, SHA256: "x", KeyID: "k", Bundle: []byte("x")}); !errors.Is(err, ErrConflict) {
			t.Errorf("duplicate revision: %v", err)
		}
		if _, err := s.NextPolicyRevision(ctx, "beta", fx.fleet.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("revision of another tenant's fleet: %v", err)
		}
		if _, err := s.CreatePolicyBundle(ctx, "acme", PolicyBundle{FleetID: fx.fleet.ID, Revision: 0, SHA256: "x", KeyID: "k", Bundle: []byte("x")}); !errors.Is(err, ErrInvalid) {
			t.Errorf("revision 0: %v", err)
		}
		// Concurrent pushes get distinct revisions.
		var wg sync.WaitGroup
		revs := make(chan int64, 8)
		for range 8 {
			wg.Go(func() {
				rev, err := s.NextPolicyRevision(ctx, "acme", fx.fleet.ID)
				if err != nil {
					t.Error(err)
					return
				}
				revs <- rev
			})
		}
		wg.Wait()
		close(revs)
		seen := map[int64]bool{}
		for r := range revs {
			if seen[r] || r < 4 || r > 11 {
				t.Errorf("concurrent revision %d (seen %v)", r, seen)
			}
			seen[r] = true
		}
		// Deleting the fleet deletes its bundles and head.
		if err := s.DeleteFleet(ctx, "acme", fx.fleet.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.LatestPolicyBundle(ctx, "acme", fx.fleet.ID, false); !errors.Is(err, ErrNotFound) {
			t.Errorf("bundle after fleet delete: %v", err)
		}
	})
}
