package rollout

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/registry"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// What devices and operators reach through the engine: the device job
// routes, the key-grant authorization and the API's hooks.

// wireJob renders a job for its device.
func wireJob(j store.RolloutDevice, publishers [][]byte) wire.Job {
	ref := wire.PackageRef{ID: j.PackageID, Name: j.PackageName, Version: j.PackageVersion, Size: j.PackageSize}
	if j.PackageID != "" {
		ref.URL = PackagePath + j.PackageID
	}
	if publishers == nil {
		publishers = [][]byte{}
	}
	kind := wire.JobInstall
	if j.Kind == store.JobKindRollback {
		kind = wire.JobRollback
	}
	return wire.Job{Schema: wire.JobSchema, ID: j.JobID, RolloutID: j.RolloutID, Kind: kind, Package: ref,
		Publishers: publishers, Attempt: j.Attempt, Deadline: j.DeadlineAt, CreatedAt: j.CreatedAt}
}

// OpenJobs returns the device's released jobs (notified or in progress),
// oldest first: GET /api/v1/device/jobs.
func (e *Engine) OpenJobs(ctx context.Context, tenant, device string) ([]wire.Job, error) {
	jobs, err := e.Store.ListDeviceJobs(ctx, tenant, device, store.JobNotified, store.JobInProgress)
	if err != nil {
		return nil, err
	}
	out := make([]wire.Job, 0, len(jobs))
	if len(jobs) == 0 {
		return out, nil
	}
	pubs, err := e.Packages.Publishers(ctx, tenant)
	if err != nil {
		return nil, err
	}
	for _, j := range jobs {
		out = append(out, wireJob(j, pubs))
	}
	return out, nil
}

// DeviceJob returns one of the device's jobs: GET
// /api/v1/device/jobs/{id}. A job of another device, or one not released
// yet, is store.ErrNotFound; a cancelled job returns cancelled true (the
// route answers 410 JOB_CANCELLED). A done job is still shown, so a
// device can tell that a retry is about a job it finished.
func (e *Engine) DeviceJob(ctx context.Context, tenant, device, id string) (wire.Job, bool, error) {
	if !store.ValidID(store.PrefixJob, id) {
		return wire.Job{}, false, fmt.Errorf("job %q: %w", id, store.ErrNotFound)
	}
	j, err := e.Store.GetJob(ctx, tenant, id)
	if err != nil {
		return wire.Job{}, false, err
	}
	if j.DeviceID != device || j.Attempt == 0 {
		return wire.Job{}, false, fmt.Errorf("job %s: %w", id, store.ErrNotFound)
	}
	if j.State == store.JobCancelled {
		return wire.Job{}, true, nil
	}
	pubs, err := e.Packages.Publishers(ctx, tenant)
	if err != nil {
		return wire.Job{}, false, err
	}
	return wireJob(j, pubs), false, nil
}

var _ registry.GrantAuthorizer = (*Engine)(nil)

// Authorize implements registry.GrantAuthorizer, the rollout half of a key
// grant (POST /api/v1/device/key-grants): device may have the key of
// package packageID for job jobID only if the job is the device's, is about
// that package and is in flight (notified or in progress), in a rollout
// that still wants it — an install job while the rollout is running or
// paused (pausing stops new releases, not the devices at work), a rollback
// job while it rolls back — and the device is enrolled, in the rollout's
// fleet and not quarantined. It returns the rollout's fleet. Refusals are
// registry.Refuse errors; the registry checks the device's attestation
// verdict and KEM key itself.
func (e *Engine) Authorize(ctx context.Context, tenant, device, jobID, packageID string) (string, error) {
	refuse := func(format string, args ...any) (string, error) {
		return "", registry.Refuse(fmt.Sprintf(format, args...))
	}
	if !store.ValidID(store.PrefixJob, jobID) {
		return refuse("no job %q", jobID)
	}
	j, err := e.Store.GetJob(ctx, tenant, jobID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && j.DeviceID != device) {
		return refuse("no job %s for this device", jobID)
	}
	if err != nil {
		return "", err
	}
	switch {
	case j.PackageID == "" || j.PackageID != packageID:
		return refuse("job %s is not about package %s", jobID, packageID)
	case !j.State.Released():
		return refuse("job %s is %s", jobID, j.State)
	}
	r, err := e.Store.GetRollout(ctx, tenant, j.RolloutID)
	if err != nil {
		return "", err
	}
	wants := r.State == store.RolloutRunning || r.State == store.RolloutPaused
	if j.Kind == store.JobKindRollback {
		wants = r.State == store.RolloutRollingBack
	}
	if !wants {
		return refuse("rollout %s is %s", r.ID, r.State)
	}
	d, err := e.Store.GetDevice(ctx, tenant, device)
	if errors.Is(err, store.ErrNotFound) {
		return refuse("unknown device")
	}
	if err != nil {
		return "", err
	}
	switch {
	case d.Status != store.DeviceEnrolled:
		return refuse("the device is revoked")
	case d.FleetID != r.FleetID:
		return refuse("the device is not in the fleet of rollout %s", r.ID)
	case d.Quarantined:
		return refuse("the device is quarantined (attestation untrusted or stale)")
	}
	return r.FleetID, nil
}

// PackageInUse implements registry.InUseFunc: the rollouts that refer to a
// package keep it from being deleted.
func PackageInUse(ctx context.Context, tx *store.Tx, tenant, packageID string) (string, error) {
	rs, err := tx.RolloutsUsingPackage(ctx, tenant, packageID)
	if err != nil || len(rs) == 0 {
		return "", err
	}
	what := fmt.Sprintf("rollout %s (%s)", rs[0].ID, rs[0].State)
	if len(rs) > 1 {
		what += fmt.Sprintf(" and %d more", len(rs)-1)
	}
	return what, nil
}

var _ registry.InUseFunc = PackageInUse

// ResolvePackageRef finds tenant's package by "NAME@VERSION" or by id (64
// hex digits): for the API's rollout creation. An unknown package wraps
// store.ErrNotFound; a malformed reference store.ErrInvalid.
func (e *Engine) ResolvePackageRef(ctx context.Context, tenant, ref string) (wire.PackageRef, error) {
	if store.ValidPackageID(ref) {
		return e.Packages.PackageByID(ctx, tenant, ref)
	}
	i := strings.LastIndexByte(ref, '@')
	if i <= 0 || i == len(ref)-1 {
		return wire.PackageRef{}, fmt.Errorf("%w: package %q: want NAME@VERSION or a package id", store.ErrInvalid, ref)
	}
	return e.Packages.ResolvePackage(ctx, tenant, ref[:i], ref[i+1:])
}

// RolloutChanged is the API's hook after it committed a change of a
// rollout (action: the audit action, "rollout.create", "rollout.pause",
// …): it publishes the event and the status, and kicks the engine.
func (e *Engine) RolloutChanged(tenant, id, action string) {
	typ := map[string]string{
		"rollout.create": EventCreated, "rollout.pause": EventPaused, "rollout.resume": EventResumed,
		"rollout.abort": EventAborted, "rollout.rollback": EventRollbackStarted,
	}[action]
	ctx := context.Background()
	if r, err := e.Store.GetRollout(ctx, tenant, id); err == nil && typ != "" {
		e.publishEvents([]Event{{Tenant: tenant, RolloutID: id, Type: typ, State: string(r.State), Wave: r.CurrentWave,
			Reason: r.Reason, Detail: r.Detail, At: r.UpdatedAt}})
	}
	e.publishStatus(ctx, tenant, id, false)
	e.Kick()
}
