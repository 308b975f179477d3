// Package presence owns the agent's MQTT session: it connects to the broker,
// keeps the device's retained status current, reconnects with backoff, and
// offers Publish (QoS 1, returns after PUBACK; the outbox's Publisher) and
// Subscribe (command topics) to the rest of the agent.
//
// # Status and the session rule
//
// Before every connect attempt Session takes the next session number N from
// the state database (incremented and fsynced there, so N is never reused,
// even across crashes). The connection registers a Will and, once connected,
// publishes a retained status, both on tg/v1/<tenant>/devices/<device>/status
// at QoS 1:
//
//	online:  {"schema":"tg.status.v1","device":D,"state":"online","session":N,"ts":T}
//	Will:    {"schema":"tg.status.v1","device":D,"state":"offline","session":N}
//
// The broker, not the device, publishes the Will, and it may do so late: a
// half-open connection of session N is detected only after the keepalive
// expires, possibly after session N+1 has already announced itself online.
// Consumers therefore never take the last message at face value; they apply
// the rule implemented by Latest:
//
//	a status whose session is lower than the highest session seen is stale;
//	within one session, offline is final (online → offline, never back).
//
// So a late Will of session N can never hide the online of session N+1.
// (With one MQTT client id per device the broker's session takeover also
// fires the old Will before the new connection is accepted, so the retained
// message is usually right too; the rule makes correctness independent of
// broker timing.)
//
// On a clean shutdown (Run's context ends) Session publishes offline for the
// current session itself and sends DISCONNECT, so no Will fires.
//
// # Connections
//
// Session runs its own reconnect loop instead of paho's, because paho fixes
// the Will when the client is created and every connection needs a Will with
// its own session number: each connection is a fresh paho client with
// SetOrderMatters(false) (paho otherwise deadlocks when a handler blocks and
// drops QoS 0 during its internal reconnect), CleanSession false (the broker
// keeps queued commands while the device is away) and no auto-reconnect.
// Failed attempts and lost connections wait Backoff: 1s doubling to 60s, ±20%
// jitter, from an injected clock and random source.
//
// # Handlers
//
// Each Subscribe registration has its own worker goroutine and queue, and its
// handler runs one message at a time. paho's per-message goroutine only
// hands the message over, so a slow handler delays that subscription's
// acknowledgements, never the connection or other subscriptions.
// Subscriptions are renewed on every connect. A panicking handler ends Run
// with an error.
//
// Arrival order of inbound messages is not guaranteed: SetOrderMatters(false)
// gives it up, and QoS 1 redelivery after a reconnect reorders anyway.
// Commands therefore carry their own ids (job id, challenge nonce, bundle
// version) and handlers must be idempotent (Message.Duplicate marks a
// redelivery).
package presence
