package tgsp

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math"
	"path"
	"path/filepath"
	"reflect"
	"runtime/metrics"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Fuzz targets for every parser of the format. Each is seeded from the table
// tests' inputs and from real packages built when the target starts, so
// plain `go test` runs them as regression tests; hack/fuzz.sh fuzzes them.
// Bodies stay fast: no Pack, no unpacking to disk.

// fzSeed is a real package built for the seed corpus, with what is needed to
// check a fuzzed input that still verifies.
type fzSeed struct {
	pkg   []byte
	rcpt  *RecipientPrivateKey
	files map[string][]byte // plaintext by path (files only)
}

// fzSeedPackages packs two small packages with the shared keys: one with
// both documents, nested and empty directories, an empty file and one
// recipient; one with a single file and two recipients.
func fzSeedPackages(t testing.TB) []fzSeed {
	t.Helper()
	files1 := map[string][]byte{"a.txt": []byte("hello\n"), "d/b.bin": bytes.Repeat([]byte{7}, 100), "empty": {}}
	tree1 := map[string][]byte{"d/e/": nil}
	for p, b := range files1 {
		tree1[p] = b
	}
	opts := defaultOpts()
	opts.Recipients = opts.Recipients[:1]
	opts.Evidence = []byte(fzEvidenceValid)
	opts.DPCert = []byte(fzDPCertValid)
	opts.DeviceTypes = []string{"rpi5", "jetson-orin"}
	p1 := packTree(t, writeTree(t, tree1), opts)

	files2 := map[string][]byte{"m": []byte("model")}
	p2 := packTree(t, writeTree(t, files2), defaultOpts())
	return []fzSeed{{p1, sharedKeys.rcpt, files1}, {p2, sharedKeys.rcpt, files2}}
}

// fzSection returns the offset and body of section tag in a well-formed
// package, or -1 and nil.
func fzSection(pkg []byte, tag sectionTag) (int, []byte) {
	off := binary.BigEndian.Uint64(pkg[len(pkg)-trailerSize:])
	for off+sectionHdr <= uint64(len(pkg)-trailerSize) {
		n := binary.BigEndian.Uint64(pkg[off+4:])
		if sectionTag(pkg[off:off+4]) == tag {
			return int(off + sectionHdr), pkg[off+sectionHdr : off+sectionHdr+n]
		}
		off += sectionHdr + n
	}
	return -1, nil
}

// fzCorrupt returns damaged variants of a well-formed package.
func fzCorrupt(pkg []byte) [][]byte {
	flip := func(i int, mask byte) []byte {
		b := bytes.Clone(pkg)
		b[i] ^= mask
		return b
	}
	put64 := func(i int, v uint64) []byte {
		b := bytes.Clone(pkg)
		binary.BigEndian.PutUint64(b[i:], v)
		return b
	}
	mOff, _ := fzSection(pkg, tagManifest)
	sOff, _ := fzSection(pkg, tagSignature)
	rOff, _ := fzSection(pkg, tagRecipients)
	trailer := len(pkg) - trailerSize
	out := [][]byte{
		pkg[:len(pkg)-1], pkg[:len(pkg)/2], pkg[:headerSize+trailerSize], pkg[1:],
		append(bytes.Clone(pkg), 0),
		flip(9, 1),                  // format version
		flip(11, 1),                 // flags
		flip(headerSize, 1),         // payload
		flip(mOff-sectionHdr, 0x20), // section tag
		flip(mOff-1, 1),             // manifest length
		flip(mOff, 0x20),            // manifest first byte
		flip(mOff+10, 1),            // manifest content
		flip(sOff, 1),               // signature: Open succeeds, verification fails
		flip(sOff+mldsaSigSize, 1),  // Ed25519 half
		flip(rOff+1, 1),             // stanza count
		flip(rOff+2, 1),             // stanza type
		flip(rOff+2+1+keyIDSize+2+5, 1),
		flip(len(pkg)-1, 1),                  // trailer magic
		put64(trailer, headerSize),           // section offset
		put64(trailer, uint64(trailer)),      // section offset at the trailer
		put64(trailer+8, uint64(len(pkg)+1)), // file size
		put64(mOff-8, math.MaxUint64),        // huge manifest length
		put64(mOff-8, maxManifestSize),       // manifest length at its limit
		put64(rOff-8, uint64(len(pkg))),      // recipients beyond the end
		append(bytes.Clone(pkg[:trailer]), pkg[rOff-sectionHdr:]...), // section twice
	}
	return out
}

