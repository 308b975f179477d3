package mqttacl

import (
	"strings"
	"testing"
)

const (
	tenant  = "acme"
	other   = "globex"
	devX    = "dev-x"
	devY    = "dev-y"
	opA     = "op-a"
	fleet   = "flt-1"
	rollout = "rol-1"
)

var (
	dev      = Device(tenant, devX)
	operator = Operator(tenant, opA)
	cp       = ControlPlane("")
)

func TestTopicBuilders(t *testing.T) {
	t.Parallel()
	tests := []struct{ got, want string }{
		{StatusTopic(tenant, devX), "tg/v1/acme/devices/dev-x/status"},
		{TelemetryTopic(tenant, devX), "tg/v1/acme/devices/dev-x/telemetry"},
		{AttestationTopic(tenant, devX), "tg/v1/acme/devices/dev-x/attestation"},
		{JobTopic(tenant, devX, "job-1"), "tg/v1/acme/devices/dev-x/jobs/job-1"},
		{CmdTopic(tenant, devX, "attest"), "tg/v1/acme/devices/dev-x/cmd/attest"},
		{CmdFilter(tenant, devX), "tg/v1/acme/devices/dev-x/cmd/#"},
		{FleetAttestationTopic(tenant, fleet, devX), "tg/v1/acme/fleets/flt-1/attestation/dev-x"},
		{FleetAttestationFilter(tenant, fleet), "tg/v1/acme/fleets/flt-1/attestation/+"},
		{RolloutEventsTopic(tenant, rollout), "tg/v1/acme/rollouts/rol-1/events"},
		{RolloutStatusTopic(tenant, rollout), "tg/v1/acme/rollouts/rol-1/status"},
		{RolloutsFilter(tenant), "tg/v1/acme/rollouts/#"},
		{TenantFilter(tenant), "tg/v1/acme/#"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// Case is one row of the ACL conformance table: the same rows are run
// against the embedded broker and against mosquitto.
type aclCase struct {
	id     Identity
	topic  string
	pub    bool
	sub    bool // CanSubscribe with the topic itself as the filter
	reason string
}

func aclTable() []aclCase {
	return []aclCase{
		// A device on its own topics.
		{dev, StatusTopic(tenant, devX), true, false, "own status: write only"},
		{dev, TelemetryTopic(tenant, devX), true, false, "own telemetry"},
		{dev, AttestationTopic(tenant, devX), true, false, "own attestation"},
		{dev, JobTopic(tenant, devX, "job-1"), true, false, "own job"},
		{dev, CmdTopic(tenant, devX, "attest"), false, true, "own cmd: read only"},
		{dev, DevicePrefix(tenant, devX) + "/cmd", false, true, "the cmd level itself"},
		{dev, DevicePrefix(tenant, devX) + "/cmdx", false, false, "not a device topic"},
		{dev, DevicePrefix(tenant, devX) + "/a/b/c", false, false, "not a device topic"},
		{dev, JobTopic(tenant, devX, "job-1") + "/x", false, false, "below a job"},
		// A device on anything else.
		{dev, StatusTopic(tenant, devY), false, false, "other device's status"},
		{dev, CmdTopic(tenant, devY, "attest"), false, false, "other device's cmd"},
		{dev, StatusTopic(other, devX), false, false, "same device id, other tenant"},
		{dev, CmdTopic(other, devX, "attest"), false, false, "same device id, other tenant's cmd"},
		{dev, FleetAttestationTopic(tenant, fleet, devX), false, false, "verdicts are the control plane's"},
		{dev, RolloutEventsTopic(tenant, rollout), false, false, "rollout events"},
		{dev, RolloutStatusTopic(tenant, rollout), false, false, "rollout status"},
		{dev, "tg/v1/acme/devices/dev-xy/status", false, false, "id prefix is not the id"},
		{dev, "tg/v1/acme/devices/dev-x", false, false, "own prefix itself"},
		{dev, "$SYS/broker/uptime", false, false, "$SYS"},
		{dev, "other/topic", false, false, "outside tg/v1"},
		// An operator.
		{operator, StatusTopic(tenant, devX), false, true, "tenant status: read only"},
		{operator, CmdTopic(tenant, devX, "attest"), false, true, "tenant cmd: read only"},
		{operator, FleetAttestationTopic(tenant, fleet, devX), false, true, "verdicts"},
		{operator, RolloutEventsTopic(tenant, rollout), false, true, "rollout events"},
		{operator, RolloutStatusTopic(tenant, rollout), false, true, "rollout status (retained)"},
		{operator, RolloutEventsTopic(other, rollout), false, false, "other tenant's rollout events"},
		{operator, StatusTopic(other, devX), false, false, "other tenant"},
		{operator, "$SYS/broker/uptime", false, false, "$SYS"},
		// The control plane.
		{cp, CmdTopic(tenant, devX, "attest"), true, true, "control plane everywhere in tg/v1"},
		{cp, StatusTopic(other, devY), true, true, "all tenants"},
		{cp, FleetAttestationTopic(other, fleet, devX), true, true, "verdicts"},
		{cp, "$SYS/broker/uptime", false, false, "not $SYS"},
		{cp, "other/topic", false, false, "not outside tg/v1"},
		// Invalid identity gets nothing.
		{Identity{}, StatusTopic(tenant, devX), false, false, "no identity"},
		{Device("acme", "dev/x"), "tg/v1/acme/devices/dev/x/status", false, false, "id with a slash"},
	}
}

func TestCanPublishAndSubscribeTopics(t *testing.T) {
	t.Parallel()
	for _, tc := range aclTable() {
		if got := CanPublish(tc.id, tc.topic); got != tc.pub {
			t.Errorf("CanPublish(%v, %q) = %v, want %v (%s)", tc.id, tc.topic, got, tc.pub, tc.reason)
		}
		if got := CanSubscribe(tc.id, tc.topic); got != tc.sub {
			t.Errorf("CanSubscribe(%v, %q) = %v, want %v (%s)", tc.id, tc.topic, got, tc.sub, tc.reason)
		}
	}
}

func TestCanPublishInvalidTopics(t *testing.T) {
	t.Parallel()
	own := DevicePrefix(tenant, devX)
	for _, topic := range []string{
		"", own + "/+", own + "/#", own + "/a+b", own + "/\x00", own + "/\xff",
		own + "/" + strings.Repeat("a", maxTopicLen),
	} {
		for _, id := range []Identity{dev, operator, cp} {
			if CanPublish(id, topic) {
				t.Errorf("CanPublish(%v, %q) = true", id, topic)
			}
		}
	}
}

func TestCanSubscribeFilters(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id     Identity
		filter string
		want   bool
	}{
		{dev, "tg/v1/acme/devices/dev-x/cmd/#", true},
		{dev, "tg/v1/acme/devices/dev-x/cmd/+", true},
		{dev, "tg/v1/acme/devices/dev-x/cmd/attest", true},
		{dev, "tg/v1/+/devices/dev-x/cmd/#", false},
		{dev, "tg/v1/acme/devices/+/cmd/#", false},
		{dev, "tg/v1/acme/devices/dev-x/+/attest", false},
		{dev, "tg/v1/acme/devices/dev-x/#", false},
		{dev, "tg/v1/acme/devices/dev-x/status", false},
		{dev, "tg/v1/acme/#", false},
		{dev, "#", false},
		{dev, "+/#", false},
		{dev, "+/v1/acme/devices/dev-x/cmd/#", false},
		{dev, "$share/g/tg/v1/acme/devices/dev-x/cmd/#", false},
		{dev, "$SYS/#", false},
		{dev, "tg/v1/acme/devices/dev-x/cmd/#/x", false},
		{dev, "tg/v1/acme/devices/dev-x/cmd/a#", false},
		{dev, "", false},
		{operator, "tg/v1/acme/#", true},
		{operator, "tg/v1/acme/devices/+/status", true},
		{operator, "tg/v1/acme/fleets/flt-1/attestation/+", true},
		{operator, "tg/v1/acme/+/+/attestation/#", true},
		{operator, "tg/v1/acme", true},
		{operator, "tg/v1/+/#", false},
		{operator, "tg/v1/+/devices/+/status", false},
		{operator, "tg/#", false},
		{operator, "#", false},
		{operator, "tg/v1/globex/#", false},
		{operator, "$share/g/tg/v1/acme/#", false},
		{operator, "$SYS/#", false},
		{cp, "tg/v1/#", true},
		{cp, "tg/v1/+/devices/+/status", true},
		{cp, "$share/cp/tg/v1/+/devices/+/status", true},
		{cp, "$share/cp/tg/v1/#", true},
		{cp, "$share//tg/v1/#", false},
		{cp, "$share/g+/tg/v1/#", false},
		{cp, "$share/cp", false},
		{cp, "$share/cp/#", false},
		{cp, "#", false},
		{cp, "+/v1/#", false},
		{cp, "$SYS/#", false},
	}
	for _, tc := range tests {
		if got := CanSubscribe(tc.id, tc.filter); got != tc.want {
			t.Errorf("CanSubscribe(%v, %q) = %v, want %v", tc.id, tc.filter, got, tc.want)
		}
	}
}

func TestMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"a/+/c", "a//c", true},
		{"a/b", "a/b/", false},
		{"a/#/b", "a/x/b", false},
		{"a/b", "a/+", false},
		{"+", "", false},
	}
	for _, tc := range tests {
		if got := Match(tc.filter, tc.topic); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func TestWithin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		filter, grant string
		want          bool
	}{
		{"a/b", "a/#", true},
		{"a", "a/#", true},
		{"a/#", "a/#", true},
		{"a/+/c", "a/#", true},
		{"#", "a/#", false},
		{"+/b", "a/#", false},
		{"a/#", "a/+", false},
		{"a/b", "a/+", true},
		{"a/+", "a/+", true},
		{"a/b/c", "a/+", false},
		{"a", "a/+", false},
		{"a/+", "a/b", false},
		{"$SYS/x", "+/x", false},
		{"$SYS/x", "#", false},
		{"a/b", "#", true},
		{"#", "#", true},
		{"a/#", "a/b/#", false},
	}
	for _, tc := range tests {
		if got := Within(tc.filter, tc.grant); got != tc.want {
			t.Errorf("Within(%q, %q) = %v, want %v", tc.filter, tc.grant, got, tc.want)
		}
	}
}

