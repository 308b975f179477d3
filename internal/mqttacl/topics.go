package mqttacl

// Topic builders for every topic of DESIGN.md §5. They only concatenate:
// callers pass ids that satisfy [ValidTenant] and [ValidID] (the broker
// refuses a publish on anything else anyway).

// Prefix is the first two levels of every TensorGuardFlow topic.
const Prefix = "tg/v1"

// TenantFilter is the filter for all of a tenant's topics (what an operator
// credential may read).
func TenantFilter(tenant string) string { return Prefix + "/" + tenant + "/#" }

// DevicePrefix is the topic prefix owned by one device, without a trailing
// slash.
func DevicePrefix(tenant, device string) string {
	return Prefix + "/" + tenant + "/devices/" + device
}

// StatusTopic carries a device's retained presence; its Will publishes
// offline here.
func StatusTopic(tenant, device string) string { return DevicePrefix(tenant, device) + "/status" }

// TelemetryTopic carries a device's telemetry.
func TelemetryTopic(tenant, device string) string {
	return DevicePrefix(tenant, device) + "/telemetry"
}

// AttestationTopic carries a device's evidence answering a challenge.
func AttestationTopic(tenant, device string) string {
	return DevicePrefix(tenant, device) + "/attestation"
}

// JobTopic carries install progress and the result of one job.
func JobTopic(tenant, device, job string) string {
	return DevicePrefix(tenant, device) + "/jobs/" + job
}

// CmdTopic carries a command from the control plane to one device.
func CmdTopic(tenant, device, name string) string {
	return DevicePrefix(tenant, device) + "/cmd/" + name
}

// CmdFilter is the filter a device subscribes to for its commands.
func CmdFilter(tenant, device string) string { return DevicePrefix(tenant, device) + "/cmd/#" }

// FleetAttestationTopic carries the control plane's retained attestation
// verdict for one device of a fleet.
func FleetAttestationTopic(tenant, fleet, device string) string {
	return Prefix + "/" + tenant + "/fleets/" + fleet + "/attestation/" + device
}

// FleetAttestationFilter matches every verdict of a fleet.
func FleetAttestationFilter(tenant, fleet string) string {
	return Prefix + "/" + tenant + "/fleets/" + fleet + "/attestation/+"
}

// RolloutEventsTopic carries the events of one rollout.
func RolloutEventsTopic(tenant, rollout string) string {
	return Prefix + "/" + tenant + "/rollouts/" + rollout + "/events"
}

// RolloutStatusTopic carries the retained summary of one rollout.
func RolloutStatusTopic(tenant, rollout string) string {
	return Prefix + "/" + tenant + "/rollouts/" + rollout + "/status"
}

// RolloutsFilter matches the events and status of every rollout of a
// tenant (what `tgctl rollout status --watch` and operators' MQTT clients
// subscribe to).
func RolloutsFilter(tenant string) string { return Prefix + "/" + tenant + "/rollouts/#" }
