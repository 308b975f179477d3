package tgsp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Round-trip, policy and unsafe-input tests, plus the helpers the tamper
// suite shares (all prefixed rt).

// rtShardPlain is the plaintext that fills exactly one shard.
const rtShardPlain = ChunksPerShard * ChunkSize

// rtBytes returns n deterministic pseudo-random bytes.
func rtBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 0x7a})
	_, _ = r.Read(b)
	return b
}

// rtEvidence and rtDPCert are valid attached documents.
var (
	rtEvidence = []byte(`{"schema":"tgsp.evidence.v1","base_model":"llama-3-8b","datasets":[{"name":"clinical-notes","sha256":"aa","size":12345}],"trainer":"tg-tinker","source_ref":"git:0123abc","metrics":{"loss":0.25}}`)
	rtDPCert   = []byte(`{"schema":"tgsp.dp_cert.v1","epsilon":3.5,"delta":1e-05,"accountant":"rdp","noise_multiplier":1.1,"clipping_norm":1,"sampling_rate":0.01,"steps":1000,"dataset_size":60000,"sampling":"poisson"}`)
)

func rtTrust() []*SignerPublicKey { return []*SignerPublicKey{sharedKeys.signer.Public()} }

// rtPipeline runs everything a consumer does: Open, VerifySignature
// (trusting sharedKeys.signer at testNow), VerifyPayload, UnwrapDEK(k) and
// Unpack into out, which must not exist. It stops at the first error.
func rtPipeline(pkg []byte, k *RecipientPrivateKey, out string, workers int) (*Package, error) {
	p, err := openBytes(pkg)
	if err != nil {
		return nil, err
	}
	if err := p.VerifySignature(rtTrust(), testNow); err != nil {
		return p, err
	}
	if err := p.VerifyPayload(context.Background(), workers); err != nil {
		return p, err
	}
	dek, err := p.UnwrapDEK(k)
	if err != nil {
		return p, err
	}
	return p, p.Unpack(context.Background(), dek, out, UnpackOptions{Workers: workers, CheckDigests: true})
}

// rtNode is one entry of a directory tree as read back from disk.
type rtNode struct {
	dir  bool
	mode fs.FileMode
	data []byte
}

func rtReadTree(root string) (map[string]rtNode, error) {
	nodes := map[string]rtNode{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n := rtNode{dir: d.IsDir(), mode: info.Mode()}
		switch {
		case d.IsDir():
		case info.Mode().IsRegular():
			if n.data, err = os.ReadFile(p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected file type %s", rel, info.Mode().Type())
		}
		nodes[filepath.ToSlash(rel)] = n
		return nil
	})
	return nodes, err
}

// rtDiffTree reports the first difference between the input tree want and
// the unpacked tree got: entry set, types, permission bits (and no setuid,
// setgid or sticky bits in got) and contents.
func rtDiffTree(want, got string) error {
	w, err := rtReadTree(want)
	if err != nil {
		return fmt.Errorf("read input tree: %w", err)
	}
	g, err := rtReadTree(got)
	if err != nil {
		return fmt.Errorf("read unpacked tree: %w", err)
	}
	for p, wn := range w {
		gn, ok := g[p]
		switch {
		case !ok:
			return fmt.Errorf("%s missing from the unpacked tree", p)
		case wn.dir != gn.dir:
			return fmt.Errorf("%s: dir=%v, want %v", p, gn.dir, wn.dir)
		case gn.mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0:
			return fmt.Errorf("%s: unpacked with special mode bits %s", p, gn.mode)
		case gn.mode.Perm() != wn.mode.Perm():
			return fmt.Errorf("%s: mode %o, want %o", p, gn.mode.Perm(), wn.mode.Perm())
		case !bytes.Equal(gn.data, wn.data):
			return fmt.Errorf("%s: content differs (%d bytes, want %d)", p, len(gn.data), len(wn.data))
		}
	}
	for p := range g {
		if _, ok := w[p]; !ok {
			return fmt.Errorf("unexpected entry %s in the unpacked tree", p)
		}
	}
	return nil
}

func rtCompareTree(t testing.TB, want, got string) {
	t.Helper()
	if err := rtDiffTree(want, got); err != nil {
		t.Fatal(err)
	}
}

// rtNoLeftovers checks that a failed unpack into out left neither out nor a
// staging directory behind.
func rtNoLeftovers(t testing.TB, out string) {
	t.Helper()
	if _, err := os.Lstat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s exists after a failed unpack (Lstat: %v)", out, err)
	}
	left, err := filepath.Glob(filepath.Join(filepath.Dir(out), ".tgsp-unpack-*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("staging directories left behind: %v", left)
	}
}

// rtMakeWritable registers a cleanup that makes every directory under dir
// writable again, so t.TempDir's cleanup can remove read-only trees when the
// tests do not run as root. Register it after the TempDir it covers.
func rtMakeWritable(t testing.TB, dir string) {
	t.Cleanup(func() {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				_ = os.Chmod(p, 0o755)
			}
			return nil
		})
	})
}

// rtParts is a package taken apart, so a test can change signed content and
// sign it again with sharedKeys.signer (the "what if the publisher's hashes
// are consistent" cases).
type rtParts struct {
	payload  []byte
	m        *Manifest
	evidence []byte
	dpCert   []byte
	dek      *DEK
}

// rtSplit opens and verifies pkg and recovers its DEK with sharedKeys.rcpt.
func rtSplit(t testing.TB, pkg []byte) *rtParts {
	t.Helper()
	p, err := openBytes(pkg)
	if err != nil {
		t.Fatalf("rtSplit: Open: %v", err)
	}
	if err := p.VerifySignature(rtTrust(), testNow); err != nil {
		t.Fatalf("rtSplit: VerifySignature: %v", err)
	}
	dek, err := p.UnwrapDEK(sharedKeys.rcpt)
	if err != nil {
		t.Fatalf("rtSplit: UnwrapDEK: %v", err)
	}
	var m Manifest // a deep copy
	if err := json.Unmarshal(p.ManifestBytes, &m); err != nil {
		t.Fatal(err)
	}
	return &rtParts{
		payload:  bytes.Clone(pkg[headerSize : headerSize+p.Manifest.PayloadSize]),
		m:        &m,
		evidence: bytes.Clone(p.EvidenceJSON),
		dpCert:   bytes.Clone(p.DPCertJSON),
		dek:      dek,
	}
}