// fzMinimal is the shortest input that passes the header and trailer checks.
func fzMinimal() []byte {
	return append(headerBytes(), trailerBytes(headerSize, headerSize+trailerSize)...)
}

// fzReassemble writes a parsed package back out: Open must have accepted
// exactly this byte string.
func fzReassemble(p *Package, data []byte) []byte {
	var b bytes.Buffer
	b.Write(headerBytes())
	b.Write(data[headerSize : headerSize+p.Manifest.PayloadSize])
	secOff := b.Len()
	writeSection(&b, tagManifest, p.ManifestBytes)
	if p.EvidenceJSON != nil {
		writeSection(&b, tagEvidence, p.EvidenceJSON)
	}
	if p.DPCertJSON != nil {
		writeSection(&b, tagDPCert, p.DPCertJSON)
	}
	writeSection(&b, tagSignature, p.signature)
	writeSection(&b, tagRecipients, encodeStanzas(p.stanzas))
	b.Write(trailerBytes(int64(secOff), int64(b.Len()+trailerSize)))
	return b.Bytes()
}

func FuzzOpen(f *testing.F) {
	// Manifests the trusted keys really signed, with what it takes to
	// decrypt them. The shared signer is random per process, so only this
	// process's own seeds verify under it; the golden package's signer is
	// the same in every fuzzing worker.
	signed := map[string]fzSeed{}
	for _, s := range fzSeedPackages(f) {
		p, err := openBytes(s.pkg)
		if err != nil {
			f.Fatal(err)
		}
		signed[string(p.ManifestBytes)] = s
		f.Add(s.pkg)
		for _, c := range fzCorrupt(s.pkg) {
			f.Add(c)
		}
	}
	g := goldenLoad(f)
	gp, err := openBytes(g.pkg)
	if err != nil {
		f.Fatal(err)
	}
	gfiles := map[string][]byte{}
	for _, e := range goldenTree() {
		if e.data != nil {
			gfiles[e.path] = e.data
		}
	}
	signed[string(gp.ManifestBytes)] = fzSeed{g.pkg, g.recipient, gfiles}
	f.Add(g.pkg)
	f.Add(fzMinimal())
	f.Add([]byte{})
	f.Add(headerBytes())
	trust := []*SignerPublicKey{sharedKeys.signer.Public(), g.signer}

	f.Fuzz(func(t *testing.T, data []byte) {
		allocs := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
		metrics.Read(allocs)
		before := allocs[0].Value.Uint64()
		p, err := openBytes(data)
		metrics.Read(allocs)
		// Open reads only what the input holds, whatever it claims; the
		// JSON decoder's overhead is a small multiple of the manifest.
		if n, budget := allocs[0].Value.Uint64()-before, 256*uint64(len(data))+4<<20; n > budget {
			t.Fatalf("Open allocated %d bytes for a %d-byte input", n, len(data))
		}
		if err != nil {
			if p != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("Open = %v, %v; want nil, ErrMalformed", p, err)
			}
			return
		}
		if err := p.Manifest.validate(); err != nil {
			t.Fatalf("accepted manifest does not validate: %v", err)
		}
		if m, err := parseManifest(p.ManifestBytes); err != nil || !reflect.DeepEqual(fzNormManifest(m), fzNormManifest(p.Manifest)) {
			t.Fatalf("manifest does not re-parse to the same value: %v", err)
		}
		if got := fzReassemble(p, data); !bytes.Equal(got, data) {
			t.Fatal("Open accepted bytes that are not the canonical encoding of what it parsed")
		}
		if p.Size() != int64(len(data)) || len(p.Recipients()) == 0 {
			t.Fatalf("size %d, %d recipients", p.Size(), len(p.Recipients()))
		}
		// Plaintext is refused before verification.
		if err := p.VerifyPayload(context.Background(), 1); err == nil {
			t.Fatal("VerifyPayload ran before VerifySignature")
		}

		// Verify at the creation time, so that only the signature decides.
		err = p.VerifySignature(trust, p.Manifest.CreatedAt)
		if err != nil {
			if !errors.Is(err, ErrUntrustedSigner) && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("VerifySignature: %v", err)
			}
			return
		}
		seed, ok := signed[string(p.ManifestBytes)]
		if !ok {
			t.Fatalf("a manifest nobody signed verifies:\n%s", p.ManifestBytes)
		}
		payloadErr := p.VerifyPayload(context.Background(), 2)
		if payloadErr != nil && !errors.Is(payloadErr, ErrHashMismatch) {
			t.Fatalf("VerifyPayload: %v", payloadErr)
		}
		dek, err := p.UnwrapDEK(seed.rcpt)
		if err != nil {
			if !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrNotRecipient) {
				t.Fatalf("UnwrapDEK: %v", err)
			}
			return
		}
		for _, e := range p.Manifest.Files {
			if e.Type != TypeFile {
				continue
			}
			r, err := p.OpenFile(dek, e.Path)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			switch {
			case err == nil && !bytes.Equal(got, seed.files[e.Path]):
				t.Fatalf("%s: OpenFile returned content that was never packed", e.Path)
			case err != nil && payloadErr == nil:
				t.Fatalf("%s: payload verified but reading failed: %v", e.Path, err)
			case err != nil && !errors.Is(err, ErrHashMismatch) && !errors.Is(err, ErrDecrypt):
				t.Fatalf("%s: %v", e.Path, err)
			}
		}
	})
}

