package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"unicode/utf8"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// Rollouts is what the rollout routes need from the rollout engine
// (rollout.Engine): resolving a package reference, and being told after a
// rollout changed (it publishes the event and advances the rollout).
type Rollouts interface {
	// ResolvePackageRef finds tenant's package by NAME@VERSION or id: an
	// error wrapping store.ErrNotFound when there is none, store.ErrInvalid
	// for a malformed reference.
	ResolvePackageRef(ctx context.Context, tenant, ref string) (wire.PackageRef, error)
	// RolloutChanged runs after a change committed; action is its audit
	// action ("rollout.create", "rollout.pause", …).
	RolloutChanged(tenant, rollout, action string)
}

func (a *handler) rolloutsOrUnavailable() error {
	if a.rollouts == nil {
		return errorf(http.StatusServiceUnavailable, codeInternal, "rollouts are not available on this server")
	}
	return nil
}

// validateWaves checks cumulative wave percentages: strictly increasing,
// from 1 to 100, ending at 100.
func validateWaves(waves []int) error {
	if len(waves) > store.MaxRolloutWaves {
		return badRequest("field \"waves\": at most %d waves", store.MaxRolloutWaves)
	}
	prev := 0
	for _, w := range waves {
		if w <= prev || w > 100 {
			return badRequest("field \"waves\": %v: cumulative percentages of the fleet, strictly increasing from 1 to 100 (e.g. [5,25,100])", waves)
		}
		prev = w
	}
	if prev != 100 {
		return badRequest("field \"waves\": %v: the last wave must be 100 (every device)", waves)
	}
	return nil
}

// validateSelector checks a selector's labels as device labels are
// checked.
func validateSelector(sel map[string]string) error {
	if len(sel) > maxLabels {
		return badRequest("field \"selector\": at most %d labels", maxLabels)
	}
	for k, v := range sel {
		if !labelKeyRe.MatchString(k) || !labelValueRe.MatchString(v) {
			return badRequest("field \"selector\": %q=%q is not a valid label (see the device labels' rules)", k, v)
		}
	}
	return nil
}

func intField(field string, v *int, def, lo, hi int) (int, error) {
	if v == nil {
		return def, nil
	}
	if *v < lo || *v > hi {
		return 0, badRequest("field %q: %d is outside %d to %d", field, *v, lo, hi)
	}
	return *v, nil
}

func validateReason(s string) error {
	if utf8.RuneCountInString(s) > MaxRolloutReason || !utf8.ValidString(s) {
		return badRequest("field \"reason\": at most %d characters", MaxRolloutReason)
	}
	return nil
}

