package trainer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"math/big"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tensorguard/tensorguardflow/trainer/client"
	"github.com/tensorguard/tensorguardflow/trainer/internal/jobs"
)

// Operations a future runs.
const (
	opForwardBackward = "forward_backward"
	opForward         = "forward"
	opOptimStep       = "optim_step"
	opSample          = "sample"
	opSaveState       = "save_state"
	opLoadState       = "load_state"
	opExport          = "export"
)

// Trainer is TG-Tinker: the API, the job queue's workers and the sessions
// they hold.
type Trainer struct {
	cfg   Config
	log   *slog.Logger
	store *jobs.Store
	owner string
	wake  chan struct{}

	mu       sync.Mutex
	sessions map[string]*live // client id → the session as of stateSeq
}

// live is a session held by this process, current as of the future seq
// that last wrote its client's state.
type live struct {
	s        Session
	stateSeq int64
	data     hash.Hash // running digest of the examples sent (salted)
	pool     int64     // the most examples sent to one forward_backward
}

// New opens the trainer's tables (migrating them) over cfg.DB.
func New(ctx context.Context, cfg Config) (*Trainer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st, err := jobs.Open(ctx, cfg.DB, cfg.Backend, cfg.Now)
	if err != nil {
		return nil, err
	}
	return &Trainer{cfg: cfg, log: cfg.Logger, store: st, owner: jobs.NewID("worker"),
		wake: make(chan struct{}, 1), sessions: map[string]*live{}}, nil
}

// Run runs the workers and the result pruner until ctx ends.
func (t *Trainer) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for range max(t.cfg.Workers, 0) {
		g.Go(func() error { return t.work(ctx) })
	}
	g.Go(func() error {
		tick := time.NewTicker(time.Minute)
		defer tick.Stop()
		for {
			if _, err := t.store.Prune(ctx); err != nil && ctx.Err() == nil {
				t.log.Warn("prune expired results", "err", err)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
	})
	return g.Wait()
}

func (t *Trainer) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// work claims and runs futures until ctx ends. A store error is logged and
// retried: the database may come back.
func (t *Trainer) work(ctx context.Context) error {
	idle := 50 * time.Millisecond
	for ctx.Err() == nil {
		f, err := t.store.Claim(ctx, t.owner, t.cfg.Lease)
		switch {
		case err == nil:
			idle = 50 * time.Millisecond
			t.runFuture(ctx, f)
			continue
		case errors.Is(err, jobs.ErrNotFound):
		case ctx.Err() != nil:
			return nil
		default:
			t.log.Warn("claim a future", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-t.wake:
		case <-time.After(idle):
			idle = min(idle*2, time.Second)
		}
	}
	return nil
}

// opError is a failure with a stable code for the API.
type opError struct {
	code string
	msg  string
}

func (e *opError) Error() string { return e.code + ": " + e.msg }

func failf(code, format string, args ...any) error {
	return &opError{code: code, msg: fmt.Sprintf(format, args...)}
}

// outcome of running one future's operation.
type outcome struct {
	result   any
	changed  bool // the session's state changed
	steps    int64
	ledger   ledger
	audit    map[string]any
	artifact *jobs.Artifact
}

// runFuture runs f, keeping its lease renewed, and records how it ended
// together with the client's new state.
func (t *Trainer) runFuture(ctx context.Context, f jobs.Future) {
	log := t.log.With("future", f.ID, "client", f.ClientID, "op", f.Op)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		tick := time.NewTicker(t.cfg.Lease / 3)
		defer tick.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-tick.C:
				stop, err := t.store.Renew(ctx, f.ID, t.owner, t.cfg.Lease)
				if stop || errors.Is(err, jobs.ErrNotFound) {
					cancel() // cancelled, or the lease went to another worker
					return
				}
			}
		}
	}()
	out, state, err := t.execute(rctx, f)
	cancel()
	<-renewDone

	o := jobs.Outcome{Status: jobs.StatusSucceeded}
	switch {
	case err == nil:
		var sealErr error
		o.Result, sealErr = t.sealJSON(ctx, f.Tenant, "result", f.ID, out.result)
		if sealErr == nil && out.changed {
			o.State, sealErr = t.seal(ctx, f.Tenant, "state", f.ClientID, state)
		}
		if sealErr != nil {
			err = sealErr
			break
		}
		if out.artifact != nil {
			if err = t.store.PutArtifact(ctx, *out.artifact); err != nil {
				break
			}
		}
		o.StepsDelta = out.steps
		if out.ledger != nil {
			o.Ledger = out.ledger.String()
		}
	case ctx.Err() != nil:
		return // shutting down: the lease expires and the future runs again
	}
	if err != nil {
		t.drop(f.ClientID) // the in-memory session may hold half an operation
		var oe *opError
		switch {
		case errors.As(err, &oe):
			o.Status, o.ErrorCode, o.ErrorMsg = jobs.StatusFailed, oe.code, oe.msg
		case errors.Is(err, context.Canceled):
			o.Status, o.ErrorCode, o.ErrorMsg = jobs.StatusCancelled, "CANCELLED", "cancelled while running; the client's state is as before it"
		default:
			o.Status, o.ErrorCode, o.ErrorMsg = jobs.StatusFailed, "INTERNAL", err.Error()
			log.Error("future failed", "err", err)
		}
	}
	if err := t.store.Finish(ctx, f, t.owner, o, t.cfg.ResultTTL); err != nil {
		t.drop(f.ClientID)
		if !errors.Is(err, jobs.ErrNotFound) {
			log.Error("record the outcome", "err", err)
		}
		return
	}
	if o.Status == jobs.StatusSucceeded && out.changed {
		t.mu.Lock()
		if l := t.sessions[f.ClientID]; l != nil {
			l.stateSeq = f.Seq
		}
		t.mu.Unlock()
	}
	details := map[string]any{"future": f.ID, "op": f.Op, "status": o.Status}
	if o.ErrorCode != "" {
		details["error"] = o.ErrorCode
	}
	for k, v := range out.audit {
		details[k] = v
	}
	if _, err := t.cfg.Host.Audit(ctx, f.Tenant, f.Actor, "trainer."+f.Op, f.ClientID, details); err != nil {
		log.Error("audit", "err", err)
	}
}