// rtAssemble builds a package from parts exactly as Pack lays it out:
// header, payload, MNFS, EVID, DPCT, SIGN (by signer over header||manifest),
// RCPT (the DEK wrapped to rcpt and rcpt2 under the new package id),
// trailer. It does not validate anything, so it can build hostile packages.
func rtAssemble(t testing.TB, parts *rtParts, signer *SignerPrivateKey) []byte {
	t.Helper()
	mb, err := json.Marshal(parts.m)
	if err != nil {
		t.Fatal(err)
	}
	return rtAssembleRaw(t, parts, mb, signer)
}

// rtAssembleRaw is rtAssemble with the manifest bytes given verbatim.
func rtAssembleRaw(t testing.TB, parts *rtParts, mb []byte, signer *SignerPrivateKey) []byte {
	t.Helper()
	sig, err := signer.sign(signedMessage(mb))
	if err != nil {
		t.Fatal(err)
	}
	id := packageID(mb)
	var sts []stanza
	for _, k := range []*RecipientPrivateKey{sharedKeys.rcpt, sharedKeys.rcpt2} {
		st, err := wrapDEK(parts.dek, k.Public(), id)
		if err != nil {
			t.Fatal(err)
		}
		sts = append(sts, st)
	}
	var b bytes.Buffer
	b.Write(headerBytes())
	b.Write(parts.payload)
	secOff := int64(b.Len())
	for _, s := range []struct {
		tag  sectionTag
		body []byte
	}{{tagManifest, mb}, {tagEvidence, parts.evidence}, {tagDPCert, parts.dpCert}, {tagSignature, sig}, {tagRecipients, encodeStanzas(sts)}} {
		if s.body == nil {
			continue
		}
		if err := writeSection(&b, s.tag, s.body); err != nil {
			t.Fatal(err)
		}
	}
	b.Write(trailerBytes(secOff, int64(b.Len()+trailerSize)))
	return b.Bytes()
}

// rtResign re-serializes pkg's manifest after mutate, signs it again with
// sharedKeys.signer, re-wraps the DEK to both recipients, and rebuilds the
// sections and trailer. The payload is unchanged.
func rtResign(t testing.TB, pkg []byte, mutate func(*Manifest)) []byte {
	t.Helper()
	parts := rtSplit(t, pkg)
	mutate(parts.m)
	return rtAssemble(t, parts, sharedKeys.signer)
}

