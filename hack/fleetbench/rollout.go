package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// The rollout phase's fixed settings.
const (
	rolloutIdleWindow     = 10 * time.Second
	rolloutThroughputReps = 5
	rolloutLabel          = "bench-role"
)

// rolloutSettings are the phase's knobs (BENCH_ROLLOUT_*).
type rolloutSettings struct {
	devices, agents, mib int
	waves                []int
	grantRounds          int
	timeout              time.Duration
	onnxLib              string
	// attestInterval is the control plane's attestation.interval: the
	// product's default (60s) unless BENCH_ROLLOUT_ATTEST_INTERVAL says
	// otherwise. A key grant needs a trusted verdict at most two intervals
	// old, so a short interval leaves little slack for evidence waiting
	// behind the rollout's own work.
	attestInterval time.Duration
}

func parseRolloutSettings(root string) (rolloutSettings, error) {
	var r rolloutSettings
	var err, err1, err2, err3, err4, err5 error
	r.devices, err = envInt("BENCH_ROLLOUT_DEVICES", 100)
	r.agents, err1 = envIntZero("BENCH_ROLLOUT_AGENTS", 10)
	r.mib, err2 = envInt("BENCH_ROLLOUT_MIB", 256)
	r.grantRounds, err3 = envInt("BENCH_ROLLOUT_GRANT_ROUNDS", 10)
	r.timeout, err4 = envDuration("BENCH_ROLLOUT_TIMEOUT", 20*time.Minute)
	r.attestInterval, err5 = envDuration("BENCH_ROLLOUT_ATTEST_INTERVAL", 60*time.Second)
	if err := errors.Join(err, err1, err2, err3, err4, err5); err != nil {
		return r, err
	}
	if r.agents > r.devices {
		return r, fmt.Errorf("BENCH_ROLLOUT_AGENTS=%d exceeds BENCH_ROLLOUT_DEVICES=%d (the devices count the agents)", r.agents, r.devices)
	}
	if r.waves, err = envWaves("BENCH_ROLLOUT_WAVES", "100"); err != nil {
		return r, err
	}
	r.onnxLib = os.Getenv("TG_ONNXRUNTIME_LIB")
	if r.onnxLib == "" {
		r.onnxLib = filepath.Join(root, ".cache", "onnxruntime", runtime.GOARCH, "libonnxruntime.so.1")
	}
	if r.onnxLib, err = filepath.Abs(r.onnxLib); err != nil {
		return r, err
	}
	return r, nil
}

// envWaves reads a rollout's cumulative wave percentages ("10,50,100").
func envWaves(name, def string) ([]int, error) {
	v := os.Getenv(name)
	if v == "" {
		v = def
	}
	var waves []int
	for f := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || n > 100 || (len(waves) > 0 && n <= waves[len(waves)-1]) {
			return nil, fmt.Errorf("%s=%q: want strictly increasing percentages ending at 100", name, v)
		}
		waves = append(waves, n)
	}
	if waves[len(waves)-1] != 100 {
		return nil, fmt.Errorf("%s=%q: the last wave must be 100", name, v)
	}
	return waves, nil
}

// envIntZero is envInt that also accepts 0.
func envIntZero(name string, def int) (int, error) {
	if os.Getenv(name) == "0" {
		return 0, nil
	}
	return envInt(name, def)
}

// rolloutResult is the rollout phase (issue 5).
type rolloutResult struct {
	Devices   int   `json:"devices"`
	Agents    int   `json:"real_agents"`
	Simulated int   `json:"simulated_devices"`
	Waves     []int `json:"waves"`
	// The package: a real ONNX MLP (In×Hidden×Out) with its self-test, so
	// the agents install it through ONNX Runtime.
	PackageBytes    int64   `json:"package_bytes"`
	ModelBytes      int64   `json:"model_bytes"`
	ModelShape      string  `json:"model_shape"`
	PackS           float64 `json:"pack_s"`
	PushS           float64 `json:"push_s"`
	AttestIntervalS float64 `json:"attest_interval_s"`
	SetupS          float64 `json:"setup_s"`
	TrustedS        float64 `json:"trusted_wait_s"`

	// The rollout, from POST /api/v1/rollouts to completed: TotalS by the
	// control plane's own created_at and finished_at, WallS as seen here
	// (to the poll that found it completed: GET /api/v1/rollouts/{id}
	// every second, as `tgctl rollout status --watch` polls).
	TotalS    float64 `json:"total_s"`
	WallS     float64 `json:"wall_s"`
	Succeeded int     `json:"succeeded"`
	NotDone   int     `json:"not_succeeded"`
	// Per device, notification to final report (control plane's times):
	// p50 / max for the real agents and the simulated devices.
	AgentJobP50S float64 `json:"agent_job_p50_s"`
	AgentJobMaxS float64 `json:"agent_job_max_s"`
	SimJobP50S   float64 `json:"sim_job_p50_s"`
	SimJobMaxS   float64 `json:"sim_job_max_s"`
	// Bytes the control plane served (every device downloads the whole
	// package once) and their rate over TotalS.
	ServedGiB    float64 `json:"served_gib"`
	ServedMiBps  float64 `json:"served_mib_per_s"`
	SimDLP50S    float64 `json:"sim_download_p50_s"`
	SimDLMaxS    float64 `json:"sim_download_max_s"`
	Resumed      int64   `json:"downloads_resumed"`
	Renotified   int64   `json:"renotified"`
	ServerIdle   window  `json:"server_idle"`
	Server       window  `json:"server"`
	ServerCPUPer float64 `json:"server_cpu_ms_per_device"`
	// Where the machine's CPU went during the rollout: busy share of all
	// cores (/proc/stat), and the CPU-seconds of the control plane, the
	// real agents together and this process (the simulated devices).
	MachineBusyPct float64 `json:"machine_busy_pct"`
	// LoadAvg is the 1-minute load average before and after the rollout:
	// anything else running on the machine shows here.
	LoadAvg     [2]float64 `json:"loadavg_1m_before_after"`
	AgentsCPUS  float64    `json:"agents_cpu_s"`
	LoadGenCPUS float64    `json:"loadgen_cpu_s"`
	// Real agents' RSS: mean before the rollout, the largest peak and the
	// mean of the peaks during it, and the mean at the end (serving).
	AgentRSSIdleMiB     float64 `json:"agent_rss_idle_mib"`
	AgentRSSPeakMiB     float64 `json:"agent_rss_peak_mib"`
	AgentRSSPeakMeanMiB float64 `json:"agent_rss_peak_mean_mib"`
	AgentRSSEndMiB      float64 `json:"agent_rss_end_mib"`
	// AgentRSSLaterMiB is the agents' mean RSS AgentLaterS seconds after
	// the rollout completed (just before they stop): what a serving agent
	// keeps once the install's garbage had time to go.
	AgentRSSLaterMiB float64 `json:"agent_rss_later_mib"`
	AgentLaterS      float64 `json:"agent_later_s"`
	// The real agents' pipeline steps from their own job reports (agent
	// clock = this machine's): p50 and max over the agents, seconds.
	AgentSteps []stepStat `json:"agent_steps,omitempty"`
	// Key grants during the rollout: every device's one grant, the span
	// from first to last and the latency the simulated devices saw.
	RolloutGrants   int              `json:"rollout_grants"`
	GrantsRefused   int              `json:"rollout_grants_refused"`
	GrantSpanS      float64          `json:"rollout_grant_span_s"`
	GrantP50Ms      float64          `json:"rollout_grant_p50_ms"`
	GrantMaxMs      float64          `json:"rollout_grant_max_ms"`
	Burst           burstResult      `json:"key_grant_burst"`
	DeviceSide      deviceThroughput `json:"device_side"`
	AgentVerifyMiBs float64          `json:"agent_report_verify_mib_per_s"`

	// Attestation while the rollout runs: from a simulated device
	// publishing its evidence to the operator receiving the verdict, in
	// the idle window before and during the rollout (a grant needs a
	// verdict at most two intervals old, so this is the slack that
	// matters).
	AttestIdle    latencyStats `json:"attest_latency_idle"`
	AttestRollout latencyStats `json:"attest_latency_rollout"`

	NotTrusted      int            `json:"not_trusted"`
	FirstNotTrusted string         `json:"first_not_trusted,omitempty"`
	ConnErrors      int            `json:"conn_errors"`
	FirstConnError  string         `json:"first_conn_error,omitempty"`
	Failures        []string       `json:"failures,omitempty"`
	Warnings        map[string]int `json:"warnings,omitempty"`
}

