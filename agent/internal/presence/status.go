package presence

import (
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// The status message is a contract with the control plane and with MQTT
// watchers, so it is defined once, in internal/wire; these names keep this
// package's API self-contained.

// StatusSchema is the schema field of every status message.
const StatusSchema = wire.StatusSchema

// Status states.
const (
	StateOnline  = wire.StateOnline
	StateOffline = wire.StateOffline
)

// Status is the retained message on a device's status topic (wire.Status).
type Status = wire.Status

// Latest returns the status that describes the device after having seen
// prev and then next, in any order of arrival (wire.LatestStatus): an older
// session never replaces a newer one, and within a session offline wins.
func Latest(prev, next Status) Status { return wire.LatestStatus(prev, next) }

// StatusTopic is tg/v1/<tenant>/devices/<device>/status.
func StatusTopic(tenant, device string) string { return mqttacl.StatusTopic(tenant, device) }

// CommandTopic is tg/v1/<tenant>/devices/<device>/cmd/<name>; name "+"
// subscribes to every command.
func CommandTopic(tenant, device, name string) string { return mqttacl.CmdTopic(tenant, device, name) }
