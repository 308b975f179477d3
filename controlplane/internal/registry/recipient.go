package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// sealedKeys holds one kind of per-tenant private key the control plane
// keeps: stored sealed under the tenant's data key (bound to its table and
// tenant, so a sealed key copied to another row or tenant does not open),
// generated on first use, unsealed once and then kept in memory. A replica
// that loses the race to store its own key uses the winner's.
type sealedKeys[K any] struct {
	what   string // "recipient key", in errors and logs
	table  string // binds the seal
	get    func(ctx context.Context, tenant string) (store.TenantKey, error)
	ensure func(ctx context.Context, tenant string, k store.TenantKey) (store.TenantKey, bool, error)
	// generate makes a key: the private key PEM, its key id and public key
	// body.
	generate func() (pem []byte, keyID string, public []byte, err error)
	// parse reads a private key PEM and returns its key id and public body.
	parse func(pem []byte) (k K, keyID string, public []byte, err error)

	mu    sync.Mutex
	cache map[string]K
}

func (s *sealedKeys[K]) aad(tenant string) []byte {
	return []byte(s.table + "/" + tenant + "/private_key")
}

// key returns tenant's key, creating it on first use.
func (s *sealedKeys[K]) key(ctx context.Context, r *Registry, tenant string) (K, error) {
	var zero K
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.cache[tenant]; ok {
		return k, nil
	}
	row, err := s.get(ctx, tenant)
	if errors.Is(err, store.ErrNotFound) {
		row, err = s.create(ctx, r, tenant)
	}
	if err != nil {
		return zero, err
	}
	pem, err := r.keys.Open(ctx, tenant, row.WrappedKey, s.aad(tenant))
	if err != nil {
		return zero, fmt.Errorf("unseal the %s of tenant %s: %w", s.what, tenant, err)
	}
	k, id, pub, err := s.parse(pem)
	clear(pem)
	if err != nil {
		return zero, fmt.Errorf("%s of tenant %s: %w", s.what, tenant, err)
	}
	if id != row.KeyID || !bytes.Equal(pub, row.PublicKey) {
		return zero, fmt.Errorf("%s of tenant %s: the sealed key does not match its public key", s.what, tenant)
	}
	if s.cache == nil {
		s.cache = map[string]K{}
	}
	s.cache[tenant] = k
	return k, nil
}

func (s *sealedKeys[K]) create(ctx context.Context, r *Registry, tenant string) (store.TenantKey, error) {
	pem, id, pub, err := s.generate()
	if err != nil {
		return store.TenantKey{}, err
	}
	sealed, err := r.keys.Seal(ctx, tenant, pem, s.aad(tenant))
	clear(pem)
	if err != nil {
		return store.TenantKey{}, fmt.Errorf("seal the %s of tenant %s: %w", s.what, tenant, err)
	}
	row, created, err := s.ensure(ctx, tenant, store.TenantKey{KeyID: id, PublicKey: pub, WrappedKey: sealed})
	if err != nil {
		return store.TenantKey{}, err
	}
	if created {
		r.log.Info("created the control plane's "+s.what, "tenant", tenant, "key_id", row.KeyID)
	}
	return row, nil
}

func newRecipientKeys(st *store.Store) *sealedKeys[*tgsp.RecipientPrivateKey] {
	return &sealedKeys[*tgsp.RecipientPrivateKey]{
		what: "package recipient key", table: "recipient_keys", get: st.GetRecipientKey, ensure: st.EnsureRecipientKey,
		generate: func() ([]byte, string, []byte, error) {
			k, err := tgsp.GenerateRecipient(nil)
			if err != nil {
				return nil, "", nil, err
			}
			return k.MarshalPEM(), k.Public().KeyID(), k.Public().Bytes(), nil
		},
		parse: func(pem []byte) (*tgsp.RecipientPrivateKey, string, []byte, error) {
			k, err := tgsp.ParseRecipientPrivateKey(pem)
			if err != nil {
				return nil, "", nil, err
			}
			return k, k.Public().KeyID(), k.Public().Bytes(), nil
		},
	}
}

// RecipientPublicKey returns the control plane's TGSP recipient key of
// tenant, creating it on first use: publishers pack to it (`tgsp pack
// --recipient`), and only with it can the control plane release a
// package's key to devices.
func (r *Registry) RecipientPublicKey(ctx context.Context, tenant string) (*tgsp.RecipientPublicKey, error) {
	k, err := r.recipientKey(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return k.Public(), nil
}

// recipientKey returns tenant's recipient private key.
func (r *Registry) recipientKey(ctx context.Context, tenant string) (*tgsp.RecipientPrivateKey, error) {
	return r.recipients.key(ctx, r, tenant)
}
