package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// loadEmptyWindow is how long the control plane is measured empty, before
// the first device: what it spends on its own.
const loadEmptyWindow = 10 * time.Second

// loadSettings are the load phase's knobs (BENCH_LOAD_*).
type loadSettings struct {
	devices  int
	baseline int // 0: no baseline run
	// duration is the steady phase: the fleet attesting and sending
	// telemetry, no rollout.
	duration          time.Duration
	attestInterval    time.Duration
	telemetryInterval time.Duration
	waves             []int
	mib               int
	timeout           time.Duration
	enrollConc        int
}

func parseLoadSettings(enrollConc int) (loadSettings, error) {
	l := loadSettings{enrollConc: enrollConc}
	var err, err1, err2, err3, err4, err5, err6, err7 error
	l.devices, err = envInt("BENCH_LOAD_DEVICES", 1000)
	l.baseline, err1 = envIntZero("BENCH_LOAD_BASELINE_DEVICES", 100)
	l.duration, err2 = envDuration("BENCH_LOAD_DURATION", 3*time.Minute)
	l.attestInterval, err3 = envDuration("BENCH_LOAD_ATTEST_INTERVAL", 30*time.Second)
	l.telemetryInterval, err4 = envDuration("BENCH_LOAD_TELEMETRY_INTERVAL", 10*time.Second)
	l.mib, err5 = envInt("BENCH_LOAD_PACKAGE_MIB", 1)
	l.timeout, err6 = envDuration("BENCH_LOAD_ROLLOUT_TIMEOUT", 15*time.Minute)
	l.waves, err7 = envWaves("BENCH_LOAD_WAVES", "10,50,100")
	if err := errors.Join(err, err1, err2, err3, err4, err5, err6, err7); err != nil {
		return l, err
	}
	if l.baseline >= l.devices {
		return l, fmt.Errorf("BENCH_LOAD_BASELINE_DEVICES=%d: the baseline must be smaller than BENCH_LOAD_DEVICES=%d (0 skips it)", l.baseline, l.devices)
	}
	return l, nil
}

// fleetLoadResult is the load phase (issue 8): the same scenario at the
// baseline's size and at full size, each on its own control plane, and
// the ratios between them.
type fleetLoadResult struct {
	Baseline *loadRun `json:"baseline,omitempty"`
	Main     loadRun  `json:"main"`
	// Ratios full size / baseline. CPUPerDevice compares the control
	// plane's steady CPU per device (1.00: it scales linearly with the
	// fleet), RSSPerDevice the RSS the fleet adds per device; the
	// latencies and the rollout's total time are plain ratios (the fleet
	// is DeviceRatio times larger).
	DeviceRatio        float64 `json:"device_ratio,omitempty"`
	CPUPerDeviceRatio  float64 `json:"cpu_per_device_ratio,omitempty"`
	RSSPerDeviceRatio  float64 `json:"rss_per_device_ratio,omitempty"`
	VerdictP99Ratio    float64 `json:"verdict_p99_ratio,omitempty"`
	JobP99Ratio        float64 `json:"job_p99_ratio,omitempty"`
	RolloutTotalRatio  float64 `json:"rollout_total_ratio,omitempty"`
	VerdictGoalRatio   float64 `json:"verdict_p99_goal_ratio"` // full size p99 / 1 s (issue 4)
	AnchorVerdictGoalS float64 `json:"verdict_goal_s"`
}

// loadRun is one size of the scenario.
type loadRun struct {
	Devices            int     `json:"devices"`
	AttestIntervalS    float64 `json:"attest_interval_s"`
	TelemetryIntervalS float64 `json:"telemetry_interval_s"`
	Waves              []int   `json:"waves"`
	PackageBytes       int64   `json:"package_bytes"`

	// Setup: every device enrolls with the full TPM protocol (soft TPM,
	// KEM key) and connects at once, EnrollConc at a time; Online is the
	// control plane's presence view afterwards (GET /api/v1/devices?online).
	EnrollConc      int        `json:"enroll_concurrency"`
	SetupS          float64    `json:"setup_s"`
	SetupPerS       float64    `json:"setup_devices_per_s"`
	EnrollMs        float64    `json:"enroll_ms_mean"`
	ConnectMs       float64    `json:"connect_ms_mean"`
	Setup           phaseStats `json:"setup"`
	OnlineAfterSync int        `json:"online_after_setup"`
	WarmupS         float64    `json:"warmup_s"`
	NeverTrusted    int        `json:"never_trusted"`

	// The control plane's RSS: before the first device, its high-water
	// mark over the whole run (VmHWM), and what the fleet adds per device
	// (steady mean − empty). Empty is the control plane alone, before the
	// first device, for loadEmptyWindow.
	Empty           phaseStats `json:"empty"`
	RSSEmptyMiB     float64    `json:"rss_empty_mib"`
	RSSPeakMiB      float64    `json:"rss_peak_mib"`
	RSSPerDeviceKiB float64    `json:"rss_per_device_kib"`

	// Steady: attestation and telemetry, no rollout. CPUMsPerDeviceMin
	// is the control plane's CPU per device and minute, less what it
	// spends empty (its own timers).
	Steady            phaseStats `json:"steady"`
	CPUMsPerDeviceMin float64    `json:"steady_cpu_ms_per_device_minute"`
	// Rollout: from POST /api/v1/rollouts until the operator saw it
	// completed, attestation and telemetry going on.
	RolloutPhase phaseStats `json:"rollout_phase"`

	// Attestation over the steady and rollout phases: challenges
	// received, evidence published, verdicts the operator received for
	// it (paired by the challenge they answer), lost = evidence −
	// verdicts after a grace period.
	Challenges     int          `json:"challenges"`
	Evidence       int          `json:"evidence"`
	Verdicts       int          `json:"verdicts"`
	Lost           int          `json:"lost_verdicts"`
	VerdictSteady  latencyStats `json:"verdict_latency_steady"`
	VerdictRollout latencyStats `json:"verdict_latency_rollout"`
	VerdictAll     latencyStats `json:"verdict_latency_all"`
	EvidencePerS   float64      `json:"evidence_per_s"`
	NotTrusted     int          `json:"not_trusted"`
	FirstNot       string       `json:"first_not_trusted,omitempty"`
	Unmatched      int          `json:"unmatched_verdicts"`
	ChallengeGapS  [2]float64   `json:"challenge_gap_mean_max_s"`

	// Telemetry: heartbeats published in the steady and rollout phases and
	// those the operator (subscribed to devices/+/telemetry) received.
	TelemetrySent  int          `json:"telemetry_sent"`
	TelemetryRecv  int          `json:"telemetry_received"`
	TelemetryLost  int          `json:"telemetry_lost"`
	TelemetryBytes int          `json:"telemetry_payload_bytes"`
	TelemetryPerS  float64      `json:"telemetry_per_s"`
	TelemetryLat   latencyStats `json:"telemetry_latency"`

	// The rollout. Job latency, per device: from the control plane
	// releasing the job (notified_at: cmd/job published) to it recording
	// the device's final report (finished_at: the committed report
	// acknowledged in the database), both on the control plane's clock.
	// Queue: rollout created → job released (the wave wait). Total:
	// created → completed by the control plane's own times.
	RolloutState   string         `json:"rollout_state"`
	RolloutTotalS  float64        `json:"rollout_total_s"`
	RolloutWallS   float64        `json:"rollout_wall_s"`
	Succeeded      int            `json:"succeeded"`
	NotDone        int            `json:"not_succeeded"`
	Job            latencyStats   `json:"job_latency"`
	JobQueue       latencyStats   `json:"job_queue"`
	JobEndToEnd    latencyStats   `json:"job_created_to_finished"`
	WaveStats      []waveStat     `json:"waves_measured"`
	Grants         int            `json:"key_grants"`
	GrantsRefused  int            `json:"key_grants_refused"`
	Grant          latencyStats   `json:"key_grant_latency"`
	ServedMiB      float64        `json:"served_mib"`
	Renotified     int64          `json:"renotified"`
	Resumed        int64          `json:"downloads_resumed"`
	OnlineAtEnd    int            `json:"online_at_end"`
	ConnErrors     int            `json:"conn_errors"`
	FirstConnError string         `json:"first_conn_error,omitempty"`
	DeviceFailures []string       `json:"device_failures,omitempty"`
	Warnings       map[string]int `json:"warnings,omitempty"`
}

