package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// Device routes of rollouts (issue 5).
const (
	PathDeviceJobs = "/api/v1/device/jobs"
	PathDeviceJob  = "/api/v1/device/jobs/{id}"
)

// DeviceJobs is what the job routes need from the rollout engine
// (rollout.Engine).
type DeviceJobs interface {
	// OpenJobs returns the device's jobs in flight, oldest first.
	OpenJobs(ctx context.Context, tenant, device string) ([]wire.Job, error)
	// DeviceJob returns one job of the device; cancelled reports a job an
	// operator's abort or rollback cancelled. A job that is not the
	// device's, or not released yet, is an error wrapping
	// store.ErrNotFound.
	DeviceJob(ctx context.Context, tenant, device, id string) (job wire.Job, cancelled bool, err error)
}

func (s *Server) jobRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathDeviceJobs, s.handleDeviceJobs)
	mux.HandleFunc("GET "+PathDeviceJob, s.handleDeviceJob)
	mux.HandleFunc(PathDeviceJobs, methodNotAllowed("GET, HEAD"))
	mux.HandleFunc(PathDeviceJob, methodNotAllowed("GET, HEAD"))
}

// handleDeviceJobs is GET /api/v1/device/jobs: the calling device's open
// jobs, so a device that missed a notification catches up on connect.
func (s *Server) handleDeviceJobs(w http.ResponseWriter, r *http.Request) {
	dev, _, ok := s.deviceFromTLS(w, r)
	if !ok {
		return
	}
	if s.cfg.Jobs == nil {
		writeError(w, r, http.StatusServiceUnavailable, wire.CodeInternal, "rollouts are not running on this server")
		return
	}
	jobs, err := s.cfg.Jobs.OpenJobs(r.Context(), dev.Tenant, dev.ID)
	if err != nil {
		s.internalError(w, r, "device jobs", err)
		return
	}
	writeJSON(w, http.StatusOK, jobs)
}

// handleDeviceJob is GET /api/v1/device/jobs/{id}: one job of the calling
// device; another device's is 404, a cancelled one 410 JOB_CANCELLED.
func (s *Server) handleDeviceJob(w http.ResponseWriter, r *http.Request) {
	dev, _, ok := s.deviceFromTLS(w, r)
	if !ok {
		return
	}
	if s.cfg.Jobs == nil {
		writeError(w, r, http.StatusServiceUnavailable, wire.CodeInternal, "rollouts are not running on this server")
		return
	}
	id := r.PathValue("id")
	job, cancelled, err := s.cfg.Jobs.DeviceJob(r.Context(), dev.Tenant, dev.ID, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, r, http.StatusNotFound, wire.CodeNotFound, "job "+id+" not found")
	case err != nil:
		s.internalError(w, r, "device job", err)
	case cancelled:
		writeError(w, r, http.StatusGone, wire.CodeJobCancelled, "job "+id+" was cancelled (its rollout was aborted or rolled back): do not start it")
	default:
		writeJSON(w, http.StatusOK, job)
	}
}
