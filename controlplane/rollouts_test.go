package controlplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/controlplane/controlplanetest"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/registry"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/tgctl"
	"github.com/tensorguard/tensorguardflow/internal/audit"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/testpg"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// The rollout engine in a whole control plane, with devices that take
// their notifications over mTLS MQTT, fetch their jobs over mTLS HTTPS and
// report on their jobs topics (rollouts_sim_test.go).

func intp(v int) *int { return &v }

// runTgctl runs tgctl in process against h as its admin.
func runTgctl(t *testing.T, h *controlplanetest.Harness, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	app := &tgctl.App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
		return map[string]string{"TG_BASE_URL": h.BaseURL, "TG_API_KEY": h.AdminKey, "TG_CA_HASH": h.CAHash,
			"XDG_CONFIG_HOME": t.TempDir(), "HOME": t.TempDir()}[k]
	}}
	if code := app.Main(context.Background(), args); code != 0 {
		t.Fatalf("tgctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
	}
	return out.String()
}

// TestRolloutWaves: four selected devices in waves of 25, 50 and 100 per
// cent; a wave starts only after the previous one succeeded; every
// device installs once; an unselected device gets nothing; events and the
// retained status tell an operator's MQTT credential; `tgctl rollout
// create`, `status --watch` and `list` drive and show it.
func TestRolloutWaves(t *testing.T) {
	t.Parallel()
	e := newRolloutEnv(t)
	var devs []*simDevice
	for range 4 {
		devs = append(devs, newSimDevice(t, e.h, e.fleet.ID, map[string]string{"site": "berlin"}, "yolo@1.0.0", commits))
	}
	paris := newSimDevice(t, e.h, e.fleet.ID, map[string]string{"site": "paris"}, "yolo@1.0.0", commits)

	var r client.Rollout
	if err := json.Unmarshal([]byte(runTgctl(t, e.h, "rollout", "create", "--package", "yolo@2.0.0", "--fleet", "edge",
		"--selector", "site=berlin", "--waves", "25,50,100", "--failure-threshold", "50", "--device-timeout", "30s", "-o", "json")), &r); err != nil {
		t.Fatal(err)
	}
	// --watch follows it to the end: one JSON line per change, the last
	// one completed.
	watched := runTgctl(t, e.h, "rollout", "status", r.ID, "--watch", "--interval", "200ms", "-o", "json")
	lines := strings.Split(strings.TrimSpace(watched), "\n")
	var last client.Rollout
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last.State != client.RolloutCompleted || len(lines) < 2 {
		t.Fatalf("status --watch: %v, %d lines, last %s", err, len(lines), lines[len(lines)-1])
	}
	done, err := e.c.GetRollout(context.Background(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.Counts != (client.RolloutCounts{Total: 4, Succeeded: 4}) || done.Detail != "4 succeeded, 0 failed, 0 skipped" || done.CurrentWave != 2 {
		t.Errorf("completed rollout: %+v", done)
	}
	for i, w := range done.WaveStatus {
		if want := []int{1, 1, 2}[i]; w.Size != want || w.Succeeded != want || w.State != "passed" {
			t.Errorf("wave %d: %+v, want %d devices succeeded", i, w, want)
		}
	}
	// Each device was notified once, installed once, and has 2.0.0.
	for _, d := range devs {
		j, ok := jobOf(done, d.dev.ID, "install")
		if !ok || j.State != "succeeded" || j.Attempt != 1 || j.ReportState != wire.JobCommitted ||
			j.PreviousVersion != "1.0.0" || j.InstalledVersion != "2.0.0" || len(d.notifications()) != 1 {
			t.Errorf("device %s: job %+v, %d notifications", d.dev.ID, j, len(d.notifications()))
		}
	}
	if n := paris.notifications(); len(n) != 0 || len(done.Jobs) != 4 {
		t.Errorf("unselected device notified %d times; %d jobs", len(n), len(done.Jobs))
	}

	// Events: a wave's first job is released after the wave started, and
	// a wave starts after the previous one's device succeeded.
	e.events.waitEvent(t, r.ID, "completed", 5*time.Second, func(ev client.RolloutEvent) bool { return ev.Type == "completed" })
	waveOfJob := map[string]int{}
	for _, j := range done.Jobs {
		waveOfJob[j.JobID] = j.Wave
	}
	started := map[int]int{0: -1} // wave → index of its wave_started event
	succeeded := map[int]int{}    // wave → index of its first succeeded job
	for i, ev := range e.events.of(r.ID) {
		switch {
		case ev.Type == "wave_started":
			started[ev.Wave] = i
		case ev.Type == "job" && ev.JobState == "notified":
			w := waveOfJob[ev.JobID]
			if s, ok := started[w]; !ok || s > i || ev.Wave < w {
				t.Errorf("job of wave %d released at event %d (rollout at wave %d) before the wave started (%v)", w, i, ev.Wave, started)
			}
		case ev.Type == "job" && ev.JobState == "succeeded":
			if _, ok := succeeded[waveOfJob[ev.JobID]]; !ok {
				succeeded[waveOfJob[ev.JobID]] = i
			}
		}
	}
	for w := 1; w <= 2; w++ {
		if s, ok := started[w]; !ok || s < succeeded[w-1] {
			t.Errorf("wave %d started at event %d, before wave %d had a success (event %d)", w, s, w-1, succeeded[w-1])
		}
	}
	if bad := e.events.malformed(); len(bad) != 0 {
		t.Errorf("malformed events: %v", bad)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st := e.events.lastStatus(r.ID)
		if st["state"] == "completed" && st["schema"] == "tg.rollout.status.v1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("retained status: %v", st)
		}
	}
	if out := runTgctl(t, e.h, "rollout", "list"); !strings.Contains(out, r.ID) || !strings.Contains(out, "completed") {
		t.Errorf("rollout list:\n%s", out)
	}
	if out := runTgctl(t, e.h, "rollout", "status", r.ID); !strings.Contains(out, devs[0].dev.ID) || !strings.Contains(out, "yolo@2.0.0") {
		t.Errorf("rollout status:\n%s", out)
	}
}

// TestRolloutFailureThreshold: a failure in the first wave reaches the
// failure threshold and pauses the rollout (the second wave waits); a
// resume acknowledges it and the rollout completes.
func TestRolloutFailureThreshold(t *testing.T) {
	t.Parallel()
	e := newRolloutEnv(t)
	bad := newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", failsSelfTest)
	good := newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", commits)
	later := []*simDevice{newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", commits), newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", commits)}
	ctx := context.Background()
	// A success threshold of 100 % holds the second wave until both devices
	// of the first have answered, whichever answers first (with 50 % the
	// good device's commit could start wave 2 before the failure arrives,
	// and 1 failure in 4 would not cross the threshold).
	r, err := e.c.CreateRollout(ctx, client.RolloutCreate{Package: "yolo@2.0.0", Fleet: "edge", Waves: []int{50, 100},
		SuccessThreshold: intp(100), FailureThreshold: intp(50)})
	if err != nil {
		t.Fatal(err)
	}
	paused := e.waitState(t, r.ID, client.RolloutPaused, 20*time.Second)
	j, _ := jobOf(paused, bad.dev.ID, "install")
	if paused.Reason != "FAILURE_THRESHOLD" || paused.Detail != "1 of 2 devices failed (failure threshold 50%)" || j.State != "failed" ||
		j.Reason != wire.JobReasonSelfTest || paused.CurrentWave != 0 {
		t.Fatalf("paused: %+v; the failed job %+v", paused, j)
	}
	e.events.waitEvent(t, r.ID, "paused", 5*time.Second, func(ev client.RolloutEvent) bool {
		return ev.Type == "paused" && ev.Reason == "FAILURE_THRESHOLD"
	})
	// Paused: wave 2 waits, whatever time passes.
	time.Sleep(1500 * time.Millisecond)
	for _, d := range later {
		if n := d.notifications(); len(n) != 0 {
			t.Fatalf("a device of the second wave was notified while paused: %v", n)
		}
	}
	if _, ok := jobOf(paused, good.dev.ID, "install"); !ok {
		t.Fatal("no job for the good device")
	}

	resumed, err := e.c.ResumeRollout(ctx, r.ID)
	if err != nil || resumed.AckedFailures != 1 {
		t.Fatalf("resume: %+v, %v", resumed, err)
	}
	done := e.waitState(t, r.ID, client.RolloutCompleted, 20*time.Second)
	if done.Counts != (client.RolloutCounts{Total: 4, Succeeded: 3, Failed: 1}) {
		t.Errorf("completed: %+v", done.Counts)
	}
	e.events.waitEvent(t, r.ID, "resumed", 5*time.Second, func(ev client.RolloutEvent) bool { return ev.Type == "resumed" })

	// The engine's own decisions are audited (actor "rollouts"), the
	// operator's as the API key's.
	var got []string
	err = e.c.WalkAudit(ctx, 0, 0, func(en audit.Entry) error {
		if en.Target == r.ID {
			got = append(got, en.Actor+" "+en.Action)
			if en.Action == "rollout.pause" && !strings.Contains(string(en.Details), `"reason":"FAILURE_THRESHOLD"`) {
				t.Errorf("pause audited with %s", en.Details)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || !strings.HasSuffix(got[0], " rollout.create") || got[1] != "rollouts rollout.pause" ||
		!strings.HasSuffix(got[2], " rollout.resume") || got[3] != "rollouts rollout.complete" {
		t.Errorf("audit of the rollout: %v", got)
	}
}

// TestRolloutAbort: abort cancels the jobs not started — a device that
// fetches one gets 410 JOB_CANCELLED — and stops key grants, while a job
// in progress finishes and is recorded.
func TestRolloutAbort(t *testing.T) {
	t.Parallel()
	e := newRolloutEnv(t)
	release := make(chan struct{})
	busy := newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", holds(release))
	mute := newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", silent)
	waiting := newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", commits)
	ctx := context.Background()
	// Two at a time: the third device waits for a slot.
	r, err := e.c.CreateRollout(ctx, client.RolloutCreate{Package: "yolo@2.0.0", Fleet: "edge", MaxConcurrent: intp(2)})
	if err != nil {
		t.Fatal(err)
	}
	cur := e.wait(t, r.ID, "two jobs in flight, one in progress", 20*time.Second, func(r client.Rollout) bool {
		j, _ := jobOf(r, busy.dev.ID, "install")
		return r.Counts.InFlight == 2 && j.State == "in_progress"
	})
	var muteJob, waitingJob client.RolloutJob
	for _, j := range cur.Jobs {
		switch j.DeviceID {
		case mute.dev.ID:
			muteJob = j
		case waiting.dev.ID:
			waitingJob = j
		}
	}
	busyJob, _ := jobOf(cur, busy.dev.ID, "install")
	if muteJob.State != "notified" || waitingJob.State != "pending" {
		t.Fatalf("before the abort: %+v", cur.Jobs)
	}
	// A key for the job in progress is the rollout's to give now …
	eng := e.h.CP.Rollouts()
	if fleet, err := eng.Authorize(ctx, e.h.Tenant, busy.dev.ID, busyJob.JobID, e.v2.ID); err != nil || fleet != e.fleet.ID {
		t.Fatalf("authorize the running job: %q, %v", fleet, err)
	}
	aborted, err := e.c.AbortRollout(ctx, r.ID, "wrong model")
	if err != nil || aborted.State != client.RolloutAborted {
		t.Fatalf("abort: %+v, %v", aborted, err)
	}
	// … and no longer.
	if _, err := eng.Authorize(ctx, e.h.Tenant, busy.dev.ID, busyJob.JobID, e.v2.ID); !isRefusal(err, "aborted") {
		t.Errorf("authorize after the abort: %v", err)
	}
	// The silent device asks about its job now: cancelled.
	mute.inbox <- muteJob.JobID
	for deadline := time.Now().Add(5 * time.Second); !mute.wasCancelled(muteJob.JobID); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cancelled job was not answered 410")
		}
	}
	close(release)
	final := e.wait(t, r.ID, "the busy job done", 10*time.Second, func(r client.Rollout) bool {
		j, _ := jobOf(r, busy.dev.ID, "install")
		return j.State == "succeeded"
	})
	if final.State != client.RolloutAborted || final.Counts != (client.RolloutCounts{Total: 3, Succeeded: 1, Cancelled: 2}) {
		t.Errorf("after the abort: %s %+v", final.State, final.Counts)
	}
	time.Sleep(1200 * time.Millisecond) // an engine pass or so: nothing more is released
	if n := waiting.notifications(); len(n) != 0 {
		t.Errorf("the pending device was notified after the abort: %v", n)
	}
}

func isRefusal(err error, mention string) bool {
	var r *registry.GrantRefusedError
	return errors.As(err, &r) && strings.Contains(r.Reason, mention)
}

// TestRolloutRollback: after a completed rollout, a rollback gives every
// device that installed it a rollback job to the package its reports
// showed before (resolved in the registry); the rollout ends rolled back.
func TestRolloutRollback(t *testing.T) {
	t.Parallel()
	e := newRolloutEnv(t)
	devs := []*simDevice{
		newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", commits),
		newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", commits),
	}
	ctx := context.Background()
	r, err := e.c.CreateRollout(ctx, client.RolloutCreate{Package: "yolo@2.0.0", Fleet: "edge", Waves: []int{50, 100}})
	if err != nil {
		t.Fatal(err)
	}
	e.waitState(t, r.ID, client.RolloutCompleted, 20*time.Second)
	if _, err := e.c.RollbackRollout(ctx, r.ID, "accuracy dropped"); err != nil {
		t.Fatal(err)
	}
	done := e.waitState(t, r.ID, client.RolloutRolledBack, 20*time.Second)
	if done.Rollback == nil || *done.Rollback != (client.RolloutCounts{Total: 2, Succeeded: 2}) || done.Counts.Succeeded != 2 || done.FinishedAt == nil {
		t.Fatalf("rolled back: %+v rollback %+v", done, done.Rollback)
	}
	for _, d := range devs {
		rb, ok := jobOf(done, d.dev.ID, "rollback")
		if !ok || rb.State != "succeeded" || rb.ReportState != wire.JobRolledBack || rb.Package.ID != e.v1.ID || rb.Package.Version != "1.0.0" {
			t.Errorf("device %s: rollback job %+v", d.dev.ID, rb)
			continue
		}
		j := d.job(rb.JobID)
		if j.Kind != wire.JobRollback || j.Package.URL != "/api/v1/device/packages/"+e.v1.ID || j.Package.Name != "yolo" || j.Publishers == nil {
			t.Errorf("the device's rollback job: %+v", j)
		}
	}
	e.events.waitEvent(t, r.ID, "rolled_back", 5*time.Second, func(ev client.RolloutEvent) bool { return ev.Type == "rolled_back" })
	e.events.waitEvent(t, r.ID, "rollback_started", time.Second, func(ev client.RolloutEvent) bool { return ev.Type == "rollback_started" })
}

// TestRolloutQuarantineAndJoin: a quarantined device is skipped and picked
// up once trusted again; a device that enrolls into the fleet during the
// rollout is included; a device whose labels stop matching while pending
// is skipped.
func TestRolloutQuarantineAndJoin(t *testing.T) {
	t.Parallel()
	e := newRolloutEnv(t)
	ctx := context.Background()
	release := make(chan struct{})
	first := newSimDevice(t, e.h, e.fleet.ID, map[string]string{"ring": "a"}, "yolo@1.0.0", holds(release))
	quarantined := newSimDevice(t, e.h, e.fleet.ID, map[string]string{"ring": "a"}, "yolo@1.0.0", commits)
	if err := e.h.Store().SetQuarantined(ctx, e.h.Tenant, quarantined.dev.ID, true); err != nil {
		t.Fatal(err)
	}
	// One at a time, so the third device is still pending when its labels
	// change.
	moved := newSimDevice(t, e.h, e.fleet.ID, map[string]string{"ring": "a"}, "yolo@1.0.0", commits)
	r, err := e.c.CreateRollout(ctx, client.RolloutCreate{Package: "yolo@2.0.0", Fleet: "edge", Selector: map[string]string{"ring": "a"},
		MaxConcurrent: intp(1), FailureThreshold: intp(100)})
	if err != nil {
		t.Fatal(err)
	}
	cur := e.wait(t, r.ID, "the first device busy", 20*time.Second, func(r client.Rollout) bool {
		j, _ := jobOf(r, first.dev.ID, "install")
		return j.State == "in_progress"
	})
	q, _ := jobOf(cur, quarantined.dev.ID, "install")
	if q.State != "skipped" || q.Reason != "QUARANTINED" {
		t.Fatalf("quarantined device's job: %+v", q)
	}
	if _, err := e.h.Store().UpdateDevice(ctx, e.h.Tenant, moved.dev.ID, store.DeviceUpdate{Labels: map[string]string{"ring": "b"}}); err != nil {
		t.Fatal(err)
	}
	e.wait(t, r.ID, "the relabelled device skipped", 10*time.Second, func(r client.Rollout) bool {
		j, _ := jobOf(r, moved.dev.ID, "install")
		return j.State == "skipped" && j.Reason == "NOT_SELECTED"
	})
	// A device enrolls into the fleet mid-rollout: it joins.
	joined := newSimDevice(t, e.h, e.fleet.ID, map[string]string{"ring": "a"}, "", commits)
	e.wait(t, r.ID, "the new device assigned", 10*time.Second, func(r client.Rollout) bool {
		_, ok := jobOf(r, joined.dev.ID, "install")
		return ok
	})
	// Trusted again: picked up.
	if err := e.h.Store().SetQuarantined(ctx, e.h.Tenant, quarantined.dev.ID, false); err != nil {
		t.Fatal(err)
	}
	close(release)
	done := e.waitState(t, r.ID, client.RolloutCompleted, 20*time.Second)
	for _, d := range []*simDevice{first, quarantined, joined} {
		if j, _ := jobOf(done, d.dev.ID, "install"); j.State != "succeeded" {
			t.Errorf("device %s: %+v", d.dev.ID, j)
		}
	}
	if j, _ := jobOf(done, moved.dev.ID, "install"); j.State != "skipped" || len(moved.notifications()) != 0 {
		t.Errorf("relabelled device: %+v, notified %d times", j, len(moved.notifications()))
	}
	if done.Counts != (client.RolloutCounts{Total: 4, Succeeded: 3, Skipped: 1}) {
		t.Errorf("counts: %+v", done.Counts)
	}
	if j, _ := jobOf(done, joined.dev.ID, "install"); j.PreviousName != "" || j.Wave != 0 {
		t.Errorf("joined device (nothing installed before; the last wave): %+v", j)
	}
}

// TestRolloutTimeoutRetries: a device silent on its first attempt is
// notified again and succeeds on the second; one silent throughout times
// out after its retries (DEADLINE), which counts as a failure.
func TestRolloutTimeoutRetries(t *testing.T) {
	t.Parallel()
	e := newRolloutEnv(t)
	late := newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", silentUntil(2))
	mute := newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", silent)
	ctx := context.Background()
	r, err := e.c.CreateRollout(ctx, client.RolloutCreate{Package: "yolo@2.0.0", Fleet: "edge", DeviceTimeout: "1s", Retries: intp(1),
		FailureThreshold: intp(100)})
	if err != nil {
		t.Fatal(err)
	}
	done := e.waitState(t, r.ID, client.RolloutCompleted, 30*time.Second)
	lj, _ := jobOf(done, late.dev.ID, "install")
	mj, _ := jobOf(done, mute.dev.ID, "install")
	if lj.State != "succeeded" || lj.Attempt != 2 || !slices.Equal(late.attempts(lj.JobID), []int{1, 2}) {
		t.Errorf("late device: %+v, fetched attempts %v", lj, late.attempts(lj.JobID))
	}
	if mj.State != "timed_out" || mj.Reason != wire.JobReasonDeadline || mj.Attempt != 2 || len(mute.notifications()) != 2 ||
		!strings.Contains(mj.Detail, "attempt 2 of 2") {
		t.Errorf("silent device: %+v, %d notifications", mj, len(mute.notifications()))
	}
	if done.Counts != (client.RolloutCounts{Total: 2, Succeeded: 1, Failed: 1}) {
		t.Errorf("counts: %+v", done.Counts)
	}
}

// TestRolloutReports: duplicated, reordered, malformed, stale and foreign
// reports change nothing: each job's outcome is recorded once.
func TestRolloutReports(t *testing.T) {
	t.Parallel()
	e := newRolloutEnv(t)
	a := newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", silent)
	b := newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", silent)
	ctx := context.Background()
	r, err := e.c.CreateRollout(ctx, client.RolloutCreate{Package: "yolo@2.0.0", Fleet: "edge", FailureThreshold: intp(100)})
	if err != nil {
		t.Fatal(err)
	}
	cur := e.wait(t, r.ID, "both released", 20*time.Second, func(r client.Rollout) bool { return r.Counts.InFlight == 2 })
	aj, _ := jobOf(cur, a.dev.ID, "install")
	bj, _ := jobOf(cur, b.dev.ID, "install")
	ja := wire.Job{ID: aj.JobID, RolloutID: r.ID, Attempt: 1, Package: wire.PackageRef{Name: "yolo", Version: "2.0.0"}}
	jb := wire.Job{ID: bj.JobID, RolloutID: r.ID, Attempt: 1, Package: wire.PackageRef{Name: "yolo", Version: "2.0.0"}}

	// Device b publishes a final report for a's job on its own topic: not
	// its job, ignored.
	b.publishReport(aj.JobID, wire.JobReport{Schema: wire.JobReportSchema, MsgID: "foreign", JobID: aj.JobID, RolloutID: r.ID,
		Attempt: 1, State: wire.JobFailed, Reason: wire.JobReasonSelfTest})
	// Malformed and stale reports on b's own job.
	for _, p := range []string{
		`not json`,
		`{"schema":"tg.job.report.v0","msg_id":"m1","job_id":"` + bj.JobID + `","rollout_id":"` + r.ID + `","attempt":1,"state":"committed"}`,
		`{"schema":"tg.job.report.v1","msg_id":"m2","job_id":"job-aaaaaaaaaaaaaaaaaaaa","rollout_id":"` + r.ID + `","attempt":1,"state":"committed"}`,
		`{"schema":"tg.job.report.v1","msg_id":"m3","job_id":"` + bj.JobID + `","rollout_id":"` + r.ID + `","attempt":0,"state":"committed"}`,
		`{"schema":"tg.job.report.v1","msg_id":"m4","job_id":"` + bj.JobID + `","rollout_id":"` + r.ID + `","attempt":5,"state":"committed"}`,
		`{"schema":"tg.job.report.v1","msg_id":"m5","job_id":"` + bj.JobID + `","rollout_id":"` + r.ID + `","attempt":1,"state":"exploded"}`,
		`{"schema":"tg.job.report.v1","msg_id":"m6","job_id":"` + bj.JobID + `","rollout_id":"rol-aaaaaaaaaaaaaaaaaaaa","attempt":1,"state":"committed"}`,
		`{"schema":"tg.job.report.v1","msg_id":"","job_id":"` + bj.JobID + `","rollout_id":"` + r.ID + `","attempt":1,"state":"committed"}`,
	} {
		b.publishRaw(mqttacl.JobTopic(e.h.Tenant, b.dev.ID, bj.JobID), []byte(p))
	}
	// Device a: every report twice, the final one before a late progress
	// report, and a second final report with another message id.
	a.report(ja, wire.JobReceived, "")
	a.report(ja, wire.JobReceived, "")
	a.report(ja, wire.JobCommitted, "")
	a.report(ja, wire.JobCommitted, "")
	a.report(ja, wire.JobDownloading, "")
	a.publishReport(aj.JobID, wire.JobReport{Schema: wire.JobReportSchema, MsgID: "second final", JobID: aj.JobID, RolloutID: r.ID,
		Attempt: 1, State: wire.JobFailed, Reason: wire.JobReasonSelfTest})
	e.wait(t, r.ID, "a's job succeeded", 10*time.Second, func(r client.Rollout) bool {
		j, _ := jobOf(r, a.dev.ID, "install")
		return j.State == "succeeded"
	})
	// Every report above has been handled once the last distinct one is
	// recorded (a's device's reports are applied in order).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if n, _ := e.h.Store().CountJobReports(ctx, e.h.Tenant, aj.JobID); n == 4 {
			break
		}
		if time.Now().After(deadline) {
			n, _ := e.h.Store().CountJobReports(ctx, e.h.Tenant, aj.JobID)
			t.Fatalf("a's job has %d distinct reports recorded, want 4 (received, committed, downloading, second final)", n)
		}
	}
	time.Sleep(300 * time.Millisecond) // b's reports went first; give them their time too
	cur, err = e.c.GetRollout(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	aj, _ = jobOf(cur, a.dev.ID, "install")
	bj, _ = jobOf(cur, b.dev.ID, "install")
	if aj.State != "succeeded" || aj.ReportState != wire.JobCommitted || aj.Reason != "" {
		t.Errorf("a's job: %+v", aj)
	}
	if bj.State != "notified" || bj.ReportState != "" {
		t.Errorf("b's job after foreign and malformed reports: %+v", bj)
	}
	if n, _ := e.h.Store().CountJobReports(ctx, e.h.Tenant, bj.JobID); n != 0 {
		t.Errorf("b's job has %d reports recorded, want 0", n)
	}
	// Now b answers properly; the rollout completes with each device
	// counted once.
	b.report(jb, wire.JobReceived, "")
	b.report(jb, wire.JobCommitted, "")
	done := e.waitState(t, r.ID, client.RolloutCompleted, 10*time.Second)
	if done.Counts != (client.RolloutCounts{Total: 2, Succeeded: 2}) {
		t.Errorf("counts: %+v", done.Counts)
	}
	var jobEvents []string
	for _, ev := range e.events.of(r.ID) {
		if ev.Type == "job" && ev.Device == a.dev.ID {
			jobEvents = append(jobEvents, ev.JobState)
		}
	}
	if !slices.Equal(jobEvents, []string{"notified", "in_progress", "succeeded"}) {
		t.Errorf("a's job events: %v", jobEvents)
	}
}

// TestRolloutRestart: the control plane restarts mid-rollout (on SQLite
// and on PostgreSQL): the rollout goes on from the database — the device
// at work finishes, its report (sent again after the restart, as an
// outbox does) counts once, the next wave starts — and completes with
// every device counted exactly once.
func TestRolloutRestart(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			var opts []controlplanetest.Option
			if backend == "postgres" {
				opts = append(opts, controlplanetest.WithDatabaseURL(testpg.Start(t)))
			}
			testRolloutRestart(t, newRolloutEnv(t, opts...))
		})
	}
}

