// Package outbox is the agent's durable, bounded FIFO of MQTT messages that
// must reach the broker: job progress and results, attestation evidence,
// telemetry. It lives in the agent's bbolt state file (bucket "outbox").
//
// # Delivery
//
// Enqueue assigns the next sequence number and commits the entry (bbolt
// fsyncs on commit) before returning, so an accepted message survives an
// agent crash or power loss. Run drains entries in sequence order to a
// Publisher whose Publish returns only after the broker acknowledged the
// message (PUBACK for QoS 1), and deletes an entry only after that. A failed
// publish is retried with exponential backoff and jitter, forever: Run never
// drops an entry because the broker is away. Only the full policy below drops.
// Kick ends a backoff early (call it when the MQTT connection is back).
//
// Delivery is at least once. A crash (or a failed delete) between the PUBACK
// and the delete publishes the same bytes again after restart. Consumers
// deduplicate by a message id carried inside the payload: build the payload
// with EnqueueFunc, which hands the builder a msg_id ("<outbox id>-<seq>",
// unique per device even across state resets), and put it in the JSON as
// "msg_id" next to "schema". Order is preserved among delivered entries;
// evicted telemetry leaves gaps.
//
// # Bounds and the full policy
//
// The outbox holds at most Config.MaxEntries entries and Config.MaxBytes
// bytes (topic + payload). Each entry has a Class, derived from its topic by
// Config.Classify (default ClassifyByTopic: ".../telemetry" is
// ClassTelemetry, everything else ClassCritical). When an entry does not fit:
//
//  1. the oldest telemetry entries are evicted, oldest first, until it fits;
//     each eviction is counted (Stats.Dropped, persisted across restarts);
//  2. if it still does not fit because the rest is critical, Enqueue returns
//     ErrOutboxFull and stores nothing: critical entries are never dropped,
//     the caller applies back-pressure (pause the job, retry later).
//
// A single entry larger than MaxBytes fails with ErrTooLarge.
//
// # Errors
//
// Storage errors (a read-only or damaged file, a full disk) are returned
// wrapped from Enqueue; in Run a failed delete after a successful publish ends
// Run with the error (the entry stays and will be delivered again) rather
// than looping on a broken database.
package outbox
