package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// instantClock fires every After at once and records the requested delays,
// so backoff is observable without sleeping.
type instantClock struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (c *instantClock) Now() time.Time { return time.Unix(1700000000, 0) }
func (c *instantClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.delays = append(c.delays, d)
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- time.Time{}
	return ch
}
func (c *instantClock) Delays() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.delays...)
}

type published struct {
	topic    string
	qos      byte
	retained bool
	payload  string
}

// fakeBroker is a Publisher with broker behaviour: it acknowledges (records)
// a message or fails, as the test decides, and can stop the drain loop after
// a number of acknowledgements.
type fakeBroker struct {
	mu        sync.Mutex
	failNext  int  // fail this many calls, then succeed
	down      bool // fail every call
	got       []published
	calls     int
	stopAfter int // cancel after this many acks (0: never)
	cancel    context.CancelFunc
	notify    chan struct{}
}

func newFakeBroker() *fakeBroker { return &fakeBroker{notify: make(chan struct{}, 1)} }

func (b *fakeBroker) Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.down {
		return errors.New("broker unreachable")
	}
	if b.failNext > 0 {
		b.failNext--
		return errors.New("connection reset by peer")
	}
	b.got = append(b.got, published{topic, qos, retained, string(payload)})
	if b.stopAfter > 0 && len(b.got) == b.stopAfter && b.cancel != nil {
		b.cancel()
	}
	select {
	case b.notify <- struct{}{}:
	default:
	}
	return nil
}

func (b *fakeBroker) payloads() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, len(b.got))
	for i, p := range b.got {
		out[i] = p.payload
	}
	return out
}

func (b *fakeBroker) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		b.mu.Lock()
		have := len(b.got)
		b.mu.Unlock()
		if have >= n {
			return
		}
		select {
		case <-b.notify:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("broker got %d messages, want %d", have, n)
		}
	}
}

func openBolt(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func runAsync(ctx context.Context, o *Outbox, pub Publisher) <-chan error {
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx, pub) }()
	return done
}

