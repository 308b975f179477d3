package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/attest"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/broker"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// AttestationFilter matches every device's evidence topic.
const AttestationFilter = mqttacl.Prefix + "/+/devices/+/attestation"

// DefaultAttestationInterval is the challenge interval when the
// configuration names none.
const DefaultAttestationInterval = 60 * time.Second

// attestRecord is what the attestation service keeps per device between
// pieces of evidence.
type attestRecord struct {
	// State is the TPM clock state of the last trusted quote.
	State *attest.DeviceState `json:"state,omitempty"`
	// Baseline are the baseline PCR values (recorded on first trust).
	Baseline map[int][]byte `json:"baseline,omitempty"`
	// Verdict is the device's current verdict (nil: never attested). It is
	// stored on every piece of evidence, also when it is not published
	// again, so its evidence time is that of the last answer.
	Verdict *wire.Verdict `json:"verdict,omitempty"`
}

// lastValid is when the device last sent authentic evidence: a quote over
// the challenge nonce signed by its enrolled AK, whatever the verdict (the
// verifier sets the PCR digest exactly then; a stale verdict keeps the
// digest and evidence time of the answer before it).
func (r attestRecord) lastValid() time.Time {
	if r.Verdict == nil || r.Verdict.PCRDigest == "" {
		return time.Time{}
	}
	return r.Verdict.EvidenceAt
}

// AttestationStateStore keeps the per-device attestation state. The
// in-memory implementation is memAttestStore; a database-backed one
// adapts the store's attestation tables.
type AttestationStateStore interface {
	// GetAttestation returns the device's record; ok=false when none.
	GetAttestation(ctx context.Context, tenant, device string) (rec attestRecord, ok bool, err error)
	PutAttestation(ctx context.Context, tenant, device string, rec attestRecord) error
}

// AttestationHistory records every verdict.
type AttestationHistory interface {
	AppendVerdict(ctx context.Context, v wire.Verdict) error
}

// memAttestStore is the in-process AttestationStateStore and
// AttestationHistory (history bounded per device).
type memAttestStore struct {
	mu      sync.Mutex
	recs    map[deviceKey]attestRecord
	history map[deviceKey][]wire.Verdict
}

const memHistoryPerDevice = 100

func newMemAttestStore() *memAttestStore {
	return &memAttestStore{recs: map[deviceKey]attestRecord{}, history: map[deviceKey][]wire.Verdict{}}
}

func (m *memAttestStore) GetAttestation(_ context.Context, tenant, device string) (attestRecord, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[deviceKey{tenant, device}]
	return r, ok, nil
}

func (m *memAttestStore) PutAttestation(_ context.Context, tenant, device string, rec attestRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs[deviceKey{tenant, device}] = rec
	return nil
}

func (m *memAttestStore) AppendVerdict(_ context.Context, v wire.Verdict) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := deviceKey{v.Tenant, v.Device}
	h := append(m.history[k], v)
	if len(h) > memHistoryPerDevice {
		h = slices.Delete(h, 0, len(h)-memHistoryPerDevice)
	}
	m.history[k] = h
	return nil
}

// attestDevices is what the service reads about enrolled devices.
type attestDevices interface {
	ListTenants(ctx context.Context) ([]store.Tenant, error)
	ListDevices(ctx context.Context, tenant string, f store.DeviceFilter) ([]store.Device, error)
	GetDevice(ctx context.Context, tenant, id string) (store.Device, error)
	GetFleet(ctx context.Context, tenant, id string) (store.Fleet, error)
}

