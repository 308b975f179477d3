package presence_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/agent/internal/presence"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence/presencetest"
)

const (
	tenant = "acme"
	device = "dev-aaaaaaaaaaaaaaaaaaaa"
)

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

// connTracker is a Dial hook that remembers the connections it opened, so a
// test can cut them the way a dead network does.
type connTracker struct {
	mu    sync.Mutex
	conns []*cutConn
}

// cutConn fails like a reset TCP connection once cut. (Closing a net.Conn
// locally is not enough: paho treats "use of closed network connection" as
// its own shutdown and would only notice at the next keepalive.)
type cutConn struct {
	net.Conn
	cut atomic.Bool
}

func (c *cutConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.cut.Load() {
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	}
	return n, err
}

func (c *cutConn) Write(p []byte) (int, error) {
	if c.cut.Load() {
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: syscall.ECONNRESET}
	}
	return c.Conn.Write(p)
}

func (ct *connTracker) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := &cutConn{Conn: raw}
	ct.mu.Lock()
	ct.conns = append(ct.conns, c)
	ct.mu.Unlock()
	return c, nil
}

func (ct *connTracker) CutAll() {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	for _, c := range ct.conns {
		c.cut.Store(true)
		_ = c.Conn.Close()
	}
	ct.conns = nil
}

type agent struct {
	once    sync.Once
	s       *presence.Session
	cancel  context.CancelFunc
	done    chan error
	tracker *connTracker
}

