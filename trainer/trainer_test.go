package trainer_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/tensorguard/tensorguardflow/internal/audit"
	"github.com/tensorguard/tensorguardflow/internal/dpaccount"
	"github.com/tensorguard/tensorguardflow/internal/kek"
	"github.com/tensorguard/tensorguardflow/internal/testpg"
	"github.com/tensorguard/tensorguardflow/tgsp"
	"github.com/tensorguard/tensorguardflow/trainer"
	"github.com/tensorguard/tensorguardflow/trainer/client"
	"github.com/tensorguard/tensorguardflow/trainer/internal/bigram"
	"github.com/tensorguard/tensorguardflow/trainer/trainertest"
)

func TestMain(m *testing.M) { testpg.Main(m) }

type env struct {
	t      *testing.T
	db     *sql.DB
	back   string
	host   *trainertest.Host
	srv    *httptest.Server
	tr     *trainer.Trainer
	cancel context.CancelFunc
	done   chan error
	models map[string]trainer.Factory
	now    func() time.Time
}

func sqliteDB(t *testing.T) *sql.DB {
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "cp.db")+"?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func newEnv(t *testing.T, db *sql.DB, backend string, workers int) *env {
	t.Helper()
	e := &env{t: t, db: db, back: backend, host: trainertest.NewHost(), models: map[string]trainer.Factory{"bigram": bigram.New}}
	e.host.AddKey("key-a", "acme", "key-a-id", true)
	e.host.AddKey("key-ro", "acme", "key-ro-id", false)
	e.host.AddKey("key-b", "other", "key-b-id", true)
	e.start(workers)
	return e
}

func (e *env) start(workers int) {
	e.t.Helper()
	if workers == 0 {
		workers = -1
	}
	tr, err := trainer.New(context.Background(), trainer.Config{DB: e.db, Backend: e.back, Host: e.host, Models: e.models,
		Workers: workers, Lease: 2 * time.Second, Logger: nil, Now: e.now})
	if err != nil {
		e.t.Fatal(err)
	}
	e.tr = tr
	e.srv = httptest.NewServer(tr.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- tr.Run(ctx) }()
	e.t.Cleanup(e.stop)
}

func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	if err := <-e.done; err != nil {
		e.t.Errorf("trainer run: %v", err)
	}
	e.srv.Close()
	e.cancel = nil
}

