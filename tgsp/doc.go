// Package tgsp implements TGSP, the TensorGuard Secure Package format: a
// signed, encrypted container for model files, with the documents that state
// how the model was made (evidence.json) and under what differential-privacy
// guarantee (dp_cert.json). SPEC.md in this directory is the normative
// description; this package is its reference implementation.
//
// What it guarantees:
//
//   - Every byte is authenticated. The hybrid signature (ML-DSA-65 and
//     Ed25519 in the IETF composite construction; both halves must verify)
//     covers the header and the manifest; the manifest covers the stored
//     ciphertext (SHA-256 per 4 MiB shard), the attached documents and a
//     commitment to the data-encryption key. Recipient stanzas are unsigned
//     by design, so keys can be granted without re-signing: a changed stanza
//     can only fail to open, never yield a different plaintext.
//   - The payload is encrypted per file as an age-style STREAM of 64 KiB
//     AES-256-GCM chunks, so truncation, reordering and trailing data fail.
//   - The DEK is wrapped per recipient with HPKE over X-Wing (ML-KEM-768 +
//     X25519), bound to the package id so a stanza cannot be moved.
//   - Verification needs no key and runs on several cores; unpacking holds a
//     few chunk buffers per worker whatever the package size, and writes
//     nothing at its destination unless everything checked.
//   - Versions and expiry are inside the signed manifest, so a consumer can
//     refuse rollbacks (Version.Compare) and stale metadata (ErrExpired).
//
// The usual sequence is Open (structure only, untrusted), VerifySignature
// (trust and expiry), then either VerifyPayload (no key), or UnwrapDEK
// followed by Unpack or OpenFile. Methods that release plaintext refuse to
// run before VerifySignature has succeeded.
//
// This package imports nothing else from the module, so tools outside it can
// depend on the format alone.
package tgsp
