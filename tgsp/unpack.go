package tgsp

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// UnpackOptions tune Unpack.
type UnpackOptions struct {
	// Workers is the number of shards decrypted in parallel (GOMAXPROCS if
	// zero). Memory use is about two chunk buffers per worker.
	Workers int
	// Sync makes every file and directory durable before the final rename.
	Sync bool
	// CheckDigests re-reads each written file and checks its keyed plaintext
	// digest. Integrity does not depend on it (every chunk is authenticated
	// under the committed DEK and every shard hash is checked); it is a
	// second, independent check, at the cost of one more pass.
	CheckDigests bool
}

// Unpack decrypts the package into the directory out. Nothing appears at out
// unless every shard hash matched and every chunk authenticated: the tree is
// built in a hidden staging directory beside out and renamed into place at
// the end. On failure out does not exist afterwards. out must not exist, or
// be an empty directory (which is replaced).
func (p *Package) Unpack(ctx context.Context, dek *DEK, out string, opts UnpackOptions) (err error) {
	if p.verified == nil {
		return fmt.Errorf("unpack: %w", ErrNotVerified)
	}
	if _, err := p.acceptDEK(dek.key[:]); err != nil {
		return err
	}
	out = filepath.Clean(out)
	replaceEmpty, err := checkOutput(out)
	if err != nil {
		return err
	}
	parent := filepath.Dir(out)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("create parent of %s: %w", out, err)
	}
	staging, err := os.MkdirTemp(parent, ".tgsp-unpack-*")
	if err != nil {
		return fmt.Errorf("create staging directory: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(staging)
			if replaceEmpty {
				os.Remove(out) // the contract: no OUT_DIR after a failure
			}
		}
	}()
	root, err := os.OpenRoot(staging)
	if err != nil {
		return err
	}
	defer root.Close()

	if err := p.createTree(root); err != nil {
		return err
	}
	if err := p.decryptAll(ctx, root, dek, opts.Workers); err != nil {
		return err
	}
	if opts.CheckDigests {
		if err := p.checkDigests(root, dek); err != nil {
			return err
		}
	}
	if err := p.finishTree(root, opts.Sync); err != nil {
		return err
	}
	if err := os.Chmod(staging, 0o755); err != nil {
		return err
	}
	if replaceEmpty {
		if err := os.Remove(out); err != nil {
			return fmt.Errorf("replace empty %s: %w", out, err)
		}
	}
	if err := os.Rename(staging, out); err != nil {
		return fmt.Errorf("move unpacked tree into place: %w", err)
	}
	if opts.Sync {
		return syncDir(parent)
	}
	return nil
}

// checkOutput accepts a missing path or an empty directory, and reports
// whether out is an existing empty directory.
func checkOutput(out string) (bool, error) {
	fi, err := os.Lstat(out)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("%w: %s exists and is not a directory", ErrOutputExists, out)
	}
	des, err := os.ReadDir(out)
	if err != nil {
		return false, err
	}
	if len(des) > 0 {
		return false, fmt.Errorf("%w: %s is not empty", ErrOutputExists, out)
	}
	return true, nil
}

// createTree makes every directory (0700 for now) and every file, empty and
// truncated to its final size, so workers only ever open existing files.
func (p *Package) createTree(root *os.Root) error {
	for _, e := range p.Manifest.Files {
		if dir := parentOf(e.Path); dir != "" {
			// Parents the manifest does not list get 0755; listed ones get
			// their own mode in finishTree.
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("create %s: %w", dir, err)
			}
		}
		switch e.Type {
		case TypeDir:
			if err := root.Mkdir(e.Path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("create %s: %w", e.Path, err)
			}
		case TypeFile:
			f, err := root.OpenFile(e.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("create %s: %w", e.Path, err)
			}
			err = f.Truncate(e.Size)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("size %s: %w", e.Path, err)
			}
		}
	}
	return nil
}