// fzNormManifest makes manifests that mean the same compare equal under
// reflect.DeepEqual: times in UTC, empty slices nil.
func fzNormManifest(m *Manifest) Manifest {
	n := *m
	n.CreatedAt, n.ExpiresAt = m.CreatedAt.UTC(), m.ExpiresAt.UTC()
	if len(n.DeviceTypes) == 0 {
		n.DeviceTypes = nil
	}
	n.Files = nil
	for _, e := range m.Files {
		if len(e.Shards) == 0 {
			e.Shards = nil
		}
		n.Files = append(n.Files, e)
	}
	return n
}

// fzManifestCases edit a valid manifest; ok says whether parseManifest must
// accept the result. The edited manifests also seed FuzzParseManifest.
var fzManifestCases = []struct {
	name string
	edit func(m *Manifest)
	raw  func(b []byte) []byte
	ok   bool
}{
	{name: "as packed", ok: true},
	{name: "indented", raw: func(b []byte) []byte {
		var out bytes.Buffer
		json.Indent(&out, b, "", "\t")
		return out.Bytes()
	}, ok: true},
	{name: "trailing newline", raw: func(b []byte) []byte { return append(b, '\n') }, ok: true},
	{name: "offset time", raw: func(b []byte) []byte { return fzSetString(b, "expires_at", "2999-01-01T00:00:00.5+05:30") }, ok: true},
	{name: "time without zone", raw: func(b []byte) []byte { return fzSetString(b, "expires_at", "2999-01-01T00:00:00") }},
	{name: "time date only", raw: func(b []byte) []byte { return fzSetString(b, "expires_at", "2999-01-01") }},
	{name: "no files", edit: func(m *Manifest) { m.Files, m.PayloadSize = nil, 0 }, ok: true},
	{name: "any device", edit: func(m *Manifest) { m.DeviceTypes = []string{AnyDeviceType} }, ok: true},
	{name: "mode 0", edit: func(m *Manifest) { m.Files[0].Mode = 0 }, ok: true},

	{name: "unknown field", raw: func(b []byte) []byte { return append([]byte(`{"extra":1,`), b[1:]...) }},
	{name: "trailing data", raw: func(b []byte) []byte { return append(b, "{}"...) }},
	{name: "trailing garbage", raw: func(b []byte) []byte { return append(b, 'x') }},
	{name: "truncated", raw: func(b []byte) []byte { return b[:len(b)-1] }},
	{name: "null", raw: func([]byte) []byte { return []byte("null") }},
	{name: "empty object", raw: func([]byte) []byte { return []byte("{}") }},
	{name: "empty", raw: func([]byte) []byte { return nil }},
	{name: "upper-case hash", raw: func(b []byte) []byte {
		i := bytes.Index(b, []byte(`"dek_commitment":"`)) + len(`"dek_commitment":"`)
		return append(append(bytes.Clone(b[:i]), bytes.ToUpper(b[i:i+64])...), b[i+64:]...)
	}},
	{name: "short hash", raw: func(b []byte) []byte {
		i := bytes.Index(b, []byte(`"dek_commitment":"`)) + len(`"dek_commitment":"`)
		return append(bytes.Clone(b[:i]), b[i+1:]...)
	}},
	{name: "schema", edit: func(m *Manifest) { m.Schema = "tgsp.manifest.v2" }},
	{name: "suite", edit: func(m *Manifest) { m.Suite = "AES-128-GCM" }},
	{name: "empty name", edit: func(m *Manifest) { m.Name = "" }},
	{name: "name with slash", edit: func(m *Manifest) { m.Name = "a/b" }},
	{name: "name too long", edit: func(m *Manifest) { m.Name = strings.Repeat("n", 129) }},
	{name: "version with v", edit: func(m *Manifest) { m.Version = "v1.2.3" }},
	{name: "chunk size", edit: func(m *Manifest) { m.ChunkSize = 1 << 20 }},
	{name: "shard size", edit: func(m *Manifest) { m.ShardSize = ShardSize - 1 }},
	{name: "publisher key id upper", edit: func(m *Manifest) { m.PublisherKeyID = strings.ToUpper(m.PublisherKeyID) }},
	{name: "publisher key id short", edit: func(m *Manifest) { m.PublisherKeyID = m.PublisherKeyID[1:] }},
	{name: "zero created_at", edit: func(m *Manifest) { m.CreatedAt = time.Time{} }},
	{name: "expires at creation", edit: func(m *Manifest) { m.ExpiresAt = m.CreatedAt }},
	{name: "expires before creation", edit: func(m *Manifest) { m.ExpiresAt = m.CreatedAt.Add(-1) }},
	{name: "no device types", edit: func(m *Manifest) { m.DeviceTypes = nil }},
	{name: "device type upper", edit: func(m *Manifest) { m.DeviceTypes = []string{"RPi5"} }},
	{name: "evidence size 0", edit: func(m *Manifest) { m.Evidence = &DocRef{} }},
	{name: "dp_cert too large", edit: func(m *Manifest) { m.DPCert = &DocRef{Size: maxDocSize + 1} }},
	{name: "unsorted", edit: func(m *Manifest) { m.Files[0], m.Files[1] = m.Files[1], m.Files[0] }},
	{name: "duplicate", edit: func(m *Manifest) { m.Files[1] = m.Files[0]; m.PayloadSize = fzPayload(m.Files) }},
	{name: "dot-dot path", edit: func(m *Manifest) { m.Files[0].Path = "../a.txt" }},
	{name: "absolute path", edit: func(m *Manifest) { m.Files[0].Path = "/a.txt" }},
	{name: "empty component", edit: func(m *Manifest) { m.Files[0].Path = "a//b" }},
	{name: "backslash", edit: func(m *Manifest) { m.Files[0].Path = `a\b` }},
	{name: "inside a file", edit: func(m *Manifest) {
		e := m.Files[0]
		e.Path += "/x"
		m.Files = append([]Entry{m.Files[0], e}, m.Files[1:]...)
		m.PayloadSize = fzPayload(m.Files)
	}},
	{name: "dir with size", edit: func(m *Manifest) { m.Files[fzFirst(m, TypeDir)].Size = 1 }},
	{name: "dir with digest", edit: func(m *Manifest) { m.Files[fzFirst(m, TypeDir)].Digest = &Hash{} }},
	{name: "dir with shards", edit: func(m *Manifest) { m.Files[fzFirst(m, TypeDir)].Shards = []Hash{{}} }},
	{name: "file without digest", edit: func(m *Manifest) { m.Files[fzFirst(m, TypeFile)].Digest = nil }},
	{name: "file without shards", edit: func(m *Manifest) { m.Files[fzFirst(m, TypeFile)].Shards = nil }},
	{name: "file with two shards", edit: func(m *Manifest) {
		e := &m.Files[fzFirst(m, TypeFile)]
		e.Shards = append(e.Shards, Hash{})
	}},
	{name: "negative size", edit: func(m *Manifest) { m.Files[fzFirst(m, TypeFile)].Size = -1 }},
	{name: "huge size", edit: func(m *Manifest) {
		m.Files[fzFirst(m, TypeFile)].Size = math.MaxInt64
		m.PayloadSize = math.MaxInt64
	}},
	{name: "setuid mode", edit: func(m *Manifest) { m.Files[0].Mode = 0o4755 }},
	{name: "symlink type", edit: func(m *Manifest) { m.Files[0].Type = "symlink" }},
	{name: "payload size off by one", edit: func(m *Manifest) { m.PayloadSize++ }},
}

