package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// recipientAAD binds a sealed recipient key to its table and tenant, so a
// sealed key copied to another row or tenant does not open.
func recipientAAD(tenant string) []byte { return []byte("recipient_keys/" + tenant + "/private_key") }

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

// recipientKey returns tenant's recipient private key, unsealed once and
// kept in memory; on first use it generates one, seals it under the
// tenant's data key and stores it (a replica that lost the race to store
// its own uses the winner's).
func (r *Registry) recipientKey(ctx context.Context, tenant string) (*tgsp.RecipientPrivateKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if k := r.recipients[tenant]; k != nil {
		return k, nil
	}
	row, err := r.st.GetRecipientKey(ctx, tenant)
	if errors.Is(err, store.ErrNotFound) {
		row, err = r.createRecipientKey(ctx, tenant)
	}
	if err != nil {
		return nil, err
	}
	pem, err := r.keys.Open(ctx, tenant, row.WrappedKey, recipientAAD(tenant))
	if err != nil {
		return nil, fmt.Errorf("unseal the recipient key of tenant %s: %w", tenant, err)
	}
	k, err := tgsp.ParseRecipientPrivateKey(pem)
	clear(pem)
	if err != nil {
		return nil, fmt.Errorf("recipient key of tenant %s: %w", tenant, err)
	}
	if k.Public().KeyID() != row.KeyID || !bytes.Equal(k.Public().Bytes(), row.PublicKey) {
		return nil, fmt.Errorf("recipient key of tenant %s: the sealed key does not match its public key", tenant)
	}
	r.recipients[tenant] = k
	return k, nil
}

func (r *Registry) createRecipientKey(ctx context.Context, tenant string) (store.RecipientKey, error) {
	k, err := tgsp.GenerateRecipient(nil)
	if err != nil {
		return store.RecipientKey{}, err
	}
	pem := k.MarshalPEM()
	sealed, err := r.keys.Seal(ctx, tenant, pem, recipientAAD(tenant))
	clear(pem)
	if err != nil {
		return store.RecipientKey{}, fmt.Errorf("seal the recipient key of tenant %s: %w", tenant, err)
	}
	row, created, err := r.st.EnsureRecipientKey(ctx, tenant, store.RecipientKey{
		KeyID: k.Public().KeyID(), PublicKey: k.Public().Bytes(), WrappedKey: sealed,
	})
	if err != nil {
		return store.RecipientKey{}, err
	}
	if created {
		r.log.Info("created the control plane's package recipient key", "tenant", tenant, "key_id", row.KeyID)
	}
	return row, nil
}
