// Package mqttacl is the single source of truth for who may publish and
// subscribe to what on TensorGuardFlow's MQTT topics (DESIGN.md §5). It is
// pure logic with no broker dependency, shared by the embedded broker, the
// renderer of external-broker (mosquitto) ACL files, and tests.
//
// Identities come only from a client certificate's SPIFFE URI SAN
// (docs/identity.md), never from an MQTT client id or username:
//
//	spiffe://tensorguardflow/tenant/<tenant>/device/<device>
//	spiffe://tensorguardflow/tenant/<tenant>/operator/<operator>
//	spiffe://tensorguardflow/controlplane[/<instance>]
//
// The rules are expressed as topic filters (see [RulesFor]) so that an
// external broker's ACL language can state them verbatim:
//
//   - a device may publish only its own device-to-control-plane topics
//     under tg/v1/<tenant>/devices/<device>/ (status, telemetry,
//     attestation, jobs/<id>) — never cmd/ — and may read only
//     tg/v1/<tenant>/devices/<device>/cmd/#;
//   - an operator may read tg/v1/<tenant>/# and publish nothing;
//   - the control plane may publish and read anything under tg/v1/#, also
//     through $share/<group>/ subscriptions (replicas, DESIGN.md §7);
//   - nothing else: no $SYS, no $share for devices and operators, no topic of
//     another tenant.
//
// Guarantees: [CanPublish] and [CanSubscribe] never panic, deny anything
// that is not a valid MQTT topic or filter, and [CanSubscribe] allows a
// filter with wildcards only if every topic the filter could ever match is
// readable by the identity — a '+' or '#' that could span tenants or devices
// is refused, not filtered later.
package mqttacl