// foreignTopics are topics that dev (acme/dev-x) must never read.
func foreignTopics() []string {
	var ts []string
	for _, tn := range []string{tenant, other, "a", ""} {
		for _, d := range []string{devX, devY, "+", "#", "dev-xy", ""} {
			if tn == tenant && d == devX {
				continue
			}
			ts = append(ts,
				"tg/v1/"+tn+"/devices/"+d+"/cmd/attest",
				"tg/v1/"+tn+"/devices/"+d+"/status",
				"tg/v1/"+tn+"/devices/"+d+"/cmd",
			)
		}
		ts = append(ts,
			"tg/v1/"+tn+"/fleets/"+fleet+"/attestation/"+devX,
			"tg/v1/"+tn+"/rollouts/"+rollout+"/events",
			"tg/v1/"+tn,
		)
	}
	own := DevicePrefix(tenant, devX)
	return append(ts,
		own+"/status", own+"/telemetry", own+"/jobs/j", own, own+"/cmdx",
		"$SYS/broker/uptime", "$share/g/"+own+"/cmd/x", "tg", "tg/v1", "x", "/", "tg/v2/acme/devices/dev-x/cmd/x",
	)
}

// instantiate replaces each wildcard of filter with the level fill, giving
// a topic the filter matches.
func instantiate(filter, fill string) string {
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if l == "+" || l == "#" {
			levels[i] = fill
		}
	}
	return strings.Join(levels, "/")
}

