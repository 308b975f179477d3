// Package broker is the control plane's MQTT broker: by default an embedded
// mochi-mqtt server, or, for an external broker, the mosquitto
// configuration that makes mosquitto enforce the same rules.
//
// # Embedded broker
//
// [New] and [Broker.Run] serve MQTT 3.1.1/5 over mutual TLS. Every client
// presents a certificate that chains to the [Authority]'s roots and is not
// revoked; both are checked in the TLS handshake, so a revoked or foreign
// certificate never reaches MQTT. The client's identity is the certificate's
// SPIFFE URI SAN (docs/identity.md), read from the verified connection —
// never the client id or username — and mqttacl decides every subscribe
// (SUBACK 0x80 when refused), every delivered message, every publish and
// the Will (CONNACK "not authorized" when the Will topic is not the
// client's to publish). A refused publish is dropped: acknowledged but
// neither delivered nor retained, as mosquitto does, so a misbehaving
// MQTT 3.1.1 device is not disconnected into a retry loop. MQTT 5 clients
// get reason code 0x87 on QoS 1/2.
//
// Sessions are bound to identities: mochi keys sessions by client id, so
// the broker prefixes each client id with the SPIFFE ID; one identity can
// neither take over nor squat another's session by choosing its client id.
//
// Revocation is immediate: the control plane marks the certificate revoked
// in its Authority and calls [Broker.Disconnect] (or
// [Broker.DisconnectRevoked]); open connections are closed at once, and
// reconnects fail the handshake. A connection is also closed when its
// certificate expires.
//
// mochi's traps (DESIGN.md §3) are handled: MaximumMessageExpiryInterval is
// 0, so retained statuses and verdicts do not vanish after 24 h;
// MaximumInflight is raised to the packet-id space, and the control plane
// itself reads through in-process subscriptions ([Broker.Subscribe]), which
// have no inflight window, so a device's acknowledged message cannot be
// dropped on its way to the control plane. [Broker.Stats] reports
// InflightDropped for the rest. [Broker.Publish] publishes as the control
// plane without a network hop.
//
// A plain-TCP listener exists only for development: it must be on loopback,
// is refused with Production set, and takes the identity from the MQTT
// username (a SPIFFE ID).
//
// # Mosquitto
//
// [MosquittoConfig] renders a mosquitto.conf snippet (mTLS listener,
// require_certificate, use_identity_as_username, optional crlfile,
// acl_file) and [MosquittoACL] the ACL file. mosquitto can authorise only
// by username (the certificate CN with use_identity_as_username) and its
// ACL patterns substitute only %u and %c, so the choice was:
//
//   - patterns such as "pattern write tg/v1/+/devices/%u/#" with CN = device
//     id: rejected — the '+' lets a device write under every tenant's
//     prefix with its own id, a cross-tenant write;
//   - encoding tenant and kind into the CN so one pattern yields the exact
//     prefix: rejected — patterns apply to every user, so a device pattern
//     and an operator pattern cannot be kept apart, and it breaks the
//     CN=<device id> subject of docs/identity.md;
//   - the dynamic-security plugin: workable, but it moves the ACL into
//     state managed over $CONTROL with an admin credential, a second source
//     of truth;
//   - chosen: one "user <CN>" block per identity, rendered from the store
//     with exactly mqttacl.RulesFor's filters, rewritten and followed by
//     SIGHUP when a device enrolls or is revoked. CNs are device and operator
//     ids, which are globally unique and type-prefixed, and the fleet CA
//     writes the same id into CN and SPIFFE SAN; MosquittoACL refuses two
//     identities with one username. Unlisted users have no access at all.
//
// mqttacl's rules contain only grants because mosquitto's "topic deny"
// refuses reads as well as writes. Revocation with mosquitto: rewrite the
// CRL and the ACL without the device, SIGHUP; new handshakes are refused
// and the open connection can neither publish nor read (mosquitto checks
// the ACL per message), though mosquitto keeps its TCP connection open.
//
// Known differences of mosquitto 2.0 (Debian 12), shown by the conformance
// tests: acl_file grants every SUBSCRIBE (SUBACK success) and filters each
// delivered message instead, and it checks a Will's topic only when the
// Will is published, not at CONNECT. Nothing forbidden is delivered either
// way; only the embedded broker refuses early. A device can also end
// another device's connection by reusing its client id on mosquitto
// (sessions are not bound to identities there).
package broker
