package tgsp

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Container layout (SPEC.md §2):
//
//	header   16 bytes   magic "\x89TGSP\r\n\x1a", u16 version=1, u16 flags=0, u32 reserved=0
//	payload  the files' ciphertexts, in manifest order
//	sections tag[4] || u64 length || body, in this order:
//	         MNFS manifest, EVID evidence (optional), DPCT dp_cert (optional),
//	         SIGN composite signature, RCPT recipient stanzas
//	trailer  24 bytes   u64 offset of the first section, u64 file size, "TGSP-END"
//
// All integers are big-endian. The signature covers header || manifest; the
// manifest covers the payload (shard hashes), the documents (SHA-256) and
// the DEK (commitment). Everything else is either derived from signed data
// and checked for equality (trailer, section lengths), or deliberately
// unsigned (recipient stanzas, so keys can be granted without re-signing).
const (
	headerSize    = 16
	trailerSize   = 24
	sectionHdr    = 12
	FormatVersion = 1
)

var (
	magic    = [8]byte{0x89, 'T', 'G', 'S', 'P', '\r', '\n', 0x1a}
	endMagic = [8]byte{'T', 'G', 'S', 'P', '-', 'E', 'N', 'D'}
)

type sectionTag [4]byte

var (
	tagManifest   = sectionTag{'M', 'N', 'F', 'S'}
	tagEvidence   = sectionTag{'E', 'V', 'I', 'D'}
	tagDPCert     = sectionTag{'D', 'P', 'C', 'T'}
	tagSignature  = sectionTag{'S', 'I', 'G', 'N'}
	tagRecipients = sectionTag{'R', 'C', 'P', 'T'}
)

func headerBytes() []byte {
	h := make([]byte, headerSize)
	copy(h, magic[:])
	binary.BigEndian.PutUint16(h[8:], FormatVersion)
	return h
}

func parseHeader(h []byte) error {
	if !bytes.Equal(h[:8], magic[:]) {
		return malformed("not a TGSP package (bad magic)")
	}
	if v := binary.BigEndian.Uint16(h[8:]); v != FormatVersion {
		return malformed("format version %d is not supported (this build reads %d)", v, FormatVersion)
	}
	if binary.BigEndian.Uint16(h[10:]) != 0 || binary.BigEndian.Uint32(h[12:]) != 0 {
		return malformed("header flags or reserved bytes are not zero")
	}
	return nil
}

// signedMessage is M, the message the composite signature covers.
func signedMessage(manifest []byte) []byte {
	m := make([]byte, 0, headerSize+len(manifest))
	m = append(m, headerBytes()...)
	return append(m, manifest...)
}

// PackageID is SHA-256(header || manifest): it names a package's signed
// content and binds recipient stanzas to it.
func packageID(manifest []byte) [32]byte { return sha256.Sum256(signedMessage(manifest)) }