func FuzzCanSubscribe(f *testing.F) {
	for _, tc := range aclTable() {
		f.Add(tc.topic)
	}
	for _, s := range []string{
		"tg/v1/acme/devices/dev-x/cmd/#", "tg/v1/+/devices/dev-x/cmd/#", "#", "+/+/+/+/+/+/+",
		"tg/v1/acme/devices/dev-x/cmd/+", "$share/g/tg/v1/acme/#", "tg/v1/acme/#", "tg/+/acme/devices/dev-x/cmd/#",
	} {
		f.Add(s)
	}
	foreign := foreignTopics()
	f.Fuzz(func(t *testing.T, filter string) {
		devOK := CanSubscribe(dev, filter)
		opOK := CanSubscribe(operator, filter)
		cpOK := CanSubscribe(cp, filter)
		_ = CanPublish(dev, filter)
		if devOK {
			for _, topic := range foreign {
				if Match(filter, topic) {
					t.Fatalf("device may subscribe %q which matches foreign topic %q", filter, topic)
				}
			}
			if !Within(filter, CmdFilter(tenant, devX)) {
				t.Fatalf("device may subscribe %q outside its cmd/", filter)
			}
		}
		if opOK {
			for _, topic := range foreign {
				if !strings.HasPrefix(topic, "tg/v1/"+tenant+"/") && topic != "tg/v1/"+tenant && Match(filter, topic) {
					t.Fatalf("operator may subscribe %q which matches foreign topic %q", filter, topic)
				}
			}
			if CanPublish(operator, filter) {
				t.Fatalf("operator may publish %q", filter)
			}
		}
		// Every topic an allowed filter can match must itself be readable:
		// fill the wildcards with hostile levels and check.
		for _, c := range []struct {
			id Identity
			ok bool
		}{{dev, devOK}, {operator, opOK}, {cp, cpOK}} {
			if !c.ok || strings.HasPrefix(filter, "$share/") {
				continue
			}
			for _, fill := range []string{other, devY, "cmd", "status", "x/y", tenant + "/devices/" + devY} {
				topic := instantiate(filter, fill)
				if Match(filter, topic) && !CanSubscribe(c.id, topic) {
					t.Fatalf("%v may subscribe %q but not read %q which it matches", c.id, filter, topic)
				}
			}
		}
	})
}

