package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"
)

func hexID(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func keyID(s string) string { return hexID(s)[:32] }

func testPackage(name, version string) Package {
	return Package{
		ID: hexID(name + "@" + version), Name: name, Version: version, SignedID: hexID("signed " + name + version),
		Size: 4096, PublisherKeyID: keyID("signer"), Manifest: []byte(`{"name":"` + name + `", "version":"` + version + `"}`),
		ExpiresAt: time.Date(2031, 1, 1, 0, 0, 0, 123456789, time.UTC),
	}
}

func TestPublishers(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		mustFixture(t, s, "acme")
		mustFixture(t, s, "beta")
		p, err := s.CreatePublisher(ctx, "acme", Publisher{Name: "ml-team", KeyID: keyID("a"), PublicKey: []byte("key-a")})
		if err != nil {
			t.Fatal(err)
		}
		if p.Tenant != "acme" || !p.CreatedAt.Equal(clk.Now().UTC().Truncate(time.Microsecond)) {
			t.Fatalf("created = %+v", p)
		}
		// Name and key id are unique per tenant; another tenant may pin the
		// same key under the same name.
		_, err = s.CreatePublisher(ctx, "acme", Publisher{Name: "ml-team", KeyID: keyID("b"), PublicKey: []byte("key-b")})
		wantErr(t, "same name", err, ErrConflict)
		_, err = s.CreatePublisher(ctx, "acme", Publisher{Name: "other", KeyID: keyID("a"), PublicKey: []byte("key-a")})
		wantErr(t, "same key", err, ErrConflict)
		if _, err := s.CreatePublisher(ctx, "beta", Publisher{Name: "ml-team", KeyID: keyID("a"), PublicKey: []byte("key-a")}); err != nil {
			t.Fatalf("beta pins the same key: %v", err)
		}
		for _, bad := range []Publisher{
			{Name: "", KeyID: keyID("c"), PublicKey: []byte("k")},
			{Name: "x", KeyID: "ABC", PublicKey: []byte("k")},
			{Name: "x", KeyID: keyID("c")},
		} {
			_, err := s.CreatePublisher(ctx, "acme", bad)
			wantErr(t, fmt.Sprintf("invalid %+v", bad), err, ErrInvalid)
		}
		_, err = s.CreatePublisher(ctx, "nope", Publisher{Name: "x", KeyID: keyID("d"), PublicKey: []byte("k")})
		wantErr(t, "unknown tenant", err, ErrNotFound)

		got, err := s.GetPublisher(ctx, "acme", "ml-team")
		if err != nil || !bytes.Equal(got.PublicKey, []byte("key-a")) || got.KeyID != keyID("a") || !got.CreatedAt.Equal(p.CreatedAt) {
			t.Fatalf("get = %+v, %v", got, err)
		}
		if got, err := s.GetPublisherByKeyID(ctx, "acme", keyID("a")); err != nil || got.Name != "ml-team" {
			t.Fatalf("by key id = %+v, %v", got, err)
		}
		_, err = s.GetPublisher(ctx, "beta", "nobody")
		wantErr(t, "unknown name", err, ErrNotFound)
		if _, err := s.CreatePublisher(ctx, "acme", Publisher{Name: "a-first", KeyID: keyID("e"), PublicKey: []byte("key-e")}); err != nil {
			t.Fatal(err)
		}
		list, err := s.ListPublishers(ctx, "acme")
		if err != nil || len(list) != 2 || list[0].Name != "a-first" || list[1].Name != "ml-team" {
			t.Fatalf("list = %+v, %v", list, err)
		}
		if err := s.DeletePublisher(ctx, "acme", "ml-team"); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "delete again", s.DeletePublisher(ctx, "acme", "ml-team"), ErrNotFound)
		if _, err := s.GetPublisher(ctx, "beta", "ml-team"); err != nil {
			t.Fatalf("beta's publisher after acme deleted its own: %v", err)
		}
	})
}

func TestRecipientKeys(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		mustFixture(t, s, "acme")
		mustFixture(t, s, "beta")
		_, err := s.GetRecipientKey(ctx, "acme")
		wantErr(t, "before the first", err, ErrNotFound)
		first := RecipientKey{KeyID: keyID("r1"), PublicKey: []byte("pub1"), WrappedKey: []byte("sealed1")}
		k, created, err := s.EnsureRecipientKey(ctx, "acme", first)
		if err != nil || !created || k.KeyID != first.KeyID || !bytes.Equal(k.WrappedKey, first.WrappedKey) || k.Tenant != "acme" {
			t.Fatalf("ensure = %+v, %v, %v", k, created, err)
		}
		// A second key loses: the first stays, for every caller.
		k2, created, err := s.EnsureRecipientKey(ctx, "acme", RecipientKey{KeyID: keyID("r2"), PublicKey: []byte("pub2"), WrappedKey: []byte("sealed2")})
		if err != nil || created || k2.KeyID != first.KeyID || !bytes.Equal(k2.PublicKey, []byte("pub1")) {
			t.Fatalf("second ensure = %+v, %v, %v", k2, created, err)
		}
		got, err := s.GetRecipientKey(ctx, "acme")
		if err != nil || got.KeyID != first.KeyID || !got.CreatedAt.Equal(k.CreatedAt) {
			t.Fatalf("get = %+v, %v", got, err)
		}
		_, err = s.GetRecipientKey(ctx, "beta")
		wantErr(t, "beta has none", err, ErrNotFound)

		// Replicas racing for the first key all end up with the same one.
		var wg sync.WaitGroup
		ids := make([]string, 8)
		errs := make([]error, 8)
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				k, _, err := s.EnsureRecipientKey(ctx, "beta", RecipientKey{KeyID: keyID(fmt.Sprint("race", i)), PublicKey: []byte{byte(i)}, WrappedKey: []byte{1}})
				ids[i], errs[i] = k.KeyID, err
			}()
		}
		wg.Wait()
		for i := range ids {
			if errs[i] != nil || ids[i] != ids[0] {
				t.Fatalf("racer %d got %s, %v; racer 0 got %s", i, ids[i], errs[i], ids[0])
			}
		}
		_, _, err = s.EnsureRecipientKey(ctx, "acme", RecipientKey{KeyID: "short", PublicKey: []byte("p"), WrappedKey: []byte("w")})
		wantErr(t, "bad key id", err, ErrInvalid)
	})
}

