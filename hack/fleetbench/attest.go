package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/enrollbind"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// attestGoal is issue 4's bound on p99 from evidence to published verdict.
const attestGoal = time.Second

// attestResult is the attestation phase: devices with software TPMs
// answering the control plane's challenges, an operator watching the
// verdicts.
type attestResult struct {
	Devices   int     `json:"devices"`
	IntervalS float64 `json:"interval_s"`
	WindowS   float64 `json:"window_s"`

	// Setup: each device enrolls with the full TPM protocol (soft TPM,
	// kind simulated) and connects at once, EnrollConc at a time.
	EnrollConc  int     `json:"enroll_concurrency"`
	SetupPerS   float64 `json:"setup_devices_per_s"`
	EnrollMs    float64 `json:"enroll_ms_mean"`
	ConnectMs   float64 `json:"connect_ms_mean"`
	SetupCPUMs  float64 `json:"setup_server_cpu_ms_per_device"`
	WarmupS     float64 `json:"warmup_s"`
	NeverTrusts int     `json:"never_trusted"`

	// In the window: challenges received, evidence published, and of that
	// evidence the verdicts the operator received (matched by the
	// challenge they answer); Lost = Evidence − Verdicts after a grace
	// period.
	Challenges int `json:"challenges"`
	Evidence   int `json:"evidence"`
	Verdicts   int `json:"verdicts"`
	Lost       int `json:"lost"`
	// Latency from the device publishing its evidence to the operator
	// receiving the verdict for it (one clock: both run in this process).
	P50Ms     float64 `json:"p50_ms"`
	P90Ms     float64 `json:"p90_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	GoalRatio float64 `json:"p99_goal_ratio"` // p99 / 1 s
	// BurstPerS is the most challenges received within one second,
	// MeanPerS the challenges per second over the window. GapMeanS and
	// GapMaxS are the times between two challenges to one device (the
	// scheduler challenges a device at its first scan after its due
	// time; two intervals without an answer make it stale).
	BurstPerS int     `json:"challenge_burst_per_s"`
	MeanPerS  float64 `json:"challenge_mean_per_s"`
	GapMeanS  float64 `json:"challenge_gap_mean_s"`
	GapMaxS   float64 `json:"challenge_gap_max_s"`

	// NotTrusted counts untrusted and stale verdicts of our devices from
	// the first connection to the end (must be 0).
	NotTrusted      int    `json:"not_trusted"`
	FirstNotTrusted string `json:"first_not_trusted,omitempty"`
	// Unknown verdicts (published once per new device) and verdicts that
	// answer no evidence of ours, for the record.
	Unknown   int `json:"unknown_verdicts"`
	Unmatched int `json:"unmatched_verdicts"`
	// ConnErrors: device or operator connections lost before the end.
	ConnErrors     int    `json:"conn_errors"`
	FirstConnError string `json:"first_conn_error,omitempty"`

	Server  window `json:"server"`
	LoadCPU window `json:"load_generator"`
	// Warnings are the control plane's WARN log lines during the phase,
	// by message.
	Warnings map[string]int `json:"warnings,omitempty"`
}

// failures lists what went wrong (never a timing).
func (r attestResult) failures() []string {
	var f []string
	if r.NeverTrusts > 0 {
		f = append(f, fmt.Sprintf("attestation: %d devices never had a trusted verdict", r.NeverTrusts))
	}
	if r.NotTrusted > 0 {
		f = append(f, fmt.Sprintf("attestation: %d verdicts not trusted (first: %s)", r.NotTrusted, r.FirstNotTrusted))
	}
	if r.Evidence == 0 {
		f = append(f, "attestation: no evidence sent in the window")
	}
	if r.Lost > lostTolerance(r.Evidence) {
		f = append(f, fmt.Sprintf("attestation: %d of %d pieces of evidence got no verdict (tolerance %d)", r.Lost, r.Evidence, lostTolerance(r.Evidence)))
	}
	if r.ConnErrors > 0 {
		f = append(f, fmt.Sprintf("attestation: %d connections lost (%s)", r.ConnErrors, r.FirstConnError))
	}
	return f
}

// lostTolerance is 0.5 % of the evidence. Every piece of evidence from an
// enrolled device gets a published verdict and nothing here reconnects, so
// a loss is a fault; the slack keeps one dropped message on a loaded,
// shared machine from failing the run while a systematic loss (a verdict
// published only on change, a full verification queue) still does.
func lostTolerance(evidence int) int { return evidence / 200 }

// simDevice is one simulated device: its soft TPM and MQTT session.
type simDevice struct {
	id  string
	tpm *softTPM
	mc  *mqttConn
}

// sentEvidence is evidence waiting for its verdict.
type sentEvidence struct {
	issuedAt time.Time // of the challenge it answers (control-plane clock)
	sent     time.Time
	inWindow bool
}

// latencyRecord is one measured evidence → verdict.
type latencyRecord struct {
	device string
	sent   time.Duration // since the window started
	lat    time.Duration
}

// attestTracker matches verdicts to evidence. A verdict names no
// challenge, but evidence_at − nonce_age_ms is, to the millisecond, when
// the answered challenge was issued, and a device has one challenge per
// interval.
type attestTracker struct {
	mu       sync.Mutex
	devices  map[string]bool // registered; true once trusted
	want     int
	trusted  int
	all      chan struct{} // closed when every device has been trusted
	phase    int           // 0 warm-up, 1 window, 2 after
	wstart   time.Time
	pending  map[string][]sentEvidence
	open     int           // window evidence without a verdict
	drained  chan struct{} // closed in phase 2 when open reaches 0
	closing  bool
	latency  []latencyRecord
	chTimes  []time.Time
	lastCh   map[string]time.Time
	gaps     []time.Duration // between challenges to one device, window only
	interval time.Duration
	res      attestResult
}

const matchTolerance = 500 * time.Millisecond

func newAttestTracker(want int, interval time.Duration) *attestTracker {
	return &attestTracker{devices: map[string]bool{}, want: want, all: make(chan struct{}),
		pending: map[string][]sentEvidence{}, drained: make(chan struct{}), interval: interval, lastCh: map[string]time.Time{}}
}

func (t *attestTracker) register(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.devices[id] = false
}

func (t *attestTracker) challenge(dev string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	last, ok := t.lastCh[dev]
	t.lastCh[dev] = at
	if t.phase == 1 {
		t.res.Challenges++
		t.chTimes = append(t.chTimes, at)
		if ok {
			t.gaps = append(t.gaps, at.Sub(last))
		}
	}
}

func (t *attestTracker) evidence(dev string, issuedAt, sent time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pending[dev]
	// Forget evidence whose verdict is long overdue (outside the window
	// it counts for nothing; inside, it stays and is counted lost).
	p = slices.DeleteFunc(p, func(e sentEvidence) bool { return !e.inWindow && sent.Sub(e.sent) > 3*t.interval })
	in := t.phase == 1
	t.pending[dev] = append(p, sentEvidence{issuedAt: issuedAt, sent: sent, inWindow: in})
	if in {
		t.res.Evidence++
		t.open++
	}
}

func (t *attestTracker) verdict(v wire.Verdict, recv time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	wasTrusted, ok := t.devices[v.Device]
	if !ok {
		t.res.Unmatched++
		return
	}
	switch v.State {
	case wire.VerdictUnknown:
		t.res.Unknown++
		return
	case wire.VerdictTrusted:
		if !wasTrusted {
			t.devices[v.Device] = true
			if t.trusted++; t.trusted == t.want {
				close(t.all)
			}
		}
	default:
		t.res.NotTrusted++
		if t.res.FirstNotTrusted == "" {
			var codes []string
			for _, r := range v.Reasons {
				codes = append(codes, r.Code+" "+r.Detail)
			}
			t.res.FirstNotTrusted = fmt.Sprintf("%s %s %s", v.Device, v.State, strings.Join(codes, "; "))
		}
		if v.State == wire.VerdictStale {
			return // answers no evidence
		}
	}
	if v.EvidenceAt.IsZero() {
		t.res.Unmatched++
		return
	}
	issued := v.EvidenceAt.Add(-time.Duration(v.NonceAgeMS) * time.Millisecond)
	p := t.pending[v.Device]
	best, bestD := -1, matchTolerance
	for i, e := range p {
		d := e.issuedAt.Sub(issued).Abs()
		if d <= bestD {
			best, bestD = i, d
		}
	}
	if best < 0 {
		t.res.Unmatched++
		return
	}
	e := p[best]
	t.pending[v.Device] = slices.Delete(p, best, best+1)
	if !e.inWindow {
		return
	}
	t.res.Verdicts++
	t.latency = append(t.latency, latencyRecord{device: v.Device, sent: e.sent.Sub(t.wstart), lat: recv.Sub(e.sent)})
	if t.open--; t.open == 0 && t.phase == 2 {
		close(t.drained)
	}
}

func (t *attestTracker) connLost(who string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return
	}
	t.res.ConnErrors++
	if t.res.FirstConnError == "" {
		t.res.FirstConnError = fmt.Sprintf("%s: %v", who, err)
	}
}

func (t *attestTracker) setPhase(p int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.phase = p
	if p == 1 {
		t.wstart = time.Now()
	}
	if p == 2 && t.open == 0 {
		close(t.drained)
	}
}

// benchAttestation runs the attestation phase on its own control plane
// (attestation.interval set; the other phases keep the default so the
// idle agent is not challenged every few seconds).
func benchAttestation(ctx context.Context, s settings, cpBin string) (res attestResult, err error) {
	res = attestResult{Devices: s.attestDevices, IntervalS: s.attestInterval.Seconds(), WindowS: s.attestWindow.Seconds(), EnrollConc: s.enrollConc}
	work := filepath.Join(s.work, "attest")
	if err := os.MkdirAll(work, 0o700); err != nil {
		return res, err
	}
	cp, err := startControlPlane(ctx, cpBin, work, fmt.Sprintf("attestation: {interval: %s}\n", s.attestInterval))
	if err != nil {
		return res, err
	}
	logStart := fileSize(cp.proc.log)
	fleet, err := cp.api.CreateFleet(ctx, client.FleetCreate{Name: "attest", Policy: &client.FleetPolicyPatch{AllowSimulatedTPM: ptr(true)}})
	if err != nil {
		return res, err
	}
	step(fmt.Sprintf("attestation: %d enrollment tokens, %d soft TPMs", s.attestDevices, s.attestDevices))
	tokens, err := createTokens(ctx, cp.api, fleet.ID, s.attestDevices)
	if err != nil {
		return res, err
	}
	devs := make([]*simDevice, s.attestDevices)
	for i := range devs {
		t, err := newSoftTPM()
		if err != nil {
			return res, err
		}
		devs[i] = &simDevice{tpm: t}
	}

	tr := newAttestTracker(s.attestDevices, s.attestInterval)
	host, _, err := net.SplitHostPort(cp.mqttAddr)
	if err != nil {
		return res, err
	}
	op, err := operatorSession(ctx, cp, host)
	if err != nil {
		return res, fmt.Errorf("operator: %w", err)
	}
	var readers sync.WaitGroup
	defer func() {
		tr.mu.Lock()
		tr.closing = true
		tr.mu.Unlock()
		for _, d := range devs {
			if d.mc != nil {
				_ = d.mc.write([]byte{0xe0, 0x00}) // DISCONNECT: no Will
				_ = d.mc.c.Close()
			}
		}
		_ = op.write([]byte{0xe0, 0x00})
		_ = op.c.Close()
		readers.Wait()
		if stopErr := cp.proc.stop(30 * time.Second); stopErr != nil && err == nil {
			err = fmt.Errorf("tg-controlplane (attestation) did not stop cleanly: %w", stopErr)
		}
		res.Warnings = logWarnings(cp.proc.log, logStart)
	}()
	if err := op.subscribe(mqttacl.FleetAttestationFilter(tenant, fleet.ID), 1, 10*time.Second); err != nil {
		return res, fmt.Errorf("operator: %w", err)
	}
	readers.Go(func() { operatorLoop(op, tr) })

	step(fmt.Sprintf("attestation: %d devices enroll (full TPM protocol, soft TPMs) and connect, %d at a time", s.attestDevices, s.enrollConc))
	if err := setupDevices(ctx, cp, host, devs, tokens, s.enrollConc, tr, &readers, &res); err != nil {
		return res, err
	}
	stopPing := make(chan struct{})
	defer close(stopPing)
	go pingLoop(devs, op, stopPing)

	step(fmt.Sprintf("attestation: waiting until every device has a trusted verdict (challenges every %s)", s.attestInterval))
	t0 := time.Now()
	select {
	case <-tr.all:
	case <-time.After(3*s.attestInterval + 30*time.Second):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	res.WarmupS = time.Since(t0).Seconds()
	tr.mu.Lock()
	res.NeverTrusts = s.attestDevices - tr.trusted
	tr.mu.Unlock()

	step(fmt.Sprintf("attestation: measuring for %s", s.attestWindow))
	self0, err := readUsage(os.Getpid())
	if err != nil {
		return res, err
	}
	tr.setPhase(1)
	res.Server, err = sample(cp.proc.pid(), s.attestWindow, ctx.Done())
	if err != nil {
		return res, err
	}
	tr.setPhase(2)
	self1, err := readUsage(os.Getpid())
	if err != nil {
		return res, err
	}
	res.LoadCPU = between(self0, self1, float64(self1.rssKiB)/1024, float64(self1.rssKiB)/1024)
	// The verdicts of the window's last evidence.
	select {
	case <-tr.drained:
	case <-time.After(max(s.attestInterval, 5*time.Second)):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	if cp.proc.exited() {
		return res, fmt.Errorf("tg-controlplane exited under attestation load:\n%s", cp.proc.tail())
	}

	tr.mu.Lock()
	defer tr.mu.Unlock()
	r := tr.res
	res.Challenges, res.Evidence, res.Verdicts = r.Challenges, r.Evidence, r.Verdicts
	res.Lost = r.Evidence - r.Verdicts
	res.NotTrusted, res.FirstNotTrusted, res.Unknown, res.Unmatched = r.NotTrusted, r.FirstNotTrusted, r.Unknown, r.Unmatched
	res.ConnErrors, res.FirstConnError = r.ConnErrors, r.FirstConnError
	lats := make([]time.Duration, len(tr.latency))
	for i, l := range tr.latency {
		lats[i] = l.lat
	}
	res.P50Ms, res.P90Ms, res.P99Ms, res.MaxMs = ms(pct(lats, 50)), ms(pct(lats, 90)), ms(pct(lats, 99)), ms(pct(lats, 100))
	res.GoalRatio = res.P99Ms / ms(attestGoal)
	res.BurstPerS = maxInWindow(tr.chTimes, time.Second)
	res.MeanPerS = float64(res.Challenges) / res.Server.Seconds
	if len(tr.gaps) > 0 {
		var sum time.Duration
		for _, g := range tr.gaps {
			sum += g
		}
		res.GapMeanS = (sum / time.Duration(len(tr.gaps))).Seconds()
		res.GapMaxS = slices.Max(tr.gaps).Seconds()
	}
	if err := writeLatencies(filepath.Join(work, "latency.csv"), tr.latency); err != nil {
		return res, err
	}
	return res, nil
}

// operatorSession gets a read-only operator certificate (as `tgctl mqtt
// credentials` does) and connects with it.
func operatorSession(ctx context.Context, cp *controlPlane, host string) (*mqttConn, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "fleetbench-operator"}}, key)
	if err != nil {
		return nil, err
	}
	cr, err := cp.api.MQTTCredentials(ctx, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))
	if err != nil {
		return nil, err
	}
	cert, err := tlsCert(cr.CertificatePEM, key)
	if err != nil {
		return nil, err
	}
	roots := cp.roots.Clone()
	roots.AppendCertsFromPEM([]byte(cr.CAPEM))
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: host, Certificates: []tls.Certificate{cert}}
	return connectOperator(cp.mqttAddr, cfg, "fleetbench-operator", 30*time.Second)
}

