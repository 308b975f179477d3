package tgsp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The tamper suite: DESIGN.md §6, "every byte of a TGSP package is
// authenticated: any change is rejected or, for another recipient's key
// block, harmless — never different plaintext".

// tamperSentinels are the sentinel errors of errors.go.
var tamperSentinels = []error{ErrMalformed, ErrBadSignature, ErrUntrustedSigner, ErrExpired, ErrHashMismatch,
	ErrNotRecipient, ErrDecrypt, ErrUnsafePath, ErrKey, ErrOutputExists}

func tamperIsOneOf(err error, allow []error) bool {
	for _, a := range allow {
		if errors.Is(err, a) {
			return true
		}
	}
	return false
}

// tamperFixture is one package with several files (one of three chunks,
// one of two, a small one and an empty one), a directory, both documents
// and two recipients.
type tamperFixture struct {
	in    string
	pkg   []byte
	plain map[string][]byte
}

func tamperBuild(t testing.TB) *tamperFixture {
	t.Helper()
	plain := map[string][]byte{
		"a.bin":     rtBytes(100, 2*ChunkSize+1000),
		"b.bin":     rtBytes(101, ChunkSize+10),
		"dir/c.txt": rtBytes(102, 100),
		"empty":     {},
	}
	files := map[string][]byte{"dir/sub/": nil}
	for p, b := range plain {
		files[p] = b
	}
	in := writeTree(t, files)
	opts := defaultOpts()
	opts.Evidence, opts.DPCert = rtEvidence, rtDPCert
	return &tamperFixture{in: in, pkg: packTree(t, in, opts), plain: plain}
}

// tamperSection returns the offsets of the header and body of the section
// with the given tag, and the body's end.
func tamperSection(t testing.TB, pkg []byte, tag sectionTag) (hdr, body, end int) {
	t.Helper()
	size := len(pkg)
	off := int(binary.BigEndian.Uint64(pkg[size-trailerSize:]))
	for off < size-trailerSize {
		n := int(binary.BigEndian.Uint64(pkg[off+4:]))
		if sectionTag(pkg[off:off+4]) == tag {
			return off, off + sectionHdr, off + sectionHdr + n
		}
		off += sectionHdr + n
	}
	t.Fatalf("no section %s", tag[:])
	return
}

// tamperStanza returns the offset of k's stanza in pkg.
func tamperStanza(t testing.TB, pkg []byte, k *RecipientPrivateKey) int {
	t.Helper()
	_, body, end := tamperSection(t, pkg, tagRecipients)
	id := k.Public().keyIDBytes()
	for off := body + 2; off < end; off += stanzaSize {
		if bytes.Equal(pkg[off+1:off+1+keyIDSize], id[:]) {
			return off
		}
	}
	t.Fatalf("no stanza for %s", k.Public().KeyID())
	return 0
}

// tamperCase is one byte to flip.
type tamperCase struct {
	region string
	off    int
	allow  []error              // what a failure must wrap
	owner  *RecipientPrivateKey // set for bytes of a recipient stanza
	file   string               // set for payload bytes: whose ciphertext
}

