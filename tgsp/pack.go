package tgsp

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"time"
)

// DefaultValidity is how long a package is valid when PackOptions.ExpiresAt
// is zero.
const DefaultValidity = 365 * 24 * time.Hour

// PackOptions describe the package to build.
type PackOptions struct {
	Name        string
	Version     string
	DeviceTypes []string  // default: any ("*")
	CreatedAt   time.Time // default: now
	ExpiresAt   time.Time // default: CreatedAt + DefaultValidity
	// Evidence and DPCert are the optional attached documents; they are
	// validated against their schemas.
	Evidence []byte
	DPCert   []byte
	Signer   *SignerPrivateKey
	// Recipients receive the DEK; at least one is required.
	Recipients []*RecipientPublicKey
}

// scanDir lists the regular files and directories of fsys. Symlinks,
// devices, sockets and pipes are refused, as are names that ValidPath
// rejects.
func scanDir(fsys fs.FS) ([]Entry, error) {
	var out []Entry
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		if err := ValidPath(p); err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch t := d.Type(); {
		case t.IsDir():
			out = append(out, Entry{Path: p, Type: TypeDir, Mode: uint32(info.Mode().Perm())})
		case t.IsRegular():
			out = append(out, Entry{Path: p, Type: TypeFile, Mode: uint32(info.Mode().Perm()), Size: info.Size()})
		case t&fs.ModeSymlink != 0:
			return fmt.Errorf("%w: %s is a symbolic link", ErrUnsafePath, p)
		default:
			return fmt.Errorf("%w: %s is not a regular file or directory (%s)", ErrUnsafePath, p, t)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func (o *PackOptions) fill() error {
	if o.Signer == nil {
		return errors.New("pack: a signer key is required")
	}
	if len(o.Recipients) == 0 {
		return errors.New("pack: at least one recipient is required")
	}
	if len(o.Recipients) > maxStanzas {
		return fmt.Errorf("pack: %d recipients exceed the limit of %d", len(o.Recipients), maxStanzas)
	}
	if len(o.DeviceTypes) == 0 {
		o.DeviceTypes = []string{AnyDeviceType}
	}
	if o.CreatedAt.IsZero() {
		o.CreatedAt = time.Now()
	}
	o.CreatedAt = o.CreatedAt.UTC().Truncate(time.Second)
	if o.ExpiresAt.IsZero() {
		o.ExpiresAt = o.CreatedAt.Add(DefaultValidity)
	}
	o.ExpiresAt = o.ExpiresAt.UTC().Truncate(time.Second)
	if o.Evidence != nil {
		if _, err := ParseEvidence(o.Evidence); err != nil {
			return err
		}
	}
	if o.DPCert != nil {
		if _, err := ParseDPCert(o.DPCert); err != nil {
			return err
		}
	}
	return nil
}

func docRef(b []byte) *DocRef {
	if b == nil {
		return nil
	}
	return &DocRef{Size: int64(len(b)), SHA256: sha256.Sum256(b)}
}

// Pack encrypts and signs the tree under dir and streams the package to w.
// Memory use is bounded by a few chunk buffers, whatever the input size.
// It returns the manifest it signed.
func Pack(w io.Writer, dir string, opts PackOptions) (*Manifest, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open input: %w", err)
	}
	defer root.Close()
	return PackFS(w, root.FS(), opts)
}

// PackFS is Pack over a file system instead of a directory: a caller that
// holds a model in memory (the trainer's export) packs it without writing
// its plaintext anywhere. fsys is read twice (listed, then each file
// streamed); a file whose size changes in between is an error.
func PackFS(w io.Writer, fsys fs.FS, opts PackOptions) (*Manifest, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	entries, err := scanDir(fsys)
	if err != nil {
		return nil, fmt.Errorf("scan input: %w", err)
	}
	dek, err := generateDEK()
	if err != nil {
		return nil, err
	}
	m := &Manifest{
		Schema:         ManifestSchema,
		Suite:          Suite,
		Name:           opts.Name,
		Version:        opts.Version,
		CreatedAt:      opts.CreatedAt,
		ExpiresAt:      opts.ExpiresAt,
		PublisherKeyID: opts.Signer.pub.KeyID(),
		DeviceTypes:    opts.DeviceTypes,
		ChunkSize:      ChunkSize,
		ShardSize:      ShardSize,
		DEKCommitment:  dek.Commitment(),
		Files:          entries,
		Evidence:       docRef(opts.Evidence),
		DPCert:         docRef(opts.DPCert),
	}
	// Validate everything that does not depend on the payload before doing
	// the expensive part, so a bad name or version fails at once.
	for _, e := range entries {
		if e.Type == TypeFile {
			m.PayloadSize += cipherSize(e.Size)
		}
	}
	if err := m.validateHead(); err != nil {
		return nil, err
	}

	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := bw.Write(headerBytes()); err != nil {
		return nil, err
	}
	enc := newChunkSealer()
	for i := range m.Files {
		e := &m.Files[i]
		if e.Type != TypeFile {
			continue
		}
		if err := enc.sealFile(bw, fsys, dek, i, e); err != nil {
			return nil, fmt.Errorf("pack %s: %w", e.Path, err)
		}
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("pack produced an invalid manifest: %w", err)
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	sig, err := opts.Signer.sign(signedMessage(mb))
	if err != nil {
		return nil, err
	}
	pkgID := packageID(mb)
	sts := make([]stanza, len(opts.Recipients))
	for i, r := range opts.Recipients {
		if sts[i], err = wrapDEK(dek, r, pkgID); err != nil {
			return nil, err
		}
	}
	secOff := int64(headerSize) + m.PayloadSize
	sections := []struct {
		tag  sectionTag
		body []byte
	}{{tagManifest, mb}, {tagEvidence, opts.Evidence}, {tagDPCert, opts.DPCert}, {tagSignature, sig}, {tagRecipients, encodeStanzas(sts)}}
	size := secOff
	for _, s := range sections {
		if s.body == nil {
			continue
		}
		if err := writeSection(bw, s.tag, s.body); err != nil {
			return nil, err
		}
		size += sectionHdr + int64(len(s.body))
	}
	if _, err := bw.Write(trailerBytes(secOff, size+trailerSize)); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	return m, nil
}

// validateHead checks the fields Pack knows before encrypting; digests and
// shard hashes are filled in later.
func (m *Manifest) validateHead() error {
	saved := m.Files
	m.Files = nil
	payload := m.PayloadSize
	m.PayloadSize = 0
	err := m.validate()
	m.Files, m.PayloadSize = saved, payload
	return err
}

// chunkSealer holds the buffers reused across files.
type chunkSealer struct {
	pt    []byte
	ct    []byte
	nonce [12]byte
}

func newChunkSealer() *chunkSealer {
	return &chunkSealer{pt: make([]byte, ChunkSize), ct: make([]byte, 0, CipherChunkSize)}
}

// sealFile encrypts entry i (already stat'ed) and fills its digest and shard
// hashes. A file whose size changes while it is read is an error.
func (s *chunkSealer) sealFile(w io.Writer, fsys fs.FS, dek *DEK, i int, e *Entry) error {
	f, err := fsys.Open(e.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return err
	} else if !fi.Mode().IsRegular() || fi.Size() != e.Size {
		return errors.New("file changed while packing")
	}
	aead, err := dek.fileAEAD(i)
	if err != nil {
		return err
	}
	mac := dek.digestMAC()
	shard := sha256.New()
	n := chunkCount(e.Size)
	e.Shards = make([]Hash, 0, shardCount(e.Size))
	remaining := e.Size
	for c := int64(0); c < n; c++ {
		want := min(remaining, ChunkSize)
		if _, err := io.ReadFull(f, s.pt[:want]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return errors.New("file changed while packing (shorter than when listed)")
			}
			return err
		}
		remaining -= want
		mac.Write(s.pt[:want])
		chunkNonce(&s.nonce, uint64(c), c == n-1)
		ct := aead.Seal(s.ct[:0], s.nonce[:], s.pt[:want], nil)
		shard.Write(ct)
		if _, err := w.Write(ct); err != nil {
			return err
		}
		if (c+1)%ChunksPerShard == 0 || c == n-1 {
			var h Hash
			shard.Sum(h[:0])
			e.Shards = append(e.Shards, h)
			shard.Reset()
		}
	}
	var one [1]byte
	if k, _ := f.Read(one[:]); k != 0 {
		return errors.New("file changed while packing (longer than when listed)")
	}
	var d Hash
	mac.Sum(d[:0])
	e.Digest = &d
	return nil
}