func TestPackages(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		mustFixture(t, s, "acme")
		mustFixture(t, s, "beta")
		in := testPackage("resnet", "1.0.0")
		in.DPCert = []byte(`{"schema":"tgsp.dp_cert.v1", "epsilon": 3}`)
		p, err := s.CreatePackage(ctx, "acme", in)
		if err != nil {
			t.Fatal(err)
		}
		if p.Tenant != "acme" || !p.CreatedAt.Equal(clk.Now().UTC().Truncate(time.Microsecond)) {
			t.Fatalf("created = %+v", p)
		}
		got, err := s.GetPackage(ctx, "acme", in.ID)
		if err != nil {
			t.Fatal(err)
		}
		// JSON comes back byte for byte; absent documents stay nil.
		if !bytes.Equal(got.Manifest, in.Manifest) || !bytes.Equal(got.DPCert, in.DPCert) || got.Evidence != nil ||
			got.Name != "resnet" || got.Version != "1.0.0" || got.SignedID != in.SignedID || got.Size != 4096 ||
			got.PublisherKeyID != in.PublisherKeyID || !got.ExpiresAt.Equal(in.ExpiresAt.Truncate(time.Microsecond)) || !got.CreatedAt.Equal(p.CreatedAt) {
			t.Fatalf("get = %+v\nwant %+v", got, p)
		}
		if byV, err := s.GetPackageByVersion(ctx, "acme", "resnet", "1.0.0"); err != nil || byV.ID != in.ID {
			t.Fatalf("by version = %+v, %v", byV, err)
		}

		// The same name and version, or the same content, twice: conflict.
		other := testPackage("resnet", "1.0.0")
		other.ID = hexID("other content")
		_, err = s.CreatePackage(ctx, "acme", other)
		wantErr(t, "same version", err, ErrConflict)
		again := testPackage("resnet", "1.0.0")
		again.Version = "1.0.1"
		_, err = s.CreatePackage(ctx, "acme", again)
		wantErr(t, "same id", err, ErrConflict)
		// Another tenant has its own namespace and may hold the same file.
		if _, err := s.CreatePackage(ctx, "beta", testPackage("resnet", "1.0.0")); err != nil {
			t.Fatalf("beta pushes the same package: %v", err)
		}
		for _, bad := range []Package{
			{ID: "XYZ", Name: "a", Version: "1", SignedID: "s", Size: 1, PublisherKeyID: keyID("s"), Manifest: []byte("{}"), ExpiresAt: clk.Now()},
			{ID: hexID("x"), Version: "1", SignedID: "s", Size: 1, PublisherKeyID: keyID("s"), Manifest: []byte("{}"), ExpiresAt: clk.Now()},
			{ID: hexID("x"), Name: "a", Version: "1", SignedID: "s", Size: 0, PublisherKeyID: keyID("s"), Manifest: []byte("{}"), ExpiresAt: clk.Now()},
			{ID: hexID("x"), Name: "a", Version: "1", SignedID: "s", Size: 1, PublisherKeyID: keyID("s"), ExpiresAt: clk.Now()},
		} {
			_, err := s.CreatePackage(ctx, "acme", bad)
			wantErr(t, "invalid package", err, ErrInvalid)
		}

		clk.Advance(time.Second)
		v2 := testPackage("resnet", "2.0.0")
		v2.Evidence = []byte(`{"schema":"tgsp.evidence.v1"}`)
		if _, err := s.CreatePackage(ctx, "acme", v2); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreatePackage(ctx, "acme", testPackage("bert", "0.1.0")); err != nil {
			t.Fatal(err)
		}
		list, err := s.ListPackages(ctx, "acme", PackageFilter{})
		if err != nil || len(list) != 3 {
			t.Fatalf("list = %+v, %v", list, err)
		}
		if list[0].Name != "bert" || list[1].Version != "1.0.0" || list[2].Version != "2.0.0" {
			t.Fatalf("list order: %s@%s %s@%s %s@%s", list[0].Name, list[0].Version, list[1].Name, list[1].Version, list[2].Name, list[2].Version)
		}
		for _, p := range list {
			if p.Manifest != nil || p.DPCert != nil || p.Evidence != nil {
				t.Fatalf("list carries documents: %+v", p)
			}
		}
		if only, err := s.ListPackages(ctx, "acme", PackageFilter{Name: "resnet"}); err != nil || len(only) != 2 {
			t.Fatalf("filtered list = %+v, %v", only, err)
		}

		// Tenants see only their own.
		_, err = s.GetPackage(ctx, "beta", v2.ID)
		wantErr(t, "beta reads acme's", err, ErrNotFound)
		wantErr(t, "beta deletes acme's", s.DeletePackage(ctx, "beta", v2.ID), ErrNotFound)
		if err := s.DeletePackage(ctx, "acme", v2.ID); err != nil {
			t.Fatal(err)
		}
		_, err = s.GetPackage(ctx, "acme", v2.ID)
		wantErr(t, "deleted", err, ErrNotFound)
		if _, err := s.GetPackage(ctx, "beta", in.ID); err != nil {
			t.Fatalf("beta's copy after acme's delete: %v", err)
		}
	})
}