// rtRehash recomputes every file's shard hashes from parts.payload (laid out
// by the entries' current sizes), the payload size, and, for the paths in
// plain, the keyed plaintext digest: after it the manifest is consistent
// with whatever ciphertext a test put in the payload.
func rtRehash(t testing.TB, parts *rtParts, plain map[string][]byte) {
	t.Helper()
	var off int64
	for i := range parts.m.Files {
		e := &parts.m.Files[i]
		if e.Type != TypeFile {
			continue
		}
		n := cipherSize(e.Size)
		if off+n > int64(len(parts.payload)) {
			t.Fatalf("rtRehash: payload too short for %s", e.Path)
		}
		ct := parts.payload[off : off+n]
		e.Shards = e.Shards[:0]
		for s := int64(0); s < n; s += ShardSize {
			e.Shards = append(e.Shards, sha256.Sum256(ct[s:min(s+ShardSize, n)]))
		}
		if pt, ok := plain[e.Path]; ok {
			if int64(len(pt)) != e.Size {
				t.Fatalf("rtRehash: %s: plaintext of %d bytes for size %d", e.Path, len(pt), e.Size)
			}
			mac := parts.dek.digestMAC()
			mac.Write(pt)
			var d Hash
			mac.Sum(d[:0])
			e.Digest = &d
		}
		off += n
	}
	if off != int64(len(parts.payload)) {
		t.Fatalf("rtRehash: files need %d payload bytes, have %d", off, len(parts.payload))
	}
	parts.m.PayloadSize = off
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	many := map[string][]byte{"dir-empty/": nil}
	for i := range 500 {
		many[fmt.Sprintf("d%02d/f%03d.bin", i%17, i)] = rtBytes(uint64(i), i%300)
	}
	zeroMid := rtBytes(1, 3*ChunkSize)
	clear(zeroMid[ChunkSize : 2*ChunkSize])
	zeroTail := rtBytes(2, 2*ChunkSize+500)
	clear(zeroTail[2*ChunkSize:])

	tests := []struct {
		name  string
		files map[string][]byte
		modes map[string]fs.FileMode // chmod after writing
	}{
		{name: "empty file", files: map[string][]byte{"empty": {}}},
		{name: "one byte", files: map[string][]byte{"one": {0x5a}}},
		{name: "chunk-1", files: map[string][]byte{"f": rtBytes(3, ChunkSize-1)}},
		{name: "chunk", files: map[string][]byte{"f": rtBytes(4, ChunkSize)}},
		{name: "chunk+1", files: map[string][]byte{"f": rtBytes(5, ChunkSize+1)}},
		{name: "shard-1", files: map[string][]byte{"f": rtBytes(6, rtShardPlain-1)}},
		{name: "shard", files: map[string][]byte{"f": rtBytes(7, rtShardPlain)}},
		{name: "shard+1", files: map[string][]byte{"f": rtBytes(8, rtShardPlain+1)}},
		{name: "zero chunks", files: map[string][]byte{
			"mid": zeroMid, "tail": zeroTail, "all": make([]byte, ChunkSize+5), "small": make([]byte, 10)}},
		{name: "many small files", files: many},
		{name: "nested", files: map[string][]byte{
			"a/b/c/d.txt": []byte("deep"), "a/x": rtBytes(9, 1000), "a/empty/": nil, "top/": nil,
			"z.bin": rtBytes(10, 70000)}},
		{name: "no files", files: map[string][]byte{}},
		{name: "only empty dirs", files: map[string][]byte{"e1/": nil, "e2/e3/": nil}},
		{name: "tricky names", files: map[string][]byte{
			"a/b": []byte("1"), "a-b": []byte("2"), "a.b": []byte("3"), "a0": []byte("4"),
			"modèle ✓.bin": []byte("5"), " lead space": []byte("6"), "...": []byte("7"), "..x": []byte("8")}},
		{
			name: "modes",
			files: map[string][]byte{
				"rw": []byte("0600"), "exec": []byte("0755"), "plain": []byte("0644"), "ro": []byte("0400"),
				"setuid": []byte("setuid is dropped"), "priv/": nil, "grp/": nil, "rodir/f": []byte("in a read-only dir"),
			},
			modes: map[string]fs.FileMode{
				"rw": 0o600, "exec": 0o755, "plain": 0o644, "ro": 0o400, "setuid": 0o755 | fs.ModeSetuid,
				"priv": 0o700, "grp": 0o750, "rodir/f": 0o444, "rodir": 0o555,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := writeTree(t, tc.files)
			rtMakeWritable(t, in)
			for p, m := range tc.modes {
				if err := os.Chmod(filepath.Join(in, p), m); err != nil {
					t.Fatal(err)
				}
			}
			var buf bytes.Buffer
			m, err := Pack(&buf, in, defaultOpts())
			if err != nil {
				t.Fatalf("Pack: %v", err)
			}
			pkg := buf.Bytes()
			if mb, _ := json.Marshal(m); !bytes.Equal(mb, rtOpen(t, pkg).ManifestBytes) {
				t.Fatal("the manifest Pack returned is not the one it wrote")
			}
			wantEntries := 0
			if err := filepath.WalkDir(in, func(p string, _ fs.DirEntry, err error) error {
				if p != in {
					wantEntries++
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if len(m.Files) != wantEntries {
				t.Fatalf("manifest has %d entries, input has %d", len(m.Files), wantEntries)
			}
			for i, k := range []*RecipientPrivateKey{sharedKeys.rcpt, sharedKeys.rcpt2} {
				dir := t.TempDir()
				rtMakeWritable(t, dir)
				out := filepath.Join(dir, "out")
				workers := 1 + 3*i // 1 and 4
				p, err := rtPipeline(pkg, k, out, workers)
				if err != nil {
					t.Fatalf("recipient %d: %v", i+1, err)
				}
				rtCompareTree(t, in, out)
				if p.EvidenceJSON != nil || p.DPCertJSON != nil {
					t.Error("documents present though none were attached")
				}
			}
		})
	}
}

func rtOpen(t testing.TB, pkg []byte) *Package {
	t.Helper()
	p, err := openBytes(pkg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return p
}

func rtVerified(t testing.TB, pkg []byte) (*Package, *DEK) {
	t.Helper()
	p := rtOpen(t, pkg)
	if err := p.VerifySignature(rtTrust(), testNow); err != nil {
		t.Fatalf("VerifySignature: %v", err)
	}
	dek, err := p.UnwrapDEK(sharedKeys.rcpt)
	if err != nil {
		t.Fatalf("UnwrapDEK: %v", err)
	}
	return p, dek
}

func TestRoundTripDocuments(t *testing.T) {
	t.Parallel()
	in := writeTree(t, map[string][]byte{"model.bin": rtBytes(11, 3000)})
	for _, tc := range []struct {
		name          string
		evidence, dpc []byte
	}{
		{"both", rtEvidence, rtDPCert},
		{"evidence only", rtEvidence, nil},
		{"dp_cert only", nil, rtDPCert},
		{"neither", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := defaultOpts()
			opts.Evidence, opts.DPCert = tc.evidence, tc.dpc
			pkg := packTree(t, in, opts)
			out := filepath.Join(t.TempDir(), "out")
			p, err := rtPipeline(pkg, sharedKeys.rcpt, out, 0)
			if err != nil {
				t.Fatal(err)
			}
			rtCompareTree(t, in, out)
			if !bytes.Equal(p.EvidenceJSON, tc.evidence) || (p.EvidenceJSON == nil) != (tc.evidence == nil) {
				t.Errorf("evidence = %q, want %q", p.EvidenceJSON, tc.evidence)
			}
			if !bytes.Equal(p.DPCertJSON, tc.dpc) || (p.DPCertJSON == nil) != (tc.dpc == nil) {
				t.Errorf("dp_cert = %q, want %q", p.DPCertJSON, tc.dpc)
			}
			if (p.Manifest.Evidence == nil) != (tc.evidence == nil) || (p.Manifest.DPCert == nil) != (tc.dpc == nil) {
				t.Errorf("manifest document refs evidence=%v dp_cert=%v", p.Manifest.Evidence, p.Manifest.DPCert)
			}
		})
	}
	t.Run("invalid documents refused at pack", func(t *testing.T) {
		t.Parallel()
		for _, docs := range [][2][]byte{
			{[]byte(`{"schema":"tgsp.evidence.v2"}`), nil},
			{[]byte(`{"schema":"tgsp.evidence.v1","extra":1}`), nil},
			{nil, []byte(`{"schema":"tgsp.dp_cert.v1","epsilon":-1}`)},
			{nil, []byte(`not json`)},
		} {
			opts := defaultOpts()
			opts.Evidence, opts.DPCert = docs[0], docs[1]
			var buf bytes.Buffer
			if _, err := Pack(&buf, in, opts); !errors.Is(err, ErrMalformed) {
				t.Errorf("Pack with %q/%q: %v, want ErrMalformed", docs[0], docs[1], err)
			}
		}
	})
}

func TestOpenFileStreaming(t *testing.T) {
	t.Parallel()
	big := rtBytes(12, 2*rtShardPlain+12345) // three shards
	in := writeTree(t, map[string][]byte{"big.bin": big, "empty": {}, "dir/small": []byte("small"), "dir/x/": nil})
	pkg := packTree(t, in, defaultOpts())
	p, dek := rtVerified(t, pkg)

	r, err := p.OpenFile(dek, "big.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if !bytes.Equal(got, big) {
		t.Fatalf("OpenFile returned %d bytes differing from the %d packed", len(got), len(big))
	}
	// Odd-sized reads cross chunk and shard boundaries.
	r, _ = p.OpenFile(dek, "big.bin")
	var b bytes.Buffer
	if _, err := io.CopyBuffer(&b, struct{ io.Reader }{r}, make([]byte, 4093)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), big) {
		t.Fatal("OpenFile with small reads returned different bytes")
	}
	for path, want := range map[string][]byte{"empty": {}, "dir/small": []byte("small")} {
		r, err := p.OpenFile(dek, path)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %q, %v; want %q", path, got, err, want)
		}
	}
	for _, path := range []string{"dir", "dir/x", "missing", "", "../big.bin"} {
		if _, err := p.OpenFile(dek, path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("OpenFile(%q): %v, want fs.ErrNotExist", path, err)
		}
	}
	other, err := generateDEK()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.OpenFile(other, "big.bin"); !errors.Is(err, ErrDecrypt) {
		t.Errorf("OpenFile with a foreign DEK: %v, want ErrDecrypt", err)
	}
}

func TestVerifyWorkers(t *testing.T) {
	t.Parallel()
	in := writeTree(t, map[string][]byte{
		"a": rtBytes(13, 2*rtShardPlain+7), "b": rtBytes(14, rtShardPlain+ChunkSize), "c": {}, "d": rtBytes(15, 100),
	})
	pkg := packTree(t, in, defaultOpts())
	for _, w := range []int{1, 4, 0, -1} {
		p := rtOpen(t, pkg)
		if err := p.Verify(context.Background(), rtTrust(), testNow, w); err != nil {
			t.Errorf("Verify with %d workers: %v", w, err)
		}
		dek, err := p.UnwrapDEK(sharedKeys.rcpt2)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "out")
		if err := p.Unpack(context.Background(), dek, out, UnpackOptions{Workers: w, Sync: w == 4}); err != nil {
			t.Fatalf("Unpack with %d workers: %v", w, err)
		}
		rtCompareTree(t, in, out)
	}

	// Damage a.bin shard 2 and b shard 0: whatever the worker count and
	// scheduling, the earliest shard in package order is reported.
	p := rtOpen(t, pkg)
	offs := p.fileOffsets()
	bad := bytes.Clone(pkg)
	bad[offs[1]+ShardSize-1] ^= 1   // b, shard 0, last byte
	bad[offs[0]+2*ShardSize+3] ^= 1 // a, shard 2
	for _, w := range []int{1, 2, 4, 8} {
		for range 3 {
			p := rtOpen(t, bad)
			err := p.Verify(context.Background(), rtTrust(), testNow, w)
			var se *ShardError
			if !errors.As(err, &se) || !errors.Is(err, ErrHashMismatch) || se.Path != "a" || se.Shard != 2 {
				t.Fatalf("workers=%d: %v, want hash mismatch in a shard 2", w, err)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := rtOpen(t, pkg).Verify(ctx, rtTrust(), testNow, 2); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestRecipients(t *testing.T) {
	t.Parallel()
	in := writeTree(t, map[string][]byte{"f": rtBytes(16, 5000)})
	pkg := packTree(t, in, defaultOpts())
	p := rtOpen(t, pkg)
	want := []string{sharedKeys.rcpt.Public().KeyID(), sharedKeys.rcpt2.Public().KeyID()}
	if got := p.Recipients(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Recipients() = %v, want %v", got, want)
	}
	if err := p.VerifySignature(rtTrust(), testNow); err != nil {
		t.Fatal(err)
	}
	d1, err := p.UnwrapDEK(sharedKeys.rcpt)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := p.UnwrapDEK(sharedKeys.rcpt2)
	if err != nil {
		t.Fatal(err)
	}
	if !d1.Equal(d2) || d1.Commitment() != p.Manifest.DEKCommitment {
		t.Error("the recipients unwrapped different keys")
	}
	stranger, err := GenerateRecipient(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UnwrapDEK(stranger); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("UnwrapDEK(stranger): %v, want ErrNotRecipient", err)
	}
	if out, err := unpackBytes(t, pkg, stranger); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("unpack with a stranger's key: %v, want ErrNotRecipient", err)
	} else {
		rtNoLeftovers(t, out)
	}

	// A package for rcpt2 alone cannot be opened by rcpt.
	opts := defaultOpts()
	opts.Recipients = opts.Recipients[1:]
	only2 := packTree(t, in, opts)
	if _, err := unpackBytes(t, only2, sharedKeys.rcpt); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("rcpt on a package for rcpt2 only: %v, want ErrNotRecipient", err)
	}
	out, err := unpackBytes(t, only2, sharedKeys.rcpt2)
	if err != nil {
		t.Fatal(err)
	}
	rtCompareTree(t, in, out)
}

func TestResignControl(t *testing.T) {
	// rtResign with no change must give a package that works: otherwise the
	// tests that rely on it to build hostile packages would prove nothing.
	t.Parallel()
	in := writeTree(t, map[string][]byte{"a": rtBytes(17, 2*ChunkSize+9), "d/": nil, "d/b": []byte("b")})
	opts := defaultOpts()
	opts.Evidence, opts.DPCert = rtEvidence, rtDPCert
	pkg := packTree(t, in, opts)
	re := rtResign(t, pkg, func(*Manifest) {})
	if !bytes.Equal(re[:headerSize+rtOpen(t, pkg).Manifest.PayloadSize], pkg[:headerSize+rtOpen(t, pkg).Manifest.PayloadSize]) {
		t.Fatal("rtResign changed the payload")
	}
	out := filepath.Join(t.TempDir(), "out")
	p, err := rtPipeline(re, sharedKeys.rcpt2, out, 2)
	if err != nil {
		t.Fatalf("re-signed package: %v", err)
	}
	rtCompareTree(t, in, out)
	if !bytes.Equal(p.EvidenceJSON, rtEvidence) || !bytes.Equal(p.DPCertJSON, rtDPCert) {
		t.Error("documents changed by rtResign")
	}
	// And rtRehash over an unchanged payload is the identity.
	parts := rtSplit(t, pkg)
	a, _ := os.ReadFile(filepath.Join(in, "a"))
	b, _ := os.ReadFile(filepath.Join(in, "d", "b"))
	before, _ := json.Marshal(parts.m)
	rtRehash(t, parts, map[string][]byte{"a": a, "d/b": b})
	if after, _ := json.Marshal(parts.m); !bytes.Equal(before, after) {
		t.Errorf("rtRehash changed a consistent manifest:\n%s\n%s", before, after)
	}
}

// Policy.

func TestExpired(t *testing.T) {
	t.Parallel()
	in := writeTree(t, map[string][]byte{"f": []byte("x")})
	opts := defaultOpts()
	opts.CreatedAt = testNow.Add(-48 * time.Hour)
	opts.ExpiresAt = testNow.Add(-24 * time.Hour)
	pkg := packTree(t, in, opts)
	exp := opts.ExpiresAt.UTC().Truncate(time.Second)

	p := rtOpen(t, pkg)
	err := p.VerifySignature(rtTrust(), testNow)
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("VerifySignature: %v, want ErrExpired", err)
	}
	for _, s := range []string{exp.Format("2006-01-02"), exp.Format(time.RFC3339)} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name the expiry %s", err, s)
		}
	}
	if _, err := p.UnwrapDEK(sharedKeys.rcpt); err == nil {
		t.Error("UnwrapDEK succeeded after VerifySignature reported expiry")
	}
	if err := rtOpen(t, pkg).Verify(context.Background(), rtTrust(), testNow, 1); !errors.Is(err, ErrExpired) {
		t.Errorf("Verify: %v, want ErrExpired", err)
	}
	if out, err := unpackBytes(t, pkg, sharedKeys.rcpt); !errors.Is(err, ErrExpired) {
		t.Errorf("unpack: %v, want ErrExpired", err)
	} else {
		rtNoLeftovers(t, out)
	}
	// The boundary: valid until the second before expires_at.
	if err := rtOpen(t, pkg).VerifySignature(rtTrust(), exp); !errors.Is(err, ErrExpired) {
		t.Errorf("at expires_at: %v, want ErrExpired", err)
	}
	if err := rtOpen(t, pkg).VerifySignature(rtTrust(), exp.Add(-time.Second)); err != nil {
		t.Errorf("one second before expires_at: %v", err)
	}
	// Expiry is signed: moving it forward without the signer's key fails.
	bad := bytes.Clone(pkg)
	mb := rtOpen(t, pkg).ManifestBytes
	i := bytes.Index(bad, mb)
	old := []byte(exp.Format(time.RFC3339))
	j := bytes.Index(mb, old)
	if i < 0 || j < 0 {
		t.Fatal("expiry not found in the package")
	}
	copy(bad[i+j:], exp.AddDate(10, 0, 0).Format(time.RFC3339))
	if err := rtOpen(t, bad).VerifySignature(rtTrust(), testNow); !errors.Is(err, ErrBadSignature) {
		t.Errorf("with expires_at moved forward: %v, want ErrBadSignature", err)
	}
}