func (t *Trainer) drop(clientID string) {
	t.mu.Lock()
	delete(t.sessions, clientID)
	t.mu.Unlock()
}

// clientConfig decodes a stored client configuration.
func clientConfig(c jobs.Client) (client.TrainingClientConfig, DPParams, error) {
	var cfg client.TrainingClientConfig
	if err := json.Unmarshal([]byte(c.Config), &cfg); err != nil {
		return cfg, DPParams{}, fmt.Errorf("stored client config: %w", err)
	}
	dp, err := resolveDP(&cfg.DP)
	return cfg, dp, err
}

// session returns the client's session as of its stored state, from this
// process's cache when current.
func (t *Trainer) session(ctx context.Context, c jobs.Client, cfg client.TrainingClientConfig, dp DPParams) (*live, error) {
	t.mu.Lock()
	l := t.sessions[c.ID]
	t.mu.Unlock()
	if l != nil && l.stateSeq == c.StateSeq {
		return l, nil
	}
	factory := t.cfg.Models[cfg.BaseModel]
	if factory == nil {
		return nil, failf("UNKNOWN_BASE_MODEL", "base model %q is not served here", cfg.BaseModel)
	}
	s, err := factory(cfg, dp)
	if err != nil {
		return nil, err
	}
	l = &live{s: s, stateSeq: c.StateSeq, data: sha256.New()}
	if c.State != nil {
		raw, err := t.open(ctx, c.Tenant, "state", c.ID, c.State)
		if err != nil {
			return nil, err
		}
		var st storedState
		if err := json.Unmarshal(raw, &st); err != nil {
			return nil, fmt.Errorf("stored state: %w", err)
		}
		if err := s.UnmarshalState(st.Session); err != nil {
			return nil, fmt.Errorf("stored state: %w", err)
		}
		if err := l.data.(encoding.BinaryUnmarshaler).UnmarshalBinary(st.DataDigest); err != nil {
			return nil, fmt.Errorf("stored data digest: %w", err)
		}
		l.pool = st.Pool
	} else {
		// A secret salt, first in the digest: the digest published in an
		// export's evidence commits to the data without letting anyone
		// test a guess of it. The salt lives only inside the sealed state
		// (the digest's marshalled state holds it).
		var salt [32]byte
		_, _ = rand.Read(salt[:]) // crypto/rand.Read does not fail (Go 1.24+)
		l.data.Write(salt[:])
	}
	t.mu.Lock()
	t.sessions[c.ID] = l
	t.mu.Unlock()
	return l, nil
}

// storedState is what a client's sealed state holds.
type storedState struct {
	Session    []byte `json:"session"`
	DataDigest []byte `json:"data_digest"` // marshalled SHA-256 state
	Pool       int64  `json:"pool"`
}

