package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// TestAgentWithoutTPM runs tg-agent with tpm: {none: true} against the real
// control plane. Into a fleet that allows devices without a TPM it enrolls
// in one request, is listed with tpm_kind none and online, and survives a
// restart as the same device without enrolling again. Into a fleet that
// does not, `tg-agent enroll` exits 2 saying so, and the token stays
// unspent. Revoking the device replaces its retained status with offline,
// marked revoked, for any watcher that subscribes afterwards.
func TestAgentWithoutTPM(t *testing.T) {
	cp := startControlPlane(t, cpOptions{})
	cp.tgctl("fleet", "create", "open", "--allow-no-tpm")
	cp.tgctl("fleet", "create", "strict")

	// Refused by a fleet without allow_no_tpm; the token is not spent.
	token, tokenID := cp.token("strict")
	refused := newAgent(t, cp, "no-tpm-in-strict-fleet", token, "{none: true}")
	out, code := refused.enroll()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	for _, want := range []string{"without a TPM", "fleet strict does not allow devices without a TPM", "--allow-no-tpm"} {
		if code != 2 || !strings.Contains(last, want) {
			t.Fatalf("tg-agent enroll into strict exited %d, want 2 with a last line containing %q:\n%s", code, want, out)
		}
	}
	t.Logf("refusal: %s", last)
	var toks []client.EnrollmentToken
	cp.tgctlJSON(&toks, "token", "list", "strict")
	if len(toks) != 1 || toks[0].ID != tokenID || toks[0].State != "active" {
		t.Fatalf("tokens of strict after the refusal: %+v", toks)
	}

	// Admitted by a fleet with allow_no_tpm.
	token, _ = cp.token("open")
	a := newAgent(t, cp, "no-tpm", token, "{none: true}")
	a.start()
	st := a.waitConnected(0)
	dev := st.DeviceID
	var device client.Device
	eventually(t, 10*time.Second, "device list: tpm_kind none, online", func() error {
		devs := cp.devices()
		if len(devs) != 1 || devs[0].ID != dev || devs[0].TPMKind != "none" || !devs[0].Online || devs[0].EKFingerprint != "" || !devs[0].KEMKey {
			return fmt.Errorf("devices %+v", devs)
		}
		device = devs[0]
		return nil
	})
	if d := cp.enrollAudit()[dev]; d.TPMKind != "none" || d.EKCertVerified {
		t.Fatalf("audit of the enrollment: %+v", d)
	}

	// A restart keeps the identity (the key is in the state file).
	a.proc.stop(t, 15*time.Second)
	a.start()
	st = a.waitConnected(st.Session)
	if st.DeviceID != dev {
		t.Fatalf("restarted as %s, was %s", st.DeviceID, dev)
	}
	if strings.Contains(a.proc.log.String(), "enrolling") {
		t.Fatal("the restarted agent enrolled again")
	}
	if devs := cp.devices(); len(devs) != 1 || devs[0].ID != device.ID || devs[0].CertSerial == "" {
		t.Fatalf("devices after the restart: %+v", devs)
	}

	// Revocation: a watcher subscribing afterwards sees the device offline
	// and revoked, with the session it was online in.
	topic := mqttacl.StatusTopic(cp.tenant, dev)
	retained := func(name string) (wire.Status, error) {
		op := cp.operatorMQTT(name)
		op.subscribe(t, topic)
		var s wire.Status
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			for _, m := range op.messages() {
				if m.Topic() == topic && m.Retained() {
					return s, json.Unmarshal(m.Payload(), &s)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		return s, fmt.Errorf("no retained status on %s", topic)
	}
	if s, err := retained("watcher-before"); err != nil || s.State != wire.StateOnline || s.Session != st.Session {
		t.Fatalf("before revocation a watcher sees %+v, %v; want online session %d", s, err, st.Session)
	}
	cp.tgctl("device", "revoke", dev)
	n := 0
	eventually(t, 10*time.Second, "a fresh watcher sees the device offline and revoked", func() error {
		n++
		s, err := retained(fmt.Sprintf("watcher-after-%d", n))
		switch {
		case err != nil:
			return err
		case s.State != wire.StateOffline:
			t.Fatalf("after revocation a watcher sees %+v", s)
		case !s.Revoked || s.Session != st.Session || s.Device != dev:
			return fmt.Errorf("status %+v", s)
		}
		return nil
	})
	eventually(t, 10*time.Second, "device list: revoked and offline", func() error {
		if devs := cp.devices(); len(devs) != 1 || devs[0].Status != "revoked" || devs[0].Online {
			return fmt.Errorf("devices %+v", devs)
		}
		return nil
	})

	a.proc.stop(t, 15*time.Second)
	cp.shutdown()
}