func TestUntrustedSigner(t *testing.T) {
	t.Parallel()
	in := writeTree(t, map[string][]byte{"f": []byte("x")})
	bySigner := packTree(t, in, defaultOpts())
	opts := defaultOpts()
	opts.Signer = sharedKeys.other
	byOther := packTree(t, in, opts)
	signer, other := sharedKeys.signer.Public(), sharedKeys.other.Public()

	for _, tc := range []struct {
		name  string
		pkg   []byte
		trust []*SignerPublicKey
		want  error
	}{
		{"other signed, trust signer", byOther, []*SignerPublicKey{signer}, ErrUntrustedSigner},
		{"signer signed, trust other", bySigner, []*SignerPublicKey{other}, ErrUntrustedSigner},
		{"empty trust", bySigner, nil, ErrUntrustedSigner},
		{"trust both", bySigner, []*SignerPublicKey{other, signer}, nil},
		{"other signed, trust other", byOther, []*SignerPublicKey{other}, nil},
	} {
		p := rtOpen(t, tc.pkg)
		err := p.VerifySignature(tc.trust, testNow)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			continue
		}
		if errors.Is(err, ErrUntrustedSigner) && !strings.Contains(err.Error(), p.Manifest.PublisherKeyID) {
			t.Errorf("%s: error %q does not name the key id", tc.name, err)
		}
		if err == nil {
			dek, err := p.UnwrapDEK(sharedKeys.rcpt)
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "out")
			if err := p.Unpack(context.Background(), dek, out, UnpackOptions{}); err != nil {
				t.Fatal(err)
			}
			rtCompareTree(t, in, out)
		}
	}

	// Impersonation: a manifest naming the trusted signer's key id, signed
	// by another key.
	parts := rtSplit(t, bySigner)
	forged := rtAssemble(t, parts, sharedKeys.other)
	if err := rtOpen(t, forged).VerifySignature(rtTrust(), testNow); !errors.Is(err, ErrBadSignature) {
		t.Errorf("manifest naming signer, signed by other: %v, want ErrBadSignature", err)
	}
	if out, err := unpackBytes(t, forged, sharedKeys.rcpt); !errors.Is(err, ErrBadSignature) {
		t.Errorf("unpack of the forgery: %v, want ErrBadSignature", err)
	} else {
		rtNoLeftovers(t, out)
	}
}

