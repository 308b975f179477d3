package rollout

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

func TestWaveOf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		waves []int
		n     int
		want  []int // wave of each rank
	}{
		{[]int{100}, 3, []int{0, 0, 0}},
		{[]int{25, 50, 100}, 4, []int{0, 1, 2, 2}},
		{[]int{5, 25, 100}, 10, []int{0, 1, 1, 2, 2, 2, 2, 2, 2, 2}}, // ceil(0.5)=1, ceil(2.5)=3
		{[]int{5, 25, 100}, 2, []int{0, 2}},                          // wave 1 is empty: ceil(0.5)=1
		{[]int{50, 100}, 1, []int{0}},
		{[]int{1, 2, 100}, 100, append([]int{0, 1}, repeat(2, 98)...)},
	} {
		for k, want := range tc.want {
			if got := waveOf(tc.waves, k, tc.n); got != want {
				t.Errorf("waveOf(%v, rank %d, n %d) = %d, want %d", tc.waves, k, tc.n, got, want)
			}
		}
	}
}

func repeat(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestParseReportTopic(t *testing.T) {
	t.Parallel()
	job := "job-aaaaaaaaaaaaaaaaaaaa"
	for topic, ok := range map[string]bool{
		"tg/v1/acme/devices/dev-1/jobs/" + job:        true,
		"tg/v1/acme/devices/dev-1/jobs/not-a-job":     false,
		"tg/v1/acme/devices/dev-1/jobs/" + job + "/x": false,
		"tg/v1/acme/devices/dev-1/status":             false,
		"tg/v2/acme/devices/dev-1/jobs/" + job:        false,
		"tg/v1/ACME/devices/dev-1/jobs/" + job:        false,
		"tg/v1/acme/fleets/dev-1/jobs/" + job:         false,
	} {
		m, got := parseReportTopic(topic)
		if got != ok || (ok && (m.tenant != "acme" || m.device != "dev-1" || m.job != job)) {
			t.Errorf("parseReportTopic(%q) = %+v, %v; want ok %v", topic, m, got, ok)
		}
	}
}

const testJob = "job-aaaaaaaaaaaaaaaaaaaa"

func report(mut func(*wire.JobReport)) []byte {
	r := wire.JobReport{Schema: wire.JobReportSchema, MsgID: "m-1", JobID: testJob, RolloutID: "rol-x", Attempt: 1, State: wire.JobReceived}
	if mut != nil {
		mut(&r)
	}
	b, _ := json.Marshal(r)
	return b
}

func TestDecodeReport(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		payload []byte
		ok      bool
	}{
		"valid":         {report(nil), true},
		"final":         {report(func(r *wire.JobReport) { r.State, r.Reason = wire.JobFailed, wire.JobReasonSelfTest }), true},
		"not JSON":      {[]byte("{"), false},
		"old schema":    {report(func(r *wire.JobReport) { r.Schema = "tg.job.report.v0" }), false},
		"other job":     {report(func(r *wire.JobReport) { r.JobID = "job-bbbbbbbbbbbbbbbbbbbb" }), false},
		"no msg id":     {report(func(r *wire.JobReport) { r.MsgID = "" }), false},
		"long msg id":   {report(func(r *wire.JobReport) { r.MsgID = strings.Repeat("m", 129) }), false},
		"attempt 0":     {report(func(r *wire.JobReport) { r.Attempt = 0 }), false},
		"unknown state": {report(func(r *wire.JobReport) { r.State = "done" }), false},
		"bad reason":    {report(func(r *wire.JobReport) { r.State, r.Reason = wire.JobFailed, "self test" }), false},
	} {
		r, err := decodeReport(tc.payload, testJob)
		if (err == nil) != tc.ok {
			t.Errorf("%s: decodeReport = %+v, %v; want ok %v", name, r, err, tc.ok)
		}
	}
	long := report(func(r *wire.JobReport) { r.Detail = strings.Repeat("é", 400) })
	r, err := decodeReport(long, testJob)
	if err != nil || len(r.Detail) > maxDetailLen || !strings.HasPrefix(strings.Repeat("é", 400), r.Detail) {
		t.Errorf("long detail: %d bytes, %v", len(r.Detail), err)
	}
}

