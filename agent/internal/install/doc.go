// Package install is the agent's install pipeline: it takes package jobs
// from the control plane and installs models atomically into an A/B slot
// pair, with a self-test before commit and rollback on failure (Mender's
// model), refusing rollbacks to older versions (TUF/Uptane's rule).
//
// # Pipeline
//
// A job arrives as a wire.JobNotify on cmd/job (Handle) or from the list of
// open jobs the installer fetches at start and on every MQTT connect
// (Kick). The notification carries no authority; the job itself is fetched
// over mTLS (GET /api/v1/device/jobs/{id}). An install job then goes
// through the states of wire.JobReport, each persisted in the agent's bbolt
// file before its side effects are trusted and then reported through the
// outbox on jobs/<job id>:
//
//	received → downloading → verifying → policy → key_grant → installing → self_test → committed
//	                                                                                  ↘ failed (rolled back)
//	any step before installing ──────────────────────────────────────────→ refused (nothing changed)
//
// The steps:
//
//   - downloading: GET PackageRef.URL into <package dir>/<id>.partial,
//     resuming with "Range: bytes=<size>-" from the partial file's size;
//     consecutive failures back off and, after DownloadAttempts without
//     progress, refuse with DOWNLOAD. The complete file must hash to the
//     registry id (SHA-256 of the file); it is synced and renamed to
//     <id>.tgsp. Progress is reported at most every ProgressInterval. The
//     file stays as shipped: encrypted.
//   - verifying: tgsp Open and Verify (signature by a publisher the job
//     pins, expiry, every shard hash): UNKNOWN_PUBLISHER, SIGNATURE,
//     EXPIRED, MALFORMED_PACKAGE; the manifest must name the job's package
//     and version and target the agent's device type (DEVICE_TYPE); and the
//     anti-rollback rule below (OLDER_VERSION).
//   - policy: Policy.Evaluate with the manifest, dp_cert, evidence, device
//     facts and the last attestation verdict the agent knows; deny or error
//     is POLICY_DENY with the reasons. No policy configured: allow.
//   - key_grant: POST /api/v1/device/key-grants; a refusal (403
//     KEY_GRANT_REFUSED, any 4xx) or a grant that KeyOpener cannot open is
//     KEY_GRANT_REFUSED. The grant (the DEK wrapped to the device's KEM key)
//     is kept with the job and the slot, so a restart needs no new grant.
//   - installing: tg-model.json, the self-test file and the model files are
//     decrypted with tgsp OpenFile into memory — plaintext is never written
//     to disk — and the model is handed to the Runtime (ACTIVATION on
//     failure).
//   - self_test: one transaction makes the new slot active on trial (the
//     previous active slot becomes previous, and the job records the slots
//     to restore). Every case of the package's self-test runs through the
//     loaded model; an output off by more than the stated tolerance fails
//     with SELF_TEST and one transaction restores the slots (failed). The
//     old model kept serving meanwhile.
//   - committed: one transaction commits the slot and raises the package's
//     high-water mark; then the new model serves and the old one is closed.
//
// A rollback job (wire.JobRollback) makes the previous slot active again
// through the same installing → self_test → commit steps (rolled_back), or
// is refused with NO_PREVIOUS when the previous slot is not the package it
// names. It needs no download, policy or key grant: the previous slot's
// package and grant are on the device.
//
// # Anti-rollback
//
// An install job is refused with OLDER_VERSION unless its version is
// strictly newer (SemVer precedence, tgsp.Version.Compare) than the active
// slot's, when the active slot holds the same package name, and not lower
// than the highest version of that name ever committed on the device. The
// high-water mark survives rollbacks (TUF's rule: once committed, never
// accept anything older again), so after rolling back from 2.0 to 1.0 the
// device accepts 2.0 again but never 1.5. Only a rollback job returns below
// the mark, and only to the one previous slot the device kept. Expiry gates
// installation; a committed model keeps running after its package expires
// (a reload re-verifies the signature and hashes at the recorded install
// time).
//
// # Crash safety
//
// Every state change is one bbolt transaction, fsynced before the step's
// side effects are trusted. On start (recover), before anything else:
//
//   - a job in installing is failed with ACTIVATION and not retried in
//     place — the model may be what killed the agent; nothing was activated;
//   - a job in self_test is failed with SELF_TEST and the slots it recorded
//     are restored (Mender: activated but not committed means roll back).
//     The commit transaction is the only proof that the self-test passed;
//   - every other non-terminal job resumes: a download continues from the
//     partial file's size, and verification always runs again from the file
//     on disk, since nothing before the key grant is trusted across a
//     restart;
//   - files in the package directory that no slot and no open job needs are
//     removed; then the active slot is loaded again (signature, hashes,
//     stored grant) and serves.
//
// Reports are at least once: a report is queued in the outbox, then marked
// sent in the job record; a crash between the two sends it again after the
// restart (with a new msg_id). A finished job is never run again: asked
// about again by a notification, or under a new attempt (the control
// plane's deadline passed first), its final state is reported again under
// the latest attempt; a job in progress carries on under a new attempt. A
// job the control plane cancelled before it started (410 JOB_CANCELLED) is
// dropped.
//
// # Fault injection (tests only)
//
// Built with the faultinject tag (fault_on.go), the agent reads
// TG_FAULT_KILL_AT (SIGKILL itself at a checkpoint), TG_FAULT_SELFTEST=1
// (fail every self-test) and TG_FAULT_DIR (switch files: fail self-tests,
// wait at a checkpoint, while they exist): the end-to-end tests in
// integration/ use it. Without the tag (fault_off.go: every agent we ship)
// there is no hook and the environment changes nothing.
//
// # Package convention
//
// docs/packages.md: tg-model.json (schema tg.model.v1: runtime, model
// file, input and output names, self-test file, extra files) and the
// self-test file (schema tg.selftest.v1: cases of input and expected
// output tensors, an absolute tolerance and an optional relative one).
package install
