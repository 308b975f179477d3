package server

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/policy"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/policybundle"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// PolicyKeys gives the tenant's policy verification key, or an error
// wrapping policy.ErrNoKey before the tenant's first push;
// *policy.Keys implements it.
type PolicyKeys interface {
	VerificationKey(ctx context.Context, tenant string) (policybundle.VerificationKey, error)
}

var _ PolicyKeys = (*policy.Keys)(nil)

// policyRoutes registers the device policy routes (docs/policy.md).
func (s *Server) policyRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+wire.PathDevicePolicy, s.handleDevicePolicy)
	mux.HandleFunc("GET "+wire.PathDevicePolicyKey, s.handleDevicePolicyKey)
	mux.HandleFunc(wire.PathDevicePolicy, methodNotAllowed("GET, HEAD"))
	mux.HandleFunc(wire.PathDevicePolicyKey, methodNotAllowed("GET, HEAD"))
}

// handleDevicePolicy answers the newest signed bundle of the calling
// device's fleet. The bundle carries its own authority (the signature); the
// headers only save the device a download it already has.
func (s *Server) handleDevicePolicy(w http.ResponseWriter, r *http.Request) {
	dev, _, ok := s.deviceFromTLS(w, r)
	if !ok {
		return
	}
	b, err := s.cfg.Store.LatestPolicyBundle(r.Context(), dev.Tenant, dev.FleetID, true)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, r, http.StatusNotFound, wire.CodeNotFound, "the device's fleet has no policy bundle")
		return
	} else if err != nil {
		s.internalError(w, r, "device policy", err)
		return
	}
	etag := `"` + b.SHA256 + `"`
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", "no-store")
	h.Set(wire.HeaderPolicyRevision, strconv.FormatInt(b.Revision, 10))
	h.Set(wire.HeaderPolicyKeyID, b.KeyID)
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", wire.PolicyBundleContentType)
	h.Set("Content-Length", strconv.Itoa(len(b.Bundle)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b.Bundle)
	}
}

func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == etag || t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// handleDevicePolicyKey answers the tenant's policy verification key,
// which the agent pins on first fetch.
func (s *Server) handleDevicePolicyKey(w http.ResponseWriter, r *http.Request) {
	dev, _, ok := s.deviceFromTLS(w, r)
	if !ok {
		return
	}
	if s.cfg.PolicyKeys == nil {
		writeError(w, r, http.StatusNotFound, wire.CodeNotFound, "this control plane serves no policy bundles")
		return
	}
	k, err := s.cfg.PolicyKeys.VerificationKey(r.Context(), dev.Tenant)
	if errors.Is(err, policy.ErrNoKey) {
		writeError(w, r, http.StatusNotFound, wire.CodeNotFound, "the tenant has no policy signing key yet (no policy was pushed)")
		return
	} else if err != nil {
		s.internalError(w, r, "device policy key", err)
		return
	}
	writeJSON(w, http.StatusOK, wire.PolicyKey{KeyID: k.ID, Algorithm: k.Algorithm, PublicKeyPEM: k.PublicKeyPEM})
}
