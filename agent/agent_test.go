package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/tensorguard/tensorguardflow/agent"
	"github.com/tensorguard/tensorguardflow/agent/internal/enroll"
	"github.com/tensorguard/tensorguardflow/agent/internal/enroll/enrolltest"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence/presencetest"
)

// tlsBroker is an in-process mochi broker with an mTLS listener for the
// agent (client certificates from the fake control plane's tenant CA) and a
// plain loopback listener for the test's observer. It records the serial
// of every client certificate it accepts.
type tlsBroker struct {
	srv      *mqtt.Server
	tlsURL   string
	plainURL string
	mu       sync.Mutex
	serials  []string
}

func startTLSBroker(t *testing.T, cp *enrolltest.ControlPlane) *tlsBroker {
	t.Helper()
	b := &tlsBroker{}
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(cp.TenantCA())
	tc := &tls.Config{
		Certificates: []tls.Certificate{cp.ServerCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
		MinVersion:   tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			b.mu.Lock()
			b.serials = append(b.serials, cs.PeerCertificates[0].SerialNumber.Text(16))
			b.mu.Unlock()
			return nil
		},
	}
	b.srv = mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	b.srv.Options.Capabilities.MaximumMessageExpiryInterval = 0
	if err := b.srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	tlsAddr, plainAddr := presencetest.FreeAddr(t), presencetest.FreeAddr(t)
	if err := b.srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tls", Address: tlsAddr, TLSConfig: tc})); err != nil {
		t.Fatal(err)
	}
	if err := b.srv.AddListener(listeners.NewTCP(listeners.Config{ID: "plain", Address: plainAddr})); err != nil {
		t.Fatal(err)
	}
	if err := b.srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.srv.Close() })
	b.tlsURL, b.plainURL = "mqtts://"+tlsAddr, "tcp://"+plainAddr
	return b
}

func (b *tlsBroker) handshakes() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.serials...)
}

type notifier struct {
	mu     sync.Mutex
	events []string
}

func (n *notifier) add(e string) error {
	n.mu.Lock()
	n.events = append(n.events, e)
	n.mu.Unlock()
	return nil
}
func (n *notifier) Ready() error        { return n.add("READY") }
func (n *notifier) Stopping() error     { return n.add("STOPPING") }
func (n *notifier) Reloading() error    { return n.add("RELOADING") }
func (n *notifier) Status(string) error { return nil }
func (n *notifier) get() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.events...)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testConfig(t *testing.T, cp *enrolltest.ControlPlane, brokerURL string) *agent.Config {
	seed := int64(42)
	cfg := agent.DefaultConfig()
	cfg.ServerURL = cp.URL
	cfg.CAHash = cp.Pin
	cfg.Token = "tok-1"
	cfg.StatePath = filepath.Join(t.TempDir(), "agent.db")
	cfg.TPM = agent.TPMConfig{Simulator: true, SimulatorSeed: &seed}
	cfg.MQTT.URL = brokerURL
	cfg.Telemetry.Interval = agent.Duration(time.Second)
	cfg.RenewFraction = 0.1
	cfg.Log.Level = "debug"
	return cfg
}

// running is one Run of an agent.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg *agent.Config, n *notifier) (*agent.Agent, *running) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := agent.New(cfg, logger, agent.WithNotifier(n), agent.WithRetry(100*time.Millisecond, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return a, r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func statuses(msgs []presencetest.Received) []presence.Status {
	var out []presence.Status
	for _, m := range msgs {
		if strings.HasSuffix(m.Topic, "/status") {
			var s presence.Status
			if json.Unmarshal([]byte(m.Payload), &s) == nil {
				out = append(out, s)
			}
		}
	}
	return out
}

