package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tensorguard/tensorguardflow/agent/internal/install"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence"
	"github.com/tensorguard/tensorguardflow/agent/internal/state"
	"github.com/tensorguard/tensorguardflow/internal/policybundle"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// Sentinel errors.
var (
	// ErrNoPolicy is what a Fetcher returns when the control plane says
	// the fleet has no policy bundle (or the tenant no key) yet.
	ErrNoPolicy = errors.New("the fleet has no policy bundle")
	// ErrRefused is wrapped by a *RefusedError.
	ErrRefused = errors.New("policy bundle refused")
)

// RefusedError says why a bundle was not installed; Reason is a
// wire.PolicyReason* code.
type RefusedError struct {
	Reason   string
	Revision int64 // 0 when the bundle could not be read
	Err      error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("policy bundle refused (%s): %v", e.Reason, e.Err)
}

func (e *RefusedError) Unwrap() []error { return []error{ErrRefused, e.Err} }

// Fetcher reaches the control plane's device policy routes.
type Fetcher interface {
	// PolicyKey is GET /api/v1/device/policy/key; ErrNoPolicy on 404.
	PolicyKey(ctx context.Context) (wire.PolicyKey, error)
	// PolicyBundle is GET /api/v1/device/policy with If-None-Match etag
	// (when not empty); notModified when the server answered 304;
	// ErrNoPolicy on 404.
	PolicyBundle(ctx context.Context, etag string) (raw []byte, notModified bool, err error)
}

// Store is the agent's state; *state.DB implements it.
type Store interface {
	Get(ns, key string) ([]byte, error)
	Put(ns, key string, value []byte) error
}

var _ Store = (*state.DB)(nil)

// Outbox carries policy events; *outbox.Outbox implements it.
type Outbox interface {
	EnqueueFunc(topic string, qos byte, retained bool, build func(msgID string) ([]byte, error)) (uint64, error)
}

// State keys, in namespace "policy".
const (
	stateNS     = "policy"
	keyPin      = "key"
	keyActive   = "active"
	keyNoPolicy = "none"
)

// Defaults of Config.
const (
	DefaultRefreshInterval = time.Hour
	DefaultEvalTimeout     = 5 * time.Second
)

// Config configures a Manager. Tenant, Fleet, Device, Fetcher and Store
// are required.
type Config struct {
	Tenant, Fleet, Device string
	Fetcher               Fetcher
	Store                 Store
	// Outbox and TelemetryTopic report installs and refusals (optional).
	Outbox         Outbox
	TelemetryTopic string
	// Publishers returns the key ids of the publishers pinned on the
	// device, given to the policy as input.publishers when the install
	// pipeline's input carries none (optional).
	Publishers func() []string
	// RefreshInterval is how often the bundle is fetched without a
	// notification; default DefaultRefreshInterval.
	RefreshInterval time.Duration
	// Backoff spaces retries after a failed fetch; default 5s→5m.
	Backoff presence.Backoff
	// EvalTimeout bounds one decision; default DefaultEvalTimeout.
	EvalTimeout time.Duration
	Now         func() time.Time
	Logger      *slog.Logger
}

// active is the bundle in force.
type active struct {
	bundle *policybundle.Bundle
	eval   *policybundle.Evaluator
}

// record is the persisted active bundle.
type record struct {
	Revision    int64     `json:"revision"`
	SHA256      string    `json:"sha256"`
	KeyID       string    `json:"key_id"`
	Bundle      []byte    `json:"bundle"`
	InstalledAt time.Time `json:"installed_at"`
}

// pinRecord is the persisted verification key.
type pinRecord struct {
	wire.PolicyKey
	PinnedAt time.Time `json:"pinned_at"`
}

// Manager keeps the active policy bundle. Create it with New, give Handle
// to the MQTT session's Subscribe for cmd/policy, call Kick on every
// connection, and run Run as a task. It is safe for concurrent use.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	wake chan struct{}

	update sync.Mutex // one Update at a time

	mu       sync.RWMutex
	pin      *wire.PolicyKey
	cur      *active
	floor    int64 // the active revision, also when its bundle could not be loaded
	noPolicy bool  // the control plane said the fleet has none, and none is active
}