// tamperCases lists the bytes to flip, and checks that the regions they are
// drawn from partition the whole package, so no kind of byte is forgotten.
func tamperCases(t testing.TB, pkg []byte) []tamperCase {
	t.Helper()
	p := rtOpen(t, pkg)
	size := len(pkg)
	covered := make([]int, size)
	cover := func(start, end int) {
		for i := start; i < end; i++ {
			covered[i]++
		}
	}
	var cs []tamperCase
	seen := map[int]bool{}
	add := func(c tamperCase) {
		if c.off < 0 || c.off >= size {
			t.Fatalf("case %s/%d out of range", c.region, c.off)
		}
		if !seen[c.off] {
			seen[c.off] = true
			cs = append(cs, c)
		}
	}
	every := func(region string, start, end, stride int, allow ...error) {
		cover(start, end)
		for i := start; i < end; i += stride {
			add(tamperCase{region: region, off: i, allow: allow})
		}
		if end > start {
			add(tamperCase{region: region, off: end - 1, allow: allow})
		}
	}

	every("header", 0, headerSize, 1, ErrMalformed)
	every("trailer", size-trailerSize, size, 1, ErrMalformed)

	// Payload: first, middle and last ciphertext byte and first and last tag
	// byte of every chunk.
	offs := p.fileOffsets()
	for i, e := range p.Manifest.Files {
		if e.Type != TypeFile {
			continue
		}
		total := int(cipherSize(e.Size))
		cover(int(offs[i]), int(offs[i])+total)
		for c := 0; c < total; c += CipherChunkSize {
			n := min(CipherChunkSize, total-c)
			for _, o := range []int{0, n / 2, n - tagSize - 1, n - tagSize, n - 1} {
				if o >= 0 {
					add(tamperCase{region: "payload-" + e.Path, off: int(offs[i]) + c + o,
						allow: []error{ErrHashMismatch}, file: e.Path})
				}
			}
		}
	}

	secOff := int(binary.BigEndian.Uint64(pkg[size-trailerSize:]))
	for off := secOff; off < size-trailerSize; {
		tag := sectionTag(pkg[off : off+4])
		n := int(binary.BigEndian.Uint64(pkg[off+4:]))
		every("section-header-"+string(tag[:]), off, off+sectionHdr, 1, ErrMalformed)
		body, end := off+sectionHdr, off+sectionHdr+n
		switch tag {
		case tagManifest:
			every("manifest", body, end, 7, ErrMalformed, ErrBadSignature, ErrUntrustedSigner)
		case tagEvidence, tagDPCert:
			every("document-"+string(tag[:]), body, end, 3, ErrMalformed)
		case tagSignature:
			cover(body, end)
			for _, o := range []int{0, 1, 31, 32, 33, 100, 640, 1000, 1500, 2000, 2500, 3000, mldsaSigSize - 3, mldsaSigSize - 1} {
				add(tamperCase{region: "signature-mldsa", off: body + o, allow: []error{ErrBadSignature}})
			}
			for _, o := range []int{0, 1, 15, 31, 32, 33, 47, 62, 63} {
				add(tamperCase{region: "signature-ed25519", off: body + mldsaSigSize + o, allow: []error{ErrBadSignature}})
			}
		case tagRecipients:
			every("stanza-count", body, body+2, 1, ErrMalformed)
			for st := body + 2; st < end; st += stanzaSize {
				cover(st, st+stanzaSize)
				owner := sharedKeys.rcpt
				if id := sharedKeys.rcpt2.Public().keyIDBytes(); bytes.Equal(pkg[st+1:st+1+keyIDSize], id[:]) {
					owner = sharedKeys.rcpt2
				}
				region := "stanza-rcpt"
				if owner == sharedKeys.rcpt2 {
					region = "stanza-rcpt2"
				}
				locals := []int{0, 1, 8, 16, 17, 18, 19, 20, 19 + 559, 19 + 1119, 1139, 1140, 1141, 1141 + 31, 1141 + 32, stanzaSize - 1}
				for o := 0; o < stanzaSize; o += 53 {
					locals = append(locals, o)
				}
				for _, o := range locals {
					add(tamperCase{region: region, off: st + o, owner: owner})
				}
			}
		default:
			t.Fatalf("unknown section %q", tag[:])
		}
		off = end
	}
	for i, c := range covered {
		if c != 1 {
			t.Fatalf("byte %d lies in %d regions, want exactly 1", i, c)
		}
	}
	return cs
}

// TestTamperBitFlips flips one bit at a time across every region of a
// package and runs the whole pipeline on each result.
func TestTamperBitFlips(t *testing.T) {
	t.Parallel()
	fx := tamperBuild(t)
	out := filepath.Join(t.TempDir(), "out")
	if _, err := rtPipeline(fx.pkg, sharedKeys.rcpt, out, 2); err != nil {
		t.Fatalf("the unmodified package fails: %v", err)
	}
	rtCompareTree(t, fx.in, out)

	cases := tamperCases(t, fx.pkg)
	regions := map[string]int{}
	for _, c := range cases {
		regions[c.region]++
	}
	t.Logf("%d single-bit flips over %d regions: %v", len(cases), len(regions), regions)
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%d", c.region, c.off), func(t *testing.T) {
			t.Parallel()
			bad := bytes.Clone(fx.pkg)
			bad[c.off] ^= 1 << (c.off % 8)
			tamperCheckFlip(t, fx, bad, c)
		})
	}
}

