package tgsp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"hash"
)

// Payload encryption (SPEC.md §4). Each file is its own age-style STREAM:
// AES-256-GCM over 64 KiB plaintext chunks, nonce = 11-byte big-endian chunk
// counter || 1-byte last-chunk flag, under a per-file key derived from the
// DEK. Truncating, reordering, moving chunks between files, or appending data
// therefore all fail authentication.
const (
	// ChunkSize is the plaintext size of every chunk but the last.
	ChunkSize = 64 << 10
	tagSize   = 16
	// CipherChunkSize is the stored size of a full chunk.
	CipherChunkSize = ChunkSize + tagSize
	// ChunksPerShard is how many chunks one manifest shard hash covers.
	ChunksPerShard = 64
	// ShardSize is the stored (ciphertext) size of a full shard.
	ShardSize = ChunksPerShard * CipherChunkSize

	dekSize = 32
)

// HKDF labels, fixed by the spec.
const (
	hkdfSalt         = "tgsp/v1"
	infoFileKey      = "tgsp/v1 payload key "
	infoDigestKey    = "tgsp/v1 file digest key"
	commitmentPrefix = "tgsp/v1 dek commitment"
)

// DEK is a package's data-encryption key. It never appears in a package
// unwrapped; the signed manifest holds only a commitment to it.
type DEK struct {
	key [dekSize]byte
	prk []byte
}

func newDEK(b []byte) (*DEK, error) {
	if len(b) != dekSize {
		return nil, fmt.Errorf("%w: DEK is %d bytes, want %d", ErrDecrypt, len(b), dekSize)
	}
	d := &DEK{}
	copy(d.key[:], b)
	prk, err := hkdf.Extract(sha256.New, d.key[:], []byte(hkdfSalt))
	if err != nil {
		return nil, err
	}
	d.prk = prk
	return d, nil
}

func generateDEK() (*DEK, error) {
	var b [dekSize]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	return newDEK(b[:])
}

// Commitment is SHA-256("tgsp/v1 dek commitment" || DEK): binding, so no
// recipient can be handed a second key that also passes, and hiding since the
// DEK is 256 uniformly random bits.
func (d *DEK) Commitment() Hash {
	h := sha256.New()
	h.Write([]byte(commitmentPrefix))
	h.Write(d.key[:])
	var out Hash
	h.Sum(out[:0])
	return out
}

// fileAEAD returns the AES-256-GCM instance for the file at index i in the
// manifest's file list.
func (d *DEK) fileAEAD(i int) (cipher.AEAD, error) {
	k, err := hkdf.Expand(sha256.New, d.prk, fmt.Sprintf("%s%d", infoFileKey, i), 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// digestMAC returns the keyed hash used for files' plaintext digests.
func (d *DEK) digestMAC() hash.Hash {
	k, err := hkdf.Expand(sha256.New, d.prk, infoDigestKey, 32)
	if err != nil {
		panic(err) // only fails for lengths over 255*32
	}
	return hmac.New(sha256.New, k)
}

// Equal reports whether two DEKs are the same key, in constant time.
func (d *DEK) Equal(o *DEK) bool { return subtle.ConstantTimeCompare(d.key[:], o.key[:]) == 1 }

// chunkNonce writes the STREAM nonce for chunk n into dst.
func chunkNonce(dst *[12]byte, n uint64, last bool) {
	// 11-byte counter: the top 3 bytes are always zero for any file this
	// format can describe (2^64 chunks > any int64 size).
	clear(dst[:3])
	binary.BigEndian.PutUint64(dst[3:11], n)
	dst[11] = 0
	if last {
		dst[11] = 1
	}
}

// chunkCount is the number of STREAM chunks for size plaintext bytes: an
// empty file is one empty final chunk.
func chunkCount(size int64) int64 {
	if size == 0 {
		return 1
	}
	return (size + ChunkSize - 1) / ChunkSize
}

// cipherSize is the stored size of size plaintext bytes.
func cipherSize(size int64) int64 { return size + chunkCount(size)*tagSize }

// shardCount is the number of shards covering a file's ciphertext.
func shardCount(size int64) int64 { return (chunkCount(size) + ChunksPerShard - 1) / ChunksPerShard }
