package store

import "errors"

// Sentinel errors. Methods wrap them with context; test with errors.Is.
var (
	// ErrNotFound: no such row for this tenant. A row of another tenant is
	// also not found.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique constraint (a fleet name taken, a TPM already
	// enrolled, an id reused) or a row still referenced by others.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: an argument the store refuses before touching the database
	// (bad id, unknown role, missing field).
	ErrInvalid = errors.New("invalid argument")
	// ErrTokenUsed: the enrollment token was already consumed.
	ErrTokenUsed = errors.New("enrollment token already used")
	// ErrTokenExpired: the enrollment token is past its expiry.
	ErrTokenExpired = errors.New("enrollment token expired")
	// ErrNonceUsed: the attestation nonce was already consumed.
	ErrNonceUsed = errors.New("attestation nonce already used")
	// ErrNonceExpired: the attestation nonce is past its expiry.
	ErrNonceExpired = errors.New("attestation nonce expired")
	// ErrUnauthenticated: the presented API key is malformed, unknown,
	// wrong, revoked or expired, or its operator is disabled.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrSchemaTooNew: the database was migrated by a newer binary.
	ErrSchemaTooNew = errors.New("database schema is newer than this binary")
)
