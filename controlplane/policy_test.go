package controlplane_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tensorguard/tensorguardflow/controlplane/controlplanetest"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// TestPolicyPushNotifiesDevices: a policy push announces the new revision
// on cmd/policy of every enrolled device of the fleet (and of no other
// fleet), over the embedded broker.
func TestPolicyPushNotifiesDevices(t *testing.T) {
	h := controlplanetest.Start(t)
	enroll := func(fleetID string) (string, paho.Client) {
		var tok struct{ Token string }
		api(t, h, http.MethodPost, "/api/v1/fleets/"+fleetID+"/enrollment-tokens", h.AdminKey, map[string]any{}, &tok)
		key, csr := newKeyAndCSR(t)
		var enrolled wire.EnrollResponse
		api(t, h, http.MethodPost, "/api/v1/enroll", "", wire.EnrollRequest{Token: tok.Token, CSR: csr, TPMKind: wire.TPMKindNone}, &enrolled)
		return enrolled.DeviceID, mqttConnect(t, h, tlsCert(t, enrolled.CertificatePEM, key), enrolled.DeviceID, nil)
	}
	var edge, other struct{ ID string }
	api(t, h, http.MethodPost, "/api/v1/fleets", h.AdminKey, map[string]any{"name": "edge", "policy": map[string]any{"allow_no_tpm": true}}, &edge)
	api(t, h, http.MethodPost, "/api/v1/fleets", h.AdminKey, map[string]any{"name": "other", "policy": map[string]any{"allow_no_tpm": true}}, &other)

	got := make(chan string, 8)
	subscribe := func(device string, c paho.Client) {
		tok := c.Subscribe(mqttacl.CmdTopic(h.Tenant, device, "policy"), 1, func(_ paho.Client, m paho.Message) {
			var n wire.PolicyNotify
			if err := json.Unmarshal(m.Payload(), &n); err != nil || n.Schema != wire.PolicyNotifySchema {
				t.Errorf("notification %s: %v", m.Payload(), err)
			}
			got <- device + "@" + string(rune('0'+n.Revision))
		})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
	}
	d1, c1 := enroll(edge.ID)
	d2, c2 := enroll(edge.ID)
	d3, c3 := enroll(other.ID)
	subscribe(d1, c1)
	subscribe(d2, c2)
	subscribe(d3, c3)

	var pushed struct{ Revision int64 }
	api(t, h, http.MethodPost, "/api/v1/fleets/edge/policy", h.AdminKey,
		map[string]any{"files": map[string]string{"install.rego": "package tensorguard.install\n\nallow := true\n"}}, &pushed)
	if pushed.Revision != 1 {
		t.Fatalf("revision %d", pushed.Revision)
	}
	want := map[string]bool{d1 + "@1": true, d2 + "@1": true}
	for len(want) > 0 {
		select {
		case n := <-got:
			if !want[n] {
				t.Errorf("unexpected notification %s (other fleet's device is %s)", n, d3)
			}
			delete(want, n)
		case <-time.After(10 * time.Second):
			t.Fatalf("notifications missing: %v", want)
		}
	}
	select {
	case n := <-got:
		t.Errorf("extra notification %s", n)
	case <-time.After(200 * time.Millisecond):
	}
}
