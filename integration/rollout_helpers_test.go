package integration

// Helpers of the rollout end-to-end tests (issue 5; rollout_*_test.go):
// a control plane attesting on a short interval, fleets of real tg-agent
// processes on simulator TPMs running real ONNX models, packages made with
// the tgsp binary, and the operator's view through tgctl and MQTT.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxruntimetest"
	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// rolloutEnv is a control plane with a pinned publisher ("ml") and the
// files a publisher packs with.
type rolloutEnv struct {
	t   *testing.T
	cp  *cpProc
	dir string
	lib string // libonnxruntime for the agents
	// signer is the key prefix of publisher "ml" (tgsp keygen), cpPub the
	// control plane's recipient key of the tenant.
	signer, cpPub string
}

// newRolloutEnv starts a control plane challenging every interval (the
// fleets' default), makes a signer with `tgsp keygen`, pins it as
// publisher "ml" and fetches the recipient key to pack to.
func newRolloutEnv(t *testing.T, interval time.Duration, opts cpOptions) *rolloutEnv {
	t.Helper()
	lib := onnxruntimetest.Library(t)
	cp := startAttestingControlPlane(t, opts, interval)
	e := &rolloutEnv{t: t, cp: cp, dir: t.TempDir(), lib: lib}
	e.signer = e.newSigner("ml")
	cp.tgctl("publisher", "add", "ml", "--key", e.signer+".pub")
	e.cpPub = filepath.Join(e.dir, "cp.pub")
	cp.tgctl("package", "recipient", "--out", e.cpPub)
	return e
}

// newSigner makes a signer key pair with `tgsp keygen` and returns its
// prefix (PREFIX.key, PREFIX.pub).
func (e *rolloutEnv) newSigner(name string) string {
	e.t.Helper()
	prefix := filepath.Join(e.dir, "signer-"+name)
	e.tgsp("keygen", "--kind", "signer", "--out", prefix)
	return prefix
}

