// Package presencetest provides real MQTT brokers and helpers for tests of
// the agent's MQTT subsystems: an in-process mochi broker, a mosquitto
// process (Debian's mosquitto package), an in-memory session counter and an
// observing client. Brokers can be stopped and started again on the same
// address to simulate outages.
package presencetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Broker is a restartable MQTT broker listening on a fixed loopback address.
type Broker interface {
	// URL is tcp://127.0.0.1:<port>; it stays the same across restarts.
	URL() string
	Start(t testing.TB)
	Stop(t testing.TB)
}

// Sessions is an in-memory SessionCounter that can fail on demand.
type Sessions struct {
	mu   sync.Mutex
	n    uint64
	Fail error // returned by NextSession when set
}

// NextSession increments and returns the counter.
func (s *Sessions) NextSession() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return 0, s.Fail
	}
	s.n++
	return s.n, nil
}

// Current returns the last number handed out.
func (s *Sessions) Current() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// Mochi is an in-process mochi-mqtt broker with the allow-all auth hook.
type Mochi struct {
	addr string
	mu   sync.Mutex
	srv  *mqtt.Server
}

// StartMochi starts a mochi broker on a free loopback port; it is stopped
// when the test ends.
func StartMochi(t testing.TB) *Mochi {
	m := &Mochi{addr: FreeAddr(t)}
	m.Start(t)
	t.Cleanup(func() { m.Stop(t) })
	return m
}

// URL implements Broker.
func (m *Mochi) URL() string { return "tcp://" + m.addr }

// Server returns the running server (nil while stopped).
func (m *Mochi) Server() *mqtt.Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.srv
}

// Start implements Broker.
func (m *Mochi) Start(t testing.TB) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srv != nil {
		return
	}
	srv := mqtt.New(&mqtt.Options{
		InlineClient: true,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	// Keep retained messages forever, as the real deployment must (mochi
	// otherwise expires them after 24 h).
	srv.Options.Capabilities.MaximumMessageExpiryInterval = 0
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	var err error
	for range 50 { // the port may linger briefly after a Stop
		if err = srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: m.addr})); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("mochi listen %s: %v", m.addr, err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	m.srv = srv
}

// Stop implements Broker: listeners close and clients are disconnected.
func (m *Mochi) Stop(t testing.TB) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srv != nil {
		_ = m.srv.Close()
		m.srv = nil
	}
}

// Mosquitto runs Debian's mosquitto binary.
type Mosquitto struct {
	addr, dir string
	bin       string
	mu        sync.Mutex
	cmd       *exec.Cmd
	stderr    *strings.Builder
}

// MosquittoPath finds the mosquitto binary, or "".
func MosquittoPath() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}

// StartMosquitto starts mosquitto on a free loopback port. When the binary
// is missing the test is skipped, or fails under CI=true: CI must have it.
func StartMosquitto(t testing.TB) *Mosquitto {
	t.Helper()
	bin := MosquittoPath()
	if bin == "" {
		const why = "mosquitto not installed; run hack/install-deps.sh (apt-get install mosquitto)"
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	m := &Mosquitto{addr: FreeAddr(t), dir: t.TempDir(), bin: bin}
	m.Start(t)
	t.Cleanup(func() { m.Stop(t) })
	return m
}

// URL implements Broker.
func (m *Mosquitto) URL() string { return "tcp://" + m.addr }

// Start implements Broker.
func (m *Mosquitto) Start(t testing.TB) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return
	}
	_, port, _ := net.SplitHostPort(m.addr)
	conf := filepath.Join(m.dir, "mosquitto.conf")
	body := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n", port)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	m.stderr = &strings.Builder{}
	cmd := exec.Command(m.bin, "-c", conf)
	cmd.Stderr = m.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	m.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", m.addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			m.cmd = nil
			t.Fatalf("mosquitto did not listen on %s: %v; stderr:\n%s", m.addr, err, m.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop implements Broker with SIGKILL: an outage, not a clean shutdown.
func (m *Mosquitto) Stop(t testing.TB) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
	m.cmd = nil
}

// Received is one message seen by an Observer.
type Received struct {
	Topic    string
	Payload  string
	Retained bool
}

// Observer is an independent MQTT client (a control plane or an operator's
// mosquitto_sub) that records what it receives on one filter. It reconnects
// and resubscribes by itself after broker restarts.
type Observer struct {
	client paho.Client
	filter string
	mu     sync.Mutex
	got    []Received
	ready  bool
	notify chan struct{}
}

// Observe connects a new client with a clean session and subscribes to
// filter at QoS 1. It returns once the subscription is acknowledged.
func Observe(t testing.TB, brokerURL, filter string) *Observer {
	t.Helper()
	o := &Observer{filter: filter, notify: make(chan struct{}, 1)}
	subscribed := make(chan struct{}, 1)
	opts := paho.NewClientOptions().AddBroker(brokerURL).
		SetClientID(fmt.Sprintf("observer-%d", time.Now().UnixNano())).
		SetCleanSession(true).
		// The observer checks arrival order, and its callback never blocks,
		// so paho's ordered delivery is safe here (unlike in the agent).
		SetOrderMatters(true).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(200 * time.Millisecond).
		SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond).
		SetConnectionLostHandler(func(paho.Client, error) {
			o.mu.Lock()
			o.ready = false
			o.mu.Unlock()
		}).
		SetOnConnectHandler(func(c paho.Client) {
			tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
				o.mu.Lock()
				o.got = append(o.got, Received{m.Topic(), string(m.Payload()), m.Retained()})
				o.mu.Unlock()
				select {
				case o.notify <- struct{}{}:
				default:
				}
			})
			go func() {
				if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
					o.mu.Lock()
					o.ready = true
					o.mu.Unlock()
					select {
					case subscribed <- struct{}{}:
					default:
					}
				}
			}()
		})
	o.client = paho.NewClient(opts)
	o.client.Connect()
	select {
	case <-subscribed:
	case <-time.After(10 * time.Second):
		t.Fatalf("observer could not subscribe to %s on %s", filter, brokerURL)
	}
	t.Cleanup(func() { o.client.Disconnect(0) })
	return o
}

// Ready reports whether the observer is connected and subscribed.
func (o *Observer) Ready() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ready
}

// Messages returns a copy of everything received so far.
func (o *Observer) Messages() []Received {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Received(nil), o.got...)
}

// WaitFor waits until cond holds for the received messages, or fails the
// test after timeout.
func (o *Observer) WaitFor(t testing.TB, timeout time.Duration, what string, cond func([]Received) bool) []Received {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		msgs := o.Messages()
		if cond(msgs) {
			return msgs
		}
		select {
		case <-o.notify:
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s on %s; received %d messages: %v", what, o.filter, len(msgs), msgs)
		}
	}
}

// Publish sends payload on topic at QoS 1 from the observer's client and
// waits for the broker's acknowledgement.
func (o *Observer) Publish(t testing.TB, topic string, retained bool, payload string) {
	t.Helper()
	tok := o.client.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("observer publish %s: %v", topic, tok.Error())
	}
}
