package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/broker"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/ca"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/dashboard"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/enroll"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/policy"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/registry"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/rollout"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/server"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/kek"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/sdnotify"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

var (
	_ broker.Authority = ca.BrokerAuthority{}
	_ api.CA           = (*ca.Authority)(nil)
	_ api.Revoker      = (*ControlPlane)(nil)
	_ api.Attester     = (*ControlPlane)(nil)
)

// Option adjusts New.
type Option func(*options)

type options struct {
	logger *slog.Logger
	extra  http.Handler
	now    func() time.Time
	getenv func(string) string
}

// WithLogger replaces the logger the configuration describes.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithHandler mounts h for every path outside /api/v1/ (the trainer's
// /v1/ API).
func WithHandler(h http.Handler) Option { return func(o *options) { o.extra = h } }

// WithClock replaces time.Now (tests of expiry).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithGetenv replaces os.Getenv for reading secrets (tests).
func WithGetenv(f func(string) string) Option { return func(o *options) { o.getenv = f } }

// ControlPlane is one control-plane node: the HTTP(S) API with enrollment,
// the fleet CAs, the embedded MQTT broker and the presence tracker.
type ControlPlane struct {
	cfg      Config
	log      *slog.Logger
	store    *store.Store
	kek      kek.Provider
	ca       *ca.Authority
	verifier *enroll.Verifier
	broker   *broker.Broker  // nil with an external broker
	external *externalBroker // nil with the embedded broker
	server   *server.Server
	presence *presenceTracker
	attest   *attestationService
	policy   *policy.Keys
	registry *registry.Registry
	rollouts *rollout.Engine
	dash     *dashboard.Dashboard
	now      func() time.Time

	ready chan struct{}
}