// tgsp runs the tgsp binary and fails the test unless it exits 0.
func (e *rolloutEnv) tgsp(args ...string) string {
	e.t.Helper()
	cmd := exec.Command(bins.tgsp, args...)
	cmd.Env = testEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		e.t.Fatalf("tgsp %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// pkgSpec describes a model package: an ONNX MLP (onnxmodel), its
// tg-model.json, and a self-test holding what expect computes (the model
// itself when expect is nil).
type pkgSpec struct {
	name, version string
	signer        string // key prefix; default the env's publisher "ml"
	model         onnxmodel.MLP
	expect        *onnxmodel.MLP
	epsilon       float64 // > 0: a dp_cert.json stating this ε (tgsp pack --dp-cert)
	expires       string  // tgsp pack --expires (default: the tool's)
	pad           int     // bytes of an extra incompressible file the model lists
}

// pack writes the package's source directory as docs/packages.md
// describes it and packs it with `tgsp pack` to the control plane's
// recipient key; it returns the package file.
func (e *rolloutEnv) pack(s pkgSpec) string {
	e.t.Helper()
	if s.name == "" {
		s.name = "mnist"
	}
	if s.model.Hidden == 0 {
		s.model = onnxmodel.NewMLP(4, 16, 3, 1)
	}
	expect := s.model
	if s.expect != nil {
		expect = *s.expect
	}
	src := filepath.Join(e.dir, "src-"+s.name+"-"+s.version)
	model, err := s.model.Encode()
	if err != nil {
		e.t.Fatal(err)
	}
	x := []float32{0.5, -1, 2, 0.25}
	want, err := expect.Forward(x)
	if err != nil {
		e.t.Fatal(err)
	}
	tensor := func(shape []int64, data []float32) map[string]any {
		return map[string]any{"shape": shape, "data": data}
	}
	spec := map[string]any{"schema": "tg.model.v1", "runtime": "onnxruntime", "model": "model.onnx",
		"inputs": []string{onnxmodel.MLPInput}, "outputs": []string{onnxmodel.MLPLogits, onnxmodel.MLPProbs, onnxmodel.MLPClass},
		"selftest": "selftest.json"}
	if s.pad > 0 {
		pad := make([]byte, s.pad)
		r := rand.NewChaCha8([32]byte{byte(s.pad), 1})
		_, _ = r.Read(pad)
		writeFile(e.t, filepath.Join(src, "weights.bin"), string(pad))
		spec["files"] = []string{"weights.bin"}
	}
	specJSON, _ := json.Marshal(spec)
	selftest, _ := json.Marshal(map[string]any{"schema": "tg.selftest.v1", "tolerance": 1e-5, "rtol": 1e-4, "cases": []any{map[string]any{
		"inputs": map[string]any{onnxmodel.MLPInput: tensor([]int64{1, 4}, x)},
		"outputs": map[string]any{onnxmodel.MLPLogits: tensor([]int64{1, 3}, want.Logits),
			onnxmodel.MLPClass: tensor([]int64{1}, []float32{float32(want.Class[0])})},
	}}})
	writeFile(e.t, filepath.Join(src, "tg-model.json"), string(specJSON))
	writeFile(e.t, filepath.Join(src, "selftest.json"), string(selftest))
	writeFile(e.t, filepath.Join(src, "model.onnx"), string(model))

	signer := s.signer
	if signer == "" {
		signer = e.signer
	}
	out := filepath.Join(e.dir, s.name+"-"+s.version+".tgsp")
	args := []string{"pack", "--signer-key", signer + ".key", "--recipient", e.cpPub,
		"--name", s.name, "--version", s.version, "--out", out}
	if s.epsilon > 0 {
		cert := filepath.Join(e.dir, "dp_cert-"+s.name+"-"+s.version+".json")
		writeFile(e.t, cert, fmt.Sprintf(`{"schema":"tgsp.dp_cert.v1","epsilon":%g,"delta":1e-6,"accountant":"rdp",`+
			`"noise_multiplier":1.1,"clipping_norm":1,"sampling_rate":0.01,"steps":1000,"dataset_size":60000}`, s.epsilon))
		args = append(args, "--dp-cert", cert)
	}
	if s.expires != "" {
		args = append(args, "--expires", s.expires)
	}
	e.tgsp(append(args, src)...)
	return out
}

// push is `tgctl package push`.
func (e *rolloutEnv) push(file string) client.Package {
	e.t.Helper()
	var p client.Package
	e.cp.tgctlJSON(&p, "package", "push", file)
	if p.ID == "" {
		e.t.Fatalf("package push %s: %+v", file, p)
	}
	return p
}

// fleetAgent is a running tg-agent enrolled as device id.
type fleetAgent struct {
	*agentProcess
	id string
}

// agentSpec configures the agents startAgents starts.
type agentSpec struct {
	// firstSeed: simulator TPMs with seeds firstSeed, firstSeed+1, … —
	// unless tpms gives each agent's tpm setting. The simulator's state
	// lives in the agent's process: a restarted agent's quotes go back in
	// time (CLOCK_ROLLBACK, untrusted), so agents that restart need swtpm.
	firstSeed int
	tpms      []string
	bin       string               // tg-agent binary (default bins.agent)
	env       func(i int) []string // extra environment of agent i
	serverURL string               // instead of the control plane's (e.g. a proxy)
}

// startAgents enrolls n agents into fleet, all at once, with ONNX Runtime
// configured, and waits until each is connected and its attestation
// verdict trusted (a key grant needs one).
func (e *rolloutEnv) startAgents(fleet string, n int, spec agentSpec) []*fleetAgent {
	e.t.Helper()
	agents := make([]*fleetAgent, n)
	for i := range agents {
		token, _ := e.cp.token(fleet)
		tpm := fmt.Sprintf("{simulator: true, simulator_seed: %d}", spec.firstSeed+i)
		if spec.tpms != nil {
			tpm = spec.tpms[i]
		}
		a := newAgent(e.t, e.cp, fmt.Sprintf("%s-agent-%d", fleet, i), token, tpm)
		extra := fmt.Sprintf("install: {onnxruntime_library: %q, onnxruntime_threads: 1}\n", e.lib)
		if spec.serverURL != "" {
			b, err := os.ReadFile(a.config)
			if err != nil {
				e.t.Fatal(err)
			}
			cfg := strings.Replace(string(b), "server_url: "+e.cp.baseURL+"\n", "server_url: "+spec.serverURL+"\n", 1)
			writeFile(e.t, a.config, cfg)
		}
		appendFile(e.t, a.config, extra)
		a.bin = spec.bin
		if spec.env != nil {
			a.env = spec.env(i)
		}
		a.start()
		agents[i] = &fleetAgent{agentProcess: a}
	}
	ids := make([]string, n)
	for i, a := range agents {
		a.id = a.waitConnected(0).DeviceID
		ids[i] = a.id
	}
	e.waitTrusted(fleet, ids...)
	return agents
}

// waitTrusted waits until the fleet's verdict of every device is trusted.
func (e *rolloutEnv) waitTrusted(fleet string, ids ...string) {
	e.t.Helper()
	eventually(e.t, 60*time.Second, "verdicts trusted", func() error {
		vs, err := e.cp.verdicts(fleet)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if v := vs[id]; v.State != wire.VerdictTrusted {
				return fmt.Errorf("device %s: verdict %q %v", id, v.State, v.Reasons)
			}
		}
		return nil
	})
}

// swtpms manufactures n swtpms with ca and returns the agents' tpm
// settings for them: TPMs whose state outlives the agent's process.
func swtpms(t *testing.T, ca *swtpmCA, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("{swtpm: %q}", startSWTPM(t, ca, fmt.Sprintf("swtpm-%d", i)).addr)
	}
	return out
}