// FuzzWithinImpliesMatch checks Within against Match: if filter is within
// grant, every topic the filter matches is matched by grant.
func FuzzWithinImpliesMatch(f *testing.F) {
	f.Add("a/+/c", "a/#", "b")
	f.Add("a/#", "a/+", "x/y")
	f.Add("+/x", "#", "$SYS")
	f.Fuzz(func(t *testing.T, filter, grant, fill string) {
		if !Within(filter, grant) {
			return
		}
		topic := instantiate(filter, fill)
		if Match(filter, topic) && !Match(grant, topic) {
			t.Fatalf("Within(%q, %q) but %q matches only the first", filter, grant, topic)
		}
		if strings.HasSuffix(filter, "/#") {
			parent := strings.TrimSuffix(filter, "/#")
			if ValidTopic(parent) && Match(filter, parent) && !Match(grant, parent) {
				t.Fatalf("Within(%q, %q) but parent %q matches only the first", filter, grant, parent)
			}
		}
	})
}

// TestRolloutWatchFilters: an operator may watch all its tenant's rollouts
// with one wildcard subscription, never another tenant's; a device none.
func TestRolloutWatchFilters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		id     Identity
		filter string
		want   bool
	}{
		{operator, RolloutsFilter(tenant), true},
		{operator, Prefix + "/" + tenant + "/rollouts/+/events", true},
		{operator, Prefix + "/+/rollouts/+/events", false},
		{operator, RolloutsFilter(other), false},
		{dev, RolloutsFilter(tenant), false},
		{dev, Prefix + "/" + tenant + "/rollouts/+/status", false},
	} {
		if got := CanSubscribe(tc.id, tc.filter); got != tc.want {
			t.Errorf("CanSubscribe(%v, %q) = %v, want %v", tc.id, tc.filter, got, tc.want)
		}
	}
}
