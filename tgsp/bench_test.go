package tgsp

// Benchmarks of the payload paths, each measured against the work it cannot
// avoid, in the same run:
//
//	go test -run '^$' -bench . ./tgsp/
//
// Every benchmark reports x-baseline, baseline time / library time with the
// same number of goroutines (1.0: no overhead at all), next to MB/s. The
// baseline is the per-byte crypto over the same package bytes, held in
// memory: SHA-256 of each ciphertext chunk (one digest per shard) for
// verify, plus AES-256-GCM open for unpack. The package is held in memory
// too, so these isolate the library; hack/bench.sh (`make bench`) measures
// the tgsp binary end to end, with the page cache and process start-up.

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// benchSize is the plaintext of the benchmark package: one file, as a
// typical model package has one large weights file.
const benchSize = 64 << 20

var benchPkg struct {
	once sync.Once
	b    []byte
	err  error
}

// benchPackage returns the benchmark package, built once per test binary
// from random (incompressible, never all-zero) data.
func benchPackage(b *testing.B) []byte {
	b.Helper()
	benchPkg.once.Do(func() {
		benchPkg.b, benchPkg.err = benchBuild()
	})
	if benchPkg.err != nil {
		b.Fatal(benchPkg.err)
	}
	return benchPkg.b
}

func benchBuild() ([]byte, error) {
	dir, err := os.MkdirTemp("", "tgsp-bench-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	data := make([]byte, benchSize)
	rand.NewChaCha8([32]byte{'t', 'g', 's', 'p'}).Read(data)
	if err := os.WriteFile(filepath.Join(dir, "weights.bin"), data, 0o644); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := Pack(&buf, dir, defaultOpts()); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// benchOpen opens the package and verifies its signature, and returns the
// unwrapped DEK.
func benchOpen(b *testing.B, pkg []byte) (*Package, *DEK) {
	b.Helper()
	p, err := openBytes(pkg)
	if err != nil {
		b.Fatal(err)
	}
	if err := p.VerifySignature([]*SignerPublicKey{sharedKeys.signer.Public()}, testNow); err != nil {
		b.Fatal(err)
	}
	dek, err := p.UnwrapDEK(sharedKeys.rcpt)
	if err != nil {
		b.Fatal(err)
	}
	return p, dek
}

// benchBaseline is the best of three runs of the unavoidable per-byte work
// over the package's ciphertext, in place (no copy), on goroutines that
// split the shards into contiguous ranges: SHA-256 per chunk with a digest
// per shard, and, if dek is not nil, AES-256-GCM open of every chunk.
func benchBaseline(b *testing.B, p *Package, pkg []byte, dek *DEK, goroutines int) time.Duration {
	b.Helper()
	jobs := p.jobs()
	best := time.Duration(1<<63 - 1)
	for range 3 {
		errs := make([]error, goroutines)
		start := time.Now()
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				errs[g] = benchCrypto(p, pkg, dek, jobs[g*len(jobs)/goroutines:(g+1)*len(jobs)/goroutines])
			})
		}
		wg.Wait()
		best = min(best, time.Since(start))
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	return best
}

func benchCrypto(p *Package, pkg []byte, dek *DEK, jobs []shardJob) error {
	pt := make([]byte, 0, ChunkSize)
	var nonce [12]byte
	var sum Hash
	for _, j := range jobs {
		e := &p.Manifest.Files[j.file]
		total := chunkCount(e.Size)
		var aead cipher.AEAD
		if dek != nil {
			var err error
			if aead, err = dek.fileAEAD(j.file); err != nil {
				return err
			}
		}
		h := sha256.New()
		for off, c := int64(0), j.chunk; off < j.size; c++ {
			n := min(int64(CipherChunkSize), j.size-off)
			ct := pkg[j.off+off : j.off+off+n]
			off += n
			h.Write(ct)
			if aead != nil {
				chunkNonce(&nonce, uint64(c), c == total-1)
				if _, err := aead.Open(pt[:0], nonce[:], ct, nil); err != nil {
					return fmt.Errorf("baseline: %s chunk %d: %w", e.Path, c, err)
				}
			}
		}
		h.Sum(sum[:0])
		if sum != e.Shards[j.shard] {
			return fmt.Errorf("baseline: %s shard %d hash mismatch", e.Path, j.shard)
		}
	}
	return nil
}

func BenchmarkVerifyPayload(b *testing.B) {
	pkg := benchPackage(b)
	for _, w := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", w), func(b *testing.B) {
			p, _ := benchOpen(b, pkg)
			b.SetBytes(benchSize)
			for b.Loop() {
				if err := p.VerifyPayload(context.Background(), w); err != nil {
					b.Fatal(err)
				}
			}
			lib := b.Elapsed() / time.Duration(b.N)
			b.ReportMetric(benchBaseline(b, p, pkg, nil, w).Seconds()/lib.Seconds(), "x-baseline")
		})
	}
}

// BenchmarkUnpack writes real files (into b.TempDir(), through the page
// cache): what the baseline lacks is exactly that write, the copy out of the
// package, and the file handling.
func BenchmarkUnpack(b *testing.B) {
	pkg := benchPackage(b)
	for _, w := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", w), func(b *testing.B) {
			p, dek := benchOpen(b, pkg)
			dir := b.TempDir()
			out := filepath.Join(dir, "out")
			b.SetBytes(benchSize)
			b.ResetTimer()
			for range b.N {
				if err := p.Unpack(context.Background(), dek, out, UnpackOptions{Workers: w}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := os.RemoveAll(out); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			lib := b.Elapsed() / time.Duration(b.N)
			b.ReportMetric(benchBaseline(b, p, pkg, dek, w).Seconds()/lib.Seconds(), "x-baseline")
		})
	}
}