// burstResult is the key-grant burst: every simulated device asks for its
// grant at the same moment, Rounds times (after a warm-up round).
type burstResult struct {
	Devices      int     `json:"devices"`
	Rounds       int     `json:"rounds"`
	Grants       int     `json:"grants"`
	Refused      int     `json:"refused"`
	FirstRefusal string  `json:"first_refusal,omitempty"`
	PerS         float64 `json:"grants_per_s"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	MaxMs        float64 `json:"max_ms"`
	ServerCPUMs  float64 `json:"server_cpu_ms_per_grant"`
	ServerCPUPct float64 `json:"server_cpu_pct"`
}

// latencyStats summarises latencies in milliseconds.
type latencyStats struct {
	N     int     `json:"n"`
	P50Ms float64 `json:"p50_ms"`
	P90Ms float64 `json:"p90_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

func latencies(ds []time.Duration) latencyStats {
	return latencyStats{N: len(ds), P50Ms: ms(pct(ds, 50)), P90Ms: ms(pct(ds, 90)), P99Ms: ms(pct(ds, 99)), MaxMs: ms(pct(ds, 100))}
}

// stepStat is one step of the agent's pipeline.
type stepStat struct {
	Step string  `json:"step"`
	N    int     `json:"n"`
	P50S float64 `json:"p50_s"`
	MaxS float64 `json:"max_s"`
}

// failures lists what went wrong (never a timing).
func (r rolloutResult) failures() []string {
	f := slices.Clone(r.Failures)
	if r.NotDone > 0 {
		f = append(f, fmt.Sprintf("rollout: %d of %d devices did not commit", r.NotDone, r.Devices))
	}
	if r.GrantsRefused > 0 {
		f = append(f, fmt.Sprintf("rollout: %d key grants refused during the rollout", r.GrantsRefused))
	}
	if r.Burst.Refused > 0 {
		f = append(f, fmt.Sprintf("rollout: %d key grants refused in the burst (%s)", r.Burst.Refused, r.Burst.FirstRefusal))
	}
	if r.NotTrusted > 0 {
		f = append(f, fmt.Sprintf("rollout: %d verdicts not trusted (%s)", r.NotTrusted, r.FirstNotTrusted))
	}
	if r.ConnErrors > 0 {
		f = append(f, fmt.Sprintf("rollout: %d connections lost (%s)", r.ConnErrors, r.FirstConnError))
	}
	return f
}

// rolloutBench is the phase's shared state; the simulated devices report
// into it.
type rolloutBench struct {
	ctx context.Context
	cp  *controlPlane

	grantMu sync.Mutex
	pkgHdr  *tgsp.Package // the package, opened here to check grants

	jobs       sync.WaitGroup // simulated devices' job goroutines
	inBurst    atomic.Bool
	burstReady sync.WaitGroup
	renotified atomic.Int64
	resumed    atomic.Int64

	mu           sync.Mutex
	closing      bool
	res          *rolloutResult
	grantLat     []time.Duration
	grantAt      []time.Time
	dlTimes      []time.Duration
	servedBytes  int64
	grantRefused int

	pkgID    string // registry id of the package
	mainID   string // the measured rollout
	mainJobs []client.RolloutJob
	mainDone time.Time
	watch    *rolloutWatch
	// tracker, when set (the load phase), pairs every challenge the
	// simulated devices answer with its verdict; watch may then be nil.
	tracker *attestTracker
}

func (rb *rolloutBench) connLost(who string, err error) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.closing {
		return
	}
	rb.res.ConnErrors++
	if rb.res.FirstConnError == "" {
		rb.res.FirstConnError = fmt.Sprintf("%s: %v", who, err)
	}
}

func (rb *rolloutBench) deviceFailed(dev string, err error) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if len(rb.res.Failures) < 10 {
		rb.res.Failures = append(rb.res.Failures, fmt.Sprintf("device %s: %v", dev, err))
	}
}

func (rb *rolloutBench) downloaded(n int64, d time.Duration) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.servedBytes += n
	rb.dlTimes = append(rb.dlTimes, d)
}

func (rb *rolloutBench) grant(lat time.Duration, err error) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if err != nil {
		rb.grantRefused++
		return
	}
	rb.grantLat = append(rb.grantLat, lat)
	rb.grantAt = append(rb.grantAt, time.Now())
}