// attestationService challenges every attestable device on an interval,
// verifies the evidence devices publish on their attestation topic and
// publishes each device's verdict, retained, on
// tg/v1/<tenant>/fleets/<fleet>/attestation/<device>.
//
// Tenant and device of evidence come from the topic (the broker's ACL lets
// only device D publish on D's attestation topic), never from the payload.
// The subscription handler never blocks: it hands messages to workers
// sharded by device, so one device's evidence is verified in order.
//
// A verdict is published when it differs from the last one published
// (state, reasons, TPM kind, PCR digest, reboot) and otherwise at most once
// per interval (refreshing evidence time and nonce age). A device whose
// last authentic answer is older than two intervals turns stale (NO_ANSWER);
// a device never attested is published as unknown once.
type attestationService struct {
	devices  attestDevices
	state    AttestationStateStore
	history  AttestationHistory
	nonces   attest.NonceStore
	verifier *attest.Verifier
	interval time.Duration
	now      func() time.Time
	log      *slog.Logger
	// publish publishes as the control plane with QoS 1.
	publish func(topic string, payload []byte, retain bool) error

	queues []chan broker.Message
	wake   chan struct{}

	mu        sync.Mutex
	due       map[deviceKey]time.Time // next scheduled challenge
	seen      map[deviceKey]time.Time // first time the scheduler saw the device
	published map[deviceKey]time.Time // last publication of the device's verdict
	locks     map[deviceKey]*sync.Mutex
	started   time.Time
}

const (
	attestWorkers    = 2
	attestQueueDepth = 1024
)

func newAttestationService(devs attestDevices, interval time.Duration, now func() time.Time, log *slog.Logger) *attestationService {
	if interval <= 0 {
		interval = DefaultAttestationInterval
	}
	if log == nil {
		log = discardLogger()
	}
	mem := newMemAttestStore()
	nonces := attest.NewMemoryNonces()
	nonces.Now = now
	s := &attestationService{
		devices: devs, state: mem, history: mem, nonces: nonces, verifier: attest.NewVerifier(nonces),
		interval: interval, now: now, log: log, wake: make(chan struct{}, 1),
		due: map[deviceKey]time.Time{}, seen: map[deviceKey]time.Time{},
		published: map[deviceKey]time.Time{}, locks: map[deviceKey]*sync.Mutex{},
	}
	for range attestWorkers {
		s.queues = append(s.queues, make(chan broker.Message, attestQueueDepth))
	}
	return s
}

// parseAttestationTopic returns tenant and device of
// tg/v1/<t>/devices/<d>/attestation.
func parseAttestationTopic(topic string) (deviceKey, bool) {
	return parseDeviceTopic(topic, "attestation")
}

// handle is the subscription handler: it never blocks.
func (s *attestationService) handle(m broker.Message) {
	k, ok := parseAttestationTopic(m.Topic)
	if !ok || len(m.Payload) == 0 {
		return
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(k.tenant + "/" + k.device))
	q := s.queues[h.Sum32()%uint32(len(s.queues))]
	select {
	case q <- m:
	default:
		s.log.Warn("attestation evidence dropped: verification queue full", "tenant", k.tenant, "device", k.device)
	}
}

// Run subscribes through subscribe and runs the scheduler, the sweeper and
// the verification workers until ctx ends.
func (s *attestationService) Run(ctx context.Context, subscribe func(string, func(broker.Message)) (func(), error)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, q := range s.queues {
		wg.Go(func() { s.work(ctx, q) })
	}
	if subscribe != nil {
		unsub, err := subscribe(AttestationFilter, s.handle)
		if err != nil {
			return err
		}
		defer unsub()
	}
	s.mu.Lock()
	s.started = s.now()
	s.mu.Unlock()
	tick := min(max(s.interval/4, 100*time.Millisecond), 5*time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		s.scan(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.wake:
		}
	}
}

// Kick makes the scheduler scan now (after an enrollment).
func (s *attestationService) Kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *attestationService) work(ctx context.Context, q <-chan broker.Message) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-q:
			k, _ := parseAttestationTopic(m.Topic)
			if err := s.verify(ctx, k, m.Payload); err != nil && ctx.Err() == nil {
				s.log.Warn("attestation evidence not verified", "tenant", k.tenant, "device", k.device, "error", err)
			}
		}
	}
}

