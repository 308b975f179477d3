package api

import (
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// Rollout defaults and limits (docs/rollouts.md).
const (
	DefaultRolloutSuccessThreshold = 100
	DefaultRolloutFailureThreshold = 10
	DefaultRolloutDeviceTimeout    = time.Hour
	MinRolloutDeviceTimeout        = time.Second
	MaxRolloutDeviceTimeout        = 7 * 24 * time.Hour
	MaxRolloutConcurrent           = 100000
	MaxRolloutReason               = 256
)

// DefaultRolloutWaves is the waves of a rollout that names none: every
// device at once (bounded by max_concurrent).
var DefaultRolloutWaves = []int{100}

// RolloutCreate is the body of POST /api/v1/rollouts. Package is
// NAME@VERSION or a package id; Fleet an id or a name. Absent fields take
// the defaults above.
type RolloutCreate struct {
	Package          string            `json:"package"`
	Fleet            string            `json:"fleet"`
	Selector         map[string]string `json:"selector,omitempty"`
	Waves            []int             `json:"waves,omitempty"`
	SuccessThreshold *int              `json:"success_threshold,omitempty"`
	FailureThreshold *int              `json:"failure_threshold,omitempty"`
	MaxConcurrent    *int              `json:"max_concurrent,omitempty"`
	DeviceTimeout    string            `json:"device_timeout,omitempty"`
	Retries          *int              `json:"retries,omitempty"`
}

// RolloutAction is the optional body of POST /api/v1/rollouts/{id}/pause,
// …/abort and …/rollback: the operator's reason, recorded as the
// rollout's detail and in the audit entry.
type RolloutAction struct {
	Reason string `json:"reason,omitempty"`
}

// RolloutPackage names the package a rollout or job installs.
type RolloutPackage struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
	Size    int64  `json:"size"`
}

// RolloutWave counts one wave's devices by state. State is "passed" (an
// earlier wave), "active" (the current one) or "waiting".
type RolloutWave struct {
	Index     int    `json:"index"`
	Percent   int    `json:"percent"`
	State     string `json:"state"`
	Size      int    `json:"size"`
	Pending   int    `json:"pending"`
	InFlight  int    `json:"in_flight"`
	Succeeded int    `json:"succeeded"`
	Failed    int    `json:"failed"`
	Skipped   int    `json:"skipped"`
	Cancelled int    `json:"cancelled"`
}

