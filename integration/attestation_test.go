package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmdevtest"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// startAttestingControlPlane is startControlPlane with attestation.interval
// set: the harness writes no attestation key, so the configuration file is
// extended and the control plane restarted on the same ports and data.
func startAttestingControlPlane(t *testing.T, opts cpOptions, interval time.Duration) *cpProc {
	t.Helper()
	cp := startControlPlane(t, opts)
	args := cp.proc.cmd.Args
	i := slices.Index(args, "--config")
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("no --config in %q", args)
	}
	f, err := os.OpenFile(args[i+1], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(f, "attestation: {interval: %s}\n", interval)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	cp.restart()
	return cp
}

// restart stops the control plane with SIGTERM and serves again with the
// same arguments (ports, configuration, data).
func (cp *cpProc) restart() {
	cp.t.Helper()
	args := cp.proc.cmd.Args[1:]
	cp.shutdown()
	var lastLog string
	for attempt := 0; attempt < 10; attempt++ {
		p := startProc(cp.t, "tg-controlplane", cp.env, bins.controlplane, args...)
		if err := waitReady(cp.plainURL, p); err != nil {
			lastLog = p.log.String()
			if p.exited() && strings.Contains(lastLog, "address already in use") {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			cp.t.Fatalf("control plane not ready after restart: %v\n%s", err, lastLog)
		}
		cp.proc = p
		return
	}
	cp.t.Fatalf("control plane did not restart on its ports:\n%s", lastLog)
}

// verdicts is `tgctl fleet watch FLEET --once -o json`: the current
// (retained) verdict of every device of the fleet, by device id.
func (cp *cpProc) verdicts(fleet string) (map[string]wire.Verdict, error) {
	cp.t.Helper()
	out, errOut, code := cp.tgctlAs(cp.adminKey, "fleet", "watch", fleet, "--once", "-o", "json")
	if code != 0 {
		return nil, fmt.Errorf("tgctl fleet watch --once: exit %d: %s", code, errOut)
	}
	res := map[string]wire.Verdict{}
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var v wire.Verdict
		if err := dec.Decode(&v); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("tgctl fleet watch -o json: %v\n%s", err, out)
		}
		res[v.Device] = v
	}
	return res, nil
}

// waitVerdict waits until the fleet's current verdict of device satisfies
// ok and returns it.
func (cp *cpProc) waitVerdict(fleet, device string, timeout time.Duration, what string, ok func(wire.Verdict) bool) wire.Verdict {
	cp.t.Helper()
	var got wire.Verdict
	eventually(cp.t, timeout, what, func() error {
		vs, err := cp.verdicts(fleet)
		if err != nil {
			return err
		}
		v, found := vs[device]
		if !found {
			return fmt.Errorf("no verdict of %s (have %+v)", device, vs)
		}
		if !ok(v) {
			return fmt.Errorf("verdict %+v", v)
		}
		got = v
		return nil
	})
	return got
}

// opVerdicts decodes the verdicts of device an operator's subscription
// received, in order.
func opVerdicts(t *testing.T, op *mqttClient, device string) []wire.Verdict {
	t.Helper()
	var out []wire.Verdict
	for _, m := range op.messages() {
		if !strings.HasSuffix(m.Topic(), "/attestation/"+device) || len(m.Payload()) == 0 {
			continue
		}
		var v wire.Verdict
		if err := json.Unmarshal(m.Payload(), &v); err != nil || v.Schema != wire.VerdictSchema {
			t.Fatalf("verdict on %s: %v: %q", m.Topic(), err, m.Payload())
		}
		out = append(out, v)
	}
	return out
}

func hasReason(v wire.Verdict, code string, pcr int) bool {
	for _, r := range v.Reasons {
		if r.Code == code && (pcr < 0 || (r.PCR != nil && *r.PCR == pcr)) {
			return true
		}
	}
	return false
}

// extendPCR extends a SHA-256 PCR of a running swtpm with tpm2-tools'
// tpm2_pcrextend, as an operator (or malware) on the device would. swtpm
// serves one client at a time (a second connection waits until the first
// closes), which is why the agent connects per command; and tpm2-tss's
// swtpm TCTI wants the control channel on TCP, so the command TCTI bridges
// to the command port with bash's /dev/tcp.
func extendPCR(t *testing.T, swtpmAddr string, pcr int, digestHex string) {
	t.Helper()
	if _, err := exec.LookPath("tpm2_pcrextend"); err != nil {
		tpmdevtest.Missing(t, "tpm2_pcrextend (Debian package tpm2-tools)")
	}
	port := swtpmAddr[strings.LastIndexByte(swtpmAddr, ':')+1:]
	tcti := fmt.Sprintf("cmd:bash -c 'exec 3<>/dev/tcp/127.0.0.1/%s; cat <&3 & p=$!; cat >&3; kill $p'", port)
	arg := fmt.Sprintf("%d:sha256=%s", pcr, digestHex)
	cmd := exec.Command("tpm2_pcrextend", "-T", tcti, arg)
	cmd.Env = testEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tpm2_pcrextend %s: %v\n%s", arg, err, out.String())
		}
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("tpm2_pcrextend %s: no answer from swtpm within 15s (is another client connected?)", arg)
	}
}

