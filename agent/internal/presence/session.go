package presence

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Sentinel errors; returned errors wrap them.
var (
	// ErrNotConnected means there is no connection to the broker right now.
	// Nothing was sent; the caller (the outbox) retries later.
	ErrNotConnected = errors.New("presence: not connected to the broker")

	// ErrConnectionLost means the connection dropped before the broker
	// acknowledged the message; it may or may not have been delivered.
	ErrConnectionLost = errors.New("presence: connection lost before the broker acknowledged")

	// ErrAlreadyRunning means Run was called while another Run is active.
	ErrAlreadyRunning = errors.New("presence: session already running")
)

// SessionCounter hands out session numbers. It must persist (fsync) the
// increment before returning; *state.DB implements it.
type SessionCounter interface {
	NextSession() (uint64, error)
}

// Message is an inbound MQTT message.
type Message struct {
	Topic     string
	Payload   []byte
	Duplicate bool // the broker resent it (QoS 1 redelivery)
}

// Handler processes one inbound message. It runs on the subscription's own
// goroutine; ctx ends when the session stops.
type Handler func(ctx context.Context, m Message)

// Config configures a Session. Tenant, Device, BrokerURL and Sessions are
// required.
type Config struct {
	BrokerURL string      // tcp:// or mqtt:// (plain), ssl://, tls:// or mqtts:// (TLS)
	TLS       *tls.Config // client certificate and roots; required for TLS URLs
	Tenant    string
	Device    string
	ClientID  string // default Device: one id per device makes the broker take over stale connections
	Sessions  SessionCounter

	KeepAlive      time.Duration // default 30s
	ConnectTimeout time.Duration // dial + TLS + CONNACK, also bounds status publishes; default 10s
	Backoff        Backoff       // reconnect delays; default 1s→60s ±20%
	Clock          Clock         // default the real clock

	// Dial opens the transport (before TLS). Default net.Dialer. Tests use it
	// to reach the raw connection.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// OnConnect, if set, is called after each connection announced itself
	// online (for example outbox.Kick, to retry at once). It runs on Run's
	// goroutine and must not block.
	OnConnect func(session uint64)

	Logger *slog.Logger // default slog.Default()
}

func (c *Config) validate() error {
	if c.Tenant == "" || c.Device == "" {
		return errors.New("presence: tenant and device are required")
	}
	if c.Sessions == nil {
		return errors.New("presence: a session counter is required")
	}
	u, err := url.Parse(c.BrokerURL)
	if err != nil {
		return fmt.Errorf("presence: broker url: %w", err)
	}
	switch u.Scheme {
	case "tcp", "mqtt":
	case "ssl", "tls", "mqtts":
		if c.TLS == nil {
			return fmt.Errorf("presence: broker url %s needs a TLS config", c.BrokerURL)
		}
	default:
		return fmt.Errorf("presence: broker url %s: unsupported scheme %q", c.BrokerURL, u.Scheme)
	}
	if u.Port() == "" {
		return fmt.Errorf("presence: broker url %s has no port", c.BrokerURL)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.ClientID == "" {
		c.ClientID = c.Device
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = 30 * time.Second
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	c.Backoff.setDefaults()
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	if c.Dial == nil {
		d := &net.Dialer{}
		c.Dial = d.DialContext
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Session is the agent's MQTT session. Create it with New, register
// subscriptions, then Run it.
type Session struct {
	cfg   Config
	log   *slog.Logger
	topic string // status topic
	fatal chan error

	mu      sync.Mutex
	conn    *conn // nil while disconnected
	subs    []*subscription
	running bool
	runCtx  context.Context
	workers sync.WaitGroup
}

// New validates cfg and returns an idle Session.
func New(cfg Config) (*Session, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Session{
		cfg:   cfg,
		log:   cfg.Logger,
		topic: StatusTopic(cfg.Tenant, cfg.Device),
		fatal: make(chan error, 1),
	}, nil
}

// conn is one network connection: one paho client, one session number.
type conn struct {
	client   paho.Client
	session  uint64
	lost     chan struct{}
	lostOnce sync.Once
	lostErr  error
}

func (c *conn) markLost(err error) {
	c.lostOnce.Do(func() {
		c.lostErr = err
		close(c.lost)
	})
}

// wait blocks until tok completes, ctx ends or the connection drops.
func (c *conn) wait(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-c.lost:
		return fmt.Errorf("%w: %v", ErrConnectionLost, c.lostErr)
	}
}

// Connected reports whether the session is connected and which session
// number it has.
func (s *Session) Connected() (bool, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return false, 0
	}
	return true, s.conn.session
}

// Run connects and stays connected until ctx ends; then it publishes
// offline, disconnects and returns nil. It returns an error only when the
// session counter fails or a handler panics.
func (s *Session) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return ErrAlreadyRunning
	}
	s.running, s.runCtx = true, ctx
	for _, sub := range s.subs {
		s.startWorker(ctx, sub)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running, s.runCtx = false, nil
		s.mu.Unlock()
		s.workers.Wait()
	}()

	attempt := 0
	for ctx.Err() == nil {
		n, err := s.cfg.Sessions.NextSession()
		if err != nil {
			return fmt.Errorf("presence: next session number: %w", err)
		}
		c, err := s.connect(ctx, n)
		if err == nil {
			attempt = 0
			if s.cfg.OnConnect != nil {
				s.cfg.OnConnect(n)
			}
			select {
			case <-ctx.Done():
				s.goodbye(c)
				return nil
			case err := <-s.fatal:
				s.goodbye(c)
				return err
			case <-c.lost:
				s.setConn(nil)
				s.log.Warn("mqtt connection lost", "session", n, "err", c.lostErr)
			}
		} else if ctx.Err() == nil {
			s.log.Warn("mqtt connect failed", "session", n, "broker", s.cfg.BrokerURL, "err", err)
		}
		attempt++
		d := s.cfg.Backoff.Delay(attempt)
		s.log.Info("mqtt reconnecting", "attempt", attempt, "in", d)
		select {
		case <-ctx.Done():
		case err := <-s.fatal:
			return err
		case <-s.cfg.Clock.After(d):
		}
	}
	return nil
}