// RolloutCounts counts jobs by state.
type RolloutCounts struct {
	Total     int `json:"total"`
	Pending   int `json:"pending"`
	InFlight  int `json:"in_flight"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Skipped   int `json:"skipped"`
	Cancelled int `json:"cancelled"`
}

func (c *RolloutCounts) add(s store.JobState) {
	c.Total++
	switch {
	case s == store.JobPending:
		c.Pending++
	case s.Released():
		c.InFlight++
	case s == store.JobSucceeded:
		c.Succeeded++
	case s.Failure():
		c.Failed++
	case s == store.JobSkipped:
		c.Skipped++
	case s == store.JobCancelled:
		c.Cancelled++
	}
}

// RolloutJob is one job of a rollout: a device's install job or its
// rollback job.
type RolloutJob struct {
	DeviceID         string         `json:"device_id"`
	JobID            string         `json:"job_id"`
	Kind             string         `json:"kind"`
	Wave             int            `json:"wave"`
	Attempt          int            `json:"attempt"`
	State            string         `json:"state"`
	Reason           string         `json:"reason"`
	Detail           string         `json:"detail"`
	ReportState      string         `json:"report_state"`
	Package          RolloutPackage `json:"package"`
	PreviousName     string         `json:"previous_name"`
	PreviousVersion  string         `json:"previous_version"`
	InstalledName    string         `json:"installed_name"`
	InstalledVersion string         `json:"installed_version"`
	NotifiedAt       *time.Time     `json:"notified_at"`
	DeadlineAt       *time.Time     `json:"deadline_at"`
	ReportAt         *time.Time     `json:"report_at"`
	FinishedAt       *time.Time     `json:"finished_at"`
	UpdatedAt        time.Time      `json:"updated_at"`
}

// Rollout is a rollout with its waves and counts; GET /api/v1/rollouts/{id}
// and the answers of its actions add every job.
type Rollout struct {
	ID               string            `json:"id"`
	FleetID          string            `json:"fleet_id"`
	Package          RolloutPackage    `json:"package"`
	Selector         map[string]string `json:"selector"`
	Waves            []int             `json:"waves"`
	SuccessThreshold int               `json:"success_threshold"`
	FailureThreshold int               `json:"failure_threshold"`
	MaxConcurrent    int               `json:"max_concurrent"`
	DeviceTimeout    string            `json:"device_timeout"`
	Retries          int               `json:"retries"`
	State            string            `json:"state"`
	Reason           string            `json:"reason"`
	Detail           string            `json:"detail"`
	CurrentWave      int               `json:"current_wave"`
	AckedFailures    int               `json:"acked_failures"`
	WaveStatus       []RolloutWave     `json:"wave_status"`
	Counts           RolloutCounts     `json:"counts"`
	Rollback         *RolloutCounts    `json:"rollback"`
	CreatedBy        string            `json:"created_by"`
	CreatedAt        time.Time         `json:"created_at"`
	UpdatedAt        time.Time         `json:"updated_at"`
	FinishedAt       *time.Time        `json:"finished_at"`
	Jobs             []RolloutJob      `json:"jobs,omitempty"`
}

// NewRollout renders a stored rollout and its jobs; withJobs lists them.
func NewRollout(r store.Rollout, jobs []store.RolloutDevice, withJobs bool) Rollout {
	out := Rollout{
		ID: r.ID, FleetID: r.FleetID, Selector: r.Selector, Waves: r.Waves,
		Package:          RolloutPackage{ID: r.PackageID, Name: r.PackageName, Version: r.PackageVersion, Size: r.PackageSize},
		SuccessThreshold: r.SuccessThreshold, FailureThreshold: r.FailureThreshold, MaxConcurrent: r.MaxConcurrent,
		DeviceTimeout: FormatDuration(r.DeviceTimeout), Retries: r.Retries, State: string(r.State), Reason: r.Reason, Detail: r.Detail,
		CurrentWave: r.CurrentWave, AckedFailures: r.AckedFailures, WaveStatus: []RolloutWave{},
		CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, FinishedAt: optTime(r.FinishedAt),
	}
	if out.Selector == nil {
		out.Selector = map[string]string{}
	}
	for _, w := range store.RolloutWaves(r, jobs) {
		state := "waiting"
		switch {
		case w.Index < r.CurrentWave || r.State == store.RolloutCompleted:
			state = "passed"
		case w.Index == r.CurrentWave:
			state = "active"
		}
		out.WaveStatus = append(out.WaveStatus, RolloutWave{Index: w.Index, Percent: w.Percent, State: state, Size: w.Size,
			Pending: w.Pending, InFlight: w.InFlight, Succeeded: w.Succeeded, Failed: w.Failed, Skipped: w.Skipped, Cancelled: w.Cancelled})
	}
	if withJobs {
		out.Jobs = []RolloutJob{}
	}
	for _, j := range jobs {
		if j.Kind == store.JobKindRollback {
			if out.Rollback == nil {
				out.Rollback = &RolloutCounts{}
			}
			out.Rollback.add(j.State)
		} else {
			out.Counts.add(j.State)
		}
		if withJobs {
			out.Jobs = append(out.Jobs, RolloutJob{
				DeviceID: j.DeviceID, JobID: j.JobID, Kind: string(j.Kind), Wave: j.Wave, Attempt: j.Attempt, State: string(j.State),
				Reason: j.Reason, Detail: j.Detail, ReportState: j.ReportState,
				Package:      RolloutPackage{ID: j.PackageID, Name: j.PackageName, Version: j.PackageVersion, Size: j.PackageSize},
				PreviousName: j.PreviousName, PreviousVersion: j.PreviousVersion, InstalledName: j.InstalledName, InstalledVersion: j.InstalledVersion,
				NotifiedAt: optTime(j.NotifiedAt), DeadlineAt: optTime(j.DeadlineAt), ReportAt: optTime(j.ReportAt),
				FinishedAt: optTime(j.FinishedAt), UpdatedAt: j.UpdatedAt,
			})
		}
	}
	return out
}
