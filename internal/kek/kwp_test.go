package kek

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex in test: %v", err)
	}
	return b
}

func block(t testing.TB, key []byte) cipher.Block {
	t.Helper()
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// kwVector is a published test vector: RFC 3394 §4 (KW) or RFC 5649 §6 (KWP).
type kwVector struct {
	name, kek, plain, wrapped string
}

var rfc3394Vectors = []kwVector{
	{"4.1 128-bit data, 128-bit KEK",
		"000102030405060708090A0B0C0D0E0F",
		"00112233445566778899AABBCCDDEEFF",
		"1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5"},
	{"4.2 128-bit data, 192-bit KEK",
		"000102030405060708090A0B0C0D0E0F1011121314151617",
		"00112233445566778899AABBCCDDEEFF",
		"96778B25AE6CA435 F92B5B97C050AED2 468AB8A17AD84E5D"},
	{"4.3 128-bit data, 256-bit KEK",
		"000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
		"00112233445566778899AABBCCDDEEFF",
		"64E8C3F9CE0F5BA2 63E9777905818A2A 93C8191E7D6E8AE7"},
	{"4.4 192-bit data, 192-bit KEK",
		"000102030405060708090A0B0C0D0E0F1011121314151617",
		"00112233445566778899AABBCCDDEEFF0001020304050607",
		"031D33264E15D332 68F24EC260743EDC E1C6C7DDEE725A93 6BA814915C6762D2"},
	{"4.5 192-bit data, 256-bit KEK",
		"000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
		"00112233445566778899AABBCCDDEEFF0001020304050607",
		"A8F9BC1612C68B3F F6E6F4FBE30E71E4 769C8B80A32CB895 8CD5D17D6B254DA1"},
	{"4.6 256-bit data, 256-bit KEK",
		"000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
		"00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
		"28C9F404C4B810F4 CBCCB35CFB87F826 3F5786E2D80ED326 CBC7F0E71A99F43B FB988B9B7A02DD21"},
}

var rfc5649Vectors = []kwVector{
	{"6 20-octet key, 192-bit KEK",
		"5840df6e29b02af1 ab493b705bf16ea1 ae8338f4dcc176a8",
		"c37b7e6492584340 bed1220780894115 5068f738",
		"138bdeaa9b8fa7fc 61f97742e72248ee 5ae6ae5360d1ae6a 5f54f373fa543b6a"},
	{"6 7-octet key, 192-bit KEK",
		"5840df6e29b02af1 ab493b705bf16ea1 ae8338f4dcc176a8",
		"466f7250617369",
		"afbeb0f07dfbf541 9200f2ccb50bb24f"},
}

func TestKWRFC3394Vectors(t *testing.T) {
	t.Parallel()
	for _, v := range rfc3394Vectors {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			b := block(t, unhex(t, v.kek))
			plain, want := unhex(t, v.plain), unhex(t, v.wrapped)
			got, err := wrapKW(b, plain)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("wrap = %x, want %x", got, want)
			}
			back, err := unwrapKW(b, want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back, plain) {
				t.Fatalf("unwrap = %x, want %x", back, plain)
			}
			assertEveryBitFlipFails(t, want, func(c []byte) error { _, err := unwrapKW(b, c); return err })
		})
	}
}

func TestKWPRFC5649Vectors(t *testing.T) {
	t.Parallel()
	for _, v := range rfc5649Vectors {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			b := block(t, unhex(t, v.kek))
			plain, want := unhex(t, v.plain), unhex(t, v.wrapped)
			got, err := wrapKWP(b, plain)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("wrap = %x, want %x", got, want)
			}
			back, err := unwrapKWP(b, want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back, plain) {
				t.Fatalf("unwrap = %x, want %x", back, plain)
			}
			assertEveryBitFlipFails(t, want, func(c []byte) error { _, err := unwrapKWP(b, c); return err })
		})
	}
}

// assertEveryBitFlipFails flips each bit of c in turn; unwrap must fail
// with ErrUnwrap every time.
func assertEveryBitFlipFails(t *testing.T, c []byte, unwrap func([]byte) error) {
	t.Helper()
	for i := range 8 * len(c) {
		m := bytes.Clone(c)
		m[i/8] ^= 1 << (i % 8)
		if err := unwrap(m); !errors.Is(err, ErrUnwrap) {
			t.Fatalf("bit %d flipped: err = %v, want ErrUnwrap", i, err)
		}
	}
}

