package kek

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// Fuzz targets for every parser of untrusted bytes in this package, seeded
// from the table tests, so plain `go test` runs the seeds as regression
// cases and hack/fuzz.sh explores further. None may panic.

// FuzzUnwrapKWP: any input either fails with ErrMalformed or ErrUnwrap, or
// unwraps to a key that wraps back to exactly the input (KWP is a
// deterministic, invertible encoding).
func FuzzUnwrapKWP(f *testing.F) {
	for _, v := range rfc5649Vectors {
		f.Add(unhex(f, v.kek), unhex(f, v.wrapped))
	}
	for _, v := range rfc3394Vectors {
		f.Add(unhex(f, v.kek), unhex(f, v.wrapped)) // right length, wrong IV
	}
	f.Add(make([]byte, 32), []byte{})
	f.Add(make([]byte, 16), make([]byte, 15))
	f.Fuzz(func(t *testing.T, key, c []byte) {
		b, err := aesForFuzz(key)
		if err != nil {
			t.Skip()
		}
		p, err := unwrapKWP(b, c)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnwrap) {
				t.Fatalf("unexpected error %v", err)
			}
			if p != nil {
				t.Fatal("plaintext returned with an error")
			}
			return
		}
		again, err := wrapKWP(b, p)
		if err != nil || !bytes.Equal(again, c) {
			t.Fatalf("unwrapped %x, which wraps to %x (%v), not the input %x", p, again, err, c)
		}
	})
}

// FuzzKWPRoundTrip: every key of 1 to 4096 bytes survives wrap and unwrap,
// and the wrapped form has the RFC 5649 length.
func FuzzKWPRoundTrip(f *testing.F) {
	for _, v := range rfc5649Vectors {
		f.Add(unhex(f, v.kek), unhex(f, v.plain))
	}
	for _, v := range rfc3394Vectors {
		f.Add(unhex(f, v.kek), unhex(f, v.plain))
	}
	f.Add(testKey, []byte{0})
	f.Fuzz(func(t *testing.T, key, p []byte) {
		b, err := aesForFuzz(key)
		if err != nil || len(p) == 0 || len(p) > 4096 {
			t.Skip()
		}
		c, err := wrapKWP(b, p)
		if err != nil {
			t.Fatal(err)
		}
		if want := 8 + (len(p)+7)/8*8; len(c) != want {
			t.Fatalf("wrapped %d bytes into %d, want %d", len(p), len(c), want)
		}
		got, err := unwrapKWP(b, c)
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("round trip = %x, %v; want %x", got, err, p)
		}
	})
}

func aesForFuzz(key []byte) (cipher.Block, error) {
	switch len(key) {
	case 16, 24, 32:
		return aes.NewCipher(key)
	}
	return nil, errors.New("not an AES key size")
}

// FuzzUnwrapKey: the provider's wrapped-key parser. Anything but the one
// genuine input fails with a documented sentinel.
func FuzzUnwrapKey(f *testing.F) {
	ctx := context.Background()
	p := memProvider(f, testKey)
	aad := TenantKeyAAD("acme", 1)
	w, err := p.WrapKey(ctx, bytes.Repeat([]byte{7}, KeySize), aad)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(w, aad)
	f.Add(w, TenantKeyAAD("globex", 1))
	f.Add(w[:len(w)-1], aad)
	f.Add(append([]byte{2}, w[1:]...), aad)
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, wrapped, aad []byte) {
		k, err := p.UnwrapKey(ctx, wrapped, aad)
		if err != nil {
			if !anySentinel(err, ErrMalformed, ErrUnsupportedVersion, ErrWrongKEK, ErrUnwrap) || k != nil {
				t.Fatalf("UnwrapKey = %x, %v", k, err)
			}
			return
		}
		again, err := p.WrapKey(ctx, k, aad)
		if err != nil || !bytes.Equal(again, wrapped) {
			t.Fatalf("unwrapped a key that does not wrap back to the input")
		}
	})
}

// FuzzOpen: the envelope parser and Open, over a keyring with real keys.
func FuzzOpen(f *testing.F) {
	ctx := context.Background()
	fx := newFixture(f)
	fx.addKey(f, "acme", 2)
	for _, aad := range [][]byte{nil, []byte("row 7")} {
		env, err := fx.ring.Seal(ctx, "acme", []byte("model weights key"), aad)
		if err != nil {
			f.Fatal(err)
		}
		f.Add("acme", env, aad)
		f.Add("globex", env, aad)
		f.Add("acme", env[:envelopeOverhead-1], aad)
		f.Add("acme", append([]byte{2}, env[1:]...), aad)
		v0 := bytes.Clone(env)
		copy(v0[1:5], []byte{0, 0, 0, 0})
		f.Add("acme", v0, aad)
	}
	f.Add("", []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, tenant string, env, aad []byte) {
		pt, err := fx.ring.Open(ctx, tenant, env, aad)
		if err != nil {
			if !anySentinel(err, ErrInvalidArgument, ErrMalformed, ErrUnsupportedVersion, ErrNoKey, ErrDecrypt) || pt != nil {
				t.Fatalf("Open = %x, %v", pt, err)
			}
			return
		}
		if tenant != "acme" || string(pt) != "model weights key" {
			t.Fatalf("opened a forged envelope: tenant %q, plaintext %q", tenant, pt)
		}
	})
}

// FuzzParseKeyText: key text never panics the parser and never appears in
// its errors.
func FuzzParseKeyText(f *testing.F) {
	hexKey := hex.EncodeToString(testKey)
	for _, s := range []string{hexKey, devKeyPrefix + hexKey, hexKey[:62], hexKey[:63], "#c\n" + hexKey, "", "!!", hexKey + "\n" + hexKey} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, _, err := parseKeyText("K", s)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrBadKey) {
			t.Fatalf("err = %v, want ErrBadKey", err)
		}
		if v := strings.TrimSpace(s); len(v) >= 16 && strings.Contains(err.Error(), v) {
			t.Fatalf("error %q reveals the key text", err)
		}
	})
}

func anySentinel(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