// decryptAll checks and decrypts every shard in parallel. Each worker owns
// one ciphertext and one plaintext buffer.
func (p *Package) decryptAll(ctx context.Context, root *os.Root, dek *DEK, workers int) error {
	n := max(workers, runtime.GOMAXPROCS(0))
	cts := make([][]byte, n)
	pts := make([][]byte, n)
	return runJobs(ctx, interleaveFiles(p.jobs()), workers, func(w int, j shardJob) error {
		if cts[w] == nil {
			cts[w] = make([]byte, CipherChunkSize)
			pts[w] = make([]byte, 0, ChunkSize)
		}
		return p.decryptShard(root, dek, j, cts[w], pts[w])
	})
}

// interleaveFiles reorders jobs (in package order) so that consecutive jobs
// belong to different files where possible: Linux filesystems serialize
// buffered writes to one inode, so two workers writing two files go faster
// than two workers writing one (measured by hack/tgspbench). The order
// within each file is kept, so the reported failure stays deterministic.
func interleaveFiles(jobs []shardJob) []shardJob {
	var perFile [][]shardJob
	for i, j := range jobs {
		if i == 0 || j.file != jobs[i-1].file {
			perFile = append(perFile, nil)
		}
		perFile[len(perFile)-1] = append(perFile[len(perFile)-1], j)
	}
	out := make([]shardJob, 0, len(jobs))
	for len(out) < len(jobs) {
		for i, f := range perFile {
			if len(f) > 0 {
				out = append(out, f[0])
				perFile[i] = f[1:]
			}
		}
	}
	return out
}

var zeroChunk [ChunkSize]byte

