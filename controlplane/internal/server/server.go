package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/ca"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/enroll"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/registry"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// Config configures the server.
type Config struct {
	// Addr is the listener (":8000").
	Addr string
	// AllowPlainLoopback serves plain HTTP to loopback peers (development).
	AllowPlainLoopback bool
	// Production refuses AllowPlainLoopback.
	Production bool

	Store    *store.Store
	CA       *ca.Authority
	Verifier *enroll.Verifier
	// AllowedKinds is the server-wide set of TPM kinds (wire names); each
	// fleet's policy narrows it.
	AllowedKinds []string
	// DefaultCertTTL is a device certificate's lifetime when the fleet sets
	// none.
	DefaultCertTTL time.Duration
	// SessionKey (TG_SECRET_KEY) authenticates enrollment session handles;
	// at least 32 bytes.
	SessionKey []byte
	// Packages is the package registry behind the device routes
	// /api/v1/device/packages/{id} and /api/v1/device/key-grants (nil:
	// they answer 503).
	Packages *registry.Registry
	// Jobs is the rollout engine behind the device routes
	// /api/v1/device/jobs and /api/v1/device/jobs/{id} (nil: they answer
	// 503).
	Jobs DeviceJobs
	// API serves every /api/v1/ route this package does not (the operator
	// API); nil answers them 404.
	API http.Handler
	// Extra is mounted as is for paths outside /api/v1/ (e.g. the trainer's
	// /v1/); nil answers 404.
	Extra http.Handler
	// Dashboard is mounted as is at /dashboard/ (the read-only fleet
	// dashboard); nil leaves the path to Extra.
	Dashboard http.Handler
	// BrokerURL tells a device, in its enrollment and renewal responses,
	// which MQTT broker to use; it gets the request so it can answer with
	// the host name the device reached the API by. Nil sends none.
	BrokerURL func(r *http.Request) string
	// Ready reports whether the rest of the control plane (the broker) is
	// ready; nil means always.
	Ready func(context.Context) error
	// Enrolled, if set, runs after an enrollment committed and before the
	// device is given its certificate, so that whatever must know the
	// device before it connects (an external broker's ACL) is brought up to
	// date first. It must return within a few seconds.
	Enrolled func(ctx context.Context, tenant, device string)
	// PolicyKeys serves devices the tenant's policy verification key (nil:
	// GET /api/v1/device/policy/key answers 404).
	PolicyKeys PolicyKeys

	// DrainTimeout bounds the graceful shutdown; default 15 s.
	DrainTimeout time.Duration

	Logger *slog.Logger
	Now    func() time.Time
}

// Server is the control plane's HTTP(S) listener.
type Server struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	handler http.Handler
	tlsConf *tls.Config

	ready chan struct{}
	addr  net.Addr
}

// New checks cfg and builds the server; it binds nothing until Run.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Store == nil || cfg.CA == nil || cfg.Verifier == nil:
		return nil, errors.New("server: store, CA and verifier are required")
	case len(cfg.SessionKey) < 32:
		return nil, errors.New("server: session key shorter than 32 bytes")
	case cfg.Production && cfg.AllowPlainLoopback:
		return nil, errors.New("server: plain HTTP is refused in production")
	}
	if cfg.Addr == "" {
		cfg.Addr = ":8000"
	}
	if cfg.DefaultCertTTL <= 0 {
		cfg.DefaultCertTTL = ca.DefaultDeviceCertTTL
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now, ready: make(chan struct{})}
	s.handler = s.routes()
	s.tlsConf = s.newTLSConfig()
	return s, nil
}

func (s *Server) newTLSConfig() *tls.Config {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.cfg.CA.ServerCertificate,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		NextProtos:     []string{"http/1.1"},
	}
	base.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil // operators and enrolling devices present none
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := s.cfg.CA.VerifyClient(ctx, cs.VerifiedChains); err != nil {
			s.log.Info("client certificate refused", "error", err)
			return err
		}
		return nil
	}
	// The pool is fetched per handshake, so a new tenant's devices are
	// accepted without a restart.
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = s.cfg.CA.ClientCAs()
		return c, nil
	}
	return base
}

// Handler returns the HTTP handler (for tests that skip the listener).
func (s *Server) Handler() http.Handler { return s.handler }

// TLSConfig returns the listener's TLS configuration.
func (s *Server) TLSConfig() *tls.Config { return s.tlsConf }

// Ready is closed once the listener accepts connections.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr returns the bound address; valid after Ready.
func (s *Server) Addr() net.Addr { return s.addr }

// Run binds the listener and serves until ctx ends, then shuts down
// gracefully: new connections are refused at once and requests in flight
// get DrainTimeout to finish.
func (s *Server) Run(ctx context.Context) error {
	inner, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Addr, err)
	}
	allow := func(net.Addr) bool { return false }
	if s.cfg.AllowPlainLoopback && !s.cfg.Production {
		allow = loopbackOnly
	}
	ln := newSniffListener(inner, s.tlsConf, allow, s.log)
	defer ln.wait()
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	s.addr = inner.Addr()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	close(s.ready)
	s.log.Info("api listening", "addr", s.addr.String(), "plain_http_loopback", s.cfg.AllowPlainLoopback && !s.cfg.Production)
	select {
	case err := <-errc:
		_ = ln.Close()
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	_ = ln.Close()
	<-errc
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("drain http: %w", err)
	}
	return nil
}

// kindAllowed reports whether the server-wide policy admits kind.
func (s *Server) kindAllowed(kind string) bool { return slices.Contains(s.cfg.AllowedKinds, kind) }