func (l *live) marshal() ([]byte, error) {
	s, err := l.s.MarshalState()
	if err != nil {
		return nil, err
	}
	d, err := l.data.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, err
	}
	return json.Marshal(storedState{Session: s, DataDigest: d, Pool: l.pool})
}

// execute runs f's operation and returns its outcome and, when the state
// changed, the new state's plaintext.
func (t *Trainer) execute(ctx context.Context, f jobs.Future) (out outcome, state []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	c, err := t.store.GetClient(ctx, f.Tenant, f.ClientID)
	if err != nil {
		return out, nil, err
	}
	cfg, dp, err := clientConfig(c)
	if err != nil {
		return out, nil, err
	}
	led, err := parseLedger(c.Ledger)
	if err != nil {
		return out, nil, err
	}
	l, err := t.session(ctx, c, cfg, dp)
	if err != nil {
		return out, nil, err
	}
	req, err := t.open(ctx, f.Tenant, "request", f.ID, f.Request)
	if err != nil {
		return out, nil, err
	}
	switch f.Op {
	case opForwardBackward, opForward:
		var r client.ForwardBackwardRequest
		if err := json.Unmarshal(req, &r); err != nil {
			return out, nil, err
		}
		ex, err := examples(r, l.s.Context())
		if err != nil {
			return out, nil, failf("INVALID_ARGUMENT", "%v", err)
		}
		res := client.ForwardBackwardResult{Sent: len(ex)}
		if f.Op == opForward {
			st, err := l.s.Forward(ctx, ex)
			if err != nil {
				return out, nil, err
			}
			res.Loss, res.Examples = st.Loss, st.Examples
			out.result = res
			return out, nil, nil
		}
		used, expected := ex, float64(len(ex))
		if dp.Enabled {
			// Poisson sampling over the examples sent, as the accountant
			// assumes; the noised sum is normalized by the expected count.
			used, err = poisson(ex, dp.SampleRate)
			if err != nil {
				return out, nil, err
			}
			expected = dp.SampleRate * float64(len(ex))
		}
		digestExamples(l.data, ex)
		l.pool = max(l.pool, int64(len(ex)))
		st, err := l.s.ForwardBackward(ctx, used, expected)
		if err != nil {
			return out, nil, err
		}
		res.Loss, res.Examples, res.ClipFraction = st.Loss, st.Examples, st.ClipFraction
		out.result, out.changed = res, true
		out.audit = map[string]any{"examples": len(used), "sent": len(ex)}
	case opOptimStep:
		var r client.OptimStepRequest
		if err := json.Unmarshal(req, &r); err != nil {
			return out, nil, err
		}
		if dp.Enabled {
			if err := checkBudget(led, cfg.DP, 1); err != nil {
				return out, nil, failf("DP_BUDGET_EXCEEDED", "%v", err)
			}
		}
		if err := l.s.OptimStep(ctx, mergeAdam(cfg.Adam, r.AdamParams)); err != nil {
			return out, nil, err
		}
		res := client.OptimStepResult{Step: c.Steps + 1}
		if dp.Enabled {
			led = led.add(dp.SampleRate, dp.NoiseMultiplier, 1)
			if res.Epsilon, err = led.epsilon(cfg.DP); err != nil {
				return out, nil, err
			}
			out.ledger = led
		}
		out.result, out.changed, out.steps = res, true, 1
		out.audit = map[string]any{"step": res.Step, "epsilon": res.Epsilon}
	case opSample:
		var r client.SampleRequest
		if err := json.Unmarshal(req, &r); err != nil {
			return out, nil, err
		}
		prompt := r.Prompt.Tokens()
		p := make([]int32, len(prompt))
		for i, v := range prompt {
			p[i] = int32(v)
		}
		seqs, err := l.s.Sample(ctx, p, max(r.NumSamples, 1), r.SamplingParams)
		if err != nil {
			return out, nil, err
		}
		out.result = client.SampleResult{Sequences: seqs}
	case opSaveState:
		var r client.SaveStateRequest
		if err := json.Unmarshal(req, &r); err != nil {
			return out, nil, err
		}
		raw, err := l.marshal()
		if err != nil {
			return out, nil, err
		}
		cp, _ := json.Marshal(checkpoint{ClientID: c.ID, Config: cfg, Steps: c.Steps, Ledger: led, State: raw})
		a, err := t.artifact(ctx, c, "checkpoint", r.Name, cp)
		if err != nil {
			return out, nil, err
		}
		out.artifact = a
		out.result = client.SaveStateResult{Path: "tinker://" + c.ID + "/" + a.ID}
		out.audit = map[string]any{"artifact": a.ID}
	case opLoadState:
		var r client.LoadStateRequest
		if err := json.Unmarshal(req, &r); err != nil {
			return out, nil, err
		}
		cp, err := t.loadCheckpoint(ctx, f.Tenant, r.Path)
		if err != nil {
			return out, nil, err
		}
		if cp.Config.BaseModel != cfg.BaseModel || cp.Config.LoRA != cfg.LoRA {
			return out, nil, failf("INVALID_ARGUMENT", "checkpoint %s is of base model %s (LoRA %+v), this client trains %s (LoRA %+v)",
				r.Path, cp.Config.BaseModel, cp.Config.LoRA, cfg.BaseModel, cfg.LoRA)
		}
		var st storedState
		if err := json.Unmarshal(cp.State, &st); err != nil {
			return out, nil, err
		}
		if err := l.s.UnmarshalState(st.Session); err != nil {
			return out, nil, err
		}
		if err := l.data.(encoding.BinaryUnmarshaler).UnmarshalBinary(st.DataDigest); err != nil {
			return out, nil, err
		}
		l.pool = st.Pool
		// The privacy spent by the checkpoint's training carries over: it
		// is added to what this client has spent already.
		merged := led
		for _, e := range cp.Ledger {
			merged = merged.add(e.SampleRate, e.NoiseMultiplier, e.Steps)
		}
		out.ledger = merged
		out.result, out.changed, out.steps = client.LoadStateResult{Step: c.Steps + cp.Steps}, true, cp.Steps
		out.audit = map[string]any{"from": r.Path}
	case opExport:
		var r client.ExportRequest
		if err := json.Unmarshal(req, &r); err != nil {
			return out, nil, err
		}
		res, a, err := t.export(ctx, c, cfg, led, l, r, f.Actor)
		if err != nil {
			return out, nil, err
		}
		out.artifact, out.result = a, res
		out.audit = map[string]any{"artifact": a.ID, "package": r.Name + "@" + r.Version}
	default:
		return out, nil, failf("INVALID_ARGUMENT", "unknown operation %q", f.Op)
	}
	if out.changed {
		if state, err = l.marshal(); err != nil {
			return out, nil, err
		}
	}
	return out, state, nil
}

