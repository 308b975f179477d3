package integration

import (
	"fmt"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// TestRolloutWavesAndSelfTestFailures rolls real ONNX models out to a
// fleet of 20 real agents (simulator TPMs, attested every 5 s) in three
// waves (10, 50, 100 %).
//
// Success path: every device ends on 1.0.0, committed and serving; the
// rollout completed once (status, event, audit); and each wave started
// only after the previous one met its success threshold — from the job
// timestamps of the database and from the events an operator's MQTT
// credential received.
//
// Failure path: six devices (30 %) fail every self-test (the agents are
// the faultinject build; the test turns the fault on for these devices
// through their TG_FAULT_DIR): four in the second wave, two in the third. Rolling out 1.1.0 pauses at the failure threshold (30 %) within
// the second wave, so the third wave never gets the package; the failed
// devices report 1.0.0 installed and still serve it. Resuming releases the
// third wave, and its two failures (6 of 20) pause the rollout again.
func TestRolloutWavesAndSelfTestFailures(t *testing.T) {
	e := newRolloutEnv(t, 5*time.Second, cpOptions{})
	cp := e.cp
	cp.tgctl("fleet", "create", "edge", "--allow-simulated-tpm")
	op := cp.operatorMQTT("rollout-watcher")
	if q := op.subscribe(t, mqttacl.RolloutsFilter(cp.tenant)); q > 1 {
		t.Fatalf("operator subscription to rollouts refused: %#x", q)
	}
	dirs := faultDirs(t, 20)
	agents := e.startAgents("edge", 20, agentSpec{firstSeed: 500, bin: bins.faultAgent,
		env: func(i int) []string { return []string{"TG_FAULT_DIR=" + dirs[i]} }})
	dirOf := map[*fleetAgent]string{}
	for i, a := range agents {
		dirOf[a] = dirs[i]
	}
	byID := map[string]*fleetAgent{}
	for _, a := range agents {
		byID[a.id] = a
	}

	// ---- 1.0.0 to everyone ----
	good := onnxmodel.NewMLP(4, 16, 3, 1)
	e.push(e.pack(pkgSpec{version: "1.0.0", model: good}))
	r := cp.createRollout("mnist@1.0.0", "edge", "--waves", "10,50,100", "--success-threshold", "75", "--device-timeout", "5m")
	r = cp.waitRollout(r.ID, 3*time.Minute, "rollout of 1.0.0 completed", func(r client.Rollout) error {
		if r.State != client.RolloutCompleted {
			return fmt.Errorf("counts %+v", r.Counts)
		}
		return nil
	})
	if c := r.Counts; c.Total != 20 || c.Succeeded != 20 {
		t.Fatalf("completed rollout counts %+v", c)
	}
	wantSizes := []int{2, 8, 10} // ⌈10 %·20⌉, ⌈50 %·20⌉−2, the rest
	for i, w := range r.WaveStatus {
		if w.Size != wantSizes[i] || w.Succeeded != w.Size {
			t.Errorf("wave %d: %+v, want %d devices succeeded", i+1, w, wantSizes[i])
		}
	}
	waveOf := map[string]int{}
	for _, j := range r.Jobs {
		waveOf[j.DeviceID] = j.Wave
		if j.State != "succeeded" || j.Attempt != 1 || j.InstalledName != "mnist" || j.InstalledVersion != "1.0.0" || byID[j.DeviceID] == nil {
			t.Errorf("job %+v", j)
		}
	}
	waitServing(t, agents, "mnist", "1.0.0")
	// Success threshold 75 %: wave 2 needs both devices of wave 1, wave 3
	// six of the eight of wave 2.
	checkWaveGates(t, r, []int{2, 6})
	var evs []client.RolloutEvent
	eventually(t, 10*time.Second, "every job's success and the completion as events", func() error {
		evs = rolloutEvents(t, op, cp.tenant, r.ID)
		succeeded := 0
		for _, ev := range evs {
			if ev.Type == "job" && ev.JobState == "succeeded" {
				succeeded++
			}
		}
		if countEvents(evs, "completed") == 0 || succeeded < 20 {
			return fmt.Errorf("%d events, %d jobs succeeded, %d completed", len(evs), succeeded, countEvents(evs, "completed"))
		}
		return nil
	})
	checkWaveEvents(t, evs, waveOf, []int{2, 6})
	if n := countEvents(evs, "completed"); n != 1 {
		t.Errorf("%d completed events", n)
	}
	if n := countAudit(cp.audit("rollout.complete"), r.ID); n != 1 {
		t.Errorf("%d rollout.complete audit entries for %s, want 1", n, r.ID)
	}

	// ---- 30 % of the devices fail their self-test ----
	byWave := [3][]*fleetAgent{}
	for _, a := range agents {
		byWave[waveOf[a.id]] = append(byWave[waveOf[a.id]], a)
	}
	faulty := append(slices.Clone(byWave[1][:4]), byWave[2][:2]...)
	isFaulty := map[string]bool{}
	for _, a := range faulty {
		isFaulty[a.id] = true
		writeFile(t, selfTestFailFile(dirOf[a]), "")
	}

	bad := onnxmodel.NewMLP(4, 16, 3, 2)
	e.push(e.pack(pkgSpec{version: "1.1.0", model: bad}))
	r = cp.createRollout("mnist@1.1.0", "edge", "--waves", "10,50,100", "--success-threshold", "75",
		"--failure-threshold", "30", "--device-timeout", "5m")
	r = cp.waitRollout(r.ID, 2*time.Minute, "paused at the failure threshold, wave 2 done", func(r client.Rollout) error {
		if r.State != client.RolloutPaused || len(r.WaveStatus) != 3 || r.WaveStatus[1].InFlight > 0 {
			return fmt.Errorf("waves %+v", r.WaveStatus)
		}
		return nil
	})
	for _, j := range r.Jobs {
		if j.Wave != waveOf[j.DeviceID] {
			t.Fatalf("device %s is in wave %d of the second rollout, %d of the first: the ranking changed", j.DeviceID, j.Wave+1, waveOf[j.DeviceID]+1)
		}
	}
	if r.Reason != "FAILURE_THRESHOLD" || !regexp.MustCompile(`^[34] of 10 devices failed \(failure threshold 30%\)$`).MatchString(r.Detail) {
		t.Errorf("paused: %s %q", r.Reason, r.Detail)
	}
	if w := r.WaveStatus; w[0].Succeeded != 2 || w[1].Succeeded != 4 || w[1].Failed != 4 || w[2].Pending != 10 || w[2].InFlight != 0 {
		t.Errorf("waves after the pause: %+v", w)
	}
	t.Logf("1.1.0 paused: %s %q, waves %+v", r.Reason, r.Detail, r.WaveStatus)
	checkSelfTestOutcomes(t, r, isFaulty, 10)
	var failedAgents, okAgents []*fleetAgent
	for _, a := range append(slices.Clone(byWave[0]), byWave[1]...) {
		if isFaulty[a.id] {
			failedAgents = append(failedAgents, a)
		} else {
			okAgents = append(okAgents, a)
		}
	}
	waitServing(t, failedAgents, "mnist", "1.0.0") // rolled back on the device: the previous model serves
	waitServing(t, okAgents, "mnist", "1.1.0")
	waitServing(t, byWave[2], "mnist", "1.0.0") // never asked

	// Resuming acknowledges the four failures and moves on to wave 3; its
	// two faulty devices make 6 of 20: the threshold again.
	cp.tgctl("rollout", "resume", r.ID)
	r = cp.waitRollout(r.ID, 2*time.Minute, "paused again, every job done", func(r client.Rollout) error {
		if r.State != client.RolloutPaused || r.CurrentWave != 2 {
			return fmt.Errorf("wave %d", r.CurrentWave+1)
		}
		return jobsDone(r)
	})
	if r.Reason != "FAILURE_THRESHOLD" || r.Detail != "6 of 20 devices failed (failure threshold 30%)" ||
		r.Counts.Succeeded != 14 || r.Counts.Failed != 6 {
		t.Errorf("paused again: %s %q %+v", r.Reason, r.Detail, r.Counts)
	}
	t.Logf("1.1.0 paused again after the resume: %s %q", r.Reason, r.Detail)
	checkSelfTestOutcomes(t, r, isFaulty, 20)
	var stillOld, upgraded []*fleetAgent
	for _, a := range agents {
		if isFaulty[a.id] {
			stillOld = append(stillOld, a)
		} else {
			upgraded = append(upgraded, a)
		}
	}
	waitServing(t, stillOld, "mnist", "1.0.0")
	waitServing(t, upgraded, "mnist", "1.1.0")
	if n := countAudit(cp.audit("rollout.pause"), r.ID); n != 2 {
		t.Errorf("%d rollout.pause audit entries for %s, want 2", n, r.ID)
	}
	stopAll(t, agents)
	cp.shutdown()
}

// checkSelfTestOutcomes: of the rollout's released jobs (want of them),
// those of faulty devices failed their self-test with 1.0.0 still
// installed, the others committed 1.1.0.
func checkSelfTestOutcomes(t *testing.T, r client.Rollout, faulty map[string]bool, want int) {
	t.Helper()
	released := 0
	for _, j := range r.Jobs {
		if j.State == "pending" {
			continue
		}
		released++
		switch {
		case faulty[j.DeviceID]:
			if j.State != "failed" || j.Reason != wire.JobReasonSelfTest || j.ReportState != wire.JobFailed || j.InstalledVersion != "1.0.0" {
				t.Errorf("faulty device's job %+v", j)
			}
		case j.State != "succeeded" || j.InstalledVersion != "1.1.0":
			t.Errorf("job %+v", j)
		}
	}
	if released != want {
		t.Errorf("%d jobs released, want %d", released, want)
	}
}

// checkWaveGates checks, from the job timestamps the control plane
// recorded, that wave i+1 was released only after need[i] devices of wave
// i had succeeded.
func checkWaveGates(t *testing.T, r client.Rollout, need []int) {
	t.Helper()
	for w := 1; w < len(r.Waves); w++ {
		var start time.Time
		for _, j := range r.Jobs {
			if j.Wave == w && j.NotifiedAt != nil && (start.IsZero() || j.NotifiedAt.Before(start)) {
				start = *j.NotifiedAt
			}
		}
		if start.IsZero() {
			t.Errorf("no job of wave %d was released", w+1)
			continue
		}
		done := 0
		for _, j := range r.Jobs {
			if j.Wave == w-1 && j.State == "succeeded" && j.FinishedAt != nil && !j.FinishedAt.After(start) {
				done++
			}
		}
		if done < need[w-1] {
			t.Errorf("wave %d released at %s with %d devices of wave %d succeeded, want %d", w+1, start.Format(time.RFC3339Nano), done, w, need[w-1])
		}
	}
}

// checkWaveEvents checks the same from the events: one wave_started per
// later wave, in order, each after need[i] succeeded jobs of the wave
// before and before any job of its own wave was notified.
func checkWaveEvents(t *testing.T, evs []client.RolloutEvent, waveOf map[string]int, need []int) {
	t.Helper()
	started := map[int]time.Time{}
	for _, ev := range evs {
		if ev.Type != "wave_started" {
			continue
		}
		if _, dup := started[ev.Wave]; dup {
			t.Errorf("wave %d started twice", ev.Wave+1)
		}
		started[ev.Wave] = ev.At
	}
	for w := 1; w <= len(need); w++ {
		at, ok := started[w]
		if !ok {
			t.Errorf("no wave_started event for wave %d", w+1)
			continue
		}
		if prev, ok := started[w-1]; ok && at.Before(prev) {
			t.Errorf("wave %d started before wave %d", w+1, w)
		}
		succeeded := 0
		for _, ev := range evs {
			if ev.Type != "job" {
				continue
			}
			wave, ok := waveOf[ev.Device]
			switch {
			case !ok:
				t.Errorf("event about unknown device %q", ev.Device)
			case wave == w-1 && ev.JobState == "succeeded" && !ev.At.After(at):
				succeeded++
			case wave == w && ev.JobState == "notified" && ev.At.Before(at):
				t.Errorf("device %s of wave %d notified at %s, before its wave started at %s", ev.Device, w+1, ev.At, at)
			}
		}
		if succeeded < need[w-1] {
			t.Errorf("wave %d started at %s after %d succeeded jobs of wave %d, want %d", w+1, at, succeeded, w, need[w-1])
		}
		t.Logf("wave %d started after %d devices of wave %d succeeded (threshold: %d)", w+1, succeeded, w, need[w-1])
	}
}

func countEvents(evs []client.RolloutEvent, typ string) int {
	n := 0
	for _, ev := range evs {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

func countAudit(entries []auditEntry, target string) int {
	n := 0
	for _, e := range entries {
		if e.Target == target {
			n++
		}
	}
	return n
}