// openGrant opens a grant with the device's KEM key, as the agent's
// keys.Custodian does: proof that the grant carries the package's DEK for
// this device.
func (rb *rolloutBench) openGrant(grant []byte, k *tgsp.RecipientPrivateKey) error {
	rb.grantMu.Lock()
	defer rb.grantMu.Unlock()
	_, err := rb.pkgHdr.OpenGrant(grant, k)
	return err
}

// rolloutWatch is the operator's view: verdicts, rollout events and every
// device's job reports (an operator credential reads its tenant's topics).
type rolloutWatch struct {
	mu         sync.Mutex
	n          int             // devices in the fleet
	want       map[string]bool // those enrolled so far
	trusted    map[string]bool
	all        chan struct{}
	allClosed  bool
	notTrusted int
	firstNot   string
	// reports[rollout][device][state] is the first report's time.
	reports map[string]map[string]map[string]time.Time
	// sent is when a simulated device last published evidence that has no
	// verdict yet; phase says which window a verdict's latency counts in
	// (0 none, 1 idle, 2 rollout).
	sent   map[string]time.Time
	phase  int
	attLat [3][]time.Duration
}

// evidence records that dev published evidence at t.
func (w *rolloutWatch) evidence(dev string, t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sent[dev] = t
}

func (w *rolloutWatch) setPhase(p int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.phase = p
}

// newRolloutWatch watches a fleet of n devices: all closes once n devices
// are expected and every one of them has been trusted.
func newRolloutWatch(n int) *rolloutWatch {
	return &rolloutWatch{n: n, want: map[string]bool{}, trusted: map[string]bool{}, all: make(chan struct{}),
		reports: map[string]map[string]map[string]time.Time{}, sent: map[string]time.Time{}}
}

func (w *rolloutWatch) expect(dev string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.want[dev] = true
	if w.trusted[dev] {
		w.checkAll()
	}
}

func (w *rolloutWatch) checkAll() {
	if w.allClosed || len(w.want) < w.n {
		return
	}
	for d := range w.want {
		if !w.trusted[d] {
			return
		}
	}
	w.allClosed = true
	close(w.all)
}

func (w *rolloutWatch) loop(op *mqttConn, rb *rolloutBench) {
	for {
		topic, payload, _, err := op.nextPublish()
		if err != nil {
			rb.connLost("operator", err)
			return
		}
		switch {
		case strings.Contains(topic, "/attestation/"):
			var v wire.Verdict
			if json.Unmarshal(payload, &v) != nil || v.Schema != wire.VerdictSchema {
				continue
			}
			w.verdict(v)
		case strings.Contains(topic, "/jobs/"):
			var r wire.JobReport
			if json.Unmarshal(payload, &r) != nil || r.Schema != wire.JobReportSchema {
				continue
			}
			parts := strings.Split(topic, "/")
			if len(parts) == 7 {
				w.report(parts[4], r)
			}
		}
	}
}

func (w *rolloutWatch) verdict(v wire.Verdict) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if t, ok := w.sent[v.Device]; ok && !v.EvidenceAt.IsZero() {
		delete(w.sent, v.Device)
		w.attLat[w.phase] = append(w.attLat[w.phase], time.Since(t))
	}
	switch v.State {
	case wire.VerdictTrusted:
		w.trusted[v.Device] = true
		if w.want[v.Device] {
			w.checkAll()
		}
	case wire.VerdictUnknown:
	default:
		w.notTrusted++
		if w.firstNot == "" {
			var codes []string
			for _, r := range v.Reasons {
				codes = append(codes, r.Code+" "+r.Detail)
			}
			w.firstNot = fmt.Sprintf("%s %s %s", v.Device, v.State, strings.Join(codes, "; "))
		}
	}
}

func (w *rolloutWatch) report(dev string, r wire.JobReport) {
	w.mu.Lock()
	defer w.mu.Unlock()
	byDev := w.reports[r.RolloutID]
	if byDev == nil {
		byDev = map[string]map[string]time.Time{}
		w.reports[r.RolloutID] = byDev
	}
	st := byDev[dev]
	if st == nil {
		st = map[string]time.Time{}
		byDev[dev] = st
	}
	if _, ok := st[r.State]; !ok {
		st[r.State] = r.At
	}
}

// realAgent is one tg-agent process of the phase.
type realAgent struct {
	dir, cfg string
	proc     *proc
	id       string
}

