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

// AttestationStateStore keeps the per-device attestation state
// (dbAttestStore adapts the store's attestation tables).
type AttestationStateStore interface {
	// GetAttestation returns the device's record; ok=false when none.
	GetAttestation(ctx context.Context, tenant, device string) (rec attestRecord, ok bool, err error)
	PutAttestation(ctx context.Context, tenant, device string, rec attestRecord) error
}

// AttestationHistory records every verdict.
type AttestationHistory interface {
	AppendVerdict(ctx context.Context, v wire.Verdict) error
}

// attestDevices is what the service reads about enrolled devices.
type attestDevices interface {
	ListTenants(ctx context.Context) ([]store.Tenant, error)
	ListDevices(ctx context.Context, tenant string, f store.DeviceFilter) ([]store.Device, error)
	GetDevice(ctx context.Context, tenant, id string) (store.Device, error)
	GetFleet(ctx context.Context, tenant, id string) (store.Fleet, error)
	ListFleets(ctx context.Context, tenant string) ([]store.Fleet, error)
}

// attestationService challenges every attestable device on its fleet's
// interval, verifies the evidence devices publish on their attestation
// topic and publishes each device's verdict, retained, on
// tg/v1/<tenant>/fleets/<fleet>/attestation/<device>.
//
// Tenant and device of evidence come from the topic (the broker's ACL lets
// only device D publish on D's attestation topic), never from the payload.
// The subscription handler never blocks: it hands messages to workers
// sharded by device, so one device's evidence is verified in order.
//
// Every piece of evidence from an enrolled device gets a published verdict
// (so its evidence time and nonce age stay current); a change of verdict
// (state, reasons, TPM kind, PCR digest, reboot) is also appended to the
// history and logged. A device whose last authentic answer is older than
// two intervals turns stale (NO_ANSWER); a device never attested is
// published as unknown once. The stored verdict of every device is
// published again when this process first sees the device and after
// Resync (the broker's retained store may have been lost), so a new
// subscriber always gets the whole fleet.
type attestationService struct {
	attestDeps
	verifier *attest.Verifier

	queues []chan broker.Message
	wake   chan struct{}

	mu          sync.Mutex
	due         map[deviceKey]time.Time // next scheduled challenge
	seen        map[deviceKey]time.Time // first time the scheduler saw the device
	republished map[deviceKey]uint64    // gen of the last republication of the stored verdict
	gen         uint64                  // bumped by Resync
	locks       map[deviceKey]*sync.Mutex
	lastPrune   time.Time
	connected   map[deviceKey]bool // devices that announced a new connection since the last scan
	queued      map[deviceKey]int  // pieces of evidence waiting for a verification worker
}

// attestDeps is what the attestation service is built from.
type attestDeps struct {
	Devices attestDevices
	State   AttestationStateStore
	History AttestationHistory
	Nonces  attest.NonceStore
	// Interval is the challenge interval of fleets whose policy names none.
	Interval time.Duration
	Now      func() time.Time
	Log      *slog.Logger
	// Publish publishes as the control plane with QoS 1 (nil: nothing is
	// published, for tests of the bookkeeping).
	Publish func(topic string, payload []byte, retain bool) error
	// Revoke revokes a device whose verdict turned untrusted in a fleet
	// whose policy asks for it (nil: never).
	Revoke func(ctx context.Context, tenant, device string, v wire.Verdict) error
	// PruneNonces deletes nonces that expired before a time (nil: none).
	PruneNonces func(ctx context.Context, before time.Time) (int64, error)
}

const (
	attestWorkers    = 2
	attestQueueDepth = 4096
	// nonceRetention is how long expired nonces are kept (so a late answer
	// is reported as expired rather than unknown).
	nonceRetention = 10 * time.Minute
)

