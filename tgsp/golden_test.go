package tgsp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/cryptotest"
	"time"
)

// The golden package: a format-v1 package committed under testdata, which
// every future version of this code must still read (SPEC.md, preamble).
// `go test ./tgsp -run 'TestGolden|TestVectors' -update-golden` rewrites it
// and testdata/vectors.json; without the flag the tests only read.
//
// Regeneration is deterministic for a given Go and circl version (the keys
// come from fixed ChaCha8 streams and crypto/rand is replaced by
// cryptotest.SetGlobalRandom), but nothing depends on that: a regenerated
// package is as good as the old one. Regenerate only on purpose.
var goldenUpdate = flag.Bool("update-golden", false, "rewrite testdata/golden/v1 and testdata/vectors.json")

const goldenDir = "testdata/golden/v1"

var (
	goldenCreatedAt = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	goldenExpiresAt = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	goldenVerifyAt  = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
)

const (
	goldenName    = "golden-model"
	goldenVersion = "1.0.0-rc.1+golden.v1"

	goldenEvidence = `{"schema":"tgsp.evidence.v1","base_model":"mlp-784-128-10",` +
		`"datasets":[{"name":"mnist-train","sha256":"6d0f5e4c1a3b2f7e","size":60000}],` +
		`"trainer":"tg-tinker/0.1.0","source_ref":"golden-v1","metrics":{"accuracy":0.9812}}` + "\n"
	goldenDPCert = `{"schema":"tgsp.dp_cert.v1","epsilon":2.93,"delta":1e-5,"accountant":"rdp",` +
		`"noise_multiplier":1.1,"clipping_norm":1.0,"sampling_rate":0.004,"steps":3000,` +
		`"dataset_size":60000,"sampling":"poisson","issued_at":"2026-11-27T00:00:00Z"}` + "\n"
)

var goldenDeviceTypes = []string{"jetson-orin", "rpi5"}

// goldenStream is a deterministic byte stream named by label.
func goldenStream(label string) *rand.ChaCha8 {
	var seed [32]byte
	copy(seed[:], label)
	return rand.NewChaCha8(seed)
}

