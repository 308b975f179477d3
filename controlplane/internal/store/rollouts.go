package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Rollouts (issue 5): a rollout deploys one registry package to the devices
// of one fleet in cumulative waves; each device gets one job per rollout
// (and a rollback job after an operator's rollback). The rollout engine
// (controlplane/internal/rollout) decides; this file stores. Job state
// changes are conditional on the state and attempt the caller read
// ([Store.SaveJob]), so the engine, report handlers on any replica and the
// operator's actions never overwrite each other's changes.

// Id prefixes of rollouts and jobs.
const (
	PrefixRollout = "rol"
	PrefixJob     = "job"
)

// RolloutState is a rollout's state.
type RolloutState string

// Rollout states. Completed, aborted and rolled back are final.
const (
	RolloutRunning     RolloutState = "running"
	RolloutPaused      RolloutState = "paused"
	RolloutCompleted   RolloutState = "completed"
	RolloutAborted     RolloutState = "aborted"
	RolloutRollingBack RolloutState = "rolling_back"
	RolloutRolledBack  RolloutState = "rolled_back"
)

// Valid reports whether s is a known state.
func (s RolloutState) Valid() bool {
	switch s {
	case RolloutRunning, RolloutPaused, RolloutCompleted, RolloutAborted, RolloutRollingBack, RolloutRolledBack:
		return true
	}
	return false
}

// Finished reports whether s is final.
func (s RolloutState) Finished() bool {
	return s == RolloutCompleted || s == RolloutAborted || s == RolloutRolledBack
}

// Reason codes of a rollout's state (Rollout.Reason).
const (
	// RolloutReasonFailureThreshold: paused because failed devices reached
	// the failure threshold.
	RolloutReasonFailureThreshold = "FAILURE_THRESHOLD"
	// RolloutReasonSuccessThreshold: paused because every device of the
	// current wave is done and too few succeeded to start the next one.
	RolloutReasonSuccessThreshold = "SUCCESS_THRESHOLD"
	// RolloutReasonOperator: paused, aborted or rolled back by an operator.
	RolloutReasonOperator = "OPERATOR"
)

// ErrRolloutState is wrapped by the operator transitions when the
// rollout's state does not allow them (it is also an ErrConflict).
var ErrRolloutState = fmt.Errorf("%w: not allowed in the rollout's state", ErrConflict)

// Rollout is one staged deployment of a package to a fleet.
type Rollout struct {
	Tenant string
	ID     string
	// The package, as the registry described it at creation.
	PackageID      string
	PackageName    string
	PackageVersion string
	PackageSize    int64
	FleetID        string
	// Selector lists labels a device must all have (empty: every device of
	// the fleet).
	Selector map[string]string
	// Waves are cumulative percentages of the eligible devices, strictly
	// increasing and ending at 100.
	Waves []int
	// SuccessThreshold is the percentage of a wave's devices that must
	// succeed before the next wave starts.
	SuccessThreshold int
	// FailureThreshold is the percentage of failed devices (of those
	// released so far) that pauses the rollout.
	FailureThreshold int
	// MaxConcurrent bounds the jobs in flight at once (0: no bound).
	MaxConcurrent int
	// DeviceTimeout is how long a device has, per attempt, to report a
	// final state.
	DeviceTimeout time.Duration
	// Retries is how many times a timed-out device is notified again.
	Retries       int
	State         RolloutState
	CurrentWave   int
	AckedFailures int
	Reason        string
	Detail        string
	CreatedBy     string
	CreatedAt     time.Time
	UpdatedAt     time.Time
	FinishedAt    time.Time
}

// Rollout limits.
const (
	MaxRolloutWaves   = 100
	MaxRolloutRetries = 100
)

// Validate checks what a new rollout must satisfy.
func (r Rollout) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case !ValidPackageID(r.PackageID):
		return bad("package id %q is not a lowercase hex SHA-256", r.PackageID)
	case r.PackageName == "" || r.PackageVersion == "" || r.PackageSize <= 0:
		return bad("a rollout needs the package's name, version and size")
	case r.FleetID == "":
		return bad("a rollout needs a fleet")
	case len(r.Waves) == 0 || len(r.Waves) > MaxRolloutWaves:
		return bad("waves: 1 to %d cumulative percentages", MaxRolloutWaves)
	case r.SuccessThreshold < 0 || r.SuccessThreshold > 100:
		return bad("success threshold %d is not a percentage", r.SuccessThreshold)
	case r.FailureThreshold < 0 || r.FailureThreshold > 100:
		return bad("failure threshold %d is not a percentage", r.FailureThreshold)
	case r.MaxConcurrent < 0:
		return bad("max concurrent %d is negative", r.MaxConcurrent)
	case r.DeviceTimeout < time.Millisecond:
		return bad("device timeout %s is below 1ms", r.DeviceTimeout)
	case r.Retries < 0 || r.Retries > MaxRolloutRetries:
		return bad("retries %d: 0 to %d", r.Retries, MaxRolloutRetries)
	case r.CreatedBy == "":
		return bad("a rollout needs its creator")
	}
	prev := 0
	for i, w := range r.Waves {
		if w <= prev || w > 100 {
			return bad("waves %v: cumulative percentages must increase strictly, from 1 to 100", r.Waves)
		}
		if i == len(r.Waves)-1 && w != 100 {
			return bad("waves %v: the last wave must be 100", r.Waves)
		}
		prev = w
	}
	return nil
}

