// Package keys keeps the device's package-decryption key, the "KEM key":
// an X-Wing (ML-KEM-768 + X25519) recipient key pair in tgsp's encoding.
// The control plane holds each package's DEK and, for every device in a
// rollout whose attestation is good, re-wraps it to that device's KEM
// public key (a key grant, tgsp.Package.GrantKey); the agent's install
// pipeline opens the grant with Custodian.OpenGrant. The DEK never travels
// unwrapped and the KEM private key never leaves the device.
//
// # Lifecycle
//
// The agent generates a new key pair (Generate) for every enrollment, sends
// the public key in its enrollment request (where the TPM's certification
// covers it, see internal/tpmdev/enrollbind) and records it as registered
// once the control plane accepted it. A device enrolled by an agent from
// before key grants has no key: the agent generates one on start and
// registers it with PUT /api/v1/device/kem-key. The key then stays the same
// across restarts and certificate renewals until the next enrollment.
//
// # Protection
//
// With a TPM, the private key (its 33-byte tgsp body: algorithm byte and
// 32-byte X-Wing seed) exists on disk only sealed by the TPM
// (tpmdev.Device.Seal: a sealed data object under a deterministic storage
// primary key). The sealed blob lives in the agent's state file; it is
// useless without this TPM, a changed byte makes the TPM refuse it, and
// TPM2_Clear destroys it along with the device's other TPM keys. It is
// unsealed for each OpenGrant and dropped after; unsealing needs no
// password or PCR state, so the seal protects against a copied disk or
// state file, not against code running as the agent on the device.
//
// Without a TPM (agent tpm: {none: true}) the private key is stored as it
// is, in the state file (mode 0600, like the software TLS key of such a
// device): it is NOT TPM-protected, and anyone who can read the state file
// can open the device's key grants. The record says which protection it
// has (Protection), so the two are never confused.
//
// # Storage
//
// One JSON record under the state's key/value namespace "kem", key "key"
// (written in one transaction, so public and private part always match),
// and the key id the control plane has registered under "registered".
package keys