// fzSetString replaces the value of the first string field key in a JSON
// object.
func fzSetString(b []byte, key, v string) []byte {
	k := []byte(`"` + key + `":"`)
	i := bytes.Index(b, k) + len(k)
	j := i + bytes.IndexByte(b[i:], '"')
	return append(append(bytes.Clone(b[:i]), v...), b[j:]...)
}

func fzFirst(m *Manifest, typ string) int {
	for i, e := range m.Files {
		if e.Type == typ {
			return i
		}
	}
	panic("no entry of type " + typ)
}

func fzPayload(es []Entry) int64 {
	var n int64
	for _, e := range es {
		if e.Type == TypeFile {
			n += cipherSize(e.Size)
		}
	}
	return n
}

// fzManifestInputs applies fzManifestCases to the manifest of a real package
// (which has a directory and files).
func fzManifestInputs(t testing.TB, base []byte) (ins [][]byte, ok []bool, names []string) {
	t.Helper()
	for _, tc := range fzManifestCases {
		b := bytes.Clone(base)
		if tc.edit != nil {
			m, err := parseManifest(base)
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(m)
			if b, err = json.Marshal(m); err != nil {
				t.Fatal(err)
			}
		}
		if tc.raw != nil {
			b = tc.raw(b)
		}
		ins, ok, names = append(ins, b), append(ok, tc.ok), append(names, tc.name)
	}
	return ins, ok, names
}

