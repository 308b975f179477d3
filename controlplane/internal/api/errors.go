package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// Local names for the stable codes of internal/wire.
const (
	codeBadRequest      = wire.CodeBadRequest
	codeUnauthenticated = wire.CodeUnauthenticated
	codeForbidden       = wire.CodeForbidden
	codeNotFound        = wire.CodeNotFound
	codeConflict        = wire.CodeConflict
	codeTooLarge        = wire.CodeTooLarge
	codeUnsupported     = wire.CodeUnsupported
	codeMethod          = wire.CodeMethod
	codeInternal        = wire.CodeInternal
)

// apiError is an error with the HTTP status and the stable code it is
// answered with. Its message is shown to the client, so it never carries
// internals.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, codeBadRequest, format, args...)
}

// asAPIError maps an error to what the client sees. Store sentinels keep
// their message (it names ids and fields the client sent, never SQL);
// anything unrecognised is a generic 500.
func asAPIError(err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, store.ErrNotFound):
		return errorf(http.StatusNotFound, codeNotFound, "%s", clientMessage(err, "not found"))
	case errors.Is(err, store.ErrConflict):
		// The store appends constraint names and driver text: not for clients.
		return errorf(http.StatusConflict, codeConflict, "conflict: the name is taken, or the object is still in use")
	case errors.Is(err, store.ErrInvalid):
		return errorf(http.StatusBadRequest, codeBadRequest, "%s", clientMessage(err, "invalid argument"))
	case errors.Is(err, store.ErrUnauthenticated):
		return errorf(http.StatusUnauthorized, codeUnauthenticated, "invalid API key")
	}
	return errorf(http.StatusInternalServerError, codeInternal, "internal error; quote the request id to the operator of this control plane")
}

// clientMessage returns a store error's text, which names only what the
// client asked for ("fleet flt-…: not found"), capped in length.
func clientMessage(err error, fallback string) string {
	s := err.Error()
	if s == "" {
		return fallback
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// onConflict turns the store's ErrConflict into a 409 with a message that
// says what conflicted; other errors pass through.
func onConflict(err error, format string, args ...any) error {
	if errors.Is(err, store.ErrConflict) {
		return errorf(http.StatusConflict, codeConflict, format, args...)
	}
	return err
}

// WriteError writes the JSON error body with the request id of r (see
// [WithRequestID]); the control-plane core uses it for its own routes so
// that every error has one shape.
func WriteError(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	writeError(w, r, &apiError{status: status, code: code, message: message})
}

func writeError(w http.ResponseWriter, r *http.Request, e *apiError) {
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tensorguardflow"`)
	}
	writeJSON(w, e.status, wire.ErrorBody{Error: wire.APIError{Code: e.code, Message: e.message, RequestID: RequestID(r.Context())}})
}

// writeJSON writes v as the response body with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own view types reach here; they always marshal.
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"INTERNAL","message":"response encoding failed","request_id":""}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