// faultDirs makes a TG_FAULT_DIR per agent (agent/internal/install
// fault_on.go: switch files the test creates and removes).
func faultDirs(t *testing.T, n int) []string {
	t.Helper()
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	return dirs
}

// The switch files of a TG_FAULT_DIR.
func selfTestFailFile(dir string) string     { return filepath.Join(dir, "selftest-fail") }
func holdFile(dir, checkpoint string) string { return filepath.Join(dir, "hold@"+checkpoint) }

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// restartAll stops the agents cleanly (exit 0), starts them again with
// bin and env(i) (the fault environment of the next run, or none), and
// waits for their new connections.
func restartAll(t *testing.T, agents []*fleetAgent, bin string, env func(i int) []string) {
	t.Helper()
	sessions := make([]uint64, len(agents))
	for i, a := range agents {
		st, err := a.status()
		if err != nil {
			t.Fatal(err)
		}
		sessions[i] = st.Session
	}
	stopAll(t, agents)
	for i, a := range agents {
		a.bin, a.env = bin, env(i)
		a.start()
	}
	for i, a := range agents {
		a.waitConnected(sessions[i])
	}
}

// agentModels is the model part of `tg-agent status -o json`.
type agentModels struct {
	Running       bool              `json:"running"`
	Model         *agentModelStatus `json:"model"`
	PreviousModel *agentModelStatus `json:"previous_model"`
	Serving       *agentModelStatus `json:"serving"`
}

type agentModelStatus struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	PackageID string `json:"package_id"`
	Committed bool   `json:"committed"`
}

func (a *fleetAgent) models() (agentModels, error) {
	out, err := exec.Command(bins.agent, "status", "--config", a.config, "-o", "json").Output()
	if err != nil {
		return agentModels{}, fmt.Errorf("tg-agent status: %w", err)
	}
	var m agentModels
	err = json.Unmarshal(out, &m)
	return m, err
}

// serves checks, from `tg-agent status`, that the running agent's active
// slot holds version of name, committed, and that this model is the one
// it has loaded and answers with.
func (a *fleetAgent) serves(name, version string) error {
	m, err := a.models()
	switch {
	case err != nil:
		return err
	case !m.Running:
		return errors.New("agent not running")
	case m.Model == nil || m.Model.Name != name || m.Model.Version != version || !m.Model.Committed:
		return fmt.Errorf("%s: active slot %+v, want %s %s committed", a.id, m.Model, name, version)
	case m.Serving == nil || m.Serving.Name != name || m.Serving.Version != version:
		return fmt.Errorf("%s: serving %+v, want %s %s", a.id, m.Serving, name, version)
	}
	return nil
}

// waitServing waits until every agent serves version of name (serves).
func waitServing(t *testing.T, agents []*fleetAgent, name, version string) {
	t.Helper()
	eventually(t, 30*time.Second, "agents serving "+name+" "+version, func() error {
		var errs []error
		for _, a := range agents {
			errs = append(errs, a.serves(name, version))
		}
		return errors.Join(errs...)
	})
}