func tamperCheckFlip(t *testing.T, fx *tamperFixture, bad []byte, c tamperCase) {
	keys := []*RecipientPrivateKey{sharedKeys.rcpt}
	if c.owner != nil {
		keys = append(keys, sharedKeys.rcpt2)
	}
	for _, k := range keys {
		allow, mayPass := c.allow, false
		switch {
		case c.owner == k: // the key's own stanza: must not open
			allow = []error{ErrMalformed, ErrNotRecipient, ErrDecrypt}
		case c.owner != nil: // another recipient's stanza: harmless
			allow, mayPass = []error{ErrMalformed}, true
		}
		out := filepath.Join(t.TempDir(), "out")
		_, err := rtPipeline(bad, k, out, 2)
		if err == nil {
			if derr := rtDiffTree(fx.in, out); derr != nil {
				t.Fatalf("key %s: accepted with DIFFERENT plaintext: %v", k.Public().KeyID(), derr)
			}
			if !mayPass {
				t.Fatalf("key %s: accepted (plaintext identical, but this byte must be authenticated)", k.Public().KeyID())
			}
			continue
		}
		if !tamperIsOneOf(err, allow) {
			t.Errorf("key %s: %v; want one of %v", k.Public().KeyID(), err, allow)
		}
		n := 0
		for _, s := range tamperSentinels {
			if errors.Is(err, s) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("key %s: %v wraps %d sentinel errors, want exactly 1 (errors.go)", k.Public().KeyID(), err, n)
		}
		rtNoLeftovers(t, out)
	}
	if c.file == "" {
		return
	}
	// Payload bytes: Unpack's own checks catch the flip without
	// VerifyPayload, and so does the streaming reader.
	out, err := unpackBytes(t, bad, sharedKeys.rcpt)
	if !errors.Is(err, ErrHashMismatch) {
		t.Errorf("unpack without VerifyPayload: %v, want ErrHashMismatch", err)
	}
	rtNoLeftovers(t, out)
	p, dek := rtVerified(t, bad)
	r, err := p.OpenFile(dek, c.file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r); !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrHashMismatch) {
		t.Errorf("OpenFile(%s) read to the end: %v, want ErrDecrypt or ErrHashMismatch", c.file, err)
	}
}

func TestTamperTruncateExtend(t *testing.T) {
	t.Parallel()
	fx := tamperBuild(t)
	pkg := fx.pkg
	size := len(pkg)
	p := rtOpen(t, pkg)
	secOff := headerSize + int(p.Manifest.PayloadSize)
	rcptHdr, _, _ := tamperSection(t, pkg, tagRecipients)
	lastChunk := pkg[secOff-int(cipherSize(0)) : secOff] // "empty" is the last file: one 16-byte chunk
	aLast := pkg[headerSize+2*CipherChunkSize : headerSize+int(cipherSize(2*ChunkSize+1000))]

	// withTrailer replaces the trailer of b with one that matches its new
	// layout, as an attacker would.
	withTrailer := func(b []byte, secOff int) []byte {
		b = b[: len(b)-trailerSize : len(b)-trailerSize]
		return append(b, trailerBytes(int64(secOff), int64(len(b)+trailerSize))...)
	}
	splice := func(parts ...[]byte) []byte { return bytes.Clone(slices.Concat(parts...)) }

	cases := map[string][]byte{}
	for _, n := range []int{0, 1, 15, 16, 17, headerSize + trailerSize - 1, headerSize + trailerSize,
		headerSize + CipherChunkSize, secOff - 1, secOff, secOff + 1, rcptHdr, size - trailerSize - 1,
		size - trailerSize, size - trailerSize + 1, size - 8, size - 1} {
		cases[fmt.Sprintf("truncate to %d", n)] = bytes.Clone(pkg[:n])
	}
	cases["truncate payload middle"] = splice(pkg[:headerSize+CipherChunkSize+5])
	cases["append 1 byte"] = splice(pkg, []byte{0})
	cases["append 1000 bytes"] = splice(pkg, rtBytes(7, 1000))
	cases["append last chunk"] = splice(pkg, lastChunk)
	cases["append a.bin last chunk"] = splice(pkg, aLast)
	cases["append trailer again"] = splice(pkg, pkg[size-trailerSize:])
	cases["append zeros and a matching trailer"] = withTrailer(splice(pkg, make([]byte, 100), pkg[size-trailerSize:]), secOff)
	cases["prepend header"] = splice(pkg[:headerSize], pkg)
	// Fixed-up trailers: the payload region no longer matches payload_size.
	cases["payload chunk removed, trailer fixed"] = withTrailer(
		splice(pkg[:secOff-len(lastChunk)], pkg[secOff:]), secOff-len(lastChunk))
	cases["payload chunk appended, trailer fixed"] = withTrailer(
		splice(pkg[:secOff], lastChunk, pkg[secOff:]), secOff+len(lastChunk))
	cases["a.bin last chunk duplicated, trailer fixed"] = withTrailer(
		splice(pkg[:headerSize+int(cipherSize(2*ChunkSize+1000))], aLast, pkg[headerSize+int(cipherSize(2*ChunkSize+1000)):]),
		secOff+len(aLast))
	cases["junk before trailer, trailer fixed"] = withTrailer(splice(pkg[:size-trailerSize], []byte("junk"), pkg[size-trailerSize:]), secOff)
	cases["extra section, trailer fixed"] = withTrailer(splice(pkg[:size-trailerSize],
		[]byte("XTRA\x00\x00\x00\x00\x00\x00\x00\x01x"), pkg[size-trailerSize:]), secOff)
	cases["RCPT section dropped, trailer fixed"] = withTrailer(splice(pkg[:rcptHdr], pkg[size-trailerSize:]), secOff)

	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := openBytes(b); !errors.Is(err, ErrMalformed) {
				t.Errorf("Open: %v, want ErrMalformed", err)
			}
			out, err := unpackBytes(t, b, sharedKeys.rcpt)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("unpack: %v, want ErrMalformed", err)
			}
			rtNoLeftovers(t, out)
		})
	}
}