// CreateRollout stores a new, running rollout of tenant at its first wave;
// ID is generated unless set. The fleet and the package must be tenant's
// (else ErrNotFound).
func (o *ops) CreateRollout(ctx context.Context, tenant string, r Rollout) (Rollout, error) {
	var err error
	if r.ID, err = idOrNew(PrefixRollout, r.ID); err != nil {
		return Rollout{}, err
	}
	if err := r.Validate(); err != nil {
		return Rollout{}, err
	}
	r.Selector = nonNil(r.Selector)
	selector, err := json.Marshal(r.Selector)
	if err != nil {
		return Rollout{}, err
	}
	waves, err := json.Marshal(r.Waves)
	if err != nil {
		return Rollout{}, err
	}
	r.Tenant, r.State, r.CurrentWave, r.AckedFailures = tenant, RolloutRunning, 0, 0
	r.Reason, r.Detail = "", ""
	r.CreatedAt = o.clock()
	r.UpdatedAt, r.FinishedAt = r.CreatedAt, time.Time{}
	r.DeviceTimeout = r.DeviceTimeout.Truncate(time.Millisecond)
	if _, err := o.exec(ctx, `INSERT INTO rollouts (tenant_id, id, package_id, package_name, package_version, package_size,
		fleet_id, selector, waves, success_threshold, failure_threshold, max_concurrent, device_timeout_ms, retries,
		state, current_wave, acked_failures, reason, detail, created_by, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		tenant, r.ID, r.PackageID, r.PackageName, r.PackageVersion, r.PackageSize,
		r.FleetID, string(selector), string(waves), r.SuccessThreshold, r.FailureThreshold, r.MaxConcurrent,
		r.DeviceTimeout.Milliseconds(), r.Retries, string(r.State), 0, 0, "", "", r.CreatedBy,
		micros(r.CreatedAt), micros(r.UpdatedAt)); err != nil {
		return Rollout{}, fmt.Errorf("create rollout of %s@%s: %w", r.PackageName, r.PackageVersion, mapInsertErr(err))
	}
	return r, nil
}

const rolloutCols = `tenant_id, id, package_id, package_name, package_version, package_size, fleet_id, selector, waves,
	success_threshold, failure_threshold, max_concurrent, device_timeout_ms, retries, state, current_wave, acked_failures,
	reason, detail, created_by, created_at, updated_at, finished_at`

func scanRollout(sc scanner) (Rollout, error) {
	var r Rollout
	var selector, waves string
	var timeoutMS, created, updated int64
	var finished sql.NullInt64
	if err := sc.Scan(&r.Tenant, &r.ID, &r.PackageID, &r.PackageName, &r.PackageVersion, &r.PackageSize, &r.FleetID,
		&selector, &waves, &r.SuccessThreshold, &r.FailureThreshold, &r.MaxConcurrent, &timeoutMS, &r.Retries,
		&r.State, &r.CurrentWave, &r.AckedFailures, &r.Reason, &r.Detail, &r.CreatedBy, &created, &updated, &finished); err != nil {
		return Rollout{}, mapErr(err)
	}
	if err := json.Unmarshal([]byte(selector), &r.Selector); err != nil {
		return Rollout{}, fmt.Errorf("rollout %s: stored selector: %w", r.ID, err)
	}
	if err := json.Unmarshal([]byte(waves), &r.Waves); err != nil {
		return Rollout{}, fmt.Errorf("rollout %s: stored waves: %w", r.ID, err)
	}
	r.Selector = nonNil(r.Selector)
	r.DeviceTimeout = time.Duration(timeoutMS) * time.Millisecond
	r.CreatedAt, r.UpdatedAt, r.FinishedAt = fromMicros(created), fromMicros(updated), fromNullMicros(finished)
	return r, nil
}

// GetRollout returns one rollout of tenant.
func (o *ops) GetRollout(ctx context.Context, tenant, id string) (Rollout, error) {
	r, err := scanRollout(o.queryRow(ctx, `SELECT `+rolloutCols+` FROM rollouts WHERE tenant_id = ? AND id = ?`, tenant, id))
	if err != nil {
		return Rollout{}, fmt.Errorf("rollout %s: %w", id, err)
	}
	return r, nil
}

// LockRollout is GetRollout through the writer, locking the row until the
// transaction ends on PostgreSQL (SQLite has one writer anyway). Use it
// inside [Store.WithTx] before a read-modify-write of the rollout or its
// jobs.
func (o *ops) LockRollout(ctx context.Context, tenant, id string) (Rollout, error) {
	q := `SELECT ` + rolloutCols + ` FROM rollouts WHERE tenant_id = ? AND id = ?`
	if o.d == dialectPostgres {
		q += ` FOR UPDATE`
	}
	r, err := scanRollout(o.queryRowW(ctx, q, tenant, id))
	if err != nil {
		return Rollout{}, fmt.Errorf("rollout %s: %w", id, err)
	}
	return r, nil
}

// RolloutFilter narrows ListRollouts; zero fields match everything.
type RolloutFilter struct {
	FleetID string
	State   RolloutState
}

// ListRollouts returns tenant's rollouts matching f, newest first.
func (o *ops) ListRollouts(ctx context.Context, tenant string, f RolloutFilter) ([]Rollout, error) {
	q, args := `SELECT `+rolloutCols+` FROM rollouts WHERE tenant_id = ?`, []any{tenant}
	if f.FleetID != "" {
		q, args = q+` AND fleet_id = ?`, append(args, f.FleetID)
	}
	if f.State != "" {
		q, args = q+` AND state = ?`, append(args, string(f.State))
	}
	return queryAll(ctx, o, scanRollout, q+` ORDER BY created_at DESC, id`, args...)
}

// ListRolloutsInState returns the rollouts of every tenant that are in one
// of states, oldest first: the rollout engine's scan, which (like
// PruneNonces) spans tenants.
func (o *ops) ListRolloutsInState(ctx context.Context, states ...RolloutState) ([]Rollout, error) {
	if len(states) == 0 {
		return nil, nil
	}
	args := make([]any, len(states))
	for i, s := range states {
		args[i] = string(s)
	}
	return queryAll(ctx, o, scanRollout, `SELECT `+rolloutCols+` FROM rollouts WHERE state IN (`+placeholders(len(states))+
		`) ORDER BY created_at, tenant_id, id`, args...)
}

// RolloutsUsingPackage returns tenant's rollouts of package packageID,
// newest first (a package they refer to cannot be deleted).
func (o *ops) RolloutsUsingPackage(ctx context.Context, tenant, packageID string) ([]Rollout, error) {
	return queryAll(ctx, o, scanRollout, `SELECT `+rolloutCols+` FROM rollouts WHERE tenant_id = ? AND package_id = ?
		ORDER BY created_at DESC, id`, tenant, packageID)
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// RolloutProgress is what the engine changes on a rollout.
type RolloutProgress struct {
	State       RolloutState
	CurrentWave int
	Reason      string
	Detail      string
}

// SetRolloutProgress applies p to a rollout of tenant if it is still in
// state from, and returns the result; otherwise (an operator changed it
// meanwhile) ErrConflict. Entering a final state sets FinishedAt.
func (o *ops) SetRolloutProgress(ctx context.Context, tenant, id string, from RolloutState, p RolloutProgress) (Rollout, error) {
	if !p.State.Valid() || p.CurrentWave < 0 {
		return Rollout{}, fmt.Errorf("%w: rollout progress %+v", ErrInvalid, p)
	}
	now := micros(o.clock())
	var finished any
	if p.State.Finished() {
		finished = now
	}
	r, err := scanRollout(o.queryRowW(ctx, `UPDATE rollouts SET state = ?, current_wave = ?, reason = ?, detail = ?, updated_at = ?,
		finished_at = COALESCE(finished_at, ?) WHERE tenant_id = ? AND id = ? AND state = ? RETURNING `+rolloutCols,
		string(p.State), p.CurrentWave, p.Reason, p.Detail, now, finished, tenant, id, string(from)))
	if errors.Is(err, ErrNotFound) {
		return Rollout{}, fmt.Errorf("rollout %s is no longer %s: %w", id, from, ErrConflict)
	}
	if err != nil {
		return Rollout{}, fmt.Errorf("update rollout %s: %w", id, err)
	}
	return r, nil
}

// transition runs an operator's change of a rollout of tenant in one
// transaction: the rollout is locked and must be in one of from.
func (o *ops) transition(ctx context.Context, tenant, id, action string, from []RolloutState,
	fn func(o *ops, r Rollout, now int64) (Rollout, error)) (Rollout, error) {
	var out Rollout
	err := o.inTx(ctx, func(o *ops) error {
		r, err := o.LockRollout(ctx, tenant, id)
		if err != nil {
			return err
		}
		allowed := false
		for _, s := range from {
			allowed = allowed || r.State == s
		}
		if !allowed {
			return fmt.Errorf("cannot %s rollout %s, which is %s: %w", action, id, r.State, ErrRolloutState)
		}
		out, err = fn(o, r, micros(o.clock()))
		return err
	})
	if err != nil {
		return Rollout{}, err
	}
	return out, nil
}

func (o *ops) setRolloutState(ctx context.Context, r Rollout, state RolloutState, wave, acked int, reason, detail string, now int64) (Rollout, error) {
	var finished any
	if state.Finished() {
		finished = now
	}
	return scanRollout(o.queryRowW(ctx, `UPDATE rollouts SET state = ?, current_wave = ?, acked_failures = ?, reason = ?, detail = ?,
		updated_at = ?, finished_at = COALESCE(finished_at, ?) WHERE tenant_id = ? AND id = ? RETURNING `+rolloutCols,
		string(state), wave, acked, reason, detail, now, finished, r.Tenant, r.ID))
}

// PauseRollout pauses a running rollout of tenant (reason OPERATOR, detail
// the operator's words): no new device is notified until it is resumed;
// jobs in flight go on. Any other state is ErrRolloutState.
func (o *ops) PauseRollout(ctx context.Context, tenant, id, detail string) (Rollout, error) {
	return o.transition(ctx, tenant, id, "pause", []RolloutState{RolloutRunning}, func(o *ops, r Rollout, now int64) (Rollout, error) {
		return o.setRolloutState(ctx, r, RolloutPaused, r.CurrentWave, r.AckedFailures, RolloutReasonOperator, detail, now)
	})
}

// ResumeRollout resumes a paused rollout of tenant. It acknowledges the
// devices that failed so far (the failure threshold pauses again only on a
// new failure), and if every device of the current wave is done but too
// few succeeded, it moves on to the next wave: resuming is the operator's
// decision to go on. Any other state is ErrRolloutState.
func (o *ops) ResumeRollout(ctx context.Context, tenant, id string) (Rollout, error) {
	return o.transition(ctx, tenant, id, "resume", []RolloutState{RolloutPaused}, func(o *ops, r Rollout, now int64) (Rollout, error) {
		jobs, err := o.listJobs(ctx, tenant, id)
		if err != nil {
			return Rollout{}, err
		}
		waves := RolloutWaves(r, jobs)
		failed := 0
		for _, w := range waves {
			failed += w.Failed
		}
		wave := r.CurrentWave
		if wave < len(waves)-1 {
			if w := waves[wave]; w.Done() && !w.PassedThreshold(r.SuccessThreshold) {
				wave++
			}
		}
		return o.setRolloutState(ctx, r, RolloutRunning, wave, failed, "", "", now)
	})
}

// AbortRollout aborts a running or paused rollout of tenant for good: its
// install jobs not yet started (pending, notified without a report,
// skipped) are cancelled; jobs in progress finish and are recorded. Any
// other state is ErrRolloutState.
func (o *ops) AbortRollout(ctx context.Context, tenant, id, detail string) (Rollout, error) {
	return o.transition(ctx, tenant, id, "abort", []RolloutState{RolloutRunning, RolloutPaused}, func(o *ops, r Rollout, now int64) (Rollout, error) {
		if err := o.cancelUnstarted(ctx, r, "ABORTED", now); err != nil {
			return Rollout{}, err
		}
		return o.setRolloutState(ctx, r, RolloutAborted, r.CurrentWave, r.AckedFailures, RolloutReasonOperator, detail, now)
	})
}

// RollbackRollout starts rolling back a rollout of tenant that is running,
// paused, completed or aborted: install jobs not yet started are
// cancelled, and the engine gives every device whose install succeeded a
// rollback job. Any other state is ErrRolloutState.
func (o *ops) RollbackRollout(ctx context.Context, tenant, id, detail string) (Rollout, error) {
	return o.transition(ctx, tenant, id, "roll back", []RolloutState{RolloutRunning, RolloutPaused, RolloutCompleted, RolloutAborted},
		func(o *ops, r Rollout, now int64) (Rollout, error) {
			if err := o.cancelUnstarted(ctx, r, "ROLLBACK", now); err != nil {
				return Rollout{}, err
			}
			// A rolled-back rollout is finished only when its rollback is.
			if _, err := o.exec(ctx, `UPDATE rollouts SET finished_at = NULL WHERE tenant_id = ? AND id = ?`, r.Tenant, r.ID); err != nil {
				return Rollout{}, err
			}
			return o.setRolloutState(ctx, r, RolloutRollingBack, r.CurrentWave, r.AckedFailures, RolloutReasonOperator, detail, now)
		})
}

func (o *ops) cancelUnstarted(ctx context.Context, r Rollout, reason string, now int64) error {
	_, err := o.exec(ctx, `UPDATE rollout_devices SET state = ?, reason = ?, detail = '', updated_at = ?, finished_at = ?
		WHERE tenant_id = ? AND rollout_id = ? AND kind = ? AND state IN (?, ?, ?)`,
		string(JobCancelled), reason, now, now, r.Tenant, r.ID, string(JobKindInstall),
		string(JobPending), string(JobNotified), string(JobSkipped))
	if err != nil {
		return fmt.Errorf("cancel the jobs of rollout %s: %w", r.ID, err)
	}
	return nil
}

// JobKind is what a job does.
type JobKind string

// Job kinds (wire.JobInstall, wire.JobRollback).
const (
	JobKindInstall  JobKind = "install"
	JobKindRollback JobKind = "rollback"
)

// JobState is the control plane's state of one job.
type JobState string

// Job states. Pending jobs wait for their wave and a free slot; notified
// and in-progress ones are released (the device may fetch them);
// succeeded, failed, refused and timed out are done; skipped jobs wait for
// their device to be eligible again; cancelled is final.
const (
	JobPending    JobState = "pending"
	JobNotified   JobState = "notified"
	JobInProgress JobState = "in_progress"
	JobSucceeded  JobState = "succeeded"
	JobFailed     JobState = "failed"
	JobRefused    JobState = "refused"
	JobTimedOut   JobState = "timed_out"
	JobSkipped    JobState = "skipped"
	JobCancelled  JobState = "cancelled"
)

// Valid reports whether s is a known state.
func (s JobState) Valid() bool {
	switch s {
	case JobPending, JobNotified, JobInProgress, JobSucceeded, JobFailed, JobRefused, JobTimedOut, JobSkipped, JobCancelled:
		return true
	}
	return false
}

// Released reports whether the device may be working on the job.
func (s JobState) Released() bool { return s == JobNotified || s == JobInProgress }

// Done reports whether the job has its outcome.
func (s JobState) Done() bool { return s == JobSucceeded || s.Failure() }

// Failure reports whether the job's outcome counts as a failure.
func (s JobState) Failure() bool { return s == JobFailed || s == JobRefused || s == JobTimedOut }

// RolloutDevice is one job of a rollout: a device's install job, or its
// rollback job.
type RolloutDevice struct {
	Tenant    string
	RolloutID string
	DeviceID  string
	Kind      JobKind
	JobID     string
	// Wave is the index of the rollout wave the device belongs to.
	Wave int
	// Attempt counts notifications; 0 until the job is released.
	Attempt int
	State   JobState
	// Reason is a machine-readable code (a wire.JobReason* of the device's
	// report, or the control plane's: QUARANTINED, DEADLINE, …), Detail
	// its text.
	Reason string
	Detail string
	// The package the job installs (a rollback: the one to return to;
	// empty when unknown).
	PackageID      string
	PackageName    string
	PackageVersion string
	PackageSize    int64
	// ReportState is the last device report applied (a wire.Job* state).
	ReportState string
	ReportAt    time.Time
	// Previous is the package active before this job, as the device
	// reported it; Installed the one active after its last report.
	PreviousName     string
	PreviousVersion  string
	InstalledName    string
	InstalledVersion string
	CreatedAt        time.Time
	UpdatedAt        time.Time
	NotifiedAt       time.Time
	DeadlineAt       time.Time
	FinishedAt       time.Time
}

// AddRolloutJobs stores new jobs of a rollout of tenant (JobID generated
// unless set) and returns them. A device that already has a job of that
// kind in the rollout is ErrConflict; a rollout or device tenant does not
// have is ErrNotFound.
func (o *ops) AddRolloutJobs(ctx context.Context, tenant, rollout string, jobs []RolloutDevice) ([]RolloutDevice, error) {
	out := make([]RolloutDevice, 0, len(jobs))
	now := o.clock()
	for _, j := range jobs {
		var err error
		if j.JobID, err = idOrNew(PrefixJob, j.JobID); err != nil {
			return nil, err
		}
		switch {
		case j.Kind != JobKindInstall && j.Kind != JobKindRollback:
			return nil, fmt.Errorf("%w: job kind %q", ErrInvalid, j.Kind)
		case !j.State.Valid() || j.Wave < 0 || j.Attempt < 0:
			return nil, fmt.Errorf("%w: job state %q, wave %d, attempt %d", ErrInvalid, j.State, j.Wave, j.Attempt)
		}
		j.Tenant, j.RolloutID, j.CreatedAt, j.UpdatedAt = tenant, rollout, now, now
		if j.State.Done() || j.State == JobCancelled {
			j.FinishedAt = now
		}
		if _, err := o.exec(ctx, `INSERT INTO rollout_devices (tenant_id, rollout_id, device_id, kind, job_id, wave, attempt, state,
			reason, detail, package_id, package_name, package_version, package_size, previous_name, previous_version,
			created_at, updated_at, notified_at, deadline_at, finished_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			tenant, rollout, j.DeviceID, string(j.Kind), j.JobID, j.Wave, j.Attempt, string(j.State), j.Reason, j.Detail,
			j.PackageID, j.PackageName, j.PackageVersion, j.PackageSize, j.PreviousName, j.PreviousVersion,
			micros(now), micros(now), nullMicros(j.NotifiedAt), nullMicros(j.DeadlineAt), nullMicros(j.FinishedAt)); err != nil {
			return nil, fmt.Errorf("add %s job of device %s to rollout %s: %w", j.Kind, j.DeviceID, rollout, mapInsertErr(err))
		}
		out = append(out, j)
	}
	return out, nil
}