func TestParseManifestCases(t *testing.T) {
	t.Parallel()
	seed := fzSeedPackages(t)[0]
	p, err := openBytes(seed.pkg)
	if err != nil {
		t.Fatal(err)
	}
	// What Pack writes is already canonical: re-marshalling changes nothing.
	if b, _ := json.Marshal(p.Manifest); !bytes.Equal(b, p.ManifestBytes) {
		t.Errorf("Pack's manifest is not what json.Marshal writes:\n%s\n%s", p.ManifestBytes, b)
	}
	ins, oks, names := fzManifestInputs(t, p.ManifestBytes)
	for i, in := range ins {
		_, err := parseManifest(in)
		switch {
		case oks[i] && err != nil:
			t.Errorf("%s: %v", names[i], err)
		case !oks[i] && !errors.Is(err, ErrMalformed):
			t.Errorf("%s: err = %v, want ErrMalformed", names[i], err)
		}
	}
}

func FuzzParseManifest(f *testing.F) {
	for i, s := range fzSeedPackages(f) {
		p, err := openBytes(s.pkg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p.ManifestBytes)
		if i == 0 { // the table's edits need its directory and files
			ins, _, _ := fzManifestInputs(f, p.ManifestBytes)
			for _, in := range ins {
				f.Add(in)
			}
		}
	}
	if gp, err := openBytes(goldenLoad(f).pkg); err == nil {
		f.Add(gp.ManifestBytes)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseManifest(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("parseManifest: %v, want ErrMalformed", err)
			}
			return
		}
		b2, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("accepted manifest does not marshal: %v", err)
		}
		m2, err := parseManifest(b2)
		if err != nil {
			t.Fatalf("re-marshalled manifest is refused: %v\n%s", err, b2)
		}
		if !reflect.DeepEqual(fzNormManifest(m), fzNormManifest(m2)) {
			t.Fatalf("manifest changed in a round trip:\n%+v\n%+v", m, m2)
		}
		if b3, _ := json.Marshal(m2); !bytes.Equal(b2, b3) {
			t.Fatalf("marshalling is not stable:\n%s\n%s", b2, b3)
		}
	})
}

