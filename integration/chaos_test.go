package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxruntimetest"
	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/testpg"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// chaosAgent is a fleet agent of the chaos test: the faultinject build with
// a TG_FAULT_DIR of its own (to hold it at a checkpoint), run inside a
// network namespace when ns is set.
type chaosAgent struct {
	*fleetAgent
	faults string
	ns     string
}

func (a *chaosAgent) start() {
	a.t.Helper()
	env := testEnv("TG_FAULT_DIR=" + a.faults)
	if a.ns == "" {
		a.proc = startProc(a.t, a.name, env, bins.faultAgent, "run", "--config", a.config)
		return
	}
	// ip netns exec enters the namespace and execs the agent: same pid.
	a.proc = startProc(a.t, a.name, env, "ip", "netns", "exec", a.ns, bins.faultAgent, "run", "--config", a.config)
}

func (a *chaosAgent) hold(point string)    { writeFile(a.t, holdFile(a.faults, point), "") }
func (a *chaosAgent) release(point string) { _ = os.Remove(holdFile(a.faults, point)) }

// infer asks the agent's local inference API (KServe v2 on its Unix
// socket) and returns the version of the model that answered.
func (a *chaosAgent) infer() (string, error) {
	api := unixHTTP(filepath.Join(filepath.Dir(a.state), "inference.sock"))
	defer api.CloseIdleConnections()
	code, out, err := v2Infer(api, "mnist", map[string]any{"inputs": []any{map[string]any{
		"name": onnxmodel.MLPInput, "shape": []int{1, 4}, "datatype": "FP32", "data": []float32{0.25, -0.5, 1, 2}}}})
	if err != nil {
		return "", err
	}
	if code != 200 {
		return "", fmt.Errorf("inference: %d %v", code, out)
	}
	return fmt.Sprint(out["model_version"]), nil
}

// chaos is the shared state of TestChaos's phases.
type chaos struct {
	t      *testing.T
	e      *rolloutEnv
	f      *chaosFleet
	agents []*chaosAgent
	anchor string // the audit chain's head after the last check
}

// TestChaos runs one fleet through five faults, each in the middle of a
// rollout, against real processes: a control plane on PostgreSQL with an
// external mosquitto, four agents (the faultinject build, holding at a
// checkpoint when the test says so) with real ONNX models — one in a
// network namespace of its own, one with its state on a small tmpfs. The
// faults, one rollout each:
//
//  1. mosquitto SIGKILLed while every device is mid-install, and started
//     again after the devices committed offline;
//  2. the control plane SIGKILLed while the first wave waits for its key
//     grants (unlike TestRolloutSurvivesControlPlaneRestart: no clean
//     shutdown, on PostgreSQL, and the devices' key-grant requests meet the
//     dead server and are retried);
//  3. one agent's network cut (its link down) just before its key grant,
//     then restored;
//  4. one agent's state disk full: the install cannot store the package,
//     so the job ends refused (INTERNAL; final by docs/rollouts.md) while
//     the agent keeps running and serving its previous model; after the
//     space is freed, a new rollout for that device converges;
//  5. PostgreSQL restarted while every device's final report is on its way.
//
// After each: the rollout converged (every device on the target version,
// its final report stored), every agent's outbox drained (nothing the
// broker acknowledged lost on the way to the store), every device answers
// inference with the target version and is trusted, and the audit chain
// verifies and still reaches the head checked after the previous phase.
func TestChaos(t *testing.T) {
	chaosRequireRoot(t)
	lib := onnxruntimetest.Library(t)
	pg := testpg.Own(t)
	n := newChaosNet(t)
	f := startChaosFleet(t, pg, n, 5*time.Second)
	cp := f.cp
	e := &rolloutEnv{t: t, cp: cp, dir: t.TempDir(), lib: lib}
	e.signer = e.newSigner("ml")
	cp.tgctl("publisher", "add", "ml", "--key", e.signer+".pub")
	e.cpPub = filepath.Join(e.dir, "cp.pub")
	cp.tgctl("package", "recipient", "--out", e.cpPub)
	cp.tgctl("fleet", "create", "edge", "--allow-simulated-tpm")
	c := &chaos{t: t, e: e, f: f}

	// Agents 0 and 1 plain, 2 in the namespace, 3 on a small disk.
	const netAgent, diskAgent = 2, 3
	diskDir := filepath.Join(t.TempDir(), "disk")
	chaosTmpfs(t, diskDir, 8<<20)
	for i := range 4 {
		token, _ := cp.token("edge")
		a := &chaosAgent{faults: t.TempDir()}
		a.fleetAgent = &fleetAgent{agentProcess: newAgent(t, cp, fmt.Sprintf("agent-%d", i), token,
			fmt.Sprintf("{simulator: true, simulator_seed: %d}", 5000+i))}
		appendFile(t, a.config, fmt.Sprintf("install: {onnxruntime_library: %q, onnxruntime_threads: 1}\n", lib))
		switch i {
		case netAgent:
			a.ns = n.ns
		case diskAgent:
			b, err := os.ReadFile(a.config)
			if err != nil {
				t.Fatal(err)
			}
			a.state = filepath.Join(diskDir, "agent.db")
			writeFile(t, a.config, strings.Replace(string(b), "state_path: ", "state_path: "+a.state+"\n#", 1))
		}
		a.start()
		c.agents = append(c.agents, a)
	}
	ids := make([]string, len(c.agents))
	for i, a := range c.agents {
		a.id = a.waitConnected(0).DeviceID
		ids[i] = a.id
	}
	e.waitTrusted("edge", ids...)
	cp.tgctl("device", "label", c.agents[diskAgent].id, "disk=small")
	c.anchor = c.verifyAudit()

	c.phase("broker killed", func() { c.brokerKilled("1.0.0") })
	c.phase("control plane killed", func() { c.controlPlaneKilled("2.0.0") })
	c.phase("network cut", func() { c.networkCut(c.agents[netAgent], "3.0.0") })
	c.phase("disk full", func() { c.diskFull(c.agents[diskAgent], "3.0.0", "4.0.0") })
	c.phase("postgres restarted", func() { c.postgresRestarted("5.0.0") })

	all := make([]*fleetAgent, len(c.agents))
	for i, a := range c.agents {
		all[i] = a.fleetAgent
	}
	stopAll(t, all)
	cp.shutdown()
	f.mosquitto.stop()
	pg.Stop()
}

