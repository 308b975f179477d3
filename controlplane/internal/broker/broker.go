package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
)

const (
	tlsListenerID = "mtls"
	devListenerID = "insecure-dev"
)

// Sentinel errors.
var (
	// ErrNotRunning is returned by Run when it is called twice.
	ErrNotRunning = errors.New("broker: already run")
	// ErrTopicNotAllowed is returned by Publish for a topic outside tg/v1/.
	ErrTopicNotAllowed = errors.New("broker: topic not allowed")
)

// Broker is the embedded MQTT broker: a mochi server whose clients are
// authenticated by their verified client certificate's SPIFFE ID and
// authorised by mqttacl.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	srv     *mqtt.Server
	tlsConf *tls.Config

	mu    sync.Mutex
	conns map[*mqtt.Client]*session

	ran     atomic.Bool
	ready   chan struct{}
	tlsAddr net.Addr // set before ready is closed
	devAddr net.Addr
	subID   atomic.Int64
}

// session is what the broker knows about one connected client.
type session struct {
	id     mqttacl.Identity
	serial *big.Int // nil on the development listener
	expiry *time.Timer
}

// New builds a broker from cfg; it binds nothing until Run.
func New(cfg Config) (*Broker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	caps := mqtt.NewDefaultServerCapabilities()
	// Retained verdicts and statuses must outlive mochi's 24 h default;
	// a client may still set its own message expiry.
	caps.MaximumMessageExpiryInterval = 0
	// mochi drops (already acknowledged) messages for a subscriber with
	// more than MaximumInflight unacknowledged ones; raise it to the packet
	// id space. The control plane itself reads through inline
	// subscriptions, which have no inflight window at all.
	caps.MaximumInflight = math.MaxUint16
	b := &Broker{
		cfg:   cfg,
		log:   cfg.Logger,
		conns: make(map[*mqtt.Client]*session),
		ready: make(chan struct{}),
		srv: mqtt.New(&mqtt.Options{
			InlineClient: true,
			Capabilities: caps,
			Logger:       cfg.Logger,
		}),
	}
	b.tlsConf = b.newTLSConfig()
	if err := b.srv.AddHook(&aclHook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("add acl hook: %w", err)
	}
	return b, nil
}

func (b *Broker) newTLSConfig() *tls.Config {
	base := &tls.Config{
		MinVersion:       tls.VersionTLS12,
		GetCertificate:   b.cfg.GetCertificate,
		ClientAuth:       tls.RequireAndVerifyClientCert,
		VerifyConnection: b.verifyConnection,
	}
	// The CA pool is fetched per handshake so that CA rotation needs no
	// restart.
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = b.cfg.Authority.ClientCAs()
		return c, nil
	}
	return base
}

// verifyConnection runs after the chain is verified: it refuses revoked
// certificates and certificates without a valid SPIFFE identity at the TLS
// layer.
func (b *Broker) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no client certificate")
	}
	leaf := cs.PeerCertificates[0]
	if b.cfg.Authority.IsRevoked(leaf.SerialNumber) {
		return fmt.Errorf("client certificate %s is revoked", leaf.SerialNumber.Text(16))
	}
	if _, err := mqttacl.IdentityFromCert(leaf); err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	return nil
}

// Run binds the listeners, serves until ctx is cancelled, then closes every
// client connection and returns.
func (b *Broker) Run(ctx context.Context) error {
	if !b.ran.CompareAndSwap(false, true) {
		return ErrNotRunning
	}
	var lns []*listener
	defer func() {
		for _, l := range lns {
			l.Close(func(string) {})
			l.wait()
		}
	}()
	tcp, err := net.Listen("tcp", b.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen mqtt tls: %w", err)
	}
	lns = append(lns, newListener(tlsListenerID, tcp, b.tlsConf, b.cfg.HandshakeTimeout))
	b.tlsAddr = tcp.Addr()
	if b.cfg.InsecureDevAddr != "" {
		dev, err := net.Listen("tcp", b.cfg.InsecureDevAddr)
		if err != nil {
			return fmt.Errorf("listen mqtt insecure dev: %w", err)
		}
		b.log.Warn("plain-TCP MQTT listener for development; identities come from usernames", "addr", dev.Addr().String())
		lns = append(lns, newListener(devListenerID, dev, nil, b.cfg.HandshakeTimeout))
		b.devAddr = dev.Addr()
	}
	for _, l := range lns {
		if err := b.srv.AddListener(l); err != nil {
			return fmt.Errorf("add listener %s: %w", l.id, err)
		}
	}
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("serve mqtt: %w", err)
	}
	close(b.ready)
	b.log.Info("mqtt broker listening", "addr", b.tlsAddr.String())
	<-ctx.Done()
	if err := b.srv.Close(); err != nil {
		return fmt.Errorf("close mqtt: %w", err)
	}
	return nil
}

// Ready is closed once the listeners accept connections.
func (b *Broker) Ready() <-chan struct{} { return b.ready }

// Addr returns the mTLS listener's address; valid after Ready.
func (b *Broker) Addr() net.Addr { return b.tlsAddr }

// InsecureDevAddr returns the development listener's address, or nil;
// valid after Ready.
func (b *Broker) InsecureDevAddr() net.Addr { return b.devAddr }

// Publish publishes as the control plane, in process (no network hop, no
// ACL hook). The topic must be a valid topic under tg/v1/.
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if !mqttacl.CanPublish(mqttacl.ControlPlane(""), topic) {
		return fmt.Errorf("%w: %q", ErrTopicNotAllowed, topic)
	}
	if err := b.srv.Publish(topic, payload, retain, qos); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