// tlsCert pairs a PEM chain with its key.
func tlsCert(chainPEM string, key *ecdsa.PrivateKey) (tls.Certificate, error) {
	var c tls.Certificate
	rest := []byte(chainPEM)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			c.Certificate = append(c.Certificate, b.Bytes)
		}
	}
	if len(c.Certificate) == 0 {
		return c, errors.New("no certificate in the PEM chain")
	}
	c.PrivateKey = key
	return c, nil
}

// setupDevices enrolls every device with the full TPM protocol and connects
// it right away (as the agent does, so the device is listening by the
// time the scheduler's next challenge comes), conc at a time.
func setupDevices(ctx context.Context, cp *controlPlane, host string, devs []*simDevice, tokens []string, conc int,
	tr *attestTracker, readers *sync.WaitGroup, res *attestResult) error {
	errs := make([]error, len(devs))
	var enrollT, connectT atomic.Int64
	var next atomic.Int64
	u0, err := readUsage(cp.proc.pid())
	if err != nil {
		return err
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			hc := deviceHTTP(cp.roots)
			defer hc.CloseIdleConnections()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(devs) || ctx.Err() != nil {
					return
				}
				d := devs[i]
				t0 := time.Now()
				id, cert, err := enrollSoft(ctx, hc, cp.httpsURL, d.tpm, tokens[i], nil)
				d.id = id
				enrollT.Add(int64(time.Since(t0)))
				if err != nil {
					errs[i] = fmt.Errorf("enroll: %w", err)
					continue
				}
				tr.register(d.id)
				t1 := time.Now()
				cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cp.roots, ServerName: host, Certificates: []tls.Certificate{cert}}
				c, _, _, err := connectDevice(cp.mqttAddr, cfg, tenant, d.id, 30*time.Second)
				if err == nil {
					mc := newMQTTConn(c)
					if err = mc.subscribe(mqttacl.CmdTopic(tenant, d.id, "attest"), 1, 10*time.Second); err != nil {
						_ = c.Close()
					} else {
						d.mc = mc
						readers.Go(func() { deviceLoop(d, tr) })
					}
				}
				connectT.Add(int64(time.Since(t1)))
				if err != nil {
					errs[i] = fmt.Errorf("device %s: connect: %w", d.id, err)
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	u1, err := readUsage(cp.proc.pid())
	if err != nil {
		return err
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("attestation setup: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	n := float64(len(devs))
	res.SetupPerS = n / wall.Seconds()
	res.EnrollMs = ms(time.Duration(enrollT.Load())) / n
	res.ConnectMs = ms(time.Duration(connectT.Load())) / n
	res.SetupCPUMs = ms(u1.cpu-u0.cpu) / n
	return nil
}

// enrollSoft enrolls the soft TPM t as the agent enrolls a TPM device
// (agent/internal/enroll): CSR of the TLS key, TPM2_Certify bound to token,
// CSR and, when kemPub is set, the device's KEM key, POST enroll,
// TPM2_ActivateCredential, POST activate. It returns the device id and its
// TLS certificate.
func enrollSoft(ctx context.Context, hc *http.Client, base string, t *softTPM, token string, kemPub []byte) (string, tls.Certificate, error) {
	csr, err := tpmdev.CreateCSR(t.tls, pkix.Name{CommonName: "tg-agent"})
	if err != nil {
		return "", tls.Certificate{}, err
	}
	att, sig, err := t.Certify(enrollbind.QualifyingDataKEM(token, csr, kemPub))
	if err != nil {
		return "", tls.Certificate{}, err
	}
	req := wire.EnrollRequest{Token: token, CSR: csr, TPMKind: wire.TPMKindSimulated, KEMPublic: kemPub, TPM: &wire.TPMEvidence{
		EKPublic: t.ekPub, AKPublic: t.akPub, TLSKeyPublic: t.tlsPub,
		TLSKeyCertify: att, TLSKeyCertifySignature: sig,
	}}
	var ch wire.Challenge
	if _, err := postJSON(ctx, hc, base+pathEnroll, req, &ch); err != nil {
		return "", tls.Certificate{}, err
	}
	secret, err := t.ActivateCredential(ch.CredentialBlob, ch.EncryptedSecret)
	if err != nil {
		return "", tls.Certificate{}, err
	}
	var resp wire.EnrollResponse
	if _, err := postJSON(ctx, hc, base+pathActivate, wire.ChallengeAnswer{SessionID: ch.SessionID, Secret: secret}, &resp); err != nil {
		return "", tls.Certificate{}, err
	}
	if err := checkIssued(resp, &t.tls.PublicKey); err != nil {
		return "", tls.Certificate{}, err
	}
	cert, err := tlsCert(resp.CertificatePEM, t.tls)
	return resp.DeviceID, cert, err
}

// deviceLoop answers every challenge on the device's cmd/attest topic as
// the agent's responder does: a quote over the challenge's PCRs with the
// nonce, published QoS 1 on the device's attestation topic.
func deviceLoop(d *simDevice, tr *attestTracker) {
	topic := mqttacl.AttestationTopic(tenant, d.id)
	var n int
	for {
		_, payload, recv, err := d.mc.nextPublish()
		if err != nil {
			tr.connLost(d.id, err)
			return
		}
		var ch wire.AttestChallenge
		if err := json.Unmarshal(payload, &ch); err != nil || ch.Schema != wire.AttestChallengeSchema {
			continue
		}
		tr.challenge(d.id, recv)
		n++
		ev := wire.AttestEvidence{Schema: wire.AttestEvidenceSchema, MsgID: fmt.Sprintf("%s-%d", d.id, n),
			Device: d.id, ChallengeID: ch.ID, Nonce: ch.Nonce}
		var q []byte
		if q, ev.Signature, ev.PCRValues, err = d.tpm.Quote(ch.PCRs, ch.Nonce); err != nil {
			ev.Error = err.Error()
		}
		ev.Quote = q
		b, err := json.Marshal(ev)
		if err != nil {
			continue
		}
		tr.evidence(d.id, ch.IssuedAt, time.Now())
		if err := d.mc.publish1(topic, b); err != nil {
			tr.connLost(d.id, err)
			return
		}
	}
}

// operatorLoop receives the fleet's verdicts.
func operatorLoop(op *mqttConn, tr *attestTracker) {
	for {
		_, payload, recv, err := op.nextPublish()
		if err != nil {
			tr.connLost("operator", err)
			return
		}
		var v wire.Verdict
		if err := json.Unmarshal(payload, &v); err != nil || v.Schema != wire.VerdictSchema {
			continue
		}
		tr.verdict(v, recv)
	}
}

// pingLoop keeps every session alive (keepalive 30 s, as the agent's).
func pingLoop(devs []*simDevice, op *mqttConn, stop <-chan struct{}) {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			for _, d := range devs {
				if d.mc != nil {
					_ = d.mc.write([]byte{0xc0, 0x00})
				}
			}
			_ = op.write([]byte{0xc0, 0x00})
		}
	}
}

// maxInWindow is the largest number of times within any span of w.
func maxInWindow(ts []time.Time, w time.Duration) int {
	s := slices.SortedFunc(slices.Values(ts), time.Time.Compare)
	best, j := 0, 0
	for i := range s {
		for s[i].Sub(s[j]) >= w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// writeLatencies writes one line per measured verdict (kept with KEEP=1).
func writeLatencies(path string, recs []latencyRecord) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "device,sent_ms,latency_ms")
	for _, r := range recs {
		fmt.Fprintf(w, "%s,%.1f,%.3f\n", r.device, ms(r.sent), ms(r.lat))
	}
	return errors.Join(w.Flush(), f.Close())
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logWarnings counts the WARN and ERROR lines the control plane logged
// after offset, by message.
func logWarnings(path string, offset int64) map[string]int {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return nil
	}
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var rec struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(line, &rec) != nil {
			// slog's text format: level=WARN msg="…"
			s := string(line)
			if lv, ok := textField(s, "level"); ok {
				rec.Level = lv
				rec.Msg, _ = textField(s, "msg")
			}
		}
		if rec.Level == "WARN" || rec.Level == "ERROR" {
			out[rec.Level+" "+rec.Msg]++
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// textField returns key's value in a slog text line.
func textField(line, key string) (string, bool) {
	i := strings.Index(line, key+"=")
	if i < 0 {
		return "", false
	}
	v := line[i+len(key)+1:]
	if q, err := strconv.QuotedPrefix(v); err == nil {
		s, err := strconv.Unquote(q)
		return s, err == nil
	}
	if sp := strings.IndexByte(v, ' '); sp >= 0 {
		v = v[:sp]
	}
	return v, true
}

// topWarnings is the warnings, most frequent first, for the table.
func topWarnings(m map[string]int, n int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || (m[keys[i]] == m[keys[j]] && keys[i] < keys[j]) })
	var parts []string
	for i, k := range keys {
		if i == n {
			parts = append(parts, fmt.Sprintf("… %d more kinds", len(keys)-n))
			break
		}
		parts = append(parts, fmt.Sprintf("%d× %s", m[k], k))
	}
	return strings.Join(parts, "; ")
}
