package dpsgd

import (
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"os"
)

// DeterministicEnv is the environment variable that, set to "true", makes
// the noise and the sampling reproducible from Config.Seed. The privacy
// guarantee then no longer holds against anyone who knows the seed.
const DeterministicEnv = "TG_DETERMINISTIC"

func deterministicFromEnv() bool { return os.Getenv(DeterministicEnv) == "true" }

// Randomness streams; each (stream, counter) pair gets its own generator.
const (
	streamInit   = "init"
	streamNoise  = "noise"
	streamSample = "sample"
)

// newRNG returns a ChaCha8 generator for one use. In the normal mode its
// 32-byte seed comes from crypto/rand every time; deterministic mode
// derives it from the seed, the stream name and a counter with SHA-256.
func newRNG(deterministic bool, seed uint64, stream string, counter uint64) *rand.Rand {
	var key [32]byte
	if deterministic || stream == streamInit {
		h := sha256.New()
		h.Write([]byte("tensorguard/dpsgd/v1\x00" + stream + "\x00"))
		var buf [16]byte
		binary.BigEndian.PutUint64(buf[:8], seed)
		binary.BigEndian.PutUint64(buf[8:], counter)
		h.Write(buf[:])
		copy(key[:], h.Sum(nil))
	} else {
		// crypto/rand.Read never fails on Linux since Go 1.24 (it
		// crashes the program instead of returning weak bytes).
		_, _ = crand.Read(key[:])
	}
	return rand.New(rand.NewChaCha8(key))
}

// PoissonSample returns the indices in [0, n) each included independently
// with probability q: the sampling the privacy accountants assume.
func PoissonSample(rng *rand.Rand, n int, q float64) []int {
	out := make([]int, 0, int(float64(n)*q*1.2)+8)
	for i := range n {
		if rng.Float64() < q {
			out = append(out, i)
		}
	}
	return out
}
