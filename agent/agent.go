package agent

import (
	"cmp"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"

	"github.com/tensorguard/tensorguardflow/agent/internal/attest"
	"github.com/tensorguard/tensorguardflow/agent/internal/enroll"
	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
	"github.com/tensorguard/tensorguardflow/agent/internal/install"
	"github.com/tensorguard/tensorguardflow/agent/internal/keys"
	"github.com/tensorguard/tensorguardflow/agent/internal/outbox"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence"
	"github.com/tensorguard/tensorguardflow/agent/internal/state"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/sdnotify"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
)

// Version is the agent's version, set at build time with
// -ldflags "-X github.com/tensorguard/tensorguardflow/agent.Version=…".
var Version = "dev"

// ErrKeyMismatch means the stored certificate is not for the device's TLS
// key: the TPM was cleared or replaced (or is a simulator without a fixed
// seed), or the tpm setting changed between a TPM and none since the device
// enrolled. The device must enroll again with a new token.
var ErrKeyMismatch = errors.New("stored identity does not belong to this device's key")

// EnrollError is a permanent enrollment failure; retrying with the same
// configuration cannot succeed. Error() explains what to do.
type EnrollError struct{ Err error }

func (e *EnrollError) Error() string { return "enrollment failed: " + enroll.Explain(e.Err) }
func (e *EnrollError) Unwrap() error { return e.Err }

// Key names in the state file's key/value space.
const (
	kvNamespace = "identity"
	kvCAPEM     = "ca_pem"
	kvTPMKind   = "tpm_kind"
	// tpmKeyRef names the TLS key of a device with a TPM: a primary key the
	// TPM re-derives, so nothing of it is stored.
	tpmKeyRef = "tpm-primary:owner:tensorguardflow/tls/v1"
)

// Notifier is the service manager (systemd's sd_notify by default).
type Notifier interface {
	Ready() error
	Stopping() error
	Reloading() error
	Status(msg string) error
}

type systemdNotifier struct{}

func (systemdNotifier) Ready() error            { return sdnotify.Ready() }
func (systemdNotifier) Stopping() error         { return sdnotify.Stopping() }
func (systemdNotifier) Reloading() error        { return sdnotify.Reloading() }
func (systemdNotifier) Status(msg string) error { return sdnotify.Status(msg) }

// Option customises an Agent.
type Option func(*options)

type options struct {
	configPath    string
	levelVar      *slog.LevelVar
	openTPM       func(*Config) (*tpmdev.Device, error)
	notifier      Notifier
	enrollBackoff presence.Backoff
	renewBackoff  presence.Backoff
	thermalRoot   string
}

// WithThermalRoot reads thermal zones under root instead of
// /sys/class/thermal (tests).
func WithThermalRoot(root string) Option { return func(o *options) { o.thermalRoot = root } }

// WithConfigPath makes Run reload the config from path on SIGHUP.
func WithConfigPath(path string) Option { return func(o *options) { o.configPath = path } }

// WithLevelVar lets reloads change the log level of the caller's handler.
func WithLevelVar(v *slog.LevelVar) Option { return func(o *options) { o.levelVar = v } }

// WithTPMOpener replaces how the TPM is opened (tests).
func WithTPMOpener(f func(*Config) (*tpmdev.Device, error)) Option {
	return func(o *options) { o.openTPM = f }
}

// WithNotifier replaces sd_notify (tests).
func WithNotifier(n Notifier) Option { return func(o *options) { o.notifier = n } }

// WithRetry sets the backoff bounds of enrollment and renewal retries.
func WithRetry(minDelay, maxDelay time.Duration) Option {
	return func(o *options) {
		o.enrollBackoff = presence.Backoff{Min: minDelay, Max: maxDelay}
		o.renewBackoff = presence.Backoff{Min: minDelay, Max: maxDelay}
	}
}

// Agent is the device daemon. Create it with New and call Run once.
type Agent struct {
	opts options
	log  *slog.Logger
	cfg  atomic.Pointer[Config]

	certs     certStore
	started   time.Time
	lastBeat  atomic.Int64 // unix nanos of the last heartbeat iteration
	renewals  atomic.Uint64
	reloadNow chan struct{} // wakes the heartbeat after a reload

	mu      sync.Mutex
	db      *state.DB // set while Run holds the state open
	session *presence.Session
	box     *outbox.Outbox
	// installer is set while Run runs, for the status file.
	installer *install.Installer

	// stats counts inferences per model (metrics and telemetry).
	stats *inference.Stats
}