const jobCols = `tenant_id, rollout_id, device_id, kind, job_id, wave, attempt, state, reason, detail,
	package_id, package_name, package_version, package_size, report_state, report_at,
	previous_name, previous_version, installed_name, installed_version,
	created_at, updated_at, notified_at, deadline_at, finished_at`

func scanJob(sc scanner) (RolloutDevice, error) {
	var j RolloutDevice
	var reportAt, notified, deadline, finished sql.NullInt64
	var created, updated int64
	if err := sc.Scan(&j.Tenant, &j.RolloutID, &j.DeviceID, &j.Kind, &j.JobID, &j.Wave, &j.Attempt, &j.State, &j.Reason, &j.Detail,
		&j.PackageID, &j.PackageName, &j.PackageVersion, &j.PackageSize, &j.ReportState, &reportAt,
		&j.PreviousName, &j.PreviousVersion, &j.InstalledName, &j.InstalledVersion,
		&created, &updated, &notified, &deadline, &finished); err != nil {
		return RolloutDevice{}, mapErr(err)
	}
	j.ReportAt = fromNullMicros(reportAt)
	j.CreatedAt, j.UpdatedAt = fromMicros(created), fromMicros(updated)
	j.NotifiedAt, j.DeadlineAt, j.FinishedAt = fromNullMicros(notified), fromNullMicros(deadline), fromNullMicros(finished)
	return j, nil
}

