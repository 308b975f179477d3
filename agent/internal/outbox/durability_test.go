package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tensorguard/tensorguardflow/agent/internal/outbox"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence/presencetest"
	"github.com/tensorguard/tensorguardflow/agent/internal/state"
)

// The agent wires these together; keep them fitting.
var (
	_ outbox.Store            = (*state.DB)(nil)
	_ outbox.Publisher        = (*presence.Session)(nil)
	_ presence.SessionCounter = (*state.DB)(nil)
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

// gated publishes only while the observer is subscribed: a message the
// broker acknowledged before the observer's subscription was back would be
// the broker's to lose (neither test broker persists sessions), not the
// outbox's. A closed gate looks to the outbox like an unreachable broker.
type gated struct {
	pub outbox.Publisher
	obs *presencetest.Observer
}

func (g gated) Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error {
	if !g.obs.Ready() {
		return errors.New("observer not subscribed yet")
	}
	return g.pub.Publish(ctx, topic, qos, retained, payload)
}

// agentProc is the part of tg-agent under test: state, session, outbox.
type agentProc struct {
	db     *state.DB
	ob     *outbox.Outbox
	cancel context.CancelFunc
	g      *errgroup.Group
}

func startAgent(t *testing.T, path, brokerURL string, obs *presencetest.Observer) *agentProc {
	t.Helper()
	log := slog.New(slog.NewTextHandler(tWriter{t}, nil))
	db, err := state.Open(path, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.Open(db, outbox.Config{RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := presence.New(presence.Config{
		BrokerURL: brokerURL, Tenant: tenant, Device: device, Sessions: db,
		Backoff:        presence.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		ConnectTimeout: 2 * time.Second,
		OnConnect:      func(uint64) { ob.Kick() },
		Logger:         log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sess.Run(ctx) })
	g.Go(func() error { return ob.Run(ctx, gated{sess, obs}) })
	return &agentProc{db: db, ob: ob, cancel: cancel, g: g}
}

func (a *agentProc) stop(t *testing.T) {
	t.Helper()
	a.cancel()
	if err := a.g.Wait(); err != nil {
		t.Errorf("agent tasks: %v", err)
	}
	if err := a.db.Close(); err != nil {
		t.Error(err)
	}
}

type jobEvent struct {
	Schema string `json:"schema"`
	MsgID  string `json:"msg_id"`
	N      int    `json:"n"`
}

func (a *agentProc) enqueue(t *testing.T, topic string, from, to int) {
	t.Helper()
	for n := from; n < to; n++ {
		_, err := a.ob.EnqueueFunc(topic, 1, false, func(id string) ([]byte, error) {
			return json.Marshal(jobEvent{Schema: "tg.job.v1", MsgID: id, N: n})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// received returns the distinct events in first-arrival order and the
// number of redeliveries (same msg_id seen again).
func received(t *testing.T, msgs []presencetest.Received) (order []int, dups int) {
	seen := map[string]bool{}
	for _, m := range msgs {
		var e jobEvent
		if err := json.Unmarshal([]byte(m.Payload), &e); err != nil {
			t.Fatalf("payload %q: %v", m.Payload, err)
		}
		if seen[e.MsgID] {
			dups++
			continue
		}
		seen[e.MsgID] = true
		order = append(order, e.N)
	}
	return order, dups
}

func allOf(t *testing.T, n int) func([]presencetest.Received) bool {
	return func(msgs []presencetest.Received) bool {
		order, _ := received(t, msgs)
		return len(order) >= n
	}
}

// Nothing the outbox accepted is lost across a broker outage and an agent
// restart during that outage; everything arrives in order (at least once).
func testDurability(t *testing.T, b presencetest.Broker) {
	path := filepath.Join(t.TempDir(), "agent.db")
	topic := "tg/v1/" + tenant + "/devices/" + device + "/jobs/job-1"
	obs := presencetest.Observe(t, b.URL(), topic)

	a := startAgent(t, path, b.URL(), obs)
	a.enqueue(t, topic, 0, 50)
	obs.WaitFor(t, 20*time.Second, "first 50 events", allOf(t, 50))
	// The observer may see the last message before its PUBACK reaches the
	// outbox: wait until the outbox has nothing pending, so the count
	// below is exact.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st, err := a.ob.Stats()
		if err == nil && st.Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("first 50 not all acknowledged: %+v, %v", st, err)
		}
	}

	t.Logf("phase: first 50 received")
	b.Stop(t) // outage
	a.enqueue(t, topic, 50, 100)
	time.Sleep(300 * time.Millisecond) // publishes fail and back off
	a.stop(t)                          // the agent restarts during the outage

	a = startAgent(t, path, b.URL(), obs)
	a.enqueue(t, topic, 100, 150)
	if st, err := a.ob.Stats(); err != nil || st.Pending != 100 {
		t.Fatalf("pending during outage = %+v, %v; want 100", st, err)
	}
	t.Logf("phase: restarted agent")
	b.Start(t) // the broker is back
	t.Logf("phase: broker back")
	msgs := obs.WaitFor(t, 30*time.Second, "all 150 events", allOf(t, 150))
	t.Logf("phase: all received")
	// The observer can see the last message before its PUBACK reached the
	// outbox; stopping now would (correctly) leave it for redelivery.
	waitDrained(t, a.ob)
	a.stop(t)

	order, dups := received(t, msgs)
	for i, n := range order {
		if n != i {
			t.Fatalf("event %d arrived as #%d; order %v", n, i, order)
		}
	}
	t.Logf("150 events delivered in order, %d redeliveries", dups)

	db, err := state.Open(path, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ob, err := outbox.Open(db, outbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := ob.Stats(); st.Pending != 0 || st.Dropped != 0 {
		t.Errorf("after delivery: %+v", st)
	}
	if n, _ := db.Session(); n < 2 {
		t.Errorf("session counter %d: each connect must take a new number", n)
	}
}

func waitDrained(t *testing.T, ob *outbox.Outbox) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := ob.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox not drained: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDurabilityMochi(t *testing.T) {
	t.Parallel()
	testDurability(t, presencetest.StartMochi(t))
}

func TestDurabilityMosquitto(t *testing.T) {
	t.Parallel()
	testDurability(t, presencetest.StartMosquitto(t))
}

func Example() {
	// Wiring inside tg-agent (error handling elided):
	//
	//	db, _ := state.Open("/var/lib/tensorguard/agent.db", state.Options{})
	//	ob, _ := outbox.Open(db, outbox.Config{MaxEntries: cfg.Outbox.MaxEntries})
	//	sess, _ := presence.New(presence.Config{…, Sessions: db, OnConnect: func(uint64) { ob.Kick() }})
	//	g.Go(func() error { return sess.Run(ctx) })
	//	g.Go(func() error { return ob.Run(ctx, sess) })
	//	seq, err := ob.Enqueue(topic, payload, 1, false)
	fmt.Println("ok")
	// Output: ok
}