func TestDeliversInOrderThroughFailures(t *testing.T) {
	t.Parallel()
	db := openBolt(t, filepath.Join(t.TempDir(), "agent.db"))
	defer db.Close()
	clk := &instantClock{}
	o, err := Open(db, Config{Clock: clk, Rand: func() float64 { return 0.5 }, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	var want []string
	for i := range n {
		p := fmt.Sprintf("m%02d", i)
		want = append(want, p)
		seq, err := o.Enqueue("tg/v1/acme/devices/dev-1/jobs/j1", []byte(p), 1, false)
		if err != nil || seq != uint64(i+1) {
			t.Fatalf("Enqueue = %d, %v; want seq %d", seq, err, i+1)
		}
	}
	b := newFakeBroker()
	b.failNext = 7
	ctx, cancel := context.WithCancel(context.Background())
	done := runAsync(ctx, o, b)
	b.waitFor(t, n)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := b.payloads(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("delivered %v\nwant      %v", got, want)
	}
	// 1s·2^k with jitter factor 1.0 (rand 0.5), capped at 60s.
	wantDelays := []time.Duration{1, 2, 4, 8, 16, 32, 60}
	got := clk.Delays()
	if len(got) != len(wantDelays) {
		t.Fatalf("backoff delays %v, want %v s", got, wantDelays)
	}
	for i := range got {
		if got[i] != wantDelays[i]*time.Second {
			t.Errorf("delay %d = %v, want %vs", i, got[i], int(wantDelays[i]))
		}
	}
	st, err := o.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 0 || st.PendingBytes != 0 || st.Delivered != n || st.Enqueued != n || st.PublishFails != 7 {
		t.Errorf("stats %+v", st)
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	t.Parallel()
	for _, r := range []float64{0, 0.999999} {
		o := &Outbox{cfg: Config{Rand: func() float64 { return r }}}
		o.cfg.setDefaults()
		for n := 1; n <= 40; n++ {
			d := o.backoff(n)
			base := min(time.Second<<min(n-1, 20), 60*time.Second)
			lo, hi := time.Duration(float64(base)*0.8), time.Duration(float64(base)*1.2)
			if d < lo || d > hi {
				t.Errorf("backoff(%d) with rand %v = %v, want within [%v, %v]", n, r, d, lo, hi)
			}
		}
	}
}

func TestResumesAfterRestart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "agent.db")
	db := openBolt(t, path)
	o, err := Open(db, Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	id := o.ID()
	for i := range 20 {
		if _, err := o.Enqueue("tg/v1/acme/devices/dev-1/attestation", fmt.Appendf(nil, "%d", i), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	b := newFakeBroker()
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel, b.stopAfter = cancel, 7
	if err := o.Run(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil { // the agent stops
		t.Fatal(err)
	}

	db = openBolt(t, path) // and starts again
	defer db.Close()
	o2, err := Open(db, Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if o2.ID() != id {
		t.Errorf("outbox id changed across restart: %s → %s", id, o2.ID())
	}
	st, _ := o2.Stats()
	if st.Pending != 13 {
		t.Fatalf("pending after restart = %d, want 13", st.Pending)
	}
	if seq, _ := o2.Enqueue("tg/v1/acme/devices/dev-1/attestation", []byte("20"), 1, false); seq != 21 {
		t.Errorf("seq after restart = %d, want 21 (sequence numbers are never reused)", seq)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := runAsync(ctx2, o2, b)
	b.waitFor(t, 21)
	cancel2()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := b.payloads()
	for i, p := range got {
		if p != fmt.Sprint(i) {
			t.Fatalf("delivery %d = %q; all: %v", i, p, got)
		}
	}
}

func TestFullPolicyDropsOldestTelemetryNeverCritical(t *testing.T) {
	t.Parallel()
	db := openBolt(t, filepath.Join(t.TempDir(), "agent.db"))
	defer db.Close()
	o, err := Open(db, Config{MaxEntries: 5, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	const tel, job = "tg/v1/a/devices/d/telemetry", "tg/v1/a/devices/d/jobs/1"
	steps := []struct {
		topic, payload string
		wantErr        error
	}{
		{tel, "t1", nil}, {tel, "t2", nil}, {job, "c1", nil}, {job, "c2", nil}, {tel, "t3", nil}, // full
		{job, "c3", nil}, // evicts t1
		{tel, "t4", nil}, // evicts t2
		{job, "c4", nil}, // evicts t3
		{job, "c5", nil}, // evicts t4
		{job, "c6", ErrOutboxFull},
		{tel, "t5", ErrOutboxFull},
	}
	for _, s := range steps {
		_, err := o.Enqueue(s.topic, []byte(s.payload), 1, false)
		if !errors.Is(err, s.wantErr) || (s.wantErr == nil) != (err == nil) {
			t.Fatalf("Enqueue %s: %v, want %v", s.payload, err, s.wantErr)
		}
	}
	st, _ := o.Stats()
	if st.Pending != 5 || st.Dropped != 4 || st.Rejected != 2 {
		t.Errorf("stats %+v, want pending 5, dropped 4, rejected 2", st)
	}
	b := newFakeBroker()
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel, b.stopAfter = cancel, 5
	if err := o.Run(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(b.payloads(), ","); got != "c1,c2,c3,c4,c5" {
		t.Errorf("delivered %s", got)
	}
}

func TestFullPolicyByBytes(t *testing.T) {
	t.Parallel()
	db := openBolt(t, filepath.Join(t.TempDir(), "agent.db"))
	defer db.Close()
	const tel = "x/telemetry" // 11 bytes of topic
	o, err := Open(db, Config{MaxBytes: 100, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Enqueue(tel, make([]byte, 90), 0, false); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("101-byte entry: %v, want ErrTooLarge", err)
	}
	for i := range 3 { // 3 × 31 = 93 bytes
		if _, err := o.Enqueue(tel, make([]byte, 20), 0, false); err != nil {
			t.Fatalf("enqueue %d: %v", i, err)
		}
	}
	if _, err := o.Enqueue("x/jobs/1", make([]byte, 40), 1, false); err != nil { // 48: evicts two
		t.Fatal(err)
	}
	st, _ := o.Stats()
	if st.Pending != 2 || st.PendingBytes != 31+48 || st.Dropped != 2 {
		t.Errorf("stats %+v, want pending 2, bytes 79, dropped 2", st)
	}
}

func TestEnqueueFuncHandsOutStableMsgIDs(t *testing.T) {
	t.Parallel()
	db := openBolt(t, filepath.Join(t.TempDir(), "agent.db"))
	defer db.Close()
	o, err := Open(db, Config{})
	if err != nil {
		t.Fatal(err)
	}
	seq, err := o.EnqueueFunc("t/jobs/1", 1, false, func(id string) ([]byte, error) {
		return fmt.Appendf(nil, `{"schema":"tg.job.v1","msg_id":%q}`, id), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b := newFakeBroker()
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel, b.stopAfter = cancel, 1
	_ = o.Run(ctx, b)
	want := fmt.Sprintf(`{"schema":"tg.job.v1","msg_id":"%s-%d"}`, o.ID(), seq)
	if got := b.payloads(); len(got) != 1 || got[0] != want {
		t.Errorf("payload %v, want %s", got, want)
	}
	if _, err := o.EnqueueFunc("t/jobs/1", 1, false, func(string) ([]byte, error) {
		return nil, errors.New("boom")
	}); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("builder error not returned: %v", err)
	}
	if st, _ := o.Stats(); st.Pending != 0 {
		t.Errorf("failed build left %d entries", st.Pending)
	}
}

func TestConcurrentProducersKeepTheirOrder(t *testing.T) {
	t.Parallel()
	db := openBolt(t, filepath.Join(t.TempDir(), "agent.db"))
	defer db.Close()
	o, err := Open(db, Config{Clock: &instantClock{}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	b := newFakeBroker()
	b.failNext = 3
	ctx, cancel := context.WithCancel(context.Background())
	done := runAsync(ctx, o, b)
	const producers, each = 4, 50
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				if _, err := o.Enqueue(fmt.Sprintf("t/%d/jobs/x", p), fmt.Appendf(nil, "%d:%d", p, i), 1, false); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	b.waitFor(t, producers*each)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	next := make([]int, producers)
	for _, s := range b.payloads() {
		var p, i int
		fmt.Sscanf(s, "%d:%d", &p, &i)
		if i != next[p] {
			t.Fatalf("producer %d: got %d, want %d", p, i, next[p])
		}
		next[p]++
	}
}