// tamperChunk is one STREAM chunk: its stored ciphertext and its plaintext.
type tamperChunk struct{ ct, pt []byte }

// tamperRebuild applies op to the fixture's payload, seen as each file's
// list of chunks, then makes the manifest consistent with the result (sizes,
// shard hashes, payload size and keyed digests of the rearranged plaintext)
// and signs it again: only the STREAM construction stands in the way.
func tamperRebuild(t testing.TB, fx *tamperFixture, op func(map[string][]tamperChunk)) []byte {
	t.Helper()
	parts := rtSplit(t, fx.pkg)
	files := map[string][]tamperChunk{}
	var off int
	for _, e := range parts.m.Files {
		if e.Type != TypeFile {
			continue
		}
		pt := fx.plain[e.Path]
		total := int(cipherSize(e.Size))
		ct := parts.payload[off : off+total]
		off += total
		var chunks []tamperChunk
		for c := 0; c < int(chunkCount(e.Size)); c++ {
			chunks = append(chunks, tamperChunk{
				ct: ct[c*CipherChunkSize : min((c+1)*CipherChunkSize, total)],
				pt: pt[c*ChunkSize : min((c+1)*ChunkSize, len(pt))],
			})
		}
		files[e.Path] = chunks
	}
	op(files)
	var payload []byte
	plain := map[string][]byte{}
	for i := range parts.m.Files {
		e := &parts.m.Files[i]
		if e.Type != TypeFile {
			continue
		}
		var pt []byte
		for _, c := range files[e.Path] {
			payload = append(payload, c.ct...)
			pt = append(pt, c.pt...)
		}
		e.Size = int64(len(pt))
		plain[e.Path] = pt
	}
	parts.payload = payload
	rtRehash(t, parts, plain)
	return rtAssemble(t, parts, sharedKeys.signer)
}