// benchRollout runs the rollout phase on its own control plane.
func benchRollout(ctx context.Context, s settings, cpBin string) (res rolloutResult, err error) {
	rs := s.rollout
	res = rolloutResult{Devices: rs.devices, Agents: rs.agents, Simulated: rs.devices - rs.agents, Waves: rs.waves,
		AttestIntervalS: rs.attestInterval.Seconds()}
	if _, err := os.Stat(rs.onnxLib); err != nil {
		return res, fmt.Errorf("rollout: the real agents need libonnxruntime (%v): run bash hack/fetch-onnxruntime.sh, or set TG_ONNXRUNTIME_LIB", err)
	}
	work := filepath.Join(s.work, "rollout")
	if err := os.MkdirAll(work, 0o700); err != nil {
		return res, err
	}
	tgspBin := filepath.Join(s.binDir, "tgsp")
	agentBin := filepath.Join(s.binDir, "tg-agent")

	cp, err := startControlPlane(ctx, cpBin, work, fmt.Sprintf("attestation: {interval: %s}\n", rs.attestInterval))
	if err != nil {
		return res, err
	}
	logStart := fileSize(cp.proc.log)
	watch := newRolloutWatch(rs.devices)
	rb := &rolloutBench{ctx: ctx, cp: cp, res: &res, watch: watch}
	var sims []*rolloutDevice
	var agents []*realAgent
	var readers sync.WaitGroup
	var op *mqttConn
	// shutdown ends the sessions (DISCONNECT: no Will), then the agents,
	// then the control plane, each of which must stop cleanly.
	shutdown := sync.OnceValue(func() error {
		rb.mu.Lock()
		rb.closing = true
		rb.mu.Unlock()
		for _, d := range sims {
			if d.mc != nil {
				_ = d.mc.write([]byte{0xe0, 0x00})
				_ = d.mc.c.Close()
			}
			if d.hc != nil {
				d.hc.CloseIdleConnections()
			}
		}
		if op != nil {
			_ = op.write([]byte{0xe0, 0x00})
			_ = op.c.Close()
		}
		readers.Wait()
		var errs []error
		for _, a := range agents {
			if err := a.proc.stop(30 * time.Second); err != nil {
				errs = append(errs, fmt.Errorf("tg-agent %s did not stop cleanly: %w", a.id, err))
			}
		}
		if err := cp.proc.stop(30 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("tg-controlplane (rollout) did not stop cleanly: %w", err))
		}
		res.Warnings = logWarnings(cp.proc.log, logStart)
		return errors.Join(errs...)
	})
	defer func() {
		if stopErr := shutdown(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()

	fleet, err := cp.api.CreateFleet(ctx, client.FleetCreate{Name: "rollout", Policy: &client.FleetPolicyPatch{AllowSimulatedTPM: ptr(true)}})
	if err != nil {
		return res, err
	}
	rcpt, err := cp.api.PackageRecipient(ctx)
	if err != nil {
		return res, err
	}
	step(fmt.Sprintf("rollout: building a %d MiB model package (ONNX MLP, self-test) with tgsp pack", rs.mib))
	pkg, err := buildRolloutPackage(ctx, tgspBin, filepath.Join(work, "pkg"), rs.mib, rcpt.PublicKeyPEM)
	if err != nil {
		return res, err
	}
	res.PackageBytes, res.ModelBytes, res.PackS = pkg.size, pkg.modelBytes, pkg.packS
	res.ModelShape = fmt.Sprintf("%d×%d×%d", rolloutModelIn, pkg.hidden, rolloutModelOut)
	pubPEM, err := os.ReadFile(pkg.signerKey + ".pub")
	if err != nil {
		return res, err
	}
	if _, err := cp.api.CreatePublisher(ctx, client.PublisherCreate{Name: "bench", PublicKeyPEM: string(pubPEM)}); err != nil {
		return res, err
	}
	// The HTTP client closes the body it sends: one file for the push, one
	// for the header the simulated devices open their grants with.
	body, err := os.Open(pkg.path)
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	pushed, _, err := cp.api.PushPackage(ctx, body, pkg.size)
	body.Close()
	if err != nil {
		return res, fmt.Errorf("push the package: %w", err)
	}
	rb.pkgID = pushed.ID
	res.PushS = time.Since(t0).Seconds()
	f, err := os.Open(pkg.path)
	if err != nil {
		return res, err
	}
	defer f.Close()
	// A package releases a DEK only once its signature verified.
	signer, err := tgsp.ParseSignerPublicKey(pubPEM)
	if err != nil {
		return res, err
	}
	if rb.pkgHdr, err = tgsp.Open(f, pkg.size); err != nil {
		return res, err
	}
	if err := rb.pkgHdr.VerifySignature([]*tgsp.SignerPublicKey{signer}, time.Now()); err != nil {
		return res, err
	}

	host, _, err := net.SplitHostPort(cp.mqttAddr)
	if err != nil {
		return res, err
	}
	if op, err = operatorSession(ctx, cp, host); err != nil {
		return res, fmt.Errorf("operator: %w", err)
	}
	if err := op.subscribeMany([]string{mqttacl.FleetAttestationFilter(tenant, fleet.ID), mqttacl.RolloutsFilter(tenant),
		mqttacl.Prefix + "/" + tenant + "/devices/+/jobs/+"}, 10*time.Second); err != nil {
		return res, fmt.Errorf("operator: %w", err)
	}
	readers.Go(func() { watch.loop(op, rb) })

	step(fmt.Sprintf("rollout: %d devices enroll with the full TPM protocol and connect: %d real tg-agent (simulator TPM, ONNX Runtime), %d simulated (soft TPM)",
		rs.devices, rs.agents, rs.devices-rs.agents))
	tokens, err := createTokens(ctx, cp.api, fleet.ID, rs.devices)
	if err != nil {
		return res, err
	}
	// Real agents are spread evenly through the enrollment order, which is
	// the order the engine ranks devices into waves.
	isAgent := make([]bool, rs.devices)
	for j := range rs.agents {
		isAgent[j*rs.devices/rs.agents] = true
	}
	setup := time.Now()
	hc := deviceHTTP(cp.roots)
	defer hc.CloseIdleConnections()
	for i := range rs.devices {
		if isAgent[i] {
			a, err := startRealAgent(ctx, agentBin, work, cp, tokens[i], len(agents), rs.onnxLib)
			if a != nil {
				agents = append(agents, a)
			}
			if err != nil {
				return res, err
			}
			watch.expect(a.id)
			continue
		}
		t, err := newSoftTPM()
		if err != nil {
			return res, err
		}
		d := &rolloutDevice{tpm: t, rb: rb, started: map[string]bool{}}
		cert, err := d.enroll(ctx, hc, cp.httpsURL, cp.roots, tokens[i])
		if err != nil {
			return res, fmt.Errorf("simulated device %d: enroll: %w", i, err)
		}
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cp.roots, ServerName: host, Certificates: []tls.Certificate{cert}}
		c, _, _, err := connectDevice(cp.mqttAddr, cfg, tenant, d.id, 30*time.Second)
		if err != nil {
			return res, fmt.Errorf("device %s: connect: %w", d.id, err)
		}
		d.mc = newMQTTConn(c)
		sims = append(sims, d)
		if err := d.mc.subscribe(mqttacl.CmdFilter(tenant, d.id), 1, 10*time.Second); err != nil {
			return res, fmt.Errorf("device %s: %w", d.id, err)
		}
		readers.Go(d.loop)
		watch.expect(d.id)
		if _, err := cp.api.UpdateDevice(ctx, d.id, client.DeviceUpdate{Labels: map[string]string{rolloutLabel: "simulated"}}); err != nil {
			return res, err
		}
	}
	res.SetupS = time.Since(setup).Seconds()
	stopPing := make(chan struct{})
	defer close(stopPing)
	go rolloutPing(sims, op, stopPing)

	step(fmt.Sprintf("rollout: waiting until every device has a trusted verdict (challenges every %s)", rs.attestInterval))
	t1 := time.Now()
	select {
	case <-watch.all:
	case <-time.After(3*rs.attestInterval + 60*time.Second):
		watch.mu.Lock()
		n := len(watch.trusted)
		watch.mu.Unlock()
		return res, fmt.Errorf("rollout: only %d of %d devices were trusted after %s", n, rs.devices, time.Since(t1).Round(time.Second))
	case <-ctx.Done():
		return res, ctx.Err()
	}
	res.TrustedS = time.Since(t1).Seconds()

	step(fmt.Sprintf("rollout: control plane idle with %d devices for %s (baseline)", rs.devices, rolloutIdleWindow))
	agentPIDs := make([]int, len(agents))
	for i, a := range agents {
		agentPIDs[i] = a.proc.pid()
	}
	idleAgents := newProcWatch(agentPIDs)
	watch.setPhase(1)
	if res.ServerIdle, err = sample(cp.proc.pid(), rolloutIdleWindow, ctx.Done()); err != nil {
		return res, err
	}
	watch.setPhase(2)
	res.AgentRSSIdleMiB = idleAgents.stop().meanLastMiB

	step(fmt.Sprintf("rollout: %s@%s (%.0f MiB) to %d devices, waves %v", rolloutPkgName, rolloutPkgVersion,
		float64(pkg.size)/(1<<20), rs.devices, rs.waves))
	if err := runMainRollout(ctx, rb, rs, fleet.ID, agentPIDs, &res); err != nil {
		return res, err
	}
	watch.setPhase(0)
	rb.jobs.Wait()
	computeRolloutStats(rb, watch, agents, pkg, &res)

	if nSim := len(sims); nSim > 0 {
		step(fmt.Sprintf("rollout: key-grant burst, %d simulated devices at once, %d rounds", nSim, rs.grantRounds))
		if res.Burst, err = grantBurst(ctx, rb, sims, fleet.ID, rs.grantRounds); err != nil {
			return res, err
		}
	}
	watch.mu.Lock()
	res.NotTrusted, res.FirstNotTrusted = watch.notTrusted, watch.firstNot
	watch.mu.Unlock()

	if len(agents) > 0 {
		var sum float64
		for _, pid := range agentPIDs {
			if u, err := readUsage(pid); err == nil {
				sum += float64(u.rssKiB) / 1024
			}
		}
		res.AgentRSSLaterMiB = sum / float64(len(agents))
		res.AgentLaterS = time.Since(rb.mainDone).Seconds()
	}
	// Everything stops before the device-side measurement, so it runs on a
	// quiet machine.
	step("rollout: stopping devices, agents and the control plane")
	if err := shutdown(); err != nil {
		return res, err
	}
	step(fmt.Sprintf("rollout: device-side verify+decrypt (the agent's code path) against tgsp verify + tgsp unpack, best of %d", rolloutThroughputReps))
	if res.DeviceSide, err = measureDeviceThroughput(ctx, tgspBin, work, pkg, rolloutThroughputReps); err != nil {
		return res, err
	}
	return res, nil
}

