// Package attest is the agent's attestation responder: it answers the
// control plane's challenges (wire.AttestChallenge on
// tg/v1/<tenant>/devices/<device>/cmd/attest) with evidence
// (wire.AttestEvidence on .../attestation), sent through the durable outbox.
//
// # Evidence
//
// For a well-formed, unexpired challenge the evidence carries a TPM2_Quote
// by the device's enrolled attestation key (the AK re-derived from
// tpmdev.AKTemplate, so it is the key recorded at enrollment) over the
// requested PCRs of the SHA-256 bank with the challenge's nonce as
// extraData, the AK's signature, the values of those PCRs, and the
// platform's binary measured-boot log when it has one. The TPMS_ATTEST
// itself holds the TPM's clock, reset and restart counters, so the verifier
// gets them without a separate field. The PCR values are read under the
// same device lock as the quote (tpmdev.Device.Quote), so no other TPM
// command of this agent runs in between; the quote is also checked locally
// against them before it is sent, and a mismatch (a PCR extended by other
// software through the resource manager at that instant) is retried once.
//
// The event log is read from EventLogPath (for /dev/tpmrmN the kernel's
// /sys/kernel/security/tpmN/binary_bios_measurements) on every answer, at
// most MaxEventLog bytes. A platform without one (a Jetson's fTPM, swtpm,
// the simulator) sends none; an unreadable or oversized log is omitted and
// logged once. When the evidence with its log does not fit into the outbox,
// it is sent without the log.
//
// Instead of a quote, the evidence carries Error when the device cannot or
// must not quote: ErrorNoTPM for a device enrolled without a TPM (the
// verifier marks it not attestable), ErrorExpired for a challenge whose
// ExpiresAt is more than Skew in the past by the device's clock, and the
// TPM's error when quoting failed. These answers let the verifier record
// why there is no quote instead of waiting for the challenge to go stale.
//
// # Guarantees
//
//   - A challenge that is not well formed (see ParseChallenge) is dropped
//     and logged at debug level; nothing is sent and nothing panics.
//   - A challenge id is answered at most once while it is among the last
//     256 ids seen, so an MQTT redelivery does not cost a second quote.
//   - At most one answer per MinInterval (default 1s), so a flood of
//     challenges cannot pin the TPM or fill the outbox. Challenges arriving
//     faster wait in a short queue (QueueSize, default 8) in arrival order;
//     when it is full the oldest waiting challenge is dropped (the verifier
//     sees it unanswered; its nonce was the closest to expiry anyway).
//   - Evidence goes through the outbox (class critical: kept across broker
//     outages and agent restarts, never evicted). When the outbox is full of
//     critical entries the answer is dropped and logged, and its id
//     forgotten so a redelivery is answered; a storage error ends Run.
//
// Challenges waiting in the queue are in memory only: a challenge received
// just before the agent stops is not answered, and the verifier issues a
// new one at its next interval.
package attest