// New builds a control plane from a finished, valid configuration: it opens
// the KEK, the database (migrating it) and the CAs, but binds nothing until
// Run. In production it refuses a KEK that is not production-ready.
func New(cfg Config, opts ...Option) (*ControlPlane, error) {
	o := options{now: time.Now, getenv: os.Getenv}
	for _, f := range opts {
		f(&o)
	}
	cfg.Finish()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	log := o.logger
	if log == nil {
		log = NewLogger(cfg.Log, os.Stderr)
	}
	ctx := context.Background()
	provider, err := openKEK(cfg)
	if err != nil {
		return nil, err
	}
	secret, err := cfg.LoadSecretKey(o.getenv)
	if err != nil {
		return nil, err
	}
	if secret == nil {
		log.Warn("TG_SECRET_KEY is not set; using a random per-process key (development only)")
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	st, err := store.Open(ctx, cfg.DatabaseURL, store.WithClock(o.now))
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	cp := &ControlPlane{cfg: cfg, log: log, store: st, kek: provider, now: o.now, ready: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			_ = st.Close()
		}
	}()
	cp.ca, err = ca.Open(ctx, ca.Options{
		Store: st, KEK: provider, DataDir: cfg.DataDir, Hostnames: cfg.HTTP.Hostnames,
		Now: o.now, Logger: log.With("subsystem", "ca"),
	})
	if err != nil {
		return nil, err
	}
	if cp.verifier, err = newVerifier(cfg, o.now); err != nil {
		return nil, err
	}
	if cfg.MQTT.Mode == MQTTEmbedded {
		cp.broker, err = broker.New(broker.Config{
			Addr: cfg.MQTT.Listen, GetCertificate: cp.ca.ServerCertificate, Authority: ca.BrokerAuthority{A: cp.ca},
			InsecureDevAddr: cfg.MQTT.InsecureDevListen, Production: cfg.Production(),
			Logger: log.With("subsystem", "mqtt"),
		})
		if err != nil {
			return nil, fmt.Errorf("mqtt broker: %w", err)
		}
	}
	if cfg.MQTT.Mode == MQTTExternal {
		if cp.external, err = newExternalBroker(cfg, cp.ca, cp, log.With("subsystem", "mqtt-external")); err != nil {
			return nil, fmt.Errorf("external mqtt broker: %w", err)
		}
	}
	cp.presence = newPresenceTracker(st, o.now, log.With("subsystem", "presence"))
	if cp.broker != nil {
		cp.presence.publish = func(topic string, payload []byte) error { return cp.broker.Publish(topic, payload, true, 1) }
	} else {
		cp.presence.publish = cp.external.publish
	}
	deps := attestDeps{
		Devices: st, State: dbAttestStore{st}, History: dbAttestStore{st}, Nonces: dbNonces{st},
		Interval: time.Duration(cfg.Attestation.Interval), Now: o.now, Log: log.With("subsystem", "attestation"),
		Revoke: cp.revokeUntrusted, PruneNonces: st.PruneNonces,
	}
	if cp.broker != nil {
		deps.Publish = func(topic string, payload []byte, retain bool) error {
			return cp.broker.Publish(topic, payload, retain, 1)
		}
	} else {
		deps.Publish = cp.external.publishMsg
	}
	cp.attest = newAttestationService(deps)
	cp.presence.onOnline = cp.attest.DeviceConnected
	cp.rollouts = rollout.New(rollout.Deps{Store: st, Publish: deps.Publish, Now: o.now, Log: log.With("subsystem", "rollouts"),
		Audit: func(ctx context.Context, tx *store.Tx, tenant, action, target string, details map[string]any) error {
			return server.AppendAudit(ctx, tx, cp.now(), tenant, "rollouts", action, target, "", details)
		}})
	blobs, err := registry.NewLocalBlobs(cfg.PackagesDir())
	if err != nil {
		return nil, fmt.Errorf("packages: %w", err)
	}
	cp.registry, err = registry.New(registry.Options{
		Store: st, Keys: cp.ca.Keyring(), Blobs: blobs, StagingDir: blobs.StagingDir(), MaxPackageSize: cfg.Packages.MaxSize,
		AttestationInterval: time.Duration(cfg.Attestation.Interval), Now: o.now, Logger: log.With("subsystem", "registry"),
		Authorizer: cp.rollouts, InUse: rollout.PackageInUse,
	})
	if err != nil {
		return nil, err
	}
	if cp.external != nil {
		cp.external.onAttestation = cp.attest.handle
		cp.external.onReconnect = func() {
			cp.attest.Resync()
			// Job reports published while the control plane was not
			// subscribed are gone: ask the devices again.
			cp.rollouts.Resync()
		}
		cp.external.onJobReport = cp.rollouts.HandleMessage
	}
	cp.policy = policy.NewKeys(st, cp.ca.Keyring(), log.With("subsystem", "policy"))
	apiHandler := cp.external.wrapAPI(api.New(api.Deps{
		Store: st, CA: cp.ca, Revoker: cp, Attester: cp, Packages: cp.registry, Rollouts: cp.rollouts, PolicySigner: cp.policy, PolicyNotifier: cp, BrokerURLFunc: cp.brokerURL, Now: o.now, Logger: log.With("subsystem", "api"),
	}))
	cp.dash = dashboard.New(dashboard.Config{Store: st, Now: o.now, Logger: log.With("subsystem", "dashboard")})
	cp.server, err = server.New(server.Config{
		Addr: cfg.HTTP.Listen, AllowPlainLoopback: *cfg.HTTP.AllowPlainLoopback, Production: cfg.Production(),
		Store: st, CA: cp.ca, Verifier: cp.verifier, Packages: cp.registry, Jobs: cp.rollouts, PolicyKeys: cp.policy, AllowedKinds: cfg.Enrollment.AllowedTPMKinds,
		DefaultCertTTL: time.Duration(cfg.Enrollment.DefaultCertTTL), SessionKey: secret,
		BrokerURL: cp.deviceBrokerURL,
		API:       apiHandler, Extra: o.extra, Dashboard: cp.dash, Ready: cp.checkReady, DrainTimeout: time.Duration(cfg.ShutdownTimeout),
		Logger: log.With("subsystem", "http"), Now: o.now,
		Enrolled: func(ctx context.Context, _, _ string) {
			cp.external.syncNow(ctx, "an enrollment")
			cp.attest.Kick()
			cp.rollouts.Kick()
		},
	})
	if err != nil {
		return nil, err
	}
	ok = true
	return cp, nil
}

// openKEK opens the configured KEK and, in production, refuses one that is
// not production-ready (a generated development key).
func openKEK(cfg Config) (kek.Provider, error) {
	p, err := kek.Open(cfg.KEK)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("kek: %s does not exist: run `tg-controlplane init` or set %s", cfg.KEK.File, EnvVarKeyMaster)
		}
		return nil, fmt.Errorf("kek: %w", err)
	}
	if cfg.Production() {
		if err := p.ProductionReady(); err != nil {
			return nil, fmt.Errorf("kek: refused with %s=production: %w (provide the KEK with %s or a key file of your own)",
				EnvVarEnvironment, err, EnvVarKeyMaster)
		}
	}
	return p, nil
}

func newVerifier(cfg Config, now func() time.Time) (*enroll.Verifier, error) {
	roots, err := loadPool(cfg.Enrollment.EKRoots)
	if err != nil {
		return nil, fmt.Errorf("enrollment.ek_roots: %w", err)
	}
	inter, err := loadPool(cfg.Enrollment.EKIntermediates)
	if err != nil {
		return nil, fmt.Errorf("enrollment.ek_intermediates: %w", err)
	}
	var kinds []string
	for _, k := range cfg.Enrollment.AllowedTPMKinds {
		if k != enroll.KindNone {
			kinds = append(kinds, k)
		}
	}
	if len(kinds) == 0 {
		kinds = []string{enroll.KindHardware} // Begin is never reached: the server refuses first
	}
	return enroll.NewVerifier(enroll.Config{
		EKRoots: roots, EKIntermediates: inter, AllowEKWithoutCert: cfg.Enrollment.AllowEKWithoutCert,
		AllowedKinds: kinds, Now: now,
	})
}