func (s *attestationService) deviceLock(k deviceKey) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.locks[k]
	if l == nil {
		l = &sync.Mutex{}
		s.locks[k] = l
	}
	return l
}

// fleetPolicy is the attestation policy of a fleet: the strict default
// (PCRs 0–7 against the baseline) with the TPM kinds the fleet admits.
func fleetPolicy(f store.Fleet) attest.Policy {
	p := attest.Policy{AllowedKinds: []string{string(store.TPMHardware)}}
	if f.Policy.AllowSimulatedTPM {
		p.AllowedKinds = append(p.AllowedKinds, string(store.TPMSoftware), string(store.TPMSimulator))
	}
	return p
}

// verify verifies one piece of evidence of device k and publishes the
// verdict.
func (s *attestationService) verify(ctx context.Context, k deviceKey, payload []byte) error {
	l := s.deviceLock(k)
	l.Lock()
	defer l.Unlock()
	d, err := s.devices.GetDevice(ctx, k.tenant, k.device)
	if errors.Is(err, store.ErrNotFound) {
		s.log.Debug("evidence of an unknown device ignored", "tenant", k.tenant, "device", k.device)
		return nil
	}
	if err != nil {
		return err
	}
	if d.Status != store.DeviceEnrolled {
		return nil
	}
	f, err := s.devices.GetFleet(ctx, k.tenant, d.FleetID)
	if err != nil {
		return fmt.Errorf("fleet %s: %w", d.FleetID, err)
	}
	rec, _, err := s.state.GetAttestation(ctx, k.tenant, k.device)
	if err != nil {
		return err
	}
	now := s.now()
	res, err := s.verifier.Verify(ctx, attest.Input{
		Tenant: k.tenant, Fleet: d.FleetID, Device: k.device, TPMKind: string(d.TPMKind), AKPublic: d.AKPublic,
		Evidence: payload, Policy: fleetPolicy(f), Baseline: rec.Baseline, Prev: rec.State, Now: now,
	})
	if err != nil {
		return err
	}
	if res.StateChanged {
		rec.State = res.State
	}
	if res.BaselineRecorded {
		rec.Baseline = res.Baseline
	}
	if res.Verdict.PCRDigest == "" && rec.Verdict != nil && rec.Verdict.State == wire.VerdictTrusted && onlyNonceReasons(res.Verdict) {
		// A late or duplicated answer (a replayed or expired nonce) says
		// nothing new about a trusted device; do not flap its verdict.
		s.log.Debug("stale evidence ignored", "tenant", k.tenant, "device", k.device, "reasons", reasonCodes(res.Verdict))
		return s.state.PutAttestation(ctx, k.tenant, k.device, rec)
	}
	return s.record(ctx, k, rec, res.Verdict)
}

func onlyNonceReasons(v wire.Verdict) bool {
	for _, r := range v.Reasons {
		switch r.Code {
		case wire.ReasonNonceReplayed, wire.ReasonNonceExpired:
		default:
			return false
		}
	}
	return len(v.Reasons) > 0
}

func reasonCodes(v wire.Verdict) []string {
	var out []string
	for _, r := range v.Reasons {
		out = append(out, r.Code)
	}
	return out
}

// sameVerdict reports whether b says the same as a (ignoring times).
func sameVerdict(a *wire.Verdict, b wire.Verdict) bool {
	if a == nil {
		return false
	}
	if a.State != b.State || a.Fleet != b.Fleet || (a.TPMKind != "" && a.TPMKind != b.TPMKind) || a.PCRDigest != b.PCRDigest || a.Reboot != b.Reboot {
		return false
	}
	return slices.Equal(reasonCodes(*a), reasonCodes(b))
}

