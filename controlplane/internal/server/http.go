package server

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/audit"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// MaxBodyBytes is the request body limit of every route here.
const MaxBodyBytes = 1 << 20

// RequestIDHeader carries the request id both ways.
const RequestIDHeader = "X-Request-Id"

var saneRequestID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

type ctxKey struct{}

// RequestID returns the request id the middleware assigned.
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(ctxKey{}).(string)
	return s
}

var ridEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

func newRequestID() string {
	var b [13]byte
	_, _ = rand.Read(b[:])
	return "req-" + strings.ToLower(ridEncoding.EncodeToString(b[:]))[:20]
}

// withRequestID takes X-Request-Id from the request if it is a sane token,
// else makes one, and puts it in the response, the context and the request
// headers (so the mounted operator API sees the same id).
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rid := r.Header.Get(RequestIDHeader)
		if !saneRequestID.MatchString(rid) {
			rid = newRequestID()
			r.Header.Set(RequestIDHeader, rid)
		}
		w.Header().Set(RequestIDHeader, rid)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, rid)))
	})
}

// withRecover turns a handler panic into a 500 with the error shape, and
// logs it; net/http would otherwise drop the connection.
func withRecover(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("handler panic", "path", r.URL.Path, "request_id", RequestID(r.Context()), "panic", v)
				writeError(w, r, http.StatusInternalServerError, wire.CodeInternal, "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"INTERNAL","message":"internal error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeError writes docs/api.md's error shape. msg must not carry
// internals.
func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	writeJSON(w, status, wire.ErrorBody{Error: wire.APIError{Code: code, Message: msg, RequestID: RequestID(r.Context())}})
}

func (s *Server) internalError(w http.ResponseWriter, r *http.Request, what string, err error) {
	s.log.Error(what, "error", err, "request_id", RequestID(r.Context()))
	writeError(w, r, http.StatusInternalServerError, wire.CodeInternal, "internal error")
}

// decode reads a JSON body into v: at most MaxBodyBytes, application/json
// (or no Content-Type), no unknown fields, no trailing data. It writes the
// error response itself and reports whether v is usable.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			writeError(w, r, http.StatusUnsupportedMediaType, wire.CodeUnsupported, "the body must be application/json")
			return false
		}
	}
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = terr
			if err == nil {
				err = errors.New("trailing data after the JSON value")
			}
		}
	}
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, r, http.StatusRequestEntityTooLarge, wire.CodeTooLarge, "the body is larger than 1 MiB")
		return false
	}
	msg := "malformed JSON body"
	var ute *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF):
		msg = "empty body"
	case errors.As(err, &ute):
		msg = "wrong type for field " + ute.Field
	case errors.As(err, &se):
		msg = "malformed JSON: " + se.Error()
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		msg = strings.TrimPrefix(err.Error(), "json: ")
	case strings.Contains(err.Error(), "trailing data"), strings.Contains(err.Error(), "invalid character"):
		msg = "trailing data after the JSON value"
	}
	writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, msg)
	return false
}

// AppendAudit appends one entry to tenant's chain inside tx, hashed with
// internal/audit.
func AppendAudit(ctx context.Context, tx *store.Tx, now time.Time, tenant, actor, action, target, requestID string, details any) error {
	var det json.RawMessage
	if details != nil {
		b, err := json.Marshal(details)
		if err != nil {
			return err
		}
		det = b
	}
	var buildErr error
	_, err := tx.AppendAudit(ctx, tenant, func(prev *store.AuditRow) store.AuditRow {
		var p *audit.Entry
		if prev != nil {
			pe := audit.Entry{Tenant: prev.Tenant, Seq: uint64(prev.Seq), Time: prev.Time, Actor: prev.Actor,
				Action: prev.Action, Target: prev.Target, RequestID: prev.RequestID, Details: prev.Details}
			copy(pe.PrevHash[:], prev.PrevHash)
			copy(pe.Hash[:], prev.Hash)
			p = &pe
		}
		e, err := audit.Next(p, audit.Entry{Tenant: tenant, Time: now, Actor: actor, Action: action,
			Target: target, RequestID: requestID, Details: det})
		if err != nil {
			buildErr = err
			return store.AuditRow{}
		}
		return store.AuditRow{Tenant: e.Tenant, Seq: int64(e.Seq), Time: e.Time, Actor: e.Actor, Action: e.Action,
			Target: e.Target, RequestID: e.RequestID, Details: e.Details, PrevHash: e.PrevHash[:], Hash: e.Hash[:]}
	})
	if buildErr != nil {
		return buildErr
	}
	return err
}
