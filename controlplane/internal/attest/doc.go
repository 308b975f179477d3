// Package attest is the control plane's TPM attestation verifier: it issues
// single-use nonces for quote challenges and turns a device's answer (a
// wire.AttestEvidence) into a wire.Verdict. It is pure Go and needs no TPM;
// the scheduler that sends challenges, the store that keeps verdict history
// and device state, and MQTT publication are the caller's job.
//
// Its anchors are Keylime's verifier and go-tpm-tools' server package, with
// one deliberate difference from the latter: go-tpm-tools' VerifyAttestation
// checks only the PCRs that have events in the log, so a device with an empty
// log and a changed PCR passes it. Here the fleet's PCR policy is applied to
// every selected PCR by this package's own code, whether or not the log
// covers it.
//
// # Checks, in order
//
// Verifier.Verify runs these checks; 1–6 are gates (a failure ends
// verification: until they pass, nothing the evidence says can be
// believed), 7–9 are all evaluated so an operator sees every problem at
// once. Each failure is a wire.VerdictReason with a stable code; reasons
// about one PCR carry its index. Evidence time is the time of Verify (the
// TPM clock is not wall-clock time).
//
//  1. Inputs: the enrolled AK must be a restricted signing key and the fleet
//     policy valid, else NOT_ATTESTABLE / PCR_POLICY (fail closed).
//  2. Well-formed evidence (MALFORMED_EVIDENCE): size-bounded JSON of schema
//     tg.attest.evidence.v1, for this device, with a nonce, a TPMS_ATTEST
//     that parses canonically (TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE), a
//     TPMT_SIGNATURE that parses canonically, 32-byte PCR values for indices
//     0–23 and, when present, a TCG PC Client crypto-agile event log that
//     parses. A device that reported an error gets DEVICE_ERROR. Nothing
//     panics on any input (FuzzVerify).
//  3. TPM kind: the device's enrolled kind must be in the policy's
//     AllowedKinds (TPM_KIND_REFUSED); "none" is NOT_ATTESTABLE.
//  4. Nonce (NONCE_UNKNOWN / NONCE_EXPIRED / NONCE_REPLAYED): the NonceStore
//     consumes the challenge id and nonce, which must have been issued to
//     this tenant and device, be unexpired and unused. From here on the
//     nonce is spent whatever the verdict: one answer per challenge.
//  5. Signature (BAD_SIGNATURE): the TPMT_SIGNATURE is by the enrolled AK,
//     with the AK's own scheme and hash, over exactly the TPMS_ATTEST bytes.
//     Only then is anything inside the quote believed. The quote's extraData
//     must be the consumed nonce (NONCE_UNKNOWN otherwise: an old quote).
//  6. PCR digest (PCR_DIGEST_MISMATCH): the quoted selection is the policy's
//     SHA-256 selection, the reported values cover exactly it, and SHA-256
//     over the values in ascending index order equals the quoted digest.
//     After this the reported PCR values are as good as the TPM's word.
//  7. Clock (CLOCK_ROLLBACK): against the state of the last trusted quote,
//     the reset count must not decrease and, within the same reset count,
//     neither may the restart count or the clock. A larger reset count is a
//     reboot: Verdict.Reboot is set, which alone does not make a device
//     untrusted.
//  8. PCR policy (PCR_POLICY, with the PCR index): every selected PCR must
//     be in its golden allow-list, or equal to the device's baseline.
//  9. Event log (EVENT_LOG_MISMATCH, with the PCR index): when the device
//     sent a log, replaying its SHA-256 digests must reproduce every
//     selected PCR the log has events for. When PCR 7 replays correctly, the
//     UEFI SecureBoot variable measured there gives Result.Boot.SecureBoot.
//
// The verdict is trusted exactly when there is no reason.
//
// # State
//
// The caller persists two things per device and passes them back:
//
//   - DeviceState: the clock, reset and restart counts of the last trusted
//     quote. Result.State is the state to store and Result.StateChanged says
//     whether it moved; it moves only on a trusted verdict, so Reboot means
//     "rebooted since the last trusted evidence", as wire.Verdict documents.
//   - The baseline: for PCRs whose rule is "baseline", the values recorded
//     when the device was first found trustworthy. When Input.Baseline lacks
//     a value that the policy needs and every other check passed, the
//     quoted values become the baseline (trust on first use, as with the
//     AK at enrollment): Result.BaselineRecorded is set and Result.Baseline
//     holds the values to store. A caller that takes the baseline at
//     enrollment passes it in and this never happens.
//
// # Nonces
//
// NonceStore is the consumer-side interface for challenge nonces;
// MemoryNonces is the single-node implementation (bounded, expiring,
// single-use, constant-time comparison, bound to tenant and device). A nonce
// is consumed only by a presentation that matches its id, tenant, device and
// value, so another device that learns a challenge id cannot burn it.
//
// # Event log format
//
// The log is the binary TCG PC Client Platform Firmware Profile log in the
// crypto-agile format: a TCG_PCR_EVENT header (SHA-1 format) carrying the
// "Spec ID Event03" structure that lists the digest sizes, then
// TCG_PCR_EVENT2 records. Only the SHA-256 bank is replayed; EV_NO_ACTION
// events are not extended, and a StartupLocality EV_NO_ACTION event sets
// PCR 0's initial value. This package parses the log itself instead of
// using go-eventlog (which go-tpm-tools v0.4.10's server package wraps but
// does not expose as a raw parser) to keep the parser small, bounded,
// fuzzed, and out of go.mod.
package attest
