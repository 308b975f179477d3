package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustPackage(t *testing.T, s *Store, tenant, name, version string) Package {
	t.Helper()
	sum := sha256.Sum256([]byte(tenant + "/" + name + "@" + version))
	p, err := s.CreatePackage(context.Background(), tenant, Package{
		ID: hex.EncodeToString(sum[:]), Name: name, Version: version, SignedID: strings.Repeat("ab", 32), Size: 4096,
		PublisherKeyID: strings.Repeat("cd", 16), Manifest: []byte(`{"name":"` + name + `"}`), ExpiresAt: time.Now().Add(24 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newRollout(fx fixture, p Package) Rollout {
	return Rollout{
		PackageID: p.ID, PackageName: p.Name, PackageVersion: p.Version, PackageSize: p.Size, FleetID: fx.fleet.ID,
		Selector: map[string]string{"site": "berlin"}, Waves: []int{5, 25, 100}, SuccessThreshold: 95, FailureThreshold: 10,
		MaxConcurrent: 3, DeviceTimeout: 90 * time.Second, Retries: 2, CreatedBy: fx.operator.ID,
	}
}

func TestRolloutCreateGetList(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		p := mustPackage(t, s, "acme", "resnet", "1.2.0")
		r, err := s.CreateRollout(ctx, "acme", newRollout(fx, p))
		if err != nil {
			t.Fatal(err)
		}
		if !ValidID(PrefixRollout, r.ID) || r.State != RolloutRunning || r.CurrentWave != 0 || !r.CreatedAt.Equal(clk.Now().UTC().Truncate(time.Microsecond)) {
			t.Errorf("created %+v", r)
		}
		got, err := s.GetRollout(ctx, "acme", r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("get = %+v\nwant  %+v", got, r)
		}
		clk.Advance(time.Second)
		r2, err := s.CreateRollout(ctx, "acme", newRollout(fx, p))
		if err != nil {
			t.Fatal(err)
		}
		list, err := s.ListRollouts(ctx, "acme", RolloutFilter{})
		if err != nil || len(list) != 2 || list[0].ID != r2.ID || list[1].ID != r.ID {
			t.Fatalf("list (newest first) = %+v, %v", list, err)
		}
		if _, err := s.PauseRollout(ctx, "acme", r2.ID, "look"); err != nil {
			t.Fatal(err)
		}
		list, err = s.ListRollouts(ctx, "acme", RolloutFilter{State: RolloutPaused, FleetID: fx.fleet.ID})
		if err != nil || len(list) != 1 || list[0].ID != r2.ID {
			t.Fatalf("list paused = %+v, %v", list, err)
		}

		// Another tenant sees none of it, and cannot point at acme's rows.
		other := mustFixture(t, s, "globex")
		_, err = s.GetRollout(ctx, "globex", r.ID)
		wantErr(t, "get across tenants", err, ErrNotFound)
		bad := newRollout(other, p) // acme's package
		_, err = s.CreateRollout(ctx, "globex", bad)
		wantErr(t, "package of another tenant", err, ErrNotFound)
		bad = newRollout(fx, mustPackage(t, s, "globex", "resnet", "1.2.0")) // acme's fleet
		_, err = s.CreateRollout(ctx, "globex", bad)
		wantErr(t, "fleet of another tenant", err, ErrNotFound)

		// The engine's scan spans tenants.
		gp := mustPackage(t, s, "globex", "bert", "2.0.0")
		g, err := s.CreateRollout(ctx, "globex", newRollout(other, gp))
		if err != nil {
			t.Fatal(err)
		}
		active, err := s.ListRolloutsInState(ctx, RolloutRunning, RolloutRollingBack)
		if err != nil || len(active) != 2 || active[0].ID != r.ID || active[1].ID != g.ID {
			t.Fatalf("active = %+v, %v", active, err)
		}

		// A referenced package cannot be deleted, nor the rollout's fleet.
		wantErr(t, "delete referenced package", s.DeletePackage(ctx, "acme", p.ID), ErrConflict)
		wantErr(t, "delete the rollout's fleet", s.DeleteFleet(ctx, "acme", fx.fleet.ID), ErrConflict)
	})
}

func TestRolloutValidate(t *testing.T) {
	t.Parallel()
	pkg := strings.Repeat("0a", 32)
	ok := Rollout{PackageID: pkg, PackageName: "m", PackageVersion: "1", PackageSize: 1, FleetID: "flt-x", Waves: []int{100},
		SuccessThreshold: 100, DeviceTimeout: time.Minute, CreatedBy: "key-x"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Rollout){
		"no waves":             func(r *Rollout) { r.Waves = nil },
		"last not 100":         func(r *Rollout) { r.Waves = []int{10, 50} },
		"not increasing":       func(r *Rollout) { r.Waves = []int{50, 50, 100} },
		"zero wave":            func(r *Rollout) { r.Waves = []int{0, 100} },
		"over 100":             func(r *Rollout) { r.Waves = []int{50, 101} },
		"success over 100":     func(r *Rollout) { r.SuccessThreshold = 101 },
		"failure negative":     func(r *Rollout) { r.FailureThreshold = -1 },
		"negative concurrency": func(r *Rollout) { r.MaxConcurrent = -1 },
		"no timeout":           func(r *Rollout) { r.DeviceTimeout = 0 },
		"too many retries":     func(r *Rollout) { r.Retries = MaxRolloutRetries + 1 },
		"bad package id":       func(r *Rollout) { r.PackageID = "abc" },
		"no fleet":             func(r *Rollout) { r.FleetID = "" },
		"no creator":           func(r *Rollout) { r.CreatedBy = "" },
	} {
		r := ok
		r.Waves = append([]int(nil), ok.Waves...)
		mut(&r)
		if err := r.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate = %v, want ErrInvalid", name, err)
		}
	}
}

func TestRolloutJobs(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		p := mustPackage(t, s, "acme", "resnet", "1.2.0")
		r, err := s.CreateRollout(ctx, "acme", newRollout(fx, p))
		if err != nil {
			t.Fatal(err)
		}
		d1, d2 := mustDevice(t, s, "acme", fx.fleet.ID, "ek1"), mustDevice(t, s, "acme", fx.fleet.ID, "ek2")
		jobs, err := s.AddRolloutJobs(ctx, "acme", r.ID, []RolloutDevice{
			{DeviceID: d1.ID, Kind: JobKindInstall, Wave: 0, State: JobPending, PackageID: p.ID, PackageName: p.Name, PackageVersion: p.Version, PackageSize: p.Size},
			{DeviceID: d2.ID, Kind: JobKindInstall, Wave: 2, State: JobSkipped, Reason: "QUARANTINED"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if !ValidID(PrefixJob, jobs[0].JobID) || jobs[0].JobID == jobs[1].JobID {
			t.Fatalf("job ids %s %s", jobs[0].JobID, jobs[1].JobID)
		}
		_, err = s.AddRolloutJobs(ctx, "acme", r.ID, []RolloutDevice{{DeviceID: d1.ID, Kind: JobKindInstall, State: JobPending}})
		wantErr(t, "second install job of a device", err, ErrConflict)
		_, err = s.AddRolloutJobs(ctx, "acme", r.ID, []RolloutDevice{{DeviceID: "dev-aaaaaaaaaaaaaaaaaaaa", Kind: JobKindInstall, State: JobPending}})
		wantErr(t, "job of an unknown device", err, ErrNotFound)

		// Release: conditional on the state and attempt read.
		j := jobs[0]
		j.State, j.Attempt, j.NotifiedAt, j.DeadlineAt = JobNotified, 1, clk.Now(), clk.Now().Add(time.Minute)
		saved, err := s.SaveJob(ctx, j, JobPending, 0)
		if err != nil {
			t.Fatal(err)
		}
		if saved.State != JobNotified || saved.Attempt != 1 || saved.DeadlineAt.IsZero() || saved.PackageID != p.ID {
			t.Errorf("saved %+v", saved)
		}
		_, err = s.SaveJob(ctx, j, JobPending, 0)
		wantErr(t, "save on a stale read", err, ErrConflict)

		open, err := s.ListDeviceJobs(ctx, "acme", d1.ID, JobNotified, JobInProgress)
		if err != nil || len(open) != 1 || open[0].JobID != j.JobID {
			t.Fatalf("open jobs = %+v, %v", open, err)
		}
		if open, err := s.ListDeviceJobs(ctx, "globex", d1.ID); err != nil || len(open) != 0 {
			t.Errorf("jobs across tenants = %+v, %v", open, err)
		}
		_, err = s.GetJob(ctx, "globex", j.JobID)
		wantErr(t, "job across tenants", err, ErrNotFound)

		// Reports: de-duplicated by job, attempt and message id.
		rep := JobReportRecord{JobID: j.JobID, Attempt: 1, MsgID: "m-1", State: "received", SentAt: clk.Now()}
		for i, want := range []bool{true, false} {
			fresh, err := s.RecordJobReport(ctx, "acme", rep)
			if err != nil || fresh != want {
				t.Fatalf("record #%d = %v, %v; want %v", i, fresh, err, want)
			}
		}
		rep.Attempt = 2
		if fresh, err := s.RecordJobReport(ctx, "acme", rep); err != nil || !fresh {
			t.Errorf("same msg id, next attempt = %v, %v", fresh, err)
		}
		_, err = s.RecordJobReport(ctx, "acme", JobReportRecord{JobID: "job-aaaaaaaaaaaaaaaaaaaa", Attempt: 1, MsgID: "m", State: "received"})
		wantErr(t, "report of an unknown job", err, ErrNotFound)
		if n, err := s.CountJobReports(ctx, "acme", j.JobID); err != nil || n != 2 {
			t.Errorf("reports = %d, %v", n, err)
		}

		// Done: finished_at set.
		clk.Advance(time.Second)
		saved.State, saved.ReportState, saved.ReportAt = JobSucceeded, "committed", clk.Now()
		saved.PreviousName, saved.PreviousVersion, saved.InstalledName, saved.InstalledVersion = "resnet", "1.1.0", "resnet", "1.2.0"
		done, err := s.SaveJob(ctx, saved, JobNotified, 1)
		if err != nil {
			t.Fatal(err)
		}
		if done.FinishedAt.IsZero() || done.PreviousVersion != "1.1.0" || done.InstalledVersion != "1.2.0" || done.ReportState != "committed" {
			t.Errorf("done %+v", done)
		}
		all, err := s.ListRolloutJobs(ctx, "acme", r.ID)
		if err != nil || len(all) != 2 || all[0].DeviceID != d1.ID || all[1].DeviceID != d2.ID {
			t.Fatalf("jobs = %+v, %v", all, err)
		}
		waves := RolloutWaves(r, all)
		if len(waves) != 3 || waves[0].Size != 1 || waves[0].Succeeded != 1 || !waves[0].Done() ||
			waves[2].Skipped != 1 || waves[2].Size != 0 || !waves[1].PassedThreshold(100) {
			t.Errorf("waves = %+v", waves)
		}

		// Deleting the device deletes its jobs and their reports.
		if err := s.DeleteDevice(ctx, "acme", d1.ID); err != nil {
			t.Fatal(err)
		}
		_, err = s.GetJob(ctx, "acme", j.JobID)
		wantErr(t, "job of a deleted device", err, ErrNotFound)
		if n, err := s.CountJobReports(ctx, "acme", j.JobID); err != nil || n != 0 {
			t.Errorf("reports of a deleted device = %d, %v", n, err)
		}
	})
}

func TestRolloutTransitions(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		p := mustPackage(t, s, "acme", "resnet", "1.2.0")
		spec := newRollout(fx, p)
		spec.Waves, spec.SuccessThreshold = []int{50, 100}, 100
		r, err := s.CreateRollout(ctx, "acme", spec)
		if err != nil {
			t.Fatal(err)
		}
		var devs []Device
		for _, ek := range []string{"a", "b", "c", "d"} {
			devs = append(devs, mustDevice(t, s, "acme", fx.fleet.ID, ek))
		}
		// Wave 0: a succeeded, b failed (done, below 100 %); wave 1: c
		// notified, d pending.
		jobs, err := s.AddRolloutJobs(ctx, "acme", r.ID, []RolloutDevice{
			{DeviceID: devs[0].ID, Kind: JobKindInstall, Wave: 0, State: JobSucceeded, Attempt: 1},
			{DeviceID: devs[1].ID, Kind: JobKindInstall, Wave: 0, State: JobFailed, Attempt: 1},
			{DeviceID: devs[2].ID, Kind: JobKindInstall, Wave: 1, State: JobNotified, Attempt: 1},
			{DeviceID: devs[3].ID, Kind: JobKindInstall, Wave: 1, State: JobPending},
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.ResumeRollout(ctx, "acme", r.ID)
		wantErr(t, "resume a running rollout", err, ErrRolloutState)
		wantErr(t, "resume a running rollout (conflict)", err, ErrConflict)

		paused, err := s.PauseRollout(ctx, "acme", r.ID, "lunch")
		if err != nil || paused.State != RolloutPaused || paused.Reason != RolloutReasonOperator || paused.Detail != "lunch" {
			t.Fatalf("pause = %+v, %v", paused, err)
		}
		_, err = s.PauseRollout(ctx, "acme", r.ID, "")
		wantErr(t, "pause twice", err, ErrRolloutState)
		// Resume acknowledges the failure and, wave 0 being done below its
		// threshold, moves on to wave 1.
		resumed, err := s.ResumeRollout(ctx, "acme", r.ID)
		if err != nil || resumed.State != RolloutRunning || resumed.AckedFailures != 1 || resumed.CurrentWave != 1 || resumed.Reason != "" {
			t.Fatalf("resume = %+v, %v", resumed, err)
		}
		// The engine's own change is conditional on the state it read.
		if _, err := s.SetRolloutProgress(ctx, "acme", r.ID, RolloutPaused, RolloutProgress{State: RolloutCompleted}); !errors.Is(err, ErrConflict) {
			t.Errorf("progress from a stale state = %v", err)
		}

		aborted, err := s.AbortRollout(ctx, "acme", r.ID, "bad model")
		if err != nil || aborted.State != RolloutAborted || aborted.FinishedAt.IsZero() {
			t.Fatalf("abort = %+v, %v", aborted, err)
		}
		all, _ := s.ListRolloutJobs(ctx, "acme", r.ID)
		states := map[string]JobState{}
		for _, j := range all {
			states[j.DeviceID] = j.State
		}
		// Not started (notified without a report, pending) is cancelled.
		if states[devs[0].ID] != JobSucceeded || states[devs[1].ID] != JobFailed || states[devs[2].ID] != JobCancelled || states[devs[3].ID] != JobCancelled {
			t.Errorf("after abort: %v", states)
		}
		_, err = s.PauseRollout(ctx, "acme", r.ID, "")
		wantErr(t, "pause an aborted rollout", err, ErrRolloutState)

		rb, err := s.RollbackRollout(ctx, "acme", r.ID, "")
		if err != nil || rb.State != RolloutRollingBack || !rb.FinishedAt.IsZero() {
			t.Fatalf("rollback = %+v, %v", rb, err)
		}
		_, err = s.RollbackRollout(ctx, "acme", r.ID, "")
		wantErr(t, "rollback twice", err, ErrRolloutState)
		_, err = s.AbortRollout(ctx, "acme", r.ID, "")
		wantErr(t, "abort a rollback", err, ErrRolloutState)
		done, err := s.SetRolloutProgress(ctx, "acme", r.ID, RolloutRollingBack, RolloutProgress{State: RolloutRolledBack, CurrentWave: 1})
		if err != nil || done.State != RolloutRolledBack || done.FinishedAt.IsZero() {
			t.Fatalf("rolled back = %+v, %v", done, err)
		}
		_ = jobs
		_, err = s.PauseRollout(ctx, "globex", r.ID, "")
		wantErr(t, "pause across tenants", err, ErrNotFound)
	})
}

func TestLeaseExclusive(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dsn := backendDSN(t, b)
			s1 := openStore(t, dsn)
			l1, err := s1.TryLead(ctx, "rollouts")
			if err != nil || l1 == nil {
				t.Fatalf("first lease: %v, %v", l1, err)
			}
			if b == "sqlite" {
				l1.Release()
				return // single node: always granted
			}
			s2 := openStore(t, dsn)
			l2, err := s2.TryLead(ctx, "rollouts")
			if err != nil || l2 != nil {
				t.Fatalf("second replica got the held lease: %v, %v", l2, err)
			}
			other, err := s2.TryLead(ctx, "another task")
			if err != nil || other == nil {
				t.Fatalf("another lease name: %v, %v", other, err)
			}
			other.Release()
			// Held and alive for a few checks.
			select {
			case <-l1.Lost():
				t.Fatal("held lease reported lost")
			case <-time.After(2*leaseCheckInterval + 500*time.Millisecond):
			}
			l1.Release()
			l1.Release()
			l2, err = s2.TryLead(ctx, "rollouts")
			if err != nil || l2 == nil {
				t.Fatalf("lease after release: %v, %v", l2, err)
			}
			// The leader's session ending (a crash, a network cut) loses
			// the lease.
			var pid int
			if err := l2.conn.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
				t.Fatal(err)
			}
			if _, err := s1.writeDB.ExecContext(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
				t.Fatal(err)
			}
			select {
			case <-l2.Lost():
			case <-time.After(3 * leaseCheckInterval):
				t.Fatal("lease not lost after its store closed")
			}
			l2.Release()
			if l3, err := s1.TryLead(ctx, "rollouts"); err != nil || l3 == nil {
				t.Fatalf("lease after the leader went away: %v, %v", l3, err)
			} else {
				l3.Release()
			}
		})
	}
}

