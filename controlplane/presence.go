package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/broker"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// StatusFilter matches every device's status topic.
const StatusFilter = mqttacl.Prefix + "/+/devices/+/status"

// presenceTracker turns devices' retained status messages into the online
// flag and last-seen time of their rows. The broker's ACL guarantees that
// only device D publishes on D's status topic, so tenant and device come
// from the topic; a payload naming another device is ignored.
//
// The handler runs on the publisher's goroutine and must not block, so it
// only merges the status into a pending map (coalescing bursts per device)
// and wakes the writer. The writer applies wire.LatestStatus against the
// newest status it has seen per device, so a late Will of an older session
// never marks a reconnected device offline.
//
// It also owns the retained status of devices revoked or deleted while this
// process runs (revoke): the control plane overwrites it with an offline
// status marked revoked, and whenever anything else lands on that topic
// afterwards — the device's Will, published when the broker cut it off, may
// arrive after the revoked status — the writer publishes the revoked status
// again, so the retained message ends as the control plane's. Only those
// revocations are trusted: a "revoked" flag from anywhere else (a device may
// publish on its own topic) is read as a plain offline.
type presenceTracker struct {
	st  *store.Store
	now func() time.Time
	log *slog.Logger
	// publish publishes a retained QoS 1 message as the control plane
	// (nil: revoked statuses are tracked but not published).
	publish func(topic string, payload []byte) error
	// onOnline is called (without blocking) when a device announces a
	// connection this process has not seen before (a new session; at start,
	// each retained online status) (nil: nothing).
	onOnline   func(tenant, device string)
	onlineSeen map[deviceKey]uint64 // highest online session announced per device

	mu        sync.Mutex
	pending   map[deviceKey]wire.Status
	latest    map[deviceKey]wire.Status // merged by the writer and by revoke
	revoked   map[deviceKey]wire.Status // the status this process published for a revoked device
	republish map[deviceKey]struct{}    // revoked devices whose retained status was overwritten
	wake      chan struct{}
}

type deviceKey struct{ tenant, device string }

func newPresenceTracker(st *store.Store, now func() time.Time, log *slog.Logger) *presenceTracker {
	if log == nil {
		log = discardLogger()
	}
	return &presenceTracker{st: st, now: now, log: log, pending: map[deviceKey]wire.Status{},
		wake: make(chan struct{}, 1), latest: map[deviceKey]wire.Status{},
		revoked: map[deviceKey]wire.Status{}, republish: map[deviceKey]struct{}{}, onlineSeen: map[deviceKey]uint64{}}
}

// parseStatusTopic returns tenant and device of tg/v1/<t>/devices/<d>/status.
func parseStatusTopic(topic string) (deviceKey, bool) { return parseDeviceTopic(topic, "status") }

// parseDeviceTopic returns tenant and device of tg/v1/<t>/devices/<d>/<leaf>.
func parseDeviceTopic(topic, leaf string) (deviceKey, bool) {
	parts := strings.Split(topic, "/")
	if len(parts) != 6 || parts[0]+"/"+parts[1] != mqttacl.Prefix || parts[3] != "devices" || parts[5] != leaf {
		return deviceKey{}, false
	}
	k := deviceKey{tenant: parts[2], device: parts[4]}
	return k, mqttacl.ValidTenant(k.tenant) && mqttacl.ValidID(k.device)
}

// parseStatus decodes and checks a status payload for device.
func parseStatus(payload []byte, device string) (wire.Status, error) {
	var s wire.Status
	if err := json.Unmarshal(payload, &s); err != nil {
		return wire.Status{}, err
	}
	switch {
	case s.Schema != wire.StatusSchema:
		return wire.Status{}, errors.New("unknown schema " + s.Schema)
	case s.Device != device:
		return wire.Status{}, errors.New("status names another device")
	case s.State != wire.StateOnline && s.State != wire.StateOffline:
		return wire.Status{}, errors.New("unknown state " + s.State)
	case s.Revoked && s.State != wire.StateOffline:
		return wire.Status{}, errors.New("a revoked status must be offline")
	}
	return s, nil
}