// TestTamperChunks reorders, moves, drops and duplicates whole chunks. Each
// change is re-signed with consistent shard hashes and digests, so only the
// STREAM nonces (counter and last-chunk flag) and the per-file keys can
// catch it; the same change spliced into the original package without
// re-signing must fail the shard hashes.
func TestTamperChunks(t *testing.T) {
	t.Parallel()
	fx := tamperBuild(t)
	tests := []struct {
		name     string
		affected []string // files that must fail
		op       func(f map[string][]tamperChunk)
	}{
		{"identity (control)", nil, func(map[string][]tamperChunk) {}},
		{"swap a.bin chunks 0 and 1", []string{"a.bin"}, func(f map[string][]tamperChunk) {
			a := f["a.bin"]
			a[0], a[1] = a[1], a[0]
		}},
		{"swap a.bin chunk 0 with b.bin chunk 0", []string{"a.bin", "b.bin"}, func(f map[string][]tamperChunk) {
			f["a.bin"][0], f["b.bin"][0] = f["b.bin"][0], f["a.bin"][0]
		}},
		{"swap a.bin and b.bin whole", []string{"a.bin", "b.bin"}, func(f map[string][]tamperChunk) {
			f["a.bin"], f["b.bin"] = f["b.bin"], f["a.bin"]
		}},
		{"a.bin last chunk's tag moved to the front", []string{"a.bin"}, func(f map[string][]tamperChunk) {
			c := &f["a.bin"][2]
			c.ct = slices.Concat(c.ct[len(c.ct)-tagSize:], c.ct[:len(c.ct)-tagSize])
		}},
		{"drop a.bin first chunk", []string{"a.bin"}, func(f map[string][]tamperChunk) { f["a.bin"] = f["a.bin"][1:] }},
		{"drop a.bin middle chunk", []string{"a.bin"}, func(f map[string][]tamperChunk) {
			f["a.bin"] = slices.Delete(slices.Clone(f["a.bin"]), 1, 2)
		}},
		{"drop a.bin last chunk", []string{"a.bin"}, func(f map[string][]tamperChunk) { f["a.bin"] = f["a.bin"][:2] }},
		{"drop b.bin last chunk", []string{"b.bin"}, func(f map[string][]tamperChunk) { f["b.bin"] = f["b.bin"][:1] }},
		{"replay a.bin chunk 1", []string{"a.bin"}, func(f map[string][]tamperChunk) {
			a := f["a.bin"]
			f["a.bin"] = []tamperChunk{a[0], a[1], a[1], a[2]}
		}},
		{"a.bin final chunk first", []string{"a.bin"}, func(f map[string][]tamperChunk) {
			a := f["a.bin"]
			f["a.bin"] = []tamperChunk{a[2], a[0], a[1]}
		}},
		{"empty file gets b.bin's last chunk", []string{"empty"}, func(f map[string][]tamperChunk) {
			f["empty"] = []tamperChunk{f["b.bin"][1]}
		}},
		{"c.txt and empty swapped", []string{"dir/c.txt", "empty"}, func(f map[string][]tamperChunk) {
			f["dir/c.txt"], f["empty"] = f["empty"], f["dir/c.txt"]
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			re := tamperRebuild(t, fx, tc.op)
			p := rtOpen(t, re)
			if err := p.VerifySignature(rtTrust(), testNow); err != nil {
				t.Fatalf("re-signed package: VerifySignature: %v", err)
			}
			if err := p.VerifyPayload(context.Background(), 2); err != nil {
				t.Fatalf("re-signed package: VerifyPayload: %v (the shard hashes should be consistent)", err)
			}
			dek, err := p.UnwrapDEK(sharedKeys.rcpt)
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "out")
			err = p.Unpack(context.Background(), dek, out, UnpackOptions{Workers: 2, CheckDigests: true})
			if tc.affected == nil {
				if err != nil {
					t.Fatalf("control: %v", err)
				}
				rtCompareTree(t, fx.in, out)
				return
			}
			if !errors.Is(err, ErrDecrypt) || !strings.Contains(err.Error(), "failed authentication") {
				t.Fatalf("Unpack: %v, want ErrDecrypt from chunk authentication", err)
			}
			rtNoLeftovers(t, out)
			for _, path := range tc.affected {
				r, err := p.OpenFile(dek, path)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadAll(r); !errors.Is(err, ErrDecrypt) {
					t.Errorf("OpenFile(%s): read to the end: %v, want ErrDecrypt", path, err)
				}
			}

			// Without re-signing (where the layout is unchanged): the
			// shard hashes catch it.
			origPayloadSize := int(rtOpen(t, fx.pkg).Manifest.PayloadSize)
			if int(p.Manifest.PayloadSize) != origPayloadSize {
				return
			}
			raw := bytes.Clone(fx.pkg)
			copy(raw[headerSize:headerSize+origPayloadSize], re[headerSize:headerSize+origPayloadSize])
			if bytes.Equal(raw, fx.pkg) {
				t.Fatal("op changed nothing")
			}
			q := rtOpen(t, raw)
			if err := q.Verify(context.Background(), rtTrust(), testNow, 2); !errors.Is(err, ErrHashMismatch) {
				t.Errorf("unsigned splice: Verify: %v, want ErrHashMismatch", err)
			}
			out, err = unpackBytes(t, raw, sharedKeys.rcpt2)
			if !errors.Is(err, ErrHashMismatch) {
				t.Errorf("unsigned splice: unpack: %v, want ErrHashMismatch", err)
			}
			rtNoLeftovers(t, out)
		})
	}
}

