package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// entry is one stored message. On-disk layout (format 1), all big endian:
//
//	0      version (1)
//	1      class
//	2      qos
//	3      flags (bit 0: retained)
//	4..12  enqueued at, Unix nanoseconds
//	12..14 topic length n
//	14..   topic (n bytes), then the payload (rest)
type entry struct {
	class      Class
	qos        byte
	retained   bool
	enqueuedAt time.Time
	topic      string
	payload    []byte
}

const entryHeader = 14

var errBadEntry = errors.New("malformed outbox entry")

// size is what counts against Config.MaxBytes.
func (e entry) size() int64 { return int64(len(e.topic) + len(e.payload)) }

func (e entry) encode() []byte {
	b := make([]byte, entryHeader+len(e.topic)+len(e.payload))
	b[0] = 1
	b[1] = byte(e.class)
	b[2] = e.qos
	if e.retained {
		b[3] = 1
	}
	binary.BigEndian.PutUint64(b[4:], uint64(e.enqueuedAt.UnixNano()))
	binary.BigEndian.PutUint16(b[12:], uint16(len(e.topic)))
	copy(b[entryHeader:], e.topic)
	copy(b[entryHeader+len(e.topic):], e.payload)
	return b
}

// decodeEntry copies out of b, which may be bbolt's memory map.
func decodeEntry(b []byte) (entry, error) {
	if len(b) < entryHeader || b[0] != 1 {
		return entry{}, fmt.Errorf("%w: bad header", errBadEntry)
	}
	n := int(binary.BigEndian.Uint16(b[12:]))
	if len(b) < entryHeader+n || n == 0 {
		return entry{}, fmt.Errorf("%w: bad topic length", errBadEntry)
	}
	return entry{
		class:      Class(b[1]),
		qos:        b[2],
		retained:   b[3]&1 != 0,
		enqueuedAt: time.Unix(0, int64(binary.BigEndian.Uint64(b[4:]))),
		topic:      string(b[entryHeader : entryHeader+n]),
		payload:    append([]byte(nil), b[entryHeader+n:]...),
	}, nil
}