func (a *handler) createRollout(w http.ResponseWriter, r *http.Request) error {
	var req RolloutCreate
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	switch {
	case req.Package == "":
		return badRequest("field \"package\" is required: NAME@VERSION or a package id")
	case req.Fleet == "":
		return badRequest("field \"fleet\" is required: a fleet id or name")
	}
	if err := validateSelector(req.Selector); err != nil {
		return err
	}
	waves := req.Waves
	if len(waves) == 0 {
		waves = slices.Clone(DefaultRolloutWaves)
	}
	if err := validateWaves(waves); err != nil {
		return err
	}
	success, err := intField("success_threshold", req.SuccessThreshold, DefaultRolloutSuccessThreshold, 0, 100)
	if err != nil {
		return err
	}
	failure, err := intField("failure_threshold", req.FailureThreshold, DefaultRolloutFailureThreshold, 0, 100)
	if err != nil {
		return err
	}
	concurrent, err := intField("max_concurrent", req.MaxConcurrent, 0, 0, MaxRolloutConcurrent)
	if err != nil {
		return err
	}
	retries, err := intField("retries", req.Retries, 0, 0, store.MaxRolloutRetries)
	if err != nil {
		return err
	}
	timeout := DefaultRolloutDeviceTimeout
	if req.DeviceTimeout != "" {
		if timeout, err = durationField("device_timeout", req.DeviceTimeout, MinRolloutDeviceTimeout, MaxRolloutDeviceTimeout); err != nil {
			return err
		}
	}
	if err := a.rolloutsOrUnavailable(); err != nil {
		return err
	}
	p, err := caller(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	pkg, err := a.rollouts.ResolvePackageRef(ctx, p.Tenant, req.Package)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errorf(http.StatusNotFound, codeNotFound, "package %q is not in the registry", req.Package)
	case errors.Is(err, store.ErrInvalid):
		return badRequest("field \"package\": %q: want NAME@VERSION or a package id", req.Package)
	case err != nil:
		return err
	}
	var out store.Rollout
	err = a.mutate(r, "rollout.create", func(tx *store.Tx, p principal) (change, error) {
		f, err := resolveFleet(ctx, tx, p.Tenant, req.Fleet)
		if err != nil {
			return change{}, err
		}
		devs, err := tx.ListDevices(ctx, p.Tenant, store.DeviceFilter{FleetID: f.ID, Status: store.DeviceEnrolled})
		if err != nil {
			return change{}, err
		}
		if !slices.ContainsFunc(devs, func(d store.Device) bool { return hasLabels(d.Labels, req.Selector) }) {
			return change{}, errorf(http.StatusConflict, codeConflict, "no enrolled device of fleet %s matches the selector: nothing to roll out to", f.Name)
		}
		out, err = tx.CreateRollout(ctx, p.Tenant, store.Rollout{
			PackageID: pkg.ID, PackageName: pkg.Name, PackageVersion: pkg.Version, PackageSize: pkg.Size, FleetID: f.ID,
			Selector: req.Selector, Waves: waves, SuccessThreshold: success, FailureThreshold: failure, MaxConcurrent: concurrent,
			DeviceTimeout: timeout, Retries: retries, CreatedBy: p.OperatorID,
		})
		if err != nil {
			return change{}, err
		}
		return change{target: out.ID, details: map[string]any{
			"package_id": pkg.ID, "package": pkg.Name + "@" + pkg.Version, "fleet_id": f.ID, "selector": out.Selector,
			"waves": waves, "success_threshold": success, "failure_threshold": failure, "max_concurrent": concurrent,
			"device_timeout": FormatDuration(timeout), "retries": retries,
		}}, nil
	})
	if err != nil {
		return err
	}
	a.rollouts.RolloutChanged(p.Tenant, out.ID, "rollout.create")
	writeJSON(w, http.StatusCreated, NewRollout(out, nil, true))
	return nil
}