func TestTamperSignatureSplice(t *testing.T) {
	t.Parallel()
	fx := tamperBuild(t)
	p := rtOpen(t, fx.pkg)
	msg := signedMessage(p.ManifestBytes)
	_, sigAt, sigEnd := tamperSection(t, fx.pkg, tagSignature)
	if !bytes.Equal(fx.pkg[sigAt:sigEnd], p.signature) {
		t.Fatal("signature section not found")
	}
	sign := func(k *SignerPrivateKey, m []byte) []byte {
		s, err := k.sign(m)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	byOther := sign(sharedKeys.other, msg)
	fresh := sign(sharedKeys.signer, msg)
	if bytes.Equal(fresh[:mldsaSigSize], p.signature[:mldsaSigSize]) {
		t.Fatal("ML-DSA signing is expected to be hedged (randomized)")
	}
	// A valid signature by the trusted signer over another package.
	otherPkg := tamperBuild(t).pkg
	otherSig := rtOpen(t, otherPkg).signature
	if err := sharedKeys.signer.Public().verify(signedMessage(rtOpen(t, otherPkg).ManifestBytes), otherSig); err != nil {
		t.Fatal(err)
	}

	orig := p.signature
	pq := func(s []byte) []byte { return s[:mldsaSigSize] }
	ed := func(s []byte) []byte { return s[mldsaSigSize:] }
	zero := make([]byte, SignatureSize)
	for _, tc := range []struct {
		name string
		sig  []byte
		want string // "" for success
	}{
		{"fresh signature by signer (control)", fresh, ""},
		{"fresh ML-DSA half by signer (control)", slices.Concat(pq(fresh), ed(orig)), ""},
		{"ML-DSA half by other key", slices.Concat(pq(byOther), ed(orig)), "ML-DSA-65 half invalid"},
		{"Ed25519 half by other key", slices.Concat(pq(orig), ed(byOther)), "Ed25519 half invalid"},
		{"whole signature by other key", byOther, "both invalid"},
		{"ML-DSA half from another package", slices.Concat(pq(otherSig), ed(orig)), "ML-DSA-65 half invalid"},
		{"Ed25519 half from another package", slices.Concat(pq(orig), ed(otherSig)), "Ed25519 half invalid"},
		{"whole signature from another package", otherSig, "both invalid"},
		{"ML-DSA half zeroed", slices.Concat(pq(zero), ed(orig)), "ML-DSA-65 half invalid"},
		{"Ed25519 half zeroed", slices.Concat(pq(orig), ed(zero)), "Ed25519 half invalid"},
		{"all zero", zero, "both invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bad := bytes.Clone(fx.pkg)
			copy(bad[sigAt:sigEnd], tc.sig)
			out := filepath.Join(t.TempDir(), "out")
			_, err := rtPipeline(bad, sharedKeys.rcpt, out, 1)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				rtCompareTree(t, fx.in, out)
				return
			}
			if !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v, want ErrBadSignature (%s)", err, tc.want)
			}
			rtNoLeftovers(t, out)
		})
	}
}

// tamperReplace returns a copy of pkg with the bytes at off replaced by b.
func tamperReplace(pkg []byte, off int, b []byte) []byte {
	out := bytes.Clone(pkg)
	copy(out[off:off+len(b)], b)
	return out
}

func TestTamperDEKSubstitution(t *testing.T) {
	t.Parallel()
	fx := tamperBuild(t)
	p, dek := rtVerified(t, fx.pkg)
	id := packageID(p.ManifestBytes)
	wrap := func(d *DEK, k *RecipientPrivateKey, pkgID [32]byte) []byte {
		st, err := wrapDEK(d, k.Public(), pkgID)
		if err != nil {
			t.Fatal(err)
		}
		return encodeStanzas([]stanza{st})[2:]
	}
	rogue, err := generateDEK()
	if err != nil {
		t.Fatal(err)
	}
	at1 := tamperStanza(t, fx.pkg, sharedKeys.rcpt)
	at2 := tamperStanza(t, fx.pkg, sharedKeys.rcpt2)
	var otherID [32]byte
	copy(otherID[:], id[:])
	otherID[0] ^= 1

	type result struct {
		k    *RecipientPrivateKey
		want error // nil: must succeed with identical plaintext
	}
	for _, tc := range []struct {
		name    string
		pkg     []byte
		results []result
	}{
		{"rcpt stanza wraps a rogue DEK", tamperReplace(fx.pkg, at1, wrap(rogue, sharedKeys.rcpt, id)),
			[]result{{sharedKeys.rcpt, ErrDecrypt}, {sharedKeys.rcpt2, nil}}},
		{"both stanzas wrap a rogue DEK",
			tamperReplace(tamperReplace(fx.pkg, at1, wrap(rogue, sharedKeys.rcpt, id)), at2, wrap(rogue, sharedKeys.rcpt2, id)),
			[]result{{sharedKeys.rcpt, ErrDecrypt}, {sharedKeys.rcpt2, ErrDecrypt}}},
		{"rcpt stanza wraps the DEK for another package id", tamperReplace(fx.pkg, at1, wrap(dek, sharedKeys.rcpt, otherID)),
			[]result{{sharedKeys.rcpt, ErrDecrypt}, {sharedKeys.rcpt2, nil}}},
		{"rcpt stanza wraps the real DEK afresh (harmless)", tamperReplace(fx.pkg, at1, wrap(dek, sharedKeys.rcpt, id)),
			[]result{{sharedKeys.rcpt, nil}, {sharedKeys.rcpt2, nil}}},
		{"rcpt2's stanza copied over rcpt's", tamperReplace(fx.pkg, at1, fx.pkg[at2:at2+stanzaSize]),
			[]result{{sharedKeys.rcpt, ErrNotRecipient}, {sharedKeys.rcpt2, nil}}},
		{"rcpt's key id on rcpt2's stanza", tamperReplace(fx.pkg, at2+1, fx.pkg[at1+1:at1+1+keyIDSize]),
			[]result{{sharedKeys.rcpt, nil}, {sharedKeys.rcpt2, ErrNotRecipient}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, r := range tc.results {
				out := filepath.Join(t.TempDir(), "out")
				_, err := rtPipeline(tc.pkg, r.k, out, 2)
				if r.want == nil {
					if err != nil {
						t.Fatalf("key %s: %v", r.k.Public().KeyID(), err)
					}
					rtCompareTree(t, fx.in, out)
					continue
				}
				if !errors.Is(err, r.want) {
					t.Errorf("key %s: %v, want %v", r.k.Public().KeyID(), err, r.want)
				}
				rtNoLeftovers(t, out)
			}
		})
	}
	// The rogue DEK itself is refused everywhere a DEK is accepted.
	if err := p.Unpack(context.Background(), rogue, filepath.Join(t.TempDir(), "out"), UnpackOptions{}); !errors.Is(err, ErrDecrypt) {
		t.Errorf("Unpack(rogue DEK): %v, want ErrDecrypt", err)
	}
	if _, err := p.OpenFile(rogue, "a.bin"); !errors.Is(err, ErrDecrypt) {
		t.Errorf("OpenFile(rogue DEK): %v, want ErrDecrypt", err)
	}
	if _, err := p.GrantKey(rogue, sharedKeys.rcpt.Public()); !errors.Is(err, ErrDecrypt) {
		t.Errorf("GrantKey(rogue DEK): %v, want ErrDecrypt", err)
	}
}