func writeSection(w io.Writer, tag sectionTag, body []byte) error {
	var h [sectionHdr]byte
	copy(h[:4], tag[:])
	binary.BigEndian.PutUint64(h[4:], uint64(len(body)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

func trailerBytes(sectionsOff, fileSize int64) []byte {
	t := make([]byte, trailerSize)
	binary.BigEndian.PutUint64(t[0:], uint64(sectionsOff))
	binary.BigEndian.PutUint64(t[8:], uint64(fileSize))
	copy(t[16:], endMagic[:])
	return t
}

// Package is an opened TGSP file. Open checks structure only: until
// VerifySignature succeeds, nothing in it is trusted, and the methods that
// yield plaintext refuse to run.
type Package struct {
	r    io.ReaderAt
	size int64

	// Manifest is the parsed manifest. Unverified until VerifySignature.
	Manifest *Manifest
	// ManifestBytes are the manifest exactly as stored (and signed).
	ManifestBytes []byte
	// EvidenceJSON and DPCertJSON are the attached documents, or nil.
	EvidenceJSON []byte
	DPCertJSON   []byte

	signature []byte
	stanzas   []stanza
	verified  *SignerPublicKey
}

// ID returns the package id, SHA-256(header || manifest), hex encoded.
func (p *Package) ID() string { return Hash(packageID(p.ManifestBytes)).String() }

// Size is the package's length in bytes.
func (p *Package) Size() int64 { return p.size }

// payloadOffset is where file i's ciphertext starts; filled by Open.
func (p *Package) fileOffsets() []int64 {
	offs := make([]int64, len(p.Manifest.Files))
	off := int64(headerSize)
	for i, e := range p.Manifest.Files {
		offs[i] = off
		if e.Type == TypeFile {
			off += cipherSize(e.Size)
		}
	}
	return offs
}

// Open parses the structure of a package of the given size. It reads only
// the header, the sections and the trailer, never the payload, and bounds
// every allocation.
func Open(r io.ReaderAt, size int64) (*Package, error) {
	if size < headerSize+trailerSize {
		return nil, malformed("%d bytes is too short for a package", size)
	}
	var hdr [headerSize]byte
	if err := readAt(r, hdr[:], 0, "header"); err != nil {
		return nil, err
	}
	if err := parseHeader(hdr[:]); err != nil {
		return nil, err
	}
	var tr [trailerSize]byte
	if err := readAt(r, tr[:], size-trailerSize, "trailer"); err != nil {
		return nil, err
	}
	if !bytes.Equal(tr[16:], endMagic[:]) {
		return nil, malformed("bad trailer magic (truncated or extended file?)")
	}
	if fs := binary.BigEndian.Uint64(tr[8:]); fs != uint64(size) {
		return nil, malformed("trailer records a file of %d bytes, file has %d (truncated or extended?)", fs, size)
	}
	secOff := binary.BigEndian.Uint64(tr[0:])
	end := uint64(size - trailerSize)
	if secOff < headerSize || secOff > end {
		return nil, malformed("trailer section offset %d out of range", secOff)
	}

	p := &Package{r: r, size: size}
	order := []struct {
		tag      sectionTag
		optional bool
		max      uint64
		dst      *[]byte
	}{
		{tagManifest, false, maxManifestSize, &p.ManifestBytes},
		{tagEvidence, true, maxDocSize, &p.EvidenceJSON},
		{tagDPCert, true, maxDocSize, &p.DPCertJSON},
		{tagSignature, false, SignatureSize, &p.signature},
		{tagRecipients, false, maxStanzaSection, nil},
	}
	var rcpt []byte
	off := secOff
	for _, want := range order {
		if end-off < sectionHdr {
			return nil, malformed("section %s missing", want.tag[:])
		}
		var sh [sectionHdr]byte
		if err := readAt(r, sh[:], int64(off), "section header"); err != nil {
			return nil, err
		}
		if sectionTag(sh[:4]) != want.tag {
			if want.optional {
				continue
			}
			return nil, malformed("expected section %s at offset %d, found %q", want.tag[:], off, sh[:4])
		}
		n := binary.BigEndian.Uint64(sh[4:])
		if n > want.max || n > end-off-sectionHdr {
			return nil, malformed("section %s length %d out of range", want.tag[:], n)
		}
		body := make([]byte, n)
		if err := readAt(r, body, int64(off+sectionHdr), "section "+string(want.tag[:])); err != nil {
			return nil, err
		}
		if want.dst != nil {
			*want.dst = body
		} else {
			rcpt = body
		}
		off += sectionHdr + n
	}
	if off != end {
		return nil, malformed("%d unexpected bytes between the last section and the trailer", end-off)
	}

	m, err := parseManifest(p.ManifestBytes)
	if err != nil {
		return nil, err
	}
	p.Manifest = m
	if uint64(m.PayloadSize) != secOff-headerSize {
		return nil, malformed("manifest payload_size %d, but the payload region is %d bytes", m.PayloadSize, secOff-headerSize)
	}
	if err := checkDoc("evidence.json", m.Evidence, p.EvidenceJSON); err != nil {
		return nil, err
	}
	if err := checkDoc("dp_cert.json", m.DPCert, p.DPCertJSON); err != nil {
		return nil, err
	}
	if p.EvidenceJSON != nil {
		if _, err := ParseEvidence(p.EvidenceJSON); err != nil {
			return nil, err
		}
	}
	if p.DPCertJSON != nil {
		if _, err := ParseDPCert(p.DPCertJSON); err != nil {
			return nil, err
		}
	}
	if len(p.signature) != SignatureSize {
		return nil, malformed("signature section is %d bytes, want %d", len(p.signature), SignatureSize)
	}
	if p.stanzas, err = parseStanzas(rcpt); err != nil {
		return nil, err
	}
	return p, nil
}

// readAt reads exactly len(b) bytes at off; running out of data means the
// package is shorter than its caller said, which is malformed.
func readAt(r io.ReaderAt, b []byte, off int64, what string) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return malformed("%s: package ends early (truncated, or a wrong size given)", what)
	}
	return fmt.Errorf("read %s: %w", what, err)
}

func checkDoc(name string, ref *DocRef, body []byte) error {
	switch {
	case ref == nil && body == nil:
		return nil
	case ref == nil:
		return malformed("%s is attached but not named in the manifest", name)
	case body == nil:
		return malformed("manifest names %s but it is not attached", name)
	case int64(len(body)) != ref.Size || sha256.Sum256(body) != ref.SHA256:
		return malformed("%s does not match its size and hash in the manifest", name)
	}
	return nil
}