func TestRequireVerifiedSignature(t *testing.T) {
	t.Parallel()
	in := writeTree(t, map[string][]byte{"f": rtBytes(18, 1000)})
	pkg := packTree(t, in, defaultOpts())
	_, dek := rtVerified(t, pkg)
	grant, err := rtOpen(t, pkg).GrantKey(dek, sharedKeys.rcpt.Public())
	if err != nil {
		t.Fatal(err)
	}

	check := func(t *testing.T, p *Package) {
		t.Helper()
		parent := t.TempDir()
		out := filepath.Join(parent, "out")
		if _, err := p.UnwrapDEK(sharedKeys.rcpt); err == nil {
			t.Error("UnwrapDEK before a verified signature succeeded")
		}
		if _, err := p.OpenGrant(grant, sharedKeys.rcpt); err == nil {
			t.Error("OpenGrant before a verified signature succeeded")
		}
		if err := p.VerifyPayload(context.Background(), 1); err == nil {
			t.Error("VerifyPayload before a verified signature succeeded")
		}
		if _, err := p.OpenFile(dek, "f"); err == nil {
			t.Error("OpenFile before a verified signature succeeded")
		}
		if err := p.Unpack(context.Background(), dek, out, UnpackOptions{}); err == nil {
			t.Error("Unpack before a verified signature succeeded")
		}
		if des, err := os.ReadDir(parent); err != nil || len(des) != 0 {
			t.Errorf("refused Unpack left %v in the parent (%v)", des, err)
		}
	}
	t.Run("never verified", func(t *testing.T) { check(t, rtOpen(t, pkg)) })
	t.Run("untrusted", func(t *testing.T) {
		p := rtOpen(t, pkg)
		if err := p.VerifySignature([]*SignerPublicKey{sharedKeys.other.Public()}, testNow); err == nil {
			t.Fatal("verified against the wrong key")
		}
		check(t, p)
	})
	t.Run("expired", func(t *testing.T) {
		p := rtOpen(t, pkg)
		if err := p.VerifySignature(rtTrust(), testNow.Add(2*DefaultValidity)); !errors.Is(err, ErrExpired) {
			t.Fatalf("VerifySignature in the far future: %v", err)
		}
		check(t, p)
	})
	t.Run("bad signature", func(t *testing.T) {
		bad := bytes.Clone(pkg)
		p := rtOpen(t, pkg)
		i := bytes.Index(bad, p.signature)
		bad[i+SignatureSize-1] ^= 0x80
		q := rtOpen(t, bad)
		if err := q.VerifySignature(rtTrust(), testNow); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("VerifySignature: %v", err)
		}
		check(t, q)
	})
}