func (c *chaos) phase(name string, fn func()) {
	c.t.Helper()
	start := time.Now()
	c.t.Logf("---- phase: %s", name)
	fn()
	c.t.Logf("---- phase %s passed in %v", name, time.Since(start).Round(100*time.Millisecond))
}

// push packs and pushes version (a distinct model per version).
func (c *chaos) push(version string, pad int) {
	c.t.Helper()
	seed := uint64(0)
	for _, ch := range version {
		seed = seed*31 + uint64(ch)
	}
	c.e.push(c.e.pack(pkgSpec{version: version, model: onnxmodel.NewMLP(4, 16, 3, seed), pad: pad}))
}

// waitReportState waits until the jobs of agents in rollout id last
// reported state.
func (c *chaos) waitReportState(id string, agents []*chaosAgent, state string) client.Rollout {
	c.t.Helper()
	return c.e.cp.waitRollout(id, 60*time.Second, "devices holding after "+state, func(r client.Rollout) error {
		for _, a := range agents {
			j, ok := findJob(r, a.id)
			if !ok || j.ReportState != state {
				return fmt.Errorf("%s: job %+v", a.name, j)
			}
		}
		return nil
	})
}

// converged checks the end of a phase: rollout id completed with every
// listed device's job succeeded on version, its final report stored;
// every agent running, its outbox drained, answering inference with the
// version it should serve (want, by agent) and trusted; the audit chain
// verifying up to the previous anchor.
func (c *chaos) converged(id, version string, agents []*chaosAgent, want map[*chaosAgent]string) client.Rollout {
	c.t.Helper()
	cp := c.e.cp
	r := cp.waitRollout(id, 90*time.Second, "rollout of "+version+" completed", func(r client.Rollout) error {
		if r.State != client.RolloutCompleted {
			return fmt.Errorf("counts %+v", r.Counts)
		}
		return nil
	})
	for _, a := range agents {
		j := jobOf(c.t, r, a.id)
		if j.State != "succeeded" || j.ReportState != wire.JobCommitted || j.ReportAt == nil ||
			j.InstalledName != "mnist" || j.InstalledVersion != version {
			c.t.Errorf("%s: job %+v, want succeeded with a stored committed report of %s", a.name, j, version)
		}
	}
	c.fleetHealthy(want)
	return r
}