func startAgent(t *testing.T, brokerURL string, sessions presence.SessionCounter, edit func(*presence.Config)) *agent {
	t.Helper()
	ct := &connTracker{}
	cfg := presence.Config{
		BrokerURL: brokerURL,
		Tenant:    tenant,
		Device:    device,
		Sessions:  sessions,
		KeepAlive: 5 * time.Second,
		Backoff:   presence.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		Dial:      ct.Dial,
		Logger:    testLogger(t),
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := presence.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &agent{s: s, cancel: cancel, done: make(chan error, 1), tracker: ct}
	go func() { a.done <- s.Run(ctx) }()
	t.Cleanup(func() { a.stop(t) })
	return a
}

func (a *agent) stop(t *testing.T) {
	a.once.Do(func() {
		a.cancel()
		select {
		case err := <-a.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

func (a *agent) waitConnected(t *testing.T, session uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if ok, n := a.s.Connected(); ok && n >= session {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("session %d never connected", session)
}

func decodeStatus(t *testing.T, payload string) presence.Status {
	t.Helper()
	var st presence.Status
	if err := json.Unmarshal([]byte(payload), &st); err != nil {
		t.Fatalf("status %q: %v", payload, err)
	}
	return st
}

func statuses(t *testing.T, msgs []presencetest.Received) []presence.Status {
	out := make([]presence.Status, len(msgs))
	for i, m := range msgs {
		out[i] = decodeStatus(t, m.Payload)
	}
	return out
}

func hasStatus(t *testing.T, state string, session uint64) func([]presencetest.Received) bool {
	return func(msgs []presencetest.Received) bool {
		for _, st := range statuses(t, msgs) {
			if st.State == state && st.Session == session {
				return true
			}
		}
		return false
	}
}

func TestOnlineStatusIsRetainedForNewSubscribers(t *testing.T) {
	t.Parallel()
	b := presencetest.StartMochi(t)
	sessions := &presencetest.Sessions{}
	a := startAgent(t, b.URL(), sessions, nil)
	a.waitConnected(t, 1)

	obs := presencetest.Observe(t, b.URL(), presence.StatusTopic(tenant, device))
	msgs := obs.WaitFor(t, 5*time.Second, "retained online", func(m []presencetest.Received) bool { return len(m) > 0 })
	if !msgs[0].Retained {
		t.Error("status was not delivered as retained")
	}
	st := decodeStatus(t, msgs[0].Payload)
	if st.Schema != "tg.status.v1" || st.Device != device || st.State != "online" || st.Session != 1 || st.TS.IsZero() {
		t.Errorf("status %+v", st)
	}
	var raw map[string]any
	_ = json.Unmarshal([]byte(msgs[0].Payload), &raw)
	for _, k := range []string{"schema", "device", "state", "session", "ts"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("status JSON lacks %q: %s", k, msgs[0].Payload)
		}
	}
}

func TestAbruptLossFiresWillThenNextSessionGoesOnline(t *testing.T) {
	t.Parallel()
	b := presencetest.StartMochi(t)
	obs := presencetest.Observe(t, b.URL(), presence.StatusTopic(tenant, device))
	sessions := &presencetest.Sessions{}
	a := startAgent(t, b.URL(), sessions, nil)
	a.waitConnected(t, 1)
	obs.WaitFor(t, 5*time.Second, "online 1", hasStatus(t, "online", 1))

	a.tracker.CutAll() // the network dies: no DISCONNECT reaches the broker

	msgs := obs.WaitFor(t, 10*time.Second, "online 2", hasStatus(t, "online", 2))
	sts := statuses(t, msgs)
	var will *presence.Status
	for i := range sts {
		if sts[i].State == "offline" {
			will = &sts[i]
			break
		}
	}
	if will == nil {
		t.Fatalf("no Will seen; statuses %+v", sts)
	}
	if will.Session != 1 || will.Device != device || will.Schema != "tg.status.v1" || !will.TS.IsZero() {
		t.Errorf("Will = %+v, want offline for session 1 without ts", *will)
	}
	// Whatever order the observer saw, the rule yields the new session.
	var latest presence.Status
	for _, st := range sts {
		latest = presence.Latest(latest, st)
	}
	if latest.State != "online" || latest.Session != 2 {
		t.Errorf("Latest over %+v = %+v, want online 2", sts, latest)
	}
	// A subscriber arriving now sees online 2 retained.
	late := presencetest.Observe(t, b.URL(), presence.StatusTopic(tenant, device))
	got := late.WaitFor(t, 5*time.Second, "retained", func(m []presencetest.Received) bool { return len(m) > 0 })
	if st := decodeStatus(t, got[0].Payload); st.State != "online" || st.Session != 2 {
		t.Errorf("retained after reconnect = %+v", st)
	}
}

func TestCleanShutdownPublishesOfflineAndNoWill(t *testing.T) {
	t.Parallel()
	b := presencetest.StartMochi(t)
	obs := presencetest.Observe(t, b.URL(), presence.StatusTopic(tenant, device))
	sessions := &presencetest.Sessions{}
	a := startAgent(t, b.URL(), sessions, nil)
	a.waitConnected(t, 1)
	obs.WaitFor(t, 5*time.Second, "online 1", hasStatus(t, "online", 1))
	a.stop(t)
	obs.WaitFor(t, 5*time.Second, "offline 1", hasStatus(t, "offline", 1))
	time.Sleep(200 * time.Millisecond) // room for a (wrong) Will to arrive
	// A subscription racing a retained publish may see the same message
	// twice (live and retained); count distinct statuses.
	distinct := map[string]bool{}
	for _, m := range obs.Messages() {
		distinct[m.Payload] = true
		if st := decodeStatus(t, m.Payload); st.State == "offline" && st.TS.IsZero() {
			t.Errorf("the Will fired on a clean shutdown: %s", m.Payload)
		}
	}
	if len(distinct) != 2 {
		t.Errorf("statuses %v, want exactly online 1 and offline 1", distinct)
	}
	if ok, _ := a.s.Connected(); ok {
		t.Error("still connected after Run returned")
	}
}

func TestPublishWaitsForAckAndFailsWhenDisconnected(t *testing.T) {
	t.Parallel()
	b := presencetest.StartMochi(t)
	s, err := presence.New(presence.Config{BrokerURL: b.URL(), Tenant: tenant, Device: device, Sessions: &presencetest.Sessions{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(context.Background(), "x", 1, false, nil); !errors.Is(err, presence.ErrNotConnected) {
		t.Fatalf("Publish before Run: %v", err)
	}
	topic := "tg/v1/acme/devices/" + device + "/telemetry"
	obs := presencetest.Observe(t, b.URL(), topic)
	a := startAgent(t, b.URL(), &presencetest.Sessions{}, nil)
	a.waitConnected(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.s.Publish(ctx, topic, 1, false, []byte(`{"schema":"tg.telemetry.v1"}`)); err != nil {
		t.Fatal(err)
	}
	obs.WaitFor(t, 5*time.Second, "telemetry", func(m []presencetest.Received) bool { return len(m) == 1 })
}

func TestSlowHandlerDoesNotBlockTheConnection(t *testing.T) {
	t.Parallel()
	b := presencetest.StartMochi(t)
	release := make(chan struct{})
	var mu sync.Mutex
	var slowGot, fastGot []string
	fastDone := make(chan struct{}, 10)

	a := startAgent(t, b.URL(), &presencetest.Sessions{}, nil)
	slow := presence.CommandTopic(tenant, device, "job")
	fast := presence.CommandTopic(tenant, device, "attest")
	if err := a.s.Subscribe(slow, func(ctx context.Context, m presence.Message) {
		<-release
		mu.Lock()
		slowGot = append(slowGot, string(m.Payload))
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.s.Subscribe(fast, func(ctx context.Context, m presence.Message) {
		mu.Lock()
		fastGot = append(fastGot, string(m.Payload))
		mu.Unlock()
		fastDone <- struct{}{}
	}); err != nil {
		t.Fatal(err)
	}
	a.waitConnected(t, 1)
	cp := presencetest.Observe(t, b.URL(), "unused/#") // stands in for the control plane
	for _, p := range []string{"j1", "j2", "j3"} {
		cp.Publish(t, slow, false, p)
	}
	cp.Publish(t, fast, false, "nonce")
	select {
	case <-fastDone:
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked handler starved another subscription")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.s.Publish(ctx, "tg/v1/acme/devices/"+device+"/telemetry", 1, false, []byte("{}")); err != nil {
		t.Fatalf("publish while a handler is blocked: %v", err)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := append([]string(nil), slowGot...)
		mu.Unlock()
		// Arrival order is not guaranteed (see the package doc), delivery is.
		slices.Sort(got)
		if strings.Join(got, ",") == "j1,j2,j3" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slow handler got %q, want j1, j2 and j3", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHandlerPanicEndsRunWithError(t *testing.T) {
	t.Parallel()
	b := presencetest.StartMochi(t)
	s, err := presence.New(presence.Config{BrokerURL: b.URL(), Tenant: tenant, Device: device,
		Sessions: &presencetest.Sessions{}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	topic := presence.CommandTopic(tenant, device, "policy")
	_ = s.Subscribe(topic, func(context.Context, presence.Message) { panic("bad bundle") })
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	for ok := false; !ok; ok, _ = s.Connected() {
		time.Sleep(5 * time.Millisecond)
	}
	cp := presencetest.Observe(t, b.URL(), "unused/#")
	cp.Publish(t, topic, false, "x")
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "bad bundle") {
			t.Fatalf("Run = %v, want the panic as an error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not end after a handler panic")
	}
}

func TestSessionCounterFailureEndsRun(t *testing.T) {
	t.Parallel()
	s, err := presence.New(presence.Config{BrokerURL: "tcp://127.0.0.1:1", Tenant: tenant, Device: device,
		Sessions: &presencetest.Sessions{Fail: errors.New("database is in read-only mode")}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("Run = %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	ok := presence.Config{BrokerURL: "tcp://127.0.0.1:1883", Tenant: tenant, Device: device, Sessions: &presencetest.Sessions{}}
	cases := map[string]func(*presence.Config){
		"no tenant":     func(c *presence.Config) { c.Tenant = "" },
		"no sessions":   func(c *presence.Config) { c.Sessions = nil },
		"tls no config": func(c *presence.Config) { c.BrokerURL = "tls://cp.example:8883" },
		"bad scheme":    func(c *presence.Config) { c.BrokerURL = "http://cp.example:80" },
		"no port":       func(c *presence.Config) { c.BrokerURL = "tcp://cp.example" },
	}
	if _, err := presence.New(ok); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, edit := range cases {
		cfg := ok
		edit(&cfg)
		if _, err := presence.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
