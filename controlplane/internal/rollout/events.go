package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
)

// Schemas of what the engine publishes for watchers.
const (
	EventSchema  = "tg.rollout.event.v1"
	StatusSchema = "tg.rollout.status.v1"
)

// Event types.
const (
	EventCreated         = "created"          // an operator created the rollout
	EventWaveStarted     = "wave_started"     // the previous wave met its success threshold
	EventJob             = "job"              // a job changed state (JobState)
	EventPaused          = "paused"           // by an operator or a threshold (Reason)
	EventResumed         = "resumed"          // by an operator
	EventAborted         = "aborted"          // by an operator
	EventCompleted       = "completed"        // every eligible device is done
	EventRollbackStarted = "rollback_started" // by an operator
	EventRolledBack      = "rolled_back"      // every rollback job is done
)

// Event is one JSON message on tg/v1/<tenant>/rollouts/<id>/events (QoS 1,
// not retained). State and Wave are the rollout's after the event; the
// job fields are set for EventJob.
type Event struct {
	Schema    string    `json:"schema"`
	Tenant    string    `json:"tenant"`
	RolloutID string    `json:"rollout_id"`
	Type      string    `json:"type"`
	State     string    `json:"state"`
	Wave      int       `json:"wave"`
	Device    string    `json:"device,omitempty"`
	JobID     string    `json:"job_id,omitempty"`
	Kind      string    `json:"kind,omitempty"`
	JobState  string    `json:"job_state,omitempty"`
	Attempt   int       `json:"attempt,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Detail    string    `json:"detail,omitempty"`
	At        time.Time `json:"at"`
}

// Status is the retained summary on tg/v1/<tenant>/rollouts/<id>/status,
// published whenever it changes: what a watcher that subscribes late
// needs to draw the rollout.
type Status struct {
	Schema         string          `json:"schema"`
	Tenant         string          `json:"tenant"`
	RolloutID      string          `json:"rollout_id"`
	FleetID        string          `json:"fleet_id"`
	PackageID      string          `json:"package_id"`
	PackageName    string          `json:"package_name"`
	PackageVersion string          `json:"package_version"`
	State          string          `json:"state"`
	Reason         string          `json:"reason,omitempty"`
	Detail         string          `json:"detail,omitempty"`
	CurrentWave    int             `json:"current_wave"`
	Waves          []WaveStatus    `json:"waves"`
	Rollback       *RollbackStatus `json:"rollback,omitempty"`
	UpdatedAt      time.Time       `json:"updated_at"`
}

// WaveStatus counts one wave's install jobs.
type WaveStatus struct {
	Index     int `json:"index"`
	Percent   int `json:"percent"`
	Size      int `json:"size"`
	Pending   int `json:"pending"`
	InFlight  int `json:"in_flight"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Skipped   int `json:"skipped"`
	Cancelled int `json:"cancelled"`
}

