package broker

import (
	"bytes"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
)

// aclHook connects mochi to the broker's identities and to mqttacl.
type aclHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *aclHook) ID() string { return "tensorguard-acl" }

func (h *aclHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect,
		mqtt.OnConnectAuthenticate,
		mqtt.OnACLCheck,
		mqtt.OnPublish,
		mqtt.OnDisconnect,
	}, []byte{b})
}

// OnConnect authenticates the client before mochi looks at its session.
// A refusal is answered with CONNACK "not authorized".
func (h *aclHook) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	if err := h.b.admit(cl); err != nil {
		h.b.log.Warn("mqtt connection refused", "remote", cl.Net.Remote, "listener", cl.Net.Listener, "error", err)
		code := packets.ErrNotAuthorized
		if cl.Properties.ProtocolVersion < 5 {
			code = packets.ErrBadUsernameOrPassword // mochi maps it to 3.1.1's "not authorized"
		}
		_ = h.b.srv.SendConnack(cl, code, false, nil)
		return code
	}
	return nil
}

// OnConnectAuthenticate admits only clients that OnConnect bound to an
// identity.
func (h *aclHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	_, ok := h.b.identityOf(cl)
	return ok
}

// OnACLCheck decides subscriptions (a filter) and deliveries (a topic).
// Publishes are decided in OnPublish instead, so that a refused QoS 1/2
// publish from an MQTT 3.1.1 client is acknowledged and dropped, as
// mosquitto does, rather than mochi closing the connection (which would
// make an agent's outbox retry forever).
func (h *aclHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	id, ok := h.b.identityOf(cl)
	if !ok {
		return false
	}
	if write {
		return true // see OnPublish
	}
	return mqttacl.CanSubscribe(id, topic)
}

// OnPublish enforces the publish ACL on every message from a network
// client: a refused message is neither retained nor delivered.
func (h *aclHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	id, ok := h.b.identityOf(cl)
	if ok && mqttacl.CanPublish(id, pk.TopicName) {
		return pk, nil
	}
	h.b.log.Warn("mqtt publish refused", "identity", id.String(), "topic", pk.TopicName)
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
		return pk, packets.ErrNotAuthorized // PUBACK/PUBREC with reason 0x87
	}
	return pk, packets.CodeSuccessIgnore
}

// OnDisconnect forgets the client's identity.
func (h *aclHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.b.forget(cl)
}
