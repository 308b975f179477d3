package trainer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/tensorguard/tensorguardflow/trainer/client"
	"github.com/tensorguard/tensorguardflow/trainer/internal/jobs"
)

// apiError is an error with its HTTP status and stable code.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func apiErr(status int, code, format string, args ...any) error {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

type ctxKey int

const ctxRequestID ctxKey = 1

// Handler returns the TG-Tinker API (/v1/…), to be mounted by the control
// plane beside its own.
func (t *Trainer) Handler() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, write bool, fn func(w http.ResponseWriter, r *http.Request, p Principal) error) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			p, err := t.cfg.Host.Authenticate(r)
			switch {
			case errors.Is(err, ErrUnauthenticated):
				w.Header().Set("WWW-Authenticate", `Bearer realm="tensorguardflow"`)
				t.writeError(w, r, apiErr(http.StatusUnauthorized, "UNAUTHENTICATED", "missing or invalid API key (Authorization: Bearer tgk_…)"))
				return
			case err != nil:
				t.writeError(w, r, err)
				return
			case write && !p.CanWrite:
				t.writeError(w, r, apiErr(http.StatusForbidden, "FORBIDDEN", "this API key may not submit training work"))
				return
			}
			if err := fn(w, r, p); err != nil {
				t.writeError(w, r, err)
			}
		})
	}
	handle("POST /v1/training_clients", true, t.createClient)
	handle("GET /v1/training_clients", false, t.listClients)
	handle("GET /v1/training_clients/{id}", false, t.getClient)
	handle("GET /v1/training_clients/{id}/privacy", false, t.privacy)
	for _, op := range []string{opForwardBackward, opForward, opOptimStep, opSample, opSaveState, opLoadState, opExport} {
		handle("POST /v1/training_clients/{id}/"+op, true, func(w http.ResponseWriter, r *http.Request, p Principal) error {
			return t.submit(w, r, p, op)
		})
	}
	handle("GET /v1/futures/{id}", false, t.getFuture)
	handle("GET /v1/futures/{id}/result", false, t.futureResult)
	handle("POST /v1/futures/{id}/cancel", true, t.cancelFuture)
	handle("GET /v1/artifacts/{id}", false, t.downloadArtifact)
	mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPI)
	})
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		t.writeError(w, r, apiErr(http.StatusNotFound, "NOT_FOUND", "no route %s %s (see /v1/openapi.json)", r.Method, r.URL.Path))
	})
	return t.middleware(mux)
}

// middleware gives every request an id, turns a panic into a 500 and logs
// one line per request (never headers: Authorization holds a secret).
func (t *Trainer) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-ID")
		if id == "" || len(id) > 64 {
			var b [8]byte
			_, _ = rand.Read(b[:])
			id = "req-" + hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-ID", id)
		r = r.WithContext(context.WithValue(r.Context(), ctxRequestID, id))
		start := time.Now()
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				t.log.Error("panic serving request", "request_id", id, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
				t.writeError(w, r, errors.New("internal error"))
			}
			t.log.Debug("request", "method", r.Method, "path", r.URL.Path, "request_id", id, "duration", time.Since(start))
		}()
		next.ServeHTTP(w, r)
	})
}

func (t *Trainer) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		switch {
		case errors.Is(err, jobs.ErrNotFound):
			ae = &apiError{http.StatusNotFound, "NOT_FOUND", "not found"}
		default:
			t.log.Error("request failed", "path", r.URL.Path, "err", err)
			ae = &apiError{http.StatusInternalServerError, "INTERNAL", "internal error; quote the request id to the operator"}
		}
	}
	id, _ := r.Context().Value(ctxRequestID).(string)
	writeJSON(w, ae.status, map[string]any{"error": client.Error{Code: ae.code, Message: ae.msg, RequestID: id}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads a JSON body strictly: unknown fields, trailing data and an
// oversized body are 400/413.
func (t *Trainer) decode(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, t.cfg.MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return apiErr(http.StatusRequestEntityTooLarge, "TOO_LARGE", "request body exceeds %d bytes", t.cfg.MaxBodyBytes)
		}
		return apiErr(http.StatusBadRequest, "INVALID_ARGUMENT", "malformed request body: %v", err)
	}
	if dec.More() {
		return apiErr(http.StatusBadRequest, "INVALID_ARGUMENT", "malformed request body: data after the JSON object")
	}
	return nil
}

