package controlplane

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/server"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// What the trainer (TG-Tinker), mounted by tg-controlplane's main, uses of
// the control plane. The types are neutral so that this package does not
// import the trainer; main adapts them to trainer.Host.

// ErrUnauthenticated is AuthenticateRequest's answer for a request without
// a valid API key.
var ErrUnauthenticated = errors.New("unauthenticated")

// TrainerDB returns the database handle the trainer keeps its job queue in
// and the backend's name ("sqlite" or "postgres").
func (cp *ControlPlane) TrainerDB() (*sql.DB, string) { return cp.store.SQLDB() }

// AuthenticateRequest checks the request's bearer API key (the same keys
// as /api/v1): the tenant, the key's id, and whether its role may change
// things (operator or admin; a viewer key reads only).
func (cp *ControlPlane) AuthenticateRequest(r *http.Request) (tenant, keyID string, canWrite bool, err error) {
	scheme, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", "", false, ErrUnauthenticated
	}
	k, err := cp.store.AuthenticateAPIKey(r.Context(), strings.TrimSpace(key))
	switch {
	case errors.Is(err, store.ErrUnauthenticated):
		return "", "", false, ErrUnauthenticated
	case err != nil:
		return "", "", false, fmt.Errorf("authenticate: %w", err)
	}
	return k.Tenant, k.ID, k.Role.AtLeast(store.RoleOperator), nil
}

// SealTenant encrypts plaintext under tenant's data key (AES-256-GCM, the
// DEK wrapped by the KEK with AES-KWP), binding aad.
func (cp *ControlPlane) SealTenant(ctx context.Context, tenant string, plaintext, aad []byte) ([]byte, error) {
	return cp.ca.Keyring().Seal(ctx, tenant, plaintext, aad)
}

// OpenTenant decrypts what SealTenant sealed, under any version of the
// tenant's data key that is still stored.
func (cp *ControlPlane) OpenTenant(ctx context.Context, tenant string, envelope, aad []byte) ([]byte, error) {
	return cp.ca.Keyring().Open(ctx, tenant, envelope, aad)
}

// AppendAudit appends an entry to tenant's audit hash chain and returns
// the chain's new head (hex SHA-256).
func (cp *ControlPlane) AppendAudit(ctx context.Context, tenant, actor, action, target string, details any) (string, error) {
	var head string
	err := cp.store.WithTx(ctx, func(tx *store.Tx) error {
		if err := server.AppendAudit(ctx, tx, cp.now(), tenant, actor, action, target, "", details); err != nil {
			return err
		}
		last, err := tx.LastAudit(ctx, tenant)
		if err != nil {
			return err
		}
		head = hex.EncodeToString(last.Hash)
		return nil
	})
	return head, err
}

// TrainerKeys returns the key the trainer signs tenant's exported packages
// with (pinned as the tenant's publisher "tg-tinker") and the recipient key
// to pack them to (the control plane's own), so an export can be pushed
// and rolled out like any package.
func (cp *ControlPlane) TrainerKeys(ctx context.Context, tenant string) (*tgsp.SignerPrivateKey, []*tgsp.RecipientPublicKey, error) {
	s, r, err := cp.registry.TrainerKeys(ctx, tenant)
	if err != nil {
		return nil, nil, err
	}
	return s, []*tgsp.RecipientPublicKey{r}, nil
}
