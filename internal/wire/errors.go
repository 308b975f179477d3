package wire

// ErrorBody is every API error response:
// {"error":{"code":"NOT_FOUND","message":"…","request_id":"…"}}.
type ErrorBody struct {
	Error APIError `json:"error"`
}

// APIError is the error object. Code is stable and machine-readable; Message
// is for people and may change.
type APIError struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

// Stable error codes (docs/api.md lists which routes return which).
const (
	CodeBadRequest      = "BAD_REQUEST"        // malformed JSON, unknown fields, invalid values
	CodeUnauthenticated = "UNAUTHENTICATED"    // no or bad credential
	CodeForbidden       = "FORBIDDEN"          // credential lacks the role
	CodeNotFound        = "NOT_FOUND"          // no such object in this tenant
	CodeConflict        = "CONFLICT"           // name taken, state forbids it
	CodeTokenUsed       = "TOKEN_USED"         // enrollment token already consumed
	CodeTokenExpired    = "TOKEN_EXPIRED"      // enrollment token expired
	CodeEnrollRefused   = "ENROLLMENT_REFUSED" // TPM evidence did not verify
	CodeRevoked         = "REVOKED"            // device or certificate revoked
	CodeTooLarge        = "PAYLOAD_TOO_LARGE"  // body over the route's limit
	CodeUnsupported     = "UNSUPPORTED_MEDIA_TYPE"
	CodeMethod          = "METHOD_NOT_ALLOWED"
	CodeInternal        = "INTERNAL"
)

// Package registry codes: 422 for a pushed package that does not verify,
// is signed by no pinned publisher, cannot be opened by the control
// plane's recipient key, or has expired; 403 KEY_GRANT_REFUSED when the
// control plane refuses a device a package key (see KeyGrant).
const (
	CodeInvalidPackage   = "INVALID_PACKAGE"
	CodeUnknownPublisher = "UNKNOWN_PUBLISHER"
	CodeNotARecipient    = "NOT_A_RECIPIENT"
	CodePackageExpired   = "PACKAGE_EXPIRED"
	CodeKeyGrantRefused  = "KEY_GRANT_REFUSED"
)

// CodeJobCancelled is 410 on GET /api/v1/device/jobs/{id} for a job an
// operator's abort or rollback cancelled before the device started it:
// the device drops the job (and reports nothing further about it).
const CodeJobCancelled = "JOB_CANCELLED"
