package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// runRolloutCRUD walks the rollout routes: create with defaults and with
// every field, the refusals, list and filters, one rollout with its jobs,
// and every operator transition with the states that refuse it. The
// engine does not run here: jobs are added through the store, as its
// first pass would.
func runRolloutCRUD(t *testing.T, c *client) {
	ctx := context.Background()
	admin := c.env.AdminKey
	st := c.env.Store
	var fleet api.Fleet
	c.call("POST", "/api/v1/fleets", "/api/v1/fleets", admin, api.FleetCreate{Name: "rollers"}, 201, &fleet)
	berlin := []store.Device{
		seedDevice(t, st, "acme", fleet.ID, "ek-roll-1", map[string]string{"site": "berlin", "tier": "gpu"}),
		seedDevice(t, st, "acme", fleet.ID, "ek-roll-2", map[string]string{"site": "berlin"}),
	}
	seedDevice(t, st, "acme", fleet.ID, "ek-roll-3", map[string]string{"site": "paris"})
	sum := sha256.Sum256([]byte("yolo 2.0.0"))
	pkg, err := st.CreatePackage(ctx, "acme", store.Package{ID: hex.EncodeToString(sum[:]), Name: "yolo", Version: "2.0.0",
		SignedID: strings.Repeat("ab", 32), Size: 1234, PublisherKeyID: strings.Repeat("cd", 16), Manifest: []byte(`{}`),
		ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}

	// Defaults.
	var def api.Rollout
	c.call("POST", "/api/v1/rollouts", "/api/v1/rollouts", admin, api.RolloutCreate{Package: "yolo@2.0.0", Fleet: "rollers"}, 201, &def)
	if !store.ValidID(store.PrefixRollout, def.ID) || def.State != "running" || def.FleetID != fleet.ID || def.Package.ID != pkg.ID ||
		!slices.Equal(def.Waves, []int{100}) || def.SuccessThreshold != 100 || def.FailureThreshold != 10 || def.MaxConcurrent != 0 ||
		def.DeviceTimeout != "1h" || def.Retries != 0 || len(def.Selector) != 0 || len(def.WaveStatus) != 1 {
		t.Errorf("rollout with defaults = %+v", def)
	}
	// Every field (a second later: lists are newest first).
	c.clk.Advance(time.Second)
	ten, five, one, two := 10, 5, 1, 2
	var r api.Rollout
	c.call("POST", "/api/v1/rollouts", "/api/v1/rollouts", admin, api.RolloutCreate{
		Package: pkg.ID, Fleet: fleet.ID, Selector: map[string]string{"site": "berlin"}, Waves: []int{50, 100},
		SuccessThreshold: &five, FailureThreshold: &ten, MaxConcurrent: &one, DeviceTimeout: "90s", Retries: &two,
	}, 201, &r)
	if r.DeviceTimeout != "1m30s" || r.SuccessThreshold != 5 || r.MaxConcurrent != 1 || r.Retries != 2 ||
		!reflect.DeepEqual(r.Selector, map[string]string{"site": "berlin"}) || r.Package.Name != "yolo" {
		t.Errorf("rollout = %+v", r)
	}
	for name, body := range map[string]api.RolloutCreate{
		"waves not increasing": {Package: pkg.ID, Fleet: "rollers", Waves: []int{50, 50, 100}},
		"waves not ending 100": {Package: pkg.ID, Fleet: "rollers", Waves: []int{5, 25}},
		"threshold over 100":   {Package: pkg.ID, Fleet: "rollers", SuccessThreshold: ptrTo(101)},
		"negative retries":     {Package: pkg.ID, Fleet: "rollers", Retries: ptrTo(-1)},
		"timeout too short":    {Package: pkg.ID, Fleet: "rollers", DeviceTimeout: "500ms"},
		"timeout not a time":   {Package: pkg.ID, Fleet: "rollers", DeviceTimeout: "soon"},
		"bad selector":         {Package: pkg.ID, Fleet: "rollers", Selector: map[string]string{"a b": "c"}},
		"no package":           {Fleet: "rollers"},
		"no fleet":             {Package: pkg.ID},
		"package not a ref":    {Package: "yolo", Fleet: "rollers"},
	} {
		raw := c.call("POST", "/api/v1/rollouts", "/api/v1/rollouts", admin, body, 400, nil)
		if errCode(raw) != "BAD_REQUEST" {
			t.Errorf("%s: %s", name, raw)
		}
	}
	c.wantError("POST", "/api/v1/rollouts", "/api/v1/rollouts", admin, api.RolloutCreate{Package: "yolo@9.9.9", Fleet: "rollers"}, 404, "NOT_FOUND")
	c.wantError("POST", "/api/v1/rollouts", "/api/v1/rollouts", admin, api.RolloutCreate{Package: pkg.ID, Fleet: "nope"}, 404, "NOT_FOUND")
	c.wantError("POST", "/api/v1/rollouts", "/api/v1/rollouts", admin,
		api.RolloutCreate{Package: pkg.ID, Fleet: "rollers", Selector: map[string]string{"site": "tokyo"}}, 409, "CONFLICT")

	// Lists.
	var list []api.Rollout
	c.call("GET", "/api/v1/rollouts", "/api/v1/rollouts", admin, nil, 200, &list)
	if len(list) < 2 || list[0].ID != r.ID || list[1].ID != def.ID || list[0].Jobs != nil {
		t.Fatalf("rollouts (newest first, without jobs) = %+v", list)
	}
	c.call("GET", "/api/v1/rollouts", "/api/v1/rollouts?fleet=rollers&state=running", admin, nil, 200, &list)
	if len(list) != 2 {
		t.Errorf("rollouts of fleet rollers, running = %d", len(list))
	}
	c.wantError("GET", "/api/v1/rollouts", "/api/v1/rollouts?state=sleeping", admin, nil, 400, "BAD_REQUEST")
	c.wantError("GET", "/api/v1/rollouts", "/api/v1/rollouts?fleet=nope", admin, nil, 404, "NOT_FOUND")
	c.wantError("GET", "/api/v1/rollouts", "/api/v1/rollouts?page=2", admin, nil, 400, "BAD_REQUEST")
	c.wantError("GET", "/api/v1/rollouts/{id}", "/api/v1/rollouts/rol-aaaaaaaaaaaaaaaaaaaa", admin, nil, 404, "NOT_FOUND")

	// The engine's first pass, by hand: device 1 in wave 0 succeeded,
	// device 2 in wave 1 pending.
	jobs, err := st.AddRolloutJobs(ctx, "acme", r.ID, []store.RolloutDevice{
		{DeviceID: berlin[0].ID, Kind: store.JobKindInstall, Wave: 0, State: store.JobSucceeded, Attempt: 1, PackageID: pkg.ID},
		{DeviceID: berlin[1].ID, Kind: store.JobKindInstall, Wave: 1, State: store.JobPending, PackageID: pkg.ID},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got api.Rollout
	c.call("GET", "/api/v1/rollouts/{id}", "/api/v1/rollouts/"+r.ID, admin, nil, 200, &got)
	if len(got.Jobs) != 2 || got.Jobs[0].JobID != jobs[0].JobID || got.Jobs[0].State != "succeeded" || got.Counts.Total != 2 ||
		got.Counts.Succeeded != 1 || got.Counts.Pending != 1 || got.Rollback != nil ||
		got.WaveStatus[0].State != "active" || got.WaveStatus[0].Succeeded != 1 || got.WaveStatus[1].State != "waiting" || got.WaveStatus[1].Pending != 1 {
		t.Errorf("rollout with jobs = %+v", got)
	}

	// Transitions.
	path := "/api/v1/rollouts/" + r.ID
	c.wantError("POST", "/api/v1/rollouts/{id}/resume", path+"/resume", admin, nil, 409, "CONFLICT")
	c.call("POST", "/api/v1/rollouts/{id}/pause", path+"/pause", admin, api.RolloutAction{Reason: "looking at the canary"}, 200, &got)
	if got.State != "paused" || got.Reason != store.RolloutReasonOperator || got.Detail != "looking at the canary" {
		t.Errorf("paused = %+v", got)
	}
	c.wantError("POST", "/api/v1/rollouts/{id}/pause", path+"/pause", admin, nil, 409, "CONFLICT")
	c.wantError("POST", "/api/v1/rollouts/{id}/pause", path+"/pause", admin, api.RolloutAction{Reason: strings.Repeat("x", 257)}, 400, "BAD_REQUEST")
	c.call("POST", "/api/v1/rollouts/{id}/resume", path+"/resume", admin, nil, 200, &got)
	if got.State != "running" || got.Reason != "" {
		t.Errorf("resumed = %+v", got)
	}
	c.call("POST", "/api/v1/rollouts/{id}/abort", path+"/abort", admin, nil, 200, &got)
	if got.State != "aborted" || got.FinishedAt == nil || got.Counts.Cancelled != 1 || got.Jobs[1].State != "cancelled" {
		t.Errorf("aborted = %+v", got)
	}
	c.wantError("POST", "/api/v1/rollouts/{id}/resume", path+"/resume", admin, nil, 409, "CONFLICT")
	c.wantError("POST", "/api/v1/rollouts/{id}/abort", path+"/abort", admin, nil, 409, "CONFLICT")
	c.call("POST", "/api/v1/rollouts/{id}/rollback", path+"/rollback", admin, api.RolloutAction{Reason: "bad accuracy"}, 200, &got)
	if got.State != "rolling_back" || got.FinishedAt != nil || got.Detail != "bad accuracy" {
		t.Errorf("rolling back = %+v", got)
	}
	c.wantError("POST", "/api/v1/rollouts/{id}/rollback", path+"/rollback", admin, nil, 409, "CONFLICT")
	c.wantError("POST", "/api/v1/rollouts/{id}/pause", "/api/v1/rollouts/rol-aaaaaaaaaaaaaaaaaaaa/pause", admin, nil, 404, "NOT_FOUND")

	// A package a rollout refers to cannot be deleted.
	c.wantError("DELETE", "/api/v1/packages/{package}", "/api/v1/packages/"+pkg.ID, admin, nil, 409, "CONFLICT")

	// Every change is audited.
	var actions []string
	for row, err := range st.ListAudit(ctx, "acme", 0, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if row.Target == r.ID {
			actions = append(actions, row.Action)
		}
	}
	want := []string{"rollout.create", "rollout.pause", "rollout.resume", "rollout.abort", "rollout.rollback"}
	if !slices.Equal(actions, want) {
		t.Errorf("audit of rollout %s: %v, want %v", r.ID, actions, want)
	}
}