// ListRolloutJobs returns every job of a rollout of tenant: install jobs
// first, by wave and then in the order they were added, then rollback
// jobs.
func (o *ops) ListRolloutJobs(ctx context.Context, tenant, rollout string) ([]RolloutDevice, error) {
	jobs, err := o.listJobs(ctx, tenant, rollout)
	if err != nil {
		return nil, fmt.Errorf("jobs of rollout %s: %w", rollout, err)
	}
	return jobs, nil
}

func (o *ops) listJobs(ctx context.Context, tenant, rollout string) ([]RolloutDevice, error) {
	// "install" sorts before "rollback".
	return queryAll(ctx, o, scanJob, `SELECT `+jobCols+` FROM rollout_devices WHERE tenant_id = ? AND rollout_id = ?
		ORDER BY kind, wave, created_at, device_id`, tenant, rollout)
}

// GetJob returns the job of tenant with this id.
func (o *ops) GetJob(ctx context.Context, tenant, jobID string) (RolloutDevice, error) {
	j, err := scanJob(o.queryRow(ctx, `SELECT `+jobCols+` FROM rollout_devices WHERE tenant_id = ? AND job_id = ?`, tenant, jobID))
	if err != nil {
		return RolloutDevice{}, fmt.Errorf("job %s: %w", jobID, err)
	}
	return j, nil
}