func TestUnpackOutput(t *testing.T) {
	t.Parallel()
	in := writeTree(t, map[string][]byte{"f": rtBytes(19, 3*ChunkSize), "d/g": []byte("g")})
	pkg := packTree(t, in, defaultOpts())
	p, dek := rtVerified(t, pkg)
	unpack := func(out string) error {
		return p.Unpack(context.Background(), dek, out, UnpackOptions{CheckDigests: true})
	}
	// A payload flip that only Unpack's own shard check sees.
	bad := bytes.Clone(pkg)
	bad[headerSize+ChunkSize] ^= 1
	pb, dekb := rtVerified(t, bad)
	unpackBad := func(out string) error {
		return pb.Unpack(context.Background(), dekb, out, UnpackOptions{})
	}

	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		out := filepath.Join(t.TempDir(), "new", "parent", "out")
		if err := unpack(out); err != nil {
			t.Fatal(err)
		}
		rtCompareTree(t, in, out)
	})
	t.Run("empty dir", func(t *testing.T) {
		t.Parallel()
		out := filepath.Join(t.TempDir(), "out")
		if err := os.Mkdir(out, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := unpack(out); err != nil {
			t.Fatal(err)
		}
		rtCompareTree(t, in, out)
		rtNoLeftoversStaging(t, filepath.Dir(out))
	})
	t.Run("non-empty dir", func(t *testing.T) {
		t.Parallel()
		out := filepath.Join(t.TempDir(), "out")
		keep := filepath.Join(out, "keep.txt")
		if err := os.Mkdir(out, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keep, []byte("precious"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := unpack(out); !errors.Is(err, ErrOutputExists) {
			t.Fatalf("Unpack into a non-empty dir: %v, want ErrOutputExists", err)
		}
		des, err := os.ReadDir(out)
		if err != nil || len(des) != 1 || des[0].Name() != "keep.txt" {
			t.Fatalf("out changed: %v %v", des, err)
		}
		if b, err := os.ReadFile(keep); err != nil || string(b) != "precious" {
			t.Errorf("keep.txt changed: %q %v", b, err)
		}
		rtNoLeftoversStaging(t, filepath.Dir(out))
	})
	t.Run("non-empty dir, bad package", func(t *testing.T) {
		t.Parallel()
		out := filepath.Join(t.TempDir(), "out")
		if err := os.MkdirAll(filepath.Join(out, "sub"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := unpackBad(out); !errors.Is(err, ErrOutputExists) {
			t.Fatalf("%v, want ErrOutputExists", err)
		}
		if des, err := os.ReadDir(out); err != nil || len(des) != 1 {
			t.Fatalf("out changed: %v %v", des, err)
		}
	})
	t.Run("file", func(t *testing.T) {
		t.Parallel()
		out := filepath.Join(t.TempDir(), "out")
		if err := os.WriteFile(out, []byte("file"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := unpack(out); !errors.Is(err, ErrOutputExists) {
			t.Fatalf("Unpack onto a file: %v, want ErrOutputExists", err)
		}
		if b, err := os.ReadFile(out); err != nil || string(b) != "file" {
			t.Errorf("file changed: %q %v", b, err)
		}
	})
	t.Run("symlink to empty dir", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		target := filepath.Join(dir, "target")
		out := filepath.Join(dir, "out")
		if err := os.Mkdir(target, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, out); err != nil {
			t.Fatal(err)
		}
		if err := unpack(out); !errors.Is(err, ErrOutputExists) {
			t.Fatalf("Unpack onto a symlink: %v, want ErrOutputExists", err)
		}
		if des, err := os.ReadDir(target); err != nil || len(des) != 0 {
			t.Errorf("symlink target written to: %v %v", des, err)
		}
	})
	t.Run("failure, missing out", func(t *testing.T) {
		t.Parallel()
		out := filepath.Join(t.TempDir(), "out")
		if err := unpackBad(out); !errors.Is(err, ErrHashMismatch) {
			t.Fatalf("Unpack of a damaged payload: %v, want ErrHashMismatch", err)
		}
		rtNoLeftovers(t, out)
	})
	t.Run("failure, empty out", func(t *testing.T) {
		t.Parallel()
		out := filepath.Join(t.TempDir(), "out")
		if err := os.Mkdir(out, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := unpackBad(out); !errors.Is(err, ErrHashMismatch) {
			t.Fatalf("Unpack of a damaged payload: %v, want ErrHashMismatch", err)
		}
		rtNoLeftovers(t, out)
	})
	t.Run("failure, wrong DEK", func(t *testing.T) {
		t.Parallel()
		out := filepath.Join(t.TempDir(), "out")
		wrong, err := generateDEK()
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Unpack(context.Background(), wrong, out, UnpackOptions{}); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("Unpack with a foreign DEK: %v, want ErrDecrypt", err)
		}
		rtNoLeftovers(t, out)
	})
	t.Run("twice", func(t *testing.T) {
		t.Parallel()
		out := filepath.Join(t.TempDir(), "out")
		if err := unpack(out); err != nil {
			t.Fatal(err)
		}
		if err := unpack(out); !errors.Is(err, ErrOutputExists) {
			t.Fatalf("second Unpack: %v, want ErrOutputExists", err)
		}
		rtCompareTree(t, in, out)
	})
}

func rtNoLeftoversStaging(t testing.TB, parent string) {
	t.Helper()
	if left, _ := filepath.Glob(filepath.Join(parent, ".tgsp-unpack-*")); len(left) > 0 {
		t.Errorf("staging directories left behind: %v", left)
	}
}

// Unsafe input.

func TestPackUnsafeInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(dir string) error
	}{
		{"symlink to file", func(d string) error { return os.Symlink("ok", filepath.Join(d, "link")) }},
		{"symlink to dir", func(d string) error { return os.Symlink("sub", filepath.Join(d, "link")) }},
		{"dangling symlink", func(d string) error { return os.Symlink("/nonexistent", filepath.Join(d, "sub", "link")) }},
		{"symlink outside", func(d string) error { return os.Symlink("/etc/passwd", filepath.Join(d, "sub", "passwd")) }},
		{"fifo", func(d string) error { return syscall.Mkfifo(filepath.Join(d, "fifo"), 0o644) }},
		{"fifo nested", func(d string) error { return syscall.Mkfifo(filepath.Join(d, "sub", "fifo"), 0o644) }},
		{"backslash", func(d string) error { return os.WriteFile(filepath.Join(d, `a\b`), nil, 0o644) }},
		{"newline", func(d string) error { return os.WriteFile(filepath.Join(d, "a\nb"), nil, 0o644) }},
		{"control char dir", func(d string) error { return os.Mkdir(filepath.Join(d, "a\x01"), 0o755) }},
		{"DEL", func(d string) error { return os.WriteFile(filepath.Join(d, "a\x7f"), nil, 0o644) }},
		{"invalid UTF-8", func(d string) error { return os.WriteFile(filepath.Join(d, "a\xffb"), nil, 0o644) }},
		{"long component", func(d string) error {
			// Linux allows 255-byte names; make the path too long instead,
			// through a root, as the absolute path exceeds PATH_MAX.
			r, err := os.OpenRoot(d)
			if err != nil {
				return err
			}
			defer r.Close()
			p := "."
			for range 17 {
				p += "/" + strings.Repeat("x", 250)
				if err := r.Mkdir(p, 0o755); err != nil {
					return err
				}
			}
			return nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := writeTree(t, map[string][]byte{"ok": []byte("ok"), "sub/f": []byte("f")})
			if err := tc.setup(dir); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			_, err := Pack(&buf, dir, defaultOpts())
			if !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("Pack: %v, want ErrUnsafePath", err)
			}
			if buf.Len() != 0 {
				t.Errorf("Pack wrote %d bytes before refusing", buf.Len())
			}
		})
	}
}

func TestValidPath(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a/", maxPathLen/2-1) + "bb" // exactly maxPathLen
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"a", true}, {"a/b", true}, {"a.b/c..d", true}, {"...", true}, {"..a", true}, {"a..", true},
		{".hidden", true}, {"modèle.bin", true}, {"a b", true}, {"-", true},
		{strings.Repeat("x", maxNameLen), true}, {long, true},
		{"", false}, {".", false}, {"..", false}, {"../x", false}, {"x/..", false}, {"a/../b", false},
		{"./a", false}, {"a/./b", false}, {"a/.", false}, {"/abs", false}, {"/", false}, {"a//b", false},
		{"a/", false}, {"//a", false}, {`a\b`, false}, {`..\x`, false}, {"a\nb", false}, {"a\x00b", false},
		{"a\tb", false}, {"a\x7f", false}, {"a\x1fb", false}, {"\xff", false}, {"a\xc3", false},
		{strings.Repeat("x", maxNameLen+1), false}, {long + "b", false},
	} {
		err := ValidPath(tc.path)
		if tc.ok && err != nil {
			t.Errorf("ValidPath(%q): %v, want ok", tc.path, err)
		}
		if !tc.ok && !errors.Is(err, ErrUnsafePath) {
			t.Errorf("ValidPath(%q): %v, want ErrUnsafePath", tc.path, err)
		}
	}
}

