package audit

import (
	"fmt"
	"strconv"
	"strings"
)

// Checkpoint names a chain position: the hash of the entry at Seq. Stored
// or published apart from the log (printed by `tgctl audit verify`, kept
// by an operator or another system), it is an anchor: proof of what the
// chain held at that point, which no one with write access to the log
// alone can forge.
type Checkpoint struct {
	Tenant string `json:"tenant"`
	Seq    uint64 `json:"seq"`
	Hash   Hash   `json:"hash"`
}

// String returns "<tenant>@<seq>:<hash hex>", the form ParseCheckpoint
// reads (e.g. for a --anchor flag).
func (c Checkpoint) String() string {
	return c.Tenant + "@" + strconv.FormatUint(c.Seq, 10) + ":" + c.Hash.String()
}

// ParseCheckpoint parses the output of Checkpoint.String.
func ParseCheckpoint(s string) (Checkpoint, error) {
	rest, hash, ok1 := cutLast(s, ":")
	tenant, seq, ok2 := cutLast(rest, "@")
	if !ok1 || !ok2 || tenant == "" {
		return Checkpoint{}, fmt.Errorf("checkpoint %q: want <tenant>@<seq>:<hash>", s)
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil || n == 0 {
		return Checkpoint{}, fmt.Errorf("checkpoint %q: seq must be a number from 1", s)
	}
	h, err := ParseHash(hash)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %q: %w", s, err)
	}
	return Checkpoint{Tenant: tenant, Seq: n, Hash: h}, nil
}

func cutLast(s, sep string) (before, after string, found bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// VerifyOptions tunes a verification. The zero value checks a chain on its
// own, which finds every change except a consistently rewritten or
// truncated tail (see the package doc).
type VerifyOptions struct {
	// Tenant, if set, is the tenant whose chain this must be; otherwise it
	// is the first entry's (or the anchor's).
	Tenant string
	// Anchor, if set, is a checkpoint taken earlier: the chain must reach
	// Anchor.Seq and have Anchor.Hash there.
	Anchor *Checkpoint
}

// Report describes a chain that verified.
type Report struct {
	Tenant  string `json:"tenant"`
	Entries uint64 `json:"entries"`
	// Head is the last entry's checkpoint (Seq 0 and the genesis hash for
	// an empty chain): publish it as the next anchor.
	Head Checkpoint `json:"head"`
	// Anchored says an anchor was given and matched.
	Anchored bool `json:"anchored"`
}

// Verify checks a tenant's whole chain, in seq order from seq 1. On
// failure the error is a *VerifyError naming the first bad seq, and the
// Report covers the entries before it.
func Verify(entries []Entry, opts VerifyOptions) (Report, error) {
	v, err := NewVerifier(opts)
	if err != nil {
		return Report{}, err
	}
	for _, e := range entries {
		if err := v.Add(e); err != nil {
			return v.Report(), err
		}
	}
	return v.Finish()
}

// Verifier checks a chain one entry at a time in constant memory, so a
// store can stream millions of rows through it. Feed it the tenant's
// entries in seq order from seq 1 with Add, then call Finish. It is not
// safe for concurrent use.
type Verifier struct {
	opts     VerifyOptions
	tenant   string
	last     Checkpoint
	entries  uint64
	anchored bool
	err      error
}

// NewVerifier returns a Verifier; it fails only if the options contradict
// themselves.
func NewVerifier(opts VerifyOptions) (*Verifier, error) {
	v := &Verifier{opts: opts, tenant: opts.Tenant}
	if a := opts.Anchor; a != nil {
		switch {
		case a.Tenant == "":
			return nil, fmt.Errorf("audit: anchor names no tenant")
		case a.Seq == 0:
			return nil, fmt.Errorf("audit: anchor seq must be at least 1")
		case v.tenant != "" && a.Tenant != v.tenant:
			return nil, fmt.Errorf("audit: anchor is for tenant %q, verifying tenant %q", a.Tenant, v.tenant)
		}
		v.tenant = a.Tenant
	}
	if v.tenant != "" {
		v.start(v.tenant)
	}
	return v, nil
}

func (v *Verifier) start(tenant string) {
	v.tenant = tenant
	v.last = Checkpoint{Tenant: tenant, Seq: 0, Hash: Genesis(tenant)}
}

// Add checks the next entry. After the first failure it returns that same
// error for every later call.
func (v *Verifier) Add(e Entry) error {
	if v.err != nil {
		return v.err
	}
	if v.tenant == "" {
		if e.Tenant == "" {
			return v.fail(ErrInvalidEntry, "tenant is empty")
		}
		v.start(e.Tenant)
	}
	want := v.last.Seq + 1
	if e.Tenant != v.tenant {
		return v.fail(ErrForeignTenant, "found an entry of tenant %q (its seq %d)", e.Tenant, e.Seq)
	}
	switch {
	case e.Seq > want && v.last.Seq == 0:
		return v.fail(ErrSequence, "missing: the chain starts at seq %d (entries deleted from its head)", e.Seq)
	case e.Seq > want:
		return v.fail(ErrSequence, "missing: seq %d follows seq %d (entries deleted)", e.Seq, v.last.Seq)
	case e.Seq < want:
		return v.fail(ErrSequence, "found seq %d after seq %d (entries reordered or replayed)", e.Seq, v.last.Seq)
	}
	h, err := ComputeHash(e)
	if err != nil {
		return v.fail(ErrInvalidEntry, "%v", err)
	}
	if h != e.Hash {
		return v.fail(ErrHashMismatch, "the stored hash does not match the entry's content (entry edited)")
	}
	if e.PrevHash != v.last.Hash {
		what := "the hash of seq " + strconv.FormatUint(v.last.Seq, 10)
		if v.last.Seq == 0 {
			what = "the tenant's genesis hash"
		}
		return v.fail(ErrBrokenChain, "prev_hash is not %s (entry replaced, or chain spliced or partly rewritten)", what)
	}
	if a := v.opts.Anchor; a != nil && a.Seq == e.Seq {
		if a.Hash != e.Hash {
			return v.fail(ErrAnchorMismatch, "hash %s, the anchor says %s (chain rewritten)", e.Hash, a.Hash)
		}
		v.anchored = true
	}
	v.last = Checkpoint{Tenant: v.tenant, Seq: e.Seq, Hash: e.Hash}
	v.entries++
	return nil
}

// Finish ends the chain: it reports the first error Add found or, with an
// anchor, ErrTruncated if the chain never reached it.
func (v *Verifier) Finish() (Report, error) {
	if v.err != nil {
		return v.Report(), v.err
	}
	if a := v.opts.Anchor; a != nil && !v.anchored {
		return v.Report(), v.fail(ErrTruncated, "missing: the chain ends at seq %d but the anchor names seq %d (entries deleted from its tail)",
			v.last.Seq, a.Seq)
	}
	return v.Report(), nil
}

// Report describes the entries verified so far.
func (v *Verifier) Report() Report {
	return Report{Tenant: v.tenant, Entries: v.entries, Head: v.last, Anchored: v.anchored}
}

// fail records and returns the chain's first error, at the first seq that
// is not as it should be.
func (v *Verifier) fail(kind error, format string, args ...any) error {
	v.err = &VerifyError{Tenant: v.tenant, Seq: v.last.Seq + 1, Kind: kind, Reason: fmt.Sprintf(format, args...)}
	return v.err
}