// attestFleet creates fleet "edge" admitting software TPMs, enrolls one
// agent on a fresh swtpm and waits for it to connect.
func attestFleet(t *testing.T, cp *cpProc, tpm *swtpmProc) (client.Fleet, *agentProcess, agentStatus) {
	t.Helper()
	var fleet client.Fleet
	cp.tgctlJSON(&fleet, "fleet", "create", "edge", "--allow-simulated-tpm")
	if !fleet.Policy.AllowSimulatedTPM {
		t.Fatalf("fleet policy %+v", fleet.Policy)
	}
	token, _ := cp.token("edge")
	a := newAgent(t, cp, "agent", token, fmt.Sprintf("{swtpm: %q}", tpm.addr))
	a.start()
	st := a.waitConnected(0)
	if st.FleetID != fleet.ID || !strings.HasPrefix(st.DeviceID, "dev-") {
		t.Fatalf("agent status %+v", st)
	}
	return fleet, a, st
}

func deviceByID(t *testing.T, cp *cpProc, id string) client.Device {
	t.Helper()
	for _, d := range cp.devices() {
		if d.ID == id {
			return d
		}
	}
	t.Fatalf("device %s not listed", id)
	return client.Device{}
}

// TestAttestationSWTPM: a control plane challenging every second, a fleet
// admitting software TPMs and one agent on its own swtpm (EK certificate
// from a swtpm_localca the control plane trusts). The device is attested
// trusted (tgctl fleet watch, and retained for an operator's MQTT
// subscription); after PCR 7 is extended on its swtpm it is untrusted
// (PCR_POLICY, PCR 7) and quarantined; after its agent stops it turns
// stale (NO_ANSWER).
func TestAttestationSWTPM(t *testing.T) {
	const interval = time.Second
	ca := newSWTPMCA(t)
	tpm := startSWTPM(t, ca, "swtpm")
	cp := startAttestingControlPlane(t, cpOptions{ekRoots: []string{ca.rootFile}, ekIntermediates: []string{ca.intermediateFile}}, interval)
	fleet, agent, st := attestFleet(t, cp, tpm)
	dev := st.DeviceID

	start := time.Now()
	trusted := cp.waitVerdict(fleet.Name, dev, 20*time.Second, "verdict trusted", func(v wire.Verdict) bool {
		return v.State == wire.VerdictTrusted
	})
	t.Logf("trusted %s after connecting", time.Since(start).Round(time.Millisecond))
	if trusted.Tenant != cp.tenant || trusted.Fleet != fleet.ID || trusted.TPMKind != "swtpm" || trusted.PCRDigest == "" || len(trusted.Reasons) != 0 {
		t.Fatalf("trusted verdict %+v", trusted)
	}
	if d := deviceByID(t, cp, dev); d.Quarantined {
		t.Fatalf("trusted device quarantined: %+v", d)
	}

	// The verdict is retained: an operator who subscribes now gets it.
	op := cp.operatorMQTT("operator-attest")
	filter := mqttacl.FleetAttestationFilter(cp.tenant, fleet.ID)
	if qos := op.subscribe(t, filter); qos > 1 {
		t.Fatalf("operator subscription to %s refused (0x%x)", filter, qos)
	}
	eventually(t, 10*time.Second, "operator gets the retained trusted verdict", func() error {
		for _, m := range op.messages() {
			var v wire.Verdict
			if m.Retained() && strings.HasSuffix(m.Topic(), "/"+dev) && json.Unmarshal(m.Payload(), &v) == nil && v.State == wire.VerdictTrusted {
				return nil
			}
		}
		return fmt.Errorf("messages %d", len(op.messages()))
	})

	// Extend PCR 7 (in the default selection 0–7) with tpm2_pcrextend while
	// the agent runs (it connects to swtpm per command, so the tool gets
	// its turn): untrusted within about one interval.
	extendPCR(t, tpm.addr, 7, strings.Repeat("ab", 32))
	start = time.Now()
	untrusted := cp.waitVerdict(fleet.Name, dev, 15*time.Second, "verdict untrusted (PCR_POLICY, PCR 7)", func(v wire.Verdict) bool {
		return v.State == wire.VerdictUntrusted
	})
	took := time.Since(start)
	t.Logf("untrusted %s after tpm2_pcrextend on the running device (interval %s)", took.Round(time.Millisecond), interval)
	if agent.proc.exited() {
		t.Fatal("the agent exited")
	}
	if !hasReason(untrusted, wire.ReasonPCRPolicy, 7) || untrusted.PCRDigest == "" || untrusted.PCRDigest == trusted.PCRDigest {
		t.Fatalf("untrusted verdict %+v (trusted digest %s)", untrusted, trusted.PCRDigest)
	}
	eventually(t, 10*time.Second, "device quarantined", func() error {
		if d := deviceByID(t, cp, dev); !d.Quarantined {
			return fmt.Errorf("device %+v", d)
		}
		return nil
	})

	// SIGTERM the agent: no answers, stale within about two intervals.
	agent.proc.stop(t, 15*time.Second)
	start = time.Now()
	stale := cp.waitVerdict(fleet.Name, dev, 15*time.Second, "verdict stale (NO_ANSWER)", func(v wire.Verdict) bool {
		return v.State == wire.VerdictStale
	})
	took = time.Since(start)
	t.Logf("stale %s after SIGTERM (interval %s)", took.Round(time.Millisecond), interval)
	if !hasReason(stale, wire.ReasonNoAnswer, -1) || stale.PCRDigest != untrusted.PCRDigest {
		t.Fatalf("stale verdict %+v", stale)
	}
	if took > 8*interval {
		t.Fatalf("stale only %s after SIGTERM with interval %s", took, interval)
	}
	if d := deviceByID(t, cp, dev); !d.Quarantined {
		t.Fatalf("stale device not quarantined: %+v", d)
	}

	// The operator saw every change live, and the history records them.
	eventually(t, 10*time.Second, "operator sees untrusted then stale", func() error {
		var states []string
		for _, v := range opVerdicts(t, op, dev) {
			if len(states) == 0 || states[len(states)-1] != v.State {
				states = append(states, v.State)
			}
		}
		iu := slices.Index(states, wire.VerdictUntrusted)
		if iu < 0 || !slices.Contains(states[iu:], wire.VerdictStale) {
			return fmt.Errorf("states %v", states)
		}
		return nil
	})
	var hist []client.AttestationRecord
	cp.tgctlJSON(&hist, "attestation", "history", dev)
	var states []string
	for _, r := range hist {
		states = append(states, r.State)
	}
	if len(hist) == 0 || hist[0].State != wire.VerdictStale || !slices.Contains(states, wire.VerdictUntrusted) || !slices.Contains(states, wire.VerdictTrusted) {
		t.Fatalf("attestation history (newest first): %v", states)
	}

	cp.shutdown()
}