func TestGrantKey(t *testing.T) {
	t.Parallel()
	fxA, fxB := tamperBuild(t), tamperBuild(t)
	device, err := GenerateRecipient(nil)
	if err != nil {
		t.Fatal(err)
	}
	// The control plane holds rcpt and grants the DEK to the device.
	cpA, dekA := rtVerified(t, fxA.pkg)
	grant, err := cpA.GrantKey(dekA, device.Public())
	if err != nil {
		t.Fatal(err)
	}
	// The device verifies the package itself and opens the grant.
	devA := rtOpen(t, fxA.pkg)
	if err := devA.VerifySignature(rtTrust(), testNow); err != nil {
		t.Fatal(err)
	}
	if _, err := devA.UnwrapDEK(device); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("device's UnwrapDEK without the grant: %v, want ErrNotRecipient", err)
	}
	dek, err := devA.OpenGrant(grant, device)
	if err != nil {
		t.Fatalf("OpenGrant: %v", err)
	}
	if !dek.Equal(dekA) {
		t.Fatal("the grant opened to a different DEK")
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := devA.Unpack(context.Background(), dek, out, UnpackOptions{CheckDigests: true}); err != nil {
		t.Fatal(err)
	}
	rtCompareTree(t, fxA.in, out)
	r, err := devA.OpenFile(dek, "a.bin")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, fxA.plain["a.bin"]) {
		t.Errorf("OpenFile through the grant: %v", err)
	}

	devB := rtOpen(t, fxB.pkg)
	if err := devB.VerifySignature(rtTrust(), testNow); err != nil {
		t.Fatal(err)
	}
	if _, err := devB.OpenGrant(grant, device); !errors.Is(err, ErrDecrypt) {
		t.Errorf("grant for package A opened on package B: %v, want ErrDecrypt", err)
	}
	if _, err := devA.OpenGrant(grant, sharedKeys.rcpt); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("grant opened with another key: %v, want ErrNotRecipient", err)
	}
	_, dekB := rtVerified(t, fxB.pkg)
	if _, err := cpA.GrantKey(dekB, device.Public()); !errors.Is(err, ErrDecrypt) {
		t.Errorf("GrantKey with package B's DEK on package A: %v, want ErrDecrypt", err)
	}
	for i := range len(grant) {
		if i > 40 && i%29 != 0 && i != len(grant)-1 {
			continue
		}
		bad := bytes.Clone(grant)
		bad[i] ^= 1 << (i % 8)
		if _, err := devA.OpenGrant(bad, device); !tamperIsOneOf(err, []error{ErrMalformed, ErrNotRecipient, ErrDecrypt}) {
			t.Errorf("grant with byte %d flipped: %v", i, err)
		}
	}
	for _, bad := range [][]byte{nil, grant[:len(grant)-1], append(bytes.Clone(grant), 0)} {
		if _, err := devA.OpenGrant(bad, device); !errors.Is(err, ErrMalformed) {
			t.Errorf("grant of %d bytes: %v, want ErrMalformed", len(bad), err)
		}
	}
}