func (e *env) sdk(key string) *client.ServiceClient {
	s, err := client.NewServiceClient(client.WithBaseURL(e.srv.URL), client.WithAPIKey(key))
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func datums(texts ...string) []client.Datum {
	var out []client.Datum
	for _, s := range texts {
		in := client.TextInput(s[:len(s)-1])
		tgt := make([]float64, len(s)-1)
		for i := 1; i < len(s); i++ {
			tgt[i-1] = float64(s[i])
		}
		out = append(out, client.Datum{ModelInput: in, LossFnInputs: map[string]client.TensorData{"target_tokens": {Data: tgt}}})
	}
	return out
}

func must[T any](t *testing.T, f *client.Future[T], err error) T {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := f.Result(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestTrainingFlow goes through the whole API with the SDK: a DP client,
// steps, the privacy spent (the accountant's value), sampling, a checkpoint
// saved and loaded, an export that verifies as a TGSP package carrying the
// ε, and the audit chain of every completed operation.
func TestTrainingFlow(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { trainingFlow(t, newEnv(t, sqliteDB(t), "sqlite", 1)) })
	t.Run("postgres", func(t *testing.T) {
		db, err := sql.Open("pgx", testpg.Start(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		trainingFlow(t, newEnv(t, db, "postgres", 1))
	})
}

func trainingFlow(t *testing.T, e *env) {
	ctx := context.Background()
	s := e.sdk("key-a")
	tc, err := s.CreateTrainingClient(ctx, client.TrainingClientConfig{BaseModel: "bigram", Seed: 7,
		Adam: client.AdamParams{LearningRate: 0.05},
		DP:   client.DPConfig{Enabled: true, NoiseMultiplier: 0.8, MaxGradNorm: 1, SampleRate: 0.5, TargetEpsilon: 50, TargetDelta: 1e-5}})
	if err != nil {
		t.Fatal(err)
	}
	var text []string
	for range 40 { // a pool of 200, about 100 used per step
		text = append(text, "hello world", "hello there", "help me", "hello again", "yellow hello")
	}
	var first float64
	for step := range 5 {
		f, err := tc.ForwardBackward(ctx, datums(text...), "cross_entropy")
		r := must(t, f, err)
		if r.Sent != len(text) || r.Examples > len(text) {
			t.Fatalf("forward_backward %+v", r)
		}
		if step == 0 {
			first = r.Loss
		}
		o, err := tc.OptimStep(ctx, client.AdamParams{})
		res := must(t, o, err)
		if res.Step != int64(step+1) || res.Epsilon <= 0 {
			t.Fatalf("optim_step %+v", res)
		}
	}
	fw, err := tc.Forward(ctx, datums(text...))
	if after := must(t, fw, err); !(after.Loss < first) {
		t.Errorf("loss %v after 5 steps, %v before", after.Loss, first)
	}
	p, err := tc.Privacy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, err := dpaccount.Epsilon(dpaccount.RDP, []dpaccount.Event{{SampleRate: 0.5, NoiseMultiplier: 0.8, Steps: 5}}, 1e-5)
	if err != nil {
		t.Fatal(err)
	}
	if p.Steps != 5 || math.Abs(p.Epsilon-want.EpsilonHigh) > 1e-9 || p.Accountant != "rdp" || p.RemainingEpsilon != 50-p.Epsilon || p.RemainingSteps <= 0 {
		t.Fatalf("privacy %+v, accountant says ε=%v", p, want.EpsilonHigh)
	}
	seed := uint64(3)
	sf, err := tc.Sample(ctx, client.TextInput("hel"), 2, client.SamplingParams{MaxTokens: 4, Temperature: 0, Seed: &seed})
	if sm := must(t, sf, err); len(sm.Sequences) != 2 || len(sm.Sequences[0].Tokens) != 4 {
		t.Fatalf("sample %+v", sm)
	}
	sv, err := tc.SaveState(ctx, "after-5")
	saved := must(t, sv, err)
	if !strings.HasPrefix(saved.Path, "tinker://"+tc.Info.ID+"/art-") {
		t.Fatalf("save_state %+v", saved)
	}
	// A second client loads the checkpoint: same weights (its exported
	// model's self-test case equals the first's), and the privacy spent
	// carries over.
	tc2, err := s.CreateTrainingClient(ctx, client.TrainingClientConfig{BaseModel: "bigram",
		DP: client.DPConfig{Enabled: true, NoiseMultiplier: 0.8, SampleRate: 0.5, TargetEpsilon: 50}})
	if err != nil {
		t.Fatal(err)
	}
	ld, err := tc2.LoadState(ctx, saved.Path)
	if r := must(t, ld, err); r.Step != 5 {
		t.Fatalf("load_state %+v", r)
	}
	if p2, _ := tc2.Privacy(ctx); math.Abs(p2.Epsilon-p.Epsilon) > 1e-9 || p2.Steps != 5 {
		t.Fatalf("privacy after load %+v, want %+v", p2, p)
	}
	ex, err := tc.Export(ctx, "tiny-lm", "1.0.0")
	exp := must(t, ex, err)
	pkg, err := s.DownloadPackage(ctx, exp.ArtifactID)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(pkg)) != exp.Size {
		t.Fatalf("downloaded %d bytes, export says %d", len(pkg), exp.Size)
	}
	signer, recipient, _ := e.host.PackageKeys("acme")
	p0, err := tgsp.Open(bytes.NewReader(pkg), int64(len(pkg)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p0.Verify(ctx, []*tgsp.SignerPublicKey{signer}, time.Now(), 1); err != nil {
		t.Fatalf("exported package does not verify: %v", err)
	}
	cert, err := tgsp.ParseDPCert(p0.DPCertJSON)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(cert.Epsilon-p.Epsilon) > 1e-9 || cert.Steps != 5 || cert.Accountant != "rdp" || cert.NoiseMultiplier != 0.8 || cert.SamplingRate != 0.5 {
		t.Fatalf("dp_cert %+v, privacy %+v", cert, p)
	}
	ev, err := tgsp.ParseEvidence(p0.EvidenceJSON)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Claims["training_client"] != tc.Info.ID || !strings.HasPrefix(fmt.Sprint(ev.Claims["dataset_digest"]), "salted-sha256:") {
		t.Fatalf("evidence %+v", ev)
	}
	dek, err := p0.UnwrapDEK(recipient)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range p0.Manifest.Files {
		names = append(names, f.Path)
	}
	if fmt.Sprint(names) != "[model.onnx selftest.json tg-model.json]" {
		t.Fatalf("package files %v", names)
	}
	// The exported model runs in ONNX Runtime and reproduces its self-test.
	read := func(name string) []byte {
		r, err := p0.OpenFile(dek, name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if worst, _ := trainertest.SelfTestDiff(t, read("model.onnx"), read("selftest.json")); worst > 1e-4 {
		t.Fatalf("ONNX Runtime differs from the trainer's self-test logits by %v", worst)
	}

	// Every completed operation is in the tenant's audit chain, which
	// verifies; the export's evidence names a head of it.
	chain := e.host.AuditLog("acme")
	if _, err := audit.Verify(chain, audit.VerifyOptions{}); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	count := map[string]int{}
	heads := map[string]bool{}
	for _, en := range chain {
		count[en.Action]++
		heads[en.Hash.String()] = true
	}
	if count["trainer.forward_backward"] != 5 || count["trainer.optim_step"] != 5 || count["trainer.export"] != 1 || count["trainer.create"] != 2 {
		t.Fatalf("audit actions %v", count)
	}
	if !heads[fmt.Sprint(ev.Claims["audit_chain_head"])] {
		t.Fatalf("evidence names audit head %v, not in the chain", ev.Claims["audit_chain_head"])
	}
	if len(e.host.AuditLog("other")) != 0 {
		t.Fatal("another tenant's chain has entries")
	}
}

// TestStrictOrderAndCancel submits work faster than it runs: futures run
// in submission order, a queued future cancelled never runs, a running one
// cancelled leaves the state as before it.
func TestStrictOrderAndCancel(t *testing.T) {
	e := newEnv(t, sqliteDB(t), "sqlite", 2)
	var mu sync.Mutex
	var order []string
	release := make(chan struct{})
	e.models["slow"] = func(cfg client.TrainingClientConfig, dp trainer.DPParams) (trainer.Session, error) {
		s, _ := bigram.New(cfg, dp)
		b := s.(*bigram.Bigram)
		b.Slow = func(ctx context.Context) error {
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return b, nil
	}
	ctx := context.Background()
	s := e.sdk("key-a")
	tc, err := s.CreateTrainingClient(ctx, client.TrainingClientConfig{BaseModel: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	fb1, _ := tc.ForwardBackward(ctx, datums("abc"), "")
	st1, _ := tc.OptimStep(ctx, client.AdamParams{})
	fb2, _ := tc.ForwardBackward(ctx, datums("abd"), "")
	st2, _ := tc.OptimStep(ctx, client.AdamParams{})
	// fb1 is running (held), the rest queued behind it even with two workers.
	waitStatus(t, fb1, "running")
	for _, id := range []string{st1.ID, fb2.ID, st2.ID} {
		if st := status(t, s, id); st != "queued" {
			t.Fatalf("future %s is %s while an earlier one runs", id, st)
		}
	}
	// Cancel the queued second step: it never runs.
	if err := st2.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st2.Result(ctx); client.Code(err) != "CANCELLED" {
		t.Fatalf("cancelled queued future: %v", err)
	}
	close(release)
	for _, f := range []*client.Future[client.ForwardBackwardResult]{fb1, fb2} {
		if _, err := f.Result(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r1, err := st1.Result(ctx)
	if err != nil || r1.Step != 1 {
		t.Fatalf("step 1: %+v %v", r1, err)
	}
	info, _ := s.TrainingClientByID(ctx, tc.Info.ID)
	if info.Info.Steps != 1 {
		t.Fatalf("steps %d: the cancelled step ran", info.Info.Steps)
	}
	mu.Lock()
	_ = order
	mu.Unlock()

	// A running future cancelled: the client's state is as before it.
	release2 := make(chan struct{})
	_ = release2
	e.models["hold"] = func(cfg client.TrainingClientConfig, dp trainer.DPParams) (trainer.Session, error) {
		s, _ := bigram.New(cfg, dp)
		b := s.(*bigram.Bigram)
		b.Slow = func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
		return b, nil
	}
	tc2, _ := s.CreateTrainingClient(ctx, client.TrainingClientConfig{BaseModel: "hold"})
	fb, _ := tc2.ForwardBackward(ctx, datums("xyz"), "")
	waitStatus(t, fb, "running")
	if err := fb.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := fb.Result(ctx); client.Code(err) != "CANCELLED" {
		t.Fatalf("cancelled running future: %v", err)
	}
	if err := fb.Cancel(ctx); client.Code(err) != "ALREADY_FINISHED" {
		t.Fatalf("cancel twice: %v", err)
	}
}

func status(t *testing.T, s *client.ServiceClient, id string) string {
	v, err := client.FutureOf[json.RawMessage](s, id).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v.Status
}

func waitStatus[T any](t *testing.T, f *client.Future[T], want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := f.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if v.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("future %s is %s, want %s", f.ID, v.Status, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func post(t *testing.T, e *env, key, path, body string, hdr ...string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	return fmt.Sprint(e["code"])
}

// TestIdempotencyBudgetIsolation: a retried submission returns the same
// future; a step past the privacy budget is refused; another tenant sees
// nothing; read-only keys submit nothing.
func TestIdempotencyBudgetIsolation(t *testing.T) {
	e := newEnv(t, sqliteDB(t), "sqlite", 1)
	code, c := post(t, e, "key-a", "/v1/training_clients",
		`{"base_model":"bigram","dp_config":{"enabled":true,"noise_multiplier":1.0,"sample_rate":0.1,"target_epsilon":5}}`)
	if code != 201 {
		t.Fatalf("create: %d %v", code, c)
	}
	id := c["id"].(string)
	body := `{"data":[{"model_input":{"chunks":[{"tokens":[104,105]}]},"loss_fn_inputs":{"target_tokens":{"data":[105,33]}}}]}`
	c1, f1 := post(t, e, "key-a", "/v1/training_clients/"+id+"/forward_backward", body, "Idempotency-Key", "k1")
	c2, f2 := post(t, e, "key-a", "/v1/training_clients/"+id+"/forward_backward", body, "Idempotency-Key", "k1")
	if c1 != 202 || c2 != 200 || f1["future_id"] != f2["future_id"] {
		t.Fatalf("retry: %d %v / %d %v", c1, f1, c2, f2)
	}
	if c3, r := post(t, e, "key-a", "/v1/training_clients/"+id+"/forward", body, "Idempotency-Key", "k1"); c3 != 409 || errCode(r) != "IDEMPOTENCY_CONFLICT" {
		t.Fatalf("key reused for another request: %d %v", c3, r)
	}
	// The budget: steps until refused, at submission, counting queued ones.
	steps := 0
	for ; steps < 100; steps++ {
		code, r := post(t, e, "key-a", "/v1/training_clients/"+id+"/optim_step", `{}`)
		if code == 409 && errCode(r) == "DP_BUDGET_EXCEEDED" {
			break
		}
		if code != 202 {
			t.Fatalf("optim_step: %d %v", code, r)
		}
	}
	want := 0
	for ; ; want++ {
		r, _ := dpaccount.Epsilon(dpaccount.RDP, []dpaccount.Event{{SampleRate: 0.1, NoiseMultiplier: 1, Steps: want + 1}}, 1e-5)
		if r.EpsilonHigh > 5 {
			break
		}
	}
	if steps != want || steps == 0 {
		t.Fatalf("budget allowed %d steps, the accountant %d", steps, want)
	}
	// Other tenants and read-only keys.
	req, _ := http.NewRequest("GET", e.srv.URL+"/v1/training_clients/"+id, nil)
	req.Header.Set("Authorization", "Bearer key-b")
	if resp, _ := http.DefaultClient.Do(req); resp.StatusCode != 404 {
		t.Fatalf("other tenant: %d", resp.StatusCode)
	}
	if code, r := post(t, e, "key-ro", "/v1/training_clients/"+id+"/optim_step", `{}`); code != 403 {
		t.Fatalf("read-only key: %d %v", code, r)
	}
	if code, _ := post(t, e, "nope", "/v1/training_clients", `{}`); code != 401 {
		t.Fatalf("bad key: %d", code)
	}
}

// TestBadRequests: every malformed input is a 4xx with a stable code, and
// nothing is queued.
func TestBadRequests(t *testing.T) {
	e := newEnv(t, sqliteDB(t), "sqlite", 1)
	_, c := post(t, e, "key-a", "/v1/training_clients", `{"base_model":"bigram"}`)
	id := c["id"].(string)
	fb := "/v1/training_clients/" + id + "/forward_backward"
	for _, tc := range []struct{ name, path, body, code string }{
		{"unknown model", "/v1/training_clients", `{"base_model":"gpt-9"}`, "UNKNOWN_BASE_MODEL"},
		{"no model", "/v1/training_clients", `{}`, "INVALID_ARGUMENT"},
		{"unknown field", "/v1/training_clients", `{"base_model":"bigram","colour":1}`, "INVALID_ARGUMENT"},
		{"dp without noise", "/v1/training_clients", `{"base_model":"bigram","dp_config":{"enabled":true,"sample_rate":0.1}}`, "INVALID_ARGUMENT"},
		{"dp bad rate", "/v1/training_clients", `{"base_model":"bigram","dp_config":{"enabled":true,"sample_rate":2,"noise_multiplier":1}}`, "INVALID_ARGUMENT"},
		{"dp bad accountant", "/v1/training_clients", `{"base_model":"bigram","dp_config":{"enabled":true,"sample_rate":0.1,"noise_multiplier":1,"accountant":"gdp"}}`, "INVALID_ARGUMENT"},
		{"malformed", fb, `{"data":[`, "INVALID_ARGUMENT"},
		{"empty", fb, `{}`, "INVALID_ARGUMENT"},
		{"both forms", fb, `{"data":[{"model_input":{"chunks":[{"tokens":[1]}]},"loss_fn_inputs":{"target_tokens":{"data":[2]}}}],"input_ids":[[1,2]]}`, "INVALID_ARGUMENT"},
		{"token range", fb, `{"input_ids":[[1,300]]}`, "INVALID_ARGUMENT"},
		{"target mismatch", fb, `{"data":[{"model_input":{"chunks":[{"tokens":[1,2]}]},"loss_fn_inputs":{"target_tokens":{"data":[2]}}}]}`, "INVALID_ARGUMENT"},
		{"bad loss", fb, `{"loss_fn":"mse","input_ids":[[1,2]]}`, "INVALID_ARGUMENT"},
		{"negative weight", fb, `{"data":[{"model_input":{"chunks":[{"tokens":[1]}]},"loss_fn_inputs":{"target_tokens":{"data":[2]},"weights":{"data":[-1]}}}]}`, "INVALID_ARGUMENT"},
		{"unknown client", "/v1/training_clients/tc-nope/forward_backward", `{"input_ids":[[1,2]]}`, "NOT_FOUND"},
		{"bad sample", "/v1/training_clients/" + id + "/sample", `{"prompt":{"chunks":[]},"sampling_params":{"temperature":0}}`, "INVALID_ARGUMENT"},
		{"bad load path", "/v1/training_clients/" + id + "/load_state", `{"path":"/etc/passwd"}`, "INVALID_ARGUMENT"},
		{"bad adam", "/v1/training_clients/" + id + "/optim_step", `{"adam_params":{"beta1":1.5}}`, "INVALID_ARGUMENT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, r := post(t, e, "key-a", tc.path, tc.body)
			if code < 400 || code >= 500 || errCode(r) != tc.code {
				t.Fatalf("%d %v, want 4xx %s", code, r, tc.code)
			}
		})
	}
	// A load of another client's checkpoint that does not exist fails the future.
	s := e.sdk("key-a")
	tc, _ := s.TrainingClientByID(context.Background(), id)
	f, err := tc.LoadState(context.Background(), "tinker://"+id+"/art-missing")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Result(context.Background()); client.Code(err) != "NOT_FOUND" {
		t.Fatalf("missing checkpoint: %v", err)
	}
}

// TestRestartLosesNothing: work accepted by a trainer that stops before
// running it runs after the next start; a future whose worker died while
// running runs again once its lease expires.
func TestRestartLosesNothing(t *testing.T) {
	db := sqliteDB(t)
	e := newEnv(t, db, "sqlite", 0) // API only, no workers
	ctx := context.Background()
	s := e.sdk("key-a")
	tc, err := s.CreateTrainingClient(ctx, client.TrainingClientConfig{BaseModel: "bigram"})
	if err != nil {
		t.Fatal(err)
	}
	fb, _ := tc.ForwardBackward(ctx, datums("restart"), "")
	st, _ := tc.OptimStep(ctx, client.AdamParams{})
	e.stop()
	e.start(1) // a new process over the same database
	s = e.sdk("key-a")
	if _, err := client.FutureOf[client.ForwardBackwardResult](s, fb.ID).Result(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := client.FutureOf[client.OptimStepResult](s, st.ID).Result(ctx)
	if err != nil || r.Step != 1 {
		t.Fatalf("step after restart: %+v %v", r, err)
	}
	if errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// TestKeyRotation: after the tenant's data key is rotated, what was sealed
// before (a checkpoint, results) still opens, and new results are sealed
// under the new key version.
func TestKeyRotation(t *testing.T) {
	db := sqliteDB(t)
	e := newEnv(t, db, "sqlite", 1)
	ctx := context.Background()
	s := e.sdk("key-a")
	tc, err := s.CreateTrainingClient(ctx, client.TrainingClientConfig{BaseModel: "bigram"})
	if err != nil {
		t.Fatal(err)
	}
	fb, err := tc.ForwardBackward(ctx, datums("rotate me"), "")
	must(t, fb, err)
	sv, err := tc.SaveState(ctx, "before")
	saved := must(t, sv, err)
	if err := e.host.Rotate(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	// Old result and checkpoint open; the load seals its new state and
	// result under version 2.
	if _, err := fb.Result(ctx); err != nil {
		t.Fatalf("result sealed before the rotation: %v", err)
	}
	ld, err := tc.LoadState(ctx, saved.Path)
	must(t, ld, err)
	versions := func(id string) (uint32, uint32) {
		var res, state []byte
		if err := db.QueryRow(`SELECT f.result, c.state FROM trainer_futures f JOIN trainer_clients c ON c.id = f.client_id WHERE f.id = ?`, id).Scan(&res, &state); err != nil {
			t.Fatal(err)
		}
		rv, err := kek.EnvelopeKeyVersion(res)
		if err != nil {
			t.Fatal(err)
		}
		sv, err := kek.EnvelopeKeyVersion(state)
		if err != nil {
			t.Fatal(err)
		}
		return rv, sv
	}
	if r, _ := versions(fb.ID); r != 1 {
		t.Fatalf("result before the rotation sealed under version %d", r)
	}
	if r, st := versions(ld.ID); r != 2 || st != 2 {
		t.Fatalf("after the rotation: result v%d, state v%d, want v2", r, st)
	}
}
