package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// Constant log attribute keys.
const (
	logKeyRequestID = "request_id"
	logKeyTenant    = "tenant"
	logKeyKeyID     = "key_id"
)

// HeaderRequestID carries the request id in both directions.
const HeaderRequestID = "X-Request-Id"

const maxRequestIDLen = 64

type ctxKey int

const (
	ctxRequestID ctxKey = iota
	ctxPrincipal
	ctxLogInfo
)

// validRequestID reports whether an incoming id is safe to echo, log and
// audit: 1 to 64 characters of [A-Za-z0-9._-].
func validRequestID(s string) bool {
	if s == "" || len(s) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// WithRequestID gives every request an id: the incoming X-Request-Id if it
// is a sane token (at most 64 of [A-Za-z0-9._-]), else a fresh "req-…".
// It sets the response header and puts the id in the context
// ([RequestID]). A request that already has an id in its context (an outer
// WithRequestID) keeps it.
func WithRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := RequestID(r.Context()); id != "" {
			next.ServeHTTP(w, r)
			return
		}
		id := r.Header.Get(HeaderRequestID)
		if !validRequestID(id) {
			id = store.NewID("req")
		}
		w.Header().Set(HeaderRequestID, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxRequestID, id)))
	})
}

// RequestID returns the id WithRequestID gave the request, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(ctxRequestID).(string)
	return id
}

// principal is the authenticated caller: an API key with its tenant,
// operator and effective role.
type principal = store.APIKey

func withPrincipal(ctx context.Context, p principal) context.Context {
	if li, ok := ctx.Value(ctxLogInfo).(*logInfo); ok {
		li.set(p.Tenant, p.ID)
	}
	return context.WithValue(ctx, ctxPrincipal, p)
}

// caller returns the principal of an authenticated route.
func caller(r *http.Request) (principal, error) {
	p, ok := r.Context().Value(ctxPrincipal).(principal)
	if !ok {
		return principal{}, errNoPrincipal
	}
	return p, nil
}

// authenticate checks the bearer API key. Every failure is the same 401:
// the client learns nothing about which check failed.
func (a *handler) authenticate(r *http.Request) (principal, error) {
	unauth := errorf(http.StatusUnauthorized, codeUnauthenticated, "missing or invalid API key (Authorization: Bearer tgk_…)")
	h := r.Header.Get("Authorization")
	scheme, key, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return principal{}, unauth
	}
	k, err := a.store.AuthenticateAPIKey(r.Context(), strings.TrimSpace(key))
	switch {
	case errors.Is(err, store.ErrUnauthenticated):
		return principal{}, unauth
	case err != nil:
		return principal{}, fmt.Errorf("authenticate: %w", err)
	}
	return k, nil
}

// recoverPanics turns a panic into a 500 INTERNAL whose details go only to
// the log, with the request id.
func (a *handler) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := asStatusWriter(w)
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			a.log.ErrorContext(r.Context(), "panic serving request", slog.String(logKeyRequestID, RequestID(r.Context())),
				slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
			if sw.status == 0 {
				writeError(sw, r, errorf(http.StatusInternalServerError, codeInternal, "internal error; quote the request id to the operator of this control plane"))
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

// logInfo is filled in by authentication for the access log.
type logInfo struct {
	mu     sync.Mutex
	tenant string
	keyID  string
}

func (l *logInfo) set(tenant, keyID string) {
	l.mu.Lock()
	l.tenant, l.keyID = tenant, keyID
	l.mu.Unlock()
}

// accessLog logs one line per request: method, path (not the query),
// status, size, duration, request id, and tenant and key id once
// authenticated. Headers are never logged: Authorization holds a secret.
func (a *handler) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		li := &logInfo{}
		sw := asStatusWriter(w)
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), ctxLogInfo, li)))
		li.mu.Lock()
		tenant, keyID := li.tenant, li.keyID
		li.mu.Unlock()
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		a.log.LogAttrs(r.Context(), slog.LevelInfo, "http request",
			slog.String(logKeyRequestID, RequestID(r.Context())),
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", status),
			slog.Int64("bytes", sw.bytes),
			slog.Duration("duration", time.Since(start)),
			slog.String(logKeyTenant, tenant),
			slog.String(logKeyKeyID, keyID),
		)
	})
}

func asStatusWriter(w http.ResponseWriter) *statusWriter {
	if sw, ok := w.(*statusWriter); ok {
		return sw
	}
	return &statusWriter{ResponseWriter: w}
}

// statusWriter remembers the status and size of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(status int) {
	if s.status == 0 {
		s.status = status
	}
	s.ResponseWriter.WriteHeader(status)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