func loadPool(files []string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s: no PEM certificate", f)
		}
	}
	return pool, nil
}

// brokerURL is the MQTT address clients are given.
func (cp *ControlPlane) brokerURL() string {
	if cp.cfg.MQTT.PublicURL != "" {
		return cp.cfg.MQTT.PublicURL
	}
	if cp.cfg.MQTT.Mode == MQTTExternal {
		return cp.cfg.MQTT.External.URL
	}
	host := "localhost"
	if len(cp.cfg.HTTP.Hostnames) > 0 {
		host = cp.cfg.HTTP.Hostnames[0]
	}
	_, port, _ := net.SplitHostPort(cp.cfg.MQTT.Listen)
	if cp.broker != nil && cp.broker.Addr() != nil {
		_, port, _ = net.SplitHostPort(cp.broker.Addr().String())
	}
	return "mqtts://" + net.JoinHostPort(host, port)
}

// deviceBrokerURL is the broker a device is told to use: the configured
// public or external URL, else the embedded broker's port on the host name
// the device used to reach this API (so a device that found us as
// cp.example.net:8000 connects to cp.example.net:8883).
func (cp *ControlPlane) deviceBrokerURL(r *http.Request) string {
	if cp.cfg.MQTT.PublicURL != "" || cp.cfg.MQTT.Mode == MQTTExternal {
		return cp.brokerURL()
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		host = h
	}
	if host == "" {
		return cp.brokerURL()
	}
	u, err := url.Parse(cp.brokerURL())
	if err != nil {
		return ""
	}
	return "mqtts://" + net.JoinHostPort(host, u.Port())
}

// DisconnectDevice implements api.Revoker: after the API revoked or deleted
// a device, drop cached revocation answers (so the next handshake sees it),
// close its MQTT connections, and overwrite its retained status with an
// offline status marked revoked, so MQTT watchers — also those subscribing
// later — stop seeing it online (presenceTracker.revoke).
func (cp *ControlPlane) DisconnectDevice(tenant, device string) {
	cp.ca.InvalidateRevocations()
	if cp.broker != nil {
		n := cp.broker.Disconnect(mqttacl.Device(tenant, device))
		cp.log.Info("device disconnected after revocation", "tenant", tenant, "device", device, "connections", n)
	} else {
		cp.external.disconnectDevice(tenant, device)
	}
	if err := cp.presence.revoke(tenant, device); err != nil {
		cp.log.Warn("retained status of the revoked device not overwritten; watchers may still see it online",
			"tenant", tenant, "device", device, "error", err)
		return
	}
	cp.log.Info("revoked device's retained status set offline", "tenant", tenant, "device", device)
}

// revokeUntrusted revokes a device whose verdict turned untrusted in a
// fleet with revoke_on_untrusted, as the API's revoke does (audited, actor
// "attestation"), then ends its broker session.
func (cp *ControlPlane) revokeUntrusted(ctx context.Context, tenant, device string, v wire.Verdict) error {
	err := cp.store.WithTx(ctx, func(tx *store.Tx) error {
		d, err := tx.RevokeDevice(ctx, tenant, device)
		if err != nil {
			return err
		}
		return server.AppendAudit(ctx, tx, cp.now(), tenant, "attestation", "device.revoke", device, "", map[string]any{
			"fleet_id": d.FleetID, "cert_serial": d.CertSerial, "policy": "revoke_on_untrusted", "reasons": reasonCodes(v),
		})
	})
	if err != nil {
		return err
	}
	cp.DisconnectDevice(tenant, device)
	return nil
}

// ChallengeDevice implements api.Attester: it sends device a fresh
// attestation challenge now.
func (cp *ControlPlane) ChallengeDevice(ctx context.Context, tenant, device string) (wire.AttestChallenge, error) {
	c, err := cp.attest.ChallengeDevice(ctx, tenant, device)
	if errors.Is(err, ErrNotAttestable) {
		return c, fmt.Errorf("%w: %w", api.ErrNotAttestable, err)
	}
	return c, err
}

func (cp *ControlPlane) checkReady(context.Context) error {
	select {
	case <-cp.ready:
		return nil
	default:
		return errors.New("starting")
	}
}

// Ready is closed once every listener accepts connections.
func (cp *ControlPlane) Ready() <-chan struct{} { return cp.ready }

