// Package plancache keeps built TensorRT engine plans on the device's disk,
// encrypted under a key that only this device's TPM can unseal, so that a
// model is built into an engine once per model, TensorRT version, build
// options and GPU, not on every start (a build takes minutes on a Jetson).
//
// A plan holds the model's weights, and plaintext weights never touch the
// device's disk (DESIGN.md §6). So every entry is sealed with AES-256-GCM in
// memory before anything is written, and the cache key exists on disk only
// sealed by the TPM.
//
// # Use
//
//	c, err := plancache.Open(filepath.Join(cacheDir, "plans"), tpm, plancache.Options{MaxBytes: 4 << 30})
//	key := plancache.NewKey(onnx, tensorrt.Version(), opts.Fingerprint(), dev.String())
//	plan, err := c.Get(key)
//	if errors.Is(err, plancache.ErrMiss) {
//		if errors.Is(err, plancache.ErrCorrupt) { log.Warn("plan cache", "error", err) }
//		plan, err = tensorrt.BuildPlan(onnx, opts)
//		// ...
//		err = c.Put(key, plan)
//	}
//
// # Guarantees
//
//   - At rest, an entry is ciphertext only: "TGPLAN", a format version, a
//     random 96-bit nonce and the AES-256-GCM sealing of the plan, with the
//     header and the canonical encoding of its [Key] as associated data. An
//     entry file renamed to another key's name, copied from another device
//     or cache, or changed in any byte does not open.
//   - The cache key (32 random bytes) is sealed by the TPM
//     (tpmdev.Device.Seal: fixedTPM, fixedParent, under the project's
//     storage primary key) and kept next to the entries in key.sealed, mode
//     0600. A copied disk yields neither plans nor key. The seal needs no
//     password or PCR state: it protects against a stolen disk, not against
//     code running as the agent.
//   - Get never returns part of a plan, another key's plan, or anything
//     that failed authentication. A miss is an error wrapping [ErrMiss]; an
//     entry that exists but does not open is removed and reported with an
//     error wrapping both [ErrCorrupt] and [ErrMiss], so callers rebuild
//     either way and log the second kind. Neither is ever a panic.
//   - Writes are atomic: a temporary file in the same directory (0600) is
//     written, synced, renamed into place, and the directory synced. A crash
//     leaves the old entry or the new one; leftovers are removed by Open.
//   - The entry files together stay within [Options.MaxBytes]: after each
//     Put (and Open) the least recently used entries are evicted. Use is
//     tracked in memory and in the files' modification times (set by Put
//     and Get through the injectable clock), so the order survives a restart.
//   - A key the TPM refuses (the disk was moved to another device, or the TPM
//     was cleared) or a damaged key file cannot be recovered: Open logs it,
//     removes all entries and starts over with a new key; every plan is then
//     rebuilt once. A TPM that does not answer is an error, and nothing is
//     removed.
//
// # Why a key file, not the agent's state database
//
// The sealed key lives in the cache directory rather than in the agent's
// bbolt state: the cache is disposable by nature (deleting the directory is
// a complete, safe reset, and the key goes with the entries it protects),
// it never couples the state file's schema or transactions to a cache, and
// the blob is useless without the TPM, so keeping it next to the ciphertext
// gives nothing away. A directory is used by one process at a time (the
// agent); Cache itself is safe for concurrent use.
//
// Without a TPM, Open fails with [ErrNoSealer]: the agent then builds plans
// in memory on every load and keeps none.
package plancache
