package integration

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// TestRolloutExternalMosquitto runs a rollout through the real binaries
// with an external mosquitto: the control plane takes the devices' job
// reports over its connection to mosquitto (not in process), the devices
// (enrolled over the wire, without a TPM) take their notifications and
// publish their reports through mosquitto's ACL, and an operator's
// credential sees the events and the retained status there.
func TestRolloutExternalMosquitto(t *testing.T) {
	f := mqStartFleet(t)
	cp := f.cp
	cp.tgctl("fleet", "create", "open", "--allow-no-tpm")

	pushTestPackage(t, cp, "ml", "yolo", "2.0.0")

	// The operator watches every rollout of the tenant through mosquitto.
	watcher := cp.operatorMQTT("rollout-watcher")
	if q := watcher.subscribe(t, mqttacl.RolloutsFilter(cp.tenant)); q > 1 {
		t.Fatalf("operator subscription to rollouts refused: %#x", q)
	}

	type device struct {
		id   string
		cert tls.Certificate
		mqtt *mqttClient
	}
	var devs []device
	for i := range 2 {
		token, _ := cp.token("open")
		id, cert := enrollNoTPM(t, cp, token)
		m, err := dialMQTT(t, cp.mqttAddr, cp.caPool, cert, id)
		if err != nil {
			t.Fatalf("device %d: %v", i, err)
		}
		if q := m.subscribe(t, mqttacl.CmdTopic(cp.tenant, id, "job")); q > 1 {
			t.Fatalf("device %d: cmd/job subscription refused", i)
		}
		devs = append(devs, device{id, cert, m})
	}

	var r client.Rollout
	cp.tgctlJSON(&r, "rollout", "create", "--package", "yolo@2.0.0", "--fleet", "open", "--waves", "50,100", "--device-timeout", "1m")

	// Each device answers its notification as an agent would.
	answered := map[string]bool{}
	eventually(t, 60*time.Second, "both devices notified, and answered", func() error {
		for _, d := range devs {
			if answered[d.id] {
				continue
			}
			for _, m := range d.mqtt.messages() {
				var n wire.JobNotify
				if m.Topic() != mqttacl.CmdTopic(cp.tenant, d.id, "job") || json.Unmarshal(m.Payload(), &n) != nil || n.Schema != wire.JobNotifySchema {
					continue
				}
				resp, err := cp.httpClient(&d.cert).Get(cp.baseURL + "/api/v1/device/jobs/" + n.JobID)
				if err != nil {
					return err
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var j wire.Job
				if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &j) != nil || j.Package.Name != "yolo" || j.Attempt != 1 {
					t.Fatalf("device %s: job %s: %s %s", d.id, n.JobID, resp.Status, raw)
				}
				for _, state := range []string{wire.JobReceived, wire.JobCommitted} {
					rep, _ := json.Marshal(wire.JobReport{Schema: wire.JobReportSchema, MsgID: j.ID + "/" + state, JobID: j.ID, RolloutID: j.RolloutID,
						Attempt: j.Attempt, State: state, InstalledName: "yolo", InstalledVersion: "2.0.0", At: time.Now()})
					if err := d.mqtt.publish(t, mqttacl.JobTopic(cp.tenant, d.id, j.ID), false, rep); err != nil {
						return fmt.Errorf("device %s: publish report: %w", d.id, err)
					}
				}
				answered[d.id] = true
			}
		}
		if len(answered) != len(devs) {
			return fmt.Errorf("answered %v", answered)
		}
		return nil
	})
	eventually(t, 30*time.Second, "rollout completed", func() error {
		var cur client.Rollout
		cp.tgctlJSON(&cur, "rollout", "status", r.ID)
		if cur.State != client.RolloutCompleted || cur.Counts.Succeeded != 2 {
			return fmt.Errorf("rollout %s: %+v", cur.State, cur.Counts)
		}
		return nil
	})
	eventually(t, 10*time.Second, "events and the retained status through mosquitto", func() error {
		var completed, status bool
		for _, m := range watcher.messages() {
			switch m.Topic() {
			case mqttacl.RolloutEventsTopic(cp.tenant, r.ID):
				var ev client.RolloutEvent
				if json.Unmarshal(m.Payload(), &ev) == nil && ev.Type == "completed" {
					completed = true
				}
			case mqttacl.RolloutStatusTopic(cp.tenant, r.ID):
				status = strings.Contains(string(m.Payload()), `"state":"completed"`)
			}
		}
		if !completed || !status {
			return fmt.Errorf("completed event %v, completed status %v", completed, status)
		}
		return nil
	})
}

// pushTestPackage makes a package as a publisher would — pins a signer
// as publisher (once per name), packs a model to the control plane's
// recipient key — pushes it with tgctl and returns its id.
func pushTestPackage(t *testing.T, cp *cpProc, publisher, name, version string) string {
	t.Helper()
	dir := t.TempDir()
	signer, err := tgsp.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "signer.pub"), string(signer.Public().MarshalPEM()))
	cp.tgctl("publisher", "add", publisher, "--key", filepath.Join(dir, "signer.pub"))
	cp.tgctl("package", "recipient", "--out", filepath.Join(dir, "cp.pub"))
	rpem, err := os.ReadFile(filepath.Join(dir, "cp.pub"))
	if err != nil {
		t.Fatal(err)
	}
	recipient, err := tgsp.ParseRecipientPublicKey(rpem)
	if err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dir, "model")
	writeFile(t, filepath.Join(model, "model.onnx"), "an onnx graph")
	var pkg bytes.Buffer
	if _, err := tgsp.Pack(&pkg, model, tgsp.PackOptions{Name: name, Version: version, Signer: signer,
		Recipients: []*tgsp.RecipientPublicKey{recipient}}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "model.tgsp"), pkg.String())
	var p client.Package
	cp.tgctlJSON(&p, "package", "push", filepath.Join(dir, "model.tgsp"))
	if p.ID == "" {
		t.Fatalf("package push: %+v", p)
	}
	return p.ID
}