// startRealAgent starts tg-agent n (simulator TPM seeded by n, ONNX
// Runtime) and waits until it has enrolled and connected.
func startRealAgent(ctx context.Context, bin, work string, cp *controlPlane, token string, n int, onnxLib string) (*realAgent, error) {
	a := &realAgent{dir: filepath.Join(work, fmt.Sprintf("agent-%02d", n))}
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return nil, err
	}
	tokenFile := filepath.Join(a.dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		return nil, err
	}
	a.cfg = filepath.Join(a.dir, "agent.yaml")
	// Defaults otherwise: the agent as shipped, with ONNX Runtime.
	yaml := fmt.Sprintf(`version: 1
server_url: %s
ca_hash: %s
token_file: %s
state_path: %s
tpm: {simulator: true, simulator_seed: %d}
mqtt: {url: "mqtts://%s"}
labels: {%s: agent}
install: {runtime: onnxruntime, onnxruntime_library: %s}
`, cp.httpsURL, cp.caHash, tokenFile, filepath.Join(a.dir, "state", "agent.db"), 7000+n, cp.mqttAddr, rolloutLabel, onnxLib)
	if err := os.WriteFile(a.cfg, []byte(yaml), 0o600); err != nil {
		return nil, err
	}
	p, err := startProc(fmt.Sprintf("tg-agent-%02d", n), filepath.Join(a.dir, "agent.log"),
		[]string{"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "TG_ENVIRONMENT="}, bin, "run", "--config", a.cfg)
	if err != nil {
		return nil, err
	}
	a.proc = p
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := exec.CommandContext(ctx, bin, "status", "--config", a.cfg, "-o", "json").Output()
		var st agentStatus
		if err == nil && json.Unmarshal(out, &st) == nil && st.Running && st.DeviceID != "" &&
			(st.Connected || logHas(p.log, `msg="mqtt connected"`)) {
			a.id = st.DeviceID
			return a, nil
		}
		if p.exited() {
			return a, fmt.Errorf("tg-agent %d exited (%v):\n%s", n, p.err, p.tail())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return a, fmt.Errorf("tg-agent %d not enrolled and connected within 90s:\n%s", n, p.tail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// rolloutPing keeps the raw MQTT sessions alive (keepalive 30 s).
func rolloutPing(devs []*rolloutDevice, op *mqttConn, stop <-chan struct{}) {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			for _, d := range devs {
				if mc := d.mc; mc != nil {
					_ = mc.write([]byte{0xc0, 0x00})
				}
			}
			_ = op.write([]byte{0xc0, 0x00})
		}
	}
}

// runMainRollout creates the rollout and samples the machine until it is
// completed (or stops making sense: paused, aborted, timed out).
func runMainRollout(ctx context.Context, rb *rolloutBench, rs rolloutSettings, fleetID string, agentPIDs []int, res *rolloutResult) error {
	cpPID := rb.cp.proc.pid()
	stat0, err := readProcStat()
	if err != nil {
		return err
	}
	self0, err := readUsage(os.Getpid())
	if err != nil {
		return err
	}
	res.LoadAvg[0] = loadavg()
	agents := newProcWatch(agentPIDs)
	server := newProcWatch([]int{cpPID})
	t0 := time.Now()
	r, err := rb.cp.api.CreateRollout(ctx, client.RolloutCreate{Package: rolloutPkgName + "@" + rolloutPkgVersion, Fleet: fleetID,
		Waves: rs.waves, Retries: ptr(0)})
	if err != nil {
		agents.stop()
		server.stop()
		return fmt.Errorf("create the rollout: %w", err)
	}
	deadline := t0.Add(rs.timeout)
	for !client.RolloutFinished(r.State) && r.State != client.RolloutPaused {
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
		if r, err = rb.cp.api.GetRollout(ctx, r.ID); err != nil {
			agents.stop()
			server.stop()
			return err
		}
		if rb.cp.proc.exited() {
			agents.stop()
			server.stop()
			return fmt.Errorf("tg-controlplane exited during the rollout:\n%s", rb.cp.proc.tail())
		}
	}
	res.WallS = time.Since(t0).Seconds()
	rb.mainDone = time.Now()
	res.LoadAvg[1] = loadavg()
	sw, aw := server.stop(), agents.stop()
	stat1, err1 := readProcStat()
	self1, err2 := readUsage(os.Getpid())
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	res.Server = sw.windows[0]
	res.AgentsCPUS = aw.cpuSeconds
	res.AgentRSSPeakMiB, res.AgentRSSPeakMeanMiB, res.AgentRSSEndMiB = aw.maxPeakMiB, aw.meanPeakMiB, aw.meanLastMiB
	res.LoadGenCPUS = (self1.cpu - self0.cpu).Seconds()
	if tot := stat1.total - stat0.total; tot > 0 {
		res.MachineBusyPct = 100 * float64(stat1.busy-stat0.busy) / float64(tot)
	}
	if r.Jobs == nil || !client.RolloutFinished(r.State) {
		if r, err = rb.cp.api.GetRollout(ctx, r.ID); err != nil {
			return err
		}
	}
	if r.FinishedAt != nil {
		res.TotalS = r.FinishedAt.Sub(r.CreatedAt).Seconds()
	}
	if r.State != client.RolloutCompleted {
		res.Failures = append(res.Failures, fmt.Sprintf("rollout %s is %s after %s (%s %s)", r.ID, r.State,
			time.Since(t0).Round(time.Second), r.Reason, r.Detail))
	}
	rb.mainID = r.ID
	rb.mainJobs = r.Jobs
	return nil
}

// stepInstalling is the agent's installing step: decryption into memory,
// then ONNX Runtime (library init at the first install, session creation).
const stepInstalling = "decrypt into memory + ONNX Runtime load"

// computeRolloutStats fills the per-device and per-step numbers from the
// rollout's jobs and the reports the operator saw.
func computeRolloutStats(rb *rolloutBench, w *rolloutWatch, agents []*realAgent, pkg *rolloutPackage, res *rolloutResult) {
	isAgent := map[string]bool{}
	for _, a := range agents {
		isAgent[a.id] = true
	}
	var agentJob, simJob []time.Duration
	firstFail := ""
	agentsDone := 0
	for _, j := range rb.mainJobs {
		if j.State == "succeeded" {
			res.Succeeded++
			if isAgent[j.DeviceID] {
				agentsDone++
			}
		} else if firstFail == "" {
			firstFail = fmt.Sprintf("device %s: job %s %s %s %s", j.DeviceID, j.JobID, j.State, j.Reason, j.Detail)
		}
		if j.NotifiedAt == nil || j.FinishedAt == nil {
			continue
		}
		d := j.FinishedAt.Sub(*j.NotifiedAt)
		if isAgent[j.DeviceID] {
			agentJob = append(agentJob, d)
		} else {
			simJob = append(simJob, d)
		}
	}
	res.NotDone = res.Devices - res.Succeeded
	if firstFail != "" {
		res.Failures = append(res.Failures, firstFail)
	}
	res.AgentJobP50S, res.AgentJobMaxS = pct(agentJob, 50).Seconds(), pct(agentJob, 100).Seconds()
	res.SimJobP50S, res.SimJobMaxS = pct(simJob, 50).Seconds(), pct(simJob, 100).Seconds()

	rb.mu.Lock()
	served := rb.servedBytes + int64(agentsDone)*pkg.size // every committed agent downloaded it whole
	res.ServedGiB = float64(served) / (1 << 30)
	if res.TotalS > 0 {
		res.ServedMiBps = float64(served) / (1 << 20) / res.TotalS
	}
	res.SimDLP50S, res.SimDLMaxS = pct(rb.dlTimes, 50).Seconds(), pct(rb.dlTimes, 100).Seconds()
	res.GrantP50Ms, res.GrantMaxMs = ms(pct(rb.grantLat, 50)), ms(pct(rb.grantLat, 100))
	grantTimes := slices.Clone(rb.grantAt)
	res.GrantsRefused = rb.grantRefused
	res.Resumed, res.Renotified = rb.resumed.Load(), rb.renotified.Load()
	rb.mu.Unlock()
	if res.Devices > 0 {
		res.ServerCPUPer = res.Server.CPUSeconds * 1000 / float64(res.Devices)
	}

	// The agents' steps, from their reports; an agent's key grant is when
	// it reported installing (the grant had just been opened).
	w.mu.Lock()
	defer w.mu.Unlock()
	res.AttestIdle, res.AttestRollout = latencies(w.attLat[1]), latencies(w.attLat[2])
	reps := w.reports[rb.mainID]
	steps := []struct{ name, from, to string }{
		{"download (GET, SHA-256 of the file, fsync)", wire.JobDownloading, wire.JobVerifying},
		{"verify (signature, every shard hash)", wire.JobVerifying, wire.JobPolicy},
		{"policy", wire.JobPolicy, wire.JobKeyGrant},
		{"key grant (request, TPM unseal, open)", wire.JobKeyGrant, wire.JobInstalling},
		{stepInstalling, wire.JobInstalling, wire.JobSelfTest},
		{"self-test + commit", wire.JobSelfTest, wire.JobCommitted},
		{"received → committed", wire.JobReceived, wire.JobCommitted},
	}
	for _, st := range steps {
		var ds []time.Duration
		for _, a := range agents {
			r := reps[a.id]
			from, ok1 := r[st.from]
			to, ok2 := r[st.to]
			if ok1 && ok2 {
				ds = append(ds, to.Sub(from))
			}
			if st.from == wire.JobKeyGrant && ok2 {
				grantTimes = append(grantTimes, to)
			}
		}
		res.AgentSteps = append(res.AgentSteps, stepStat{Step: st.name, N: len(ds), P50S: pct(ds, 50).Seconds(), MaxS: pct(ds, 100).Seconds()})
		if st.from == wire.JobVerifying && len(ds) > 0 {
			res.AgentVerifyMiBs = float64(pkg.size) / (1 << 20) / pct(ds, 50).Seconds()
		}
	}
	res.RolloutGrants = len(grantTimes)
	if len(grantTimes) > 1 {
		res.GrantSpanS = slices.MaxFunc(grantTimes, time.Time.Compare).Sub(slices.MinFunc(grantTimes, time.Time.Compare)).Seconds()
	}
}

// grantBurst starts a second rollout of the same package to the simulated
// devices only (a selector on their label), whose jobs they hold without
// running, so each has a job in flight that entitles it to the key; then
// every device asks for its grant at the same moment, rounds times after a
// warm-up round, and the rollout is aborted.
func grantBurst(ctx context.Context, rb *rolloutBench, sims []*rolloutDevice, fleetID string, rounds int) (burstResult, error) {
	res := burstResult{Devices: len(sims), Rounds: rounds}
	rb.inBurst.Store(true)
	rb.burstReady.Add(len(sims))
	r, err := rb.cp.api.CreateRollout(ctx, client.RolloutCreate{Package: rolloutPkgName + "@" + rolloutPkgVersion, Fleet: fleetID,
		Selector: map[string]string{rolloutLabel: "simulated"}, Retries: ptr(0)})
	if err != nil {
		return res, fmt.Errorf("create the burst rollout: %w", err)
	}
	ready := make(chan struct{})
	go func() { rb.burstReady.Wait(); close(ready) }()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		return res, errors.New("burst: not every simulated device got its job within 60s")
	case <-ctx.Done():
		return res, ctx.Err()
	}
	var lats []time.Duration
	var wall time.Duration
	var u0 usage
	for round := 0; round <= rounds; round++ {
		if round == 1 {
			if u0, err = readUsage(rb.cp.proc.pid()); err != nil {
				return res, err
			}
		}
		start := make(chan struct{})
		got := make([]time.Duration, len(sims))
		errs := make([]error, len(sims))
		var wg sync.WaitGroup
		for i, d := range sims {
			d.mu.Lock()
			job := d.burstJob
			d.mu.Unlock()
			wg.Go(func() {
				<-start
				var g []byte
				g, got[i], errs[i] = d.keyGrant(ctx, job, rb.pkgID)
				if errs[i] == nil && round == 0 {
					errs[i] = rb.openGrant(g, d.kem)
				}
			})
		}
		t0 := time.Now()
		close(start)
		wg.Wait()
		if round == 0 {
			continue
		}
		wall += time.Since(t0)
		for i, e := range errs {
			if e != nil {
				res.Refused++
				if res.FirstRefusal == "" {
					res.FirstRefusal = e.Error()
				}
				continue
			}
			lats = append(lats, got[i])
		}
	}
	u1, err := readUsage(rb.cp.proc.pid())
	if err != nil {
		return res, err
	}
	res.Grants = len(lats)
	if wall > 0 {
		res.PerS = float64(res.Grants) / wall.Seconds()
		res.ServerCPUPct = 100 * (u1.cpu - u0.cpu).Seconds() / wall.Seconds()
	}
	if res.Grants > 0 {
		res.ServerCPUMs = ms(u1.cpu-u0.cpu) / float64(res.Grants)
	}
	res.P50Ms, res.P99Ms, res.MaxMs = ms(pct(lats, 50)), ms(pct(lats, 99)), ms(pct(lats, 100))
	if _, err := rb.cp.api.AbortRollout(ctx, r.ID, "benchmark done"); err != nil {
		return res, fmt.Errorf("abort the burst rollout: %w", err)
	}
	return res, nil
}

// procWatch samples processes every 500 ms until stopped: CPU over the
// window and peak RSS per process.
type procWatch struct {
	pids []int
	done chan struct{}
	out  chan procWatchResult
}

type procWatchResult struct {
	windows     []window
	cpuSeconds  float64 // all processes
	maxPeakMiB  float64
	meanPeakMiB float64
	meanLastMiB float64
}

func newProcWatch(pids []int) *procWatch {
	w := &procWatch{pids: pids, done: make(chan struct{}), out: make(chan procWatchResult, 1)}
	go w.run()
	return w
}

func (w *procWatch) stop() procWatchResult {
	close(w.done)
	return <-w.out
}

func (w *procWatch) run() {
	n := len(w.pids)
	first := make([]usage, n)
	last := make([]usage, n)
	sum := make([]int64, n)
	peak := make([]int64, n)
	count := 0
	read := func() {
		for i, pid := range w.pids {
			u, err := readUsage(pid)
			if err != nil {
				continue // exited; its last reading stands
			}
			if count == 0 {
				first[i] = u
			}
			last[i] = u
			sum[i] += u.rssKiB
			peak[i] = max(peak[i], u.rssKiB)
		}
		count++
	}
	read()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			read()
			continue
		case <-w.done:
		}
		break
	}
	read()
	var r procWatchResult
	for i := range w.pids {
		win := between(first[i], last[i], float64(sum[i])/float64(count)/1024, float64(peak[i])/1024)
		r.windows = append(r.windows, win)
		r.cpuSeconds += win.CPUSeconds
		r.maxPeakMiB = max(r.maxPeakMiB, win.RSSMaxMiB)
		if n > 0 {
			r.meanPeakMiB += win.RSSMaxMiB / float64(n)
			r.meanLastMiB += win.RSSEndMiB / float64(n)
		}
	}
	w.out <- r
}

