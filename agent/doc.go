// Package agent is the TensorGuardFlow device daemon (`tg-agent run`): it
// holds the device's mTLS identity, whose key lives in the TPM, enrolls with
// the control plane once, renews its certificate before it expires, and
// keeps the device visible over MQTT with a durable outbox for what must
// arrive.
//
// # Lifecycle
//
// New(cfg, logger).Run(ctx) opens the state file (bbolt) and the TPM
// (/dev/tpmrm0, an swtpm socket, or the simulator in development), and
// loads the TLS key, a primary key the TPM re-derives identically after
// every restart, so no key blob is ever stored. If the state holds no
// identity, the agent enrolls (package enroll: CA-pinned first contact,
// TPM2_Certify, credential activation), retrying transient failures with
// backoff and giving up with an *EnrollError on refusals (used or expired
// token, untrusted TPM). The identity (certificate chain, CA bundle, ids) is
// written to the state file before anything else happens, so a killed and
// restarted agent comes back with the same identity and never enrolls
// twice. A stored certificate whose key is not the TPM's TLS key (TPM
// cleared, simulator without a seed) is refused with ErrKeyMismatch rather
// than silently re-enrolled.
//
// Every enrollment also creates the device's package decryption key (the
// "KEM key", package internal/keys): an X-Wing key pair whose private part
// the TPM seals and whose public part goes into the enrollment request,
// covered by the TPM's certification of the TLS key. It is stored before
// the identity, kept across restarts, and replaced only by a re-enrollment.
//
// Then one errgroup runs the tasks; the first failure (or a panic, turned
// into an error) stops them all:
//
//   - presence: the MQTT session (package presence): retained online status
//     with a session counter, a Will for offline, reconnect with backoff.
//     TLS presents the TPM-backed certificate through GetClientCertificate.
//   - outbox: drains the durable outbox to the broker.
//   - renew: at renew_fraction (default 2/3) of the certificate's lifetime it
//     asks /api/v1/device/renew for a new certificate for the same TPM key,
//     persists it and swaps it in. The current MQTT connection is kept: a
//     TLS session's client certificate is only checked at the handshake, so
//     dropping a healthy connection would buy nothing and cost an
//     offline/online flap; the next connection (after any network loss)
//     presents the new certificate. Failures back off (2s doubling to 5m).
//   - attest: answers the control plane's attestation challenges on
//     cmd/attest (package attest): a quote by the enrolled AK over the
//     requested SHA-256 PCRs with the challenge's nonce, the PCR values and,
//     on a hardware TPM, the firmware's measured-boot log, through the
//     outbox to the attestation topic; at most one quote per second.
//     Without a TPM every challenge is answered "no TPM".
//   - telemetry: a heartbeat (schema tg.telemetry.v1: device type, labels,
//     uptime, certificate expiry, outbox depth) through the outbox every
//     telemetry.interval, class telemetry (dropped first when full).
//   - watchdog: WATCHDOG=1 while healthy: the heartbeat loop made progress
//     recently and the state file answers a read transaction.
//   - kem-key: a device enrolled by an agent from before package key
//     grants has no KEM key; this task generates one and registers it with
//     PUT /api/v1/device/kem-key (retrying transient failures), then ends.
//     A refusal (the control plane holds another key) is logged; the device
//     keeps running without key grants.
//   - install: the install pipeline (package install, docs/packages.md):
//     jobs from cmd/job and, on every connect, GET /api/v1/device/jobs;
//     packages downloaded with range resume into <state dir>/packages and
//     kept encrypted; verified, checked against anti-rollback and the
//     fleet's policy, opened with a key grant, decrypted into memory only,
//     loaded by an inference backend (install.runtime: TensorRT where the
//     agent was built with it and a GPU answers, else ONNX Runtime; package
//     inference) into an A/B slot, self-tested, then committed or rolled
//     back. A restart resumes or rolls back every interrupted job.
//   - inference-api: the serving model over the Open Inference Protocol
//     (KServe v2) on a Unix socket, mode 0660 (inference.socket,
//     inference.socket_group), and optionally on a loopback TCP address
//     (docs/inference.md). Every inference is counted per model.
//   - metrics (metrics.listen, loopback only): Prometheus metrics — the
//     inference counters and latency histogram per model, the thermal
//     zones, the Go runtime and the process. The heartbeat carries the same
//     per-model figures and the thermal zones.
//   - reload (with WithConfigPath): SIGHUP re-reads and validates the file and
//     applies it only if every changed key is safe to change live (labels,
//     telemetry.interval, log.level); otherwise the old config stays and the
//     reason is logged.
//
// READY=1 is sent once the tasks are started and the inference and metrics
// listeners accept connections (the MQTT session is connected
// or queued to connect); STOPPING=1 when ctx ends. Shutdown is bounded by
// shutdown_timeout: presence publishes offline and disconnects, the outbox
// stops (its entries are durable), the TPM and the state file are closed.
//
// While running, the agent keeps <state_path>.status.json current, so
// `tg-agent status` works although the state file is locked.
//
// # Devices without a TPM
//
// With tpm: {none: true} (set explicitly; a missing TPM never falls back to
// it) the agent opens no TPM. Its TLS key is an ECDSA P-256 key it generates
// before its first enrollment and keeps in the state file (mode 0600), so a
// restart keeps the identity and renewals keep the key; the key is never
// logged. Its KEM private key is kept in the state file too, and is not
// TPM-protected. Enrollment is one request, POST /api/v1/enroll with tpm_kind
// "none", the CSR and no TPM evidence, answered 201 with the certificate —
// no AK, no TPM2_Certify, no credential activation. The control plane
// admits it only into a fleet whose policy allows devices without a TPM
// (allow_no_tpm) and records the device as tpm_kind "none". This mode is
// honest about being weaker: the key can be copied along with the state
// file, and nothing proves where it lives. Attestation (a later issue)
// must treat tpm_kind "none" devices as never attestable — there is no AK
// to quote with — rather than as devices that merely have not attested
// yet. An identity is bound to the mode it enrolled in: switching an
// enrolled device between a TPM and none is ErrKeyMismatch.
package agent