// fleetHealthy checks every agent: running, connected, outbox empty and
// nothing dropped, serving and answering with its version, trusted; and
// the audit chain.
func (c *chaos) fleetHealthy(want map[*chaosAgent]string) {
	c.t.Helper()
	ids := make([]string, 0, len(c.agents))
	for _, a := range c.agents {
		ids = append(ids, a.id)
		v := want[a]
		eventually(c.t, 60*time.Second, a.name+" healthy on "+v, func() error {
			if a.proc.exited() {
				c.t.Fatalf("%s exited: %v", a.name, a.proc.err)
			}
			st, err := mqAgentStatusOf(a.agentProcess)
			switch {
			case err != nil:
				return err
			case !st.Running || !st.Connected:
				return fmt.Errorf("status %+v", st)
			case st.OutboxDropped != 0:
				c.t.Fatalf("%s: outbox dropped %d entries", a.name, st.OutboxDropped)
			case st.OutboxPending > 1: // a heartbeat may be just queued
				return fmt.Errorf("outbox pending %d", st.OutboxPending)
			}
			if err := a.serves("mnist", v); err != nil {
				return err
			}
			got, err := a.infer()
			if err != nil {
				return err
			}
			if got != v {
				return fmt.Errorf("inference answered by %s", got)
			}
			return nil
		})
	}
	c.e.waitTrusted("edge", ids...)
	c.anchor = c.verifyAudit()
}

// verifyAudit runs `tgctl audit verify` (against the previous head, when
// there is one) and returns the new head.
func (c *chaos) verifyAudit() string {
	c.t.Helper()
	args := []string{"audit", "verify"}
	if c.anchor != "" {
		args = append(args, "--anchor", c.anchor)
	}
	var res struct {
		OK       bool   `json:"ok"`
		Entries  uint64 `json:"entries"`
		Head     string `json:"head"`
		Anchored bool   `json:"anchored"`
	}
	c.e.cp.tgctlJSON(&res, args...)
	if !res.OK || res.Head == "" || (c.anchor != "" && !res.Anchored) {
		c.t.Fatalf("audit verify (anchor %q): %+v", c.anchor, res)
	}
	return res.Head
}

func (c *chaos) all(version string) map[*chaosAgent]string {
	m := map[*chaosAgent]string{}
	for _, a := range c.agents {
		m[a] = version
	}
	return m
}

// brokerKilled: every device holds after its key grant; mosquitto is
// SIGKILLed (it saves nothing); the devices install and commit with no
// broker, their reports waiting in their outboxes; mosquitto starts again
// and the reports reach the control plane.
func (c *chaos) brokerKilled(version string) {
	t, cp, b := c.t, c.e.cp, c.f.mosquitto
	c.push(version, 0)
	point := "persisted:" + wire.JobInstalling
	for _, a := range c.agents {
		a.hold(point)
	}
	r := cp.createRollout("mnist@"+version, "edge", "--device-timeout", "5m")
	c.waitReportState(r.ID, c.agents, wire.JobKeyGrant)
	b.proc.kill(t)
	for _, a := range c.agents {
		a.release(point)
	}
	fas := make([]*fleetAgent, len(c.agents))
	for i, a := range c.agents {
		fas[i] = a.fleetAgent
	}
	waitServing(t, fas, "mnist", version)
	for _, a := range c.agents {
		st, err := mqAgentStatusOf(a.agentProcess)
		if err != nil || st.Connected || st.OutboxPending == 0 {
			t.Fatalf("%s committed with the broker down: %+v %v (want disconnected, reports queued)", a.name, st, err)
		}
	}
	if err := b.start(); err != nil {
		t.Fatal(err)
	}
	c.converged(r.ID, version, c.agents, c.all(version))
}

