package integration

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxruntimetest"
	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	tinker "github.com/tensorguard/tensorguardflow/trainer/client"
)

func tinkerSDK(t *testing.T, cp *cpProc) *tinker.ServiceClient {
	t.Helper()
	hc := cp.httpClient(nil)
	hc.Timeout = 90 * time.Second
	s, err := tinker.NewServiceClient(tinker.WithBaseURL(cp.baseURL), tinker.WithAPIKey(cp.adminKey), tinker.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// result waits for a submitted future: result(tc.OptimStep(ctx, p))(t).
func result[T any](f *tinker.Future[T], err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		v, err := f.Result(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// textDatums are next-byte examples of each text.
func textDatums(texts ...string) []tinker.Datum {
	var out []tinker.Datum
	for _, s := range texts {
		tgt := make([]float64, len(s)-1)
		for i := 1; i < len(s); i++ {
			tgt[i-1] = float64(s[i])
		}
		out = append(out, tinker.Datum{ModelInput: tinker.TextInput(s[:len(s)-1]),
			LossFnInputs: map[string]tinker.TensorData{"target_tokens": {Data: tgt}}})
	}
	return out
}

// TestTrainExportRolloutInfer is the platform's whole path against the
// real binaries: a model fine-tuned with DP-SGD through the TG-Tinker SDK
// on the control plane, exported as a signed TGSP package carrying its ε,
// pushed and rolled out to an agent with a TPM (swtpm), and answering
// inferences on the device with what it learned.
func TestTrainExportRolloutInfer(t *testing.T) {
	lib := onnxruntimetest.Library(t)
	ca := newSWTPMCA(t)
	tpm := startSWTPM(t, ca, "swtpm")
	cp := startAttestingControlPlane(t, cpOptions{ekRoots: []string{ca.rootFile}, ekIntermediates: []string{ca.intermediateFile}}, time.Second)
	cp.tgctl("fleet", "create", "edge", "--allow-simulated-tpm")
	token, _ := cp.token("edge")
	agent := newAgent(t, cp, "agent", token, fmt.Sprintf("{swtpm: %q}", tpm.addr))
	appendFile(t, agent.config, fmt.Sprintf("install: {onnxruntime_library: %q, onnxruntime_threads: 1}\n", lib))
	agent.start()
	st := agent.waitConnected(0)

	ctx := context.Background()
	s := tinkerSDK(t, cp)
	tc, err := s.CreateTrainingClient(ctx, tinker.TrainingClientConfig{BaseModel: "tg-bigram",
		Adam: tinker.AdamParams{LearningRate: 0.05},
		DP:   tinker.DPConfig{Enabled: true, NoiseMultiplier: 1.0, MaxGradNorm: 1, SampleRate: 0.25, TargetEpsilon: 8}})
	if err != nil {
		t.Fatal(err)
	}
	var pool []string
	for range 60 {
		pool = append(pool, "the edge keeps the model", "keep the keys at the edge")
	}
	for range 12 {
		result(tc.ForwardBackward(ctx, textDatums(pool...), "cross_entropy"))(t)
		result(tc.OptimStep(ctx, tinker.AdamParams{}))(t)
	}
	priv, err := tc.Privacy(ctx)
	if err != nil || priv.Steps != 12 || priv.Epsilon <= 0 || priv.Epsilon > 8 {
		t.Fatalf("privacy %+v %v", priv, err)
	}
	exp := result(tc.Export(ctx, "edge-lm", "1.0.0"))(t)
	pkg, err := s.DownloadPackage(ctx, exp.ArtifactID)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "edge-lm.tgsp")
	if err := os.WriteFile(file, pkg, 0o600); err != nil {
		t.Fatal(err)
	}
	// The trainer's key is pinned: the package pushes as any other.
	var p client.Package
	cp.tgctlJSON(&p, "package", "push", file)
	var got struct {
		DPCert struct {
			Epsilon float64 `json:"epsilon"`
			Steps   int64   `json:"steps"`
		} `json:"dp_cert"`
	}
	cp.tgctlJSON(&got, "package", "get", "edge-lm@1.0.0")
	if math.Abs(got.DPCert.Epsilon-priv.Epsilon) > 1e-9 || got.DPCert.Steps != 12 {
		t.Fatalf("the registry's dp_cert %+v, the trainer's privacy %+v", got.DPCert, priv)
	}
	cp.waitVerdict("edge", st.DeviceID, 30*time.Second, "trusted", func(v wire.Verdict) bool { return v.State == wire.VerdictTrusted })
	var r client.Rollout
	cp.tgctlJSON(&r, "rollout", "create", "--package", "edge-lm@1.0.0", "--fleet", "edge", "--device-timeout", "5m")
	r, job := rolloutJob(t, cp, r.ID)
	if job.State != "succeeded" {
		t.Fatalf("install %+v (rollout %s %s)", job, r.State, r.Detail)
	}
	// On the device: after "th" the model predicts "e" (greedy), as trained.
	api := unixHTTP(filepath.Join(filepath.Dir(agent.state), "inference.sock"))
	code, out, err := v2Infer(api, "edge-lm", map[string]any{"inputs": []any{map[string]any{
		"name": "input_ids", "shape": []int{1, 2}, "datatype": "INT64", "data": []int{'t', 'h'}}}})
	if err != nil || code != 200 {
		t.Fatalf("inference: %d %v %v", code, out, err)
	}
	logits := out["outputs"].([]any)[0].(map[string]any)["data"].([]any)
	best := 0
	for i := 256; i < 512; i++ { // position 1: after 'h'
		if logits[i].(float64) > logits[256+best].(float64) {
			best = i - 256
		}
	}
	if best != 'e' {
		t.Errorf("after \"th\" the deployed model predicts %q, want 'e'", rune(best))
	}

	// The transformer: LoRA on tg-lm-base under DP, sampled, exported and
	// rolled out the same way; the device serves its logits.
	lmc, err := s.CreateTrainingClient(ctx, tinker.TrainingClientConfig{BaseModel: "tg-lm-base",
		LoRA: tinker.LoRAConfig{Rank: 4},
		DP:   tinker.DPConfig{Enabled: true, NoiseMultiplier: 1.0, MaxGradNorm: 1, SampleRate: 0.5, TargetEpsilon: 8}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		result(lmc.ForwardBackward(ctx, textDatums(pool[:8]...), "cross_entropy"))(t)
		result(lmc.OptimStep(ctx, tinker.AdamParams{}))(t)
	}
	seed := uint64(1)
	smp := result(lmc.Sample(ctx, tinker.TextInput("the "), 1, tinker.SamplingParams{MaxTokens: 8, Temperature: 0.7, Seed: &seed}))(t)
	if len(smp.Sequences) != 1 || len(smp.Sequences[0].Tokens) == 0 {
		t.Fatalf("sample %+v", smp)
	}
	lmExp := result(lmc.Export(ctx, "edge-tx", "1.0.0"))(t)
	lmPkg, err := s.DownloadPackage(ctx, lmExp.ArtifactID)
	if err != nil {
		t.Fatal(err)
	}
	lmFile := filepath.Join(t.TempDir(), "edge-tx.tgsp")
	if err := os.WriteFile(lmFile, lmPkg, 0o600); err != nil {
		t.Fatal(err)
	}
	cp.tgctlJSON(&p, "package", "push", lmFile)
	cp.tgctlJSON(&r, "rollout", "create", "--package", "edge-tx@1.0.0", "--fleet", "edge", "--device-timeout", "5m")
	if r, job = rolloutJob(t, cp, r.ID); job.State != "succeeded" {
		t.Fatalf("install of the transformer %+v (rollout %s %s)", job, r.State, r.Detail)
	}
	code, out, err = v2Infer(api, "edge-tx", map[string]any{"inputs": []any{map[string]any{
		"name": "input_ids", "shape": []int{1, 3}, "datatype": "INT64", "data": []int{'t', 'h', 'e'}}}})
	if err != nil || code != 200 {
		t.Fatalf("transformer inference: %d %v %v", code, out, err)
	}
	if shape := fmt.Sprint(out["outputs"].([]any)[0].(map[string]any)["shape"]); shape != "[1 3 256]" {
		t.Fatalf("logits shape %s", shape)
	}
	agent.proc.stop(t, 10*time.Second)
	cp.shutdown()
}

// TestTrainerRestartLosesNothing: work the trainer accepted is kept across
// a SIGKILL of the control plane; after the restart every future finishes
// and the client took exactly the steps submitted.
func TestTrainerRestartLosesNothing(t *testing.T) {
	cp := startControlPlane(t, cpOptions{})
	ctx := context.Background()
	s := tinkerSDK(t, cp)
	tc, err := s.CreateTrainingClient(ctx, tinker.TrainingClientConfig{BaseModel: "tg-bigram"})
	if err != nil {
		t.Fatal(err)
	}
	var pool []string
	for range 200 {
		pool = append(pool, "restart the control plane")
	}
	var steps []*tinker.Future[tinker.OptimStepResult]
	for range 15 {
		if _, err := tc.ForwardBackward(ctx, textDatums(pool...), ""); err != nil {
			t.Fatal(err)
		}
		f, err := tc.OptimStep(ctx, tinker.AdamParams{})
		if err != nil {
			t.Fatal(err)
		}
		steps = append(steps, f)
	}
	cp.proc.kill(t)
	cp.serveAgain()
	s = tinkerSDK(t, cp)
	for i, f := range steps {
		r := result(tinker.FutureOf[tinker.OptimStepResult](s, f.ID), nil)(t)
		if r.Step != int64(i+1) {
			t.Fatalf("step future %d says step %d", i, r.Step)
		}
	}
	info, err := s.TrainingClientByID(ctx, tc.Info.ID)
	if err != nil || info.Info.Steps != 15 {
		t.Fatalf("client after the restart: %+v %v", info, err)
	}
	cp.shutdown()
}
