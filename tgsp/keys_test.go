package tgsp

import (
	"bytes"
	"crypto/ed25519"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fzPEMKey is what all four key types have in common.
type fzPEMKey interface{ MarshalPEM() []byte }

// fzKeyParser is one of the four Parse*Key functions.
type fzKeyParser struct {
	kind    string // PEM type
	private bool
	parse   func([]byte) (fzPEMKey, error)
	load    func(string) (fzPEMKey, error)
}

func fzWrap[K fzPEMKey](f func([]byte) (K, error)) func([]byte) (fzPEMKey, error) {
	return func(b []byte) (fzPEMKey, error) {
		k, err := f(b)
		if err != nil {
			return nil, err
		}
		return k, nil
	}
}

func fzWrapLoad[K fzPEMKey](f func(string) (K, error)) func(string) (fzPEMKey, error) {
	return func(p string) (fzPEMKey, error) {
		k, err := f(p)
		if err != nil {
			return nil, err
		}
		return k, nil
	}
}

var fzKeyParsers = []fzKeyParser{
	{pemSignerPrivate, true, fzWrap(ParseSignerPrivateKey), fzWrapLoad(LoadSignerPrivateKey)},
	{pemSignerPublic, false, fzWrap(ParseSignerPublicKey), fzWrapLoad(LoadSignerPublicKey)},
	{pemRecipientPrivate, true, fzWrap(ParseRecipientPrivateKey), fzWrapLoad(LoadRecipientPrivateKey)},
	{pemRecipientPublic, false, fzWrap(ParseRecipientPublicKey), fzWrapLoad(LoadRecipientPublicKey)},
}

// fzKeyPEMs returns the shared keys' files, in fzKeyParsers order.
func fzKeyPEMs() [][]byte {
	return [][]byte{
		sharedKeys.signer.MarshalPEM(),
		sharedKeys.signer.Public().MarshalPEM(),
		sharedKeys.rcpt.MarshalPEM(),
		sharedKeys.rcpt.Public().MarshalPEM(),
	}
}

// fzRePEM decodes a key file, lets edit change the block, and re-encodes it.
func fzRePEM(t testing.TB, data []byte, edit func(*pem.Block)) []byte {
	t.Helper()
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatal("not PEM")
	}
	if b.Headers == nil {
		b.Headers = map[string]string{}
	}
	edit(b)
	return pem.EncodeToMemory(b)
}

// fzBadKeyFiles are key files every parser must refuse; they also seed
// FuzzParseKeyFiles. Each is derived from a valid file of kind i (the
// fzKeyParsers index in the name's prefix is irrelevant to the outcome).
func fzBadKeyFiles(t testing.TB) map[string][]byte {
	pems := fzKeyPEMs()
	otherID := sharedKeys.other.Public().KeyID()
	bad := map[string][]byte{
		"empty":       nil,
		"not pem":     []byte("hello\n"),
		"only begin":  []byte("-----BEGIN TGSP SIGNER PUBLIC KEY-----\n"),
		"bad base64":  []byte("-----BEGIN TGSP RECIPIENT PRIVATE KEY-----\n!!!!\n-----END TGSP RECIPIENT PRIVATE KEY-----\n"),
		"empty body":  []byte("-----BEGIN TGSP RECIPIENT PRIVATE KEY-----\n-----END TGSP RECIPIENT PRIVATE KEY-----\n"),
		"other type":  []byte("-----BEGIN PRIVATE KEY-----\nAQ==\n-----END PRIVATE KEY-----\n"),
		"lowercase":   bytes.ToLower(pems[0]),
		"pem in json": append(append([]byte(`{"key":"`), pems[1]...), `"}`...),
	}
	for i, p := range fzKeyParsers {
		pfx := p.kind + ": "
		bad[pfx+"trailing garbage"] = append(bytes.Clone(pems[i]), "garbage\n"...)
		bad[pfx+"trailing byte"] = append(bytes.Clone(pems[i]), 0)
		bad[pfx+"leading garbage"] = append([]byte("garbage\n"), pems[i]...)
		bad[pfx+"leading bad block"] = append([]byte("-----BEGIN X-----\nno end\n"), pems[i]...)
		bad[pfx+"two blocks"] = append(bytes.Clone(pems[i]), pems[i]...)
		bad[pfx+"key id mismatch"] = fzRePEM(t, pems[i], func(b *pem.Block) { b.Headers[pemHeaderKeyID] = otherID })
		bad[pfx+"key id upper case"] = fzRePEM(t, pems[i], func(b *pem.Block) {
			b.Headers[pemHeaderKeyID] = strings.ToUpper(b.Headers[pemHeaderKeyID])
		})
		bad[pfx+"extra header"] = fzRePEM(t, pems[i], func(b *pem.Block) { b.Headers["Proc-Type"] = "4,ENCRYPTED" })
		bad[pfx+"extra header only"] = fzRePEM(t, pems[i], func(b *pem.Block) {
			delete(b.Headers, pemHeaderKeyID)
			b.Headers["Comment"] = "x"
		})
		bad[pfx+"algorithm 2"] = fzRePEM(t, pems[i], func(b *pem.Block) {
			b.Bytes[0] = 2
			delete(b.Headers, pemHeaderKeyID)
		})
		bad[pfx+"body short"] = fzRePEM(t, pems[i], func(b *pem.Block) {
			b.Bytes = b.Bytes[:len(b.Bytes)-1]
			delete(b.Headers, pemHeaderKeyID)
		})
		bad[pfx+"body long"] = fzRePEM(t, pems[i], func(b *pem.Block) {
			b.Bytes = append(b.Bytes, 0)
			delete(b.Headers, pemHeaderKeyID)
		})
	}
	return bad
}