func (t *Trainer) createClient(w http.ResponseWriter, r *http.Request, p Principal) error {
	var cfg client.TrainingClientConfig
	if err := t.decode(w, r, &cfg); err != nil {
		return err
	}
	if cfg.BaseModel == "" {
		return apiErr(http.StatusBadRequest, "INVALID_ARGUMENT", "base_model is required (served: %s)", t.modelNames())
	}
	factory := t.cfg.Models[cfg.BaseModel]
	if factory == nil {
		return apiErr(http.StatusBadRequest, "UNKNOWN_BASE_MODEL", "base model %q is not served (served: %s)", cfg.BaseModel, t.modelNames())
	}
	if cfg.LoRA.Rank < 0 || cfg.LoRA.Rank > 256 || cfg.LoRA.Alpha < 0 {
		return apiErr(http.StatusBadRequest, "INVALID_ARGUMENT", "lora: rank %d must be 1–256 (0: default) and alpha non-negative", cfg.LoRA.Rank)
	}
	if err := checkAdam(cfg.Adam); err != nil {
		return apiErr(http.StatusBadRequest, "INVALID_ARGUMENT", "adam: %v", err)
	}
	dp, err := resolveDP(&cfg.DP)
	if err != nil {
		return apiErr(http.StatusBadRequest, "INVALID_ARGUMENT", "%v", err)
	}
	// Building the session now checks the configuration against the model.
	s, err := factory(cfg, dp)
	if err != nil {
		return apiErr(http.StatusBadRequest, "INVALID_ARGUMENT", "%v", err)
	}
	raw, _ := json.Marshal(cfg)
	c := jobs.Client{ID: jobs.NewID("tc"), Tenant: p.Tenant, Config: string(raw), CreatedAt: t.cfg.Now().UTC()}
	if err := t.store.CreateClient(r.Context(), c); err != nil {
		return err
	}
	if _, err := t.cfg.Host.Audit(r.Context(), p.Tenant, p.KeyID, "trainer.create", c.ID,
		map[string]any{"base_model": cfg.BaseModel, "dp": cfg.DP.Enabled, "target_epsilon": cfg.DP.TargetEpsilon}); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, client.TrainingClientInfo{ID: c.ID, Config: cfg, CreatedAt: c.CreatedAt, BaseModelSHA256: s.BaseSHA256()})
	return nil
}

func checkAdam(a client.AdamParams) error {
	switch {
	case a.LearningRate < 0 || a.LearningRate > 10:
		return fmt.Errorf("learning_rate %v out of range", a.LearningRate)
	case a.Beta1 < 0 || a.Beta1 >= 1 || a.Beta2 < 0 || a.Beta2 >= 1:
		return fmt.Errorf("betas must be in [0, 1)")
	case a.Eps < 0 || a.WeightDecay < 0:
		return fmt.Errorf("eps and weight_decay must not be negative")
	}
	return nil
}

func (t *Trainer) modelNames() string {
	var names []string
	for n := range t.cfg.Models {
		names = append(names, n)
	}
	return strings.Join(names, ", ")
}

func clientView(c jobs.Client) (client.TrainingClientInfo, error) {
	var cfg client.TrainingClientConfig
	if err := json.Unmarshal([]byte(c.Config), &cfg); err != nil {
		return client.TrainingClientInfo{}, err
	}
	return client.TrainingClientInfo{ID: c.ID, Config: cfg, CreatedAt: c.CreatedAt, Steps: c.Steps}, nil
}

func (t *Trainer) listClients(w http.ResponseWriter, r *http.Request, p Principal) error {
	cs, err := t.store.ListClients(r.Context(), p.Tenant)
	if err != nil {
		return err
	}
	out := []client.TrainingClientInfo{}
	for _, c := range cs {
		v, err := clientView(c)
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"training_clients": out})
	return nil
}

