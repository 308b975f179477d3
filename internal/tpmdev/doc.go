// Package tpmdev is the device side of TensorGuardFlow's TPM use: it opens a
// TPM 2.0 (a kernel resource manager such as /dev/tpmrm0, an swtpm over TCP
// or a Unix socket, or any io.ReadWriteCloser such as the go-tpm-tools
// simulator in package tpmsim), reads the endorsement key (EK) and its
// manufacturer certificate, creates the attestation key (AK) and the device's
// mTLS key inside the TPM, and performs the TPM operations enrollment and
// attestation need: TPM2_Certify (the AK vouches that the TLS key lives in
// the TPM), TPM2_ActivateCredential (the EK and AK live in the same TPM),
// TPM2_Quote (PCR evidence for a fresh nonce, with the PCR values read in the
// same locked section), TPM2_PCR_Read and, for tests, TPM2_PCR_Extend. It
// also seals small secrets to the TPM (Seal, Unseal: a sealed data object
// under a storage key), which the agent uses for its package-decryption key.
//
// # Guarantees
//
//   - Private keys never leave the TPM. The TLS key is exposed only as a
//     crypto.Signer whose Sign runs TPM2_Sign.
//   - The AK is a restricted signing key, so it signs only structures the TPM
//     itself generated (TPMS_ATTEST with TPM_GENERATED_VALUE); it cannot be
//     used to forge a certification of a software key.
//   - The AK and the TLS key are primary keys in the owner (storage) hierarchy
//     created from fixed templates (see AKTemplate and TLSKeyTemplate). A TPM
//     derives a primary key deterministically from the hierarchy seed and the
//     template, so after a process restart or reboot the same keys come back
//     without storing any key blob on disk and without using persistent
//     handles (which are scarce and shared with other software). The keys
//     change only when the owner hierarchy is cleared (TPM2_Clear), which
//     also voids the enrollment: the device must enroll again.
//   - The EK is used from its standard persistent handle (0x81010001 for RSA,
//     0x81010002 for ECC) when one holding the TCG default template is
//     present, otherwise it is re-created as a transient primary key from the
//     TCG default template; this package never writes persistent handles or
//     NV indices.
//   - A Device serialises every TPM command it issues (including Sign calls
//     through the TLS key's crypto.Signer); it is safe for concurrent use.
//     Other software that talks to the same TPM must go through a resource
//     manager (/dev/tpmrm0), as usual.
//   - Keys stay loaded until closed. A TPM without a resource manager in
//     front of it (swtpm, the simulator, /dev/tpm0) holds only about three
//     transient objects, so keep at most EK, AK and TLS key loaded at once
//     and close the EK once enrollment is done (it is needed again only to
//     re-enroll). Seal and Unseal need one and two slots of their own; when
//     the TPM is out of object memory, the Device flushes the owner-hierarchy
//     primary keys it handed out (AK, TLS key) and re-creates each, from its
//     template, the next time it is used — the same key, since primaries are
//     deterministic. The EK is never flushed this way. Without a resource
//     manager the objects of a process that died unflushed (SIGKILL) stay
//     loaded; FlushTransients, called once by the TPM's user at start,
//     frees them.
//   - Sealed data (Seal) is bound to this TPM and to its owner hierarchy:
//     the sealed object's private area is encrypted and integrity-protected
//     under the storage key (StorageKeyTemplate, a deterministic primary),
//     so a SealedBlob copied to another machine, or altered, does not load,
//     and TPM2_Clear makes it unrecoverable. Unsealing needs no password and
//     no PCR state: it protects against a stolen disk or state file, not
//     against code running as the agent on the device itself.
//
// The qualifying data TPM2_Certify signs during enrollment is computed by
// package tpmdev/enrollbind, which the control plane uses too.
package tpmdev
