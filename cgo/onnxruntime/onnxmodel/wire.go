package onnxmodel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Protobuf wire types (the only ones ONNX uses; groups are refused).
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

// enc appends protobuf fields to a byte slice. Fields are written in the
// order the methods are called, which keeps the output deterministic.
type enc []byte

func (e *enc) tag(field, wire int) {
	*e = binary.AppendUvarint(*e, uint64(field)<<3|uint64(wire))
}

func (e *enc) varint(field int, v uint64) {
	e.tag(field, wireVarint)
	*e = binary.AppendUvarint(*e, v)
}

// int64 writes a protobuf int64 (negative values take ten bytes, as in
// every protobuf implementation).
func (e *enc) int64(field int, v int64) { e.varint(field, uint64(v)) }

func (e *enc) bytes(field int, b []byte) {
	e.tag(field, wireBytes)
	*e = binary.AppendUvarint(*e, uint64(len(b)))
	*e = append(*e, b...)
}

func (e *enc) string(field int, s string) {
	e.tag(field, wireBytes)
	*e = binary.AppendUvarint(*e, uint64(len(s)))
	*e = append(*e, s...)
}

func (e *enc) float32(field int, f float32) {
	e.tag(field, wireFixed32)
	*e = binary.LittleEndian.AppendUint32(*e, math.Float32bits(f))
}

var (
	errTruncated = errors.New("truncated protobuf")
	errOverflow  = errors.New("protobuf varint overflows 64 bits")
)

// field is one decoded protobuf field: for wireBytes, data holds the
// payload; for the other wire types, num holds the value.
type field struct {
	num  int
	wire int
	val  uint64
	data []byte
}

// fields calls fn for every top-level field of msg, in order, and stops at
// the first malformed field or the first error fn returns.
func fields(msg []byte, fn func(f field) error) error {
	for len(msg) > 0 {
		key, n := binary.Uvarint(msg)
		if n <= 0 {
			return badVarint(n)
		}
		msg = msg[n:]
		f := field{num: int(key >> 3), wire: int(key & 7)}
		if key>>3 == 0 || key>>3 > math.MaxInt32 {
			return fmt.Errorf("invalid protobuf field number %d", key>>3)
		}
		switch f.wire {
		case wireVarint:
			v, n := binary.Uvarint(msg)
			if n <= 0 {
				return badVarint(n)
			}
			f.val, msg = v, msg[n:]
		case wireFixed64:
			if len(msg) < 8 {
				return errTruncated
			}
			f.val, msg = binary.LittleEndian.Uint64(msg), msg[8:]
		case wireFixed32:
			if len(msg) < 4 {
				return errTruncated
			}
			f.val, msg = uint64(binary.LittleEndian.Uint32(msg)), msg[4:]
		case wireBytes:
			l, n := binary.Uvarint(msg)
			if n <= 0 {
				return badVarint(n)
			}
			msg = msg[n:]
			if l > uint64(len(msg)) {
				return errTruncated
			}
			f.data, msg = msg[:l], msg[l:]
		default:
			return fmt.Errorf("unsupported protobuf wire type %d (field %d)", f.wire, f.num)
		}
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

func badVarint(n int) error {
	if n == 0 {
		return errTruncated
	}
	return errOverflow
}