func TestKeyPEMRoundTrip(t *testing.T) {
	t.Parallel()
	for i, data := range fzKeyPEMs() {
		p := fzKeyParsers[i]
		t.Run(p.kind, func(t *testing.T) {
			if !bytes.HasPrefix(data, []byte("-----BEGIN "+p.kind+"-----\n")) {
				t.Fatalf("key file does not start with its PEM type:\n%s", data)
			}
			k, err := p.parse(data)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got := k.MarshalPEM(); !bytes.Equal(got, data) {
				t.Errorf("re-marshalled key differs:\n%s\nwant\n%s", got, data)
			}
			// Through a file, with the mode WriteKeyPair uses.
			path := filepath.Join(t.TempDir(), "k")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			k2, err := p.load(path)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if !bytes.Equal(k2.MarshalPEM(), data) {
				t.Error("loaded key differs")
			}
			// Surrounding whitespace and a missing Key-Id header are accepted.
			for name, variant := range map[string][]byte{
				"whitespace": append(append([]byte("\n \t\r\n"), data...), "\n\n \r\n"...),
				"no key id":  fzRePEM(t, data, func(b *pem.Block) { delete(b.Headers, pemHeaderKeyID) }),
				"crlf":       bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n")),
			} {
				k3, err := p.parse(variant)
				if err != nil {
					t.Errorf("%s: %v", name, err)
				} else if !bytes.Equal(k3.MarshalPEM(), data) {
					t.Errorf("%s: parsed to a different key", name)
				}
			}
		})
	}
	// The public halves agree with the private keys.
	sp, _ := ParseSignerPublicKey(sharedKeys.signer.Public().MarshalPEM())
	if !sp.Equal(sharedKeys.signer.Public()) || sp.Equal(sharedKeys.other.Public()) || sp.Equal(nil) {
		t.Error("SignerPublicKey.Equal is wrong")
	}
	rp, _ := ParseRecipientPublicKeyBytes(sharedKeys.rcpt.Public().Bytes())
	if rp == nil || rp.KeyID() != sharedKeys.rcpt.Public().KeyID() {
		t.Error("ParseRecipientPublicKeyBytes does not round-trip Bytes")
	}
	sb, err := ParseSignerPublicKeyBytes(sharedKeys.signer.Public().Bytes())
	if err != nil || !sb.Equal(sharedKeys.signer.Public()) || sb.KeyID() != sharedKeys.signer.Public().KeyID() {
		t.Errorf("ParseSignerPublicKeyBytes does not round-trip Bytes: %v", err)
	}
	if _, err := ParseSignerPublicKeyBytes(sharedKeys.rcpt.Public().Bytes()); !errors.Is(err, ErrKey) {
		t.Errorf("ParseSignerPublicKeyBytes took a recipient key: %v", err)
	}
}

// TestKeyParseWrongKind feeds every kind of key file to every parser: only
// the matching one accepts it.
func TestKeyParseWrongKind(t *testing.T) {
	t.Parallel()
	pems := fzKeyPEMs()
	for i, data := range pems {
		for j, p := range fzKeyParsers {
			_, err := p.parse(data)
			if i == j {
				if err != nil {
					t.Errorf("%s parser refused its own kind: %v", p.kind, err)
				}
				continue
			}
			if !errors.Is(err, ErrKey) {
				t.Errorf("%s parser on a %s file: err = %v, want ErrKey", p.kind, fzKeyParsers[i].kind, err)
			}
		}
	}
	// The body of one kind relabelled as another: the length check refuses it.
	for i, data := range pems {
		for j, p := range fzKeyParsers {
			if i == j {
				continue
			}
			relabelled := fzRePEM(t, data, func(b *pem.Block) {
				b.Type = p.kind
				delete(b.Headers, pemHeaderKeyID)
			})
			if _, err := p.parse(relabelled); !errors.Is(err, ErrKey) {
				t.Errorf("%s body relabelled %s: err = %v, want ErrKey", fzKeyParsers[i].kind, p.kind, err)
			}
		}
	}
}

