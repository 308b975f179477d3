package rollout

import (
	"bytes"
	"context"
	"encoding/json"
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

func newStatus(r store.Rollout, jobs []store.RolloutDevice) Status {
	st := Status{Schema: StatusSchema, Tenant: r.Tenant, RolloutID: r.ID, FleetID: r.FleetID, PackageID: r.PackageID,
		PackageName: r.PackageName, PackageVersion: r.PackageVersion, State: string(r.State), Reason: r.Reason, Detail: r.Detail,
		CurrentWave: r.CurrentWave, UpdatedAt: r.UpdatedAt}
	for _, w := range store.RolloutWaves(r, jobs) {
		st.Waves = append(st.Waves, WaveStatus{Index: w.Index, Percent: w.Percent, Size: w.Size, Pending: w.Pending,
			InFlight: w.InFlight, Succeeded: w.Succeeded, Failed: w.Failed, Skipped: w.Skipped, Cancelled: w.Cancelled})
	}
	for _, j := range jobs {
		if j.Kind != store.JobKindRollback {
			continue
		}
		if st.Rollback == nil {
			st.Rollback = &RollbackStatus{}
		}
		switch {
		case j.State == store.JobPending:
			st.Rollback.Pending++
		case j.State.Released():
			st.Rollback.InFlight++
		case j.State == store.JobSucceeded:
			st.Rollback.Succeeded++
		case j.State.Failure():
			st.Rollback.Failed++
		default:
			st.Rollback.Skipped++
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

// publishStatus publishes the retained status of a rollout if it differs
// from what this process published last (or force). It reads the rollout
// afresh under a lock, so concurrent callers cannot leave an older status
// retained after a newer one.
func (e *Engine) publishStatus(ctx context.Context, tenant, id string, force bool) {
	if e.Publish == nil {
		return
	}
	e.statusMu.Lock()
	defer e.statusMu.Unlock()
	r, err := e.Store.GetRollout(ctx, tenant, id)
	if err != nil {
		return
	}
	jobs, err := e.Store.ListRolloutJobs(ctx, tenant, id)
	if err != nil {
		return
	}
	st := newStatus(r, jobs)
	payload, err := json.Marshal(st)
	if err != nil {
		return
	}
	// Compare without the time, which moves on every change of the row.
	st.UpdatedAt = time.Time{}
	key, _ := json.Marshal(st)
	k := rolloutKey{tenant, id}
	if !force && bytes.Equal(e.lastStatus[k], key) {
		return
	}
	if err := e.Publish(mqttacl.RolloutStatusTopic(tenant, id), payload, true); err != nil {
		e.Log.Warn("rollout status not published", "tenant", tenant, "rollout", id, "error", err)
		return
	}
	if r.State.Finished() {
		// Forget finished rollouts (memory stays bounded); a late report
		// of one publishes its status again.
		delete(e.lastStatus, k)
	} else {
		e.lastStatus[k] = key
	}
}