// controlPlaneKilled: two waves; the first wave holds before its key
// grant; the control plane is SIGKILLed; released, the first wave's grant
// requests fail against the dead server and are retried; the control
// plane starts again, grants, and the rollout completes — each job once,
// each key granted once.
func (c *chaos) controlPlaneKilled(version string) {
	t, cp := c.t, c.e.cp
	c.push(version, 0)
	point := "persisted:" + wire.JobKeyGrant
	for _, a := range c.agents {
		a.hold(point)
	}
	r := cp.createRollout("mnist@"+version, "edge", "--waves", "50,100", "--device-timeout", "5m")
	var wave1 []*chaosAgent
	r = cp.waitRollout(r.ID, 60*time.Second, "wave 1 holding before its key grant", func(r client.Rollout) error {
		wave1 = wave1[:0]
		for _, a := range c.agents {
			if j, ok := findJob(r, a.id); ok && j.Wave == 0 && j.ReportState == wire.JobPolicy {
				wave1 = append(wave1, a)
			}
		}
		if len(wave1) != 2 || r.CurrentWave != 0 {
			return fmt.Errorf("%d of wave 1 at policy, wave %d", len(wave1), r.CurrentWave+1)
		}
		return nil
	})
	killedLog := cp.proc.log.String()
	cp.proc.kill(t)
	before := make([]int, len(wave1))
	for i, a := range wave1 {
		before[i] = strings.Count(a.proc.log.String(), "key grant request failed")
	}
	for _, a := range c.agents {
		a.release(point)
	}
	eventually(t, 30*time.Second, "wave 1's key-grant requests fail against the dead control plane", func() error {
		for i, a := range wave1 {
			if strings.Count(a.proc.log.String(), "key grant request failed") == before[i] {
				return fmt.Errorf("%s has not tried yet", a.name)
			}
		}
		return nil
	})
	if err := c.f.serve(); err != nil {
		t.Fatal(err)
	}
	r = c.converged(r.ID, version, c.agents, c.all(version))
	jobIDs := map[string]string{}
	for _, j := range r.Jobs {
		if j.Attempt != 1 {
			t.Errorf("job %s of %s: attempt %d, want 1", j.JobID, j.DeviceID, j.Attempt)
		}
		jobIDs[j.JobID] = j.DeviceID
	}
	grants := map[string]int{}
	for _, g := range cp.audit("key.grant") {
		var d struct {
			JobID string `json:"job_id"`
		}
		if json.Unmarshal(g.Details, &d) == nil && jobIDs[d.JobID] != "" {
			grants[d.JobID]++
		}
	}
	for id, dev := range jobIDs {
		if grants[id] != 1 {
			t.Errorf("job %s of %s: %d key grants, want 1", id, dev, grants[id])
		}
	}
	if n := countAudit(cp.audit("rollout.complete"), r.ID); n != 1 {
		t.Errorf("%d rollout.complete audit entries for %s, want 1", n, r.ID)
	}
	for line := range strings.Lines(killedLog) {
		if strings.Contains(line, "rollout completed") && strings.Contains(line, r.ID) {
			t.Errorf("the rollout completed before the control plane was killed: %s", line)
		}
	}
}

// networkCut: the namespaced agent holds before its key grant; its link
// goes down; released, its grant requests fail; the control plane sees it
// go offline while the others finish; the link comes back and the device
// finishes too.
func (c *chaos) networkCut(victim *chaosAgent, version string) {
	t, cp, n := c.t, c.e.cp, c.f.net
	c.push(version, 0)
	point := "persisted:" + wire.JobKeyGrant
	victim.hold(point)
	r := cp.createRollout("mnist@"+version, "edge", "--device-timeout", "5m")
	c.waitReportState(r.ID, []*chaosAgent{victim}, wire.JobPolicy)
	if !n.reachable(cp.mqttAddr) {
		t.Fatalf("the namespace cannot reach %s before the cut", cp.mqttAddr)
	}
	n.cut(t)
	if n.reachable(cp.mqttAddr) {
		t.Fatalf("the namespace still reaches %s after the cut", cp.mqttAddr)
	}
	before := strings.Count(victim.proc.log.String(), "key grant request failed")
	victim.release(point)
	var others []*chaosAgent
	for _, a := range c.agents {
		if a != victim {
			others = append(others, a)
		}
	}
	cp.waitRollout(r.ID, 60*time.Second, "the others done, the victim offline and its grant failing", func(r client.Rollout) error {
		for _, a := range others {
			if j := jobOf(t, r, a.id); j.State != "succeeded" {
				return fmt.Errorf("%s: %s", a.name, j.State)
			}
		}
		if strings.Count(victim.proc.log.String(), "key grant request failed") == before {
			return errors.New("the victim has not tried its key grant yet")
		}
		for _, d := range cp.devices() {
			if d.ID == victim.id && d.Online {
				return errors.New("the victim is still listed online")
			}
		}
		if j := jobOf(t, r, victim.id); wire.JobTerminal(j.ReportState) {
			t.Fatalf("the victim's job ended during the cut: %+v", j)
		}
		return nil
	})
	n.restore(t)
	c.converged(r.ID, version, c.agents, c.all(version))
	t.Logf("network cut for %v", n.upAgain.Sub(n.cutAt).Round(100*time.Millisecond))
}

