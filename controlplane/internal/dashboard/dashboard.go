package dashboard

import (
	"context"
	"embed"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// Keys is what the dashboard needs to turn an API key into a session and
// to recheck the session later. *store.Store implements it.
type Keys interface {
	// AuthenticateAPIKey checks a presented key; any failure wraps
	// store.ErrUnauthenticated.
	AuthenticateAPIKey(ctx context.Context, presented string) (store.APIKey, error)
	GetAPIKey(ctx context.Context, tenant, id string) (store.APIKey, error)
	GetOperator(ctx context.Context, tenant, id string) (store.Operator, error)
}

// Fleets is what the page shows, read per tenant. *store.Store implements
// it.
type Fleets interface {
	ListFleets(ctx context.Context, tenant string) ([]store.Fleet, error)
	ListDevices(ctx context.Context, tenant string, f store.DeviceFilter) ([]store.Device, error)
	ListAttestationStates(ctx context.Context, tenant string, f store.AttestationFilter) ([]store.AttestationState, error)
	ListRollouts(ctx context.Context, tenant string, f store.RolloutFilter) ([]store.Rollout, error)
	ListRolloutJobs(ctx context.Context, tenant, rollout string) ([]store.RolloutDevice, error)
}

// Store is both.
type Store interface {
	Keys
	Fleets
}

var _ Store = (*store.Store)(nil)

// Defaults of Config.
const (
	DefaultSessionTTL           = 8 * time.Hour
	DefaultPollInterval         = 2 * time.Second
	DefaultHeartbeat            = 15 * time.Second
	DefaultMaxStreams           = 64
	DefaultMaxStreamsPerSession = 4
	DefaultMaxSessions          = 10000
)

// Limits of what the page lists.
const (
	maxDevicesShown  = 2000
	maxRolloutsShown = 10
)

// Config configures a Dashboard. Store is required; zero fields take the
// defaults above.
type Config struct {
	Store  Store
	Logger *slog.Logger
	// Now is the clock of session and key expiry (tests).
	Now func() time.Time
	// SessionTTL is a session's lifetime from login.
	SessionTTL time.Duration
	// PollInterval is how often an event stream looks for changes.
	PollInterval time.Duration
	// Heartbeat is the longest an event stream stays silent.
	Heartbeat time.Duration
	// MaxStreams bounds the open event streams of the process,
	// MaxStreamsPerSession those of one session (browser tabs).
	MaxStreams           int
	MaxStreamsPerSession int
	// MaxSessions bounds the sessions held in memory; a login past it is
	// refused until some expire.
	MaxSessions int
}

// Dashboard is the /dashboard/ handler.
type Dashboard struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	mux      *http.ServeMux
	origin   *http.CrossOriginProtection
	sessions *sessions
	snaps    *snapshots

	streamSlots chan struct{} // one token per open stream
	stopOnce    sync.Once
	stopping    chan struct{} // closed by Close: streams return
}

//go:embed static
var staticFS embed.FS

// New builds the dashboard. It panics without a Store (a programming
// error).
func New(cfg Config) *Dashboard {
	if cfg.Store == nil {
		panic("dashboard.New: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.MaxStreamsPerSession <= 0 {
		cfg.MaxStreamsPerSession = DefaultMaxStreamsPerSession
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	d := &Dashboard{
		cfg: cfg, log: cfg.Logger, now: cfg.Now, mux: http.NewServeMux(),
		origin:      http.NewCrossOriginProtection(),
		sessions:    newSessions(cfg.MaxSessions),
		snaps:       newSnapshots(cfg.Store),
		streamSlots: make(chan struct{}, cfg.MaxStreams),
		stopping:    make(chan struct{}),
	}
	d.mux.HandleFunc("GET /dashboard/{$}", d.handlePage)
	d.mux.HandleFunc("GET /dashboard/login", d.handleLoginForm)
	d.mux.HandleFunc("POST /dashboard/login", d.handleLogin)
	d.mux.HandleFunc("POST /dashboard/logout", d.handleLogout)
	d.mux.HandleFunc("GET /dashboard/events", d.handleEvents)
	d.mux.HandleFunc("GET /dashboard/static/{name}", d.handleStatic)
	d.mux.HandleFunc("/dashboard/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not found", http.StatusNotFound)
	})
	return d
}

// ServeHTTP serves everything under /dashboard/.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	d.mux.ServeHTTP(w, r)
}

// Run prunes expired sessions until ctx ends, then closes the dashboard
// (Close): open event streams return, so that the HTTP server's graceful
// shutdown does not wait for them.
func (d *Dashboard) Run(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			d.Close()
			return nil
		case <-t.C:
			d.sessions.prune(d.now())
		}
	}
}

// Close ends every open event stream and refuses new ones; the page and
// the login keep working. It is idempotent.
func (d *Dashboard) Close() {
	d.stopOnce.Do(func() { close(d.stopping) })
}

// contentSecurityPolicy admits this server's own stylesheet, script and
// event stream, nothing inline, no framing, and forms posting only here.
const contentSecurityPolicy = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// staticFiles are the files under /dashboard/static/, with their types.
var staticFiles = map[string]string{
	"dashboard.css": "text/css; charset=utf-8",
	"dashboard.js":  "text/javascript; charset=utf-8",
}

func (d *Dashboard) handleStatic(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctype, ok := staticFiles[name]
	if !ok {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	b, err := staticFS.ReadFile("static/" + name)
	if err != nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}
