package kek

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package wraps one of them
// (a DEKStore's own errors are passed through wrapped with context), so
// callers map failures with errors.Is and never parse messages.
var (
	// ErrBadKey: key material could not be loaded: the env var is unset or
	// empty, the value is not 32 bytes of hex or base64, or a key file is
	// malformed, not a regular file, or readable by group or others.
	ErrBadKey = errors.New("bad key")
	// ErrInsecure: the provider holds a key that must not be used in
	// production (a development key written by GenerateKeyFile, or an
	// in-memory test key). Returned by Provider.ProductionReady.
	ErrInsecure = errors.New("insecure key provider")
	// ErrWrongKEK: a wrapped key names a different KEK than the provider
	// holds. During KEK rotation this means "try the other provider".
	ErrWrongKEK = errors.New("wrapped by a different KEK")
	// ErrUnwrap: a wrapped key failed its integrity check: it was wrapped
	// under a different AAD (another tenant or key version), or its bytes
	// were changed.
	ErrUnwrap = errors.New("key unwrap failed")
	// ErrMalformed: a wrapped key or an envelope ciphertext is too short,
	// has inconsistent lengths, or is otherwise not in a form this package
	// writes.
	ErrMalformed = errors.New("malformed ciphertext")
	// ErrUnsupportedVersion: a wrapped key or envelope starts with a format
	// version this build does not know (written by a newer release, or
	// corrupted).
	ErrUnsupportedVersion = errors.New("unsupported format version")
	// ErrDecrypt: an envelope failed authentication: wrong tenant, wrong
	// AAD, or changed bytes. Never returned together with partial plaintext.
	ErrDecrypt = errors.New("decryption failed")
	// ErrNoKey: the tenant has no data key (of the requested version). A
	// DEKStore returns it (or an error wrapping it) for "not found".
	ErrNoKey = errors.New("no data key")
	// ErrInvalidArgument: a caller passed an empty tenant, key version 0,
	// or a key of an unsupported length.
	ErrInvalidArgument = errors.New("invalid argument")
)

// malformed wraps ErrMalformed with a description.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// invalid wraps ErrInvalidArgument with a description.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgument, fmt.Sprintf(format, args...))
}