// record stores rec with verdict v, appends v to the history and publishes
// it when it changed or the last publication is an interval old.
func (s *attestationService) record(ctx context.Context, k deviceKey, rec attestRecord, v wire.Verdict) error {
	changed := !sameVerdict(rec.Verdict, v)
	s.mu.Lock()
	last, ok := s.published[k]
	s.mu.Unlock()
	refresh := !ok || s.now().Sub(last) >= s.interval
	prev := rec.Verdict
	rec.Verdict = &v
	if err := s.state.PutAttestation(ctx, k.tenant, k.device, rec); err != nil {
		return err
	}
	if !changed && !refresh {
		return nil
	}
	if changed {
		if err := s.history.AppendVerdict(ctx, v); err != nil {
			s.log.Warn("attestation history not recorded", "tenant", k.tenant, "device", k.device, "error", err)
		}
		from := ""
		if prev != nil {
			from = prev.State
		}
		lvl := slog.LevelInfo
		if v.State == wire.VerdictUntrusted || v.State == wire.VerdictStale {
			lvl = slog.LevelWarn
		}
		s.log.Log(ctx, lvl, "attestation verdict changed", "tenant", k.tenant, "fleet", v.Fleet, "device", k.device,
			"from", from, "to", v.State, "reasons", reasonCodes(v), "tpm_kind", v.TPMKind, "reboot", v.Reboot)
	}
	return s.publishVerdict(k, v)
}

func (s *attestationService) publishVerdict(k deviceKey, v wire.Verdict) error {
	if s.publish == nil {
		return nil
	}
	payload, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := s.publish(mqttacl.FleetAttestationTopic(k.tenant, v.Fleet, k.device), payload, true); err != nil {
		return fmt.Errorf("publish verdict: %w", err)
	}
	s.mu.Lock()
	s.published[k] = s.now()
	s.mu.Unlock()
	return nil
}

// jitter returns d ±10 %.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// scan challenges every attestable device whose turn it is, publishes
// unknown verdicts for devices never attested and stale ones for devices
// silent for two intervals.
func (s *attestationService) scan(ctx context.Context) {
	tenants, err := s.devices.ListTenants(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("attestation: list tenants", "error", err)
		}
		return
	}
	live := map[deviceKey]bool{}
	for _, t := range tenants {
		devs, err := s.devices.ListDevices(ctx, t.ID, store.DeviceFilter{Status: store.DeviceEnrolled})
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("attestation: list devices", "tenant", t.ID, "error", err)
			}
			continue
		}
		for _, d := range devs {
			k := deviceKey{tenant: t.ID, device: d.ID}
			live[k] = true
			if err := s.scanDevice(ctx, k, d); err != nil && ctx.Err() == nil {
				s.log.Warn("attestation", "tenant", k.tenant, "device", k.device, "error", err)
			}
		}
	}
	s.mu.Lock()
	for k := range s.due {
		if !live[k] {
			delete(s.due, k)
			delete(s.seen, k)
			delete(s.published, k)
			delete(s.locks, k)
		}
	}
	s.mu.Unlock()
}

func (s *attestationService) scanDevice(ctx context.Context, k deviceKey, d store.Device) error {
	now := s.now()
	s.mu.Lock()
	first, known := s.seen[k]
	if !known {
		first = now
		s.seen[k] = now
		s.due[k] = now // challenge a newly seen device at once
	}
	due := s.due[k]
	s.mu.Unlock()

	l := s.deviceLock(k)
	l.Lock()
	rec, _, err := s.state.GetAttestation(ctx, k.tenant, k.device)
	if err == nil {
		err = s.sweep(ctx, k, d, rec, first, now)
	}
	l.Unlock()
	if err != nil {
		return err
	}
	if d.TPMKind == store.TPMNone || now.Before(due) {
		return nil
	}
	s.mu.Lock()
	s.due[k] = now.Add(jitter(s.interval))
	s.mu.Unlock()
	_, err = s.challenge(ctx, k, d)
	return err
}

