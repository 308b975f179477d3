package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/broker"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/ca"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/rollout"
)

// externalBroker is the control plane's side of an external MQTT broker:
// its client identity (a certificate from the platform CA, issued in memory
// at start; the ACL grants it tg/v1/#) and, when the broker is a mosquitto
// whose files it manages, the synchroniser that keeps them current.
type externalBroker struct {
	url  string
	tls  *tls.Config
	log  *slog.Logger
	sync *mosquittoSyncer // nil: not managed
	// ready is closed when a managed mosquitto's files are current.
	ready chan struct{}

	// onAttestation receives devices' evidence (set before Run; nil: not
	// subscribed).
	onAttestation func(broker.Message)
	// onJobReport receives devices' job reports (topic, payload; set
	// before Run; nil: not subscribed).
	onJobReport func(topic string, payload []byte)
	// onReconnect runs after every (re)connection (set before Run; nil:
	// nothing): the broker may have lost its retained messages.
	onReconnect func()

	mu     sync.Mutex
	client paho.Client // runPresence's connection; nil before and after
}

func newExternalBroker(cfg Config, auth *ca.Authority, cp *ControlPlane, log *slog.Logger) (*externalBroker, error) {
	certPEM, keyPEM, err := auth.IssueControlPlaneCert("")
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(auth.PlatformCA())
	e := &externalBroker{
		url: cfg.MQTT.External.URL,
		tls: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		log: log, ready: make(chan struct{}),
	}
	if m := cfg.MQTT.External.Mosquitto; m != nil {
		w, err := newMosquittoWriter(cfg, cp.store, auth, m.Dir, m.Group, time.Now)
		if err != nil {
			return nil, err
		}
		r := mosquittoReloader{pidFile: m.PIDFile, command: m.ReloadCommand}
		e.sync = newMosquittoSyncer(w, r.reload, log.With("subsystem", "mosquitto"))
	}
	return e, nil
}

// syncNow brings a managed mosquitto up to date and waits (bounded) until
// it was told; why names the cause in the log.
func (e *externalBroker) syncNow(ctx context.Context, why string) {
	if e == nil || e.sync == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, mosquittoWait)
	defer cancel()
	if err := e.sync.Sync(ctx); err != nil {
		e.log.Warn("mosquitto not updated after "+why+"; the periodic sync retries", "error", err)
	}
}

// options returns paho options for a connection as the control plane.
func (e *externalBroker) options(clientID string) *paho.ClientOptions {
	return paho.NewClientOptions().
		AddBroker(e.url).
		SetClientID(clientID).
		SetTLSConfig(e.tls.Clone()).
		SetOrderMatters(false).
		SetConnectTimeout(10 * time.Second)
}

// kick ends the MQTT connection of the client with this client id (agents
// use their device id) by taking its session over with a clean session and
// disconnecting at once. mosquitto keeps a revoked client's open connection
// (it re-reads the ACL per message, so the connection is useless but stays);
// after the kick the client's reconnect meets the new CRL and fails the TLS
// handshake.
func (e *externalBroker) kick(ctx context.Context, clientID string) error {
	c := paho.NewClient(e.options(clientID).SetCleanSession(true).SetAutoReconnect(false))
	t := c.Connect()
	select {
	case <-t.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := t.Error(); err != nil {
		return fmt.Errorf("connect as %s to end its session: %w", clientID, err)
	}
	c.Disconnect(0)
	return nil
}

// runPresence feeds the presence tracker from the external broker: it
// connects as the control plane, trusting only the platform CA for the
// broker's certificate, and subscribes to every status topic, again on each
// reconnect (the retained statuses come with every subscription, so an
// outage of the broker heals itself). paho runs with SetOrderMatters(false)
// (DESIGN.md §3) and the tracker's handler never blocks.
func (e *externalBroker) runPresence(ctx context.Context, p *presenceTracker) error {
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	handler := func(_ paho.Client, m paho.Message) {
		p.handle(broker.Message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained()})
	}
	opts := e.options("tg-controlplane-" + hex.EncodeToString(suffix[:])).
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(2 * time.Second).
		SetMaxReconnectInterval(10 * time.Second).
		SetOnConnectHandler(func(c paho.Client) {
			e.log.Info("connected to the external broker", "url", e.url)
			if t := c.Subscribe(StatusFilter, 1, handler); t.WaitTimeout(10*time.Second) && t.Error() != nil {
				e.log.Warn("subscribe to device statuses", "error", t.Error())
			}
			if on := e.onAttestation; on != nil {
				h := func(_ paho.Client, m paho.Message) {
					on(broker.Message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained()})
				}
				if t := c.Subscribe(AttestationFilter, 1, h); t.WaitTimeout(10*time.Second) && t.Error() != nil {
					e.log.Warn("subscribe to attestation evidence", "error", t.Error())
				}
			}
			if on := e.onJobReport; on != nil {
				h := func(_ paho.Client, m paho.Message) { on(m.Topic(), m.Payload()) }
				if t := c.Subscribe(rollout.ReportFilter, 1, h); t.WaitTimeout(10*time.Second) && t.Error() != nil {
					e.log.Warn("subscribe to job reports", "error", t.Error())
				}
			}
			if on := e.onReconnect; on != nil {
				on()
			}
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			e.log.Warn("lost the external broker; reconnecting", "error", err)
		})
	client := paho.NewClient(opts)
	client.Connect() // retried in the background until it succeeds
	e.mu.Lock()
	e.client = client
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.client = nil
		e.mu.Unlock()
		client.Disconnect(250)
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.wake:
			p.flush(ctx)
		}
	}
}

