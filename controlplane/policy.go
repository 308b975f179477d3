package controlplane

import (
	"context"
	"encoding/json"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

var _ api.PolicyNotifier = (*ControlPlane)(nil)

// NotifyPolicy implements api.PolicyNotifier: it publishes the new
// revision (QoS 1, not retained) on the cmd/policy topic of every enrolled
// device of the fleet. A device that misses it (offline, or not yet
// subscribed) still catches up: the agent fetches the bundle when it
// starts, on every connection and periodically.
func (cp *ControlPlane) NotifyPolicy(ctx context.Context, tenant, fleetID string, revision int64) {
	log := cp.log.With("subsystem", "policy", "tenant", tenant, "fleet", fleetID, "revision", revision)
	devices, err := cp.store.ListDevices(ctx, tenant, store.DeviceFilter{FleetID: fleetID, Status: store.DeviceEnrolled})
	if err != nil {
		log.Warn("policy notification not sent: listing the fleet's devices failed; devices fetch the bundle on their next connect", "error", err)
		return
	}
	payload, err := json.Marshal(wire.PolicyNotify{Schema: wire.PolicyNotifySchema, Revision: revision})
	if err != nil {
		log.Error("policy notification", "error", err)
		return
	}
	failed := 0
	for _, d := range devices {
		topic := mqttacl.CmdTopic(tenant, d.ID, "policy")
		var err error
		if cp.broker != nil {
			err = cp.broker.Publish(topic, payload, false, 1)
		} else {
			err = cp.external.publishMsg(topic, payload, false)
		}
		if err != nil {
			failed++
			log.Debug("policy notification not published", "device", d.ID, "error", err)
		}
	}
	log.Info("policy revision announced", "devices", len(devices), "failed", failed)
}