// checkpoint is a saved state (save_state), sealed as an artifact.
type checkpoint struct {
	ClientID string                      `json:"client_id"`
	Config   client.TrainingClientConfig `json:"config"`
	Steps    int64                       `json:"steps"`
	Ledger   ledger                      `json:"ledger"`
	State    []byte                      `json:"state"`
}

func mergeAdam(base, over client.AdamParams) client.AdamParams {
	pick := func(a, b float64) float64 {
		if b != 0 {
			return b
		}
		return a
	}
	return client.AdamParams{
		LearningRate: pick(base.LearningRate, over.LearningRate),
		Beta1:        pick(base.Beta1, over.Beta1),
		Beta2:        pick(base.Beta2, over.Beta2),
		Eps:          pick(base.Eps, over.Eps),
		WeightDecay:  pick(base.WeightDecay, over.WeightDecay),
	}
}

// poisson keeps each example independently with probability q, drawn from
// the operating system's generator (crypto/rand).
func poisson(ex []Example, q float64) ([]Example, error) {
	if q >= 1 {
		return ex, nil
	}
	const scale = 1 << 53
	limit := big.NewInt(scale)
	threshold := int64(q * scale)
	var out []Example
	for _, e := range ex {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, err
		}
		if n.Int64() < threshold {
			out = append(out, e)
		}
	}
	return out, nil
}

// digestExamples adds the examples to the running dataset digest in a
// canonical encoding.
func digestExamples(h hash.Hash, ex []Example) {
	var b [4]byte
	for _, e := range ex {
		binary.BigEndian.PutUint32(b[:], uint32(len(e.Input)))
		h.Write(b[:])
		for i := range e.Input {
			binary.BigEndian.PutUint32(b[:], uint32(e.Input[i]))
			h.Write(b[:])
			binary.BigEndian.PutUint32(b[:], uint32(e.Targets[i]))
			h.Write(b[:])
			binary.BigEndian.PutUint32(b[:], mathFloat32bits(e.Weights[i]))
			h.Write(b[:])
		}
	}
}

func digestHex(h hash.Hash) string {
	// Sum on a copy: h keeps accumulating.
	m, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
	c := sha256.New()
	_ = c.(encoding.BinaryUnmarshaler).UnmarshalBinary(m)
	return hex.EncodeToString(c.Sum(nil))
}
