package integration

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// TestMQTTIsolation checks the embedded broker's ACLs with certificates the
// control-plane process really issued: two devices of tenant acme and one of
// tenant other (all enrolled without a TPM, through fleets that allow it),
// and each tenant's operator credential from `tgctl mqtt credentials`.
//
// A device's publish on another device's topic, or on another tenant's, is
// acknowledged (MQTT 3.1.1 has no refusal for a publish) but neither
// delivered nor retained; subscribing to another device's commands or to
// another tenant's topics gets SUBACK failure (0x80); the operator
// credential reads its tenant and cannot publish. Each refusal has a
// permitted twin that is seen to work, so the checks cannot pass by
// silence.
func TestMQTTIsolation(t *testing.T) {
	cp := startControlPlane(t, cpOptions{moreTenants: []string{"other"}})
	otherKey := cp.keys["other"]
	cp.tgctl("fleet", "create", "open", "--allow-no-tpm")
	if out, errOut, code := cp.tgctlAs(otherKey, "fleet", "create", "open", "--allow-no-tpm"); code != 0 {
		t.Fatalf("fleet create as other: %s%s", out, errOut)
	}
	tokA, _ := cp.token("open")
	tokB, _ := cp.token("open")
	tokC, _ := cp.tokenAs(otherKey, "open")
	devA, certA := enrollNoTPM(t, cp, tokA)
	devB, certB := enrollNoTPM(t, cp, tokB)
	devC, certC := enrollNoTPM(t, cp, tokC)

	op := cp.operatorMQTT("operator-acme")
	if q := op.subscribe(t, mqttacl.TenantFilter("acme")); q > 1 {
		t.Fatalf("acme operator: subscription to its tenant refused (0x%x)", q)
	}
	opOther := cp.operatorMQTTAs(otherKey, "operator-other")
	if q := opOther.subscribe(t, mqttacl.TenantFilter("other")); q > 1 {
		t.Fatalf("other operator: subscription to its tenant refused (0x%x)", q)
	}
	connect := func(dev string, cert tls.Certificate) *mqttClient {
		t.Helper()
		m, err := dialMQTT(t, cp.mqttAddr, cp.caPool, cert, dev)
		if err != nil {
			t.Fatalf("device %s: mqtt connect: %v", dev, err)
		}
		return m
	}
	a, b, c := connect(devA, certA), connect(devB, certB), connect(devC, certC)

	// Subscriptions: own commands yes; another device's commands, the
	// tenant's topics and another tenant's topics no.
	subs := []struct {
		who    string
		client *mqttClient
		filter string
		ok     bool
	}{
		{"device A", a, mqttacl.CmdFilter("acme", devA), true},
		{"device B", b, mqttacl.CmdFilter("acme", devB), true},
		{"device A", a, mqttacl.CmdFilter("acme", devB), false},
		{"device A", a, mqttacl.StatusTopic("acme", devB), false},
		{"device A", a, mqttacl.TenantFilter("acme"), false},
		{"device A", a, mqttacl.TenantFilter("other"), false},
		{"device A", a, mqttacl.CmdFilter("other", devC), false},
		{"device A", a, "#", false},
		{"acme operator", op, mqttacl.TenantFilter("other"), false},
		{"acme operator", op, mqttacl.StatusTopic("other", devC), false},
	}
	for _, s := range subs {
		q := s.client.subscribe(t, s.filter)
		if granted := q <= 1; granted != s.ok {
			t.Errorf("%s subscribing to %s: SUBACK 0x%x, want granted=%t", s.who, s.filter, q, s.ok)
		}
	}

	// Publications. Each refused one is followed, on the same connection, by
	// a permitted marker; once the marker has arrived, a refused message
	// that slipped through would have arrived too.
	forged := func(dev string) []byte {
		b, _ := json.Marshal(wire.Status{Schema: wire.StatusSchema, Device: dev, State: wire.StateOnline, Session: 99, TS: time.Now()})
		return b
	}
	pubs := []struct {
		who      string
		client   *mqttClient
		topic    string
		retained bool
		payload  []byte
	}{
		{"device A", a, mqttacl.StatusTopic("acme", devB), true, forged(devB)},
		{"device A", a, mqttacl.TelemetryTopic("acme", devB), false, []byte("forged-telemetry")},
		{"device A", a, mqttacl.StatusTopic("other", devC), true, forged(devC)},
		{"device A", a, mqttacl.CmdTopic("acme", devB, "reboot"), false, []byte("forged-cmd-by-device")},
		{"acme operator", op, mqttacl.CmdTopic("acme", devB, "reboot"), false, []byte("forged-cmd-by-operator")},
		{"acme operator", op, mqttacl.StatusTopic("acme", devB), true, forged(devB)},
		{"acme operator", op, mqttacl.TelemetryTopic("acme", devA), false, []byte("forged-telemetry-by-operator")},
	}
	for i, p := range pubs {
		if err := p.client.publish(t, p.topic, p.retained, p.payload); err != nil {
			t.Fatalf("%s publishing on %s: %v (want an acknowledged, dropped publish)", p.who, p.topic, err)
		}
		// The permitted twin: A's and C's own telemetry.
		marker := fmt.Sprintf("marker-%d", i)
		if err := a.publish(t, mqttacl.TelemetryTopic("acme", devA), false, []byte(marker)); err != nil {
			t.Fatal(err)
		}
		if err := c.publish(t, mqttacl.TelemetryTopic("other", devC), false, []byte(marker)); err != nil {
			t.Fatal(err)
		}
		for _, watcher := range []*mqttClient{op, opOther} {
			eventually(t, 5*time.Second, "marker "+marker, func() error {
				if !received(watcher, marker) {
					return fmt.Errorf("not received")
				}
				return nil
			})
		}
	}
	time.Sleep(300 * time.Millisecond) // for a straggler out of order in paho's handler goroutines
	for _, p := range pubs {
		for _, w := range []struct {
			name string
			m    *mqttClient
		}{{"acme operator", op}, {"other operator", opOther}, {"device B", b}, {"device C", c}} {
			for _, m := range w.m.messages() {
				if string(m.Payload()) == string(p.payload) {
					t.Errorf("%s's publish on %s was delivered to %s", p.who, p.topic, w.name)
				}
			}
		}
	}

	// Nothing forged was retained: a new subscriber gets no retained
	// status for B or C (neither ever connected a status of its own) …
	late := cp.operatorMQTT("operator-late")
	lateOther := cp.operatorMQTTAs(otherKey, "operator-other-late")
	late.subscribe(t, mqttacl.TenantFilter("acme"))
	lateOther.subscribe(t, mqttacl.TenantFilter("other"))
	time.Sleep(500 * time.Millisecond)
	for _, m := range append(late.messages(), lateOther.messages()...) {
		if m.Retained() && strings.HasSuffix(m.Topic(), "/status") {
			t.Errorf("retained %s on %s", m.Payload(), m.Topic())
		}
	}
	// … and the control plane's presence was not fooled.
	for _, d := range cp.devices() {
		if d.Online {
			t.Errorf("device %s is online: no agent ever published its status", d.ID)
		}
	}
	cp.shutdown()
}

// received reports whether m received a message with payload p.
func received(m *mqttClient, p string) bool {
	for _, msg := range m.messages() {
		if string(msg.Payload()) == p {
			return true
		}
	}
	return false
}
