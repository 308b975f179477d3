package presence

import "time"

// StatusSchema is the schema field of every status message.
const StatusSchema = "tg.status.v1"

// Status states.
const (
	StateOnline  = "online"
	StateOffline = "offline"
)

// Status is the retained message on a device's status topic.
type Status struct {
	Schema  string    `json:"schema"`
	Device  string    `json:"device"`
	State   string    `json:"state"`
	Session uint64    `json:"session"`
	TS      time.Time `json:"ts,omitzero"` // absent in the Will: the broker sends it at an unknown time
}

// Latest returns the status that describes the device after having seen
// prev and then next (in any order of arrival). A status from an older
// session never replaces a newer one; within a session offline wins, since a
// session goes online → offline and never back. The zero Status means
// "nothing seen yet".
func Latest(prev, next Status) Status {
	switch {
	case prev == (Status{}):
		return next
	case next.Session > prev.Session:
		return next
	case next.Session < prev.Session:
		return prev
	case next.State == StateOffline || prev.State != StateOffline:
		return next
	default:
		return prev
	}
}

// StatusTopic is tg/v1/<tenant>/devices/<device>/status.
func StatusTopic(tenant, device string) string {
	return "tg/v1/" + tenant + "/devices/" + device + "/status"
}

// CommandTopic is tg/v1/<tenant>/devices/<device>/cmd/<name>; name "+"
// subscribes to every command.
func CommandTopic(tenant, device, name string) string {
	return "tg/v1/" + tenant + "/devices/" + device + "/cmd/" + name
}
