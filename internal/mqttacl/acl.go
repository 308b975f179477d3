package mqttacl

// Rules is an identity's access stated as MQTT topic filters, all of them
// grants, in the form an external broker's ACL file can express verbatim:
// a topic may be published if it matches a Publish filter; a subscription
// filter is allowed if it lies [Within] a Subscribe filter. Rules never
// grant anything outside tg/v1/.
//
// There are deliberately no deny filters: mosquitto's "topic deny" refuses
// reads as well as writes, so "a device writes its own prefix except cmd/
// but reads cmd/" cannot be stated with one. A device's publish grants are
// instead the device-to-control-plane topics of DESIGN.md §5, one filter
// each; a new device topic is added here.
type Rules struct {
	Publish   []string
	Subscribe []string
	// SharedSubscribe says whether "$share/<group>/<filter>" is allowed for
	// a filter that the Subscribe rules allow.
	SharedSubscribe bool
}

// RulesFor returns the rules for id; an invalid identity gets no rules.
func RulesFor(id Identity) Rules {
	if id.Validate() != nil {
		return Rules{}
	}
	switch id.Kind {
	case KindDevice:
		return Rules{
			Publish: []string{
				StatusTopic(id.Tenant, id.Device),
				TelemetryTopic(id.Tenant, id.Device),
				AttestationTopic(id.Tenant, id.Device),
				JobTopic(id.Tenant, id.Device, "+"),
			},
			Subscribe: []string{CmdFilter(id.Tenant, id.Device)},
		}
	case KindOperator:
		return Rules{Subscribe: []string{TenantFilter(id.Tenant)}}
	case KindControlPlane:
		all := Prefix + "/#"
		return Rules{Publish: []string{all}, Subscribe: []string{all}, SharedSubscribe: true}
	}
	return Rules{}
}

// CanPublish reports whether id may publish on topic.
func CanPublish(id Identity, topic string) bool {
	if !ValidTopic(topic) {
		return false
	}
	for _, p := range RulesFor(id).Publish {
		if Match(p, topic) {
			return true
		}
	}
	return false
}

// CanSubscribe reports whether id may subscribe to filter: only if every
// topic the filter could match is readable by id. A concrete topic is a
// filter too, so this is also the check for delivering one message.
func CanSubscribe(id Identity, filter string) bool {
	r := RulesFor(id)
	inner, shared, ok := splitShared(filter)
	if !ok || (shared && !r.SharedSubscribe) {
		return false
	}
	if !ValidFilter(inner) {
		return false
	}
	for _, s := range r.Subscribe {
		if Within(inner, s) {
			return true
		}
	}
	return false
}