// TestTamperSplice moves parts between two packages by the same publisher
// for the same recipients.
func TestTamperSplice(t *testing.T) {
	t.Parallel()
	fxA, fxB := tamperBuild(t), tamperBuild(t)
	a, b := fxA.pkg, fxB.pkg
	if len(a) != len(b) {
		t.Fatalf("fixtures differ in size: %d, %d", len(a), len(b))
	}
	a1, b1 := tamperStanza(t, a, sharedKeys.rcpt), tamperStanza(t, b, sharedKeys.rcpt)
	_, aR, aEnd := tamperSection(t, a, tagRecipients)
	_, bR, _ := tamperSection(t, b, tagRecipients)
	_, aS, aSEnd := tamperSection(t, a, tagSignature)
	_, bS, _ := tamperSection(t, b, tagSignature)
	secOff := headerSize + int(rtOpen(t, a).Manifest.PayloadSize)

	for _, tc := range []struct {
		name string
		pkg  []byte
		k    *RecipientPrivateKey
		want error
	}{
		{"rcpt stanza from A into B", tamperReplace(b, b1, a[a1:a1+stanzaSize]), sharedKeys.rcpt, ErrDecrypt},
		{"rcpt stanza from A into B, rcpt2 unaffected", tamperReplace(b, b1, a[a1:a1+stanzaSize]), sharedKeys.rcpt2, nil},
		{"all stanzas from A into B (rcpt)", tamperReplace(b, bR, a[aR:aEnd]), sharedKeys.rcpt, ErrDecrypt},
		{"all stanzas from A into B (rcpt2)", tamperReplace(b, bR, a[aR:aEnd]), sharedKeys.rcpt2, ErrDecrypt},
		{"signature from A into B", tamperReplace(b, bS, a[aS:aSEnd]), sharedKeys.rcpt, ErrBadSignature},
		{"A's payload under B's manifest", tamperReplace(b, headerSize, a[headerSize:secOff]), sharedKeys.rcpt, ErrHashMismatch},
		{"A's manifest and documents over B's payload", slices.Concat(b[:secOff], a[secOff:]), sharedKeys.rcpt, ErrHashMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "out")
			_, err := rtPipeline(tc.pkg, tc.k, out, 2)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				rtCompareTree(t, fxB.in, out)
				return
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("%v, want %v", err, tc.want)
			}
			rtNoLeftovers(t, out)
		})
	}
}

// TestTamperInsider: a legitimate recipient knows the DEK, so it can make
// chunks that authenticate. Only the signed shard hashes stand in its way,
// in VerifyPayload, in Unpack and in the streaming reader.
func TestTamperInsider(t *testing.T) {
	t.Parallel()
	fx := tamperBuild(t)
	p, dek := rtVerified(t, fx.pkg) // the insider's view
	i := p.Manifest.Lookup("a.bin")
	aead, err := dek.fileAEAD(i)
	if err != nil {
		t.Fatal(err)
	}
	reseal := func(chunk int) []byte {
		e := p.Manifest.Files[i]
		total := chunkCount(e.Size)
		pt := bytes.Clone(fx.plain["a.bin"][chunk*ChunkSize : min((chunk+1)*ChunkSize, int(e.Size))])
		pt[0] ^= 0xff
		var nonce [12]byte
		chunkNonce(&nonce, uint64(chunk), int64(chunk) == total-1)
		bad := bytes.Clone(fx.pkg)
		off := int(p.fileOffsets()[i]) + chunk*CipherChunkSize
		ct := aead.Seal(nil, nonce[:], pt, nil)
		copy(bad[off:off+len(ct)], ct)
		return bad
	}
	for _, chunk := range []int{0, 1, 2} {
		t.Run(fmt.Sprintf("chunk %d", chunk), func(t *testing.T) {
			t.Parallel()
			bad := reseal(chunk)
			// Sanity: the chunk does authenticate, so the hashes are what
			// catches it.
			if err := rtOpen(t, bad).Verify(context.Background(), rtTrust(), testNow, 2); !errors.Is(err, ErrHashMismatch) {
				t.Errorf("Verify: %v, want ErrHashMismatch", err)
			}
			out, err := unpackBytes(t, bad, sharedKeys.rcpt2)
			if !errors.Is(err, ErrHashMismatch) {
				t.Errorf("unpack: %v, want ErrHashMismatch", err)
			}
			rtNoLeftovers(t, out)
			q, qdek := rtVerified(t, bad)
			r, err := q.OpenFile(qdek, "a.bin")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAll(r); !errors.Is(err, ErrHashMismatch) {
				t.Errorf("OpenFile read to the end: %v, want ErrHashMismatch", err)
			}
		})
	}
}