func newAttestationService(d attestDeps) *attestationService {
	if d.Interval <= 0 {
		d.Interval = DefaultAttestationInterval
	}
	if d.Log == nil {
		d.Log = discardLogger()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	s := &attestationService{
		attestDeps: d, verifier: attest.NewVerifier(d.Nonces), wake: make(chan struct{}, 1),
		due: map[deviceKey]time.Time{}, seen: map[deviceKey]time.Time{}, republished: map[deviceKey]uint64{},
		gen: 1, locks: map[deviceKey]*sync.Mutex{}, connected: map[deviceKey]bool{},
		queued: map[deviceKey]int{},
	}
	for range attestWorkers {
		s.queues = append(s.queues, make(chan broker.Message, attestQueueDepth))
	}
	return s
}

// intervalOf is the challenge interval of fleet f.
func (s *attestationService) intervalOf(f store.Fleet) time.Duration {
	if iv := time.Duration(f.Policy.Attestation.Interval); iv > 0 {
		return iv
	}
	return s.Interval
}

// Resync makes the next scan publish every device's stored verdict again
// (after a reconnect to an external broker, whose retained store may be
// gone).
func (s *attestationService) Resync() {
	s.mu.Lock()
	s.gen++
	s.mu.Unlock()
	s.Kick()
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
	s.mu.Lock()
	s.queued[k]++
	s.mu.Unlock()
	select {
	case q <- m:
	default:
		s.dequeued(k)
		s.Log.Warn("attestation evidence dropped: verification queue full", "tenant", k.tenant, "device", k.device)
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
	// Scans run every quarter of the shortest interval of any fleet (at
	// least 100 ms apart, at most 5 s), and at once after Kick.
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		shortest := s.scan(ctx)
		s.prune(ctx)
		t.Reset(min(max(shortest/4, 100*time.Millisecond), 5*time.Second))
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.wake:
		}
	}
}

// DeviceConnected is called when a device announces a new MQTT
// connection: a device without a current verdict (never attested, unknown
// or stale) is challenged at the next scan instead of at its next turn —
// the challenge sent at enrollment usually arrives before the agent has
// subscribed, and a device back from an outage should not wait an interval.
func (s *attestationService) DeviceConnected(tenant, device string) {
	s.mu.Lock()
	s.connected[deviceKey{tenant, device}] = true
	s.mu.Unlock()
	s.Kick()
}

// Kick makes the scheduler scan now (after an enrollment, a fleet policy
// change or Resync).
func (s *attestationService) Kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// prune deletes long-expired nonces, at most once a minute.
func (s *attestationService) prune(ctx context.Context) {
	if s.PruneNonces == nil {
		return
	}
	now := s.Now()
	s.mu.Lock()
	due := now.Sub(s.lastPrune) >= time.Minute
	if due {
		s.lastPrune = now
	}
	s.mu.Unlock()
	if !due {
		return
	}
	if _, err := s.PruneNonces(ctx, now.Add(-nonceRetention)); err != nil && ctx.Err() == nil {
		s.Log.Warn("attestation: prune expired nonces", "error", err)
	}
}

func (s *attestationService) work(ctx context.Context, q <-chan broker.Message) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-q:
			k, _ := parseAttestationTopic(m.Topic)
			err := s.verify(ctx, k, m.Payload)
			s.dequeued(k)
			if err != nil && ctx.Err() == nil {
				s.Log.Warn("attestation evidence not verified", "tenant", k.tenant, "device", k.device, "error", err)
			}
		}
	}
}

// dequeued counts one piece of evidence of k as handled.
func (s *attestationService) dequeued(k deviceKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queued[k]--; s.queued[k] <= 0 {
		delete(s.queued, k)
	}
}

