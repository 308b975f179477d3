package server

import (
	"errors"
	"net/http"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/registry"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// Device routes of the package registry (issue 5).
const (
	PathDevicePackage = "/api/v1/device/packages/{id}"
	PathKeyGrants     = "/api/v1/device/key-grants"
)

// maxJobIDLen bounds a job id in a key grant request.
const maxJobIDLen = 128

func (s *Server) packageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathDevicePackage, s.handleDevicePackage)
	mux.HandleFunc("POST "+PathKeyGrants, s.handleKeyGrant)
	mux.HandleFunc(PathDevicePackage, methodNotAllowed("GET, HEAD"))
	mux.HandleFunc(PathKeyGrants, methodNotAllowed("POST"))
}

// handleDevicePackage is GET /api/v1/device/packages/{id}: a package file
// of the device's tenant, with range support so an interrupted download
// resumes. The file is ciphertext; its key is a separate grant.
func (s *Server) handleDevicePackage(w http.ResponseWriter, r *http.Request) {
	dev, _, ok := s.deviceFromTLS(w, r)
	if !ok {
		return
	}
	if s.cfg.Packages == nil {
		writeError(w, r, http.StatusServiceUnavailable, wire.CodeInternal, "the package registry is not running on this server")
		return
	}
	id := r.PathValue("id")
	if !store.ValidPackageID(id) {
		writeError(w, r, http.StatusNotFound, wire.CodeNotFound, "package ids are 64 lowercase hex digits")
		return
	}
	pkg, blob, err := s.cfg.Packages.OpenBlob(r.Context(), dev.Tenant, id)
	if errors.Is(err, registry.ErrNotFound) {
		writeError(w, r, http.StatusNotFound, wire.CodeNotFound, "package "+id+" not found")
		return
	} else if err != nil {
		s.internalError(w, r, "device package download", err)
		return
	}
	defer blob.Close()
	// Device routes have no access log: say who downloads what, and from
	// where a resumed download starts (the Range header holds no secret).
	s.log.Info("package download", "tenant", dev.Tenant, "device", dev.ID, "package", id,
		"range", r.Header.Get("Range"), "request_id", RequestID(r.Context()))
	registry.ServeBlob(w, r, pkg, blob)
}

// handleKeyGrant is POST /api/v1/device/key-grants: the package's DEK
// re-wrapped to the calling device's KEM key, if the registry grants it
// (see registry.GrantKey); the grant is audited as "key.grant" in the same
// transaction as the final check. Refusals are 403 KEY_GRANT_REFUSED with
// the reason.
func (s *Server) handleKeyGrant(w http.ResponseWriter, r *http.Request) {
	dev, _, ok := s.deviceFromTLS(w, r)
	if !ok {
		return
	}
	if s.cfg.Packages == nil {
		writeError(w, r, http.StatusServiceUnavailable, wire.CodeInternal, "the package registry is not running on this server")
		return
	}
	var req wire.KeyGrantRequest
	if !decode(w, r, &req) {
		return
	}
	if req.JobID == "" || req.PackageID == "" || len(req.JobID) > maxJobIDLen {
		writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, "job_id (at most 128 bytes) and package_id are required")
		return
	}
	ctx := r.Context()
	g, err := s.cfg.Packages.GrantKey(ctx, registry.GrantRequest{Device: dev, JobID: req.JobID, PackageID: req.PackageID},
		func(tx *store.Tx, g registry.Grant) error {
			return AppendAudit(ctx, tx, s.now(), dev.Tenant, "device:"+dev.ID, "key.grant", dev.ID, RequestID(ctx), map[string]any{
				"package_id": g.Package.ID, "job_id": req.JobID, "fleet_id": g.FleetID,
				"name": g.Package.Name, "version": g.Package.Version,
			})
		})
	var refused *registry.GrantRefusedError
	switch {
	case errors.As(err, &refused):
		s.log.Info("key grant refused", "tenant", dev.Tenant, "device", dev.ID, "package", req.PackageID, "job", req.JobID,
			"reason", refused.Reason, "for_now", refused.Later, "request_id", RequestID(ctx))
		if refused.Later {
			// 503 with Retry-After: the device asks again (its attestation
			// is not current yet); 403 is final.
			w.Header().Set("Retry-After", "10")
			writeError(w, r, http.StatusServiceUnavailable, wire.CodeKeyGrantRefused, refused.Reason)
			return
		}
		writeError(w, r, http.StatusForbidden, wire.CodeKeyGrantRefused, refused.Reason)
		return
	case err != nil:
		s.internalError(w, r, "key grant", err)
		return
	}
	s.log.Info("key granted", "tenant", dev.Tenant, "device", dev.ID, "package", g.Package.ID, "job", req.JobID,
		"fleet", g.FleetID, "request_id", RequestID(ctx))
	writeJSON(w, http.StatusOK, wire.KeyGrant{Schema: wire.KeyGrantSchema, PackageID: g.Package.ID, Grant: g.Bytes})
}