// RollbackStatus counts the rollback jobs.
type RollbackStatus struct {
	Pending   int `json:"pending"`
	InFlight  int `json:"in_flight"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Skipped   int `json:"skipped"`
}

// newStatus is r's status from the counts of its jobs
// (store.CountRolloutJobs).
func newStatus(r store.Rollout, counts []store.JobCount) Status {
	st := Status{Schema: StatusSchema, Tenant: r.Tenant, RolloutID: r.ID, FleetID: r.FleetID, PackageID: r.PackageID,
		PackageName: r.PackageName, PackageVersion: r.PackageVersion, State: string(r.State), Reason: r.Reason, Detail: r.Detail,
		CurrentWave: r.CurrentWave, UpdatedAt: r.UpdatedAt}
	for _, w := range store.RolloutWaveCounts(r, counts) {
		st.Waves = append(st.Waves, WaveStatus{Index: w.Index, Percent: w.Percent, Size: w.Size, Pending: w.Pending,
			InFlight: w.InFlight, Succeeded: w.Succeeded, Failed: w.Failed, Skipped: w.Skipped, Cancelled: w.Cancelled})
	}
	for _, c := range counts {
		if c.Kind != store.JobKindRollback || c.N <= 0 {
			continue
		}
		if st.Rollback == nil {
			st.Rollback = &RollbackStatus{}
		}
		switch {
		case c.State == store.JobPending:
			st.Rollback.Pending += c.N
		case c.State.Released():
			st.Rollback.InFlight += c.N
		case c.State == store.JobSucceeded:
			st.Rollback.Succeeded += c.N
		case c.State.Failure():
			st.Rollback.Failed += c.N
		default:
			st.Rollback.Skipped += c.N
		}
	}
	return st
}

// publishEvents publishes evs, logging what fails (events are for
// watchers: the database has the truth).
func (e *Engine) publishEvents(evs []Event) {
	if e.Publish == nil {
		return
	}
	for _, ev := range evs {
		ev.Schema = EventSchema
		payload, err := json.Marshal(ev)
		if err != nil {
			continue
		}
		if err := e.Publish(mqttacl.RolloutEventsTopic(ev.Tenant, ev.RolloutID), payload, false); err != nil {
			e.Log.Warn("rollout event not published", "tenant", ev.Tenant, "rollout", ev.RolloutID, "type", ev.Type, "error", err)
		}
	}
}

// statusQueue is the set of rollouts whose status changed since it was
// last published, and when each one's status was published last: job
// changes (a report, a pass that released or timed out jobs) publish a
// rollout's status at most every Deps.StatusInterval, the latest state
// each time, so a 1,000-device rollout does not publish (and count) its
// status a thousand times over.
type statusQueue struct {
	mu    sync.Mutex
	dirty map[rolloutKey]bool
	last  map[rolloutKey]time.Time // last publication of a rollout not finished
	wake  chan struct{}
}

func newStatusQueue() statusQueue {
	return statusQueue{dirty: map[rolloutKey]bool{}, last: map[rolloutKey]time.Time{}, wake: make(chan struct{}, 1)}
}

// statusChanged asks for the status of a rollout to be published: at
// once if it was not published in the last StatusInterval, else when that
// has passed (publishStatuses). It never blocks.
func (e *Engine) statusChanged(tenant, id string) {
	if e.Publish == nil {
		return
	}
	q := &e.statuses
	q.mu.Lock()
	q.dirty[rolloutKey{tenant, id}] = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// publishStatuses publishes the statuses statusChanged asked for, each at
// most every StatusInterval, until ctx ends; then it publishes those still
// waiting, so the last change is never lost.
func (e *Engine) publishStatuses(ctx context.Context) {
	sq := &e.statuses
	for {
		var due <-chan time.Time
		if wait := e.flushStatuses(ctx, false); wait > 0 {
			due = time.After(wait)
		}
		select {
		case <-ctx.Done():
			// Best effort: a status that changed just before the shutdown
			// is still published while the broker is up.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			e.flushStatuses(fctx, true)
			cancel()
			return
		case <-sq.wake:
		case <-due:
		}
	}
}

// flushStatuses publishes every status asked for whose StatusInterval has
// passed (all of them if all), and returns how long until the next one
// is due (0: none waits).
func (e *Engine) flushStatuses(ctx context.Context, all bool) time.Duration {
	sq := &e.statuses
	now := time.Now()
	var due []rolloutKey
	var wait time.Duration
	sq.mu.Lock()
	for k := range sq.dirty {
		if d := sq.last[k].Add(e.StatusInterval).Sub(now); d > 0 && !all {
			if wait == 0 || d < wait {
				wait = d
			}
			continue
		}
		due = append(due, k)
		delete(sq.dirty, k)
	}
	sq.mu.Unlock()
	for _, k := range due {
		e.publishStatus(ctx, k.tenant, k.id, false)
	}
	return wait
}

// publishStatus publishes the retained status of a rollout now if it
// differs from what this process published last (or force), and takes it
// off the status queue. It reads the rollout afresh under a lock, so
// concurrent callers cannot leave an older status retained after a newer
// one.
func (e *Engine) publishStatus(ctx context.Context, tenant, id string, force bool) {
	if e.Publish == nil {
		return
	}
	e.statusMu.Lock()
	defer e.statusMu.Unlock()
	k := rolloutKey{tenant, id}
	sq := &e.statuses
	sq.mu.Lock()
	// Whatever changed until now is read below: a change after this
	// point asks again.
	delete(sq.dirty, k)
	sq.mu.Unlock()
	r, err := e.Store.GetRollout(ctx, tenant, id)
	if err != nil {
		return
	}
	counts, err := e.Store.CountRolloutJobs(ctx, tenant, id)
	if err != nil {
		return
	}
	st := newStatus(r, counts)
	payload, err := json.Marshal(st)
	if err != nil {
		return
	}
	// Compare without the time, which moves on every change of the row.
	st.UpdatedAt = time.Time{}
	key, _ := json.Marshal(st)
	if !force && bytes.Equal(e.lastStatus[k], key) {
		return
	}
	if err := e.Publish(mqttacl.RolloutStatusTopic(tenant, id), payload, true); err != nil {
		e.Log.Warn("rollout status not published", "tenant", tenant, "rollout", id, "error", err)
		return
	}
	sq.mu.Lock()
	if r.State.Finished() {
		// Forget finished rollouts (memory stays bounded); a late report
		// of one publishes its status again.
		delete(e.lastStatus, k)
		delete(sq.last, k)
	} else {
		e.lastStatus[k] = key
		sq.last[k] = time.Now()
	}
	sq.mu.Unlock()
}