func (p *Package) decryptShard(root *os.Root, dek *DEK, j shardJob, ctBuf, ptBuf []byte) error {
	e := &p.Manifest.Files[j.file]
	aead, err := dek.fileAEAD(j.file)
	if err != nil {
		return err
	}
	f, err := root.OpenFile(e.Path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	total := chunkCount(e.Size)
	var nonce [12]byte
	var decErr error
	for off, c := int64(0), j.chunk; off < j.size; c++ {
		n := min(int64(CipherChunkSize), j.size-off)
		ct := ctBuf[:n]
		if _, err := p.r.ReadAt(ct, j.off+off); err != nil {
			return fmt.Errorf("read %s: %w", e.Path, err)
		}
		off += n
		h.Write(ct)
		if decErr != nil {
			continue // keep hashing: a hash mismatch is the better diagnosis
		}
		chunkNonce(&nonce, uint64(c), c == total-1)
		pt, err := aead.Open(ptBuf[:0], nonce[:], ct, nil)
		if err != nil {
			decErr = fmt.Errorf("%w: file %s chunk %d failed authentication", ErrDecrypt, e.Path, c)
			continue
		}
		// Chunks of zeros are left as holes: the file was truncated to its
		// size, so sparse inputs stay sparse and reads see the same bytes.
		if bytes.Equal(pt, zeroChunk[:len(pt)]) {
			continue
		}
		if _, err := f.WriteAt(pt, c*ChunkSize); err != nil {
			return fmt.Errorf("write %s: %w", e.Path, err)
		}
	}
	var got Hash
	h.Sum(got[:0])
	if got != e.Shards[j.shard] {
		return &ShardError{Path: e.Path, Shard: j.shard}
	}
	if decErr != nil {
		return decErr
	}
	return f.Close()
}

func (p *Package) checkDigests(root *os.Root, dek *DEK) error {
	buf := make([]byte, 1<<20)
	for _, e := range p.Manifest.Files {
		if e.Type != TypeFile {
			continue
		}
		f, err := root.Open(e.Path)
		if err != nil {
			return err
		}
		mac := dek.digestMAC()
		_, err = io.CopyBuffer(mac, f, buf)
		f.Close()
		if err != nil {
			return fmt.Errorf("read back %s: %w", e.Path, err)
		}
		if !hmac.Equal(mac.Sum(nil), e.Digest[:]) {
			return fmt.Errorf("%w: file %s does not match its plaintext digest", ErrDecrypt, e.Path)
		}
	}
	return nil
}

// finishTree applies the recorded permission bits, deepest entries first so
// a read-only directory never blocks its children, and optionally syncs.
func (p *Package) finishTree(root *os.Root, sync bool) error {
	files := p.Manifest.Files
	for i := len(files) - 1; i >= 0; i-- {
		e := files[i]
		if sync {
			if err := syncIn(root, e.Path); err != nil {
				return err
			}
		}
		if err := root.Chmod(e.Path, fs.FileMode(e.Mode)); err != nil {
			return fmt.Errorf("chmod %s: %w", e.Path, err)
		}
	}
	if sync {
		return syncIn(root, ".")
	}
	return nil
}

func syncIn(root *os.Root, name string) error {
	f, err := root.Open(name)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// fileReader decrypts one file sequentially, checking shard hashes and the
// keyed digest as it goes.
type fileReader struct {
	p     *Package
	e     *Entry
	aead  cipher.AEAD
	off   int64 // absolute offset of the next chunk
	chunk int64
	total int64
	shard hash.Hash
	mac   hash.Hash
	ct    []byte
	pt    []byte
	ready []byte
	err   error
}

// OpenFile returns a reader of the plaintext of the file at path, for
// consumers that must keep plaintext off disk (the agent loads models this
// way). Every chunk is authenticated before it is returned; shard hashes
// and the keyed plaintext digest are checked as reading proceeds, so the
// content is proven whole only when Read returns io.EOF: a consumer must
// not use what it read if Read returns any other error.
func (p *Package) OpenFile(dek *DEK, path string) (io.Reader, error) {
	if p.verified == nil {
		return nil, fmt.Errorf("open file: %w", ErrNotVerified)
	}
	if _, err := p.acceptDEK(dek.key[:]); err != nil {
		return nil, err
	}
	i := p.Manifest.Lookup(path)
	if i < 0 || p.Manifest.Files[i].Type != TypeFile {
		return nil, fmt.Errorf("open file: %s: %w", path, fs.ErrNotExist)
	}
	aead, err := dek.fileAEAD(i)
	if err != nil {
		return nil, err
	}
	e := &p.Manifest.Files[i]
	return &fileReader{p: p, e: e, aead: aead, off: p.fileOffsets()[i], total: chunkCount(e.Size),
		shard: sha256.New(), mac: dek.digestMAC(),
		ct: make([]byte, CipherChunkSize), pt: make([]byte, 0, ChunkSize)}, nil
}

func (r *fileReader) Read(b []byte) (int, error) {
	for len(r.ready) == 0 && r.err == nil {
		r.err = r.next()
	}
	if len(r.ready) > 0 {
		n := copy(b, r.ready)
		r.ready = r.ready[n:]
		return n, nil
	}
	return 0, r.err
}

// next decrypts the next chunk into r.ready, or returns io.EOF after the
// final checks.
func (r *fileReader) next() error {
	if r.chunk == r.total {
		var d Hash
		r.mac.Sum(d[:0])
		if !hmac.Equal(d[:], r.e.Digest[:]) {
			return fmt.Errorf("%w: file %s does not match its plaintext digest", ErrDecrypt, r.e.Path)
		}
		return io.EOF
	}
	n := int64(CipherChunkSize)
	if r.chunk == r.total-1 {
		n = cipherSize(r.e.Size) - r.chunk*CipherChunkSize
	}
	ct := r.ct[:n]
	if _, err := r.p.r.ReadAt(ct, r.off); err != nil {
		return fmt.Errorf("read %s: %w", r.e.Path, err)
	}
	r.shard.Write(ct)
	var nonce [12]byte
	chunkNonce(&nonce, uint64(r.chunk), r.chunk == r.total-1)
	pt, err := r.aead.Open(r.pt[:0], nonce[:], ct, nil)
	if err != nil {
		return fmt.Errorf("%w: file %s chunk %d failed authentication", ErrDecrypt, r.e.Path, r.chunk)
	}
	r.off += n
	r.chunk++
	if r.chunk%ChunksPerShard == 0 || r.chunk == r.total {
		s := int((r.chunk - 1) / ChunksPerShard)
		var got Hash
		r.shard.Sum(got[:0])
		r.shard.Reset()
		if got != r.e.Shards[s] {
			return &ShardError{Path: r.e.Path, Shard: s}
		}
	}
	r.mac.Write(pt)
	r.ready = pt
	return nil
}