// goldenSigner and goldenRecipient are the golden keys, derived from fixed
// streams so that regenerating does not change signer.pub or recipient.key.
func goldenSigner(t testing.TB) *SignerPrivateKey {
	k, err := GenerateSigner(goldenStream("tgsp golden v1 signer"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func goldenRecipient(t testing.TB) *RecipientPrivateKey {
	k, err := GenerateRecipient(goldenStream("tgsp golden v1 recipient"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// goldenEntry is one entry of the golden tree; a nil data means a directory.
type goldenEntry struct {
	path string
	mode fs.FileMode
	data []byte
}

// goldenTree is the plaintext of the golden package: three files, one of
// them in a nested directory and spanning three chunks (150 KiB).
func goldenTree() []goldenEntry {
	weights := make([]byte, 150<<10)
	goldenStream("tgsp golden v1 weights").Read(weights)
	return []goldenEntry{
		{"README.md", 0o644, []byte("# golden-model\n\nA TGSP format v1 test package. Do not edit: see golden_test.go.\n")},
		{"model", 0o755, nil},
		{"model/config.json", 0o640, []byte(`{"arch":"mlp","layers":[784,128,10],"dtype":"float32"}` + "\n")},
		{"model/weights.bin", 0o644, weights},
	}
}

// goldenFiles is the golden package as read back from testdata.
type goldenFiles struct {
	pkg       []byte
	signer    *SignerPublicKey
	recipient *RecipientPrivateKey
	manifest  []byte // manifest.json
	evidence  []byte
	dpCert    []byte
}

func goldenLoad(t testing.TB) goldenFiles {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(goldenDir, name))
		if err != nil {
			t.Fatalf("golden package: %v (regenerate with go test ./tgsp -run TestGolden -update-golden)", err)
		}
		return b
	}
	var g goldenFiles
	var err error
	g.pkg = read("package.tgsp")
	if g.signer, err = ParseSignerPublicKey(read("signer.pub")); err != nil {
		t.Fatalf("golden signer.pub: %v", err)
	}
	// Parse, not Load: git does not keep the file's 0600 mode.
	if g.recipient, err = ParseRecipientPrivateKey(read("recipient.key")); err != nil {
		t.Fatalf("golden recipient.key: %v", err)
	}
	g.manifest = read("manifest.json")
	g.evidence = read("evidence.json")
	g.dpCert = read("dp_cert.json")
	return g
}

// goldenInspect is what `tgsp inspect` prints for a manifest.
func goldenInspect(t testing.TB, manifest []byte) []byte {
	var buf bytes.Buffer
	if err := json.Indent(&buf, manifest, "", "  "); err != nil {
		t.Fatal(err)
	}
	buf.WriteByte('\n')
	return buf.Bytes()
}

// goldenGenerate rewrites testdata/golden/v1.
func goldenGenerate(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 1) // DEK, HPKE and ML-DSA hedging
	signer, rcpt := goldenSigner(t), goldenRecipient(t)

	in := t.TempDir()
	tree := goldenTree()
	for _, e := range tree {
		full := filepath.Join(in, filepath.FromSlash(e.path))
		var err error
		if e.data == nil {
			err = os.Mkdir(full, 0o700)
		} else {
			err = os.WriteFile(full, e.data, 0o600)
		}
		if err == nil {
			err = os.Chmod(full, e.mode) // whatever the umask
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	var pkg bytes.Buffer
	m, err := Pack(&pkg, in, PackOptions{
		Name:        goldenName,
		Version:     goldenVersion,
		DeviceTypes: goldenDeviceTypes,
		CreatedAt:   goldenCreatedAt,
		ExpiresAt:   goldenExpiresAt,
		Evidence:    []byte(goldenEvidence),
		DPCert:      []byte(goldenDPCert),
		Signer:      signer,
		Recipients:  []*RecipientPublicKey{rcpt.Public()},
	})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}

	if err := os.RemoveAll(goldenDir); err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte, mode fs.FileMode) {
		full := filepath.Join(goldenDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("package.tgsp", pkg.Bytes(), 0o644)
	write("signer.pub", signer.Public().MarshalPEM(), 0o644)
	write("recipient.key", rcpt.MarshalPEM(), 0o600)
	write("manifest.json", goldenInspect(t, mb), 0o644)
	write("evidence.json", []byte(goldenEvidence), 0o644)
	write("dp_cert.json", []byte(goldenDPCert), 0o644)
	for _, e := range tree {
		if e.data != nil {
			write("expected/"+e.path, e.data, 0o644)
		}
	}
	t.Logf("rewrote %s: package %d bytes, id %s", goldenDir, pkg.Len(), Hash(packageID(mb)))
}

// TestGolden reads the committed v1 package with today's code.
func TestGolden(t *testing.T) {
	if *goldenUpdate {
		goldenGenerate(t)
	}
	g := goldenLoad(t)

	// The committed keys are still what the fixed streams derive: key
	// derivation from seeds has not changed.
	if !goldenSigner(t).Public().Equal(g.signer) {
		t.Error("signer.pub is not the key derived from the golden signer seed")
	}
	if !bytes.Equal(goldenRecipient(t).MarshalPEM(), g.recipient.MarshalPEM()) {
		t.Error("recipient.key is not the key derived from the golden recipient seed")
	}

	path := filepath.Join(goldenDir, "package.tgsp")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Open(f, fi.Size())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}

	// What `tgsp inspect` prints, and the attached documents.
	if got := goldenInspect(t, p.ManifestBytes); !bytes.Equal(got, g.manifest) {
		t.Errorf("inspect output differs from manifest.json:\n%s\nwant\n%s", got, g.manifest)
	}
	if !bytes.Equal(p.EvidenceJSON, g.evidence) || !bytes.Equal(p.EvidenceJSON, []byte(goldenEvidence)) {
		t.Errorf("evidence.json differs: %q", p.EvidenceJSON)
	}
	if !bytes.Equal(p.DPCertJSON, g.dpCert) || !bytes.Equal(p.DPCertJSON, []byte(goldenDPCert)) {
		t.Errorf("dp_cert.json differs: %q", p.DPCertJSON)
	}
	if _, err := ParseEvidence(p.EvidenceJSON); err != nil {
		t.Error(err)
	}
	if c, err := ParseDPCert(p.DPCertJSON); err != nil || c.Epsilon != 2.93 || c.Accountant != "rdp" {
		t.Errorf("ParseDPCert = %+v, %v", c, err)
	}

	// The manifest says what the generator asked for.
	m := p.Manifest
	tree := goldenTree()
	var paths []string
	for _, e := range tree {
		paths = append(paths, e.path)
	}
	var gotPaths []string
	for _, e := range m.Files {
		gotPaths = append(gotPaths, e.Path)
	}
	switch {
	case m.Name != goldenName || m.Version != goldenVersion:
		t.Errorf("name %q version %q", m.Name, m.Version)
	case !m.CreatedAt.Equal(goldenCreatedAt) || !m.ExpiresAt.Equal(goldenExpiresAt):
		t.Errorf("created %v expires %v", m.CreatedAt, m.ExpiresAt)
	case !slices.Equal(m.DeviceTypes, goldenDeviceTypes):
		t.Errorf("device types %q", m.DeviceTypes)
	case m.PublisherKeyID != g.signer.KeyID():
		t.Errorf("publisher key id %s, signer.pub is %s", m.PublisherKeyID, g.signer.KeyID())
	case !slices.Equal(gotPaths, paths):
		t.Errorf("paths %q, want %q", gotPaths, paths)
	case !slices.Equal(p.Recipients(), []string{g.recipient.Public().KeyID()}):
		t.Errorf("recipients %q", p.Recipients())
	}
	for i, e := range tree {
		if fs.FileMode(m.Files[i].Mode) != e.mode {
			t.Errorf("%s: mode %o in the manifest, want %o", e.path, m.Files[i].Mode, e.mode)
		}
	}
	if w := m.Files[m.Lookup("model/weights.bin")]; chunkCount(w.Size) != 3 || len(w.Shards) != 1 {
		t.Errorf("weights.bin: %d chunks, %d shards; the golden package should exercise a multi-chunk file", chunkCount(w.Size), len(w.Shards))
	}

	// Trust and expiry.
	trust := []*SignerPublicKey{g.signer}
	if p2, _ := Open(f, fi.Size()); !errors.Is(p2.VerifySignature(trust, goldenExpiresAt), ErrExpired) {
		t.Error("golden package does not report ErrExpired at its expiry time")
	}
	other := []*SignerPublicKey{sharedKeys.signer.Public()}
	if p2, _ := Open(f, fi.Size()); !errors.Is(p2.VerifySignature(other, goldenVerifyAt), ErrUntrustedSigner) {
		t.Error("golden package verifies against a key that did not sign it")
	}
	if err := p.VerifySignature(trust, goldenVerifyAt); err != nil {
		t.Fatalf("VerifySignature: %v", err)
	}
	if err := p.VerifyPayload(context.Background(), 0); err != nil {
		t.Fatalf("VerifyPayload: %v", err)
	}
	if _, err := p.UnwrapDEK(sharedKeys.rcpt); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("UnwrapDEK with another key: %v, want ErrNotRecipient", err)
	}
	dek, err := p.UnwrapDEK(g.recipient)
	if err != nil {
		t.Fatalf("UnwrapDEK: %v", err)
	}

	out := filepath.Join(t.TempDir(), "out")
	if err := p.Unpack(context.Background(), dek, out, UnpackOptions{Workers: 2, CheckDigests: true}); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	goldenCompareTree(t, out, filepath.Join(goldenDir, "expected"), tree)

	// The streaming reader yields the same bytes.
	for _, e := range tree {
		if e.data == nil {
			continue
		}
		r, err := p.OpenFile(dek, e.path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, e.data) {
			t.Errorf("OpenFile(%s): %d bytes, err %v", e.path, len(got), err)
		}
	}
}

// goldenCompareTree checks that the unpacked tree out holds exactly the
// files of expected (byte for byte), and the entries and modes of tree.
func goldenCompareTree(t *testing.T, out, expected string, tree []goldenEntry) {
	t.Helper()
	list := func(root string) map[string]fs.FileInfo {
		got := map[string]fs.FileInfo{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == root {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			fi, err := d.Info()
			got[filepath.ToSlash(rel)] = fi
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	outList, expList := list(out), list(expected)
	if len(outList) != len(tree) || len(expList) != len(tree) {
		t.Errorf("unpacked %d entries, expected/ has %d, the golden tree %d", len(outList), len(expList), len(tree))
	}
	for _, e := range tree {
		fi, ok := outList[e.path]
		if !ok {
			t.Errorf("%s missing from the unpacked tree", e.path)
			continue
		}
		if fi.Mode().Perm() != e.mode || fi.IsDir() != (e.data == nil) {
			t.Errorf("%s: unpacked mode %v, want %v", e.path, fi.Mode(), e.mode)
		}
		if e.data == nil {
			continue
		}
		got, err := os.ReadFile(filepath.Join(out, e.path))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(expected, e.path))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: unpacked content differs from expected/", e.path)
		}
		if !bytes.Equal(want, e.data) {
			t.Errorf("%s: expected/ differs from the generator's content", e.path)
		}
	}
}

// TestGoldenSize keeps the committed fixtures small.
func TestGoldenSize(t *testing.T) {
	var total int64
	err := filepath.WalkDir(goldenDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		total += fi.Size()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(vecFile); err == nil {
		total += fi.Size()
	}
	if total > 500<<10 {
		t.Errorf("the golden package and vectors take %d bytes; keep them under 500 KiB", total)
	}
}
