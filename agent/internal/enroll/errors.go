package enroll

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// Sentinel errors; returned errors wrap them (test with errors.Is).
var (
	// ErrTokenUsed: the enrollment token was already consumed. A new token
	// is needed; retrying cannot succeed.
	ErrTokenUsed = errors.New("enrollment token already used")
	// ErrTokenExpired: the enrollment token expired. A new token is needed.
	ErrTokenExpired = errors.New("enrollment token expired")
	// ErrRefused: the control plane did not accept the TPM evidence (EK not
	// from a trusted manufacturer, TPM kind not allowed by the fleet, AK or
	// TLS key not proven to be in the TPM), or, for a device without a TPM,
	// the fleet does not allow such devices.
	ErrRefused = errors.New("enrollment refused by the control plane")
	// ErrRevoked: the device or its certificate was revoked.
	ErrRevoked = errors.New("device revoked")
	// ErrConflict: the control plane's state forbids the request; for
	// RegisterKEMKey, the device already has another KEM key.
	ErrConflict = errors.New("conflict with the control plane's state")
	// ErrPinMismatch: the server's TLS chain does not root at the pinned CA
	// (or does not verify against the configured CA file).
	ErrPinMismatch = errors.New("control plane certificate does not match the pinned CA")
	// ErrBadResponse: the server answered with something that is not a valid
	// identity for this device (wrong key, wrong chain, malformed).
	ErrBadResponse = errors.New("invalid response from the control plane")
)

// APIError is a refusal by the control plane: its HTTP status and the error
// body of docs/api.md. It unwraps to the sentinel for its code, if any.
type APIError struct {
	Status int
	wire.APIError
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	s := fmt.Sprintf("control plane answered %d %s: %s", e.Status, e.Code, msg)
	if e.RequestID != "" {
		s += " (request " + e.RequestID + ")"
	}
	return s
}

// Unwrap maps stable codes to sentinels.
func (e *APIError) Unwrap() error {
	switch e.Code {
	case wire.CodeTokenUsed:
		return ErrTokenUsed
	case wire.CodeTokenExpired:
		return ErrTokenExpired
	case wire.CodeEnrollRefused:
		return ErrRefused
	case wire.CodeRevoked:
		return ErrRevoked
	case wire.CodeConflict:
		return ErrConflict
	}
	return nil
}

// Temporary reports whether the same request may succeed later.
func (e *APIError) Temporary() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

// Retryable reports whether err is transient: a network failure or a server
// error. Refusals (4xx), pin mismatches, invalid responses, TPM failures and
// a cancelled context are not.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var api *APIError
	if errors.As(err, &api) {
		return api.Temporary()
	}
	var tpm *tpmError
	if errors.Is(err, ErrPinMismatch) || errors.Is(err, ErrBadResponse) || errors.As(err, &tpm) {
		return false
	}
	var tr *transportError
	return errors.As(err, &tr)
}

// Explain turns an enrollment error into a sentence for a person: what
// happened and what to do.
func Explain(err error) string {
	var noTPM *noTPMRefusal
	switch {
	case errors.As(err, &noTPM):
		return "the control plane refused to enroll this device without a TPM (tpm: {none: true}): " + noTPM.Error() +
			". Devices without a TPM may join only a fleet whose policy allows them: use a token for such a fleet, " +
			"have an operator allow it (tgctl fleet update FLEET --allow-no-tpm), or configure the device's TPM"
	case errors.Is(err, ErrTokenUsed):
		return "the enrollment token was already used; create a new one (tgctl token create FLEET) and configure it"
	case errors.Is(err, ErrTokenExpired):
		return "the enrollment token has expired; create a new one (tgctl token create FLEET) and configure it"
	case errors.Is(err, ErrRefused):
		return "the control plane refused this device's TPM evidence: " + err.Error()
	case errors.Is(err, ErrRevoked):
		return "this device has been revoked by an operator"
	case errors.Is(err, ErrPinMismatch):
		return "the control plane's certificate does not match ca_hash/ca_file (wrong server or wrong pin): " + err.Error()
	}
	return err.Error()
}

// transportError marks failures to reach the server or read its answer.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// noTPMRefusal marks a refusal of an enrollment without a TPM, so Explain
// does not talk about TPM evidence the device never sent.
type noTPMRefusal struct{ err error }

func (e *noTPMRefusal) Error() string { return e.err.Error() }
func (e *noTPMRefusal) Unwrap() error { return e.err }

// tpmError marks failures of a TPM operation.
type tpmError struct{ err error }

func (e *tpmError) Error() string { return e.err.Error() }
func (e *tpmError) Unwrap() error { return e.err }
