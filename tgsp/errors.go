package tgsp

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every refusal of a package, key or path wraps exactly one
// of them, so callers can map failures with errors.Is without parsing
// messages; I/O errors and context cancellation are returned (wrapped) as
// they come.
var (
	// ErrMalformed: the bytes are not a well-formed TGSP v1 package (bad
	// magic, unknown version, inconsistent lengths, trailing data, a manifest
	// that does not validate).
	ErrMalformed = errors.New("malformed package")
	// ErrBadSignature: the hybrid signature does not verify (either half).
	ErrBadSignature = errors.New("bad signature")
	// ErrUntrustedSigner: the package names a publisher key that is not among
	// the trusted keys.
	ErrUntrustedSigner = errors.New("untrusted signer")
	// ErrExpired: the package's signed expiry time has passed.
	ErrExpired = errors.New("package expired")
	// ErrHashMismatch: stored ciphertext does not match the shard hash in the
	// signed manifest. The concrete error is a *ShardError.
	ErrHashMismatch = errors.New("hash mismatch")
	// ErrNotRecipient: no recipient stanza could be opened with the given key.
	ErrNotRecipient = errors.New("not a recipient")
	// ErrDecrypt: a payload chunk failed authentication, or a DEK did not
	// match the commitment in the manifest.
	ErrDecrypt = errors.New("decryption failed")
	// ErrUnsafePath: a path would escape the output directory or names
	// something other than a regular file or directory.
	ErrUnsafePath = errors.New("unsafe path")
	// ErrKey: a key file is malformed, of the wrong kind, or has unsafe
	// permissions.
	ErrKey = errors.New("bad key")
	// ErrNotVerified: a method that releases plaintext or trusts the
	// manifest was called before VerifySignature succeeded.
	ErrNotVerified = errors.New("signature not verified")
	// ErrOutputExists: the unpack target exists and is not an empty directory.
	ErrOutputExists = errors.New("output exists")
)

// ShardError reports which stored shard failed its hash check.
type ShardError struct {
	Path  string // file path inside the package
	Shard int    // zero-based shard index within the file
}

func (e *ShardError) Error() string {
	return fmt.Sprintf("hash mismatch in file %s shard %d", e.Path, e.Shard)
}

// Unwrap makes errors.Is(err, ErrHashMismatch) true.
func (e *ShardError) Unwrap() error { return ErrHashMismatch }

// malformed wraps ErrMalformed with a description.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}