func TestKWPRoundTripAllShortLengths(t *testing.T) {
	t.Parallel()
	b := block(t, bytes.Repeat([]byte{0x42}, 32))
	for n := 1; n <= 80; n++ {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i*7 + n)
		}
		c, err := wrapKWP(b, p)
		if err != nil {
			t.Fatalf("len %d: %v", n, err)
		}
		if want := 8 + (n+7)/8*8; len(c) != want {
			t.Fatalf("len %d: wrapped is %d bytes, want %d", n, len(c), want)
		}
		got, err := unwrapKWP(b, c)
		if err != nil {
			t.Fatalf("len %d: %v", n, err)
		}
		if !bytes.Equal(got, p) {
			t.Fatalf("len %d: round trip = %x, want %x", n, got, p)
		}
	}
}

// kwpRaw builds a KWP ciphertext whose integrity value and padded
// plaintext are chosen by the test, to reach each check of unwrapKWP.
func kwpRaw(b cipher.Block, magic [4]byte, mli uint32, padded []byte) []byte {
	var aiv [semiblock]byte
	copy(aiv[:], magic[:])
	binary.BigEndian.PutUint32(aiv[4:], mli)
	if len(padded) == semiblock {
		out := append(aiv[:], padded...)
		b.Encrypt(out, out)
		return out
	}
	return wrapCore(b, aiv, padded)
}

func TestKWPUnwrapRejectsBadIntegrityValue(t *testing.T) {
	t.Parallel()
	b := block(t, bytes.Repeat([]byte{0x07}, 32))
	sixteen := bytes.Repeat([]byte{0xAB}, 16)
	seven := []byte{1, 2, 3, 4, 5, 6, 7, 0}
	tests := []struct {
		name   string
		magic  [4]byte
		mli    uint32
		padded []byte
		ok     bool
	}{
		{"valid 16", kwpMagic, 16, sixteen, true},
		{"valid 9 (7 bytes padding)", kwpMagic, 9, append([]byte{9}, make([]byte, 15)...), true},
		{"valid 7 single block", kwpMagic, 7, seven, true},
		{"RFC 3394 IV instead of KWP", [4]byte{0xA6, 0xA6, 0xA6, 0xA6}, 16, sixteen, false},
		{"mli too large", kwpMagic, 17, sixteen, false},
		{"mli too small (8 bytes of padding)", kwpMagic, 8, sixteen, false},
		{"mli zero single block", kwpMagic, 0, make([]byte, 8), false},
		{"mli 9 single block", kwpMagic, 9, seven, false},
		{"mli huge", kwpMagic, 0xFFFFFFFF, sixteen, false},
		{"non-zero padding", kwpMagic, 15, sixteen, false},
		{"non-zero padding single block", kwpMagic, 6, seven, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := kwpRaw(b, tc.magic, tc.mli, tc.padded)
			p, err := unwrapKWP(b, c)
			if tc.ok {
				if err != nil {
					t.Fatalf("unwrap: %v", err)
				}
				if !bytes.Equal(p, tc.padded[:tc.mli]) {
					t.Fatalf("unwrap = %x, want %x", p, tc.padded[:tc.mli])
				}
				return
			}
			if !errors.Is(err, ErrUnwrap) || p != nil {
				t.Fatalf("unwrap = %x, %v; want nil, ErrUnwrap", p, err)
			}
		})
	}
}

func TestKWPLengthErrors(t *testing.T) {
	t.Parallel()
	b := block(t, make([]byte, 32))
	good, err := wrapKWP(b, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 8, 15, 17, 23, 39, 41} {
		c := make([]byte, n)
		copy(c, good)
		if _, err := unwrapKWP(b, c); !errors.Is(err, ErrMalformed) {
			t.Errorf("unwrap of %d bytes: err = %v, want ErrMalformed", n, err)
		}
	}
	// Whole semiblocks cut off the end: well-formed length, wrong content.
	for _, n := range []int{16, 24, 32} {
		if _, err := unwrapKWP(b, good[:n]); !errors.Is(err, ErrUnwrap) {
			t.Errorf("truncated to %d bytes: err = %v, want ErrUnwrap", n, err)
		}
	}
	if _, err := wrapKWP(b, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("wrap of nothing: err = %v, want ErrInvalidArgument", err)
	}
	for _, n := range []int{0, 8, 12, 17} {
		if _, err := wrapKW(b, make([]byte, n)); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("KW wrap of %d bytes: err = %v, want ErrInvalidArgument", n, err)
		}
	}
	for _, n := range []int{0, 16, 25} {
		if _, err := unwrapKW(b, make([]byte, n)); !errors.Is(err, ErrMalformed) {
			t.Errorf("KW unwrap of %d bytes: err = %v, want ErrMalformed", n, err)
		}
	}
}

func TestKWPWrongKeyFails(t *testing.T) {
	t.Parallel()
	c, err := wrapKWP(block(t, make([]byte, 32)), []byte("a data key of some length"))
	if err != nil {
		t.Fatal(err)
	}
	other := make([]byte, 32)
	other[31] = 1
	if _, err := unwrapKWP(block(t, other), c); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("err = %v, want ErrUnwrap", err)
	}
}