func (p *presenceTracker) handle(m broker.Message) {
	k, ok := parseStatusTopic(m.Topic)
	if !ok || len(m.Payload) == 0 {
		return
	}
	s, err := parseStatus(m.Payload, k.device)
	if err != nil {
		p.log.Debug("status ignored", "topic", m.Topic, "error", err)
		return
	}
	p.mu.Lock()
	if r, ok := p.revoked[k]; ok {
		r.Session = max(r.Session, s.Session)
		p.revoked[k] = r
		if !s.Revoked {
			// The retained status is no longer the revoked one.
			p.republish[k] = struct{}{}
		}
	} else {
		s.Revoked = false
	}
	p.pending[k] = wire.LatestStatus(p.pending[k], s)
	p.mu.Unlock()
	p.kick()
	if s.State == wire.StateOnline && p.onOnline != nil && p.newOnline(k, s.Session) {
		p.onOnline(k.tenant, k.device)
	}
}

// newOnline records an online status of session n and reports whether it
// is a connection not announced before.
func (p *presenceTracker) newOnline(k deviceKey, n uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if last, ok := p.onlineSeen[k]; ok && n <= last {
		return false
	}
	p.onlineSeen[k] = n
	return true
}

func (p *presenceTracker) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// revoke records that the device was revoked or deleted and publishes its
// final retained status: offline, revoked, with the highest session seen
// for it, so that wire.LatestStatus treats it as final. The caller has
// already cut the device off the broker; if its Will lands after this
// status, the writer publishes this status again.
func (p *presenceTracker) revoke(tenant, device string) error {
	k := deviceKey{tenant: tenant, device: device}
	p.mu.Lock()
	session := max(p.latest[k].Session, p.pending[k].Session, p.revoked[k].Session)
	s := wire.Status{Schema: wire.StatusSchema, Device: device, State: wire.StateOffline, Session: session,
		TS: p.now().UTC().Truncate(time.Millisecond), Revoked: true}
	p.revoked[k] = s
	p.latest[k] = wire.LatestStatus(p.latest[k], s)
	delete(p.republish, k)
	p.mu.Unlock()
	return p.publishRevoked(k)
}

// publishRevoked publishes the revoked status of k (retained, QoS 1).
func (p *presenceTracker) publishRevoked(k deviceKey) error {
	if p.publish == nil {
		return nil
	}
	p.mu.Lock()
	s, ok := p.revoked[k]
	p.mu.Unlock()
	if !ok {
		return nil
	}
	payload, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := p.publish(mqttacl.StatusTopic(k.tenant, k.device), payload); err != nil {
		return fmt.Errorf("publish the revoked status of %s: %w", k.device, err)
	}
	return nil
}

// Run subscribes through subscribe and writes presence until ctx ends.
func (p *presenceTracker) Run(ctx context.Context, subscribe func(string, func(broker.Message)) (func(), error)) error {
	unsub, err := subscribe(StatusFilter, p.handle)
	if err != nil {
		return err
	}
	defer unsub()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.wake:
			p.flush(ctx)
		}
	}
}

func (p *presenceTracker) flush(ctx context.Context) {
	p.mu.Lock()
	batch := p.pending
	p.pending = make(map[deviceKey]wire.Status, len(batch))
	again := p.republish
	p.republish = map[deviceKey]struct{}{}
	p.mu.Unlock()
	for k := range again {
		// A failure is not retried in a loop: the broker is unreachable,
		// and the subscription's retained replay after the reconnect
		// brings the overwritten status back here.
		if err := p.publishRevoked(k); err != nil && ctx.Err() == nil {
			p.log.Warn("retained status of a revoked device not restored", "tenant", k.tenant, "device", k.device, "error", err)
		}
	}
	for k, s := range batch {
		p.mu.Lock()
		prev := p.latest[k]
		next := wire.LatestStatus(prev, s)
		p.latest[k] = next
		p.mu.Unlock()
		if next == prev {
			continue // stale: an older session's message, or a revoked device
		}
		now := p.now()
		seen := next.TS
		if seen.IsZero() || seen.After(now) {
			seen = now // the Will carries no time; a device clock ahead is not trusted
		}
		err := p.st.SetDevicePresence(ctx, k.tenant, k.device, next.State == wire.StateOnline, seen)
		if errors.Is(err, store.ErrNotFound) {
			// A deleted (or unknown) device. Its entry in latest stays:
			// a delete's Will can be flushed here before revoke reads
			// the device's highest session from latest.
			continue
		}
		if err != nil && ctx.Err() == nil {
			p.log.Warn("record presence", "tenant", k.tenant, "device", k.device, "error", err)
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
