package rollout

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// statusLog records the retained statuses an engine publishes.
type statusLog struct {
	mu       sync.Mutex
	statuses []Status
}

func (l *statusLog) publish(topic string, payload []byte, retain bool) error {
	if !strings.HasSuffix(topic, "/status") || !retain {
		return nil
	}
	var st Status
	if err := json.Unmarshal(payload, &st); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.statuses = append(l.statuses, st)
	return nil
}

func (l *statusLog) all() []Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Status(nil), l.statuses...)
}

// waitStatuses waits until at least n statuses were published.
func (l *statusLog) waitStatuses(t *testing.T, n int) []Status {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if all := l.all(); len(all) >= n {
			return all
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d statuses published, want %d: %+v", len(l.all()), n, l.all())
		}
	}
}

type statusFixture struct {
	st      *store.Store
	rollout store.Rollout
	devices []store.Device
}

// newStatusFixture is a running rollout (one wave) of a fleet of n
// enrolled devices, in SQLite.
func newStatusFixture(t *testing.T, n int) statusFixture {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "cp.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if _, err := st.CreateTenant(ctx, store.Tenant{ID: "acme", Name: "Acme", WrappedDEK: []byte("dek")}); err != nil {
		t.Fatal(err)
	}
	fleet, err := st.CreateFleet(ctx, "acme", store.Fleet{Name: "edge", Policy: store.FleetPolicy{CertTTL: store.Duration(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("yolo@2.0.0"))
	pkg, err := st.CreatePackage(ctx, "acme", store.Package{ID: hex.EncodeToString(sum[:]), Name: "yolo", Version: "2.0.0",
		SignedID: strings.Repeat("ab", 32), Size: 4096, PublisherKeyID: strings.Repeat("cd", 16), Manifest: []byte(`{}`),
		ExpiresAt: time.Now().Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	f := statusFixture{st: st}
	for i := range n {
		d, err := st.CreateDevice(ctx, "acme", store.Device{FleetID: fleet.ID, Name: fmt.Sprintf("dev-%d", i), TPMKind: store.TPMNone})
		if err != nil {
			t.Fatal(err)
		}
		f.devices = append(f.devices, d)
	}
	f.rollout, err = st.CreateRollout(ctx, "acme", store.Rollout{PackageID: pkg.ID, PackageName: pkg.Name, PackageVersion: pkg.Version,
		PackageSize: pkg.Size, FleetID: fleet.ID, Waves: []int{100}, SuccessThreshold: 100, FailureThreshold: 100,
		DeviceTimeout: time.Hour, CreatedBy: "op-test"})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// report applies a device's report as the broker would hand it over.
func (f statusFixture) report(t *testing.T, e *Engine, j store.RolloutDevice, state string) {
	t.Helper()
	payload, _ := json.Marshal(wire.JobReport{Schema: wire.JobReportSchema, MsgID: "m-" + state, JobID: j.JobID,
		RolloutID: j.RolloutID, Attempt: j.Attempt, State: state, InstalledName: "yolo", InstalledVersion: "2.0.0", At: time.Now()})
	m, ok := parseReportTopic(mqttacl.Prefix + "/acme/devices/" + j.DeviceID + "/jobs/" + j.JobID)
	if !ok {
		t.Fatalf("report topic of %s does not parse", j.JobID)
	}
	m.payload = payload
	if err := e.applyReport(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

func (f statusFixture) jobs(t *testing.T) []store.RolloutDevice {
	t.Helper()
	jobs, err := f.st.ListRolloutJobs(context.Background(), "acme", f.rollout.ID)
	if err != nil {
		t.Fatal(err)
	}
	return jobs
}

// runPublisher runs e's status publisher until stop, which returns once it
// has ended (publishing what it held).
func runPublisher(e *Engine) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		e.publishStatuses(ctx)
	}()
	return ctx, func() {
		cancel()
		<-stopped
	}
}

// TestStatusCoalescing: job changes publish a rollout's status at most
// once per StatusInterval — the first at once, the rest held — yet the
// final state is never lost: a change of the rollout's own state (here its
// completion) is published at once with the counts of that moment, and a
// held status is published when the engine stops.
func TestStatusCoalescing(t *testing.T) {
	t.Parallel()
	const n = 5
	f := newStatusFixture(t, n)
	var log statusLog
	// An hour: nothing held is published by the clock during the test.
	e := New(Deps{Store: f.st, Publish: log.publish, Log: slog.New(slog.DiscardHandler), StatusInterval: time.Hour})
	ctx, stop := runPublisher(e)
	defer stop()

	// First pass: every device gets its job, released at once. The
	// status is not held: nothing was published in the last interval.
	if _, err := e.advance(ctx, "acme", f.rollout.ID, f.rollout.FleetID); err != nil {
		t.Fatal(err)
	}
	first := log.waitStatuses(t, 1)[0]
	if first.State != "running" || len(first.Waves) != 1 || first.Waves[0].InFlight != n || first.Waves[0].Size != n {
		t.Fatalf("first status = %+v", first)
	}

	// Reports within the interval are held.
	jobs := f.jobs(t)
	for _, j := range jobs[:n-1] {
		f.report(t, e, j, wire.JobDownloading)
		f.report(t, e, j, wire.JobCommitted)
	}
	if got := log.all(); len(got) != 1 {
		t.Fatalf("%d statuses published within one interval, want 1: %+v", len(got), got)
	}

	// The last device commits; the pass that completes the rollout
	// publishes at once, whatever the interval.
	f.report(t, e, jobs[n-1], wire.JobCommitted)
	if _, err := e.advance(ctx, "acme", f.rollout.ID, f.rollout.FleetID); err != nil {
		t.Fatal(err)
	}
	all := log.all()
	last := all[len(all)-1]
	if last.State != "completed" || last.Waves[0].Succeeded != n || last.Waves[0].InFlight != 0 {
		t.Fatalf("last status = %+v", last)
	}
	if len(all) != 2 {
		t.Errorf("%d statuses published, want 2 (the first and the final): %+v", len(all), all)
	}
}

// TestStatusFlushedOnStop: a status held by the interval is published when
// the engine stops, with the state of that moment.
func TestStatusFlushedOnStop(t *testing.T) {
	t.Parallel()
	const n = 3
	f := newStatusFixture(t, n)
	var log statusLog
	e := New(Deps{Store: f.st, Publish: log.publish, Log: slog.New(slog.DiscardHandler), StatusInterval: time.Hour})
	ctx, stop := runPublisher(e)
	if _, err := e.advance(ctx, "acme", f.rollout.ID, f.rollout.FleetID); err != nil {
		t.Fatal(err)
	}
	log.waitStatuses(t, 1)
	for _, j := range f.jobs(t) {
		f.report(t, e, j, wire.JobCommitted)
	}
	if got := log.all(); len(got) != 1 {
		t.Fatalf("%d statuses published within one interval, want 1", len(got))
	}
	stop()
	all := log.all()
	last := all[len(all)-1]
	if len(all) != 2 || last.State != "running" || last.Waves[0].Succeeded != n || last.Waves[0].InFlight != 0 {
		t.Fatalf("statuses = %+v", all)
	}
}

// TestStatusCountsMatchRows: the status built from the aggregate counts
// is the one the job rows give, rollback jobs included.
func TestStatusCountsMatchRows(t *testing.T) {
	t.Parallel()
	const n = 4
	f := newStatusFixture(t, n)
	e := New(Deps{Store: f.st, Log: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	if _, err := e.advance(ctx, "acme", f.rollout.ID, f.rollout.FleetID); err != nil {
		t.Fatal(err)
	}
	jobs := f.jobs(t)
	f.report(t, e, jobs[0], wire.JobCommitted)
	f.report(t, e, jobs[1], wire.JobFailed)
	f.report(t, e, jobs[2], wire.JobInstalling)
	if _, err := f.st.RollbackRollout(ctx, "acme", f.rollout.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.advance(ctx, "acme", f.rollout.ID, f.rollout.FleetID); err != nil {
		t.Fatal(err)
	}
	r, err := f.st.GetRollout(ctx, "acme", f.rollout.ID)
	if err != nil {
		t.Fatal(err)
	}
	counts, err := f.st.CountRolloutJobs(ctx, "acme", f.rollout.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := newStatus(r, counts)
	want := statusFromRows(r, f.jobs(t))
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) {
		t.Errorf("status from counts:\n%s\nfrom the rows:\n%s", gj, wj)
	}
	if got.Rollback == nil || got.Rollback.InFlight != 1 || got.Waves[0].Succeeded != 1 || got.Waves[0].Failed != 1 {
		t.Errorf("status = %s", gj)
	}
}

// statusFromRows is the status as it was computed before the counts: from
// every job row.
func statusFromRows(r store.Rollout, jobs []store.RolloutDevice) Status {
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