func TestKeyParseRefusesMalformed(t *testing.T) {
	t.Parallel()
	for name, data := range fzBadKeyFiles(t) {
		for _, p := range fzKeyParsers {
			if k, err := p.parse(data); !errors.Is(err, ErrKey) {
				t.Errorf("%s: %s parser: got key %v, err %v; want ErrKey", name, p.kind, k != nil, err)
			}
		}
	}
}

func TestLoadPrivateKeyMode(t *testing.T) {
	t.Parallel()
	pems := fzKeyPEMs()
	dir := t.TempDir()
	for i, p := range fzKeyParsers {
		for _, mode := range []fs.FileMode{0o600, 0o400, 0o700, 0o644, 0o640, 0o604, 0o660, 0o666, 0o601} {
			path := filepath.Join(dir, strings.ReplaceAll(p.kind, " ", "_")+"-"+mode.String())
			if err := os.WriteFile(path, pems[i], 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil { // independent of the umask
				t.Fatal(err)
			}
			_, err := p.load(path)
			refuse := p.private && mode&0o077 != 0
			switch {
			case refuse && !errors.Is(err, ErrKey):
				t.Errorf("%s mode %04o: err = %v, want ErrKey", p.kind, mode, err)
			case refuse && !strings.Contains(err.Error(), "chmod 600"):
				t.Errorf("%s mode %04o: error %q does not say chmod 600", p.kind, mode, err)
			case !refuse && err != nil:
				t.Errorf("%s mode %04o: %v", p.kind, mode, err)
			}
		}
	}
}

func TestLoadKeyFileRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	data := append(bytes.Repeat([]byte(" "), maxKeyFileSize), sharedKeys.signer.Public().MarshalPEM()...)
	if err := os.WriteFile(big, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"missing":   filepath.Join(dir, "missing"),
		"directory": dir,
		"too large": big,
	} {
		if _, err := LoadSignerPublicKey(path); !errors.Is(err, ErrKey) {
			t.Errorf("%s: err = %v, want ErrKey", name, err)
		}
	}
	// A wrong-kind file names the path in the error.
	pub := filepath.Join(dir, "r.pub")
	if err := os.WriteFile(pub, sharedKeys.rcpt.Public().MarshalPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadSignerPublicKey(pub)
	if !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), pub) {
		t.Errorf("recipient key loaded as signer key: err = %v, want ErrKey naming %s", err, pub)
	}
}

// TestWriteKeyPairModes is not parallel: it changes the process umask.
func TestWriteKeyPairModes(t *testing.T) {
	for _, umask := range []int{0, 0o077, 0o022, 0o277} {
		for _, kind := range []KeyKind{KindSigner, KindRecipient} {
			prefix := filepath.Join(t.TempDir(), "k")
			old := syscall.Umask(umask)
			id, err := WriteKeyPair(prefix, kind, nil)
			syscall.Umask(old)
			if err != nil {
				t.Fatalf("umask %04o %s: %v", umask, kind, err)
			}
			for _, f := range []struct {
				suffix string
				mode   fs.FileMode
			}{{".key", 0o600}, {".pub", 0o644}} {
				fi, err := os.Stat(prefix + f.suffix)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode() != f.mode {
					t.Errorf("umask %04o %s: %s has mode %v, want %v", umask, kind, f.suffix, fi.Mode(), f.mode)
				}
			}
			var pubID string
			if kind == KindSigner {
				priv, err := LoadSignerPrivateKey(prefix + ".key")
				if err != nil {
					t.Fatal(err)
				}
				pub, err := LoadSignerPublicKey(prefix + ".pub")
				if err != nil {
					t.Fatal(err)
				}
				if !priv.Public().Equal(pub) {
					t.Error("signer .pub does not match .key")
				}
				pubID = pub.KeyID()
			} else {
				priv, err := LoadRecipientPrivateKey(prefix + ".key")
				if err != nil {
					t.Fatal(err)
				}
				pub, err := LoadRecipientPublicKey(prefix + ".pub")
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(priv.Public().Bytes(), pub.Bytes()) {
					t.Error("recipient .pub does not match .key")
				}
				pubID = pub.KeyID()
			}
			if id != pubID {
				t.Errorf("WriteKeyPair returned id %s, the public key's is %s", id, pubID)
			}
		}
	}
}

func TestWriteKeyPairRefusesOverwrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	prefix := filepath.Join(dir, "k")
	if _, err := WriteKeyPair(prefix, KindRecipient, nil); err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(prefix + ".key")
	pub, _ := os.ReadFile(prefix + ".pub")
	if _, err := WriteKeyPair(prefix, KindRecipient, nil); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second WriteKeyPair: err = %v, want a refusal", err)
	}
	if _, err := WriteKeyPair(prefix, KindSigner, nil); err == nil {
		t.Fatal("WriteKeyPair of another kind over existing files succeeded")
	}
	if k2, _ := os.ReadFile(prefix + ".key"); !bytes.Equal(k2, key) {
		t.Error(".key changed")
	}
	if p2, _ := os.ReadFile(prefix + ".pub"); !bytes.Equal(p2, pub) {
		t.Error(".pub changed")
	}

	// Only the .pub exists: nothing is written, and no .key is left behind.
	prefix2 := filepath.Join(dir, "only-pub")
	if err := os.WriteFile(prefix2+".pub", []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteKeyPair(prefix2, KindSigner, nil); err == nil {
		t.Fatal("WriteKeyPair over an existing .pub succeeded")
	}
	if _, err := os.Lstat(prefix2 + ".key"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf(".key left behind after a failed WriteKeyPair (stat err %v)", err)
	}
	if b, _ := os.ReadFile(prefix2 + ".pub"); string(b) != "mine" {
		t.Error("existing .pub changed")
	}

	if _, err := WriteKeyPair(filepath.Join(dir, "x"), KeyKind("rsa"), nil); !errors.Is(err, ErrKey) {
		t.Errorf("unknown kind: err = %v, want ErrKey", err)
	}
}

func TestCompositeSignature(t *testing.T) {
	t.Parallel()
	k := sharedKeys.signer
	msg := []byte("tgsp composite signature test")
	sig, err := k.sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(sig) != SignatureSize || SignatureSize != 3373 {
		t.Fatalf("signature is %d bytes (SignatureSize %d), SPEC.md says 3373", len(sig), SignatureSize)
	}
	if err := k.Public().verify(msg, sig); err != nil {
		t.Fatalf("verify: %v", err)
	}
	// Signing is hedged: two signatures differ, both verify.
	sig2, err := k.sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Public().verify(msg, sig2); err != nil {
		t.Fatalf("verify second signature: %v", err)
	}

	for _, tc := range []struct {
		name string
		msg  []byte
		sig  func() []byte
		half string
	}{
		{"ml-dsa half first bit", msg, func() []byte { s := bytes.Clone(sig); s[0] ^= 1; return s }, "ML-DSA-65"},
		{"ml-dsa half last byte", msg, func() []byte { s := bytes.Clone(sig); s[mldsaSigSize-1] ^= 0x80; return s }, "ML-DSA-65"},
		{"ed25519 half first bit", msg, func() []byte { s := bytes.Clone(sig); s[mldsaSigSize] ^= 1; return s }, "Ed25519"},
		{"ed25519 half last byte", msg, func() []byte { s := bytes.Clone(sig); s[SignatureSize-1] ^= 0x40; return s }, "Ed25519"},
		{"halves from two signatures", msg, func() []byte {
			return append(bytes.Clone(sig[:mldsaSigSize]), sig2[mldsaSigSize:]...) // still valid: both halves are
		}, ""},
		{"different message", []byte("tgsp composite signature tesT"), func() []byte { return sig }, "both"},
		{"empty message", nil, func() []byte { return sig }, "both"},
		{"short", msg, func() []byte { return sig[:SignatureSize-1] }, "bytes"},
		{"long", msg, func() []byte { return append(bytes.Clone(sig), 0) }, "bytes"},
		{"other signer", msg, func() []byte { s, _ := sharedKeys.other.sign(msg); return s }, "both"},
		{"zero", msg, func() []byte { return make([]byte, SignatureSize) }, "both"},
	} {
		err := k.Public().verify(tc.msg, tc.sig())
		if tc.half == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: err = %v, want ErrBadSignature", tc.name, err)
		} else if !strings.Contains(err.Error(), tc.half) {
			t.Errorf("%s: error %q does not name %q", tc.name, err, tc.half)
		}
	}
	// The signature binds M' (with TGSP's context), not the raw message: the
	// Ed25519 half does not verify over the message itself.
	if ed25519.Verify(k.Public().ed, msg, sig[mldsaSigSize:]) {
		t.Error("Ed25519 half verifies over the raw message, not M'")
	}
}
