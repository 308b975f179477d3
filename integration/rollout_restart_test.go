package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// TestRolloutSurvivesControlPlaneRestart: four real agents, two waves.
// The devices of wave 1 hold (fault hook) just before loading the model;
// the control plane stops (SIGTERM); while it is down they are let go, so
// they commit offline and their reports wait in their outboxes; the
// control plane starts again on the same data, takes the late reports,
// starts wave 2 and completes the rollout — once: every device has one
// job, received once and granted its key once; the rollout's status, its
// events and the audit show one completion.
func TestRolloutSurvivesControlPlaneRestart(t *testing.T) {
	e := newRolloutEnv(t, 5*time.Second, cpOptions{})
	cp := e.cp
	cp.tgctl("fleet", "create", "edge", "--allow-simulated-tpm")
	faults := t.TempDir() // one TG_FAULT_DIR for all four
	hold := holdFile(faults, "persisted:"+wire.JobInstalling)
	agents := e.startAgents("edge", 4, agentSpec{firstSeed: 1000, bin: bins.faultAgent,
		env: func(int) []string { return []string{"TG_FAULT_DIR=" + faults} }})
	p := e.push(e.pack(pkgSpec{version: "1.0.0"}))

	writeFile(t, hold, "")
	r := cp.createRollout("mnist@1.0.0", "edge", "--waves", "50,100", "--device-timeout", "5m")
	r = cp.waitRollout(r.ID, 60*time.Second, "wave 1 holding before the model loads", func(r client.Rollout) error {
		n := 0
		for _, j := range r.Jobs {
			if j.Wave == 0 && j.ReportState == wire.JobKeyGrant {
				n++
			}
		}
		if n != 2 || r.CurrentWave != 0 {
			return fmt.Errorf("%d of wave 1 at key_grant, wave %d", n, r.CurrentWave+1)
		}
		return nil
	})
	var wave1 []*fleetAgent
	for _, a := range agents {
		if jobOf(t, r, a.id).Wave == 0 {
			wave1 = append(wave1, a)
		}
	}

	cp.shutdown()
	stopped := time.Now()
	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	waitServing(t, wave1, "mnist", "1.0.0") // committed with no control plane
	cp.serveAgain()
	op := cp.operatorMQTT("restart-watcher")
	if q := op.subscribe(t, mqttacl.RolloutsFilter(cp.tenant)); q > 1 {
		t.Fatalf("operator subscription to rollouts refused: %#x", q)
	}

	r = cp.waitRollout(r.ID, 2*time.Minute, "rollout completed after the restart", func(r client.Rollout) error {
		if r.State != client.RolloutCompleted {
			return fmt.Errorf("counts %+v", r.Counts)
		}
		return nil
	})
	waitServing(t, agents, "mnist", "1.0.0")
	if c := r.Counts; c.Total != 4 || c.Succeeded != 4 || len(r.Jobs) != 4 {
		t.Errorf("counts %+v, %d jobs", c, len(r.Jobs))
	}
	jobIDs := map[string]string{} // job id → device
	for _, j := range r.Jobs {
		if j.State != "succeeded" || j.Attempt != 1 || j.Kind != "install" {
			t.Errorf("job %+v", j)
		}
		if _, dup := jobIDs[j.JobID]; dup {
			t.Errorf("job %s listed twice", j.JobID)
		}
		jobIDs[j.JobID] = j.DeviceID
		// Wave 1 committed while no control plane ran: its final reports
		// were taken by the restarted one.
		if j.Wave == 0 && (j.ReportAt == nil || !j.ReportAt.After(stopped)) {
			t.Errorf("wave 1 job %s: last report taken at %v, before the restart (%s)", j.JobID, j.ReportAt, stopped)
		}
	}
	for _, a := range agents {
		j := jobOf(t, r, a.id)
		if n := strings.Count(a.proc.log.String(), `"job received"`); n != 1 {
			t.Errorf("%s received %d jobs, want 1", a.id, n)
		}
		if !strings.Contains(a.proc.log.String(), j.JobID) {
			t.Errorf("%s never worked on its job %s", a.id, j.JobID)
		}
	}
	grants := map[string]int{}
	for _, g := range cp.audit("key.grant") {
		var d struct {
			JobID     string `json:"job_id"`
			PackageID string `json:"package_id"`
		}
		if err := json.Unmarshal(g.Details, &d); err != nil || d.PackageID != p.ID || jobIDs[d.JobID] == "" {
			t.Errorf("key.grant %s (%v)", g.Details, err)
			continue
		}
		grants[d.JobID]++
	}
	for id, dev := range jobIDs {
		if grants[id] != 1 {
			t.Errorf("job %s of %s: %d key grants, want 1", id, dev, grants[id])
		}
	}
	if n := countAudit(cp.audit("rollout.complete"), r.ID); n != 1 {
		t.Errorf("%d rollout.complete audit entries for %s, want 1", n, r.ID)
	}
	if n := strings.Count(cp.proc.log.String(), "rollout completed"); n != 1 {
		t.Errorf("the restarted control plane logged %d completions", n)
	}
	eventually(t, 10*time.Second, "completed event and retained status", func() error {
		completed, status := 0, false
		for _, m := range op.messages() {
			switch m.Topic() {
			case mqttacl.RolloutEventsTopic(cp.tenant, r.ID):
				var ev client.RolloutEvent
				if json.Unmarshal(m.Payload(), &ev) == nil && ev.Type == "completed" {
					completed++
				}
			case mqttacl.RolloutStatusTopic(cp.tenant, r.ID):
				status = strings.Contains(string(m.Payload()), `"state":"completed"`)
			}
		}
		if completed != 1 || !status {
			return fmt.Errorf("%d completed events, completed status %t", completed, status)
		}
		return nil
	})
	var list []client.Rollout
	cp.tgctlJSON(&list, "rollout", "list", "--fleet", "edge")
	if len(list) != 1 || list[0].ID != r.ID || list[0].State != client.RolloutCompleted {
		t.Errorf("rollout list %+v", list)
	}
	stopAll(t, agents)
	cp.shutdown()
}

// serveAgain starts `tg-controlplane serve` again with the arguments (ports,
// configuration, data) of the stopped process (restart, without its stop).
func (cp *cpProc) serveAgain() {
	cp.t.Helper()
	if !cp.proc.exited() {
		cp.t.Fatal("the control plane is still running")
	}
	args := cp.proc.cmd.Args[1:]
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
	cp.t.Fatalf("control plane did not start again on its ports:\n%s", lastLog)
}