// ListDeviceJobs returns the jobs of one device of tenant that are in one
// of states (all states when none is given), oldest notification first.
func (o *ops) ListDeviceJobs(ctx context.Context, tenant, device string, states ...JobState) ([]RolloutDevice, error) {
	q, args := `SELECT `+jobCols+` FROM rollout_devices WHERE tenant_id = ? AND device_id = ?`, []any{tenant, device}
	if len(states) > 0 {
		q += ` AND state IN (` + placeholders(len(states)) + `)`
		for _, s := range states {
			args = append(args, string(s))
		}
	}
	return queryAll(ctx, o, scanJob, q+` ORDER BY COALESCE(notified_at, created_at), created_at, job_id`, args...)
}

// SaveJob writes the changeable fields of j (state, attempt, reason,
// detail, report, previous and installed package, notified, deadline and
// finished times) to the job j.JobID of j.Tenant — only if the stored job is
// still in state from at attempt fromAttempt, so that a change decided on
// what was read cannot overwrite one made meanwhile (by a report, the
// engine or an operator): then it is ErrConflict. Entering a done or
// cancelled state sets FinishedAt if unset.
func (o *ops) SaveJob(ctx context.Context, j RolloutDevice, from JobState, fromAttempt int) (RolloutDevice, error) {
	if !j.State.Valid() || j.Attempt < 0 {
		return RolloutDevice{}, fmt.Errorf("%w: job state %q, attempt %d", ErrInvalid, j.State, j.Attempt)
	}
	now := o.clock()
	if (j.State.Done() || j.State == JobCancelled) && j.FinishedAt.IsZero() {
		j.FinishedAt = now
	}
	out, err := scanJob(o.queryRowW(ctx, `UPDATE rollout_devices SET state = ?, attempt = ?, reason = ?, detail = ?,
		report_state = ?, report_at = ?, previous_name = ?, previous_version = ?, installed_name = ?, installed_version = ?,
		updated_at = ?, notified_at = ?, deadline_at = ?, finished_at = ?
		WHERE tenant_id = ? AND job_id = ? AND state = ? AND attempt = ? RETURNING `+jobCols,
		string(j.State), j.Attempt, j.Reason, j.Detail, j.ReportState, nullMicros(j.ReportAt),
		j.PreviousName, j.PreviousVersion, j.InstalledName, j.InstalledVersion,
		micros(now), nullMicros(j.NotifiedAt), nullMicros(j.DeadlineAt), nullMicros(j.FinishedAt),
		j.Tenant, j.JobID, string(from), fromAttempt))
	if errors.Is(err, ErrNotFound) {
		return RolloutDevice{}, fmt.Errorf("job %s is no longer %s at attempt %d: %w", j.JobID, from, fromAttempt, ErrConflict)
	}
	if err != nil {
		return RolloutDevice{}, fmt.Errorf("save job %s: %w", j.JobID, err)
	}
	return out, nil
}

