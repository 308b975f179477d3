package tgsp

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Shared helpers for this package's tests. Keep them small; a test that
// needs something special builds it itself.

// testKeys is a signer and two recipients, generated once per test binary
// (ML-DSA key generation is not free).
type testKeys struct {
	signer *SignerPrivateKey
	other  *SignerPrivateKey // a second, untrusted signer
	rcpt   *RecipientPrivateKey
	rcpt2  *RecipientPrivateKey
}

var sharedKeys = func() testKeys {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	s, err := GenerateSigner(nil)
	must(err)
	o, err := GenerateSigner(nil)
	must(err)
	r, err := GenerateRecipient(nil)
	must(err)
	r2, err := GenerateRecipient(nil)
	must(err)
	return testKeys{signer: s, other: o, rcpt: r, rcpt2: r2}
}()

// testNow is the clock tests verify at: inside the default validity window
// of packages created by packTree.
var testNow = time.Now()

// writeTree creates files under a new temp dir: path → content. A path
// ending in "/" is an (empty) directory.
func writeTree(t testing.TB, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for p, b := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if p[len(p)-1] == '/' {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// defaultOpts returns PackOptions signed by sharedKeys.signer for both
// recipients.
func defaultOpts() PackOptions {
	return PackOptions{
		Name:       "test-model",
		Version:    "1.2.3",
		Signer:     sharedKeys.signer,
		Recipients: []*RecipientPublicKey{sharedKeys.rcpt.Public(), sharedKeys.rcpt2.Public()},
	}
}

// packTree packs dir into memory.
func packTree(t testing.TB, dir string, opts PackOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := Pack(&buf, dir, opts); err != nil {
		t.Fatalf("Pack: %v", err)
	}
	return buf.Bytes()
}

// openBytes parses a package held in memory.
func openBytes(b []byte) (*Package, error) { return Open(bytes.NewReader(b), int64(len(b))) }

// unpackBytes runs the whole CLI pipeline on an in-memory package: open,
// verify the signature against the shared signer, unwrap with k, unpack to a
// fresh directory (returned) that must not exist beforehand.
func unpackBytes(t testing.TB, b []byte, k *RecipientPrivateKey) (string, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	p, err := openBytes(b)
	if err != nil {
		return out, err
	}
	if err := p.VerifySignature([]*SignerPublicKey{sharedKeys.signer.Public()}, testNow); err != nil {
		return out, err
	}
	dek, err := p.UnwrapDEK(k)
	if err != nil {
		return out, err
	}
	return out, p.Unpack(context.Background(), dek, out, UnpackOptions{CheckDigests: true})
}
