package wire

import "time"

// Device presence on tg/v1/<tenant>/devices/<device>/status (retained; the
// MQTT Will publishes offline). The agent publishes it, the control plane
// reads it into the device's online flag and last-seen time.

// StatusSchema is the schema field of every status message.
const StatusSchema = "tg.status.v1"

// Status states.
const (
	StateOnline  = "online"
	StateOffline = "offline"
)

// Status is the retained message on a device's status topic:
//
//	online:  {"schema":"tg.status.v1","device":D,"state":"online","session":N,"ts":T}
//	Will:    {"schema":"tg.status.v1","device":D,"state":"offline","session":N}
//	revoked: {"schema":"tg.status.v1","device":D,"state":"offline","session":N,"ts":T,"revoked":true}
//
// Session grows with every connection of the device (persisted on the device,
// never reused), so a late Will of an older connection is recognisable.
//
// The control plane publishes the revoked form, retained, as its own
// identity when an operator revokes or deletes the device, with the highest
// session it has seen for it, so that a watcher (and a subscriber arriving
// later) stops seeing the device online. Revoked is absent (false) in every
// message a device sends, so payloads without it keep their meaning.
type Status struct {
	Schema  string    `json:"schema"`
	Device  string    `json:"device"`
	State   string    `json:"state"`
	Session uint64    `json:"session"`
	TS      time.Time `json:"ts,omitzero"` // absent in the Will: the broker sends it at an unknown time
	// Revoked marks the control plane's final status of a revoked or
	// deleted device; State is then offline. The broker lets a device
	// publish on its own status topic only, so a device setting it can
	// misrepresent nothing but itself.
	Revoked bool `json:"revoked,omitempty"`
}

// LatestStatus returns the status that describes the device after having
// seen prev and then next, in any order of arrival: a revoked status is
// final whatever the sessions (a revoked device cannot connect again, and
// the control plane may not have seen its newest session); otherwise a
// status whose session is lower than the highest seen is stale, and within
// one session offline is final (online → offline, never back). The zero
// Status means "nothing seen yet".
func LatestStatus(prev, next Status) Status {
	switch {
	case prev == (Status{}):
		return next
	case prev.Revoked != next.Revoked:
		if prev.Revoked {
			return prev
		}
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