func FuzzParseStanzas(f *testing.F) {
	for _, s := range fzSeedPackages(f) {
		_, body := fzSection(s.pkg, tagRecipients)
		f.Add(body)
		f.Add(body[:len(body)-1])
		f.Add(append(bytes.Clone(body), 0))
		if len(body) > 2+stanzaSize { // two stanzas claimed as one
			b := bytes.Clone(body)
			b[1] = 1
			f.Add(b)
		}
		for _, i := range []int{1, 2, 2 + 1 + keyIDSize, 2 + 1 + keyIDSize + 1, 2 + 1 + keyIDSize + 2 + stanzaEncSize + 1} {
			b := bytes.Clone(body)
			b[i] ^= 0x01
			f.Add(b)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte{0, 0})
	f.Add([]byte{0, 1})
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		sts, err := parseStanzas(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("parseStanzas: %v, want ErrMalformed", err)
			}
			return
		}
		if len(sts) < 1 || len(sts) > maxStanzas {
			t.Fatalf("accepted %d stanzas", len(sts))
		}
		if got := encodeStanzas(sts); !bytes.Equal(got, b) {
			t.Fatal("stanzas do not re-encode to the same bytes")
		}
		for _, st := range sts {
			if len(st.enc) != stanzaEncSize || len(st.ct) != stanzaCTSize {
				t.Fatalf("stanza with enc %d ct %d bytes", len(st.enc), len(st.ct))
			}
		}
	})
}

func FuzzParseKeyFiles(f *testing.F) {
	for _, b := range fzKeyPEMs() {
		f.Add(b)
	}
	for _, b := range fzBadKeyFiles(f) {
		f.Add(b)
	}
	f.Add(sharedKeys.other.MarshalPEM())
	f.Add(sharedKeys.rcpt2.Public().MarshalPEM())
	f.Fuzz(func(t *testing.T, data []byte) {
		accepted := 0
		for _, p := range fzKeyParsers {
			k, err := p.parse(data)
			if err != nil {
				if !errors.Is(err, ErrKey) {
					t.Fatalf("%s: %v, want ErrKey", p.kind, err)
				}
				continue
			}
			accepted++
			out := k.MarshalPEM()
			k2, err := p.parse(out)
			if err != nil {
				t.Fatalf("%s: re-marshalled key is refused: %v", p.kind, err)
			}
			if !bytes.Equal(k2.MarshalPEM(), out) {
				t.Fatalf("%s: key changed in a round trip", p.kind)
			}
			// Same key: the PEM body of the input is the canonical body.
			if in, canon := fzPEMBody(data), fzPEMBody(out); !bytes.Equal(in, canon) {
				t.Fatalf("%s: accepted body %x re-marshals as %x", p.kind, in, canon)
			}
		}
		if accepted > 1 {
			t.Fatalf("%d key kinds accept the same file", accepted)
		}
	})
}

func fzPEMBody(b []byte) []byte {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil
	}
	return blk.Bytes
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range fzVersionValid {
		f.Add(s)
	}
	for _, s := range fzVersionInvalid {
		f.Add(s)
	}
	var refs []Version
	for _, s := range fzVersionValid {
		v, err := ParseVersion(s)
		if err != nil {
			f.Fatal(err)
		}
		refs = append(refs, v)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err != nil {
			return
		}
		if v.String() != s {
			t.Fatalf("ParseVersion(%q).String() = %q", s, v.String())
		}
		v2, err := ParseVersion(v.String())
		if err != nil || !reflect.DeepEqual(v, v2) || v.Compare(v2) != 0 {
			t.Fatalf("%q does not round-trip: %+v, %+v, %v", s, v, v2, err)
		}
		for _, r := range refs {
			if c := v.Compare(r); c != -r.Compare(v) || c < -1 || c > 1 {
				t.Fatalf("Compare(%s, %s) = %d but Compare(%s, %s) = %d", v, r, c, r, v, r.Compare(v))
			}
		}
		// Build metadata never changes precedence.
		nb := v
		nb.Build = ""
		if v.Compare(nb) != 0 {
			t.Fatalf("%s differs from %s in precedence", v, nb)
		}
	})
}