func (s *Session) statusPayload(n uint64, state string, ts time.Time) []byte {
	b, _ := json.Marshal(Status{Schema: StatusSchema, Device: s.cfg.Device, State: state, Session: n, TS: ts})
	return b
}

// connect opens connection n, renews the subscriptions, announces it online and
// subscriptions. On error nothing is left running.
func (s *Session) connect(ctx context.Context, n uint64) (*conn, error) {
	c := &conn{session: n, lost: make(chan struct{})}
	u, _ := url.Parse(s.cfg.BrokerURL) // validated in New
	useTLS := u.Scheme == "ssl" || u.Scheme == "tls" || u.Scheme == "mqtts"
	opts := paho.NewClientOptions().
		AddBroker("tcp://"+u.Host).
		SetClientID(s.cfg.ClientID).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetOrderMatters(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetKeepAlive(s.cfg.KeepAlive).
		SetPingTimeout(s.cfg.ConnectTimeout).
		SetConnectTimeout(s.cfg.ConnectTimeout).
		SetWriteTimeout(s.cfg.ConnectTimeout).
		SetBinaryWill(s.topic, s.statusPayload(n, StateOffline, time.Time{}), 1, true).
		SetConnectionLostHandler(func(_ paho.Client, err error) { c.markLost(err) }).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			dctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
			defer cancel()
			raw, err := s.cfg.Dial(dctx, "tcp", u.Host)
			if err != nil || !useTLS {
				return raw, err
			}
			tc := s.cfg.TLS.Clone()
			if tc.ServerName == "" {
				tc.ServerName = u.Hostname()
			}
			tlsConn := tls.Client(raw, tc)
			if err := tlsConn.HandshakeContext(dctx); err != nil {
				_ = raw.Close()
				return nil, fmt.Errorf("tls handshake: %w", err)
			}
			return tlsConn, nil
		})
	c.client = paho.NewClient(opts)

	if err := c.wait(ctx, c.client.Connect()); err != nil {
		c.client.Disconnect(0)
		return nil, fmt.Errorf("connect: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	// Subscriptions first, then the online status: "online" means the
	// device can take commands, so a control plane that reacts to it (an
	// attestation challenge) is heard.
	s.mu.Lock()
	s.conn = c
	subs := append([]*subscription(nil), s.subs...)
	s.mu.Unlock()
	for _, sub := range subs {
		if err := s.subscribe(pctx, c, sub); err != nil {
			if errors.Is(err, ErrConnectionLost) {
				s.setConn(nil)
				return nil, err
			}
			s.log.Error("mqtt subscribe failed", "filter", sub.filter, "err", err)
		}
	}
	online := s.statusPayload(n, StateOnline, s.cfg.Clock.Now().UTC())
	if err := c.wait(pctx, c.client.Publish(s.topic, 1, true, online)); err != nil {
		s.setConn(nil)
		c.client.Disconnect(0)
		return nil, fmt.Errorf("publish online status: %w", err)
	}
	s.log.Info("mqtt connected", "broker", s.cfg.BrokerURL, "session", n)
	return c, nil
}

// goodbye ends connection c cleanly: offline for its session, then
// DISCONNECT, which tells the broker to discard the Will.
func (s *Session) goodbye(c *conn) {
	s.setConn(nil)
	ctx, cancel := context.WithTimeout(context.Background(), min(s.cfg.ConnectTimeout, 5*time.Second))
	defer cancel()
	offline := s.statusPayload(c.session, StateOffline, s.cfg.Clock.Now().UTC())
	if err := c.wait(ctx, c.client.Publish(s.topic, 1, true, offline)); err != nil {
		s.log.Warn("publish offline status on shutdown", "session", c.session, "err", err)
	}
	c.client.Disconnect(250)
	s.log.Info("mqtt disconnected", "session", c.session)
}

func (s *Session) setConn(c *conn) {
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
}

// Publish sends one message on the current connection. For QoS 1 and 2 it
// returns nil only after the broker acknowledged the message. It does not
// queue: while disconnected it fails with ErrNotConnected (use the outbox
// for messages that must arrive).
func (s *Session) Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return ErrNotConnected
	}
	if err := c.wait(ctx, c.client.Publish(topic, qos, retained, payload)); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

