package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tgagent "github.com/tensorguard/tensorguardflow/agent"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxruntimetest"
	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// packMLP writes a model package as docs/packages.md describes it — an
// ONNX MLP, tg-model.json, and a self-test holding what expect computes —
// packs it to the control plane's recipient key, and returns the package
// file and the model's plaintext bytes.
func packMLP(t *testing.T, dir string, signer *tgsp.SignerPrivateKey, cpKey *tgsp.RecipientPublicKey, version string, m, expect onnxmodel.MLP) (string, []byte) {
	t.Helper()
	model, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	x := []float32{0.5, -1, 2, 0.25}
	want, err := expect.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	tensor := func(shape []int64, data []float32) map[string]any {
		return map[string]any{"shape": shape, "data": data}
	}
	spec, _ := json.Marshal(map[string]any{"schema": "tg.model.v1", "runtime": "onnxruntime", "model": "model.onnx",
		"inputs": []string{onnxmodel.MLPInput}, "outputs": []string{onnxmodel.MLPLogits, onnxmodel.MLPProbs, onnxmodel.MLPClass},
		"selftest": "selftest.json"})
	selftest, _ := json.Marshal(map[string]any{"schema": "tg.selftest.v1", "tolerance": 1e-5, "rtol": 1e-4, "cases": []any{map[string]any{
		"inputs": map[string]any{onnxmodel.MLPInput: tensor([]int64{1, 4}, x)},
		"outputs": map[string]any{onnxmodel.MLPLogits: tensor([]int64{1, 3}, want.Logits),
			onnxmodel.MLPClass: tensor([]int64{1}, []float32{float32(want.Class[0])})},
	}}})
	src := filepath.Join(dir, "src-"+version)
	writeFile(t, filepath.Join(src, "tg-model.json"), string(spec))
	writeFile(t, filepath.Join(src, "selftest.json"), string(selftest))
	writeFile(t, filepath.Join(src, "model.onnx"), string(model))
	var pkg bytes.Buffer
	if _, err := tgsp.Pack(&pkg, src, tgsp.PackOptions{Name: "mnist", Version: version, Signer: signer,
		Recipients: []*tgsp.RecipientPublicKey{cpKey}}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "mnist-"+version+".tgsp")
	writeFile(t, out, pkg.String())
	return out, model
}

// rolloutJob waits for the rollout's only job to reach a final state.
func rolloutJob(t *testing.T, cp *cpProc, id string) (client.Rollout, client.RolloutJob) {
	t.Helper()
	var r client.Rollout
	eventually(t, 120*time.Second, "rollout "+id+" job final", func() error {
		cp.tgctlJSON(&r, "rollout", "status", id)
		if len(r.Jobs) != 1 {
			return fmt.Errorf("rollout %s: %d jobs", r.State, len(r.Jobs))
		}
		switch j := r.Jobs[0]; j.State {
		case "succeeded", "failed", "refused", "timed_out":
			return nil
		default:
			return fmt.Errorf("job %s (report %s)", j.State, j.ReportState)
		}
	})
	return r, r.Jobs[0]
}

