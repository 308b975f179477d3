package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane"
	"github.com/tensorguard/tensorguardflow/controlplane/controlplanetest"
)

// buildAgent returns the tg-agent that TestMain (harness_test.go) built.
func buildAgent(t *testing.T) string {
	t.Helper()
	if bins.agent == "" {
		t.Fatal("tg-agent was not built: TestMain did not run")
	}
	return bins.agent
}

// zeroOf returns the zero value of the third parameter of f, so the test can
// build control-plane store values whose package it may not import.
func zeroOf[A, B, C, R any](func(A, B, C) R) C {
	var z C
	return z
}

func zeroOf2[A, B, C, R1, R2 any](func(A, B, C) (R1, R2)) C {
	var z C
	return z
}

type agentStatus struct {
	Enrolled  bool   `json:"enrolled"`
	DeviceID  string `json:"device_id"`
	TenantID  string `json:"tenant_id"`
	FleetID   string `json:"fleet_id"`
	Running   bool   `json:"running"`
	Connected bool   `json:"connected"`
	Session   uint64 `json:"session"`
}

func readAgentStatus(t *testing.T, bin, config string) (agentStatus, error) {
	t.Helper()
	out, err := exec.Command(bin, "status", "--config", config, "-o", "json").Output()
	if err != nil {
		return agentStatus{}, err
	}
	var st agentStatus
	err = json.Unmarshal(out, &st)
	return st, err
}

// agentProc is one tg-agent run process.
type agentProc struct {
	cmd  *exec.Cmd
	done chan error
	log  *lockedWriter
}

func startAgent(t *testing.T, bin, config string) *agentProc {
	t.Helper()
	p := &agentProc{cmd: exec.Command(bin, "run", "--config", config), done: make(chan error, 1), log: &lockedWriter{}}
	p.cmd.Stderr = p.log
	p.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=", "WATCHDOG_USEC=", "TG_ENVIRONMENT=")
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// lockedWriter collects a process's stderr; the exec copy goroutine writes
// while the test reads.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func waitConnected(t *testing.T, bin, config string, p *agentProc, minSession uint64) agentStatus {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for {
		st, err := readAgentStatus(t, bin, config)
		if err == nil && st.Running && st.Connected && st.Session > minSession {
			return st
		}
		select {
		case err := <-p.done:
			t.Fatalf("tg-agent exited early: %v\n%s", err, p.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tg-agent not connected within 40s (last status %+v, %v)\n%s", st, err, p.log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestAgentEnrollsAndSurvivesSIGKILL runs the real tg-agent binary against
// an in-process control plane (real enrollment verifier, CA, embedded mTLS
// broker) with the simulator TPM on a fixed seed, so the TPM's keys outlive
// the process as a hardware TPM's do: the agent enrolls and connects; after
// SIGKILL and a restart it is the same device, with no second enrollment
// (the token is single-use, so a second one would fail and the agent would
// exit 2); SIGTERM then stops it cleanly.
func TestAgentEnrollsAndSurvivesSIGKILL(t *testing.T) {
	bin := buildAgent(t)
	h := controlplanetest.Start(t, controlplanetest.WithConfig(func(c *controlplane.Config) {
		// The simulator carries no EK certificate.
		c.Enrollment.AllowEKWithoutCert = true
	}))
	policy := zeroOf(h.CreateFleet)
	policy.AllowSimulatedTPM = true
	fleet := h.CreateFleet(t, "edge", policy)
	token := h.CreateToken(t, fleet.ID, time.Hour)

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "agent.yaml")
	yaml := fmt.Sprintf(`version: 1
server_url: %s
ca_hash: %s
token_file: %s
state_path: %s
tpm: {simulator: true, simulator_seed: 7}
mqtt: {url: "mqtts://%s"}
telemetry: {interval: 1s}
shutdown_timeout: 10s
log: {level: debug}
`, h.BaseURL, h.CAHash, tokenFile, filepath.Join(dir, "state", "agent.db"), h.MQTTAddr)
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	p1 := startAgent(t, bin, config)
	st1 := waitConnected(t, bin, config, p1, 0)
	if st1.TenantID != h.Tenant || st1.FleetID != fleet.ID || !strings.HasPrefix(st1.DeviceID, "dev-") {
		t.Fatalf("status %+v", st1)
	}
	listDevices := func() []string {
		devs, err := h.Store().ListDevices(context.Background(), h.Tenant, zeroOf2(h.Store().ListDevices))
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range devs {
			ids = append(ids, d.ID)
		}
		return ids
	}
	if ids := listDevices(); len(ids) != 1 || ids[0] != st1.DeviceID {
		t.Fatalf("control plane devices %v, agent is %s", ids, st1.DeviceID)
	}

	// SIGKILL: no goodbye, no clean close of the state file.
	if err := p1.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p1.done

	p2 := startAgent(t, bin, config)
	st2 := waitConnected(t, bin, config, p2, st1.Session)
	if st2.DeviceID != st1.DeviceID {
		t.Fatalf("restarted as %s, was %s", st2.DeviceID, st1.DeviceID)
	}
	if ids := listDevices(); len(ids) != 1 {
		t.Fatalf("control plane has %d devices after restart: %v", len(ids), ids)
	}
	if strings.Contains(p2.log.String(), "enrolling") {
		t.Fatalf("restarted agent enrolled again:\n%s", p2.log)
	}

	// SIGTERM: clean shutdown within the deadline, exit 0.
	if err := p2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p2.done:
		if err != nil {
			t.Fatalf("tg-agent exited with %v after SIGTERM\n%s", err, p2.log)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("tg-agent did not stop within 20s of SIGTERM\n%s", p2.log)
	}
	if st, err := readAgentStatus(t, bin, config); err != nil || st.Running || st.DeviceID != st1.DeviceID {
		t.Fatalf("status after stop: %+v %v", st, err)
	}

	// The used token, on a fresh state file, is refused: exit 2, one line.
	cmd := exec.Command(bin, "enroll", "--server", h.BaseURL, "--ca-hash", h.CAHash, "--token-file", tokenFile,
		"--config", config)
	cmd.Env = append(os.Environ(), "TG_ENVIRONMENT=")
	// Another state file: override via a copy of the config.
	cfg2 := filepath.Join(dir, "agent2.yaml")
	y2 := strings.Replace(yaml, filepath.Join(dir, "state", "agent.db"), filepath.Join(dir, "state2", "agent.db"), 1)
	y2 = strings.Replace(y2, "simulator_seed: 7", "simulator_seed: 8", 1)
	if err := os.WriteFile(cfg2, []byte(y2), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Args[len(cmd.Args)-1] = cfg2
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("enroll with a used token: %v\n%s", err, out)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); !strings.Contains(lines[len(lines)-1], "already used") {
		t.Fatalf("enroll with a used token says:\n%s", out)
	}
}