// waiting reports whether evidence of k is queued for verification.
func (s *attestationService) waiting(k deviceKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queued[k] > 0
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

// verify verifies one piece of evidence of device k and publishes the
// verdict.
func (s *attestationService) verify(ctx context.Context, k deviceKey, payload []byte) error {
	l := s.deviceLock(k)
	l.Lock()
	defer l.Unlock()
	d, err := s.Devices.GetDevice(ctx, k.tenant, k.device)
	if errors.Is(err, store.ErrNotFound) {
		s.Log.Debug("evidence of an unknown device ignored", "tenant", k.tenant, "device", k.device)
		return nil
	}
	if err != nil {
		return err
	}
	if d.Status != store.DeviceEnrolled {
		return nil
	}
	f, err := s.Devices.GetFleet(ctx, k.tenant, d.FleetID)
	if err != nil {
		return fmt.Errorf("fleet %s: %w", d.FleetID, err)
	}
	rec, _, err := s.State.GetAttestation(ctx, k.tenant, k.device)
	if err != nil {
		return err
	}
	now := s.Now()
	res, err := s.verifier.Verify(ctx, attest.Input{
		Tenant: k.tenant, Fleet: d.FleetID, Device: k.device, TPMKind: string(d.TPMKind), AKPublic: d.AKPublic,
		Evidence: payload, Policy: f.Policy.VerifierPolicy(), Baseline: rec.Baseline, Prev: rec.State, Now: now,
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
	if res.Verdict.PCRDigest == "" && rec.Verdict != nil && onlyNonceReasons(res.Verdict) &&
		(rec.Verdict.State == wire.VerdictTrusted || rec.Verdict.State == wire.VerdictStale) {
		// A late or duplicated answer (a replayed or expired nonce) says
		// nothing new about a trusted device, nor about a stale one — the
		// usual sender of late answers is a device whose network was cut
		// and whose outbox now delivers what it queued; it becomes trusted
		// again by answering a fresh challenge. Do not flap its verdict
		// (untrusted would also refuse its key grants for good).
		s.Log.Debug("stale evidence ignored", "tenant", k.tenant, "device", k.device, "reasons", reasonCodes(res.Verdict))
		return s.State.PutAttestation(ctx, k.tenant, k.device, rec)
	}
	prev := rec.Verdict
	if err := s.record(ctx, k, rec, res.Verdict, true); err != nil {
		return err
	}
	v := res.Verdict
	if v.State == wire.VerdictUntrusted && (prev == nil || prev.State != wire.VerdictUntrusted) &&
		f.Policy.Attestation.RevokeOnUntrusted && s.Revoke != nil {
		if err := s.Revoke(ctx, k.tenant, k.device, v); err != nil {
			return fmt.Errorf("revoke untrusted device: %w", err)
		}
		s.Log.Warn("untrusted device revoked (fleet policy revoke_on_untrusted)", "tenant", k.tenant, "fleet", d.FleetID,
			"device", k.device, "reasons", reasonCodes(v))
	}
	return nil
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

// record stores rec with verdict v (and the quarantine it calls for),
// appends v to the history when it changed, and publishes it when it
// changed or comes from evidence.
func (s *attestationService) record(ctx context.Context, k deviceKey, rec attestRecord, v wire.Verdict, evidence bool) error {
	changed := !sameVerdict(rec.Verdict, v)
	prev := rec.Verdict
	rec.Verdict = &v
	if err := s.State.PutAttestation(ctx, k.tenant, k.device, rec); err != nil {
		return err
	}
	if changed {
		if err := s.History.AppendVerdict(ctx, v); err != nil {
			s.Log.Warn("attestation history not recorded", "tenant", k.tenant, "device", k.device, "error", err)
		}
		from := ""
		if prev != nil {
			from = prev.State
		}
		lvl := slog.LevelInfo
		if v.State == wire.VerdictUntrusted || v.State == wire.VerdictStale {
			lvl = slog.LevelWarn
		}
		s.Log.Log(ctx, lvl, "attestation verdict changed", "tenant", k.tenant, "fleet", v.Fleet, "device", k.device,
			"from", from, "to", v.State, "reasons", reasonCodes(v), "tpm_kind", v.TPMKind, "reboot", v.Reboot)
	}
	if !changed && !evidence {
		return nil
	}
	return s.publishVerdict(k, v)
}

func (s *attestationService) publishVerdict(k deviceKey, v wire.Verdict) error {
	if s.Publish == nil {
		return nil
	}
	payload, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := s.Publish(mqttacl.FleetAttestationTopic(k.tenant, v.Fleet, k.device), payload, true); err != nil {
		return fmt.Errorf("publish verdict: %w", err)
	}
	s.mu.Lock()
	s.republished[k] = s.gen
	s.mu.Unlock()
	return nil
}

// jitter returns d ±10 %.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// scan challenges every attestable device whose turn it is, publishes
// unknown verdicts for devices never attested and stale ones for devices
// silent for two intervals of their fleet. It returns the shortest
// interval of any fleet (the default interval when there is none).
func (s *attestationService) scan(ctx context.Context) (shortest time.Duration) {
	shortest = s.Interval
	tenants, err := s.Devices.ListTenants(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.Log.Warn("attestation: list tenants", "error", err)
		}
		return shortest
	}
	live := map[deviceKey]bool{}
	for _, t := range tenants {
		fleets, err := s.Devices.ListFleets(ctx, t.ID)
		if err == nil {
			var devs []store.Device
			devs, err = s.Devices.ListDevices(ctx, t.ID, store.DeviceFilter{Status: store.DeviceEnrolled})
			byID := make(map[string]store.Fleet, len(fleets))
			for _, f := range fleets {
				byID[f.ID] = f
				shortest = min(shortest, s.intervalOf(f))
			}
			for _, d := range devs {
				k := deviceKey{tenant: t.ID, device: d.ID}
				live[k] = true
				f, ok := byID[d.FleetID]
				if !ok {
					continue // created after ListFleets: next scan
				}
				if err := s.scanDevice(ctx, k, d, f); err != nil && ctx.Err() == nil {
					s.Log.Warn("attestation", "tenant", k.tenant, "device", k.device, "error", err)
				}
			}
		}
		if err != nil && ctx.Err() == nil {
			s.Log.Warn("attestation: list fleets and devices", "tenant", t.ID, "error", err)
		}
	}
	s.mu.Lock()
	for k := range s.seen {
		if !live[k] {
			delete(s.due, k)
			delete(s.seen, k)
			delete(s.republished, k)
			delete(s.locks, k)
			delete(s.connected, k)
		}
	}
	s.mu.Unlock()
	return shortest
}

func (s *attestationService) scanDevice(ctx context.Context, k deviceKey, d store.Device, f store.Fleet) error {
	now := s.Now()
	interval := s.intervalOf(f)
	s.mu.Lock()
	first, known := s.seen[k]
	if !known {
		first = now
		s.seen[k] = now
	}
	due, scheduled := s.due[k]
	republish := s.republished[k] != s.gen
	connected := s.connected[k]
	delete(s.connected, k)
	s.mu.Unlock()

	l := s.deviceLock(k)
	l.Lock()
	rec, _, err := s.State.GetAttestation(ctx, k.tenant, k.device)
	if err == nil && !scheduled {
		// First sighting: a device never attested is challenged at once; one
		// with a stored verdict (this process restarted) at a random point
		// of its first interval, so a fleet is not challenged all at once.
		due = now
		if rec.Verdict != nil && rec.Verdict.State != wire.VerdictUnknown {
			due = now.Add(rand.N(interval))
		}
		s.mu.Lock()
		s.due[k] = due
		s.mu.Unlock()
	}
	if due.After(now.Add(interval)) {
		due = now // the fleet's interval was shortened
	}
	if err == nil && connected && (rec.Verdict == nil || rec.Verdict.State == wire.VerdictUnknown || rec.Verdict.State == wire.VerdictStale) {
		due = now // just connected without a current verdict
	}
	if err == nil {
		err = s.sweep(ctx, k, d, rec, first, now, interval)
	}
	if err == nil && republish {
		// Nothing published for the device by this process since start or
		// Resync: publish its stored verdict, so the broker's retained store
		// holds it for new subscribers.
		s.mu.Lock()
		done := s.republished[k] == s.gen
		s.mu.Unlock()
		if rec, _, err = s.State.GetAttestation(ctx, k.tenant, k.device); err == nil && !done &&
			rec.Verdict != nil && rec.Verdict.Fleet == d.FleetID {
			err = s.publishVerdict(k, *rec.Verdict)
		}
	}
	l.Unlock()
	if err != nil {
		return err
	}
	if d.TPMKind == store.TPMNone || now.Before(due) {
		return nil
	}
	// The next turn counts from this one's due time, not from the scan
	// that noticed it, so the period stays the interval whatever the scan
	// granularity (and devices stay spread out).
	next := due.Add(jitter(interval))
	if !next.After(now) {
		next = now.Add(jitter(interval))
	}
	s.mu.Lock()
	s.due[k] = next
	s.mu.Unlock()
	_, err = s.challenge(ctx, k, d, f)
	return err
}

// sweep publishes the verdict a device's silence calls for: unknown when it
// was never attested (once), stale when both its last authentic answer and
// this process's first sighting of it are older than two intervals.
func (s *attestationService) sweep(ctx context.Context, k deviceKey, d store.Device, rec attestRecord, first, now time.Time, interval time.Duration) error {
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
		return s.record(ctx, k, rec, base, false)
	}
	if rec.Verdict == nil {
		base.State = wire.VerdictUnknown
		return s.record(ctx, k, rec, base, false)
	}
	if rec.Verdict.State == wire.VerdictUnknown || rec.Verdict.State == wire.VerdictStale {
		return nil
	}
	// Silence counts from the last authentic answer, but not from before
	// this process first saw the device: while the control plane was down
	// nobody asked.
	lastValid := rec.lastValid()
	if first.After(lastValid) {
		lastValid = first
	}
	if now.Sub(lastValid) < 2*interval || s.waiting(k) {
		return nil // answered in time, or its answer waits for a worker (verification lags under load)
	}
	base.State = wire.VerdictStale
	base.Reasons = []wire.VerdictReason{{Code: wire.ReasonNoAnswer,
		Detail: fmt.Sprintf("no valid answer since %s", lastValid.UTC().Format(time.RFC3339))}}
	base.PCRDigest, base.EvidenceAt = rec.Verdict.PCRDigest, rec.Verdict.EvidenceAt
	return s.record(ctx, k, rec, base, false)
}

// ErrNotAttestable is returned by ChallengeDevice for a device enrolled
// without a TPM.
var ErrNotAttestable = errors.New("device has no TPM to attest")

// challenge issues a nonce to device d of fleet f and publishes the
// challenge. The nonce lives one interval (10 s to 5 min).
func (s *attestationService) challenge(ctx context.Context, k deviceKey, d store.Device, f store.Fleet) (wire.AttestChallenge, error) {
	if d.TPMKind == store.TPMNone {
		return wire.AttestChallenge{}, ErrNotAttestable
	}
	ttl := min(max(s.intervalOf(f), 10*time.Second), 5*time.Minute)
	n, err := s.Nonces.Issue(ctx, k.tenant, k.device, ttl)
	if err != nil {
		return wire.AttestChallenge{}, fmt.Errorf("issue nonce: %w", err)
	}
	c := n.Challenge(f.Policy.VerifierPolicy().Selection())
	payload, err := json.Marshal(c)
	if err != nil {
		return wire.AttestChallenge{}, err
	}
	if s.Publish != nil {
		if err := s.Publish(mqttacl.CmdTopic(k.tenant, k.device, "attest"), payload, false); err != nil {
			return wire.AttestChallenge{}, fmt.Errorf("publish challenge: %w", err)
		}
	}
	return c, nil
}

// ChallengeDevice challenges one device now (the API's on-demand
// attestation); the scheduler's next turn for it moves an interval on.
func (s *attestationService) ChallengeDevice(ctx context.Context, tenant, device string) (wire.AttestChallenge, error) {
	d, err := s.Devices.GetDevice(ctx, tenant, device)
	if err != nil {
		return wire.AttestChallenge{}, err
	}
	f, err := s.Devices.GetFleet(ctx, tenant, d.FleetID)
	if err != nil {
		return wire.AttestChallenge{}, fmt.Errorf("fleet %s: %w", d.FleetID, err)
	}
	k := deviceKey{tenant: tenant, device: device}
	c, err := s.challenge(ctx, k, d, f)
	if err != nil {
		return c, err
	}
	s.mu.Lock()
	if _, ok := s.seen[k]; ok {
		s.due[k] = s.Now().Add(jitter(s.intervalOf(f)))
	}
	s.mu.Unlock()
	return c, nil
}