// Message is a message delivered to an in-process subscription.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// Subscribe subscribes the control plane in process to filter (under
// tg/v1/). handler runs on the publishing client's goroutine: it must not
// block; hand work to a queue. Retained messages are delivered before
// Subscribe returns. The returned function unsubscribes.
func (b *Broker) Subscribe(filter string, handler func(Message)) (unsubscribe func(), err error) {
	if !mqttacl.CanSubscribe(mqttacl.ControlPlane(""), filter) {
		return nil, fmt.Errorf("%w: %q", ErrTopicNotAllowed, filter)
	}
	id := int(b.subID.Add(1))
	err = b.srv.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		handler(Message{Topic: pk.TopicName, Payload: pk.Payload, Retained: pk.FixedHeader.Retain})
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", filter, err)
	}
	return func() { _ = b.srv.Unsubscribe(filter, id) }, nil
}

// Disconnect closes, at once, every connection authenticated as id, and
// returns how many there were. The control plane calls it after revoking
// id's certificate (so that Authority.IsRevoked already refuses a
// reconnect). The clients' Wills are published.
func (b *Broker) Disconnect(id mqttacl.Identity) int {
	return b.disconnectWhere(func(s *session) bool { return s.id == id })
}

// DisconnectRevoked closes every connection whose certificate the
// Authority now reports revoked, and returns how many there were.
func (b *Broker) DisconnectRevoked() int {
	return b.disconnectWhere(func(s *session) bool {
		return s.serial != nil && b.cfg.Authority.IsRevoked(s.serial)
	})
}

func (b *Broker) disconnectWhere(match func(*session) bool) int {
	var victims []*mqtt.Client
	b.mu.Lock()
	for cl, s := range b.conns {
		if match(s) {
			victims = append(victims, cl)
		}
	}
	b.mu.Unlock()
	for _, cl := range victims {
		b.kick(cl, "revoked")
	}
	return len(victims)
}

func (b *Broker) kick(cl *mqtt.Client, why string) {
	b.log.Info("disconnecting mqtt client", "client", cl.ID, "reason", why)
	_ = b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
}

// Stats are counters for metrics.
type Stats struct {
	ClientsConnected int64
	Retained         int64
	// InflightDropped counts QoS>0 messages mochi dropped for a subscriber
	// whose inflight window was full.
	InflightDropped int64
}

// Stats returns the broker's counters.
func (b *Broker) Stats() Stats {
	return Stats{
		ClientsConnected: atomic.LoadInt64(&b.srv.Info.ClientsConnected),
		Retained:         atomic.LoadInt64(&b.srv.Info.Retained),
		InflightDropped:  atomic.LoadInt64(&b.srv.Info.InflightDropped),
	}
}

// identify returns the identity of a connecting client: from the verified
// peer certificate on the mTLS listener, from the username on the
// development listener.
func (b *Broker) identify(cl *mqtt.Client) (mqttacl.Identity, *x509.Certificate, error) {
	if cl.Net.Listener == devListenerID {
		id, err := mqttacl.ParseSPIFFEID(string(cl.Properties.Username))
		return id, nil, err
	}
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return mqttacl.Identity{}, nil, errors.New("not a TLS connection")
	}
	cs := tc.ConnectionState()
	if !cs.HandshakeComplete || len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return mqttacl.Identity{}, nil, errors.New("no verified client certificate")
	}
	leaf := cs.PeerCertificates[0]
	id, err := mqttacl.IdentityFromCert(leaf)
	return id, leaf, err
}

// admit authenticates a connecting client and binds its session to its
// identity. It returns a non-nil error to refuse the connection.
func (b *Broker) admit(cl *mqtt.Client) error {
	id, leaf, err := b.identify(cl)
	if err != nil {
		return err
	}
	if w := cl.Properties.Will; w.Flag == 1 && !mqttacl.CanPublish(id, w.TopicName) {
		return fmt.Errorf("%v may not publish its will on %q", id, w.TopicName)
	}
	// Sessions are keyed by client id in mochi. Prefixing the identity
	// keeps one identity from taking over, or squatting, another's
	// session by choosing the same client id.
	cl.ID = id.SPIFFEID() + "|" + cl.ID
	s := &session{id: id}
	if leaf != nil {
		s.serial = leaf.SerialNumber
	}
	b.mu.Lock()
	b.conns[cl] = s
	b.mu.Unlock()
	// Re-check revocation after registering: a Disconnect that ran between
	// the handshake and now did not see this client, but the revocation it
	// followed is visible here.
	if leaf != nil {
		if b.cfg.Authority.IsRevoked(leaf.SerialNumber) {
			b.forget(cl)
			return fmt.Errorf("%v: certificate revoked", id)
		}
		// A connection never outlives its certificate.
		b.mu.Lock()
		s.expiry = time.AfterFunc(time.Until(leaf.NotAfter), func() { b.kick(cl, "certificate expired") })
		b.mu.Unlock()
	}
	return nil
}

func (b *Broker) forget(cl *mqtt.Client) {
	b.mu.Lock()
	s, ok := b.conns[cl]
	delete(b.conns, cl)
	b.mu.Unlock()
	if ok && s.expiry != nil {
		s.expiry.Stop()
	}
}

func (b *Broker) identityOf(cl *mqtt.Client) (mqttacl.Identity, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.conns[cl]
	if !ok {
		return mqttacl.Identity{}, false
	}
	return s.id, true
}