// loadavg is the 1-minute load average (0 when unreadable).
func loadavg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// procStat is the machine's CPU time (/proc/stat's cpu line, in ticks).
type procStat struct{ busy, total int64 }

func readProcStat() (procStat, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return procStat{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return procStat{}, errors.New("malformed /proc/stat")
	}
	var s procStat
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return procStat{}, err
		}
		if i >= 8 { // guest time is already counted in user
			break
		}
		s.total += n
		if i != 3 && i != 4 { // idle, iowait
			s.busy += n
		}
	}
	return s, nil
}

func printRollout(w io.Writer, r rolloutResult) {
	fmt.Fprintf(w, "\nROLLOUT: %s package to %d devices (%d real tg-agent + %d simulated), waves %v\tvalue\tbaseline / note\n",
		mibStr(r.PackageBytes), r.Devices, r.Agents, r.Simulated, r.Waves)
	fmt.Fprintf(w, "package\t%s\tONNX MLP %s (%s model) + self-test; tgsp pack %s s, push %s s\n",
		mibStr(r.PackageBytes), r.ModelShape, mibStr(r.ModelBytes), f1(r.PackS), f1(r.PushS))
	fmt.Fprintf(w, "setup: enroll + connect (sequential), then all trusted\t%s s + %s s\tattestation every %s\n",
		f1(r.SetupS), f1(r.TrustedS), time.Duration(r.AttestIntervalS*float64(time.Second)))
	fmt.Fprintf(w, "TOTAL TIME, created → completed\t%s s\t%d/%d committed; seen here after %s s\n", f1(r.TotalS), r.Succeeded, r.Devices, f1(r.WallS))
	fmt.Fprintf(w, "per device, notified → committed, p50 / max\tagents %s / %s s\tsimulated %s / %s s\n",
		f1(r.AgentJobP50S), f1(r.AgentJobMaxS), f1(r.SimJobP50S), f1(r.SimJobMaxS))
	fmt.Fprintf(w, "bytes served by the control plane\t%s GiB\t%s MiB/s over the total; simulated downloads p50 / max %s / %s s\n",
		f2(r.ServedGiB), f1(r.ServedMiBps), f1(r.SimDLP50S), f1(r.SimDLMaxS))
	fmt.Fprintf(w, "control plane CPU during the rollout\t%s\t%s CPU-s over %s s; %s ms per device\n",
		cpuPct(r.Server), f1(r.Server.CPUSeconds), f1(r.Server.Seconds), f1(r.ServerCPUPer))
	fmt.Fprintf(w, "control plane RSS mean / max\t%s / %s MiB\tidle with the fleet: %s MiB, CPU %s\n",
		f1(r.Server.RSSMeanMiB), f1(r.Server.RSSMaxMiB), f1(r.ServerIdle.RSSMeanMiB), cpuPct(r.ServerIdle))
	fmt.Fprintf(w, "machine busy during the rollout\t%s %%\tof all cores; CPU-s: control plane %s, %d agents %s, simulated devices (this process) %s; load average %s → %s\n",
		f1(r.MachineBusyPct), f1(r.Server.CPUSeconds), r.Agents, f1(r.AgentsCPUS), f1(r.LoadGenCPUS), f2(r.LoadAvg[0]), f2(r.LoadAvg[1]))
	fmt.Fprintf(w, "real agent RSS: idle / peak (max, mean) / serving\t%s / %s, %s / %s MiB\tthe model is decrypted into memory and loaded by ONNX Runtime; %s MiB %s s later\n",
		f1(r.AgentRSSIdleMiB), f1(r.AgentRSSPeakMiB), f1(r.AgentRSSPeakMeanMiB), f1(r.AgentRSSEndMiB), f1(r.AgentRSSLaterMiB), f1(r.AgentLaterS))
	for _, s := range r.AgentSteps {
		note := fmt.Sprintf("p50 / max over %d agents (their job reports)", s.N)
		if s.Step == stepInstalling && r.DeviceSide.AgentDecryptS > 0 {
			note += fmt.Sprintf("; decryption alone takes %s s (quiet, below), the rest is ONNX Runtime", f2(r.DeviceSide.AgentDecryptS))
		}
		fmt.Fprintf(w, "  agent step: %s\t%s / %s s\t%s\n", s.Step, f2(s.P50S), f2(s.MaxS), note)
	}
	if r.AttestRollout.N == 0 {
		fmt.Fprintf(w, "attestation evidence → verdict, idle\tp50 %s ms\tp99 %s, max %s ms (%d verdicts); no challenge fell within the rollout (BENCH_ROLLOUT_ATTEST_INTERVAL below its length measures it)\n",
			f1(r.AttestIdle.P50Ms), f1(r.AttestIdle.P99Ms), f1(r.AttestIdle.MaxMs), r.AttestIdle.N)
	} else {
		fmt.Fprintf(w, "attestation evidence → verdict, idle / rollout\tp50 %s / %s ms\tp99 %s / %s, max %s / %s ms (%d / %d verdicts of simulated devices); a grant needs a verdict ≤ 2 intervals old\n",
			f1(r.AttestIdle.P50Ms), f1(r.AttestRollout.P50Ms), f1(r.AttestIdle.P99Ms), f1(r.AttestRollout.P99Ms),
			f1(r.AttestIdle.MaxMs), f1(r.AttestRollout.MaxMs), r.AttestIdle.N, r.AttestRollout.N)
	}
	fmt.Fprintf(w, "key grants during the rollout\t%d over %s s\tsimulated devices' latency p50 / max %s / %s ms\n",
		r.RolloutGrants, f1(r.GrantSpanS), f1(r.GrantP50Ms), f1(r.GrantMaxMs))
	b := r.Burst
	fmt.Fprintf(w, "KEY GRANTS/S, burst of %d devices × %d rounds\t%s grants/s\tp50 / p99 / max %s / %s / %s ms; server %s ms CPU per grant (%s %% of a core); %d refused\n",
		b.Devices, b.Rounds, f1(b.PerS), f1(b.P50Ms), f1(b.P99Ms), f1(b.MaxMs), f2(b.ServerCPUMs), f1(b.ServerCPUPct), b.Refused)
	d := r.DeviceSide
	fmt.Fprintf(w, "DEVICE SIDE verify+decrypt, agent code path\t%s\tverify %s, decrypt into memory (1 goroutine) %s; best of %d, quiet machine\n",
		mibps(d.AgentTotalMiB), mibps(d.AgentVerifyMiB), mibps(d.AgentDecMiB), d.Reps)
	fmt.Fprintf(w, "  baseline: tgsp verify + tgsp unpack\t%s\tverify %s, unpack %s (--workers 1: %s) to the page cache\n",
		mibps(d.TgspTotalMiB), mibps(d.TgspVerifyMiB), mibps(d.TgspUnpackMiB), mibps(d.TgspUnpackW1MiB))
	fmt.Fprintf(w, "  ratio agent / tgsp\t%s\tdecrypt vs unpack --workers 1: %s; verify in the rollout (agents' reports, contended): %s\n",
		f2(d.Ratio), f2(d.DecryptRatioW1), mibps(r.AgentVerifyMiBs))
	fmt.Fprintf(w, "downloads resumed / jobs notified again\t%d / %d\t\n", r.Resumed, r.Renotified)
	fmt.Fprintf(w, "verdicts not trusted / connections lost\t%d / %d\t%s%s\n", r.NotTrusted, r.ConnErrors, r.FirstNotTrusted, r.FirstConnError)
	fmt.Fprintf(w, "control plane warnings\t%d\t%s\n", sumValues(r.Warnings), topWarnings(r.Warnings, 3))
}

// printRolloutFile prints the table of a rollout summary
// (.bench/rollout.json) again.
func printRolloutFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r rolloutResult
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	printRollout(w, r)
	return w.Flush()
}

func mibStr(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MiB" }
