package policy

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/ca"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/kek"
	"github.com/tensorguard/tensorguardflow/internal/policybundle"
	"github.com/tensorguard/tensorguardflow/internal/testpg"
)

func TestMain(m *testing.M) { testpg.Main(m) }

// newStore opens a store of backend with tenants acme and beta, each with
// its data key, and returns it with a keyring over an in-memory KEK.
func newStore(t *testing.T, backend string) (*store.Store, *kek.Keyring) {
	t.Helper()
	ctx := context.Background()
	dsn := "sqlite://" + filepath.Join(t.TempDir(), "cp.db")
	if backend == "postgres" {
		dsn = testpg.Start(t)
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	provider, err := kek.NewMemoryProvider(bytes.Repeat([]byte{9}, kek.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	keys := ca.TenantKeyring(st, provider, time.Now)
	for _, tenant := range []string{"acme", "beta"} {
		dek, err := keys.NewTenantKey(ctx, tenant, 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateTenant(ctx, store.Tenant{ID: tenant, WrappedDEK: dek}); err != nil {
			t.Fatal(err)
		}
	}
	return st, keys
}

func TestKeys(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			st, ring := newStore(t, backend)
			k := NewKeys(st, ring, nil)
			if _, err := k.VerificationKey(ctx, "acme"); !errors.Is(err, ErrNoKey) {
				t.Fatalf("before the first push: %v", err)
			}
			sk, err := k.SigningKey(ctx, "acme")
			if err != nil {
				t.Fatal(err)
			}
			// Another replica (no cache) gets the same key, and the public
			// key devices fetch verifies what it signs.
			sk2, err := NewKeys(st, ring, nil).SigningKey(ctx, "acme")
			if err != nil || sk2.ID != sk.ID || !sk2.Key.Equal(sk.Key) {
				t.Fatalf("second replica's key %s, %v; want %s", sk2.ID, err, sk.ID)
			}
			vk, err := k.VerificationKey(ctx, "acme")
			if err != nil || vk != sk.Public() {
				t.Fatalf("verification key = %+v, %v; want %+v", vk, err, sk.Public())
			}
			u, err := policybundle.Build(policybundle.Files{"p.rego": []byte("package tensorguard.install\n\nallow := true\n")})
			if err != nil {
				t.Fatal(err)
			}
			raw, err := policybundle.Sign(u, policybundle.Meta{Tenant: "acme", Fleet: "f", Revision: 1}, sk)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := policybundle.Verify(raw, vk); err != nil {
				t.Errorf("bundle signed with the stored key does not verify: %v", err)
			}
			// Tenants have their own keys.
			bk, err := k.SigningKey(ctx, "beta")
			if err != nil || bk.ID == sk.ID {
				t.Errorf("beta's key %s, %v", bk.ID, err)
			}
			// The private key is stored sealed, and a sealed key moved to
			// another tenant does not open.
			row, err := st.GetPolicySigningKey(ctx, "acme")
			if err != nil {
				t.Fatal(err)
			}
			der, _ := sk.MarshalPKCS8()
			if bytes.Contains(row.WrappedKey, der) {
				t.Error("the private key is stored in the clear")
			}
			if _, err := ring.Open(ctx, "beta", row.WrappedKey, keyAAD("beta")); err == nil {
				t.Error("acme's sealed key opens as beta's")
			}
		})
	}
}

// TestKeysRefuseMismatch: a sealed key whose stored public half differs
// (a tampered row) is refused rather than used.
func TestKeysRefuseMismatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, ring := newStore(t, "sqlite")
	real, err := policybundle.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := policybundle.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, _ := real.MarshalPKCS8()
	sealed, err := ring.Seal(ctx, "acme", pkcs8, keyAAD("acme"))
	if err != nil {
		t.Fatal(err)
	}
	otherPub := other.Public()
	if _, _, err := st.EnsurePolicySigningKey(ctx, "acme", store.PolicySigningKey{KeyID: other.ID, PublicKey: []byte(otherPub.PublicKeyPEM), WrappedKey: sealed}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewKeys(st, ring, nil).SigningKey(ctx, "acme"); err == nil {
		t.Error("a key not matching its stored public key was used")
	}
}
