package agent

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/tensorguard/tensorguardflow/agent/internal/outbox"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
)

// TelemetrySchema is the schema field of heartbeat messages.
const TelemetrySchema = "tg.telemetry.v1"

// Heartbeat is the periodic telemetry message on
// tg/v1/<tenant>/devices/<device>/telemetry.
type Heartbeat struct {
	Schema       string            `json:"schema"`
	MsgID        string            `json:"msg_id"`
	Kind         string            `json:"kind"` // "heartbeat"
	Device       string            `json:"device"`
	TS           time.Time         `json:"ts"`
	AgentVersion string            `json:"agent_version"`
	DeviceType   string            `json:"device_type"`
	Labels       map[string]string `json:"labels,omitempty"`
	UptimeS      int64             `json:"uptime_s"`
	CertNotAfter time.Time         `json:"cert_not_after"`
	Renewals     uint64            `json:"cert_renewals"`
	Outbox       HeartbeatOutbox   `json:"outbox"`
}

// HeartbeatOutbox reports the outbox's depth and losses.
type HeartbeatOutbox struct {
	Pending int    `json:"pending"`
	Dropped uint64 `json:"dropped"`
}

// telemetryLoop enqueues a heartbeat now and then every telemetry.interval
// (re-read after each beat, so a reload applies at once).
func (a *Agent) telemetryLoop(ctx context.Context, box *outbox.Outbox, tenant, device string) error {
	topic := mqttacl.TelemetryTopic(tenant, device)
	for {
		cfg := a.cfg.Load()
		stats, err := box.Stats()
		if err != nil {
			return err
		}
		hb := Heartbeat{
			Schema:       TelemetrySchema,
			Kind:         "heartbeat",
			Device:       device,
			TS:           time.Now().UTC(),
			AgentVersion: Version,
			DeviceType:   cfg.DeviceType,
			Labels:       cfg.Labels,
			UptimeS:      int64(time.Since(a.started).Seconds()),
			CertNotAfter: a.certs.identity().Leaf.NotAfter.UTC(),
			Renewals:     a.renewals.Load(),
			Outbox:       HeartbeatOutbox{Pending: stats.Pending, Dropped: stats.Dropped},
		}
		_, err = box.EnqueueFunc(topic, 1, false, func(msgID string) ([]byte, error) {
			hb.MsgID = msgID
			return json.Marshal(hb)
		})
		switch {
		case errors.Is(err, outbox.ErrOutboxFull):
			// Critical entries fill the outbox; a heartbeat is not worth
			// displacing them, and the next one will try again.
			a.log.Warn("outbox full; heartbeat skipped", "pending", stats.Pending)
		case err != nil:
			return err
		}
		a.lastBeat.Store(time.Now().UnixNano())
		a.writeStatusFile(true)
		t := time.NewTimer(cfg.Telemetry.Interval.D())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-a.reloadNow:
			t.Stop()
		case <-t.C:
		}
	}
}
