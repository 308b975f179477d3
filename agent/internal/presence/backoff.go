package presence

import (
	"math/rand/v2"
	"time"
)

// Clock is the time source of the reconnect loop; tests inject a fake.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Backoff is exponential backoff with multiplicative jitter.
type Backoff struct {
	Min, Max time.Duration  // defaults 1s and 60s
	Jitter   float64        // fraction, default 0.2 (±20%)
	Rand     func() float64 // in [0,1); default math/rand/v2
}

func (b *Backoff) setDefaults() {
	if b.Min <= 0 {
		b.Min = time.Second
	}
	if b.Max < b.Min {
		b.Max = max(60*time.Second, b.Min)
	}
	if b.Jitter <= 0 || b.Jitter >= 1 {
		b.Jitter = 0.2
	}
	if b.Rand == nil {
		b.Rand = rand.Float64
	}
}

// Delay is the wait before retry number attempt (1-based):
// min(Max, Min·2^(attempt-1)) scaled by a factor in [1-Jitter, 1+Jitter).
func (b Backoff) Delay(attempt int) time.Duration {
	b.setDefaults()
	d := b.Max
	if attempt < 1 {
		attempt = 1
	}
	if attempt < 40 {
		if x := b.Min << (attempt - 1); x > 0 && x < d {
			d = x
		}
	}
	return time.Duration(float64(d) * (1 - b.Jitter + 2*b.Jitter*b.Rand()))
}