// subscription is one registered filter with its FIFO and worker.
type subscription struct {
	filter  string
	handler Handler
	queue   chan Message
}

// Subscribe registers handler for filter at QoS 1. The subscription is made
// on the current connection (if any) and renewed on every connect; a
// failure to subscribe now is logged and retried at the next connect.
// Handlers for one subscription run one at a time; arrival order is not
// guaranteed (see the package documentation).
func (s *Session) Subscribe(filter string, handler Handler) error {
	if filter == "" || handler == nil {
		return errors.New("presence: subscribe needs a filter and a handler")
	}
	sub := &subscription{filter: filter, handler: handler, queue: make(chan Message, 64)}
	s.mu.Lock()
	s.subs = append(s.subs, sub)
	if s.running {
		s.startWorker(s.runCtx, sub)
	}
	c := s.conn
	s.mu.Unlock()
	if c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ConnectTimeout)
		defer cancel()
		if err := s.subscribe(ctx, c, sub); err != nil {
			s.log.Warn("mqtt subscribe failed; retrying on next connect", "filter", filter, "err", err)
		}
	}
	return nil
}

func (s *Session) subscribe(ctx context.Context, c *conn, sub *subscription) error {
	runCtx := ctx
	s.mu.Lock()
	if s.runCtx != nil {
		runCtx = s.runCtx
	}
	s.mu.Unlock()
	// paho calls this on a goroutine of its own (SetOrderMatters(false)) and
	// acknowledges after it returns: handing over blocks at most that
	// goroutine and delays this message's PUBACK, never the connection.
	deliver := func(_ paho.Client, m paho.Message) {
		select {
		case sub.queue <- Message{Topic: m.Topic(), Payload: m.Payload(), Duplicate: m.Duplicate()}:
		case <-runCtx.Done():
		}
	}
	tok := c.client.Subscribe(sub.filter, 1, deliver)
	if err := c.wait(ctx, tok); err != nil {
		return err
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code == 0x80 {
				return fmt.Errorf("broker refused subscription to %s", f)
			}
		}
	}
	return nil
}

// startWorker runs sub's handler loop; s.mu must be held.
func (s *Session) startWorker(ctx context.Context, sub *subscription) {
	s.workers.Add(1)
	go func() {
		defer s.workers.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-sub.queue:
				if err := s.call(ctx, sub, m); err != nil {
					select {
					case s.fatal <- err:
					default:
					}
					return
				}
			}
		}
	}()
}

func (s *Session) call(ctx context.Context, sub *subscription, m Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("presence: handler for %s panicked on %s: %v", sub.filter, m.Topic, r)
		}
	}()
	sub.handler(ctx, m)
	return nil
}
