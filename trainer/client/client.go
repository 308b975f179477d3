package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// Environment variables the SDK reads.
const (
	EnvAPIKey  = "TG_TINKER_API_KEY"
	EnvBaseURL = "TG_TINKER_BASE_URL"
	// DefaultBaseURL is the single-node control plane, which mounts the
	// trainer.
	DefaultBaseURL = "http://127.0.0.1:8000"
)

// APIError is an error answer of the API.
type APIError struct {
	Status int
	Err    Error
}

func (e *APIError) Error() string {
	return fmt.Sprintf("tg-tinker: %d %s: %s", e.Status, e.Err.Code, e.Err.Message)
}

// Code returns the stable error code of err when it is an API error
// ("DP_BUDGET_EXCEEDED"), else "".
func Code(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Err.Code
	}
	return ""
}

// Option configures NewServiceClient.
type Option func(*ServiceClient)

// WithBaseURL overrides TG_TINKER_BASE_URL.
func WithBaseURL(u string) Option {
	return func(s *ServiceClient) { s.baseURL = strings.TrimRight(u, "/") }
}

// WithAPIKey overrides TG_TINKER_API_KEY.
func WithAPIKey(k string) Option { return func(s *ServiceClient) { s.apiKey = k } }

// WithHTTPClient replaces the HTTP client (TLS settings, timeouts).
func WithHTTPClient(c *http.Client) Option { return func(s *ServiceClient) { s.http = c } }

// ServiceClient talks to a TG-Tinker server.
type ServiceClient struct {
	baseURL, apiKey string
	http            *http.Client
}

// NewServiceClient returns a client of the server at TG_TINKER_BASE_URL
// (default http://127.0.0.1:8000) with the API key in TG_TINKER_API_KEY
// (a control-plane API key: it decides the tenant).
func NewServiceClient(opts ...Option) (*ServiceClient, error) {
	s := &ServiceClient{baseURL: strings.TrimRight(os.Getenv(EnvBaseURL), "/"), apiKey: os.Getenv(EnvAPIKey),
		http: &http.Client{Timeout: 90 * time.Second}}
	if s.baseURL == "" {
		s.baseURL = DefaultBaseURL
	}
	for _, o := range opts {
		o(s)
	}
	if s.apiKey == "" {
		return nil, errors.New("tg-tinker: no API key: set " + EnvAPIKey + " (a control-plane API key)")
	}
	return s, nil
}

// do sends one request; a 5xx or a network error is retried (with the
// same Idempotency-Key for submissions, so the server runs it once).
func (s *ServiceClient) do(ctx context.Context, method, path string, body any, idem string, out any) (int, error) {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return 0, err
		}
	}
	delay := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, s.baseURL+path, bytes.NewReader(raw))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+s.apiKey)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if idem != "" {
			req.Header.Set("Idempotency-Key", idem)
		}
		resp, err := s.http.Do(req)
		retry := err != nil || resp.StatusCode >= 500
		if retry && attempt < 4 && (method == http.MethodGet || idem != "") && ctx.Err() == nil {
			if resp != nil {
				resp.Body.Close()
			}
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(delay):
			}
			delay *= 2
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("tg-tinker: %s %s: %w", method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
		if err != nil {
			return resp.StatusCode, err
		}
		if resp.StatusCode >= 400 {
			var e struct {
				Error Error `json:"error"`
			}
			if json.Unmarshal(b, &e) != nil || e.Error.Code == "" {
				e.Error = Error{Code: http.StatusText(resp.StatusCode), Message: strings.TrimSpace(string(b))}
			}
			return resp.StatusCode, &APIError{Status: resp.StatusCode, Err: e.Error}
		}
		if out != nil {
			if w, ok := out.(*[]byte); ok {
				*w = b
			} else if err := json.Unmarshal(b, out); err != nil {
				return resp.StatusCode, fmt.Errorf("tg-tinker: decode %s: %w", path, err)
			}
		}
		return resp.StatusCode, nil
	}
}

func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// CreateTrainingClient creates a training client.
func (s *ServiceClient) CreateTrainingClient(ctx context.Context, cfg TrainingClientConfig) (*TrainingClient, error) {
	var tc TrainingClientInfo
	if _, err := s.do(ctx, http.MethodPost, "/v1/training_clients", cfg, "", &tc); err != nil {
		return nil, err
	}
	return &TrainingClient{s: s, Info: tc}, nil
}

// TrainingClientByID returns the existing training client id.
func (s *ServiceClient) TrainingClientByID(ctx context.Context, id string) (*TrainingClient, error) {
	var tc TrainingClientInfo
	if _, err := s.do(ctx, http.MethodGet, "/v1/training_clients/"+id, nil, "", &tc); err != nil {
		return nil, err
	}
	return &TrainingClient{s: s, Info: tc}, nil
}

// TrainingClient is a handle on one training client. Operations return
// futures; they run on the server strictly in the order they were
// submitted.
type TrainingClient struct {
	s    *ServiceClient
	Info TrainingClientInfo
}