// New loads the pinned key and the active bundle from the state (verifying
// the bundle again under the pin and preparing it) and returns the
// Manager. It contacts nothing.
func New(cfg Config) (*Manager, error) {
	if cfg.Tenant == "" || cfg.Fleet == "" || cfg.Device == "" || cfg.Fetcher == nil || cfg.Store == nil {
		return nil, errors.New("policy: tenant, fleet, device, fetcher and store are required")
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	if cfg.Backoff.Min <= 0 {
		cfg.Backoff.Min = 5 * time.Second
	}
	if cfg.Backoff.Max < cfg.Backoff.Min {
		cfg.Backoff.Max = max(5*time.Minute, cfg.Backoff.Min)
	}
	if cfg.EvalTimeout <= 0 {
		cfg.EvalTimeout = DefaultEvalTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, wake: make(chan struct{}, 1)}
	if err := m.load(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manager) load() error {
	raw, err := m.cfg.Store.Get(stateNS, keyPin)
	switch {
	case errors.Is(err, state.ErrNotFound):
	case err != nil:
		return fmt.Errorf("policy: read pinned key: %w", err)
	default:
		var p pinRecord
		if err := json.Unmarshal(raw, &p); err != nil {
			return fmt.Errorf("policy: pinned key record: %w", err)
		}
		m.pin = &p.PolicyKey
	}
	raw, err = m.cfg.Store.Get(stateNS, keyActive)
	switch {
	case errors.Is(err, state.ErrNotFound):
		if _, err := m.cfg.Store.Get(stateNS, keyNoPolicy); err == nil {
			m.noPolicy = true
		}
		return nil
	case err != nil:
		return fmt.Errorf("policy: read active bundle: %w", err)
	}
	var rec record
	if err := json.Unmarshal(raw, &rec); err != nil {
		return fmt.Errorf("policy: active bundle record: %w", err)
	}
	// The revision stays the floor even if the bundle does not load: a
	// damaged state must not reopen the door to an older revision.
	m.floor = rec.Revision
	if m.pin == nil {
		m.log.Error("active policy bundle without a pinned key: installs are denied until a newer revision arrives", "revision", rec.Revision)
		return nil
	}
	b, err := policybundle.Verify(rec.Bundle, toVerificationKey(*m.pin))
	if err == nil && b.Revision != rec.Revision {
		err = fmt.Errorf("stored revision %d, bundle says %d", rec.Revision, b.Revision)
	}
	var ev *policybundle.Evaluator
	if err == nil {
		ev, err = b.Prepare(context.Background())
	}
	if err != nil {
		m.log.Error("the stored policy bundle does not load: installs are denied until a newer revision arrives",
			"revision", rec.Revision, "err", err)
		return nil
	}
	m.cur = &active{bundle: b, eval: ev}
	m.log.Info("policy bundle loaded", "revision", b.Revision, "sha256", b.SHA256)
	return nil
}

func toVerificationKey(k wire.PolicyKey) policybundle.VerificationKey {
	return policybundle.VerificationKey{ID: k.KeyID, Algorithm: k.Algorithm, PublicKeyPEM: k.PublicKeyPEM}
}

// Status is what the Manager has in force.
type Status struct {
	Revision int64  `json:"revision"` // 0: none
	SHA256   string `json:"sha256,omitempty"`
	KeyID    string `json:"key_id,omitempty"` // the pinned key
	Loaded   bool   `json:"loaded"`           // the active bundle is prepared for evaluation
	NoPolicy bool   `json:"no_policy,omitempty"`
}

// Status returns the active revision and the pinned key.
func (m *Manager) Status() Status {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s := Status{Revision: m.floor, Loaded: m.cur != nil, NoPolicy: m.noPolicy}
	if m.cur != nil {
		s.SHA256 = m.cur.bundle.SHA256
	}
	if m.pin != nil {
		s.KeyID = m.pin.KeyID
	}
	return s
}

// Kick asks Run to fetch now.
func (m *Manager) Kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Handle is the presence.Handler for the device's cmd/policy topic: a
// notification of a revision newer than the active one wakes Run. The
// notification carries no authority; only the fetched bundle counts.
func (m *Manager) Handle(_ context.Context, msg presence.Message) {
	var n wire.PolicyNotify
	if err := json.Unmarshal(msg.Payload, &n); err != nil || n.Schema != wire.PolicyNotifySchema {
		m.log.Debug("policy notification dropped", "err", err, "schema", n.Schema)
		return
	}
	if n.Revision <= m.Status().Revision {
		m.log.Debug("policy notification of a revision not newer than the active one", "revision", n.Revision)
		return
	}
	m.Kick()
}

// Run fetches at once, then on Kick, every RefreshInterval and, after a
// failure, with backoff, until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	failures := 0
	for {
		delay := m.cfg.RefreshInterval
		if _, err := m.Update(ctx); err != nil && ctx.Err() == nil {
			var re *RefusedError
			if errors.As(err, &re) {
				failures = 0 // refused, not failed: retrying sooner would not help
			} else {
				failures++
				delay = min(delay, m.cfg.Backoff.Delay(failures))
				m.log.Warn("policy fetch failed", "attempt", failures, "retry_in", delay, "err", err)
			}
		} else {
			failures = 0
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-m.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// Update fetches the fleet's bundle and installs it if it is new. It
// reports whether the active bundle changed. A refused bundle is a
// *RefusedError (logged and reported); a fetch failure is returned as is.
func (m *Manager) Update(ctx context.Context) (bool, error) {
	m.update.Lock()
	defer m.update.Unlock()
	pin, err := m.ensurePin(ctx)
	if errors.Is(err, ErrNoPolicy) {
		m.setNoPolicy()
		return false, nil
	}
	if err != nil {
		return false, err
	}
	etag := ""
	if s := m.Status(); s.SHA256 != "" {
		etag = `"` + s.SHA256 + `"`
	}
	raw, notModified, err := m.cfg.Fetcher.PolicyBundle(ctx, etag)
	switch {
	case errors.Is(err, ErrNoPolicy):
		m.setNoPolicy()
		return false, nil
	case err != nil:
		return false, fmt.Errorf("fetch policy bundle: %w", err)
	case notModified:
		return false, nil
	}
	err = m.install(ctx, raw, pin)
	var re *RefusedError
	if errors.As(err, &re) && re.Reason == wire.PolicyReasonSignature {
		// Tell a key change apart from a bad bundle.
		if k, kerr := m.cfg.Fetcher.PolicyKey(ctx); kerr == nil && k != pin {
			re.Reason = wire.PolicyReasonKeyChange
			re.Err = fmt.Errorf("the control plane now serves key %s, but %s is pinned: %w", k.KeyID, pin.KeyID, re.Err)
		}
	}
	if err != nil {
		if errors.As(err, &re) {
			m.refused(re, raw)
		}
		return false, err
	}
	return true, nil
}

// Install verifies raw under the pinned key and makes it the active bundle
// if it is newer (for tests and tools; Update is the normal path).
func (m *Manager) Install(ctx context.Context, raw []byte) error {
	m.update.Lock()
	defer m.update.Unlock()
	m.mu.RLock()
	pin := m.pin
	m.mu.RUnlock()
	if pin == nil {
		return &RefusedError{Reason: wire.PolicyReasonSignature, Err: errors.New("no policy key is pinned")}
	}
	err := m.install(ctx, raw, *pin)
	var re *RefusedError
	if errors.As(err, &re) {
		m.refused(re, raw)
	}
	return err
}

// ensurePin returns the pinned key, fetching and pinning it on first use.
func (m *Manager) ensurePin(ctx context.Context) (wire.PolicyKey, error) {
	m.mu.RLock()
	pin := m.pin
	m.mu.RUnlock()
	if pin != nil {
		return *pin, nil
	}
	k, err := m.cfg.Fetcher.PolicyKey(ctx)
	if err != nil {
		if errors.Is(err, ErrNoPolicy) {
			return wire.PolicyKey{}, err
		}
		return wire.PolicyKey{}, fmt.Errorf("fetch policy key: %w", err)
	}
	if err := toVerificationKey(k).Check(); err != nil {
		return wire.PolicyKey{}, fmt.Errorf("policy key from the control plane: %w", err)
	}
	raw, err := json.Marshal(pinRecord{PolicyKey: k, PinnedAt: m.cfg.Now().UTC()})
	if err != nil {
		return wire.PolicyKey{}, err
	}
	if err := m.cfg.Store.Put(stateNS, keyPin, raw); err != nil {
		return wire.PolicyKey{}, fmt.Errorf("pin policy key: %w", err)
	}
	m.mu.Lock()
	m.pin = &k
	m.mu.Unlock()
	m.log.Info("policy key pinned", "key_id", k.KeyID)
	return k, nil
}

func (m *Manager) setNoPolicy() {
	m.mu.Lock()
	already := m.noPolicy || m.floor > 0
	if m.floor == 0 {
		m.noPolicy = true
	}
	m.mu.Unlock()
	if !already {
		if err := m.cfg.Store.Put(stateNS, keyNoPolicy, []byte("1")); err != nil {
			m.log.Warn("persist no-policy state", "err", err)
		}
		m.log.Info("the fleet has no policy bundle; installs are allowed without a policy decision")
	}
}

// install verifies, checks and activates raw; m.update is held.
func (m *Manager) install(ctx context.Context, raw []byte, pin wire.PolicyKey) error {
	b, err := policybundle.Verify(raw, toVerificationKey(pin))
	if err != nil {
		return &RefusedError{Reason: wire.PolicyReasonSignature, Err: err}
	}
	if b.Tenant != m.cfg.Tenant || b.Fleet != m.cfg.Fleet {
		return &RefusedError{Reason: wire.PolicyReasonWrongFleet, Revision: b.Revision,
			Err: fmt.Errorf("signed for tenant %s fleet %s, this device is in tenant %s fleet %s", b.Tenant, b.Fleet, m.cfg.Tenant, m.cfg.Fleet)}
	}
	m.mu.RLock()
	floor, cur := m.floor, m.cur
	m.mu.RUnlock()
	if b.Revision <= floor {
		if cur != nil && b.Revision == floor && b.SHA256 == cur.bundle.SHA256 {
			return nil // the bundle in force, fetched again
		}
		return &RefusedError{Reason: wire.PolicyReasonOlder, Revision: b.Revision,
			Err: fmt.Errorf("revision %d is not newer than the active revision %d", b.Revision, floor)}
	}
	ev, err := b.Prepare(ctx)
	if err != nil {
		return &RefusedError{Reason: wire.PolicyReasonInvalid, Revision: b.Revision, Err: err}
	}
	rec, err := json.Marshal(record{Revision: b.Revision, SHA256: b.SHA256, KeyID: b.KeyID, Bundle: raw, InstalledAt: m.cfg.Now().UTC()})
	if err != nil {
		return err
	}
	// Persisted before it takes effect: after a crash the agent comes back
	// with this revision or the previous one, never an older one.
	if err := m.cfg.Store.Put(stateNS, keyActive, rec); err != nil {
		return fmt.Errorf("persist policy bundle: %w", err)
	}
	m.mu.Lock()
	m.cur, m.floor, m.noPolicy = &active{bundle: b, eval: ev}, b.Revision, false
	m.mu.Unlock()
	m.log.Info("policy bundle installed", "revision", b.Revision, "previous", floor, "sha256", b.SHA256)
	m.report(wire.PolicyEvent{Event: wire.PolicyEventInstalled, Revision: b.Revision, Active: b.Revision, SHA256: b.SHA256})
	return nil
}

func (m *Manager) refused(re *RefusedError, raw []byte) {
	active := m.Status().Revision
	m.log.Warn("policy bundle refused", "reason", re.Reason, "revision", re.Revision, "active", active, "err", re.Err)
	m.report(wire.PolicyEvent{Event: wire.PolicyEventRefused, Revision: re.Revision, Active: active,
		SHA256: policybundle.Digest(raw), Reason: re.Reason, Detail: truncate(re.Err.Error(), 512)})
}

func (m *Manager) report(ev wire.PolicyEvent) {
	if m.cfg.Outbox == nil || m.cfg.TelemetryTopic == "" {
		return
	}
	ev.Schema, ev.Kind, ev.Device, ev.TS = wire.PolicyEventSchema, "policy", m.cfg.Device, m.cfg.Now().UTC()
	_, err := m.cfg.Outbox.EnqueueFunc(m.cfg.TelemetryTopic, 1, false, func(msgID string) ([]byte, error) {
		ev.MsgID = msgID
		return json.Marshal(ev)
	})
	if err != nil {
		m.log.Warn("policy event not queued", "event", ev.Event, "err", err)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

var _ install.Policy = (*Manager)(nil)

// Evaluate implements install.Policy: data.tensorguard.install of the
// active bundle decides, with the install pipeline's input (and
// publishers, when it carries none). Without an active bundle it allows
// only if the control plane said the fleet has no policy.
func (m *Manager) Evaluate(ctx context.Context, in install.PolicyInput) (bool, []string, error) {
	m.mu.RLock()
	cur, noPolicy, floor := m.cur, m.noPolicy, m.floor
	m.mu.RUnlock()
	if cur == nil {
		if noPolicy {
			return true, []string{"the fleet has no policy bundle"}, nil
		}
		if floor > 0 {
			return false, []string{fmt.Sprintf("policy revision %d is recorded but could not be loaded", floor)}, nil
		}
		return false, []string{"no policy bundle yet: the fleet's policy has not been fetched"}, nil
	}
	doc, err := m.inputDocument(in)
	if err != nil {
		return false, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.EvalTimeout)
	defer cancel()
	d, err := cur.eval.Evaluate(ctx, doc)
	if err != nil {
		return false, nil, fmt.Errorf("policy revision %d: %w", cur.bundle.Revision, err)
	}
	return d.Allow, d.Reasons, nil
}

// inputDocument is in as JSON, plus publishers if in has none.
func (m *Manager) inputDocument(in install.PolicyInput) (map[string]any, error) {
	raw, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("policy input: %w", err)
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // numbers reach the policy exactly as marshalled
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("policy input: %w", err)
	}
	if _, ok := doc["publishers"]; !ok {
		pubs := []string{}
		if m.cfg.Publishers != nil {
			pubs = append(pubs, m.cfg.Publishers()...)
		}
		doc["publishers"] = pubs
	}
	return doc, nil
}