func (t *Trainer) getClient(w http.ResponseWriter, r *http.Request, p Principal) error {
	c, err := t.store.GetClient(r.Context(), p.Tenant, r.PathValue("id"))
	if err != nil {
		return notFound(err, "training client %s", r.PathValue("id"))
	}
	v, err := clientView(c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func notFound(err error, format string, args ...any) error {
	if errors.Is(err, jobs.ErrNotFound) {
		return apiErr(http.StatusNotFound, "NOT_FOUND", "no "+format, args...)
	}
	return err
}

func (t *Trainer) privacy(w http.ResponseWriter, r *http.Request, p Principal) error {
	c, err := t.store.GetClient(r.Context(), p.Tenant, r.PathValue("id"))
	if err != nil {
		return notFound(err, "training client %s", r.PathValue("id"))
	}
	cfg, _, err := clientConfig(c)
	if err != nil {
		return err
	}
	led, err := parseLedger(c.Ledger)
	if err != nil {
		return err
	}
	v, err := privacyView(led, cfg.DP)
	if err != nil {
		return err
	}
	v.Steps = c.Steps
	writeJSON(w, http.StatusOK, v)
	return nil
}

// submit queues an operation: the body is checked now (so a malformed one
// is a 400, not a failed future), sealed, and stored before the future's id
// is returned. Idempotency-Key makes a retry return the same future.
func (t *Trainer) submit(w http.ResponseWriter, r *http.Request, p Principal, op string) error {
	var body any
	switch op {
	case opForwardBackward, opForward:
		body = &client.ForwardBackwardRequest{}
	case opOptimStep:
		body = &client.OptimStepRequest{}
	case opSample:
		body = &client.SampleRequest{}
	case opSaveState:
		body = &client.SaveStateRequest{}
	case opLoadState:
		body = &client.LoadStateRequest{}
	case opExport:
		body = &client.ExportRequest{}
	}
	if err := t.decode(w, r, body); err != nil {
		return err
	}
	clientID := r.PathValue("id")
	c, err := t.store.GetClient(r.Context(), p.Tenant, clientID)
	if err != nil {
		return notFound(err, "training client %s", clientID)
	}
	cfg, _, err := clientConfig(c)
	if err != nil {
		return err
	}
	if err := t.validate(op, body, cfg); err != nil {
		return err
	}
	plain, _ := json.Marshal(body)
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 128 {
		return apiErr(http.StatusBadRequest, "INVALID_ARGUMENT", "Idempotency-Key is longer than 128 bytes")
	}
	f := jobs.Future{ID: jobs.NewID("fut"), Tenant: p.Tenant, ClientID: clientID, Op: op, Actor: p.KeyID,
		RequestHash: jobs.HashRequest(op, plain), IdempotencyKey: key}
	if f.Request, err = t.seal(r.Context(), p.Tenant, "request", f.ID, plain); err != nil {
		return err
	}
	var check func(jobs.Client, map[string]int) error
	if op == opOptimStep && cfg.DP.Enabled && cfg.DP.TargetEpsilon > 0 {
		// Refuse now a step the budget cannot take, counting the steps
		// already queued.
		check = func(c jobs.Client, pending map[string]int) error {
			led, err := parseLedger(c.Ledger)
			if err != nil {
				return err
			}
			if err := checkBudget(led, cfg.DP, pending[opOptimStep]+1); err != nil {
				return apiErr(http.StatusConflict, "DP_BUDGET_EXCEEDED", "%v", err)
			}
			return nil
		}
	}
	stored, existed, err := t.store.Submit(r.Context(), f, check)
	switch {
	case errors.Is(err, jobs.ErrConflict):
		return apiErr(http.StatusConflict, "IDEMPOTENCY_CONFLICT", "%v", err)
	case err != nil:
		return notFound(err, "training client %s", clientID)
	}
	t.signal()
	status := http.StatusAccepted
	if existed {
		status = http.StatusOK
	}
	writeJSON(w, status, futureView(stored, t.cfg.Now()))
	return nil
}

// validate checks an operation's body against the client before it is
// queued.
func (t *Trainer) validate(op string, body any, cfg client.TrainingClientConfig) error {
	bad := func(format string, args ...any) error {
		return apiErr(http.StatusBadRequest, "INVALID_ARGUMENT", format, args...)
	}
	switch b := body.(type) {
	case *client.ForwardBackwardRequest:
		n := len(b.Data) + len(b.InputIDs)
		if n > t.cfg.MaxExamples {
			return bad("%d examples in one request; at most %d", n, t.cfg.MaxExamples)
		}
		if _, err := examples(*b, 1<<20); err != nil {
			return bad("%v", err)
		}
	case *client.OptimStepRequest:
		if err := checkAdam(b.AdamParams); err != nil {
			return bad("adam_params: %v", err)
		}
	case *client.SampleRequest:
		sp := b.SamplingParams
		switch {
		case len(b.Prompt.Tokens()) == 0:
			return bad("prompt is empty")
		case b.NumSamples < 0 || b.NumSamples > 64:
			return bad("num_samples %d must be 1–64", b.NumSamples)
		case sp.MaxTokens < 0 || sp.MaxTokens > 4096:
			return bad("max_tokens %d must be 1–4096", sp.MaxTokens)
		case sp.Temperature < 0 || sp.Temperature > 100 || sp.TopP < 0 || sp.TopP > 1 || sp.TopK < 0:
			return bad("temperature must be ≥ 0, top_p in [0, 1], top_k ≥ 0")
		}
		for _, tok := range b.Prompt.Tokens() {
			if err := checkToken(tok); err != nil {
				return bad("prompt: %v", err)
			}
		}
	case *client.LoadStateRequest:
		if !strings.HasPrefix(b.Path, "tinker://") {
			return bad("path %q is not tinker://<client>/<checkpoint>", b.Path)
		}
	case *client.ExportRequest:
		if b.Name == "" || b.Version == "" {
			return bad("export needs name and version")
		}
	}
	return nil
}

func futureView(f jobs.Future, now time.Time) client.FutureInfo {
	v := client.FutureInfo{ID: f.ID, ClientID: f.ClientID, Op: f.Op, Status: f.Status, CreatedAt: f.CreatedAt,
		StartedAt: f.StartedAt, FinishedAt: f.FinishedAt, ExpiresAt: f.ExpiresAt}
	if f.ErrorCode != "" {
		v.Error = &client.Error{Code: f.ErrorCode, Message: f.ErrorMsg}
	}
	return v
}

func (t *Trainer) getFuture(w http.ResponseWriter, r *http.Request, p Principal) error {
	f, err := t.store.GetFuture(r.Context(), p.Tenant, r.PathValue("id"))
	if err != nil {
		return notFound(err, "future %s", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, futureView(f, t.cfg.Now()))
	return nil
}

// futureResult returns a finished future's result; ?wait=S long-polls up
// to S seconds (at most 60) for it to finish. A future not finished yet is
// 202 with its status; a failed or cancelled one is its error; an expired
// one 410.
func (t *Trainer) futureResult(w http.ResponseWriter, r *http.Request, p Principal) error {
	wait := 0.0
	if s := r.URL.Query().Get("wait"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v < 0 {
			return apiErr(http.StatusBadRequest, "INVALID_ARGUMENT", "wait=%q must be a number of seconds", s)
		}
		wait = min(v, 60)
	}
	deadline := time.Now().Add(time.Duration(wait * float64(time.Second)))
	delay := 10 * time.Millisecond
	for {
		f, err := t.store.GetFuture(r.Context(), p.Tenant, r.PathValue("id"))
		if err != nil {
			return notFound(err, "future %s", r.PathValue("id"))
		}
		switch f.Status {
		case jobs.StatusSucceeded:
			if f.Expired(t.cfg.Now()) || f.Result == nil {
				return apiErr(http.StatusGone, "RESULT_EXPIRED", "the result of %s expired at %s", f.ID, f.ExpiresAt.Format(time.RFC3339))
			}
			raw, err := t.open(r.Context(), p.Tenant, "result", f.ID, f.Result)
			if err != nil {
				return err
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(raw)
			return nil
		case jobs.StatusFailed, jobs.StatusCancelled:
			status := http.StatusUnprocessableEntity
			switch f.ErrorCode {
			case "DP_BUDGET_EXCEEDED":
				status = http.StatusConflict
			case "CANCELLED":
				status = http.StatusConflict
			case "INTERNAL":
				status = http.StatusInternalServerError
			}
			return apiErr(status, f.ErrorCode, "%s", f.ErrorMsg)
		}
		if time.Now().After(deadline) {
			writeJSON(w, http.StatusAccepted, futureView(f, t.cfg.Now()))
			return nil
		}
		select {
		case <-r.Context().Done():
			return nil
		case <-time.After(min(delay, time.Until(deadline))):
			delay = min(delay*2, 250*time.Millisecond)
		}
	}
}

func (t *Trainer) cancelFuture(w http.ResponseWriter, r *http.Request, p Principal) error {
	f, err := t.store.Cancel(r.Context(), p.Tenant, r.PathValue("id"), t.cfg.ResultTTL)
	switch {
	case errors.Is(err, jobs.ErrFinished):
		return apiErr(http.StatusConflict, "ALREADY_FINISHED", "future %s has already finished", r.PathValue("id"))
	case err != nil:
		return notFound(err, "future %s", r.PathValue("id"))
	}
	if _, err := t.cfg.Host.Audit(r.Context(), p.Tenant, p.KeyID, "trainer.cancel", f.ClientID, map[string]any{"future": f.ID}); err != nil {
		t.log.Error("audit", "err", err)
	}
	writeJSON(w, http.StatusOK, futureView(f, t.cfg.Now()))
	return nil
}

// downloadArtifact serves an exported package (a TGSP file: encrypted to
// the control plane's key and signed). Checkpoints are not downloadable:
// they hold plaintext weights and stay sealed on the server.
func (t *Trainer) downloadArtifact(w http.ResponseWriter, r *http.Request, p Principal) error {
	a, err := t.store.GetArtifact(r.Context(), p.Tenant, r.PathValue("id"))
	if err != nil || a.Kind != "package" {
		return notFound(jobs.ErrNotFound, "package artifact %s", r.PathValue("id"))
	}
	raw, err := t.open(r.Context(), p.Tenant, "artifact", a.ID, a.Blob)
	if err != nil {
		return err
	}
	name := strings.NewReplacer("@", "-", "/", "_").Replace(a.Name) + ".tgsp"
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
	_, _ = w.Write(raw)
	return nil
}
