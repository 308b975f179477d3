package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/testpg"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// TestFleetOfThreeSWTPM: the control plane as a process (SQLite, embedded
// broker) trusting one swtpm_localca as TPM manufacturer, and three agents
// each with its own swtpm manufactured by that CA, so every EK certificate
// is verified against the configured roots.
func TestFleetOfThreeSWTPM(t *testing.T) {
	ca := newSWTPMCA(t)
	tpms := make([]string, 3)
	for i := range tpms {
		// Sequentially: the first swtpm_setup creates the shared CA.
		tpms[i] = fmt.Sprintf("{swtpm: %q}", startSWTPM(t, ca, fmt.Sprintf("swtpm-%d", i)).addr)
	}
	cp := startControlPlane(t, cpOptions{ekRoots: []string{ca.rootFile}, ekIntermediates: []string{ca.intermediateFile}})
	runFleetOfThree(t, cp, tpms, "swtpm")
}

// TestFleetOfThreeSimulator: the same with the simulator TPM. It has no EK
// certificate; a fleet that allows simulated TPMs trusts its EK on first
// use, without enrollment.allow_ek_without_cert (which would extend that to
// hardware claims).
func TestFleetOfThreeSimulator(t *testing.T) {
	cp := startControlPlane(t, cpOptions{})
	runFleetOfThree(t, cp, simulatorTPMs(100, 3), "simulated")
}

// TestFleetOnPostgres: the same with the control plane's storage on
// PostgreSQL.
func TestFleetOnPostgres(t *testing.T) {
	dsn := testpg.Start(t)
	cp := startControlPlane(t, cpOptions{databaseURL: dsn})
	runFleetOfThree(t, cp, simulatorTPMs(200, 3), "simulated")
}

// simulatorTPMs returns n agent tpm settings with distinct fixed seeds, so
// each agent's TPM keys survive a restart as a hardware TPM's do.
func simulatorTPMs(firstSeed, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("{simulator: true, simulator_seed: %d}", firstSeed+i)
	}
	return out
}