// New validates cfg and returns an Agent. It opens nothing.
func New(cfg *Config, logger *slog.Logger, opts ...Option) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	a := &Agent{
		opts: options{
			openTPM:       openTPM,
			notifier:      systemdNotifier{},
			enrollBackoff: presence.Backoff{Min: time.Second, Max: time.Minute},
			renewBackoff:  presence.Backoff{Min: 2 * time.Second, Max: 5 * time.Minute},
			thermalRoot:   inference.ThermalRoot,
		},
		stats:     inference.NewStats(),
		log:       logger,
		reloadNow: make(chan struct{}, 1),
	}
	for _, o := range opts {
		o(&a.opts)
	}
	c := *cfg
	a.cfg.Store(&c)
	if a.opts.levelVar != nil {
		a.opts.levelVar.Set(c.LogLevel())
	}
	return a, nil
}

// Config returns the configuration in effect.
func (a *Agent) Config() *Config { c := *a.cfg.Load(); return &c }

// resources are what Run and Enroll hold open. Without a TPM (tpm.none),
// tpm and tlsKey are nil and signer is the software key from the state.
// kem keeps the package-decryption key (sealed by tpm, if there is one).
type resources struct {
	db     *state.DB
	tpm    *tpmdev.Device
	tlsKey *tpmdev.Key
	signer crypto.Signer
	kind   tpmdev.Kind
	keyRef string
	kem    *keys.Custodian
}

func (r *resources) close() error {
	var errs []error
	if r.tlsKey != nil {
		r.tlsKey.Close()
	}
	if r.tpm != nil {
		errs = append(errs, r.tpm.Close())
	}
	if r.db != nil {
		errs = append(errs, r.db.Close())
	}
	return errors.Join(errs...)
}

