package audit

import (
	"errors"
	"fmt"
)

// Sentinel errors. Next and ComputeHash return errors wrapping
// ErrInvalidEntry; every verification failure is a *VerifyError whose
// Unwrap returns exactly one of the others, so callers (and `tgctl audit
// verify`) map failures with errors.Is and errors.As.
var (
	// ErrInvalidEntry: an entry is not well-formed: empty tenant, actor or
	// action; seq 0; zero time, a year outside 1–9999, or precision below a
	// microsecond; a string that is not UTF-8 or too long; details that are
	// not one JSON object.
	ErrInvalidEntry = errors.New("invalid audit entry")
	// ErrHashMismatch: an entry's stored hash does not match its content:
	// some field of it was edited.
	ErrHashMismatch = errors.New("hash mismatch")
	// ErrBrokenChain: an entry is self-consistent but its prev_hash is not
	// the hash of the entry before it: an entry was replaced, or a chain
	// was spliced from another (or rewritten only in part).
	ErrBrokenChain = errors.New("broken hash chain")
	// ErrSequence: sequence numbers are not 1, 2, 3, …: an entry was
	// deleted (a gap), or entries were reordered or replayed.
	ErrSequence = errors.New("sequence error")
	// ErrForeignTenant: an entry belongs to another tenant's chain.
	ErrForeignTenant = errors.New("entry of another tenant")
	// ErrTruncated: the chain ends before the anchor's seq: entries were
	// deleted from its tail.
	ErrTruncated = errors.New("chain truncated")
	// ErrAnchorMismatch: the entry at the anchor's seq has a different hash
	// than the anchor: the chain was rewritten up to there.
	ErrAnchorMismatch = errors.New("anchor mismatch")
)

// VerifyError reports where a chain first goes wrong. Seq is the first
// sequence number at which the chain differs from an untampered one: the
// seq of an edited entry, or the first missing seq of a gap or a
// truncated tail.
type VerifyError struct {
	Tenant string
	Seq    uint64
	Kind   error  // one of the sentinels above
	Reason string // what was found, for people
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("audit chain of tenant %q: seq %d: %v: %s", e.Tenant, e.Seq, e.Kind, e.Reason)
}

// Unwrap makes errors.Is(err, e.Kind) true.
func (e *VerifyError) Unwrap() error { return e.Kind }

// invalid wraps ErrInvalidEntry with a description.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidEntry, fmt.Sprintf(format, args...))
}
