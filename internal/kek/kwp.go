package kek

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"math"
)

// AES Key Wrap (RFC 3394) and AES Key Wrap with Padding (RFC 5649, NIST
// SP 800-38F "KWP"). Neither is in the standard library; both are written
// here over a cipher.Block from crypto/aes. Only KWP is used to wrap keys;
// the unpadded form exists because KWP is built on it (and its RFC 3394
// test vectors pin the core down).
//
// Unwrapping checks the integrity value, the message length indicator and
// the padding in constant time and reports every failure as the same
// ErrUnwrap, so a failed unwrap tells an attacker nothing about why.

const semiblock = 8 // the 64-bit unit KW operates on

// kwDefaultIV is the RFC 3394 §2.2.3.1 initial value.
var kwDefaultIV = [semiblock]byte{0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6}

// kwpMagic is the constant first half of the RFC 5649 §3 alternative
// initial value; the second half is the plaintext length.
var kwpMagic = [4]byte{0xA6, 0x59, 0x59, 0xA6}

// wrapCore is the wrapping process W of RFC 3394 §2.2.1 with initial value
// iv. len(p) must be a multiple of 8 and at least 16.
func wrapCore(b cipher.Block, iv [semiblock]byte, p []byte) []byte {
	n := len(p) / semiblock
	out := make([]byte, semiblock+len(p))
	copy(out[semiblock:], p)
	a := binary.BigEndian.Uint64(iv[:])
	var buf [16]byte
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			r := out[semiblock*i : semiblock*(i+1)]
			binary.BigEndian.PutUint64(buf[:semiblock], a)
			copy(buf[semiblock:], r)
			b.Encrypt(buf[:], buf[:])
			a = binary.BigEndian.Uint64(buf[:semiblock]) ^ uint64(n*j+i)
			copy(r, buf[semiblock:])
		}
	}
	binary.BigEndian.PutUint64(out[:semiblock], a)
	return out
}

// unwrapCore is the unwrapping process W⁻¹ of RFC 3394 §2.2.2. It returns
// the recovered integrity value and plaintext without checking either.
// len(c) must be a multiple of 8 and at least 24.
func unwrapCore(b cipher.Block, c []byte) (iv [semiblock]byte, p []byte) {
	n := len(c)/semiblock - 1
	p = make([]byte, semiblock*n)
	copy(p, c[semiblock:])
	a := binary.BigEndian.Uint64(c[:semiblock])
	var buf [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			r := p[semiblock*(i-1) : semiblock*i]
			binary.BigEndian.PutUint64(buf[:semiblock], a^uint64(n*j+i))
			copy(buf[semiblock:], r)
			b.Decrypt(buf[:], buf[:])
			a = binary.BigEndian.Uint64(buf[:semiblock])
			copy(r, buf[semiblock:])
		}
	}
	binary.BigEndian.PutUint64(iv[:], a)
	return iv, p
}

// wrapKW wraps p (a multiple of 8 bytes, at least 16) per RFC 3394.
func wrapKW(b cipher.Block, p []byte) ([]byte, error) {
	if len(p) < 2*semiblock || len(p)%semiblock != 0 {
		return nil, invalid("key wrap input must be a multiple of 8 bytes and at least 16, got %d", len(p))
	}
	return wrapCore(b, kwDefaultIV, p), nil
}

// unwrapKW reverses wrapKW.
func unwrapKW(b cipher.Block, c []byte) ([]byte, error) {
	if len(c) < 3*semiblock || len(c)%semiblock != 0 {
		return nil, malformed("wrapped key has %d bytes, want a multiple of 8 and at least 24", len(c))
	}
	iv, p := unwrapCore(b, c)
	if subtle.ConstantTimeCompare(iv[:], kwDefaultIV[:]) != 1 {
		clear(p)
		return nil, fmt.Errorf("%w: integrity check failed", ErrUnwrap)
	}
	return p, nil
}

// maxKWP is the largest plaintext RFC 5649 can wrap (32-bit length field).
const maxKWP = math.MaxUint32

// wrapKWP wraps p (1 to 2^32-1 bytes) per RFC 5649 §4.1.
func wrapKWP(b cipher.Block, p []byte) ([]byte, error) {
	if len(p) == 0 || uint64(len(p)) > maxKWP {
		return nil, invalid("key wrap with padding needs 1 to 2^32-1 bytes, got %d", len(p))
	}
	var aiv [semiblock]byte
	copy(aiv[:4], kwpMagic[:])
	binary.BigEndian.PutUint32(aiv[4:], uint32(len(p)))
	padded := make([]byte, (len(p)+semiblock-1)/semiblock*semiblock)
	copy(padded, p)
	if len(padded) == semiblock {
		// One semiblock: a single AES block encryption of AIV || P (§4.1).
		out := make([]byte, 2*semiblock)
		copy(out, aiv[:])
		copy(out[semiblock:], padded)
		b.Encrypt(out, out)
		return out, nil
	}
	return wrapCore(b, aiv, padded), nil
}

// unwrapKWP reverses wrapKWP (RFC 5649 §4.2), checking the integrity
// value, the length indicator and the zero padding in constant time.
func unwrapKWP(b cipher.Block, c []byte) ([]byte, error) {
	if len(c) < 2*semiblock || len(c)%semiblock != 0 {
		return nil, malformed("wrapped key has %d bytes, want a multiple of 8 and at least 16", len(c))
	}
	n := len(c)/semiblock - 1
	var aiv [semiblock]byte
	var p []byte
	if n == 1 {
		var buf [2 * semiblock]byte
		b.Decrypt(buf[:], c)
		copy(aiv[:], buf[:semiblock])
		p = make([]byte, semiblock)
		copy(p, buf[semiblock:])
		clear(buf[:])
	} else {
		aiv, p = unwrapCore(b, c)
	}

	ok := subtle.ConstantTimeCompare(aiv[:4], kwpMagic[:])
	mli := uint64(binary.BigEndian.Uint32(aiv[4:]))
	hi := uint64(semiblock * n)
	// 8(n-1) < MLI <= 8n: at most 7 bytes of padding.
	ok &= ctLessOrEq(hi-semiblock+1, mli) & ctLessOrEq(mli, hi)
	// Every byte of the last semiblock at index >= MLI must be zero.
	var acc byte
	for k := uint64(0); k < semiblock; k++ {
		idx := hi - semiblock + k
		mask := byte(0 - ctLessOrEq(mli, idx)) // 0xff when idx is padding
		acc |= p[idx] & mask
	}
	ok &= subtle.ConstantTimeByteEq(acc, 0)
	if ok != 1 {
		clear(p)
		return nil, fmt.Errorf("%w: integrity check failed", ErrUnwrap)
	}
	return p[:mli], nil
}

// ctLessOrEq returns 1 if x <= y and 0 otherwise, in constant time, for
// x, y < 2^63 (here both are below 2^35).
func ctLessOrEq(x, y uint64) int {
	return int(((y - x) >> 63) ^ 1)
}