// TestRolloutJobCountsAndCandidates: the engine's light reads — the jobs
// counted by kind, wave and state, and the fleet's devices without their
// keys — agree with the full rows on both databases.
func TestRolloutJobCountsAndCandidates(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		p := mustPackage(t, s, "acme", "resnet", "1.2.0")
		r, err := s.CreateRollout(ctx, "acme", newRollout(fx, p))
		if err != nil {
			t.Fatal(err)
		}
		counts, err := s.CountRolloutJobs(ctx, "acme", r.ID)
		if err != nil || len(counts) != 0 {
			t.Fatalf("counts of no jobs = %+v, %v", counts, err)
		}
		var devs []Device
		for i := range 7 {
			devs = append(devs, mustDevice(t, s, "acme", fx.fleet.ID, fmt.Sprintf("ek%d", i)))
			clk.Advance(time.Second)
		}
		other := mustFixture(t, s, "globex")
		mustDevice(t, s, "globex", other.fleet.ID, "ek-other")
		var add []RolloutDevice
		for i, d := range devs {
			add = append(add, RolloutDevice{DeviceID: d.ID, Kind: JobKindInstall, Wave: min(i/2, 2), State: JobPending})
		}
		add[6].State, add[6].Reason = JobSkipped, "QUARANTINED"
		jobs, err := s.AddRolloutJobs(ctx, "acme", r.ID, add)
		if err != nil {
			t.Fatal(err)
		}
		move := func(j RolloutDevice, to JobState) RolloutDevice {
			t.Helper()
			next := j
			next.State = to
			if to == JobNotified {
				next.Attempt = j.Attempt + 1
			}
			saved, err := s.SaveJob(ctx, next, j.State, j.Attempt)
			if err != nil {
				t.Fatal(err)
			}
			return saved
		}
		jobs[0] = move(move(jobs[0], JobNotified), JobSucceeded)
		jobs[1] = move(move(jobs[1], JobNotified), JobFailed)
		jobs[2] = move(move(jobs[2], JobNotified), JobInProgress)
		jobs[3] = move(jobs[3], JobNotified)
		if _, err := s.AddRolloutJobs(ctx, "acme", r.ID, []RolloutDevice{
			{DeviceID: devs[0].ID, Kind: JobKindRollback, Wave: 0, State: JobPending},
			{DeviceID: devs[1].ID, Kind: JobKindRollback, Wave: 0, State: JobSkipped},
		}); err != nil {
			t.Fatal(err)
		}

		counts, err = s.CountRolloutJobs(ctx, "acme", r.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := []JobCount{
			{JobKindInstall, 0, JobFailed, 1}, {JobKindInstall, 0, JobSucceeded, 1},
			{JobKindInstall, 1, JobInProgress, 1}, {JobKindInstall, 1, JobNotified, 1},
			{JobKindInstall, 2, JobPending, 2}, {JobKindInstall, 2, JobSkipped, 1},
			{JobKindRollback, 0, JobPending, 1}, {JobKindRollback, 0, JobSkipped, 1},
		}
		if !reflect.DeepEqual(counts, want) {
			t.Errorf("counts = %+v\nwant     %+v", counts, want)
		}
		all, err := s.ListRolloutJobs(ctx, "acme", r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := RolloutWaveCounts(r, counts), RolloutWaves(r, all); !reflect.DeepEqual(got, want) {
			t.Errorf("waves from counts = %+v\nfrom the rows     %+v", got, want)
		}
		if counts, err := s.CountRolloutJobs(ctx, "globex", r.ID); err != nil || len(counts) != 0 {
			t.Errorf("counts across tenants = %+v, %v", counts, err)
		}

		// Candidates: every device of the fleet, oldest first, with what
		// eligibility needs.
		if err := s.SetQuarantined(ctx, "acme", devs[2].ID, true); err != nil {
			t.Fatal(err)
		}
		if err := s.SetQuarantined(ctx, "acme", devs[3].ID, false); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RevokeDevice(ctx, "acme", devs[4].ID); err != nil {
			t.Fatal(err)
		}
		cands, err := s.ListRolloutCandidates(ctx, "acme", fx.fleet.ID)
		if err != nil {
			t.Fatal(err)
		}
		full, err := s.ListDevices(ctx, "acme", DeviceFilter{FleetID: fx.fleet.ID})
		if err != nil {
			t.Fatal(err)
		}
		if len(cands) != len(devs) || len(full) != len(devs) {
			t.Fatalf("candidates %d, devices %d, want %d", len(cands), len(full), len(devs))
		}
		for i, c := range cands {
			d := full[i]
			want := RolloutCandidate{ID: d.ID, Status: d.Status, Labels: d.Labels, Quarantined: d.Quarantined, CreatedAt: d.CreatedAt}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("candidate %d = %+v, want %+v", i, c, want)
			}
		}
		if !cands[2].Quarantined || cands[3].Quarantined || cands[4].Status != DeviceRevoked || cands[0].Status != DeviceEnrolled {
			t.Errorf("candidates = %+v", cands)
		}
		if cands, err := s.ListRolloutCandidates(ctx, "globex", fx.fleet.ID); err != nil || len(cands) != 0 {
			t.Errorf("candidates across tenants = %+v, %v", cands, err)
		}
	})
}