// sweep publishes the verdict a device's silence calls for: unknown when it
// was never attested (once), stale when its last authentic answer (or, if
// it never answered since this process started, its first sighting) is
// older than two intervals.
func (s *attestationService) sweep(ctx context.Context, k deviceKey, d store.Device, rec attestRecord, first, now time.Time) error {
	base := wire.Verdict{Schema: wire.VerdictSchema, Tenant: k.tenant, Fleet: d.FleetID, Device: k.device,
		TPMKind: string(d.TPMKind), VerdictAt: now}
	if rec.Verdict != nil && rec.Verdict.Fleet != d.FleetID {
		rec.Verdict = nil // moved to another fleet: start over there
	}
	if d.TPMKind == store.TPMNone {
		if rec.Verdict != nil {
			return nil
		}
		base.State = wire.VerdictUnknown
		base.Reasons = []wire.VerdictReason{{Code: wire.ReasonNotAttestable, Detail: "enrolled without a TPM"}}
		return s.record(ctx, k, rec, base)
	}
	if rec.Verdict == nil {
		base.State = wire.VerdictUnknown
		return s.record(ctx, k, rec, base)
	}
	if rec.Verdict.State == wire.VerdictUnknown || rec.Verdict.State == wire.VerdictStale {
		return nil
	}
	lastValid := rec.lastValid()
	if lastValid.IsZero() {
		lastValid = first
	}
	if now.Sub(lastValid) < 2*s.interval {
		return nil
	}
	base.State = wire.VerdictStale
	base.Reasons = []wire.VerdictReason{{Code: wire.ReasonNoAnswer,
		Detail: fmt.Sprintf("no valid answer since %s", lastValid.UTC().Format(time.RFC3339))}}
	base.PCRDigest, base.EvidenceAt = rec.Verdict.PCRDigest, rec.Verdict.EvidenceAt
	return s.record(ctx, k, rec, base)
}

// ErrNotAttestable is returned by ChallengeDevice for a device enrolled
// without a TPM.
var ErrNotAttestable = errors.New("device has no TPM to attest")

// challenge issues a nonce to device d and publishes the challenge.
func (s *attestationService) challenge(ctx context.Context, k deviceKey, d store.Device) (wire.AttestChallenge, error) {
	if d.TPMKind == store.TPMNone {
		return wire.AttestChallenge{}, ErrNotAttestable
	}
	f, err := s.devices.GetFleet(ctx, k.tenant, d.FleetID)
	if err != nil {
		return wire.AttestChallenge{}, fmt.Errorf("fleet %s: %w", d.FleetID, err)
	}
	ttl := min(max(s.interval, 10*time.Second), 5*time.Minute)
	n, err := s.nonces.Issue(ctx, k.tenant, k.device, ttl)
	if err != nil {
		return wire.AttestChallenge{}, fmt.Errorf("issue nonce: %w", err)
	}
	c := n.Challenge(fleetPolicy(f).Selection())
	payload, err := json.Marshal(c)
	if err != nil {
		return wire.AttestChallenge{}, err
	}
	if s.publish != nil {
		if err := s.publish(mqttacl.CmdTopic(k.tenant, k.device, "attest"), payload, false); err != nil {
			return wire.AttestChallenge{}, fmt.Errorf("publish challenge: %w", err)
		}
	}
	return c, nil
}

// ChallengeDevice challenges one device now (the API's on-demand
// attestation); the scheduler's next turn for it moves an interval on.
func (s *attestationService) ChallengeDevice(ctx context.Context, tenant, device string) (wire.AttestChallenge, error) {
	d, err := s.devices.GetDevice(ctx, tenant, device)
	if err != nil {
		return wire.AttestChallenge{}, err
	}
	k := deviceKey{tenant: tenant, device: device}
	c, err := s.challenge(ctx, k, d)
	if err != nil {
		return c, err
	}
	s.mu.Lock()
	if _, ok := s.seen[k]; ok {
		s.due[k] = s.now().Add(jitter(s.interval))
	}
	s.mu.Unlock()
	return c, nil
}
