package policy

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/kek"
	"github.com/tensorguard/tensorguardflow/internal/policybundle"
)

// ErrNoKey means the tenant has no policy signing key yet (it never pushed
// a policy).
var ErrNoKey = errors.New("no policy signing key")

// Store is what Keys needs of the database; *store.Store implements it.
type Store interface {
	GetPolicySigningKey(ctx context.Context, tenant string) (store.PolicySigningKey, error)
	EnsurePolicySigningKey(ctx context.Context, tenant string, k store.PolicySigningKey) (store.PolicySigningKey, bool, error)
}

var _ Store = (*store.Store)(nil)

// Sealer seals and opens tenant secrets under the tenant's data key;
// *kek.Keyring (ca.Authority.Keyring) is one.
type Sealer interface {
	Seal(ctx context.Context, tenant string, plaintext, aad []byte) ([]byte, error)
	Open(ctx context.Context, tenant string, envelope, aad []byte) ([]byte, error)
}

var _ Sealer = (*kek.Keyring)(nil)

func keyAAD(tenant string) []byte { return []byte("policy_signing_keys/" + tenant + "/private_key") }

// Keys hands out the tenants' policy signing keys. It is safe for
// concurrent use; an unsealed key is kept in memory.
type Keys struct {
	st     Store
	sealer Sealer
	log    *slog.Logger

	mu   sync.Mutex
	keys map[string]policybundle.SigningKey
}

// NewKeys returns Keys over st, sealing with sealer. logger may be nil.
func NewKeys(st Store, sealer Sealer, logger *slog.Logger) *Keys {
	if logger == nil {
		logger = slog.Default()
	}
	return &Keys{st: st, sealer: sealer, log: logger, keys: map[string]policybundle.SigningKey{}}
}

// SigningKey returns tenant's signing key, creating, sealing and storing
// one on first use.
func (k *Keys) SigningKey(ctx context.Context, tenant string) (policybundle.SigningKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if sk, ok := k.keys[tenant]; ok {
		return sk, nil
	}
	row, err := k.st.GetPolicySigningKey(ctx, tenant)
	if errors.Is(err, store.ErrNotFound) {
		row, err = k.create(ctx, tenant)
	}
	if err != nil {
		return policybundle.SigningKey{}, err
	}
	pkcs8, err := k.sealer.Open(ctx, tenant, row.WrappedKey, keyAAD(tenant))
	if err != nil {
		return policybundle.SigningKey{}, fmt.Errorf("unseal the policy signing key of tenant %s: %w", tenant, err)
	}
	sk, err := policybundle.ParseSigningKey(pkcs8)
	clear(pkcs8)
	if err != nil {
		return policybundle.SigningKey{}, fmt.Errorf("policy signing key of tenant %s: %w", tenant, err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&sk.Key.PublicKey)
	if err != nil || sk.ID != row.KeyID || !bytes.Equal(pub, row.PublicKey) {
		return policybundle.SigningKey{}, fmt.Errorf("policy signing key of tenant %s: the sealed key does not match its public key", tenant)
	}
	k.keys[tenant] = sk
	return sk, nil
}

func (k *Keys) create(ctx context.Context, tenant string) (store.PolicySigningKey, error) {
	sk, err := policybundle.NewSigningKey()
	if err != nil {
		return store.PolicySigningKey{}, err
	}
	pkcs8, err := sk.MarshalPKCS8()
	if err != nil {
		return store.PolicySigningKey{}, err
	}
	sealed, err := k.sealer.Seal(ctx, tenant, pkcs8, keyAAD(tenant))
	clear(pkcs8)
	if err != nil {
		return store.PolicySigningKey{}, fmt.Errorf("seal the policy signing key of tenant %s: %w", tenant, err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&sk.Key.PublicKey)
	if err != nil {
		return store.PolicySigningKey{}, err
	}
	row, created, err := k.st.EnsurePolicySigningKey(ctx, tenant, store.PolicySigningKey{KeyID: sk.ID, PublicKey: pub, WrappedKey: sealed})
	if err != nil {
		return store.PolicySigningKey{}, err
	}
	if created {
		k.log.Info("created the tenant's policy signing key", "tenant", tenant, "key_id", row.KeyID)
	}
	return row, nil
}

// VerificationKey returns the public key devices of tenant verify bundles
// with, or an error wrapping ErrNoKey before the tenant's first push. It
// unseals nothing.
func (k *Keys) VerificationKey(ctx context.Context, tenant string) (policybundle.VerificationKey, error) {
	row, err := k.st.GetPolicySigningKey(ctx, tenant)
	if errors.Is(err, store.ErrNotFound) {
		return policybundle.VerificationKey{}, fmt.Errorf("tenant %s: %w", tenant, ErrNoKey)
	}
	if err != nil {
		return policybundle.VerificationKey{}, err
	}
	return VerificationKeyFromDER(row.KeyID, row.PublicKey)
}

// VerificationKeyFromDER builds the device-facing key from a stored row,
// checking that the id matches the key.
func VerificationKeyFromDER(id string, der []byte) (policybundle.VerificationKey, error) {
	v := policybundle.VerificationKey{ID: id, Algorithm: policybundle.Algorithm,
		PublicKeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}
	if err := v.Check(); err != nil {
		return policybundle.VerificationKey{}, err
	}
	return v, nil
}
