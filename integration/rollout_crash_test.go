package integration

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// crashSteps are the install steps a SIGKILL interrupts: three checkpoints
// of agent/internal/install per step (one per run; "persisted:S" is right
// after the step's state is written, "enqueued:S" after its report is
// queued), and what docs/packages.md says the job ends as once the agent
// is back: resumed and committed, or failed and undone.
var crashSteps = []struct {
	step   string
	points [3]string
	state  string // final job state in the rollout
	reason string
}{
	{wire.JobDownloading, [3]string{"persisted:downloading", "download:partial", "download:complete"}, "succeeded", ""},
	{wire.JobVerifying, [3]string{"persisted:verifying", "enqueued:verifying", "persisted:verifying"}, "succeeded", ""},
	{wire.JobPolicy, [3]string{"persisted:policy", "enqueued:policy", "persisted:policy"}, "succeeded", ""},
	{wire.JobKeyGrant, [3]string{"persisted:key_grant", "grant:stored", "enqueued:key_grant"}, "succeeded", ""},
	// The model may be what killed the agent: not retried in place.
	{wire.JobInstalling, [3]string{"persisted:installing", "model:loaded", "enqueued:installing"}, "failed", wire.JobReasonActivation},
	// Activated but not committed: the previous slot comes back.
	{wire.JobSelfTest, [3]string{"persisted:self_test", "selftest:passed", "enqueued:self_test"}, "failed", wire.JobReasonSelfTest},
	{wire.JobCommitted, [3]string{"persisted:committed", "enqueued:committed", "persisted:committed"}, "succeeded", ""},
}

// TestInstallSurvivesSIGKILL: seven real agents (the faultinject build, on
// swtpm: TPM state survives the agent), one per install step, each SIGKILLing itself at a checkpoint of its step
// (TG_FAULT_KILL_AT) in three rollouts — 21 kills. Restarted at once, each
// agent ends its job (resumed and committed before the model is loaded,
// failed and undone once loading began, committed after the commit), the
// rollout completes, and every device serves a committed model: the new
// one when its job succeeded, the previous one when it failed.
func TestInstallSurvivesSIGKILL(t *testing.T) {
	ca := newSWTPMCA(t)
	tpms := swtpms(t, ca, len(crashSteps)) // TPMs that outlive the agents
	e := newRolloutEnv(t, 5*time.Second, cpOptions{ekRoots: []string{ca.rootFile}, ekIntermediates: []string{ca.intermediateFile}})
	cp := e.cp
	cp.tgctl("fleet", "create", "edge", "--allow-simulated-tpm")
	agents := e.startAgents("edge", len(crashSteps), agentSpec{tpms: tpms, bin: bins.faultAgent})
	e.push(e.pack(pkgSpec{version: "1.0.0"}))
	r := cp.createRollout("mnist@1.0.0", "edge", "--device-timeout", "3m")
	cp.waitRollout(r.ID, 2*time.Minute, "1.0.0 everywhere", func(r client.Rollout) error {
		if r.State != client.RolloutCompleted || r.Counts.Succeeded != len(agents) {
			return fmt.Errorf("counts %+v", r.Counts)
		}
		return nil
	})
	serving := make([]string, len(agents))
	for i := range serving {
		serving[i] = "1.0.0"
	}
	waitServing(t, agents, "mnist", "1.0.0")

	kills := 0
	for run := range 3 {
		version := fmt.Sprintf("%d.0.0", run+2)
		e.push(e.pack(pkgSpec{version: version, model: onnxmodel.NewMLP(4, 16, 3, uint64(run+2))}))
		restartAll(t, agents, bins.faultAgent, func(i int) []string {
			return []string{"TG_FAULT_KILL_AT=" + crashSteps[i].points[run]}
		})
		r := cp.createRollout("mnist@"+version, "edge", "--device-timeout", "3m", "--failure-threshold", "100")

		// Each agent kills itself at its checkpoint; it is started again
		// (without faults) as soon as it is gone.
		restarted := make([]bool, len(agents))
		eventually(t, 2*time.Minute, "every agent killed at its checkpoint and restarted", func() error {
			var waiting []string
			for i, a := range agents {
				if restarted[i] {
					continue
				}
				if !a.proc.exited() {
					waiting = append(waiting, crashSteps[i].points[run])
					continue
				}
				point := crashSteps[i].points[run]
				if err := killedAt(a.proc, point); err != nil {
					t.Fatalf("run %d, %s: %v\n%s", run+1, a.name, err, a.proc.log)
				}
				a.env = nil
				a.start()
				restarted[i] = true
				kills++
			}
			if len(waiting) > 0 {
				return fmt.Errorf("still running before %v", waiting)
			}
			return nil
		})
		r = cp.waitRollout(r.ID, 2*time.Minute, "rollout of "+version+" completed", func(r client.Rollout) error {
			if r.State != client.RolloutCompleted {
				return fmt.Errorf("counts %+v", r.Counts)
			}
			return nil
		})
		for i, a := range agents {
			s := crashSteps[i]
			j := jobOf(t, r, a.id)
			if s.state == "succeeded" {
				serving[i] = version
			}
			if j.State != s.state || j.Reason != s.reason || j.InstalledVersion != serving[i] {
				t.Errorf("run %d, killed at %s: job %s %s %q, installed %s; want %s %s with %s installed",
					run+1, s.points[run], j.State, j.Reason, j.Detail, j.InstalledVersion, s.state, s.reason, serving[i])
			}
		}
		for i, a := range agents {
			waitServing(t, []*fleetAgent{a}, "mnist", serving[i])
		}
	}
	t.Logf("%d SIGKILLs over %d steps", kills, len(crashSteps))
	stopAll(t, agents)
	cp.shutdown()
}

// killedAt checks that p died of SIGKILL at the checkpoint point (the
// fault hook logs the point just before it kills).
func killedAt(p *proc, point string) error {
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) {
		return fmt.Errorf("exited with %v, not killed", p.err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		return fmt.Errorf("exited with %v, not by SIGKILL", p.err)
	}
	for line := range strings.Lines(p.log.String()) {
		if strings.Contains(line, "FAULT INJECTION: SIGKILL") && strings.Contains(line, point) {
			return nil
		}
	}
	return fmt.Errorf("SIGKILLed, but not at %s", point)
}
