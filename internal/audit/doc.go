// Package audit is the tamper-evident audit log: one SHA-256 hash chain per
// tenant of every mutation (who, what, when, which request), and the
// verifier behind `tgctl audit verify` (DESIGN.md §6: "one hash chain per
// tenant; verify detects any change").
//
// # Chain
//
// Each Entry carries the hash of the entry before it (PrevHash) and its own
// Hash over an unambiguous, length-prefixed encoding of all its fields and
// PrevHash (see ComputeHash; the encoding is pinned by a golden test). A
// tenant's first entry has seq 1 and PrevHash = Genesis(tenant) =
// SHA-256("tg-audit-v1 genesis" || tenant), so a chain cannot be spliced
// into another tenant's. Next builds an entry from the previous one and
// stores Details in canonical JSON (compact, sorted keys); the hash covers
// that canonical form, so pretty-printing or re-serialising the details
// does not break the chain but changing what they say does. Number
// literals are kept as written: store details as text or PostgreSQL json,
// not jsonb (which rewrites numbers).
//
// # What Verify detects
//
// Verify (or a streaming Verifier) reports the first seq at which a chain
// differs from what was written, as a *VerifyError wrapping one sentinel:
//
//   - an edited field of any entry: ErrHashMismatch at that seq (an edited
//     seq shows as ErrSequence, an edited tenant as ErrForeignTenant);
//   - a deleted entry at the head or in the middle, or a duplicated
//     (replayed) or reordered entry: ErrSequence;
//   - an entry replaced by another self-consistent one, or entries renumbered
//     and rehashed from some point without rehashing what follows:
//     ErrBrokenChain;
//   - an entry of another tenant: ErrForeignTenant;
//   - with an anchor (a Checkpoint kept apart from the log): entries deleted
//     from the tail (ErrTruncated), and a chain rewritten consistently up to
//     the anchor (ErrAnchorMismatch).
//
// The hash is unkeyed: anyone who can write the log can recompute every
// hash after a change. Without an anchor, Verify therefore proves only that
// the chain is internally consistent; deleting the newest entries, or
// rewriting the chain from some entry on, is detected only against an
// anchor. Publish Report.Head after each verification (or periodically)
// somewhere the log's writers cannot change, and pass it back as
// VerifyOptions.Anchor.
//
// Entries must not contain secrets: Details are stored and shown in clear.
package audit