func (a *Agent) open() (*resources, error) {
	cfg := a.cfg.Load()
	if err := os.MkdirAll(filepath.Dir(cfg.StatePath), 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	r := &resources{}
	var err error
	if r.db, err = state.Open(cfg.StatePath, state.Options{}); err != nil {
		return nil, err
	}
	if cfg.TPM.None {
		// No TPM to open, and none of its operations (EK, AK, certify,
		// credential activation) happens in this mode.
		key, err := loadSoftwareKey(r.db)
		if err != nil {
			_ = r.close()
			return nil, err
		}
		r.signer, r.kind, r.keyRef = key, tpmdev.KindNone, softwareKeyRef
		// Not TPM-protected: the private key lies in the state file.
		r.kem = keys.New(r.db, nil)
		return r, nil
	}
	if r.tpm, err = a.opts.openTPM(cfg); err != nil {
		_ = r.close()
		return nil, fmt.Errorf("open tpm: %w", err)
	}
	if r.tlsKey, err = r.tpm.TLSKey(); err != nil {
		_ = r.close()
		return nil, fmt.Errorf("load tls key: %w", err)
	}
	if r.signer, err = r.tlsKey.Signer(); err != nil {
		_ = r.close()
		return nil, fmt.Errorf("load tls key: %w", err)
	}
	r.kind, r.keyRef = r.tpm.Kind(), tpmKeyRef
	r.kem = keys.New(r.db, r.tpm)
	return r, nil
}

// Enroll enrolls the device if the state holds no identity yet (the
// one-shot `tg-agent enroll`), and returns the identity's status and
// whether it was created now.
func (a *Agent) Enroll(ctx context.Context) (*Status, bool, error) {
	r, err := a.open()
	if err != nil {
		return nil, false, err
	}
	defer r.close()
	_, fresh, err := a.identity(ctx, r)
	if err != nil {
		return nil, false, err
	}
	st, err := statusFromDB(r.db)
	return st, fresh, err
}

// identity loads the stored identity or enrolls.
func (a *Agent) identity(ctx context.Context, r *resources) (*enroll.Identity, bool, error) {
	cfg := a.cfg.Load()
	stored, err := r.db.Identity()
	if err == nil {
		ca, err := r.db.Get(kvNamespace, kvCAPEM)
		if err != nil {
			return nil, false, fmt.Errorf("stored identity has no CA bundle: %w", err)
		}
		id, err := enroll.ParseIdentity(stored.CertChainPEM, ca, r.signer.Public())
		if err != nil {
			return nil, false, fmt.Errorf("%w (device %s, state %s%s): move the state file away and enroll again with a new token: %v",
				ErrKeyMismatch, stored.DeviceID, r.db.Path(), kindChange(r.db, r.kind), err)
		}
		a.log.Info("identity loaded", "device", id.DeviceID, "tenant", id.TenantID, "fleet", id.FleetID, "not_after", id.Leaf.NotAfter)
		return id, false, nil
	}
	if !errors.Is(err, state.ErrNotFound) {
		return nil, false, err
	}

	token, err := cfg.EnrollmentToken()
	if err != nil {
		return nil, false, &EnrollError{Err: fmt.Errorf("device is not enrolled: %w", err)}
	}
	ccfg := enroll.Config{ServerURL: cfg.ServerURL, Logger: a.log}
	switch {
	case cfg.CAHash != "":
		pin, err := enroll.ParsePin(cfg.CAHash)
		if err != nil {
			return nil, false, err
		}
		ccfg.Pin = &pin
	case cfg.CAFile != "":
		if ccfg.CAPEM, err = os.ReadFile(cfg.CAFile); err != nil {
			return nil, false, fmt.Errorf("ca_file: %w", err)
		}
	default:
		return nil, false, &EnrollError{Err: errors.New("device is not enrolled and neither ca_hash nor ca_file is set to trust the control plane")}
	}
	client, err := enroll.New(ccfg)
	if err != nil {
		return nil, false, err
	}
	// Every enrollment gets a new package-decryption key; it is stored
	// (sealed by the TPM) before the identity, so a stored identity
	// implies its key, and the enrollment request carries its public part.
	kemPub, err := r.kem.Generate(nil)
	if err != nil {
		return nil, false, fmt.Errorf("package decryption key: %w", err)
	}
	a.log.Info("enrolling", "server", cfg.ServerURL, "tpm", r.kind, "kem_key_id", kemPub.KeyID())
	for attempt := 1; ; attempt++ {
		var id *enroll.Identity
		if r.tpm == nil {
			id, err = client.EnrollWithoutTPM(ctx, r.signer, token, kemPub.Bytes())
		} else {
			id, err = client.Enroll(ctx, r.tpm, r.tlsKey, token, kemPub.Bytes())
		}
		if err == nil {
			if err := a.saveIdentity(r.db, id, r.kind, r.keyRef, time.Now()); err != nil {
				return nil, false, err
			}
			if err := r.kem.SetRegistered(); err != nil {
				// The next start registers it again (the same key is
				// accepted): no reason to fail the enrollment.
				a.log.Warn("could not record the package key's registration", "err", err)
			}
			return id, true, nil
		}
		if !enroll.Retryable(err) {
			if ctx.Err() != nil {
				return nil, false, ctx.Err()
			}
			return nil, false, &EnrollError{Err: err}
		}
		d := a.opts.enrollBackoff.Delay(attempt)
		a.log.Warn("enrollment failed; retrying", "attempt", attempt, "retry_in", d, "err", err)
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(d):
		}
	}
}

// saveIdentity persists id. The CA bundle goes first: an identity record
// present implies its bundle is. An empty tpmKind leaves the recorded kind.
func (a *Agent) saveIdentity(db *state.DB, id *enroll.Identity, tpmKind tpmdev.Kind, keyRef string, enrolledAt time.Time) error {
	cfg := a.cfg.Load()
	if err := db.Put(kvNamespace, kvCAPEM, id.CAPEM); err != nil {
		return err
	}
	if tpmKind != "" {
		if err := db.Put(kvNamespace, kvTPMKind, []byte(string(tpmKind))); err != nil {
			return err
		}
	}
	return db.SetIdentity(state.Identity{
		DeviceID:        id.DeviceID,
		TenantID:        id.TenantID,
		FleetID:         id.FleetID,
		CertChainPEM:    id.CertChainPEM,
		KeyRef:          []byte(keyRef),
		ControlPlaneURL: cfg.ServerURL,
		BrokerURL:       cmp.Or(id.BrokerURL, cfg.BrokerURL()),
		EnrolledAt:      enrolledAt.UTC(),
	})
}