// runFleetOfThree enrolls one agent per tpm setting into a fleet that
// admits software TPMs and checks, through tgctl and an operator's MQTT
// subscription, that all are enrolled and online; that a SIGKILLed agent
// is marked offline by its Will and comes back as the same device without
// enrolling again; and that everything shuts down cleanly.
func runFleetOfThree(t *testing.T, cp *cpProc, tpms []string, wantKind string) {
	var fleet client.Fleet
	cp.tgctlJSON(&fleet, "fleet", "create", "edge", "--allow-simulated-tpm")
	if !fleet.Policy.AllowSimulatedTPM {
		t.Fatalf("fleet policy %+v", fleet.Policy)
	}

	op := cp.operatorMQTT("operator-1")
	statusFilter := mqttacl.Prefix + "/" + cp.tenant + "/devices/+/status"
	if qos := op.subscribe(t, statusFilter); qos > 1 {
		t.Fatalf("operator subscription to %s refused (0x%x)", statusFilter, qos)
	}

	agents := make([]*agentProcess, len(tpms))
	for i, tpm := range tpms {
		token, _ := cp.token("edge")
		agents[i] = newAgent(t, cp, fmt.Sprintf("agent-%d", i), token, tpm)
		agents[i].start()
	}
	ids := map[string]int{}
	sessions := make([]uint64, len(agents))
	for i, a := range agents {
		st := a.waitConnected(0)
		if st.TenantID != cp.tenant || st.FleetID != fleet.ID || !strings.HasPrefix(st.DeviceID, "dev-") {
			t.Fatalf("%s status %+v", a.name, st)
		}
		if j, dup := ids[st.DeviceID]; dup {
			t.Fatalf("agents %d and %d are both %s", j, i, st.DeviceID)
		}
		ids[st.DeviceID], sessions[i] = i, st.Session
	}
	idOf := func(i int) string {
		for id, j := range ids {
			if j == i {
				return id
			}
		}
		return ""
	}

	// The operator's view through the API.
	wantOnline := func(online map[string]bool) func() error {
		return func() error {
			devs := cp.devices()
			if len(devs) != len(agents) {
				return fmt.Errorf("%d devices listed, want %d: %+v", len(devs), len(agents), devs)
			}
			for _, d := range devs {
				if _, ok := ids[d.ID]; !ok {
					return fmt.Errorf("unknown device %s listed", d.ID)
				}
				// kem_key: the agent sent its package decryption key with
				// its TPM evidence, and the control plane stored it.
				if d.TPMKind != wantKind || d.FleetID != fleet.ID || d.Status != "enrolled" || d.EKFingerprint == "" || !d.KEMKey {
					return fmt.Errorf("device %+v", d)
				}
				if d.Online != online[d.ID] {
					return fmt.Errorf("device %s online=%t, want %t", d.ID, d.Online, online[d.ID])
				}
			}
			return nil
		}
	}
	allOnline := map[string]bool{}
	for id := range ids {
		allOnline[id] = true
	}
	eventually(t, 10*time.Second, "device list: all online", wantOnline(allOnline))

	// The audit chain records each enrollment with what was proven: swtpm's
	// EK certificate verified against the configured roots; the
	// simulator's EK trusted on first use.
	enrolled := cp.enrollAudit()
	for id := range ids {
		d, ok := enrolled[id]
		if !ok || d.TPMKind != wantKind || d.EKCertVerified != (wantKind == "swtpm") {
			t.Fatalf("audit of %s's enrollment: %+v (present %t)", id, d, ok)
		}
	}

	// The operator's view over MQTT: the retained status of every device.
	wantStatus := func(want map[string]string, minSession map[string]uint64) func() error {
		return func() error {
			latest := latestStatus(t, op)
			for id, state := range want {
				st, ok := latest[id]
				if !ok || st.State != state || st.Session < minSession[id] {
					return fmt.Errorf("device %s: latest status %+v, want %s from session ≥ %d", id, st, state, minSession[id])
				}
			}
			return nil
		}
	}
	online := map[string]string{}
	minSess := map[string]uint64{}
	for id, i := range ids {
		online[id], minSess[id] = wire.StateOnline, sessions[i]
	}
	eventually(t, 10*time.Second, "operator sees every device online", wantStatus(online, minSess))
	// The status is retained: an operator who subscribes now gets it too.
	late := cp.operatorMQTT("operator-late")
	late.subscribe(t, statusFilter)
	eventually(t, 10*time.Second, "a late operator gets every retained online status", func() error {
		retained := map[string]bool{}
		for _, m := range late.messages() {
			var st wire.Status
			if m.Retained() && json.Unmarshal(m.Payload(), &st) == nil && st.State == wire.StateOnline {
				retained[st.Device] = true
			}
		}
		for id := range ids {
			if !retained[id] {
				return fmt.Errorf("no retained online status of %s (have %v)", id, retained)
			}
		}
		return nil
	})

	// SIGKILL agent 0: no goodbye; the broker publishes its Will.
	victim := agents[0]
	victimID := idOf(0)
	victim.proc.kill(t)
	offline := map[string]bool{}
	for id := range ids {
		offline[id] = id != victimID
	}
	eventually(t, 15*time.Second, "device list: killed agent offline", wantOnline(offline))
	eventually(t, 10*time.Second, "operator sees the Will", wantStatus(map[string]string{victimID: wire.StateOffline},
		map[string]uint64{victimID: sessions[0]}))

	// Restart: same identity from the state file and the TPM, no enrollment
	// (the token is spent: enrolling again would fail and exit 2).
	victim.start()
	st := victim.waitConnected(sessions[0])
	if st.DeviceID != victimID {
		t.Fatalf("restarted agent is %s, was %s", st.DeviceID, victimID)
	}
	if strings.Contains(victim.proc.log.String(), "enrolling") {
		t.Fatalf("restarted agent enrolled again")
	}
	eventually(t, 10*time.Second, "device list: restarted agent online, no new device", wantOnline(allOnline))
	eventually(t, 10*time.Second, "operator sees the new session online", wantStatus(map[string]string{victimID: wire.StateOnline},
		map[string]uint64{victimID: st.Session}))

	// Clean shutdown: each agent says goodbye (offline) and exits 0.
	for _, a := range agents {
		a.proc.stop(t, 15*time.Second)
	}
	eventually(t, 10*time.Second, "device list: all offline after SIGTERM", wantOnline(map[string]bool{}))
	cp.tgctl("audit", "verify")
	cp.shutdown()
}

// latestStatus folds the status messages op received into the latest
// status per device, as the control plane does.
func latestStatus(t *testing.T, op *mqttClient) map[string]wire.Status {
	t.Helper()
	out := map[string]wire.Status{}
	for _, m := range op.messages() {
		if !strings.HasSuffix(m.Topic(), "/status") {
			continue
		}
		var st wire.Status
		if err := json.Unmarshal(m.Payload(), &st); err != nil {
			t.Fatalf("status on %s: %v: %q", m.Topic(), err, m.Payload())
		}
		if st.Schema != wire.StatusSchema || !strings.HasSuffix(m.Topic(), "/devices/"+st.Device+"/status") {
			t.Fatalf("status on %s: %+v", m.Topic(), st)
		}
		out[st.Device] = wire.LatestStatus(out[st.Device], st)
	}
	return out
}