// fzPathCases are entry paths ValidPath must accept (ok) or refuse.
var fzPathCases = []struct {
	p  string
	ok bool
}{
	{"a", true}, {"a/b", true}, {"model/weights.bin", true}, {".hidden", true}, {"...", true},
	{"..a", true}, {"a..", true}, {"a.", true}, {"a b", true}, {"ü/ñ", true}, {"~", true}, {"C:", true},
	{"a:b", true}, {"-", true}, {strings.Repeat("a", 255), true},
	{strings.Repeat(strings.Repeat("a", 127)+"/", 31) + strings.Repeat("a", 128), true}, // 4096 bytes

	{"", false}, {".", false}, {"..", false}, {"../a", false}, {"a/..", false}, {"a/../b", false},
	{"a/./b", false}, {"./a", false}, {"/a", false}, {"/", false}, {"//a", false}, {"a/", false},
	{"a//b", false}, {`a\b`, false}, {`..\a`, false}, {"a\x00b", false}, {"a\nb", false}, {"\x1f", false},
	{"\x7f", false}, {"\xff", false}, {"a/\xc0\xaf", false}, {strings.Repeat("a", 256), false},
	{strings.Repeat("a/", 2048) + "a", false}, {"a/" + strings.Repeat("b", 256), false},
}

func TestValidPathCases(t *testing.T) {
	t.Parallel()
	for _, tc := range fzPathCases {
		err := ValidPath(tc.p)
		switch {
		case tc.ok && err != nil:
			t.Errorf("ValidPath(%q): %v", tc.p, err)
		case !tc.ok && !errors.Is(err, ErrUnsafePath):
			t.Errorf("ValidPath(%q) = %v, want ErrUnsafePath", tc.p, err)
		}
	}
}

func FuzzValidPath(f *testing.F) {
	for _, tc := range fzPathCases {
		f.Add(tc.p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if err := ValidPath(p); err != nil {
			if !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("ValidPath(%q) = %v, want ErrUnsafePath", p, err)
			}
			return
		}
		j := filepath.Clean(filepath.Join("/base", p))
		if !strings.HasPrefix(j, "/base/") || j != "/base/"+p {
			t.Fatalf("ValidPath accepted %q, which joins to %q", p, j)
		}
		if !filepath.IsLocal(p) || path.Clean(p) != p || !utf8.ValidString(p) || len(p) > maxPathLen {
			t.Fatalf("ValidPath accepted %q (IsLocal %v, Clean %q)", p, filepath.IsLocal(p), path.Clean(p))
		}
		for _, c := range strings.Split(p, "/") {
			if c == "." || c == ".." || c == "" || len(c) > maxNameLen || strings.ContainsAny(c, "\\\x00") {
				t.Fatalf("ValidPath accepted %q with component %q", p, c)
			}
		}
	})
}

func FuzzParseDPCert(f *testing.F) {
	for _, tc := range fzDPCertCases {
		f.Add(tc.doc(f, fzDPCertValid))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseDPCert(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseDPCert: %v, want ErrMalformed", err)
			}
			return
		}
		if !(c.Epsilon > 0) || math.IsInf(c.Epsilon, 0) || !(c.Delta > 0 && c.Delta < 1) ||
			!(c.SamplingRate > 0 && c.SamplingRate <= 1) || c.Steps <= 0 || c.DatasetSize <= 0 {
			t.Fatalf("accepted an out-of-range certificate: %+v", c)
		}
		b2, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := ParseDPCert(b2)
		if err != nil {
			t.Fatalf("re-marshalled certificate is refused: %v\n%s", err, b2)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("certificate changed in a round trip:\n%+v\n%+v", c, c2)
		}
	})
}

func FuzzParseEvidence(f *testing.F) {
	for _, tc := range fzEvidenceCases {
		f.Add(tc.doc(f, fzEvidenceValid))
	}
	f.Add([]byte(goldenEvidence))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEvidence(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseEvidence: %v, want ErrMalformed", err)
			}
			return
		}
		b2, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		e2, err := ParseEvidence(b2)
		if err != nil {
			t.Fatalf("re-marshalled evidence is refused: %v\n%s", err, b2)
		}
		if b3, _ := json.Marshal(e2); !bytes.Equal(b2, b3) {
			t.Fatalf("evidence changed in a round trip:\n%s\n%s", b2, b3)
		}
	})
}