// TestAttestationRebootSWTPM: swtpm restarted on its state (a power cycle:
// its reset count grows, PCRs start over) gives a trusted verdict with
// reboot true; and after a control-plane restart (the embedded broker keeps
// retained messages in memory only) a new subscriber gets the device's
// verdict again, republished by the attestation service.
func TestAttestationRebootSWTPM(t *testing.T) {
	const interval = 2 * time.Second
	ca := newSWTPMCA(t)
	tpm := startSWTPM(t, ca, "swtpm")
	cp := startAttestingControlPlane(t, cpOptions{ekRoots: []string{ca.rootFile}, ekIntermediates: []string{ca.intermediateFile}}, interval)
	fleet, agent, st := attestFleet(t, cp, tpm)
	dev := st.DeviceID
	first := cp.waitVerdict(fleet.Name, dev, 20*time.Second, "verdict trusted", func(v wire.Verdict) bool {
		return v.State == wire.VerdictTrusted
	})
	if first.Reboot {
		t.Fatalf("first verdict %+v says reboot", first)
	}
	op := cp.operatorMQTT("operator-reboot")
	op.subscribe(t, mqttacl.FleetAttestationFilter(cp.tenant, fleet.ID))

	// Power-cycle: the agent lets go of the TPM, swtpm restarts on the same
	// state directory and port, the agent comes back.
	agent.proc.stop(t, 15*time.Second)
	restartSWTPM(t, tpm)
	agent.start()
	agent.waitConnected(st.Session)
	start := time.Now()
	eventually(t, 20*time.Second, "trusted verdict with reboot", func() error {
		for _, v := range opVerdicts(t, op, dev) {
			if v.State == wire.VerdictTrusted && v.Reboot {
				return nil
			}
		}
		return fmt.Errorf("verdicts %+v", opVerdicts(t, op, dev))
	})
	t.Logf("trusted with reboot %s after the agent reconnected", time.Since(start).Round(time.Millisecond))
	for _, v := range opVerdicts(t, op, dev) {
		if v.State == wire.VerdictUntrusted {
			t.Fatalf("untrusted verdict around the reboot: %+v", v)
		}
	}
	cp.waitVerdict(fleet.Name, dev, 15*time.Second, "still trusted after the reboot", func(v wire.Verdict) bool {
		return v.State == wire.VerdictTrusted
	})
	var hist []client.AttestationRecord
	cp.tgctlJSON(&hist, "attestation", "history", dev)
	if !slices.ContainsFunc(hist, func(r client.AttestationRecord) bool { return r.State == wire.VerdictTrusted && r.Reboot }) {
		t.Fatalf("attestation history has no trusted reboot: %+v", hist)
	}

	// Control-plane restart with the agent stopped: the embedded broker's
	// retained store is gone with the process, and nobody answers; the
	// service publishes the stored verdict again from the database, so a
	// new subscriber still gets it, retained.
	last := cp.waitVerdict(fleet.Name, dev, 5*time.Second, "trusted before the restart", func(v wire.Verdict) bool {
		return v.State == wire.VerdictTrusted
	})
	agent.proc.stop(t, 15*time.Second)
	cp.restart()
	start = time.Now()
	eventually(t, 30*time.Second, "a new subscriber gets the stored verdict, retained, after the restart", func() error {
		// Subscribe again each time: what counts is what is retained.
		sub := cp.operatorMQTT(fmt.Sprintf("operator-probe-%d", time.Now().UnixNano()))
		defer sub.c.Disconnect(0)
		sub.subscribe(t, mqttacl.FleetAttestationFilter(cp.tenant, fleet.ID))
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			for _, m := range sub.messages() {
				var v wire.Verdict
				if m.Retained() && strings.HasSuffix(m.Topic(), "/"+dev) && json.Unmarshal(m.Payload(), &v) == nil &&
					v.PCRDigest == last.PCRDigest && !v.EvidenceAt.Before(last.EvidenceAt.Truncate(time.Microsecond)) {
					return nil
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		return errors.New("no retained verdict")
	})
	t.Logf("retained verdict %s after the control-plane restart", time.Since(start).Round(time.Millisecond))
	cp.shutdown()
}

// restartSWTPM stops swtpm with SIGTERM and starts it again with the same
// arguments: the same state directory and port.
func restartSWTPM(t *testing.T, s *swtpmProc) {
	t.Helper()
	args := s.proc.cmd.Args[1:]
	_ = s.proc.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.proc.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("swtpm did not stop on SIGTERM")
	}
	for attempt := 0; attempt < 20; attempt++ {
		p := startProc(t, s.proc.name, testEnv(), "swtpm", args...)
		deadline := time.Now().Add(5 * time.Second)
		for !p.exited() && time.Now().Before(deadline) {
			if c, err := net.DialTimeout("tcp", s.addr, 200*time.Millisecond); err == nil {
				_ = c.Close()
				s.proc = p
				t.Cleanup(func() {
					if !p.exited() {
						_ = p.cmd.Process.Signal(syscall.SIGTERM)
						select {
						case <-p.done:
						case <-time.After(5 * time.Second):
						}
					}
				})
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !p.exited() {
			p.kill(t)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("swtpm did not restart on %s", s.addr)
}

// TestAttestationOnFirstConnect: with the default 60 s interval, a newly
// enrolled agent gets its first verdict within seconds — the challenge
// sent at enrollment arrives before the agent subscribes, so the control
// plane challenges again when the device announces its connection — and
// not a minute later (key grants wait for a trusted verdict).
func TestAttestationOnFirstConnect(t *testing.T) {
	cp := startControlPlane(t, cpOptions{})
	cp.tgctl("fleet", "create", "edge", "--allow-simulated-tpm")
	token, _ := cp.token("edge")
	a := newAgent(t, cp, "agent", token, "{simulator: true, simulator_seed: 4711}")
	a.start()
	st := a.waitConnected(0)
	start := time.Now()
	v := cp.waitVerdict("edge", st.DeviceID, 30*time.Second, "a trusted verdict soon after connecting", func(v wire.Verdict) bool {
		return v.State == wire.VerdictTrusted
	})
	t.Logf("trusted %s after the agent connected (interval 60s)", time.Since(start).Round(time.Millisecond))
	if v.TPMKind != wire.TPMKindSimulated {
		t.Fatalf("verdict %+v", v)
	}
	a.proc.stop(t, 15*time.Second)
	cp.shutdown()
}