// phaseStats is the control plane (and the machine) over one phase.
type phaseStats struct {
	Seconds  float64    `json:"seconds"`
	UserS    float64    `json:"cpu_user_s"`
	SysS     float64    `json:"cpu_sys_s"`
	CPUPct   float64    `json:"cpu_pct"` // of one core, user+sys
	RSSMean  float64    `json:"rss_mean_mib"`
	RSSMax   float64    `json:"rss_max_mib"`
	Machine  float64    `json:"machine_busy_pct"` // of all cores (/proc/stat)
	LoadGen  float64    `json:"loadgen_cpu_pct"`  // this process, of one core
	LoadAvg1 [3]float64 `json:"loadavg_1m_min_mean_max"`
}

// waveStat is one wave: its jobs and the span from the first release to
// the last final report.
type waveStat struct {
	Index int     `json:"index"`
	Size  int     `json:"size"`
	S     float64 `json:"span_s"`
}

// failures lists what went wrong (never a timing).
func (r loadRun) failures() []string {
	var f []string
	add := func(format string, a ...any) {
		f = append(f, fmt.Sprintf("load (%d devices): ", r.Devices)+fmt.Sprintf(format, a...))
	}
	if r.OnlineAfterSync < r.Devices {
		add("%d of %d devices online in the control plane after setup", r.OnlineAfterSync, r.Devices)
	}
	if r.NeverTrusted > 0 {
		add("%d devices never had a trusted verdict", r.NeverTrusted)
	}
	if r.NotTrusted > 0 {
		add("%d verdicts not trusted (first: %s)", r.NotTrusted, r.FirstNot)
	}
	if r.Evidence == 0 {
		add("no evidence sent while measuring")
	}
	if r.Lost > lostTolerance(r.Evidence) {
		add("%d of %d pieces of evidence got no verdict (tolerance %d)", r.Lost, r.Evidence, lostTolerance(r.Evidence))
	}
	if r.TelemetrySent == 0 {
		add("no telemetry sent while measuring")
	}
	if r.TelemetryLost > lostTolerance(r.TelemetrySent) {
		add("%d of %d heartbeats did not reach the operator (tolerance %d)", r.TelemetryLost, r.TelemetrySent, lostTolerance(r.TelemetrySent))
	}
	if r.RolloutState != client.RolloutCompleted {
		add("the rollout is %q, not completed", r.RolloutState)
	}
	if r.NotDone > 0 {
		add("%d of %d devices did not converge (install job not succeeded)", r.NotDone, r.Devices)
	}
	if r.GrantsRefused > 0 {
		add("%d key grants refused", r.GrantsRefused)
	}
	if len(r.DeviceFailures) > 0 {
		add("device failures: %s", strings.Join(r.DeviceFailures, "; "))
	}
	if r.ConnErrors > 0 {
		add("%d connections lost (%s)", r.ConnErrors, r.FirstConnError)
	}
	if r.OnlineAtEnd < r.Devices {
		add("%d of %d devices online in the control plane at the end", r.OnlineAtEnd, r.Devices)
	}
	return f
}

func (r fleetLoadResult) failures() []string {
	var f []string
	if r.Baseline != nil {
		f = append(f, r.Baseline.failures()...)
	}
	return append(f, r.Main.failures()...)
}

// benchLoad runs the scenario at the baseline's size, then at full size.
func benchLoad(ctx context.Context, s settings, cpBin string) (fleetLoadResult, error) {
	ls := s.load
	res := fleetLoadResult{AnchorVerdictGoalS: attestGoal.Seconds()}
	if err := checkFileLimit(ls.devices); err != nil {
		return res, err
	}
	tgspBin := filepath.Join(s.binDir, "tgsp")
	if ls.baseline > 0 {
		step(fmt.Sprintf("load: baseline, %d devices", ls.baseline))
		b, err := runLoadFleet(ctx, s.work, ls, cpBin, tgspBin, ls.baseline)
		if err != nil {
			return res, fmt.Errorf("load (%d devices): %w", ls.baseline, err)
		}
		res.Baseline = &b
	}
	step(fmt.Sprintf("load: %d devices", ls.devices))
	m, err := runLoadFleet(ctx, s.work, ls, cpBin, tgspBin, ls.devices)
	if err != nil {
		return res, fmt.Errorf("load (%d devices): %w", ls.devices, err)
	}
	res.Main = m
	res.VerdictGoalRatio = m.VerdictAll.P99Ms / ms(attestGoal)
	if b := res.Baseline; b != nil {
		res.DeviceRatio = float64(m.Devices) / float64(b.Devices)
		res.CPUPerDeviceRatio = safeDiv(m.CPUMsPerDeviceMin, b.CPUMsPerDeviceMin)
		res.RSSPerDeviceRatio = safeDiv(m.RSSPerDeviceKiB, b.RSSPerDeviceKiB)
		res.VerdictP99Ratio = safeDiv(m.VerdictAll.P99Ms, b.VerdictAll.P99Ms)
		res.JobP99Ratio = safeDiv(m.Job.P99Ms, b.Job.P99Ms)
		res.RolloutTotalRatio = safeDiv(m.RolloutTotalS, b.RolloutTotalS)
	}
	return res, nil
}