func testRolloutRestart(t *testing.T, e *rolloutEnv) {
	ctx := context.Background()
	release := make(chan struct{})
	canary := newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", holds(release))
	var rest []*simDevice
	for range 3 {
		rest = append(rest, newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", commits))
	}
	r, err := e.c.CreateRollout(ctx, client.RolloutCreate{Package: "yolo@2.0.0", Fleet: "edge", Waves: []int{25, 100}, DeviceTimeout: "2s"})
	if err != nil {
		t.Fatal(err)
	}
	cur := e.wait(t, r.ID, "the canary at work", 20*time.Second, func(r client.Rollout) bool {
		j, _ := jobOf(r, canary.dev.ID, "install")
		return j.State == "in_progress" && j.ReportState == wire.JobDownloading
	})
	cj, _ := jobOf(cur, canary.dev.ID, "install")
	before, _ := e.h.Store().CountJobReports(ctx, e.h.Tenant, cj.JobID)

	e.h.Restart(t)
	// The device finishes while the control plane comes back (its outbox
	// retries until the broker takes the report) …
	close(release)
	e.waitState(t, r.ID, client.RolloutCompleted, 30*time.Second)
	// … and sends its earlier reports once more: duplicates.
	job := canary.job(cj.JobID)
	canary.report(job, wire.JobReceived, "")
	canary.report(job, wire.JobDownloading, "")
	canary.report(job, wire.JobCommitted, "")
	time.Sleep(500 * time.Millisecond)
	after, _ := e.h.Store().CountJobReports(ctx, e.h.Tenant, cj.JobID)
	if before != 2 || after != 4 {
		t.Errorf("the canary's job has %d distinct reports before the restart and %d after; want 2 and 4", before, after)
	}
	final, err := e.c.GetRollout(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if final.Counts != (client.RolloutCounts{Total: 4, Succeeded: 4}) || len(final.Jobs) != 4 || final.State != client.RolloutCompleted {
		t.Errorf("completed after the restart: %+v %+v", final.State, final.Counts)
	}
	// No device timed out across the restart (the new leader's grace):
	// the canary finished at its first attempt.
	if j, _ := jobOf(final, canary.dev.ID, "install"); j.Attempt != 1 || j.State != "succeeded" {
		t.Errorf("canary: %+v", j)
	}
	for _, d := range rest {
		if j, _ := jobOf(final, d.dev.ID, "install"); j.State != "succeeded" || j.Wave != 1 {
			t.Errorf("device %s: %+v", d.dev.ID, j)
		}
	}
	if !e.h.CP.Rollouts().Leading() {
		t.Error("the restarted control plane does not lead the rollouts")
	}
}