// stopAll stops the agents in parallel with SIGTERM and checks exit 0.
func stopAll(t *testing.T, agents []*fleetAgent) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(agents))
	for i, a := range agents {
		if a.proc.exited() {
			errs[i] = fmt.Errorf("%s had exited: %v", a.name, a.proc.err)
			continue
		}
		_ = a.proc.cmd.Process.Signal(syscall.SIGTERM)
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-a.proc.done:
				if a.proc.err != nil {
					errs[i] = fmt.Errorf("%s exited with %v after SIGTERM (want 0)", a.name, a.proc.err)
				}
			case <-time.After(20 * time.Second):
				errs[i] = fmt.Errorf("%s did not exit within 20s", a.name)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// ---- rollouts ----

// rollout is `tgctl rollout status ID -o json`.
func (cp *cpProc) rollout(id string) client.Rollout {
	cp.t.Helper()
	var r client.Rollout
	cp.tgctlJSON(&r, "rollout", "status", id)
	return r
}

// createRollout is `tgctl rollout create --package PKG --fleet FLEET …`.
func (cp *cpProc) createRollout(pkg, fleet string, extra ...string) client.Rollout {
	cp.t.Helper()
	var r client.Rollout
	cp.tgctlJSON(&r, append([]string{"rollout", "create", "--package", pkg, "--fleet", fleet}, extra...)...)
	if r.ID == "" {
		cp.t.Fatalf("rollout create: %+v", r)
	}
	return r
}

// waitRollout polls the rollout until cond accepts it.
func (cp *cpProc) waitRollout(id string, timeout time.Duration, what string, cond func(client.Rollout) error) client.Rollout {
	cp.t.Helper()
	var r client.Rollout
	eventually(cp.t, timeout, what, func() error {
		r = cp.rollout(id)
		if err := cond(r); err != nil {
			return fmt.Errorf("rollout %s (%s %s): %w", r.State, r.Reason, r.Detail, err)
		}
		return nil
	})
	return r
}

// jobsDone: no install job is pending or in flight.
func jobsDone(r client.Rollout) error {
	if r.Counts.Pending+r.Counts.InFlight > 0 {
		return fmt.Errorf("counts %+v", r.Counts)
	}
	return nil
}

// findJob returns the install job of device in r, if it has one yet (the
// engine makes the jobs on its first pass).
func findJob(r client.Rollout, device string) (client.RolloutJob, bool) {
	for _, j := range r.Jobs {
		if j.DeviceID == device && j.Kind == "install" {
			return j, true
		}
	}
	return client.RolloutJob{}, false
}

// jobOf returns the install job of device in r, which must have one.
func jobOf(t *testing.T, r client.Rollout, device string) client.RolloutJob {
	t.Helper()
	j, ok := findJob(r, device)
	if !ok {
		t.Fatalf("rollout %s has no job for %s", r.ID, device)
	}
	return j
}

// rolloutEvents decodes the events of rollout id an operator's
// subscription received, ordered by their time.
func rolloutEvents(t *testing.T, op *mqttClient, tenant, id string) []client.RolloutEvent {
	t.Helper()
	var evs []client.RolloutEvent
	for _, m := range op.messages() {
		if m.Topic() != mqttacl.RolloutEventsTopic(tenant, id) {
			continue
		}
		var ev client.RolloutEvent
		if err := json.Unmarshal(m.Payload(), &ev); err != nil || ev.Schema != client.RolloutEventSchema {
			t.Fatalf("event on %s: %v: %s", m.Topic(), err, m.Payload())
		}
		evs = append(evs, ev)
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].At.Before(evs[j].At) })
	return evs
}

// auditEntry is one entry of `tgctl audit list -o json`.
type auditEntry struct {
	Actor   string          `json:"actor"`
	Action  string          `json:"action"`
	Target  string          `json:"target"`
	Details json.RawMessage `json:"details"`
}

// audit returns the tenant's audit entries with action.
func (cp *cpProc) audit(action string) []auditEntry {
	cp.t.Helper()
	var out []auditEntry
	after := "0"
	for {
		var page struct {
			Entries   []auditEntry `json:"entries"`
			NextAfter json.Number  `json:"next_after"`
		}
		cp.tgctlJSON(&page, "audit", "list", "--after", after, "--limit", "1000")
		for _, e := range page.Entries {
			if e.Action == action {
				out = append(out, e)
			}
		}
		if len(page.Entries) < 1000 || page.NextAfter.String() == "" {
			return out
		}
		after = page.NextAfter.String()
	}
}