// Run runs the agent until ctx ends (nil) or a task fails (its error).
func (a *Agent) Run(ctx context.Context) error {
	a.started = time.Now()
	r, err := a.open()
	if err != nil {
		return err
	}
	closeRes := true
	defer func() {
		if closeRes {
			if err := r.close(); err != nil {
				a.log.Warn("close", "err", err)
			}
		}
	}()
	id, _, err := a.identity(ctx, r)
	if err != nil {
		return err
	}
	a.certs.set(id, r.signer)

	cfg := a.cfg.Load()
	stored, err := r.db.Identity()
	if err != nil {
		return err
	}
	brokerURL := cfg.MQTT.URL
	if brokerURL == "" {
		brokerURL = stored.BrokerURL
	}
	if brokerURL == "" {
		brokerURL = cfg.BrokerURL()
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(id.CAPEM) {
		return errors.New("stored CA bundle holds no certificate")
	}
	box, err := outbox.Open(r.db, outbox.Config{
		MaxEntries: cfg.Outbox.MaxEntries,
		MaxBytes:   cfg.Outbox.MaxBytes,
		Logger:     a.log.With("subsystem", "outbox"),
	})
	if err != nil {
		return err
	}
	pol, err := a.newPolicy(id, stored, roots, r.db, box)
	if err != nil {
		return err
	}
	installer, err := a.newInstaller(r, id, stored, roots, box, pol)
	if err != nil {
		return err
	}
	sess, err := presence.New(presence.Config{
		BrokerURL: brokerURL,
		TLS: &tls.Config{
			MinVersion:           tls.VersionTLS12,
			RootCAs:              roots,
			GetClientCertificate: a.certs.get,
		},
		Tenant:    id.TenantID,
		Device:    id.DeviceID,
		Sessions:  r.db,
		KeepAlive: cfg.MQTT.KeepAlive.D(),
		OnConnect: func(uint64) {
			box.Kick()
			// A policy or job notification may have been missed while
			// offline.
			pol.Kick()
			installer.Kick()
			a.writeStatusFile(true) // `tg-agent status` shows the connection at once
		},
		Logger: a.log.With("subsystem", "presence"),
	})
	if err != nil {
		return err
	}
	// Attestation challenges are answered from the start of the session;
	// the subscription is renewed on every connect.
	attestCfg := attest.Config{
		Device: id.DeviceID,
		Topic:  mqttacl.AttestationTopic(id.TenantID, id.DeviceID),
		Outbox: box,
		Logger: a.log.With("subsystem", "attest"),
	}
	if r.tpm != nil { // a nil *tpmdev.Device must stay a nil TPM: answer "no TPM"
		attestCfg.TPM = r.tpm
		if r.kind == tpmdev.KindHardware { // swtpm and the simulator are not in the firmware's log
			attestCfg.EventLogPath = eventLogPath(cfg.TPMDevice())
		}
	}
	responder, err := attest.New(attestCfg)
	if err != nil {
		return err
	}
	if err := sess.Subscribe(mqttacl.CmdTopic(id.TenantID, id.DeviceID, "attest"), responder.Handle); err != nil {
		return err
	}
	if err := sess.Subscribe(mqttacl.CmdTopic(id.TenantID, id.DeviceID, "policy"), pol.Handle); err != nil {
		return err
	}
	if err := sess.Subscribe(mqttacl.CmdTopic(id.TenantID, id.DeviceID, "job"), installer.Handle); err != nil {
		return err
	}
	cpURL := stored.ControlPlaneURL
	if cpURL == "" {
		cpURL = cfg.ServerURL
	}
	renewer, err := enroll.New(enroll.Config{
		ServerURL:            cpURL,
		CAPEM:                id.CAPEM,
		GetClientCertificate: a.certs.get,
		Logger:               a.log.With("subsystem", "renew"),
	})
	if err != nil {
		return err
	}
	ls, err := a.openListeners()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.db, a.session, a.box, a.installer = r.db, sess, box, installer
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.db, a.session, a.box, a.installer = nil, nil, nil, nil
		a.mu.Unlock()
	}()
	a.lastBeat.Store(time.Now().UnixNano())

	g, gctx := errgroup.WithContext(ctx)
	task := func(name string, fn func(context.Context) error) {
		g.Go(func() (err error) {
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("%s task panicked: %v\n%s", name, p, debug.Stack())
				}
			}()
			if err := fn(gctx); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	task("presence", sess.Run)
	task("outbox", func(ctx context.Context) error { return box.Run(ctx, sess) })
	task("renew", func(ctx context.Context) error { return a.renewLoop(ctx, r, renewer) })
	task("kem-key", func(ctx context.Context) error { return a.registerKEMKey(ctx, r.kem, renewer) })
	task("attest", responder.Run)
	task("policy", pol.Run)
	task("install", installer.Run)
	task("telemetry", func(ctx context.Context) error { return a.telemetryLoop(ctx, box, id.TenantID, id.DeviceID) })
	if len(ls.api) > 0 {
		task("inference-api", func(ctx context.Context) error { return a.serveInference(ctx, ls.api, installer) })
	}
	if ls.metrics != nil {
		task("metrics", func(ctx context.Context) error { return a.serveMetrics(ctx, ls.metrics) })
	}
	task("watchdog", (&sdnotify.Watchdog{Healthy: a.healthy, Logger: a.log.With("subsystem", "watchdog")}).Run)
	if a.opts.configPath != "" {
		task("reload", a.reloadOnSIGHUP)
	}
	a.writeStatusFile(true)
	a.notify("ready", a.opts.notifier.Ready())
	a.notify("status", a.opts.notifier.Status("running as "+id.DeviceID))
	a.log.Info("agent running", "device", id.DeviceID, "broker", brokerURL, "version", Version)

	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	select {
	case err = <-done:
		a.notify("stopping", a.opts.notifier.Stopping())
	case <-ctx.Done():
		a.notify("stopping", a.opts.notifier.Stopping())
		timeout := a.cfg.Load().ShutdownTimeout.D()
		a.log.Info("shutting down", "deadline", timeout)
		select {
		case err = <-done:
		case <-time.After(timeout):
			// Leave the state file to the process exit: a task may still
			// be inside a transaction.
			closeRes = false
			return fmt.Errorf("shutdown did not finish within %s", timeout)
		}
	}
	a.writeStatusFile(false)
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

func (a *Agent) notify(what string, err error) {
	if err != nil {
		a.log.Warn("sd_notify failed", "state", what, "err", err)
	}
}

// healthy is the watchdog's check: the heartbeat loop is making progress
// and the state file answers.
func (a *Agent) healthy() bool {
	iv := a.cfg.Load().Telemetry.Interval.D()
	if time.Since(time.Unix(0, a.lastBeat.Load())) > 2*iv+30*time.Second {
		return false
	}
	a.mu.Lock()
	db := a.db
	a.mu.Unlock()
	return db != nil && db.View(func(*bolt.Tx) error { return nil }) == nil
}

// renewLoop renews the certificate at renew_fraction of its lifetime.
func (a *Agent) renewLoop(ctx context.Context, r *resources, c *enroll.Client) error {
	failures := 0
	var retryAt time.Time
	for {
		leaf := a.certs.identity().Leaf
		at := renewAt(leaf, a.cfg.Load().RenewFraction)
		if failures > 0 {
			at = retryAt
		}
		if d := time.Until(at); d > 0 {
			a.log.Debug("next certificate renewal", "at", at)
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		id, err := c.Renew(ctx, r.signer)
		if err == nil && id.DeviceID != a.certs.identity().DeviceID {
			err = fmt.Errorf("renewed certificate names device %s, not %s", id.DeviceID, a.certs.identity().DeviceID)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			d := a.opts.renewBackoff.Delay(failures)
			retryAt = time.Now().Add(d)
			lvl := slog.LevelWarn
			if !enroll.Retryable(err) || time.Now().After(leaf.NotAfter) {
				lvl = slog.LevelError
			}
			a.log.Log(ctx, lvl, "certificate renewal failed", "attempt", failures, "retry_in", d,
				"not_after", leaf.NotAfter, "err", enroll.Explain(err))
			continue
		}
		failures = 0
		stored, err := r.db.Identity()
		if err != nil {
			return err
		}
		if err := a.saveIdentity(r.db, id, "", r.keyRef, stored.EnrolledAt); err != nil {
			return fmt.Errorf("persist renewed certificate: %w", err)
		}
		a.certs.set(id, r.signer)
		c.CloseIdleConnections()
		a.renewals.Add(1)
		a.writeStatusFile(true)
		a.log.Info("certificate renewed", "serial", id.Leaf.SerialNumber.Text(16), "not_after", id.Leaf.NotAfter)
	}
}

// registerKEMKey makes sure the control plane has this device's package
// decryption key. A device enrolled by an agent from before key grants has
// none: it gets one now, registered with PUT /api/v1/device/kem-key;
// transient failures are retried with backoff. The task ends once the key
// is registered or refused; a refusal leaves the device running, without
// key grants, and says why.
func (a *Agent) registerKEMKey(ctx context.Context, kc *keys.Custodian, c *enroll.Client) error {
	log := a.log.With("subsystem", "kem-key")
	if ok, err := kc.Registered(); err != nil || ok {
		if err != nil {
			log.Error("cannot read the package key from the state", "err", err)
		}
		return nil
	}
	pub, err := kc.Public()
	if errors.Is(err, keys.ErrNoKey) {
		if pub, err = kc.Generate(nil); err == nil {
			log.Info("generated a package decryption key (this device enrolled without one)", "kem_key_id", pub.KeyID())
		}
	}
	if err != nil {
		log.Error("no package decryption key: this device cannot receive package key grants", "err", err)
		return nil
	}
	for attempt := 1; ; attempt++ {
		err := c.RegisterKEMKey(ctx, pub.Bytes())
		if err == nil {
			if err := kc.SetRegistered(); err != nil {
				log.Warn("could not record the package key's registration", "err", err)
			}
			log.Info("package decryption key registered", "kem_key_id", pub.KeyID())
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if !enroll.Retryable(err) {
			msg := "the control plane refused the package decryption key: this device cannot receive package key grants"
			if errors.Is(err, enroll.ErrConflict) {
				msg = "the control plane holds another package decryption key for this device (state restored from elsewhere?): " +
					"it cannot open its key grants; enroll the device again"
			}
			log.Error(msg, "kem_key_id", pub.KeyID(), "err", enroll.Explain(err))
			return nil
		}
		d := a.opts.renewBackoff.Delay(attempt)
		log.Warn("registering the package decryption key failed; retrying", "attempt", attempt, "retry_in", d, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

// renewAt is NotBefore + fraction·lifetime.
func renewAt(leaf *x509.Certificate, fraction float64) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(time.Duration(float64(life) * fraction))
}

// Reload applies next if it is valid and changes only keys that are safe to
// change while running; otherwise it keeps the current config and says why.
func (a *Agent) Reload(next *Config) error {
	if err := next.Validate(); err != nil {
		return fmt.Errorf("keeping the current config: %w", err)
	}
	cur := a.cfg.Load()
	if keys := restartKeys(cur, next); len(keys) > 0 {
		return fmt.Errorf("keeping the current config: changing %v needs a restart", keys)
	}
	c := *next
	a.cfg.Store(&c)
	if a.opts.levelVar != nil {
		a.opts.levelVar.Set(c.LogLevel())
	}
	select {
	case a.reloadNow <- struct{}{}:
	default:
	}
	return nil
}

func (a *Agent) reloadOnSIGHUP(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		}
		a.notify("reloading", a.opts.notifier.Reloading())
		next, err := LoadConfig(a.opts.configPath)
		if err == nil {
			err = a.Reload(next)
		}
		if err != nil {
			a.log.Error("reload refused", "config", a.opts.configPath, "err", err)
		} else {
			a.log.Info("config reloaded", "config", a.opts.configPath)
		}
		a.notify("ready", a.opts.notifier.Ready())
	}
}

// certStore holds the current client certificate; TLS asks it at every
// handshake, so a renewal takes effect on the next connection.
type certStore struct {
	mu   sync.RWMutex
	id   *enroll.Identity
	cert *tls.Certificate
}

func (s *certStore) set(id *enroll.Identity, signer crypto.Signer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.id, s.cert = id, id.TLSCertificate(signer)
}

func (s *certStore) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cert == nil {
		return nil, errors.New("no device certificate yet")
	}
	return s.cert, nil
}

func (s *certStore) identity() *enroll.Identity {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.id
}

// EventLogCopy is the name of the measured-boot log's copy in the
// service's runtime directory: securityfs keeps the log root-only, so the
// systemd unit copies it there with a privileged ExecStartPre (the log is
// static after boot).
const EventLogCopy = "tpm-eventlog"

// eventLogPath is where the measured-boot log of TPM device is read from:
// the copy in $RUNTIME_DIRECTORY when the unit made one, else securityfs.
func eventLogPath(device string) string {
	if dir := os.Getenv("RUNTIME_DIRECTORY"); dir != "" {
		p := filepath.Join(dir, EventLogCopy)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return attest.EventLogPathFor(device)
}
