// Package kek is the control plane's key custody: a key-encryption key
// (KEK) behind the Provider interface, and per-tenant data keys (DEKs)
// wrapped under it that encrypt tenant data at rest (DESIGN.md §6, §7).
//
// # Key hierarchy
//
//	KEK (Provider: env var or key file now; Vault Transit or a KMS later)
//	 └─ wraps, per tenant and version, a random AES-256 DEK (stored wrapped by the caller)
//	     └─ seals tenant data: AES-256-GCM envelopes (Keyring.Seal / Keyring.Open)
//
// The KEK never leaves its Provider, and a plaintext DEK never leaves the
// Keyring: callers handle only wrapped DEKs and envelopes.
//
// # Wrapping (LocalProvider)
//
// A DEK is wrapped with AES Key Wrap with Padding (RFC 5649, NIST SP
// 800-38F KWP), implemented here over crypto/aes because the standard
// library has none; the RFC 5649 and RFC 3394 test vectors pin it down.
// KWP authenticates the key but takes no associated data, so the aad is
// bound by the wrapping key instead:
//
//	wrapping key = HKDF-SHA256(secret = KEK, salt = none, info = "tensorguardflow kek wrap v1\x00" || aad)
//	wrapped      = 0x01 || KEK id (8 bytes) || KWP(wrapping key, DEK)
//
// Unwrapping under a different aad derives a different wrapping key and
// fails the KWP integrity check (ErrUnwrap). A tenant DEK's aad is
// TenantKeyAAD(tenant, version), so a wrapped DEK copied to another tenant
// or version is useless. The KEK id (also Provider.ID) tells which KEK
// wrapped a DEK: UnwrapKey reports ErrWrongKEK rather than ErrUnwrap when
// it names another key, which is what KEK rotation needs.
//
// # Envelopes
//
//	0x01 | DEK version (4, big-endian) | nonce (12, random) | AES-256-GCM ciphertext || tag (16)
//
// The GCM additional data covers the tenant id (length-prefixed), the
// envelope header and the caller's aad, so an envelope opened as another
// tenant's, under another aad, or with a changed version fails with
// ErrDecrypt. Random 96-bit nonces limit a DEK to 2^32 seals: rotate
// before that (NewTenantKey with the next version; old versions stay
// readable until the caller re-encrypts and deletes them).
//
// # Rotation
//
// DEK rotation: store NewTenantKey(tenant, current+1) as the new current
// version; Open keeps reading older versions; EnvelopeKeyVersion finds
// data to re-encrypt. KEK rotation: pass every stored DEK through
// RewrapTenantKey(old, new, …), store the results, then retire the old
// KEK. Other replicas pick up a new current DEK within
// KeyringOptions.CurrentTTL.
//
// # Key material and production
//
// A LocalProvider reads 32 bytes, hex or base64, from an env var named in
// the configuration (FromEnv) or a key file (FromFile, mode 0600 or 0400
// only). GenerateKeyFile writes a random development key for a first run
// and marks it as such; ProductionReady reports ErrInsecure for that key
// (wherever it is later read from) and for NewMemoryProvider, so a server
// with TG_ENVIRONMENT=production refuses to start with them. An
// operator-supplied key, from an env var or a file such as a systemd
// credential, is production-ready. No error, String or log value of this
// package contains key material.
//
// Go cannot guarantee that key bytes are erased from memory; the package
// clears the copies it owns when it is done with them.
package kek