// FuzzDecodeReport: no payload makes decoding panic, and what it accepts
// is a report applyTo can take.
func FuzzDecodeReport(f *testing.F) {
	f.Add(report(nil))
	f.Add(report(func(r *wire.JobReport) { r.State, r.Reason, r.Detail = wire.JobRefused, wire.JobReasonPolicyDeny, "no" }))
	f.Add([]byte(`{"schema":"tg.job.report.v1"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		r, err := decodeReport(payload, testJob)
		if err != nil {
			return
		}
		if r.JobID != testJob || r.MsgID == "" || r.Attempt < 1 || stateRank(r.State) == 0 || len(r.Detail) > maxDetailLen {
			t.Fatalf("accepted %+v", r)
		}
		j := store.RolloutDevice{JobID: testJob, Kind: store.JobKindInstall, State: store.JobNotified, Attempt: r.Attempt}
		next, _ := applyTo(j, r, time.Unix(0, 0))
		if !next.State.Valid() || next.Attempt != j.Attempt {
			t.Fatalf("applyTo(%+v) = %+v", r, next)
		}
	})
}

func TestApplyTo(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	install := store.RolloutDevice{JobID: testJob, Kind: store.JobKindInstall, State: store.JobNotified, Attempt: 2,
		PackageName: "yolo", PackageVersion: "2.0.0"}
	rollback := install
	rollback.Kind = store.JobKindRollback
	rep := func(state string, attempt int, mut ...func(*wire.JobReport)) wire.JobReport {
		r := wire.JobReport{State: state, Attempt: attempt, InstalledName: "yolo", InstalledVersion: "1.0.0"}
		for _, m := range mut {
			m(&r)
		}
		return r
	}
	with := func(j store.RolloutDevice, f func(*store.RolloutDevice)) store.RolloutDevice { f(&j); return j }
	for name, tc := range map[string]struct {
		job       store.RolloutDevice
		rep       wire.JobReport
		changed   bool
		state     store.JobState
		reason    string
		report    string
		prevVer   string
		installed string
	}{
		"progress":            {install, rep(wire.JobDownloading, 2), true, store.JobInProgress, "", wire.JobDownloading, "1.0.0", "1.0.0"},
		"committed":           {install, rep(wire.JobCommitted, 2, func(r *wire.JobReport) { r.InstalledVersion = "2.0.0" }), true, store.JobSucceeded, "", wire.JobCommitted, "", "2.0.0"},
		"failed":              {install, rep(wire.JobFailed, 2, func(r *wire.JobReport) { r.Reason = wire.JobReasonSelfTest }), true, store.JobFailed, wire.JobReasonSelfTest, wire.JobFailed, "1.0.0", "1.0.0"},
		"refused":             {install, rep(wire.JobRefused, 2, func(r *wire.JobReport) { r.Reason = wire.JobReasonOlderVersion }), true, store.JobRefused, wire.JobReasonOlderVersion, wire.JobRefused, "1.0.0", "1.0.0"},
		"install rolled back": {install, rep(wire.JobRolledBack, 2), true, store.JobFailed, JobReasonRolledBack, wire.JobRolledBack, "1.0.0", "1.0.0"},
		"rollback done":       {rollback, rep(wire.JobRolledBack, 2), true, store.JobSucceeded, "", wire.JobRolledBack, "", "1.0.0"},
		"stale progress":      {install, rep(wire.JobInstalling, 1), false, store.JobNotified, "", "", "", ""},
		"stale final counts":  {install, rep(wire.JobCommitted, 1, func(r *wire.JobReport) { r.InstalledVersion = "2.0.0" }), true, store.JobSucceeded, "", wire.JobCommitted, "", "2.0.0"},
		"done stays done": {with(install, func(j *store.RolloutDevice) { j.State, j.ReportState = store.JobSucceeded, wire.JobCommitted }),
			rep(wire.JobFailed, 2), false, store.JobSucceeded, "", wire.JobCommitted, "", ""},
		"late progress keeps the report": {with(install, func(j *store.RolloutDevice) { j.State, j.ReportState = store.JobInProgress, wire.JobInstalling }),
			rep(wire.JobReceived, 2), true, store.JobInProgress, "", wire.JobInstalling, "1.0.0", "1.0.0"},
		"cancelled keeps its state": {with(install, func(j *store.RolloutDevice) { j.State = store.JobCancelled }),
			rep(wire.JobCommitted, 2), true, store.JobCancelled, "", wire.JobCommitted, "1.0.0", "1.0.0"},
	} {
		got, changed := applyTo(tc.job, tc.rep, now)
		if changed != tc.changed || got.State != tc.state || got.Reason != tc.reason || got.ReportState != tc.report ||
			got.PreviousVersion != tc.prevVer || got.InstalledVersion != tc.installed || got.Attempt != tc.job.Attempt {
			t.Errorf("%s: applyTo = %+v (changed %v)", name, got, changed)
		}
	}
}

// TestDroppedReportAsksAgain: a report dropped because its worker's queue
// is full was acknowledged to the device by the broker, so nothing would
// send it again; the engine must ask the open jobs' devices again.
func TestDroppedReportAsksAgain(t *testing.T) {
	t.Parallel()
	e := &Engine{Deps: Deps{Log: slog.New(slog.DiscardHandler)}, wake: make(chan struct{}, 1),
		queues: []chan reportMsg{make(chan reportMsg)}} // no room, no worker
	topic := "tg/v1/acme/devices/dev-1/jobs/job-aaaaaaaaaaaaaaaaaaaa"
	if _, ok := parseReportTopic(topic); !ok {
		t.Fatalf("test topic %q does not parse", topic)
	}
	e.HandleMessage(topic, []byte(`{}`))
	if !e.resync.Load() {
		t.Fatal("a dropped report did not request a resync")
	}
}
