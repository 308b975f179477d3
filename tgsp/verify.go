package tgsp

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"
)

// VerifySignature checks that the package is signed by one of trust (both
// halves of the composite signature) and has not expired at now. It must
// succeed before any method that releases plaintext will run.
func (p *Package) VerifySignature(trust []*SignerPublicKey, now time.Time) error {
	p.verified = nil // a failed re-check revokes an earlier success
	var key *SignerPublicKey
	for _, k := range trust {
		if k != nil && k.KeyID() == p.Manifest.PublisherKeyID {
			key = k
			break
		}
	}
	if key == nil {
		return fmt.Errorf("%w: package is signed by key %s, which is not trusted", ErrUntrustedSigner, p.Manifest.PublisherKeyID)
	}
	if err := key.verify(signedMessage(p.ManifestBytes), p.signature); err != nil {
		return err
	}
	if !now.Before(p.Manifest.ExpiresAt) {
		return fmt.Errorf("%w on %s", ErrExpired, p.Manifest.ExpiresAt.Format(time.RFC3339))
	}
	p.verified = key
	return nil
}

// shardJob is one shard of one file: the unit of parallel work.
type shardJob struct {
	file  int
	shard int
	off   int64 // absolute offset of the shard's ciphertext in the package
	size  int64 // ciphertext bytes in the shard
	chunk int64 // index of the shard's first chunk within the file
}

// jobs lists every shard in package order.
func (p *Package) jobs() []shardJob {
	var js []shardJob
	offs := p.fileOffsets()
	for i, e := range p.Manifest.Files {
		if e.Type != TypeFile {
			continue
		}
		total := cipherSize(e.Size)
		for s := int64(0); s < int64(len(e.Shards)); s++ {
			start := s * ShardSize
			js = append(js, shardJob{file: i, shard: int(s), off: offs[i] + start,
				size: min(ShardSize, total-start), chunk: s * ChunksPerShard})
		}
	}
	return js
}

// runJobs runs fn over jobs on up to workers goroutines (GOMAXPROCS if
// workers <= 0) and returns the error of the earliest failing job, so the
// reported failure does not depend on scheduling.
func runJobs(ctx context.Context, jobs []shardJob, workers int, fn func(w int, j shardJob) error) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, max(len(jobs), 1))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		firstAt = len(jobs)
		first   error
		next    int
		wg      sync.WaitGroup
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next >= len(jobs) || next > firstAt || ctx.Err() != nil {
			return 0, false
		}
		next++
		return next - 1, true
	}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i, ok := take()
				if !ok {
					return
				}
				if err := fn(w, jobs[i]); err != nil {
					mu.Lock()
					if i < firstAt {
						firstAt, first = i, err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// hashBufSize is the read size when hashing ciphertext without decrypting.
const hashBufSize = 4 * CipherChunkSize

// VerifyPayload checks every shard of stored ciphertext against the signed
// manifest, on up to workers cores. It needs no key. Call VerifySignature
// first; VerifyPayload alone proves nothing about who made the package.
func (p *Package) VerifyPayload(ctx context.Context, workers int) error {
	if p.verified == nil {
		return fmt.Errorf("verify payload: %w", ErrNotVerified)
	}
	bufs := make([][]byte, max(workers, runtime.GOMAXPROCS(0)))
	return runJobs(ctx, p.jobs(), workers, func(w int, j shardJob) error {
		if bufs[w] == nil {
			bufs[w] = make([]byte, hashBufSize)
		}
		h := sha256.New()
		if _, err := io.CopyBuffer(h, io.NewSectionReader(p.r, j.off, j.size), bufs[w]); err != nil {
			return fmt.Errorf("read %s: %w", p.Manifest.Files[j.file].Path, err)
		}
		var got Hash
		h.Sum(got[:0])
		if got != p.Manifest.Files[j.file].Shards[j.shard] {
			return &ShardError{Path: p.Manifest.Files[j.file].Path, Shard: j.shard}
		}
		return nil
	})
}

// Verify is VerifySignature followed by VerifyPayload.
func (p *Package) Verify(ctx context.Context, trust []*SignerPublicKey, now time.Time, workers int) error {
	if err := p.VerifySignature(trust, now); err != nil {
		return err
	}
	return p.VerifyPayload(ctx, workers)
}
