package main

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"

	"github.com/tensorguard/tensorguardflow/controlplane"
	"github.com/tensorguard/tensorguardflow/tgsp"
	"github.com/tensorguard/tensorguardflow/trainer"
)

// trainerHost adapts the control plane to what the trainer needs of it.
type trainerHost struct{ cp *controlplane.ControlPlane }

var _ trainer.Host = trainerHost{}

func (h trainerHost) Authenticate(r *http.Request) (trainer.Principal, error) {
	tenant, keyID, canWrite, err := h.cp.AuthenticateRequest(r)
	if errors.Is(err, controlplane.ErrUnauthenticated) {
		return trainer.Principal{}, trainer.ErrUnauthenticated
	}
	return trainer.Principal{Tenant: tenant, KeyID: keyID, CanWrite: canWrite}, err
}

func (h trainerHost) Seal(ctx context.Context, tenant string, plaintext, aad []byte) ([]byte, error) {
	return h.cp.SealTenant(ctx, tenant, plaintext, aad)
}

func (h trainerHost) Open(ctx context.Context, tenant string, envelope, aad []byte) ([]byte, error) {
	return h.cp.OpenTenant(ctx, tenant, envelope, aad)
}

func (h trainerHost) Audit(ctx context.Context, tenant, actor, action, target string, details any) (string, error) {
	return h.cp.AppendAudit(ctx, tenant, actor, action, target, details)
}

func (h trainerHost) ExportKeys(ctx context.Context, tenant string) (*tgsp.SignerPrivateKey, []*tgsp.RecipientPublicKey, error) {
	return h.cp.TrainerKeys(ctx, tenant)
}

// lateHandler serves a handler set after the server was built (the
// trainer needs the control plane, which mounts it).
type lateHandler struct{ h atomic.Pointer[http.Handler] }

func (l *lateHandler) set(h http.Handler) { l.h.Store(&h) }

func (l *lateHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := l.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte(`{"error":{"code":"UNAVAILABLE","message":"the trainer is starting"}}` + "\n"))
}