// TestUnsafeManifest builds packages whose signed manifest breaks the entry
// rules (re-signed by the trusted signer, so only validation stands in the
// way) and checks Open refuses them and nothing is written anywhere.
func TestUnsafeManifest(t *testing.T) {
	t.Parallel()
	in := writeTree(t, map[string][]byte{"d/": nil, "f": []byte("content")})
	pkg := packTree(t, in, defaultOpts())
	// Files: [0] "d" (dir), [1] "f" (file).
	type mut = func(m *Manifest)
	setPath := func(i int, p string) mut { return func(m *Manifest) { m.Files[i].Path = p } }
	var tests []struct {
		name string
		mut  mut
		want string // in the error message
	}
	for _, bad := range []string{"../x", "/abs", "a/../b", "a//b", ".", "", "..", "a/", `..\x`, "a\nb", "./f", "a\x7f"} {
		for i, kind := range []string{"dir", "file"} {
			tests = append(tests, struct {
				name string
				mut  mut
				want string
			}{fmt.Sprintf("%s %q", kind, bad), setPath(i, bad), "unsafe path"})
		}
	}
	tests = append(tests, []struct {
		name string
		mut  mut
		want string
	}{
		{"duplicate", setPath(0, "f"), "sorted"},
		{"unsorted", func(m *Manifest) { m.Files[0], m.Files[1] = m.Files[1], m.Files[0] }, "sorted"},
		{"inside a file", func(m *Manifest) {
			m.Files = append(m.Files[1:], Entry{Path: "f/g", Type: TypeDir, Mode: 0o755})
		}, "inside file"},
		{"setuid", func(m *Manifest) { m.Files[1].Mode = 0o4755 }, "mode"},
		{"symlink type", func(m *Manifest) { m.Files[0].Type = "symlink" }, "unknown type"},
		{"dir with size", func(m *Manifest) { m.Files[0].Size = 1 }, "directory"},
		{"file without digest", func(m *Manifest) { m.Files[1].Digest = nil }, "digest"},
		{"payload size", func(m *Manifest) { m.PayloadSize++ }, "payload_size"},
		{"chunk size", func(m *Manifest) { m.ChunkSize = 1 << 20 }, "chunk_size"},
	}...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bad := rtResign(t, pkg, tc.mut)
			parent := t.TempDir()
			out := filepath.Join(parent, "sub", "out")
			_, err := rtPipeline(bad, sharedKeys.rcpt, out, 1)
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("%v, want ErrMalformed or ErrUnsafePath", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("refused for another reason: %v (want %q)", err, tc.want)
			}
			if des, err := os.ReadDir(parent); err != nil || len(des) != 0 {
				t.Errorf("something was written: %v %v", des, err)
			}
			if _, err := os.Lstat("/abs"); err == nil {
				t.Error("/abs exists")
			}
		})
	}
}

