package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// TrainerPublisher is the publisher name under which a tenant's trainer
// signing key is pinned.
const TrainerPublisher = "tg-tinker"

func newTrainerKeys(st *store.Store) *sealedKeys[*tgsp.SignerPrivateKey] {
	return &sealedKeys[*tgsp.SignerPrivateKey]{
		what: "trainer signing key", table: "trainer_signing_keys", get: st.GetTrainerSigningKey, ensure: st.EnsureTrainerSigningKey,
		generate: func() ([]byte, string, []byte, error) {
			k, err := tgsp.GenerateSigner(nil)
			if err != nil {
				return nil, "", nil, err
			}
			return k.MarshalPEM(), k.Public().KeyID(), k.Public().Bytes(), nil
		},
		parse: func(pem []byte) (*tgsp.SignerPrivateKey, string, []byte, error) {
			k, err := tgsp.ParseSignerPrivateKey(pem)
			if err != nil {
				return nil, "", nil, err
			}
			return k, k.Public().KeyID(), k.Public().Bytes(), nil
		},
	}
}

// TrainerKeys returns what the trainer exports a tenant's models with: its
// signing key (created on first use, and pinned then as the tenant's
// publisher "tg-tinker", so the packages it signs can be pushed) and the
// control plane's recipient key to pack them to. An operator who removes
// that publisher stops the trainer's packages from being accepted; the
// next export pins it again.
func (r *Registry) TrainerKeys(ctx context.Context, tenant string) (*tgsp.SignerPrivateKey, *tgsp.RecipientPublicKey, error) {
	signer, err := r.trainerKeys.key(ctx, r, tenant)
	if err != nil {
		return nil, nil, err
	}
	recipient, err := r.RecipientPublicKey(ctx, tenant)
	if err != nil {
		return nil, nil, err
	}
	pub := signer.Public()
	if _, err := r.st.GetPublisherByKeyID(ctx, tenant, pub.KeyID()); errors.Is(err, store.ErrNotFound) {
		_, err = r.st.CreatePublisher(ctx, tenant, store.Publisher{Name: TrainerPublisher, KeyID: pub.KeyID(), PublicKey: pub.Bytes()})
		if err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, nil, fmt.Errorf("pin the trainer's publisher key: %w", err)
		}
		if err == nil {
			r.log.Info("pinned the trainer's signing key as a publisher", "tenant", tenant, "publisher", TrainerPublisher, "key_id", pub.KeyID())
		}
	} else if err != nil {
		return nil, nil, err
	}
	return signer, recipient, nil
}