func submit[T any](ctx context.Context, c *TrainingClient, op string, body any) (*Future[T], error) {
	var f FutureInfo
	if _, err := c.s.do(ctx, http.MethodPost, "/v1/training_clients/"+c.Info.ID+"/"+op, body, newKey(), &f); err != nil {
		return nil, err
	}
	return &Future[T]{s: c.s, ID: f.ID}, nil
}

// ForwardBackward accumulates the gradients of data (Tinker datums; loss
// "cross_entropy").
func (c *TrainingClient) ForwardBackward(ctx context.Context, data []Datum, lossFn string) (*Future[ForwardBackwardResult], error) {
	return submit[ForwardBackwardResult](ctx, c, "forward_backward", ForwardBackwardRequest{Data: data, LossFn: lossFn})
}

// ForwardBackwardHF is ForwardBackward over Hugging Face-style rows:
// input_ids, attention_mask (nil: all ones) and labels (nil: the inputs;
// -100 ignores a position).
func (c *TrainingClient) ForwardBackwardHF(ctx context.Context, inputIDs, attentionMask, labels [][]int) (*Future[ForwardBackwardResult], error) {
	return submit[ForwardBackwardResult](ctx, c, "forward_backward", ForwardBackwardRequest{InputIDs: inputIDs, AttentionMask: attentionMask, Labels: labels})
}

// Forward computes the loss of data without gradients.
func (c *TrainingClient) Forward(ctx context.Context, data []Datum) (*Future[ForwardBackwardResult], error) {
	return submit[ForwardBackwardResult](ctx, c, "forward", ForwardBackwardRequest{Data: data, LossFn: "cross_entropy"})
}

// OptimStep applies the accumulated gradient (zero params: the client's).
func (c *TrainingClient) OptimStep(ctx context.Context, p AdamParams) (*Future[OptimStepResult], error) {
	return submit[OptimStepResult](ctx, c, "optim_step", OptimStepRequest{AdamParams: p})
}

// Sample generates n completions of prompt.
func (c *TrainingClient) Sample(ctx context.Context, prompt ModelInput, n int, p SamplingParams) (*Future[SampleResult], error) {
	return submit[SampleResult](ctx, c, "sample", SampleRequest{Prompt: prompt, NumSamples: n, SamplingParams: p})
}

// SaveState saves a checkpoint; its result's Path loads it again.
func (c *TrainingClient) SaveState(ctx context.Context, name string) (*Future[SaveStateResult], error) {
	return submit[SaveStateResult](ctx, c, "save_state", SaveStateRequest{Name: name})
}

// LoadState loads a checkpoint saved by this tenant.
func (c *TrainingClient) LoadState(ctx context.Context, path string) (*Future[LoadStateResult], error) {
	return submit[LoadStateResult](ctx, c, "load_state", LoadStateRequest{Path: path})
}

// Export packs the trained model as a signed TGSP package carrying its
// dp_cert.json.
func (c *TrainingClient) Export(ctx context.Context, name, version string) (*Future[ExportResult], error) {
	return submit[ExportResult](ctx, c, "export", ExportRequest{Name: name, Version: version})
}

// Privacy returns the privacy spent so far and what remains of the budget.
func (c *TrainingClient) Privacy(ctx context.Context) (Privacy, error) {
	var p Privacy
	_, err := c.s.do(ctx, http.MethodGet, "/v1/training_clients/"+c.Info.ID+"/privacy", nil, "", &p)
	return p, err
}

// DownloadPackage returns an exported package's bytes.
func (s *ServiceClient) DownloadPackage(ctx context.Context, artifactID string) ([]byte, error) {
	var b []byte
	_, err := s.do(ctx, http.MethodGet, "/v1/artifacts/"+artifactID, nil, "", &b)
	return b, err
}

// Future is an operation submitted to the server whose result is a T.
type Future[T any] struct {
	s  *ServiceClient
	ID string
}

// FutureOf returns a handle on an existing future.
func FutureOf[T any](s *ServiceClient, id string) *Future[T] { return &Future[T]{s: s, ID: id} }

// Status returns the future's state.
func (f *Future[T]) Status(ctx context.Context) (FutureInfo, error) {
	var v FutureInfo
	_, err := f.s.do(ctx, http.MethodGet, "/v1/futures/"+f.ID, nil, "", &v)
	return v, err
}

// Result waits for the future to finish and returns its result, or its
// error (an *APIError: Code(err) is DP_BUDGET_EXCEEDED, CANCELLED, …).
func (f *Future[T]) Result(ctx context.Context) (T, error) {
	var zero T
	for {
		var raw []byte
		status, err := f.s.do(ctx, http.MethodGet, "/v1/futures/"+f.ID+"/result?wait=30", nil, "", &raw)
		if err != nil {
			return zero, err
		}
		if status == http.StatusAccepted {
			continue // still queued or running
		}
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return zero, fmt.Errorf("tg-tinker: decode result of %s: %w", f.ID, err)
		}
		return v, nil
	}
}

// Cancel stops the future: a queued one never runs, a running one stops
// and leaves the client's state as before it.
func (f *Future[T]) Cancel(ctx context.Context) error {
	_, err := f.s.do(ctx, http.MethodPost, "/v1/futures/"+f.ID+"/cancel", nil, "", nil)
	return err
}
