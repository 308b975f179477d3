package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Rollouts (docs/rollouts.md): the objects and the routes.

// Rollout states.
const (
	RolloutRunning     = "running"
	RolloutPaused      = "paused"
	RolloutCompleted   = "completed"
	RolloutAborted     = "aborted"
	RolloutRollingBack = "rolling_back"
	RolloutRolledBack  = "rolled_back"
)

// RolloutFinished reports whether a rollout state is final.
func RolloutFinished(state string) bool {
	return state == RolloutCompleted || state == RolloutAborted || state == RolloutRolledBack
}

// RolloutCreate is the body of POST /api/v1/rollouts. Package is
// NAME@VERSION or a package id, Fleet an id or a name; nil and empty
// fields take the server's defaults (waves [100], success threshold 100,
// failure threshold 10, no concurrency bound, device timeout 1h, no
// retries).
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

// RolloutPackage names the package a rollout or job installs.
type RolloutPackage struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
	Size    int64  `json:"size"`
}

// RolloutWave counts one wave's devices by state; State is passed, active
// or waiting.
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

// RolloutJob is a device's install or rollback job.
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

// Rollout is a rollout with its waves and counts; Jobs is set by
// GetRollout and the actions.
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

// RolloutFilter narrows ListRollouts; zero fields match everything.
type RolloutFilter struct {
	Fleet string // id or name
	State string
}

// RolloutEvent is one message on tg/v1/<tenant>/rollouts/<id>/events
// (schema tg.rollout.event.v1). State and Wave are the rollout's after the
// event; the job fields are set for type "job".
type RolloutEvent struct {
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

// RolloutEventSchema is RolloutEvent's schema.
const RolloutEventSchema = "tg.rollout.event.v1"

// ListRollouts is GET /api/v1/rollouts: newest first, without jobs.
func (c *Client) ListRollouts(ctx context.Context, f RolloutFilter) ([]Rollout, error) {
	q := url.Values{}
	if f.Fleet != "" {
		q.Set("fleet", f.Fleet)
	}
	if f.State != "" {
		q.Set("state", f.State)
	}
	var out []Rollout
	err := c.do(ctx, http.MethodGet, "/api/v1/rollouts", q, nil, &out)
	return out, err
}

// CreateRollout is POST /api/v1/rollouts.
func (c *Client) CreateRollout(ctx context.Context, in RolloutCreate) (Rollout, error) {
	var out Rollout
	err := c.do(ctx, http.MethodPost, "/api/v1/rollouts", nil, in, &out)
	return out, err
}

// GetRollout is GET /api/v1/rollouts/{id}: the rollout with every job.
func (c *Client) GetRollout(ctx context.Context, id string) (Rollout, error) {
	var out Rollout
	err := c.do(ctx, http.MethodGet, "/api/v1/rollouts/"+seg(id), nil, nil, &out)
	return out, err
}

// rolloutAction posts to /api/v1/rollouts/{id}/<action> with an optional
// reason.
func (c *Client) rolloutAction(ctx context.Context, id, action, reason string) (Rollout, error) {
	var in any
	if reason != "" {
		in = struct {
			Reason string `json:"reason"`
		}{reason}
	}
	var out Rollout
	err := c.do(ctx, http.MethodPost, "/api/v1/rollouts/"+seg(id)+"/"+action, nil, in, &out)
	return out, err
}

// PauseRollout is POST /api/v1/rollouts/{id}/pause.
func (c *Client) PauseRollout(ctx context.Context, id, reason string) (Rollout, error) {
	return c.rolloutAction(ctx, id, "pause", reason)
}

// ResumeRollout is POST /api/v1/rollouts/{id}/resume.
func (c *Client) ResumeRollout(ctx context.Context, id string) (Rollout, error) {
	return c.rolloutAction(ctx, id, "resume", "")
}

// AbortRollout is POST /api/v1/rollouts/{id}/abort.
func (c *Client) AbortRollout(ctx context.Context, id, reason string) (Rollout, error) {
	return c.rolloutAction(ctx, id, "abort", reason)
}

// RollbackRollout is POST /api/v1/rollouts/{id}/rollback.
func (c *Client) RollbackRollout(ctx context.Context, id, reason string) (Rollout, error) {
	return c.rolloutAction(ctx, id, "rollback", reason)
}