func hasLabels(labels, selector map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

func (a *handler) listRollouts(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if err := checkQuery(q, "fleet", "state"); err != nil {
		return err
	}
	var f store.RolloutFilter
	if s, err := singleQuery(q, "fleet"); err != nil {
		return err
	} else if s != "" {
		fl, err := resolveFleet(r.Context(), a.store, p.Tenant, s)
		if err != nil {
			return err
		}
		f.FleetID = fl.ID
	}
	if s, err := singleQuery(q, "state"); err != nil {
		return err
	} else if s != "" {
		if !store.RolloutState(s).Valid() {
			return badRequest("query parameter \"state\": %q is not running, paused, completed, aborted, rolling_back or rolled_back", s)
		}
		f.State = store.RolloutState(s)
	}
	rs, err := a.store.ListRollouts(r.Context(), p.Tenant, f)
	if err != nil {
		return err
	}
	out := make([]Rollout, 0, len(rs))
	for _, ro := range rs {
		jobs, err := a.store.ListRolloutJobs(r.Context(), p.Tenant, ro.ID)
		if err != nil {
			return err
		}
		out = append(out, NewRollout(ro, jobs, false))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// rolloutView reads a rollout of the caller's tenant with its jobs.
func (a *handler) rolloutView(ctx context.Context, tenant, id string) (Rollout, error) {
	ro, err := a.store.GetRollout(ctx, tenant, id)
	if err != nil {
		return Rollout{}, err
	}
	jobs, err := a.store.ListRolloutJobs(ctx, tenant, id)
	if err != nil {
		return Rollout{}, err
	}
	return NewRollout(ro, jobs, true), nil
}

func (a *handler) getRollout(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	v, err := a.rolloutView(r.Context(), p.Tenant, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// rolloutAction is one operator transition of a rollout: from the states
// it may start in, the store call that makes it, and its words.
type rolloutAction struct {
	action string // audit action
	verb   string // for messages: "paused"
	from   []store.RolloutState
	run    func(ctx context.Context, tx *store.Tx, tenant, id, reason string) (store.Rollout, error)
	body   bool // takes {"reason"}
}

var (
	pauseAction = rolloutAction{"rollout.pause", "paused", []store.RolloutState{store.RolloutRunning},
		func(ctx context.Context, tx *store.Tx, tenant, id, reason string) (store.Rollout, error) {
			return tx.PauseRollout(ctx, tenant, id, reason)
		}, true}
	resumeAction = rolloutAction{"rollout.resume", "resumed", []store.RolloutState{store.RolloutPaused},
		func(ctx context.Context, tx *store.Tx, tenant, id, _ string) (store.Rollout, error) {
			return tx.ResumeRollout(ctx, tenant, id)
		}, false}
	abortAction = rolloutAction{"rollout.abort", "aborted", []store.RolloutState{store.RolloutRunning, store.RolloutPaused},
		func(ctx context.Context, tx *store.Tx, tenant, id, reason string) (store.Rollout, error) {
			return tx.AbortRollout(ctx, tenant, id, reason)
		}, true}
	rollbackAction = rolloutAction{"rollout.rollback", "rolled back",
		[]store.RolloutState{store.RolloutRunning, store.RolloutPaused, store.RolloutCompleted, store.RolloutAborted},
		func(ctx context.Context, tx *store.Tx, tenant, id, reason string) (store.Rollout, error) {
			return tx.RollbackRollout(ctx, tenant, id, reason)
		}, true}
)

func (a *handler) pauseRollout(w http.ResponseWriter, r *http.Request) error {
	return a.transitionRollout(w, r, pauseAction)
}

func (a *handler) resumeRollout(w http.ResponseWriter, r *http.Request) error {
	return a.transitionRollout(w, r, resumeAction)
}

func (a *handler) abortRollout(w http.ResponseWriter, r *http.Request) error {
	return a.transitionRollout(w, r, abortAction)
}

func (a *handler) rollbackRollout(w http.ResponseWriter, r *http.Request) error {
	return a.transitionRollout(w, r, rollbackAction)
}

func (a *handler) transitionRollout(w http.ResponseWriter, r *http.Request, act rolloutAction) error {
	var req RolloutAction
	if act.body {
		if err := decodeOptionalBody(r, &req); err != nil {
			return err
		}
		if err := validateReason(req.Reason); err != nil {
			return err
		}
	}
	if err := a.rolloutsOrUnavailable(); err != nil {
		return err
	}
	ctx := r.Context()
	id := r.PathValue("id")
	var tenant string
	err := a.mutate(r, act.action, func(tx *store.Tx, p principal) (change, error) {
		tenant = p.Tenant
		cur, err := tx.GetRollout(ctx, p.Tenant, id)
		if err != nil {
			return change{}, err
		}
		if !slices.Contains(act.from, cur.State) {
			return change{}, errorf(http.StatusConflict, codeConflict, "rollout %s is %s: it cannot be %s", id, cur.State, act.verb)
		}
		next, err := act.run(ctx, tx, p.Tenant, id, req.Reason)
		if errors.Is(err, store.ErrRolloutState) {
			return change{}, errorf(http.StatusConflict, codeConflict, "rollout %s changed meanwhile: it cannot be %s now", id, act.verb)
		}
		if err != nil {
			return change{}, err
		}
		details := map[string]any{"from": cur.State, "to": next.State, "wave": next.CurrentWave}
		if req.Reason != "" {
			details["reason"] = req.Reason
		}
		return change{target: id, details: details}, nil
	})
	if err != nil {
		return err
	}
	a.rollouts.RolloutChanged(tenant, id, act.action)
	v, err := a.rolloutView(ctx, tenant, id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}
