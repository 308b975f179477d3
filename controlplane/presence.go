package controlplane

import (
	"context"
	"encoding/json"
	"errors"
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
type presenceTracker struct {
	st  *store.Store
	now func() time.Time
	log *slog.Logger

	mu      sync.Mutex
	pending map[deviceKey]wire.Status
	wake    chan struct{}

	latest map[deviceKey]wire.Status // writer goroutine only
}

type deviceKey struct{ tenant, device string }

func newPresenceTracker(st *store.Store, now func() time.Time, log *slog.Logger) *presenceTracker {
	if log == nil {
		log = discardLogger()
	}
	return &presenceTracker{st: st, now: now, log: log, pending: map[deviceKey]wire.Status{},
		wake: make(chan struct{}, 1), latest: map[deviceKey]wire.Status{}}
}

// parseStatusTopic returns tenant and device of tg/v1/<t>/devices/<d>/status.
func parseStatusTopic(topic string) (deviceKey, bool) {
	parts := strings.Split(topic, "/")
	if len(parts) != 6 || parts[0]+"/"+parts[1] != mqttacl.Prefix || parts[3] != "devices" || parts[5] != "status" {
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
	p.pending[k] = wire.LatestStatus(p.pending[k], s)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
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
	p.mu.Unlock()
	for k, s := range batch {
		prev := p.latest[k]
		next := wire.LatestStatus(prev, s)
		if next == prev {
			continue // stale: an older session's message
		}
		p.latest[k] = next
		now := p.now()
		seen := next.TS
		if seen.IsZero() || seen.After(now) {
			seen = now // the Will carries no time; a device clock ahead is not trusted
		}
		err := p.st.SetDevicePresence(ctx, k.tenant, k.device, next.State == wire.StateOnline, seen)
		if errors.Is(err, store.ErrNotFound) {
			delete(p.latest, k) // deleted or unknown device
			continue
		}
		if err != nil && ctx.Err() == nil {
			p.log.Warn("record presence", "tenant", k.tenant, "device", k.device, "error", err)
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