// externalPublishTimeout bounds the wait for the broker's PUBACK.
const externalPublishTimeout = 10 * time.Second

// publish publishes a retained QoS 1 message as the control plane over the
// presence connection and waits for the broker's acknowledgement.
func (e *externalBroker) publish(topic string, payload []byte) error {
	return e.publishMsg(topic, payload, true)
}

// publishMsg publishes a QoS 1 message as the control plane over the
// presence connection and waits for the broker's acknowledgement.
func (e *externalBroker) publishMsg(topic string, payload []byte, retain bool) error {
	e.mu.Lock()
	c := e.client
	e.mu.Unlock()
	if c == nil || !c.IsConnectionOpen() {
		return errors.New("not connected to the external broker")
	}
	t := c.Publish(topic, 1, retain, payload)
	if !t.WaitTimeout(externalPublishTimeout) {
		return fmt.Errorf("no acknowledgement from the external broker within %s", externalPublishTimeout)
	}
	return t.Error()
}

// Run runs the synchroniser of a managed mosquitto (if any) and closes
// ready once the files are current; presence runs as its own task.
func (e *externalBroker) Run(ctx context.Context) error {
	if e.sync == nil {
		close(e.ready)
		<-ctx.Done()
		return nil
	}
	return e.sync.Run(ctx, e.ready)
}

// disconnectDevice makes a revocation or deletion reach the broker: the
// files are rewritten without the device (and its serials in the CRL),
// mosquitto is reloaded, then its open connection is ended.
func (e *externalBroker) disconnectDevice(tenant, device string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*mosquittoWait)
	defer cancel()
	if e.sync == nil {
		e.log.Warn("external broker not managed: regenerate its ACL and CRL with `tg-controlplane mosquitto-config` and reload it to cut the device off",
			"tenant", tenant, "device", device)
		return
	}
	e.syncNow(ctx, "a revocation")
	if err := e.kick(ctx, device); err != nil {
		e.log.Warn("end the revoked device's broker connection", "tenant", tenant, "device", device, "error", err)
		return
	}
	e.log.Info("revoked device's broker connection ended", "tenant", tenant, "device", device)
}

// wrapAPI syncs a managed mosquitto around the operator API's requests that
// change who may use the broker: before MQTT credentials are issued (so the
// operator, however recently created, is in the ACL when it connects) and
// after operators are created, changed or deleted. Device revocation and
// deletion reach it through DisconnectDevice.
func (e *externalBroker) wrapAPI(next http.Handler) http.Handler {
	if e == nil || e.sync == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mutating := r.Method != http.MethodGet && r.Method != http.MethodHead
		switch {
		case mutating && r.URL.Path == "/api/v1/mqtt/credentials":
			e.syncNow(r.Context(), "an MQTT credential request")
		case mutating && (r.URL.Path == "/api/v1/operators" || strings.HasPrefix(r.URL.Path, "/api/v1/operators/")):
			defer e.sync.Trigger()
		}
		next.ServeHTTP(w, r)
	})
}