func safeDiv(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// checkFileLimit makes sure this process may hold the fleet's sockets: an
// MQTT session and up to two HTTPS connections per device, and the
// operator's. Go raises the soft limit to the hard one at start-up (and
// so does the control plane, a Go program too); a hard limit below the
// need is an error that says what to raise.
func checkFileLimit(devices int) error {
	want := uint64(3*devices + 1024)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur < want && lim.Max > lim.Cur {
		lim.Cur = min(lim.Max, want)
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if lim.Cur < want {
		return fmt.Errorf("load: open-file limit %d (hard %d) is below the %d that %d devices need: raise it (ulimit -Hn)", lim.Cur, lim.Max, want, devices)
	}
	return nil
}

// loadFleet is one run's shared state.
type loadFleet struct {
	cp   *controlPlane
	rb   *rolloutBench
	tr   *attestTracker
	tel  *telemetryTracker
	devs []*rolloutDevice
	op   *mqttConn

	rolloutMu    sync.Mutex
	rolloutState map[string]string // rollout id → state, from its retained status
	rolloutSeen  chan struct{}     // signalled on every status
}

// runLoadFleet runs the scenario with n devices on a control plane of its
// own.
func runLoadFleet(ctx context.Context, work0 string, ls loadSettings, cpBin, tgspBin string, n int) (res loadRun, err error) {
	res = loadRun{Devices: n, AttestIntervalS: ls.attestInterval.Seconds(), TelemetryIntervalS: ls.telemetryInterval.Seconds(),
		Waves: ls.waves, EnrollConc: ls.enrollConc}
	work := filepath.Join(work0, fmt.Sprintf("load-%d", n))
	if err := os.MkdirAll(work, 0o700); err != nil {
		return res, err
	}
	cp, err := startControlPlane(ctx, cpBin, work, fmt.Sprintf("attestation: {interval: %s}\n", ls.attestInterval))
	if err != nil {
		return res, err
	}
	logStart := fileSize(cp.proc.log)
	meter, err := startPhaseMeter(cp.proc.pid())
	if err != nil {
		return res, err
	}
	select {
	case <-time.After(loadEmptyWindow):
	case <-ctx.Done():
		meter.stop()
		return res, ctx.Err()
	}
	if res.Empty, err = meter.stop(); err != nil {
		return res, err
	}
	res.RSSEmptyMiB = res.Empty.RSSMean

	var rolloutRes rolloutResult // the simulated devices' job failures land here
	lf := &loadFleet{cp: cp, tr: newAttestTracker(n, ls.attestInterval), tel: newTelemetryTracker(),
		devs: make([]*rolloutDevice, n), rolloutState: map[string]string{}, rolloutSeen: make(chan struct{}, 1)}
	lf.rb = &rolloutBench{ctx: ctx, cp: cp, res: &rolloutRes, tracker: lf.tr}
	var readers sync.WaitGroup
	beatsStop := make(chan struct{})
	var beats sync.WaitGroup
	shutdown := sync.OnceValue(func() error {
		lf.rb.mu.Lock()
		lf.rb.closing = true
		lf.rb.mu.Unlock()
		lf.tr.mu.Lock()
		lf.tr.closing = true
		lf.tr.mu.Unlock()
		close(beatsStop)
		beats.Wait()
		for _, d := range lf.devs {
			if d != nil && d.mc != nil {
				_ = d.mc.write([]byte{0xe0, 0x00}) // DISCONNECT: no Will
				_ = d.mc.c.Close()
			}
			if d != nil && d.hc != nil {
				d.hc.CloseIdleConnections()
			}
		}
		if lf.op != nil {
			_ = lf.op.write([]byte{0xe0, 0x00})
			_ = lf.op.c.Close()
		}
		readers.Wait()
		lf.rb.jobs.Wait()
		stopErr := cp.proc.stop(30 * time.Second)
		res.Warnings = logWarnings(cp.proc.log, logStart)
		if stopErr != nil {
			return fmt.Errorf("tg-controlplane (load) did not stop cleanly: %w", stopErr)
		}
		return nil
	})
	defer func() {
		if stopErr := shutdown(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()

	fleet, err := cp.api.CreateFleet(ctx, client.FleetCreate{Name: "load", Policy: &client.FleetPolicyPatch{AllowSimulatedTPM: ptr(true)}})
	if err != nil {
		return res, err
	}
	if err := lf.pushPackage(ctx, tgspBin, filepath.Join(work, "pkg"), ls.mib, &res); err != nil {
		return res, err
	}
	host, _, err := net.SplitHostPort(cp.mqttAddr)
	if err != nil {
		return res, err
	}
	if lf.op, err = operatorSession(ctx, cp, host); err != nil {
		return res, fmt.Errorf("operator: %w", err)
	}
	if err := lf.op.subscribeMany([]string{mqttacl.FleetAttestationFilter(tenant, fleet.ID), mqttacl.RolloutsFilter(tenant),
		mqttacl.Prefix + "/" + tenant + "/devices/+/telemetry"}, 10*time.Second); err != nil {
		return res, fmt.Errorf("operator: %w", err)
	}
	readers.Go(lf.operatorLoop)

	step(fmt.Sprintf("load: %d devices enroll (full TPM protocol, soft TPMs) and connect, %d at a time; heartbeats every %s",
		n, ls.enrollConc, ls.telemetryInterval))
	tokens, err := createTokens(ctx, cp.api, fleet.ID, n)
	if err != nil {
		return res, err
	}
	if err := lf.setup(ctx, host, tokens, ls, &readers, &beats, beatsStop, &res); err != nil {
		return res, err
	}
	stopPing := make(chan struct{})
	defer close(stopPing)
	go rolloutPing(lf.devs, lf.op, stopPing)
	res.OnlineAfterSync = countOnline(ctx, cp.api, fleet.ID, n)

	step(fmt.Sprintf("load: waiting until every device has a trusted verdict (challenges every %s)", ls.attestInterval))
	t0 := time.Now()
	select {
	case <-lf.tr.all:
	case <-time.After(3*ls.attestInterval + 60*time.Second):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	res.WarmupS = time.Since(t0).Seconds()
	lf.tr.mu.Lock()
	res.NeverTrusted = n - lf.tr.trusted
	lf.tr.mu.Unlock()
	if res.NeverTrusted > 0 {
		return res, fmt.Errorf("%d of %d devices not trusted after %s", res.NeverTrusted, n, time.Since(t0).Round(time.Second))
	}

	step(fmt.Sprintf("load: steady phase, %s (attestation every %s, heartbeats every %s)", ls.duration, ls.attestInterval, ls.telemetryInterval))
	lf.tr.setPhase(1)
	lf.tel.setPhase(1)
	lf.tr.mu.Lock()
	wstart := lf.tr.wstart
	lf.tr.mu.Unlock()
	if meter, err = startPhaseMeter(cp.proc.pid()); err != nil {
		return res, err
	}
	select {
	case <-time.After(ls.duration):
	case <-cp.proc.done:
	case <-ctx.Done():
		meter.stop()
		return res, ctx.Err()
	}
	if res.Steady, err = meter.stop(); err != nil {
		return res, err
	}
	if cp.proc.exited() {
		return res, fmt.Errorf("tg-controlplane exited under load:\n%s", cp.proc.tail())
	}
	res.RSSPerDeviceKiB = (res.Steady.RSSMean - res.RSSEmptyMiB) * 1024 / float64(n)
	res.CPUMsPerDeviceMin = (res.Steady.CPUPct - res.Empty.CPUPct) / 100 * 60 * 1000 / float64(n)

	step(fmt.Sprintf("load: one rollout (%s, waves %v) to %d devices, attestation and heartbeats going on", mibStr(res.PackageBytes), ls.waves, n))
	rolloutAt := time.Since(wstart)
	if meter, err = startPhaseMeter(cp.proc.pid()); err != nil {
		return res, err
	}
	r, err := lf.rollout(ctx, fleet.ID, ls, &res)
	rp, err2 := meter.stop()
	if err := errors.Join(err, err2); err != nil {
		return res, err
	}
	res.RolloutPhase = rp

	// The verdicts and heartbeats of the last evidence and beats.
	lf.tr.setPhase(2)
	lf.tel.setPhase(2)
	grace := time.After(max(10*time.Second, ls.telemetryInterval))
	for _, ch := range []chan struct{}{lf.tr.drained, lf.tel.drained} {
		select {
		case <-ch:
		case <-grace:
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	res.OnlineAtEnd = countOnline(ctx, cp.api, fleet.ID, n)
	if hwm, err := readHWM(cp.proc.pid()); err == nil {
		res.RSSPeakMiB = hwm
	}
	if cp.proc.exited() {
		return res, fmt.Errorf("tg-controlplane exited under load:\n%s", cp.proc.tail())
	}
	lf.collect(r, rolloutAt, &res)
	if err := writeLatencies(filepath.Join(work, "latency.csv"), lf.tr.latency); err != nil {
		return res, err
	}
	step(fmt.Sprintf("load: stopping %d devices and the control plane", n))
	if err := shutdown(); err != nil {
		return res, err
	}
	res.ConnErrors += rolloutRes.ConnErrors
	if res.FirstConnError == "" {
		res.FirstConnError = rolloutRes.FirstConnError
	}
	res.DeviceFailures = rolloutRes.Failures
	return res, nil
}

// pushPackage builds a model package of mib MiB for this control plane,
// registers its publisher, pushes it, and opens its header so that the
// devices can open their key grants.
func (lf *loadFleet) pushPackage(ctx context.Context, tgspBin, dir string, mib int, res *loadRun) error {
	rcpt, err := lf.cp.api.PackageRecipient(ctx)
	if err != nil {
		return err
	}
	pkg, err := buildRolloutPackage(ctx, tgspBin, dir, mib, rcpt.PublicKeyPEM)
	if err != nil {
		return err
	}
	res.PackageBytes = pkg.size
	pubPEM, err := os.ReadFile(pkg.signerKey + ".pub")
	if err != nil {
		return err
	}
	if _, err := lf.cp.api.CreatePublisher(ctx, client.PublisherCreate{Name: "bench", PublicKeyPEM: string(pubPEM)}); err != nil {
		return err
	}
	body, err := os.Open(pkg.path)
	if err != nil {
		return err
	}
	pushed, _, err := lf.cp.api.PushPackage(ctx, body, pkg.size)
	body.Close()
	if err != nil {
		return fmt.Errorf("push the package: %w", err)
	}
	lf.rb.pkgID = pushed.ID
	// The header stays in memory: the file is small, read it whole.
	b, err := os.ReadFile(pkg.path)
	if err != nil {
		return err
	}
	signer, err := tgsp.ParseSignerPublicKey(pubPEM)
	if err != nil {
		return err
	}
	if lf.rb.pkgHdr, err = tgsp.Open(bytes.NewReader(b), int64(len(b))); err != nil {
		return err
	}
	return lf.rb.pkgHdr.VerifySignature([]*tgsp.SignerPublicKey{signer}, time.Now())
}

// setup enrolls and connects every device, ls.enrollConc at a time, and
// starts its command loop and heartbeats.
func (lf *loadFleet) setup(ctx context.Context, host string, tokens []string, ls loadSettings,
	readers, beats *sync.WaitGroup, beatsStop <-chan struct{}, res *loadRun) error {
	n := len(lf.devs)
	errs := make([]error, n)
	var enrollT, connectT atomic.Int64
	var next atomic.Int64
	meter, err := startPhaseMeter(lf.cp.proc.pid())
	if err != nil {
		return err
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range ls.enrollConc {
		wg.Go(func() {
			hc := deviceHTTP(lf.cp.roots)
			defer hc.CloseIdleConnections()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t, err := newSoftTPM()
				if err != nil {
					errs[i] = err
					continue
				}
				d := &rolloutDevice{tpm: t, rb: lf.rb, started: map[string]bool{}}
				t0 := time.Now()
				cert, err := d.enroll(ctx, hc, lf.cp.httpsURL, lf.cp.roots, tokens[i])
				enrollT.Add(int64(time.Since(t0)))
				if err != nil {
					errs[i] = fmt.Errorf("enroll: %w", err)
					continue
				}
				lf.tr.register(d.id)
				t1 := time.Now()
				cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: lf.cp.roots, ServerName: host, Certificates: []tls.Certificate{cert}}
				d.mc, err = connectSubscribed(lf.cp.mqttAddr, cfg, d.id, 30*time.Second)
				connectT.Add(int64(time.Since(t1)))
				if err != nil {
					errs[i] = fmt.Errorf("device %s: connect: %w", d.id, err)
					continue
				}
				lf.devs[i] = d
				readers.Go(d.loop)
				beats.Go(func() { heartbeatLoop(d, lf.tel, ls.telemetryInterval, beatsStop) })
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	if res.Setup, err = meter.stop(); err != nil {
		return err
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	res.SetupS = wall.Seconds()
	res.SetupPerS = float64(n) / wall.Seconds()
	res.EnrollMs = ms(time.Duration(enrollT.Load())) / float64(n)
	res.ConnectMs = ms(time.Duration(connectT.Load())) / float64(n)
	return nil
}

// connectSubscribed connects a device as the agent does: mTLS, CONNECT
// with its offline Will, SUBSCRIBE to its commands, and only then the
// retained online status (whose PUBACK the device's loop reads), so the
// challenge a device gets as soon as it is online is never missed.
func connectSubscribed(addr string, cfg *tls.Config, device string, keepAlive time.Duration) (*mqttConn, error) {
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
	c := tls.Client(raw, cfg)
	fail := func(err error) (*mqttConn, error) {
		_ = c.Close()
		return nil, err
	}
	if err := c.Handshake(); err != nil {
		return fail(fmt.Errorf("tls: %w", err))
	}
	topic := mqttacl.StatusTopic(tenant, device)
	will, _ := json.Marshal(wire.Status{Schema: wire.StatusSchema, Device: device, State: wire.StateOffline, Session: 1})
	if _, err := c.Write(connectPacket(device, topic, will, keepAlive)); err != nil {
		return fail(fmt.Errorf("write CONNECT: %w", err))
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return fail(fmt.Errorf("read CONNACK: %w", err))
	}
	if ack[0] != pktConnack<<4 || ack[1] != 0x02 || ack[3] != 0 {
		return fail(fmt.Errorf("CONNACK % x: refused", ack))
	}
	_ = raw.SetDeadline(time.Time{})
	mc := newMQTTConn(c)
	if err := mc.subscribe(mqttacl.CmdFilter(tenant, device), 1, 10*time.Second); err != nil {
		return fail(err)
	}
	online, _ := json.Marshal(wire.Status{Schema: wire.StatusSchema, Device: device, State: wire.StateOnline, Session: 1, TS: time.Now().UTC()})
	mc.nextID = 1 // the status's packet id; publish1 goes on from 2
	if err := mc.write(publishPacket(topic, online, 1)); err != nil {
		return fail(fmt.Errorf("write PUBLISH: %w", err))
	}
	return mc, nil
}

// countOnline is the control plane's presence view of the fleet: the
// devices it lists as online, polled for up to 10 s until all n are (the
// presence tracker writes each status to the store).
func countOnline(ctx context.Context, api *client.Client, fleetID string, n int) int {
	var got int
	for range 20 {
		d, err := api.ListDevices(ctx, client.DeviceFilter{Fleet: fleetID, Online: ptr(true)})
		if err == nil {
			if got = len(d); got >= n {
				break
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	return got
}

// rollout creates the rollout and waits until its retained status (or a
// poll every 5 s, in case a status went missing) says it finished.
func (lf *loadFleet) rollout(ctx context.Context, fleetID string, ls loadSettings, res *loadRun) (client.Rollout, error) {
	t0 := time.Now()
	r, err := lf.cp.api.CreateRollout(ctx, client.RolloutCreate{Package: rolloutPkgName + "@" + rolloutPkgVersion, Fleet: fleetID,
		Waves: ls.waves, Retries: ptr(0)})
	if err != nil {
		return r, fmt.Errorf("create the rollout: %w", err)
	}
	done := func(state string) bool { return client.RolloutFinished(state) || state == client.RolloutPaused }
	deadline := time.After(ls.timeout)
	poll := time.NewTicker(5 * time.Second)
	defer poll.Stop()
	for !done(r.State) {
		select {
		case <-lf.rolloutSeen:
			lf.rolloutMu.Lock()
			st := lf.rolloutState[r.ID]
			lf.rolloutMu.Unlock()
			if !done(st) {
				continue
			}
		case <-poll.C:
		case <-deadline:
			res.RolloutWallS = time.Since(t0).Seconds()
			return lf.cp.api.GetRollout(ctx, r.ID)
		case <-lf.cp.proc.done:
			return r, fmt.Errorf("tg-controlplane exited during the rollout:\n%s", lf.cp.proc.tail())
		case <-ctx.Done():
			return r, ctx.Err()
		}
		if r, err = lf.cp.api.GetRollout(ctx, r.ID); err != nil {
			return r, err
		}
	}
	res.RolloutWallS = time.Since(t0).Seconds()
	return r, nil
}

// collect fills the attestation, telemetry and rollout numbers.
func (lf *loadFleet) collect(r client.Rollout, rolloutAt time.Duration, res *loadRun) {
	tr := lf.tr
	tr.mu.Lock()
	t := tr.res
	res.Challenges, res.Evidence, res.Verdicts = t.Challenges, t.Evidence, t.Verdicts
	res.Lost = t.Evidence - t.Verdicts
	res.NotTrusted, res.FirstNot, res.Unmatched = t.NotTrusted, t.FirstNotTrusted, t.Unmatched
	res.ConnErrors, res.FirstConnError = t.ConnErrors, t.FirstConnError
	var steady, during, all []time.Duration
	for _, l := range tr.latency {
		all = append(all, l.lat)
		if l.sent < rolloutAt {
			steady = append(steady, l.lat)
		} else {
			during = append(during, l.lat)
		}
	}
	if len(tr.gaps) > 0 {
		var sum time.Duration
		for _, g := range tr.gaps {
			sum += g
		}
		res.ChallengeGapS = [2]float64{(sum / time.Duration(len(tr.gaps))).Seconds(), slices.Max(tr.gaps).Seconds()}
	}
	tr.mu.Unlock()
	res.VerdictSteady, res.VerdictRollout, res.VerdictAll = latencies(steady), latencies(during), latencies(all)
	measured := res.Steady.Seconds + res.RolloutPhase.Seconds
	if measured > 0 {
		res.EvidencePerS = float64(res.Evidence) / measured
	}

	tel := lf.tel
	tel.mu.Lock()
	res.TelemetrySent, res.TelemetryRecv = tel.sent, tel.recv
	res.TelemetryLost = tel.sent - tel.recv
	res.TelemetryBytes = tel.bytes
	res.TelemetryLat = latencies(tel.lat)
	tel.mu.Unlock()
	if measured > 0 {
		res.TelemetryPerS = float64(res.TelemetrySent) / measured
	}

	res.RolloutState = r.State
	if r.FinishedAt != nil {
		res.RolloutTotalS = r.FinishedAt.Sub(r.CreatedAt).Seconds()
	}
	var job, queue, e2e []time.Duration
	type span struct {
		first, last time.Time
		size        int
	}
	waves := map[int]*span{}
	for _, j := range r.Jobs {
		if j.State == "succeeded" {
			res.Succeeded++
		}
		w := waves[j.Wave]
		if w == nil {
			w = &span{}
			waves[j.Wave] = w
		}
		w.size++
		if j.NotifiedAt == nil {
			continue
		}
		queue = append(queue, j.NotifiedAt.Sub(r.CreatedAt))
		if w.first.IsZero() || j.NotifiedAt.Before(w.first) {
			w.first = *j.NotifiedAt
		}
		if j.FinishedAt == nil {
			continue
		}
		job = append(job, j.FinishedAt.Sub(*j.NotifiedAt))
		e2e = append(e2e, j.FinishedAt.Sub(r.CreatedAt))
		if j.FinishedAt.After(w.last) {
			w.last = *j.FinishedAt
		}
	}
	res.NotDone = res.Devices - res.Succeeded
	res.Job, res.JobQueue, res.JobEndToEnd = latencies(job), latencies(queue), latencies(e2e)
	for i := range len(r.Waves) {
		if w := waves[i]; w != nil {
			res.WaveStats = append(res.WaveStats, waveStat{Index: i, Size: w.size, S: w.last.Sub(w.first).Seconds()})
		}
	}

	rb := lf.rb
	rb.mu.Lock()
	res.Grants, res.GrantsRefused = len(rb.grantLat), rb.grantRefused
	res.Grant = latencies(rb.grantLat)
	res.ServedMiB = float64(rb.servedBytes) / (1 << 20)
	rb.mu.Unlock()
	res.Renotified, res.Resumed = rb.renotified.Load(), rb.resumed.Load()
}

// operatorLoop is the operator's session: verdicts, heartbeats and the
// rollout's retained status.
func (lf *loadFleet) operatorLoop() {
	op := lf.op
	for {
		topic, payload, recv, err := op.nextPublish()
		if err != nil {
			lf.tr.connLost("operator", err)
			return
		}
		switch {
		case strings.HasSuffix(topic, "/telemetry"):
			var hb struct {
				Schema string `json:"schema"`
				MsgID  string `json:"msg_id"`
			}
			if json.Unmarshal(payload, &hb) == nil && hb.Schema == telemetrySchema {
				lf.tel.received(hb.MsgID, recv)
			}
		case strings.Contains(topic, "/attestation/"):
			var v wire.Verdict
			if json.Unmarshal(payload, &v) == nil && v.Schema == wire.VerdictSchema {
				lf.tr.verdict(v, recv)
			}
		case strings.HasSuffix(topic, "/status"):
			var st struct {
				Schema    string `json:"schema"`
				RolloutID string `json:"rollout_id"`
				State     string `json:"state"`
			}
			if json.Unmarshal(payload, &st) == nil && st.Schema == "tg.rollout.status.v1" {
				lf.rolloutMu.Lock()
				lf.rolloutState[st.RolloutID] = st.State
				lf.rolloutMu.Unlock()
				select {
				case lf.rolloutSeen <- struct{}{}:
				default:
				}
			}
		}
	}
}

// telemetryTracker pairs the heartbeats the devices publish while
// measuring with those the operator receives.
type telemetryTracker struct {
	mu      sync.Mutex
	phase   int                  // 0 before, 1 measuring, 2 after
	pending map[string]time.Time // msg id → sent, measured heartbeats only
	sent    int
	recv    int
	bytes   int // of the last heartbeat
	lat     []time.Duration
	drained chan struct{} // closed in phase 2 once pending is empty
}

func newTelemetryTracker() *telemetryTracker {
	return &telemetryTracker{pending: map[string]time.Time{}, drained: make(chan struct{})}
}

func (t *telemetryTracker) published(msgID string, at time.Time, size int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.bytes = size
	if t.phase == 1 {
		t.pending[msgID] = at
		t.sent++
	}
}

func (t *telemetryTracker) received(msgID string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sent, ok := t.pending[msgID]
	if !ok {
		return
	}
	delete(t.pending, msgID)
	t.recv++
	t.lat = append(t.lat, at.Sub(sent))
	if t.phase == 2 && len(t.pending) == 0 {
		close(t.drained)
	}
}

func (t *telemetryTracker) setPhase(p int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.phase = p
	if p == 2 && len(t.pending) == 0 {
		close(t.drained)
	}
}

// telemetrySchema is the agent's heartbeat schema (agent.TelemetrySchema).
const telemetrySchema = "tg.telemetry.v1"

// heartbeat mirrors agent.Heartbeat (agent/telemetry.go), which this
// package may not import (only integration/ drives several components);
// TestHeartbeatMirrorsAgent keeps the JSON fields in step.
type heartbeat struct {
	Schema       string            `json:"schema"`
	MsgID        string            `json:"msg_id"`
	Kind         string            `json:"kind"`
	Device       string            `json:"device"`
	TS           time.Time         `json:"ts"`
	AgentVersion string            `json:"agent_version"`
	DeviceType   string            `json:"device_type"`
	Labels       map[string]string `json:"labels,omitempty"`
	UptimeS      int64             `json:"uptime_s"`
	CertNotAfter time.Time         `json:"cert_not_after"`
	Renewals     uint64            `json:"cert_renewals"`
	Outbox       heartbeatOutbox   `json:"outbox"`
	Models       []heartbeatModel  `json:"models,omitempty"`
	Thermal      []thermalZone     `json:"thermal,omitempty"`
}

type heartbeatOutbox struct {
	Pending int    `json:"pending"`
	Dropped uint64 `json:"dropped"`
}

type heartbeatModel struct {
	Name       string           `json:"name"`
	Version    string           `json:"version"`
	Backend    string           `json:"backend"`
	Loaded     bool             `json:"loaded"`
	Inferences uint64           `json:"inferences"`
	Errors     uint64           `json:"errors"`
	LatencyMS  heartbeatLatency `json:"latency_ms"`
}

type heartbeatLatency struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
}

// thermalZone mirrors agent/internal/inference.Zone.
type thermalZone struct {
	Name    string  `json:"zone"`
	Type    string  `json:"type"`
	Celsius float64 `json:"celsius"`
}

// heartbeatLoop publishes d's heartbeat, QoS 1 on its telemetry topic, every
// interval as the agent's telemetryLoop does: a Jetson serving one model,
// with its three thermal zones. The first beat comes after a random part
// of the interval, so that the fleet's beats spread as those of devices
// that started at different times do.
func heartbeatLoop(d *rolloutDevice, tel *telemetryTracker, interval time.Duration, stop <-chan struct{}) {
	topic := mqttacl.TelemetryTopic(tenant, d.id)
	started := time.Now()
	hb := heartbeat{Schema: telemetrySchema, Kind: "heartbeat", Device: d.id, AgentVersion: "0.8.0-bench",
		DeviceType: "jetson-orin", Labels: map[string]string{"site": "bench", "rack": strconv.Itoa(rand.IntN(40))},
		CertNotAfter: started.Add(90 * 24 * time.Hour).UTC().Truncate(time.Second),
		Models: []heartbeatModel{{Name: rolloutPkgName, Version: "0.9.0", Backend: "tensorrt", Loaded: true,
			LatencyMS: heartbeatLatency{Mean: 4.2, P50: 3.9, P90: 6.1, P99: 9.8}}},
		Thermal: []thermalZone{{Name: "thermal_zone0", Type: "cpu-thermal"}, {Name: "thermal_zone1", Type: "gpu-thermal"},
			{Name: "thermal_zone2", Type: "soc0-thermal"}}}
	t := time.NewTimer(rand.N(interval))
	defer t.Stop()
	for seq := 1; ; seq++ {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		t.Reset(interval)
		now := time.Now()
		hb.MsgID = fmt.Sprintf("%s-t%d", d.id, seq)
		hb.TS = now.UTC()
		hb.UptimeS = int64(now.Sub(started).Seconds()) + 86400
		hb.Models[0].Inferences += uint64(rand.IntN(600))
		for i := range hb.Thermal {
			hb.Thermal[i].Celsius = 45 + float64(rand.IntN(150))/10
		}
		b, err := json.Marshal(hb)
		if err != nil {
			continue
		}
		tel.published(hb.MsgID, now, len(b))
		if err := d.mc.publish1(topic, b); err != nil {
			d.rb.connLost(d.id, err)
			return
		}
	}
}

// phaseMeter measures the control plane over a phase: its CPU (user and
// system) and RSS every second, the machine's busy share, this process's
// CPU, and the load average.
type phaseMeter struct {
	pid       int
	u0, self0 usage
	st0       procStat
	done      chan struct{}
	out       chan phaseSamples
}

type phaseSamples struct {
	rssSum, rssMax int64
	n              int
	load           []float64
	err            error
}

func startPhaseMeter(pid int) (*phaseMeter, error) {
	m := &phaseMeter{pid: pid, done: make(chan struct{}), out: make(chan phaseSamples, 1)}
	var err, err1, err2 error
	m.u0, err = readUsage(pid)
	m.self0, err1 = readUsage(os.Getpid())
	m.st0, err2 = readProcStat()
	if err := errors.Join(err, err1, err2); err != nil {
		return nil, err
	}
	go func() {
		s := phaseSamples{rssSum: m.u0.rssKiB, rssMax: m.u0.rssKiB, n: 1, load: []float64{loadavg()}}
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-m.done:
				m.out <- s
				return
			case <-t.C:
			}
			u, err := readUsage(pid)
			if err != nil {
				s.err = err
				continue
			}
			s.rssSum += u.rssKiB
			s.rssMax = max(s.rssMax, u.rssKiB)
			s.n++
			if s.n%5 == 0 {
				s.load = append(s.load, loadavg())
			}
		}
	}()
	return m, nil
}

func (m *phaseMeter) stop() (phaseStats, error) {
	close(m.done)
	s := <-m.out
	var err, err1, err2 error
	u1, err := readUsage(m.pid)
	self1, err1 := readUsage(os.Getpid())
	st1, err2 := readProcStat()
	if err := errors.Join(err, err1, err2); err != nil {
		return phaseStats{}, err
	}
	s.load = append(s.load, loadavg())
	s.rssSum += u1.rssKiB
	s.rssMax = max(s.rssMax, u1.rssKiB)
	s.n++
	wall := u1.at.Sub(m.u0.at).Seconds()
	p := phaseStats{Seconds: wall, UserS: (u1.user - m.u0.user).Seconds(), SysS: (u1.sys - m.u0.sys).Seconds(),
		RSSMean: float64(s.rssSum) / float64(s.n) / 1024, RSSMax: float64(s.rssMax) / 1024}
	if wall > 0 {
		p.CPUPct = 100 * (p.UserS + p.SysS) / wall
		p.LoadGen = 100 * (self1.cpu - m.self0.cpu).Seconds() / wall
	}
	if tot := st1.total - m.st0.total; tot > 0 {
		p.Machine = 100 * float64(st1.busy-m.st0.busy) / float64(tot)
	}
	var sum float64
	for _, l := range s.load {
		sum += l
	}
	p.LoadAvg1 = [3]float64{slices.Min(s.load), sum / float64(len(s.load)), slices.Max(s.load)}
	return p, nil
}

// ratioOrDash prints a ratio to the baseline, "-" without one.
func ratioOrDash(v float64) string {
	if v == 0 {
		return "-"
	}
	return f2(v)
}

// readHWM is the process's peak resident set (VmHWM), MiB.
func readHWM(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kib, err := strconv.ParseInt(f[0], 10, 64)
				return float64(kib) / 1024, err
			}
		}
	}
	return 0, errors.New("no VmHWM")
}

func printLoad(w io.Writer, r fleetLoadResult) {
	runs := []loadRun{r.Main}
	head := fmt.Sprintf("%d devices", r.Main.Devices)
	if r.Baseline != nil {
		runs = []loadRun{*r.Baseline, r.Main}
		head = fmt.Sprintf("baseline %d\t%d devices", r.Baseline.Devices, r.Main.Devices)
	}
	m := r.Main
	fmt.Fprintf(w, "\nLOAD: attestation every %s, heartbeats every %s, one rollout (%s, waves %v)\t%s\tratio / note\n",
		time.Duration(m.AttestIntervalS*float64(time.Second)), time.Duration(m.TelemetryIntervalS*float64(time.Second)),
		mibStr(m.PackageBytes), m.Waves, head)
	row := func(name string, f func(loadRun) string, note string) {
		cells := make([]string, len(runs))
		for i, x := range runs {
			cells[i] = f(x)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", name, strings.Join(cells, "\t"), note)
	}
	cpu := func(p phaseStats) string {
		return fmt.Sprintf("%s %% (%s user + %s sys CPU-s / %s s)", f1(p.CPUPct), f1(p.UserS), f1(p.SysS), f1(p.Seconds))
	}
	lat := func(p latencyStats) string {
		if p.N == 0 {
			return "-"
		}
		return fmt.Sprintf("%s / %s / %s / %s ms", f1(p.P50Ms), f1(p.P90Ms), f1(p.P99Ms), f1(p.MaxMs))
	}
	row("setup: enroll (full TPM protocol) + connect", func(x loadRun) string {
		return fmt.Sprintf("%s devices/s (%s s)", f1(x.SetupPerS), f1(x.SetupS))
	}, fmt.Sprintf("%d at a time; control plane CPU during setup: see below", m.EnrollConc))
	row("  control plane CPU during setup", func(x loadRun) string { return cpu(x.Setup) }, "of one core")
	row("presence: online in the control plane after setup / at the end", func(x loadRun) string {
		return fmt.Sprintf("%d / %d", x.OnlineAfterSync, x.OnlineAtEnd)
	}, "GET /api/v1/devices?online=true")
	row("control plane empty, CPU / RSS", func(x loadRun) string {
		return fmt.Sprintf("%s %% / %s MiB", f2(x.Empty.CPUPct), f1(x.RSSEmptyMiB))
	}, fmt.Sprintf("%s before the first device", loadEmptyWindow))
	row("STEADY control plane CPU", func(x loadRun) string { return cpu(x.Steady) }, "of one core; attestation + heartbeats + keepalives, no rollout")
	row("  per device (less the empty CPU)", func(x loadRun) string { return f1(x.CPUMsPerDeviceMin) + " ms CPU per device-minute" },
		"ratio "+ratioOrDash(r.CPUPerDeviceRatio)+" (1.00: linear in the fleet)")
	row("  machine busy / load generator / load average 1m (min, mean, max)", func(x loadRun) string {
		return fmt.Sprintf("%s %% / %s %% / %s, %s, %s", f1(x.Steady.Machine), f1(x.Steady.LoadGen),
			f2(x.Steady.LoadAvg1[0]), f2(x.Steady.LoadAvg1[1]), f2(x.Steady.LoadAvg1[2]))
	}, "machine: all cores; load generator: of one core")
	row("RSS empty / steady mean, max / peak (VmHWM)", func(x loadRun) string {
		return fmt.Sprintf("%s / %s, %s / %s MiB", f1(x.RSSEmptyMiB), f1(x.Steady.RSSMean), f1(x.Steady.RSSMax), f1(x.RSSPeakMiB))
	}, "peak over the whole run, rollout included")
	row("  RSS per device", func(x loadRun) string { return f1(x.RSSPerDeviceKiB) + " KiB" }, "ratio "+ratioOrDash(r.RSSPerDeviceRatio))
	row("evidence/s, heartbeats/s", func(x loadRun) string {
		return fmt.Sprintf("%s, %s", f1(x.EvidencePerS), f1(x.TelemetryPerS))
	}, "measured over steady + rollout")
	row("VERDICT latency p50 / p90 / p99 / max, all", func(x loadRun) string { return lat(x.VerdictAll) },
		fmt.Sprintf("goal p99 < %s: ratio %s; p99 ratio to baseline %s", attestGoal, f2(r.VerdictGoalRatio), ratioOrDash(r.VerdictP99Ratio)))
	row("  steady", func(x loadRun) string { return lat(x.VerdictSteady) }, "device publishes evidence → operator receives the verdict")
	row("  during the rollout", func(x loadRun) string { return lat(x.VerdictRollout) }, "")
	row("  evidence / verdicts / lost", func(x loadRun) string {
		return fmt.Sprintf("%d / %d / %d", x.Evidence, x.Verdicts, x.Lost)
	}, "lost > 0.5 % fails")
	row("  not trusted / unmatched", func(x loadRun) string { return fmt.Sprintf("%d / %d", x.NotTrusted, x.Unmatched) }, "not trusted > 0 fails")
	row("  time between challenges, mean / max", func(x loadRun) string {
		return fmt.Sprintf("%s / %s s", f1(x.ChallengeGapS[0]), f1(x.ChallengeGapS[1]))
	}, "")
	row("heartbeats sent / received / lost", func(x loadRun) string {
		return fmt.Sprintf("%d / %d / %d (%d B)", x.TelemetrySent, x.TelemetryRecv, x.TelemetryLost, x.TelemetryBytes)
	}, "device → broker → operator; lost > 0.5 % fails")
	row("  heartbeat latency p50 / p90 / p99 / max", func(x loadRun) string { return lat(x.TelemetryLat) }, "")
	row("ROLLOUT total, created → completed", func(x loadRun) string {
		return fmt.Sprintf("%s s (%s, %d/%d succeeded)", f1(x.RolloutTotalS), x.RolloutState, x.Succeeded, x.Devices)
	}, "ratio "+ratioOrDash(r.RolloutTotalRatio)+"; control plane's created_at → finished_at")
	row("  JOB latency p50 / p90 / p99 / max", func(x loadRun) string { return lat(x.Job) },
		"per device: job released (cmd/job) → committed report recorded; p99 ratio "+ratioOrDash(r.JobP99Ratio))
	row("  wait for the wave p50 / p90 / p99 / max", func(x loadRun) string { return lat(x.JobQueue) }, "rollout created → job released")
	row("  created → device done p50 / p99 / max", func(x loadRun) string {
		return fmt.Sprintf("%s / %s / %s ms", f1(x.JobEndToEnd.P50Ms), f1(x.JobEndToEnd.P99Ms), f1(x.JobEndToEnd.MaxMs))
	}, "")
	row("  waves: size, first release → last report", func(x loadRun) string {
		var parts []string
		for _, ws := range x.WaveStats {
			parts = append(parts, fmt.Sprintf("%d: %s s", ws.Size, f1(ws.S)))
		}
		return strings.Join(parts, ", ")
	}, "")
	row("  key grants p50 / p90 / p99 / max", func(x loadRun) string { return lat(x.Grant) }, "POST /api/v1/device/key-grants")
	row("  control plane CPU during the rollout", func(x loadRun) string { return cpu(x.RolloutPhase) },
		"until the operator saw it completed")
	row("  RSS mean / max, load average 1m max", func(x loadRun) string {
		return fmt.Sprintf("%s / %s MiB, %s", f1(x.RolloutPhase.RSSMean), f1(x.RolloutPhase.RSSMax), f2(x.RolloutPhase.LoadAvg1[2]))
	}, "")
	row("connections lost / refused grants / renotified", func(x loadRun) string {
		return fmt.Sprintf("%d / %d / %d", x.ConnErrors, x.GrantsRefused, x.Renotified)
	}, prefixed("first: ", m.FirstConnError))
	row("control plane warnings", func(x loadRun) string { return strconv.Itoa(sumValues(x.Warnings)) }, topWarnings(m.Warnings, 3))
}

// printLoadFile prints the table of a load summary (.bench/load.json)
// again.
func printLoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r fleetLoadResult
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	printLoad(w, r)
	return w.Flush()
}
