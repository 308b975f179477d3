package presence

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

func TestLatest(t *testing.T) {
	t.Parallel()
	on := func(n uint64) Status { return Status{Schema: StatusSchema, State: StateOnline, Session: n} }
	off := func(n uint64) Status { return Status{Schema: StatusSchema, State: StateOffline, Session: n} }
	cases := []struct {
		name       string
		prev, next Status
		want       Status
	}{
		{"first message", Status{}, on(1), on(1)},
		{"newer session online", off(1), on(2), on(2)},
		{"late Will of older session", on(2), off(1), on(2)},
		{"late online of older session", off(3), on(2), off(3)},
		{"offline ends its session", on(2), off(2), off(2)},
		{"online after offline of same session is stale", off(2), on(2), off(2)},
		{"repeated online same session", on(2), on(2), on(2)},
		{"newer session offline", on(2), off(3), off(3)},
	}
	for _, tc := range cases {
		if got := Latest(tc.prev, tc.next); got != tc.want {
			t.Errorf("%s: Latest(%+v, %+v) = %+v, want %+v", tc.name, tc.prev, tc.next, got, tc.want)
		}
	}
}

// Any arrival order of the same set of statuses yields the same result.
func TestLatestIsOrderIndependent(t *testing.T) {
	t.Parallel()
	set := []Status{
		{State: StateOnline, Session: 4}, {State: StateOffline, Session: 4},
		{State: StateOnline, Session: 5}, {State: StateOffline, Session: 3},
	}
	want := Status{State: StateOnline, Session: 5}
	var permute func(k int)
	permute = func(k int) {
		if k == len(set) {
			var got Status
			for _, s := range set {
				got = Latest(got, s)
			}
			if got != want {
				t.Errorf("order %+v gives %+v", set, got)
			}
			return
		}
		for i := k; i < len(set); i++ {
			set[k], set[i] = set[i], set[k]
			permute(k + 1)
			set[k], set[i] = set[i], set[k]
		}
	}
	permute(0)
}

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	mid := Backoff{Rand: func() float64 { return 0.5 }}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i, w := range want {
		if got := mid.Delay(i + 1); got != w*time.Second {
			t.Errorf("Delay(%d) = %v, want %vs", i+1, got, int(w))
		}
	}
	for _, r := range []float64{0, 0.9999} {
		b := Backoff{Rand: func() float64 { return r }}
		for n := 1; n <= 100; n++ {
			base := min(time.Second<<min(n-1, 10), 60*time.Second)
			if d := b.Delay(n); d < base*8/10 || d > base*12/10 {
				t.Errorf("Delay(%d) with rand %v = %v outside ±20%% of %v", n, r, d, base)
			}
		}
	}
}

// fakeClock hands every After request to the test, which fires it.
type fakeClock struct {
	requests chan time.Duration
	fire     chan time.Time
}

func (c *fakeClock) Now() time.Time { return time.Unix(1700000000, 0) }
func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.requests <- d
	return c.fire
}

type countingSessions struct {
	mu sync.Mutex
	n  uint64
}

func (s *countingSessions) NextSession() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	return s.n, nil
}

// With the broker unreachable, Run waits 1s, 2s, 4s … 60s, 60s (here with
// the jitter source pinned) and takes a fresh session number per attempt.
func TestReconnectBackoffSequence(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{requests: make(chan time.Duration), fire: make(chan time.Time)}
	sessions := &countingSessions{}
	var dials int
	var mu sync.Mutex
	jitter := []float64{0.5, 0, 0.99, 0.5, 0.5, 0.5, 0.5, 0, 0.5}
	var ji int
	s, err := New(Config{
		BrokerURL: "tcp://127.0.0.1:1883",
		Tenant:    "acme", Device: "dev-x",
		Sessions: sessions,
		Clock:    clk,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Backoff: Backoff{Rand: func() float64 {
			r := jitter[ji%len(jitter)]
			ji++
			return r
		}},
		Dial: func(context.Context, string, string) (net.Conn, error) {
			mu.Lock()
			dials++
			mu.Unlock()
			return nil, errors.New("connection refused")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	want := []time.Duration{
		1 * time.Second,                // 1s, factor 1.0
		1600 * time.Millisecond,        // 2s, factor 0.8
		time.Duration(4 * 1.196 * 1e9), // 4s, factor 1.196
		8 * time.Second, 16 * time.Second, 32 * time.Second, 60 * time.Second,
		48 * time.Second, // capped 60s, factor 0.8
		60 * time.Second,
	}
	for i, w := range want {
		select {
		case d := <-clk.requests:
			if diff := d - w; diff < -time.Millisecond || diff > time.Millisecond {
				t.Errorf("wait %d = %v, want %v", i+1, d, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no wait %d requested", i+1)
		}
		clk.fire <- time.Now()
	}
	<-clk.requests // the 10th wait; the loop is parked in it
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if dials != len(want)+1 || sessions.n != uint64(len(want)+1) {
		t.Errorf("dials %d, sessions %d; want one of each per attempt (%d)", dials, sessions.n, len(want)+1)
	}
}