// HTTPAddr is the API listener's address; valid after Ready.
func (cp *ControlPlane) HTTPAddr() net.Addr { return cp.server.Addr() }

// MQTTAddr is the embedded broker's mTLS address (nil with an external
// broker); valid after Ready.
func (cp *ControlPlane) MQTTAddr() net.Addr {
	if cp.broker == nil {
		return nil
	}
	return cp.broker.Addr()
}

// CA returns the certificate authority (for tests and tools).
func (cp *ControlPlane) CA() *ca.Authority { return cp.ca }

// Store returns the database.
func (cp *ControlPlane) Store() *store.Store { return cp.store }

// Registry returns the package registry.
func (cp *ControlPlane) Registry() *registry.Registry { return cp.registry }

// Run serves until ctx ends or a task fails, then drains and closes the
// database. Tasks: the HTTP(S) server, the CA refresher, and with the
// embedded broker the broker and the presence tracker. The first error
// cancels the others; a panic in a task becomes its error.
func (cp *ControlPlane) Run(ctx context.Context) error {
	defer cp.store.Close()
	g, gctx := errgroup.WithContext(ctx)
	task := func(name string, run func(context.Context) error) {
		g.Go(func() (err error) {
			defer func() {
				if v := recover(); v != nil {
					err = fmt.Errorf("%s: panic: %v\n%s", name, v, debug.Stack())
				}
			}()
			if err := run(gctx); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	task("http", cp.server.Run)
	task("ca", cp.ca.Run)
	if cp.broker != nil {
		task("mqtt", cp.broker.Run)
		task("presence", func(ctx context.Context) error {
			select {
			case <-cp.broker.Ready():
			case <-ctx.Done():
				return nil
			}
			return cp.presence.Run(ctx, cp.broker.Subscribe)
		})
		task("attestation", func(ctx context.Context) error {
			select {
			case <-cp.broker.Ready():
			case <-ctx.Done():
				return nil
			}
			return cp.attest.Run(ctx, cp.broker.Subscribe)
		})
	} else {
		task("presence", func(ctx context.Context) error { return cp.external.runPresence(ctx, cp.presence) })
		// Subscribed through the presence connection (onAttestation).
		task("attestation", func(ctx context.Context) error { return cp.attest.Run(ctx, nil) })
		task("mosquitto", cp.external.Run)
	}
	task("rollouts", cp.runRollouts)
	// Ends the dashboard's event streams when ctx ends, so that the HTTP
	// server's drain is not held up by them.
	task("dashboard", cp.dash.Run)
	task("watchdog", (&sdnotify.Watchdog{Healthy: cp.healthy, Logger: cp.log.With("subsystem", "watchdog")}).Run)
	task("ready", func(ctx context.Context) error {
		for _, ch := range cp.readyChans() {
			select {
			case <-ch:
			case <-ctx.Done():
				return nil
			}
		}
		close(cp.ready)
		cp.log.Info("control plane ready", "http", cp.server.Addr().String(), "mqtt", addrString(cp.MQTTAddr()),
			"ca_hash", cp.ca.CAHash(), "environment", cp.cfg.Environment)
		_ = sdnotify.Ready()
		<-ctx.Done()
		_ = sdnotify.Stopping()
		return nil
	})
	return g.Wait()
}

// healthy is the systemd watchdog's check: the database's write path
// answers a ping within healthPingTimeout. A write connection held by a
// wedged transaction (SQLite has one) times out, and the missed pings get
// the process restarted; a database that refuses connections is not the
// process's fault — its clients retry, and restarting would drop every
// device's MQTT session for nothing.
func (cp *ControlPlane) healthy() bool {
	ctx, cancel := context.WithTimeout(context.Background(), healthPingTimeout)
	defer cancel()
	err := cp.store.Ping(ctx)
	if err != nil {
		cp.log.Warn("health check: database ping", "error", err)
	}
	return !errors.Is(err, context.DeadlineExceeded)
}

// healthPingTimeout bounds the watchdog's database ping (the unit's
// WatchdogSec is 60 s; pings go every 30 s).
const healthPingTimeout = 10 * time.Second

func (cp *ControlPlane) readyChans() []<-chan struct{} {
	chans := []<-chan struct{}{cp.server.Ready()}
	if cp.broker != nil {
		chans = append(chans, cp.broker.Ready())
	}
	if cp.external != nil {
		chans = append(chans, cp.external.ready)
	}
	return chans
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// NewLogger builds the slog logger the configuration describes.
func NewLogger(c LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// portOf returns the port of a listen address, or def.
func portOf(addr string, def int) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return def
	}
	n, err := strconv.Atoi(p)
	if err != nil || n == 0 {
		return def
	}
	return n
}
