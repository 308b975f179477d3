package tgctl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// TestRolloutCommands runs `tgctl rollout …` against the real API (the
// engine does not run here: the jobs a first pass would make are added
// through the store).
func TestRolloutCommands(t *testing.T) {
	t.Parallel()
	api, _ := startAPI(t)
	e := newEnv(t)
	login(t, e, api.Server.URL, api.AdminKey)
	ctx := context.Background()
	fleet, err := api.Store.CreateFleet(ctx, "acme", store.Fleet{Name: "edge"})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := api.Store.CreateDevice(ctx, "acme", store.Device{FleetID: fleet.ID, Name: "d1", TPMKind: store.TPMHardware,
		EKFingerprint: "ek-1", Labels: map[string]string{"site": "berlin", "gpu": "orin"}})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("yolo"))
	pkg, err := api.Store.CreatePackage(ctx, "acme", store.Package{ID: hex.EncodeToString(sum[:]), Name: "yolo", Version: "2.0.0",
		SignedID: strings.Repeat("ab", 32), Size: 10, PublisherKeyID: strings.Repeat("cd", 16), Manifest: []byte(`{}`), ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}

	var r client.Rollout
	mustJSON(t, mustRun(t, e, "rollout", "create", "--package", "yolo@2.0.0", "--fleet", "edge", "--selector", "site=berlin,gpu=orin",
		"--waves", "5,25,100", "--success-threshold", "95", "--failure-threshold", "0", "--max-concurrent", "3",
		"--device-timeout", "30m", "--retries", "2", "-o", "json"), &r)
	if r.Package.ID != pkg.ID || r.FleetID != fleet.ID || r.Selector["gpu"] != "orin" || len(r.Waves) != 3 || r.SuccessThreshold != 95 ||
		r.FailureThreshold != 0 || r.MaxConcurrent != 3 || r.DeviceTimeout != "30m" || r.Retries != 2 || r.State != "running" {
		t.Fatalf("created %+v", r)
	}
	// Defaults are the server's; the table names the next command.
	out := mustRun(t, e, "rollout", "create", "--package", pkg.ID, "--fleet", fleet.ID)
	if !strings.Contains(out, "100% — wave 1/1") || !strings.Contains(out, "success 100%, failure 10%") ||
		!strings.Contains(out, "tgctl rollout status rol-") {
		t.Fatalf("create table:\n%s", out)
	}
	for _, args := range [][]string{
		{"rollout", "create", "--fleet", "edge"},
		{"rollout", "create", "--package", "yolo@2.0.0"},
		{"rollout", "create", "--package", "yolo@2.0.0", "--fleet", "edge", "--waves", "x"},
		{"rollout", "status"},
	} {
		if res := run(t, e, "", args...); res.code != ExitUsage {
			t.Errorf("tgctl %s: exit %d, want %d: %s", strings.Join(args, " "), res.code, ExitUsage, res.stderr)
		}
	}
	if res := run(t, e, "", "rollout", "create", "--package", "yolo@9", "--fleet", "edge"); res.code != ExitFailure || !strings.Contains(res.stderr, "NOT_FOUND") {
		t.Errorf("unknown package: exit %d: %s", res.code, res.stderr)
	}

	if _, err := api.Store.AddRolloutJobs(ctx, "acme", r.ID, []store.RolloutDevice{{DeviceID: dev.ID, Kind: store.JobKindInstall,
		State: store.JobInProgress, Attempt: 1, ReportState: "downloading", PackageID: pkg.ID}}); err != nil {
		t.Fatal(err)
	}
	out = mustRun(t, e, "rollout", "status", r.ID)
	if !strings.Contains(out, "WAVE") || !strings.Contains(out, dev.ID) || !strings.Contains(out, "in_progress") ||
		!strings.Contains(out, "gpu=orin,site=berlin") || !strings.Contains(out, "5,25,100% — wave 1/3") {
		t.Fatalf("status:\n%s", out)
	}
	var got client.Rollout
	mustJSON(t, mustRun(t, e, "rollout", "status", r.ID, "-o", "json"), &got)
	if len(got.Jobs) != 1 || got.Jobs[0].DeviceID != dev.ID || got.Counts.InFlight != 1 {
		t.Fatalf("status -o json: %+v", got)
	}
	out = mustRun(t, e, "rollout", "list", "--fleet", "edge")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(out, "yolo@2.0.0") {
		t.Fatalf("list:\n%s", out)
	}
	var list []client.Rollout
	mustJSON(t, mustRun(t, e, "rollout", "list", "--state", "running", "-o", "json"), &list)
	if len(list) != 2 {
		t.Fatalf("list -o json: %+v", list)
	}

	mustJSON(t, mustRun(t, e, "rollout", "pause", r.ID, "--reason", "canary looks slow", "-o", "json"), &got)
	if got.State != "paused" || got.Detail != "canary looks slow" {
		t.Fatalf("pause: %+v", got)
	}
	if res := run(t, e, "", "rollout", "pause", r.ID); res.code != ExitFailure || !strings.Contains(res.stderr, "CONFLICT") {
		t.Errorf("pause twice: exit %d: %s", res.code, res.stderr)
	}
	if out := mustRun(t, e, "rollout", "resume", r.ID); !strings.Contains(out, "running") {
		t.Fatalf("resume:\n%s", out)
	}
	mustJSON(t, mustRun(t, e, "rollout", "abort", r.ID, "-o", "json"), &got)
	if got.State != "aborted" {
		t.Fatalf("abort: %+v", got)
	}
	// A finished rollout: --watch draws it once and returns.
	watched := mustRun(t, e, "rollout", "status", r.ID, "--watch", "-o", "json")
	if lines := strings.Split(strings.TrimSpace(watched), "\n"); len(lines) != 1 || !strings.Contains(lines[0], `"state":"aborted"`) {
		t.Fatalf("status --watch of a finished rollout:\n%s", watched)
	}
	mustJSON(t, mustRun(t, e, "rollout", "rollback", r.ID, "--reason", "accuracy", "-o", "json"), &got)
	if got.State != "rolling_back" {
		t.Fatalf("rollback: %+v", got)
	}
}
