package main

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// MQTT 3.1.1 control packet types (high nibble of the fixed header).
const (
	pktConnack  = 2
	pktPublish  = 3
	pktPuback   = 4
	pktSuback   = 9
	pktPingresp = 13
)

// mqttConn is a connected MQTT 3.1.1 session for the attestation load: one
// goroutine reads (readPacket), any goroutine writes (write serialises).
// Like the fleet load generator it is a few hundred bytes of state per
// client instead of a client library's goroutines and queues.
type mqttConn struct {
	c net.Conn
	r *bufio.Reader

	wmu    sync.Mutex
	nextID uint16
}

func newMQTTConn(c net.Conn) *mqttConn {
	return &mqttConn{c: c, r: bufio.NewReaderSize(c, 4096)}
}

// write writes one or more whole packets.
func (m *mqttConn) write(pkts ...[]byte) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	_ = m.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for _, p := range pkts {
		if _, err := m.c.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// publish1 sends a QoS 1 PUBLISH (not retained) with the next packet id.
func (m *mqttConn) publish1(topic string, payload []byte) error {
	m.wmu.Lock()
	m.nextID++
	if m.nextID == 0 {
		m.nextID = 1
	}
	id := m.nextID
	m.wmu.Unlock()
	var v []byte
	v = appendString(v, topic)
	v = binary.BigEndian.AppendUint16(v, id)
	v = append(v, payload...)
	return m.write(appendFixedHeader(0x30|0x02, v))
}

// maxPacket bounds what the reader accepts (a verdict or challenge is well
// under 2 KiB).
const maxPacket = 1 << 20

// readPacket reads one control packet: its type, flags and body.
func (m *mqttConn) readPacket() (typ, flags byte, body []byte, err error) {
	h, err := m.r.ReadByte()
	if err != nil {
		return 0, 0, nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		b, err := m.r.ReadByte()
		if err != nil {
			return 0, 0, nil, err
		}
		n += int(b&0x7f) * mult
		if b&0x80 == 0 {
			break
		}
		mult *= 128
		if i == 3 {
			return 0, 0, nil, errors.New("mqtt: malformed remaining length")
		}
	}
	if n > maxPacket {
		return 0, 0, nil, fmt.Errorf("mqtt: packet of %d bytes", n)
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(m.r, body); err != nil {
		return 0, 0, nil, err
	}
	return h >> 4, h & 0x0f, body, nil
}

// nextPublish reads packets until a PUBLISH arrives (PUBACKs of what this
// client sent and PINGRESPs are skipped), acknowledges it when it is QoS 1,
// and returns its topic, its payload and when it was read. An error means
// the connection is unusable.
func (m *mqttConn) nextPublish() (topic string, payload []byte, recv time.Time, err error) {
	for {
		typ, flags, body, err := m.readPacket()
		if err != nil {
			return "", nil, time.Time{}, err
		}
		if typ != pktPublish {
			continue
		}
		recv := time.Now()
		topic, id, payload, err := parsePublish(flags, body)
		if err != nil {
			return "", nil, time.Time{}, err
		}
		if id != 0 {
			if err := m.write(pubackPacket(id)); err != nil {
				return "", nil, time.Time{}, err
			}
		}
		return topic, payload, recv, nil
	}
}

// parsePublish splits a PUBLISH body; id is 0 for QoS 0.
func parsePublish(flags byte, body []byte) (topic string, id uint16, payload []byte, err error) {
	if len(body) < 2 {
		return "", 0, nil, errors.New("mqtt: short PUBLISH")
	}
	tl := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+tl {
		return "", 0, nil, errors.New("mqtt: short PUBLISH topic")
	}
	topic, rest := string(body[2:2+tl]), body[2+tl:]
	if (flags>>1)&3 > 0 {
		if len(rest) < 2 {
			return "", 0, nil, errors.New("mqtt: PUBLISH without packet id")
		}
		id, rest = binary.BigEndian.Uint16(rest), rest[2:]
	}
	return topic, id, rest, nil
}

func pubackPacket(id uint16) []byte {
	return []byte{0x40, 0x02, byte(id >> 8), byte(id)}
}

// subscribePacket subscribes to one filter.
func subscribePacket(id uint16, filter string, qos byte) []byte {
	v := binary.BigEndian.AppendUint16(nil, id)
	v = appendString(v, filter)
	v = append(v, qos)
	return appendFixedHeader(0x82, v)
}

// subscribe sends SUBSCRIBE and waits for its SUBACK, which must grant it;
// the session must not be receiving anything else yet.
func (m *mqttConn) subscribe(filter string, qos byte, timeout time.Duration) error {
	_ = m.c.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = m.c.SetReadDeadline(time.Time{}) }()
	if err := m.write(subscribePacket(1, filter, qos)); err != nil {
		return fmt.Errorf("write SUBSCRIBE: %w", err)
	}
	for {
		typ, _, body, err := m.readPacket()
		if err != nil {
			return fmt.Errorf("read SUBACK: %w", err)
		}
		if typ != pktSuback {
			continue // e.g. a PINGRESP
		}
		if len(body) != 3 || binary.BigEndian.Uint16(body) != 1 || body[2] > 2 {
			return fmt.Errorf("SUBACK % x: %s refused", body, filter)
		}
		return nil
	}
}

// connectOperator dials with the operator's TLS configuration and sends a
// clean-session CONNECT without a Will.
func connectOperator(addr string, cfg *tls.Config, clientID string, keepAlive time.Duration) (*mqttConn, error) {
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
	c := tls.Client(raw, cfg)
	var v []byte
	v = appendString(v, "MQTT")
	v = append(v, 4, 0x02) // level 4, clean session
	v = binary.BigEndian.AppendUint16(v, uint16(keepAlive/time.Second))
	v = appendString(v, clientID)
	if _, err := c.Write(appendFixedHeader(0x10, v)); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("write CONNECT: %w", err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("read CONNACK: %w", err)
	}
	if ack[0] != pktConnack<<4 || ack[1] != 0x02 || ack[3] != 0 {
		_ = c.Close()
		return nil, fmt.Errorf("CONNACK % x: refused", ack)
	}
	_ = raw.SetDeadline(time.Time{})
	return newMQTTConn(c), nil
}