func heartbeats(msgs []presencetest.Received) []agent.Heartbeat {
	var out []agent.Heartbeat
	for _, m := range msgs {
		if strings.HasSuffix(m.Topic, "/telemetry") {
			var h agent.Heartbeat
			if json.Unmarshal([]byte(m.Payload), &h) == nil {
				out = append(out, h)
			}
		}
	}
	return out
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEnrollRunRenewRestart is the agent's life in one test: it enrolls
// once, comes online over mTLS MQTT, sends heartbeats, renews its
// short-lived certificate without dropping the connection (the next
// connection presents the new certificate), reloads safe settings, shuts
// down cleanly, and after a restart on the same state file is the same
// device without a second enrollment.
func TestEnrollRunRenewRestart(t *testing.T) {
	cp := enrolltest.Start(t, enrolltest.Options{CertTTL: 30 * time.Second})
	cp.AddToken("tok-1", time.Now().Add(time.Hour))
	broker := startTLSBroker(t, cp)
	obs := presencetest.Observe(t, broker.plainURL, "tg/v1/"+cp.Tenant()+"/#")
	cfg := testConfig(t, cp, broker.tlsURL)

	n1 := &notifier{}
	a1, run1 := start(t, cfg, n1)

	msgs := obs.WaitFor(t, 20*time.Second, "online status", func(m []presencetest.Received) bool {
		for _, s := range statuses(m) {
			if s.State == presence.StateOnline {
				return true
			}
		}
		return false
	})
	online := statuses(msgs)[0]
	devices := cp.Devices()
	if len(devices) != 1 || devices[0] != online.Device {
		t.Fatalf("online as %q, control plane has %v", online.Device, devices)
	}
	device := online.Device
	// READY follows the start of the presence task, which may already have
	// connected: wait for it rather than race it.
	waitFor(t, 10*time.Second, "READY", func() bool { return len(n1.get()) > 0 })
	if got := n1.get(); got[0] != "READY" {
		t.Fatalf("notifications %v, want READY first", got)
	}

	obs.WaitFor(t, 10*time.Second, "heartbeat", func(m []presencetest.Received) bool {
		hb := heartbeats(m)
		return len(hb) > 0 && hb[0].Device == device && hb[0].Schema == agent.TelemetrySchema && hb[0].DeviceType != "" && hb[0].MsgID != ""
	})

	// Renewal at 10% of 30 s: within a few seconds, on the same connection.
	waitFor(t, 20*time.Second, "certificate renewal", func() bool { return cp.Calls("renew") >= 1 })
	obs.WaitFor(t, 10*time.Second, "heartbeat after renewal", func(m []presencetest.Received) bool {
		hb := heartbeats(m)
		return len(hb) > 0 && hb[len(hb)-1].Renewals >= 1
	})
	if hs := broker.handshakes(); len(hs) != 1 {
		t.Fatalf("broker saw %d TLS handshakes, want 1: renewal must not drop the connection", len(hs))
	}
	first := broker.handshakes()[0]

	// Safe reload applies; a restart-only change is refused.
	next := *cfg
	next.Labels = map[string]string{"site": "lab-7"}
	if err := a1.Reload(&next); err != nil {
		t.Fatalf("reload labels: %v", err)
	}
	obs.WaitFor(t, 10*time.Second, "heartbeat with labels", func(m []presencetest.Received) bool {
		hb := heartbeats(m)
		return len(hb) > 0 && hb[len(hb)-1].Labels["site"] == "lab-7"
	})
	bad := next
	bad.StatePath = filepath.Join(t.TempDir(), "other.db")
	if err := a1.Reload(&bad); err == nil || !strings.Contains(err.Error(), "state_path") {
		t.Fatalf("reload of state_path: %v", err)
	}

	// The broker drops the client: the reconnect presents the renewed
	// certificate.
	cl, ok := broker.srv.Clients.Get(device)
	if !ok {
		t.Fatal("device not connected to the broker")
	}
	cl.Stop(errors.New("test kicks the client"))
	waitFor(t, 15*time.Second, "reconnect", func() bool { return len(broker.handshakes()) >= 2 })
	if hs := broker.handshakes(); hs[1] == first {
		t.Fatalf("reconnected with the old certificate %s", first)
	}

	run1.stop(t)
	if got := n1.get(); got[len(got)-1] != "STOPPING" {
		t.Fatalf("notifications %v, want STOPPING last", got)
	}
	msgs = obs.WaitFor(t, 10*time.Second, "offline status", func(m []presencetest.Received) bool {
		s := statuses(m)
		return len(s) > 0 && s[len(s)-1].State == presence.StateOffline
	})
	lastSession := statuses(msgs)[len(statuses(msgs))-1].Session

	st, err := agent.ReadStatus(cfg)
	if err != nil || !st.Enrolled || st.DeviceID != device || st.Running {
		t.Fatalf("status after stop: %+v %v", st, err)
	}

	// Restart on the same state: same identity, no enrollment.
	_, run2 := start(t, cfg, &notifier{})
	obs.WaitFor(t, 20*time.Second, "online after restart", func(m []presencetest.Received) bool {
		s := statuses(m)
		return len(s) > 0 && s[len(s)-1].State == presence.StateOnline && s[len(s)-1].Session > lastSession
	})
	if s := statuses(obs.Messages()); s[len(s)-1].Device != device {
		t.Fatalf("restarted as %s, was %s", s[len(s)-1].Device, device)
	}
	if cp.Calls("enroll") != 1 || cp.Calls("activate") != 1 {
		t.Fatalf("enroll called %d, activate %d times; want once each", cp.Calls("enroll"), cp.Calls("activate"))
	}
	st, err = agent.ReadStatus(cfg)
	if err != nil || !st.Running || st.DeviceID != device {
		t.Fatalf("status while running: %+v %v", st, err)
	}
	run2.stop(t)
}

func TestEnrollRefusedAndRetried(t *testing.T) {
	cp := enrolltest.Start(t, enrolltest.Options{})
	cp.AddToken("tok-1", time.Now().Add(time.Hour))
	cfg := testConfig(t, cp, "mqtts://127.0.0.1:1")
	logger := slog.New(slog.NewTextHandler(testWriter{t}, nil))

	// Transient failures are retried, then enrollment succeeds.
	cp.FailNext("enroll", 2, 503, "INTERNAL")
	a, err := agent.New(cfg, logger, agent.WithNotifier(&notifier{}), agent.WithRetry(10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, fresh, err := a.Enroll(ctx)
	if err != nil || !fresh || !st.Enrolled || cp.Calls("enroll") != 3 {
		t.Fatalf("enroll: %+v fresh=%v err=%v calls=%d", st, fresh, err, cp.Calls("enroll"))
	}
	st2, fresh, err := a.Enroll(ctx)
	if err != nil || fresh || st2.DeviceID != st.DeviceID || cp.Calls("enroll") != 3 {
		t.Fatalf("second enroll: %+v fresh=%v err=%v", st2, fresh, err)
	}

	// A used token is a permanent, explained failure.
	cfg2 := testConfig(t, cp, "mqtts://127.0.0.1:1")
	a2, err := agent.New(cfg2, logger, agent.WithNotifier(&notifier{}))
	if err != nil {
		t.Fatal(err)
	}
	err = a2.Run(ctx)
	var ee *agent.EnrollError
	if !errors.As(err, &ee) || !errors.Is(err, enroll.ErrTokenUsed) || !strings.Contains(err.Error(), "new one") {
		t.Fatalf("Run with a used token: %v", err)
	}
}

func TestNew(t *testing.T) {
	cfg := agent.DefaultConfig()
	if _, err := agent.New(cfg, nil); err == nil || !strings.Contains(err.Error(), "server_url") {
		t.Fatalf("New accepted an invalid config: %v", err)
	}
}