// TestManifestStrictJSON: SPEC.md §3 says readers MUST reject unknown fields,
// and the signed bytes must mean one thing to every reader. encoding/json
// matches keys case-insensitively (with Unicode folding) and keeps the last
// of duplicate keys, so these manifests, signed by the trusted signer, must
// be refused rather than read as version 9.9.9 or a differently named
// package.
func TestManifestStrictJSON(t *testing.T) {
	t.Parallel()
	in := writeTree(t, map[string][]byte{"f": []byte("content")})
	pkg := packTree(t, in, defaultOpts())
	parts := rtSplit(t, pkg)
	mb, err := json.Marshal(parts.m)
	if err != nil {
		t.Fatal(err)
	}
	replace := func(old, new string) []byte {
		if !bytes.Contains(mb, []byte(old)) {
			t.Fatalf("%s not in the manifest", old)
		}
		return bytes.Replace(mb, []byte(old), []byte(new), 1)
	}
	for _, tc := range []struct {
		name string
		mb   []byte
	}{
		{"duplicate version", replace(`"version":"1.2.3"`, `"version":"1.2.3","version":"9.9.9"`)},
		{"duplicate name", replace(`"name":"test-model"`, `"name":"test-model","name":"other-model"`)},
		{"upper-case key", replace(`"version":"1.2.3"`, `"VERSION":"9.9.9"`)},
		{"mixed-case key", replace(`"name":"test-model"`, `"Name":"test-model"`)},
		{"unicode-folded key", replace(`"schema":`, `"ſchema":`)}, // U+017F folds to s
		{"entry key case", replace(`"path":"f"`, `"Path":"f"`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bad := rtAssembleRaw(t, parts, tc.mb, sharedKeys.signer)
			p, err := openBytes(bad)
			if !errors.Is(err, ErrMalformed) {
				detail := ""
				if p != nil {
					detail = fmt.Sprintf(" (read as name %q version %q)", p.Manifest.Name, p.Manifest.Version)
				}
				t.Errorf("Open: %v, want ErrMalformed%s", err, detail)
			}
		})
	}
	// Control: the unmodified bytes through the same path are accepted.
	if _, err := rtPipeline(rtAssembleRaw(t, parts, mb, sharedKeys.signer), sharedKeys.rcpt, filepath.Join(t.TempDir(), "out"), 1); err != nil {
		t.Fatalf("control: %v", err)
	}
}

// TestUnpackConfined is defense in depth: even with a manifest that bypassed
// validation (changed after Open), Unpack cannot write outside its staging
// directory.
func TestUnpackConfined(t *testing.T) {
	t.Parallel()
	in := writeTree(t, map[string][]byte{"d/": nil, "f": []byte("content")})
	pkg := packTree(t, in, defaultOpts())
	for _, tc := range []struct {
		name string
		i    int
		path func(parent string) string
	}{
		{"file ..", 1, func(string) string { return "../escape" }},
		{"file ../..", 1, func(string) string { return "../../escape" }},
		{"file absolute", 1, func(parent string) string { return filepath.Join(parent, "escape") }},
		{"dir ..", 0, func(string) string { return "../escape" }},
		{"dir absolute", 0, func(parent string) string { return filepath.Join(parent, "escape") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			top := t.TempDir()
			parent := filepath.Join(top, "p")
			out := filepath.Join(parent, "out")
			p, dek := rtVerified(t, pkg)
			p.Manifest.Files[tc.i].Path = tc.path(parent)
			if err := p.Unpack(context.Background(), dek, out, UnpackOptions{}); err == nil {
				t.Fatal("Unpack with an escaping path succeeded")
			}
			for _, p := range []string{filepath.Join(parent, "escape"), filepath.Join(top, "escape")} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was created", p)
				}
			}
			rtNoLeftovers(t, out)
		})
	}
}