// JobReportRecord is one device report of a job as received.
type JobReportRecord struct {
	JobID   string
	Attempt int
	MsgID   string
	State   string
	Reason  string
	SentAt  time.Time
}

// RecordJobReport remembers a report of a job of tenant. It returns false
// if a report with the same job, attempt and message id was recorded
// before (a duplicate delivery, to be ignored).
func (o *ops) RecordJobReport(ctx context.Context, tenant string, r JobReportRecord) (bool, error) {
	if r.MsgID == "" || r.JobID == "" || r.State == "" {
		return false, fmt.Errorf("%w: a job report needs a job id, a message id and a state", ErrInvalid)
	}
	res, err := o.exec(ctx, `INSERT INTO rollout_reports (tenant_id, job_id, attempt, msg_id, state, reason, sent_at, received_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, job_id, attempt, msg_id) DO NOTHING`,
		tenant, r.JobID, r.Attempt, r.MsgID, r.State, r.Reason, nullMicros(r.SentAt), micros(o.clock()))
	if err != nil {
		return false, fmt.Errorf("record report of job %s: %w", r.JobID, mapInsertErr(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

// CountJobReports returns how many distinct reports of a job of tenant
// were recorded.
func (o *ops) CountJobReports(ctx context.Context, tenant, jobID string) (int, error) {
	var n int
	if err := o.queryRow(ctx, `SELECT COUNT(*) FROM rollout_reports WHERE tenant_id = ? AND job_id = ?`, tenant, jobID).Scan(&n); err != nil {
		return 0, fmt.Errorf("reports of job %s: %w", jobID, err)
	}
	return n, nil
}

// WaveCount counts the install jobs of one wave of a rollout by state.
// Size counts the jobs that take part: neither skipped nor cancelled.
type WaveCount struct {
	Index     int
	Percent   int
	Size      int
	Pending   int
	InFlight  int
	Succeeded int
	Failed    int
	Skipped   int
	Cancelled int
}

// Done reports whether every job of the wave that takes part has its
// outcome.
func (w WaveCount) Done() bool { return w.Pending == 0 && w.InFlight == 0 }

// PassedThreshold reports whether at least threshold per cent of the
// wave's devices succeeded (an empty wave passes).
func (w WaveCount) PassedThreshold(threshold int) bool {
	return w.Succeeded*100 >= threshold*w.Size
}

// RolloutWaves counts r's install jobs per wave.
func RolloutWaves(r Rollout, jobs []RolloutDevice) []WaveCount {
	out := newWaveCounts(r)
	for _, j := range jobs {
		addToWave(out, j.Kind, j.Wave, j.State, 1)
	}
	return sizeWaves(out)
}

// RolloutWaveCounts is RolloutWaves from the counts of
// [Store.CountRolloutJobs] instead of the job rows.
func RolloutWaveCounts(r Rollout, counts []JobCount) []WaveCount {
	out := newWaveCounts(r)
	for _, c := range counts {
		addToWave(out, c.Kind, c.Wave, c.State, c.N)
	}
	return sizeWaves(out)
}

func newWaveCounts(r Rollout) []WaveCount {
	out := make([]WaveCount, len(r.Waves))
	for i, p := range r.Waves {
		out[i] = WaveCount{Index: i, Percent: p}
	}
	return out
}

func addToWave(out []WaveCount, kind JobKind, wave int, state JobState, n int) {
	if kind != JobKindInstall || wave < 0 || wave >= len(out) {
		return
	}
	w := &out[wave]
	switch {
	case state == JobPending:
		w.Pending += n
	case state.Released():
		w.InFlight += n
	case state == JobSucceeded:
		w.Succeeded += n
	case state.Failure():
		w.Failed += n
	case state == JobSkipped:
		w.Skipped += n
	case state == JobCancelled:
		w.Cancelled += n
	}
}

func sizeWaves(out []WaveCount) []WaveCount {
	for i := range out {
		w := &out[i]
		w.Size = w.Pending + w.InFlight + w.Succeeded + w.Failed
	}
	return out
}

// JobCount is how many jobs of a rollout have one kind, wave and state.
type JobCount struct {
	Kind  JobKind
	Wave  int
	State JobState
	N     int
}

// CountRolloutJobs counts the jobs of a rollout of tenant by kind, wave
// and state (one aggregate query, whatever the number of jobs; no row for
// a combination that has none), ordered by kind, wave and state: what a
// summary needs, without reading the jobs themselves.
func (o *ops) CountRolloutJobs(ctx context.Context, tenant, rollout string) ([]JobCount, error) {
	counts, err := queryAll(ctx, o, func(sc scanner) (JobCount, error) {
		var c JobCount
		if err := sc.Scan(&c.Kind, &c.Wave, &c.State, &c.N); err != nil {
			return JobCount{}, mapErr(err)
		}
		return c, nil
	}, `SELECT kind, wave, state, COUNT(*) FROM rollout_devices WHERE tenant_id = ? AND rollout_id = ?
		GROUP BY kind, wave, state ORDER BY kind, wave, state`, tenant, rollout)
	if err != nil {
		return nil, fmt.Errorf("count the jobs of rollout %s: %w", rollout, err)
	}
	return counts, nil
}

// RolloutCandidate is what the rollout engine needs to know of a device of
// the rollout's fleet to decide whether it gets (or keeps) a job: no keys,
// no certificate.
type RolloutCandidate struct {
	ID          string
	Status      DeviceStatus
	Labels      map[string]string
	Quarantined bool
	CreatedAt   time.Time
}

// ListRolloutCandidates returns the devices of a fleet of tenant, oldest
// enrollment first (as ListDevices orders them), with only the columns a
// rollout's eligibility depends on: the engine reads them on every pass,
// so it leaves the devices' key blobs alone.
func (o *ops) ListRolloutCandidates(ctx context.Context, tenant, fleet string) ([]RolloutCandidate, error) {
	out, err := queryAll(ctx, o, func(sc scanner) (RolloutCandidate, error) {
		var c RolloutCandidate
		var labels string
		var created int64
		var quarantined sql.NullBool
		if err := sc.Scan(&c.ID, &c.Status, &labels, &created, &quarantined); err != nil {
			return RolloutCandidate{}, mapErr(err)
		}
		if err := json.Unmarshal([]byte(labels), &c.Labels); err != nil {
			return RolloutCandidate{}, fmt.Errorf("device %s: stored labels: %w", c.ID, err)
		}
		c.Labels = nonNil(c.Labels)
		c.CreatedAt, c.Quarantined = fromMicros(created), quarantined.Bool
		return c, nil
	}, `SELECT id, status, labels, created_at,
		(SELECT a.quarantined FROM attestation_state a WHERE a.tenant_id = devices.tenant_id AND a.device_id = devices.id)
		FROM devices WHERE tenant_id = ? AND fleet_id = ? ORDER BY created_at, id`, tenant, fleet)
	if err != nil {
		return nil, fmt.Errorf("devices of fleet %s: %w", fleet, err)
	}
	return out, nil
}