// TestInstallRolloutSWTPM drives the install pipeline through the real
// binaries: a control plane attesting every second, an agent on its own
// swtpm (so its KEM key is TPM-sealed and its verdict trusted), and a real
// ONNX model rolled out to it. The agent downloads the package, verifies
// it, gets the key grant, self-tests the model with ONNX Runtime and
// commits; a version that fails its self-test is rolled back on the device
// and reported failed with the first version still installed. The model's
// plaintext never appears under the agent's state directory.
func TestInstallRolloutSWTPM(t *testing.T) {
	lib := onnxruntimetest.Library(t)
	ca := newSWTPMCA(t)
	tpm := startSWTPM(t, ca, "swtpm")
	cp := startAttestingControlPlane(t, cpOptions{ekRoots: []string{ca.rootFile}, ekIntermediates: []string{ca.intermediateFile}}, time.Second)
	var fleet client.Fleet
	cp.tgctlJSON(&fleet, "fleet", "create", "edge", "--allow-simulated-tpm")
	token, _ := cp.token("edge")
	agent := newAgent(t, cp, "agent", token, fmt.Sprintf("{swtpm: %q}", tpm.addr))
	f, err := os.OpenFile(agent.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	metrics := freePort(t)
	_, err = fmt.Fprintf(f, "install: {onnxruntime_library: %q, onnxruntime_threads: 1}\nmetrics: {listen: \"127.0.0.1:%s\"}\n", lib, metrics)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	// Its temporary and cache folders are ours to watch.
	tmp, cache := t.TempDir(), t.TempDir()
	agent.env = append(agent.env, "TMPDIR="+tmp, "XDG_CACHE_HOME="+cache)
	agent.start()
	st := agent.waitConnected(0)
	cp.waitVerdict(fleet.Name, st.DeviceID, 30*time.Second, "verdict trusted", func(v wire.Verdict) bool {
		return v.State == wire.VerdictTrusted
	})

	dir := t.TempDir()
	signer, err := tgsp.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "signer.pub"), string(signer.Public().MarshalPEM()))
	cp.tgctl("publisher", "add", "ml", "--key", filepath.Join(dir, "signer.pub"))
	cp.tgctl("package", "recipient", "--out", filepath.Join(dir, "cp.pub"))
	cpKey, err := tgsp.LoadRecipientPublicKey(filepath.Join(dir, "cp.pub"))
	if err != nil {
		t.Fatal(err)
	}

	good := onnxmodel.NewMLP(4, 16, 3, 1)
	v1, plain1 := packMLP(t, dir, signer, cpKey, "1.0.0", good, good)
	v2, plain2 := packMLP(t, dir, signer, cpKey, "1.1.0", onnxmodel.NewMLP(4, 16, 3, 2), good)
	// Every file written under the agent's state, temporary and cache
	// folders from now on is read as it is written.
	needle := func(plain []byte) []byte { return plain[len(plain)/2 : len(plain)/2+64] }
	canary := []byte("canary: written and removed at once; the watch must still see it")
	watch := watchWrites(t, [][]byte{needle(plain1), needle(plain2), canary}, filepath.Dir(agent.state), tmp, cache)
	writeFile(t, filepath.Join(tmp, "canary"), string(canary))
	os.Remove(filepath.Join(tmp, "canary"))
	var p1 client.Package
	cp.tgctlJSON(&p1, "package", "push", v1)
	var r client.Rollout
	cp.tgctlJSON(&r, "rollout", "create", "--package", "mnist@1.0.0", "--fleet", "edge", "--device-timeout", "5m")
	r, job := rolloutJob(t, cp, r.ID)
	if job.State != "succeeded" || job.InstalledName != "mnist" || job.InstalledVersion != "1.0.0" {
		t.Fatalf("install job %+v (rollout %s %s)", job, r.State, r.Detail)
	}
	packages := filepath.Join(filepath.Dir(agent.state), "packages")
	if _, err := os.Stat(filepath.Join(packages, p1.ID+".tgsp")); err != nil {
		t.Errorf("the installed package is not kept encrypted in the slot: %v", err)
	}

	// Applications on the device infer through the local API (KServe v2
	// on the Unix socket) and get the model's answer.
	api := unixHTTP(filepath.Join(filepath.Dir(agent.state), "inference.sock"))
	x := []float32{0.25, -0.5, 1, 2}
	want, _ := good.Forward(x)
	code, out, err := v2Infer(api, "mnist", map[string]any{"inputs": []any{map[string]any{
		"name": onnxmodel.MLPInput, "shape": []int{1, 4}, "datatype": "FP32", "data": x}}})
	if err != nil || code != 200 {
		t.Fatalf("inference: %d %v %v", code, out, err)
	}
	if got := fmt.Sprint(out["model_version"]); got != "1.0.0" {
		t.Errorf("answered by version %s", got)
	}
	for _, o := range out["outputs"].([]any) {
		o := o.(map[string]any)
		if o["name"] == onnxmodel.MLPClass && o["data"].([]any)[0].(float64) != float64(want.Class[0]) {
			t.Errorf("class %v, reference %d", o["data"], want.Class[0])
		}
	}
	if code, out, _ := v2Infer(api, "mnist", map[string]any{"inputs": []any{map[string]any{
		"name": onnxmodel.MLPInput, "shape": []int{1, 3}, "datatype": "FP32", "data": x[:3]}}}); code != 400 {
		t.Errorf("wrong shape: %d %v", code, out)
	}
	// The inferences are in the Prometheus metrics and in the telemetry.
	resp, err := http.Get("http://127.0.0.1:" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	prom, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range []string{
		`tg_inference_requests_total{backend="onnxruntime",model="mnist",version="1.0.0"} 2`,
		`tg_inference_errors_total{backend="onnxruntime",model="mnist",version="1.0.0"} 1`,
		`tg_model_loaded{backend="onnxruntime",model="mnist",version="1.0.0"} 1`,
	} {
		if !strings.Contains(string(prom), line) {
			t.Errorf("metrics lack %s", line)
		}
	}
	op := cp.operatorMQTT("telemetry-watch")
	if q := op.subscribe(t, "tg/v1/"+st.TenantID+"/devices/"+st.DeviceID+"/telemetry"); q > 1 {
		t.Fatalf("telemetry subscription refused (%d)", q)
	}
	eventually(t, 15*time.Second, "a heartbeat with the model's statistics", func() error {
		for _, m := range op.messages() {
			var hb tgagent.Heartbeat
			if json.Unmarshal(m.Payload(), &hb) == nil && len(hb.Models) == 1 && hb.Models[0].Inferences == 2 &&
				hb.Models[0].Errors == 1 && hb.Models[0].Loaded && hb.Models[0].Backend == "onnxruntime" {
				return nil
			}
		}
		return errors.New("none yet")
	})

	// A model shipped with another model's test vectors fails its
	// self-test on the device: rolled back, reported failed.
	cp.tgctlJSON(&client.Package{}, "package", "push", v2)
	cp.tgctlJSON(&r, "rollout", "create", "--package", "mnist@1.1.0", "--fleet", "edge", "--device-timeout", "5m")
	r, job = rolloutJob(t, cp, r.ID)
	if job.State != "failed" || job.Reason != wire.JobReasonSelfTest || job.InstalledVersion != "1.0.0" {
		t.Fatalf("bad model's job %+v (rollout %s %s)", job, r.State, r.Detail)
	}

	// Plaintext never on disk: not written to any file while installing,
	// loading and rolling back (the watch), and not in any file now.
	written, hits := watch.stop()
	canarySeen := false
	for _, h := range hits {
		if strings.HasPrefix(h, "plaintext 2 in ") {
			canarySeen = true
			continue
		}
		t.Error(h)
	}
	if !canarySeen {
		t.Error("the watch missed the canary file: it would miss plaintext too")
	}
	t.Logf("files written under the agent's folders during the installs: %d", len(written))
	if len(written) == 0 {
		t.Error("the watch saw no file written: it is not watching")
	}
	err = filepath.WalkDir(filepath.Dir(agent.state), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() { // folders, the inference socket
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i, plain := range [][]byte{plain1, plain2} {
			if bytes.Contains(b, plain[len(plain)/2:len(plain)/2+64]) {
				t.Errorf("plaintext of model %d in %s", i+1, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	agent.proc.stop(t, 10*time.Second)
}
