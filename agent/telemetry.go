package agent

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
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
	// Models are the inference statistics of every model served since the
	// agent started (counters are cumulative, as in Prometheus).
	Models []HeartbeatModel `json:"models,omitempty"`
	// Thermal are the device's thermal zones (CPU, GPU, SoC on a Jetson).
	Thermal []inference.Zone `json:"thermal,omitempty"`
}

// HeartbeatModel is one model's inference statistics.
type HeartbeatModel struct {
	Name       string           `json:"name"`
	Version    string           `json:"version"`
	Backend    string           `json:"backend"`
	Loaded     bool             `json:"loaded"`
	Inferences uint64           `json:"inferences"`
	Errors     uint64           `json:"errors"`
	LatencyMS  HeartbeatLatency `json:"latency_ms"`
}

// HeartbeatLatency summarizes the latency histogram, in milliseconds;
// quantiles are estimated inside the histogram's buckets.
type HeartbeatLatency struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
}

// heartbeatModels summarizes the inference statistics.
func heartbeatModels(stats *inference.Stats) []HeartbeatModel {
	var out []HeartbeatModel
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, m := range stats.Snapshot() {
		hm := HeartbeatModel{Name: m.Name, Version: m.Version, Backend: m.Backend, Loaded: m.Loaded,
			Inferences: m.Count, Errors: m.Errors}
		if m.Count > 0 {
			hm.LatencyMS = HeartbeatLatency{Mean: ms(m.Sum / time.Duration(m.Count)),
				P50: ms(m.Quantile(0.5)), P90: ms(m.Quantile(0.9)), P99: ms(m.Quantile(0.99))}
		}
		out = append(out, hm)
	}
	return out
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
			Models:       heartbeatModels(a.stats),
		}
		if a.opts.thermalRoot != "" {
			hb.Thermal = inference.ReadThermal(a.opts.thermalRoot)
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
