package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
)

// testLogger sends the broker's logs to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// startEmbedded runs an embedded broker on loopback for the test.
func startEmbedded(t *testing.T) (*Broker, *harness) {
	t.Helper()
	ca := newTestCA(t)
	srvCert, _ := ca.server(t)
	b, err := New(Config{
		Addr:           "127.0.0.1:0",
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &srvCert, nil },
		Authority:      ca,
		Logger:         testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("broker did not stop")
		}
	})
	select {
	case <-b.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	return b, &harness{addr: b.Addr().String(), ca: ca, strict: true, certs: map[mqttacl.Identity]tls.Certificate{}}
}

func TestEmbeddedConformance(t *testing.T) {
	_, h := startEmbedded(t)
	runConformance(t, h)
}

func TestEmbeddedRevocation(t *testing.T) {
	b, h := startEmbedded(t)

	// A revoked certificate is refused at TLS.
	revokedCert, revokedLeaf := h.ca.issue(t, devB, "")
	h.ca.revoke(revokedLeaf.SerialNumber)
	if _, err := h.connect(t, devB, clientOpts{cert: &revokedCert}); err == nil {
		t.Error("revoked certificate connected")
	}

	// Revoking a connected device disconnects it at once.
	cert, leaf := h.ca.issue(t, devA, "")
	lost := make(chan error, 1)
	h.mustConnect(t, devA, clientOpts{cert: &cert, onLost: func(err error) { lost <- err }})
	other := h.mustConnect(t, devC, clientOpts{})
	h.ca.revoke(leaf.SerialNumber)
	if n := b.Disconnect(devA); n != 1 {
		t.Errorf("Disconnect(devA) = %d, want 1", n)
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("revoked device still connected")
	}
	if _, err := h.connect(t, devA, clientOpts{cert: &cert}); err == nil {
		t.Error("revoked device reconnected")
	}
	if !other.IsConnectionOpen() {
		t.Error("another device was disconnected")
	}
	if n := b.DisconnectRevoked(); n != 0 {
		t.Errorf("DisconnectRevoked = %d after Disconnect", n)
	}
}

func TestEmbeddedSessionsAreBoundToIdentity(t *testing.T) {
	_, h := startEmbedded(t)
	// dev-bbbb chooses dev-aaaa's client id: it must neither take over nor
	// disconnect dev-aaaa's session.
	var mu sync.Mutex
	lost := false
	h.mustConnect(t, devA, clientOpts{clientID: "dev-aaaa", onLost: func(error) { mu.Lock(); lost = true; mu.Unlock() }})
	h.mustConnect(t, devB, clientOpts{clientID: "dev-aaaa"})
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if lost {
		t.Error("a device with the same client id disconnected another identity")
	}
}

func TestEmbeddedInProcessPublishRetained(t *testing.T) {
	b, h := startEmbedded(t)
	verdict := mqttacl.FleetAttestationTopic("acme", "flt-1", "dev-aaaa")
	if err := b.Publish(verdict, []byte("good"), true, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish("$SYS/x", nil, false, 0); !errors.Is(err, ErrTopicNotAllowed) {
		t.Errorf("Publish($SYS) = %v", err)
	}
	rec := newRecorder()
	oc := h.mustConnect(t, opA, clientOpts{})
	subscribeCode(t, oc, mqttacl.FleetAttestationFilter("acme", "flt-1"), rec.handle)
	if m := rec.waitFor(t, "good"); !m.retained || m.topic != verdict {
		t.Errorf("got %+v", m)
	}

	// In-process subscriptions see device messages.
	got := make(chan Message, 1)
	unsub, err := b.Subscribe("tg/v1/+/devices/+/telemetry", func(m Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	dc := h.mustConnect(t, devA, clientOpts{})
	publish(t, dc, mqttacl.TelemetryTopic("acme", "dev-aaaa"), "t1", false)
	select {
	case m := <-got:
		if string(m.Payload) != "t1" {
			t.Errorf("got %q", m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-process subscriber got nothing")
	}
	if _, err := b.Subscribe("#", func(Message) {}); !errors.Is(err, ErrTopicNotAllowed) {
		t.Errorf("Subscribe(#) = %v", err)
	}
}

func TestEmbeddedOptions(t *testing.T) {
	b, _ := startEmbedded(t)
	caps := b.srv.Options.Capabilities
	if caps.MaximumMessageExpiryInterval != 0 {
		t.Errorf("MaximumMessageExpiryInterval = %d: retained messages would expire", caps.MaximumMessageExpiryInterval)
	}
	if caps.MaximumInflight != 65535 {
		t.Errorf("MaximumInflight = %d", caps.MaximumInflight)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	get := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil }
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"ok", Config{GetCertificate: get, Authority: ca}, true},
		{"dev loopback", Config{GetCertificate: get, Authority: ca, InsecureDevAddr: "127.0.0.1:1883"}, true},
		{"dev localhost", Config{GetCertificate: get, Authority: ca, InsecureDevAddr: "localhost:1883"}, true},
		{"dev ipv6 loopback", Config{GetCertificate: get, Authority: ca, InsecureDevAddr: "[::1]:1883"}, true},
		{"dev all interfaces", Config{GetCertificate: get, Authority: ca, InsecureDevAddr: ":1883"}, false},
		{"dev public", Config{GetCertificate: get, Authority: ca, InsecureDevAddr: "10.0.0.1:1883"}, false},
		{"dev in production", Config{GetCertificate: get, Authority: ca, InsecureDevAddr: "127.0.0.1:1883", Production: true}, false},
		{"no cert", Config{Authority: ca}, false},
		{"no authority", Config{GetCertificate: get}, false},
	}
	for _, tc := range tests {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate = %v", tc.name, err)
		}
	}
}