// diskFull: the disk agent's state disk is filled so that the package
// cannot be stored. docs/packages.md: a failure of the device's own disk
// ends the job refused (INTERNAL) — final, docs/rollouts.md — and changes
// nothing: the agent keeps running and serving its model. The rollout
// (failure threshold 100, so it does not pause) completes with that one
// job refused and the rest succeeded. Once space is freed, the operator's
// retry — a new rollout for that device (label disk=small) — converges.
func (c *chaos) diskFull(victim *chaosAgent, old, version string) {
	t, cp := c.t, c.e.cp
	const pad = 1 << 20
	c.push(version, pad)
	filler := filepath.Join(filepath.Dir(victim.state), "filler")
	fillTo(t, filler, pad/4)
	t.Logf("state disk: %d bytes free for a package of more than %d", freeBytes(t, filler), pad)
	r := cp.createRollout("mnist@"+version, "edge", "--device-timeout", "5m", "--failure-threshold", "100")
	r = cp.waitRollout(r.ID, 90*time.Second, "rollout of "+version+" completed", func(r client.Rollout) error {
		if r.State != client.RolloutCompleted {
			return fmt.Errorf("counts %+v", r.Counts)
		}
		return nil
	})
	want := c.all(version)
	want[victim] = old
	for _, a := range c.agents {
		j := jobOf(t, r, a.id)
		if a == victim {
			if j.State != "refused" || j.Reason != wire.JobReasonInternal || j.ReportState != wire.JobRefused ||
				j.InstalledVersion != old || !strings.Contains(j.Detail, "no space left") {
				t.Errorf("disk-full job %+v, want refused %s (no space left) with %s still installed", j, wire.JobReasonInternal, old)
			}
			continue
		}
		if j.State != "succeeded" || j.InstalledVersion != version {
			t.Errorf("%s: job %+v", a.name, j)
		}
	}
	// Still running, reporting and serving its model with the disk full.
	c.fleetHealthy(want)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	retry := cp.createRollout("mnist@"+version, "edge", "--selector", "disk=small", "--device-timeout", "5m")
	retry = c.converged(retry.ID, version, []*chaosAgent{victim}, c.all(version))
	if len(retry.Jobs) != 1 {
		t.Errorf("the retry rollout has %d jobs, want 1 (the disk-full device)", len(retry.Jobs))
	}
}

// postgresRestarted: every device holds after its key grant; PostgreSQL
// stops; released, the devices commit and their final reports reach the
// control plane (the broker acknowledges them: the outboxes drain) while
// it cannot store them; PostgreSQL starts again and the rollout must
// still converge: no final report may be lost.
func (c *chaos) postgresRestarted(version string) {
	t, cp := c.t, c.e.cp
	c.push(version, 0)
	point := "persisted:" + wire.JobInstalling
	for _, a := range c.agents {
		a.hold(point)
	}
	r := cp.createRollout("mnist@"+version, "edge", "--device-timeout", "5m")
	c.waitReportState(r.ID, c.agents, wire.JobKeyGrant)
	notApplied := func() int { return strings.Count(cp.proc.log.String(), `"job report not applied"`) }
	lostBefore := notApplied()
	c.f.pg.Stop()
	for _, a := range c.agents {
		a.release(point)
	}
	eventually(t, 60*time.Second, "every device committed and its reports acknowledged by the broker", func() error {
		for _, a := range c.agents {
			if err := a.serves("mnist", version); err != nil {
				return err
			}
			st, err := mqAgentStatusOf(a.agentProcess)
			if err != nil {
				return err
			}
			if !st.Connected || st.OutboxPending > 1 {
				return fmt.Errorf("%s: %+v", a.name, st)
			}
		}
		return nil
	})
	// The chaos was real: the control plane took reports it could not
	// store. Only asking the devices again (the engine's takeover when it
	// leads again on the restarted database) brings them back.
	if notApplied() == lostBefore {
		t.Fatalf("the control plane lost no report while PostgreSQL was down: the phase tested nothing")
	}
	c.f.pg.Start()
	c.converged(r.ID, version, c.agents, c.all(version))
}
