package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/registry"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// CA is what the API needs from the control plane's certificate
// authorities.
type CA interface {
	// TenantCAPEM returns the PEM certificate of tenant's CA (the one that
	// issues its device and operator certificates).
	TenantCAPEM(ctx context.Context, tenant string) ([]byte, error)
	// PlatformCAPEM returns the PEM certificate of the platform CA, which
	// issues the server certificates of the API and the broker.
	PlatformCAPEM() []byte
	// CAHash is "sha256:<hex>" of the platform CA certificate's DER, the
	// pin an agent is given with its enrollment token.
	CAHash() string
	// IssueOperatorCert issues a read-only MQTT client certificate for
	// operator operatorID of tenant (SAN URI
	// spiffe://tensorguardflow/tenant/<tenant>/operator/<operator>) for the
	// key of csrDER, a PKCS #10 request whose signature the API has checked.
	// It returns the certificate in PEM, leaf first (a chain may follow).
	IssueOperatorCert(ctx context.Context, tenant, operatorID string, csrDER []byte) ([]byte, error)
}

// Revoker disconnects a device from the MQTT broker at once, after the API
// revoked or deleted it.
type Revoker interface {
	DisconnectDevice(tenant, device string)
}

// Attester challenges a device for an attestation quote now.
type Attester interface {
	// ChallengeDevice issues a fresh nonce to the device and publishes the
	// challenge on its cmd/attest topic. It returns an error wrapping
	// ErrNotAttestable for a device without a TPM, and store.ErrNotFound
	// for an unknown one.
	ChallengeDevice(ctx context.Context, tenant, device string) (wire.AttestChallenge, error)
}

// ErrNotAttestable is wrapped by Attester errors for devices that cannot
// be attested (enrolled without a TPM).
var ErrNotAttestable = errors.New("device cannot be attested")

// Deps is everything New needs. Store and CA are required; Revoker, Now and
// Logger have defaults (no broker kick, time.Now, slog.Default()).
type Deps struct {
	Store   *store.Store
	CA      CA
	Revoker Revoker
	// Attester serves on-demand attestation (nil: the route answers 503).
	Attester Attester
	// PolicySigner signs pushed policy bundles (nil: the push answers
	// 503); PolicyNotifier tells the fleet's devices (nil: nobody).
	PolicySigner   PolicySigner
	PolicyNotifier PolicyNotifier
	// Packages is the package registry (nil: its routes answer 503).
	Packages *registry.Registry
	// Rollouts is the rollout engine (nil: the rollout routes answer 503).
	Rollouts Rollouts
	// BrokerURL is the MQTT broker's address as operators reach it, e.g.
	// "mqtts://cp.example.com:8883", returned with MQTT credentials.
	BrokerURL string
	// BrokerURLFunc, when set, is called instead of reading BrokerURL (the
	// embedded broker's port is known only once it listens).
	BrokerURLFunc func() string
	Now           func() time.Time
	Logger        *slog.Logger
}

// handler serves the operator routes; New returns it wrapped in the
// request-id, access-log and panic middleware.
type handler struct {
	store     *store.Store
	ca        CA
	revoker   Revoker
	attester  Attester
	packages  *registry.Registry
	rollouts  Rollouts
	brokerURL func() string
	now       func() time.Time
	log       *slog.Logger
	mux       *http.ServeMux
	openapi   []byte

	// Policy pushes (handlers_policy.go).
	policySigner   PolicySigner
	policyNotifier PolicyNotifier
}

type noRevoker struct{}

func (noRevoker) DisconnectDevice(string, string) {}

// New returns the handler of every route in [Routes]. It panics if Store or
// CA is nil, a programming error.
func New(d Deps) http.Handler {
	if d.Store == nil || d.CA == nil {
		panic("api.New: Deps.Store and Deps.CA are required")
	}
	a := &handler{
		store:     d.Store,
		ca:        d.CA,
		revoker:   d.Revoker,
		attester:  d.Attester,
		packages:  d.Packages,
		rollouts:  d.Rollouts,
		brokerURL: d.BrokerURLFunc,
		now:       d.Now,
		log:       d.Logger,
		mux:       http.NewServeMux(),
	}
	a.policySigner, a.policyNotifier = d.PolicySigner, d.PolicyNotifier
	if a.revoker == nil {
		a.revoker = noRevoker{}
	}
	if a.brokerURL == nil {
		u := d.BrokerURL
		a.brokerURL = func() string { return u }
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	doc, err := OpenAPIJSON()
	if err != nil {
		panic("api.New: OpenAPI document: " + err.Error())
	}
	a.openapi = doc
	for _, rt := range a.routes() {
		a.mux.Handle(rt.Method+" "+rt.Path, a.endpoint(rt))
	}
	for _, rt := range ExternalRoutes() {
		if rt.Path == "/healthz" || rt.Path == "/readyz" {
			continue // outside /api/v1/: never reaches this handler
		}
		// Registered so that a wrong method is a JSON 405 with Allow; the
		// right method reaches here only if the core is not mounted.
		a.mux.Handle(rt.Method+" "+rt.Path, a.wrap(func(w http.ResponseWriter, r *http.Request) error {
			return errorf(http.StatusNotFound, codeNotFound, "%s %s is served by the control-plane core, which is not mounted here", r.Method, r.URL.Path)
		}))
	}
	return WithRequestID(a.accessLog(a.recoverPanics(http.HandlerFunc(a.dispatch))))
}

// dispatch routes a request, answering unknown routes and wrong methods
// with JSON errors instead of ServeMux's plain text.
func (a *handler) dispatch(w http.ResponseWriter, r *http.Request) {
	if _, pattern := a.mux.Handler(r); pattern != "" {
		a.mux.ServeHTTP(w, r)
		return
	}
	// No pattern: the mux would answer 404, 405 or a redirect (to a cleaned
	// path). Let it, into a capture, and translate.
	c := &captureWriter{header: http.Header{}}
	a.mux.ServeHTTP(c, r)
	switch c.status {
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", c.header.Get("Allow"))
		writeError(w, r, errorf(http.StatusMethodNotAllowed, codeMethod, "method %s not allowed on %s", r.Method, r.URL.Path))
	case http.StatusNotFound, 0:
		writeError(w, r, errorf(http.StatusNotFound, codeNotFound, "no route %s %s", r.Method, r.URL.Path))
	default:
		for k, v := range c.header {
			w.Header()[k] = v
		}
		w.WriteHeader(c.status)
		_, _ = w.Write(c.body)
	}
}

// captureWriter records what ServeMux's own handlers write.
type captureWriter struct {
	header http.Header
	status int
	body   []byte
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
}
func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if len(c.body) < 4096 {
		c.body = append(c.body, b...)
	}
	return len(b), nil
}

// handlerFunc is an endpoint that reports failure by returning an error,
// which the wrapper writes as the JSON error body.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// wrap turns a handlerFunc into an http.Handler.
func (a *handler) wrap(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			a.writeErr(w, r, err)
		}
	})
}

// endpoint is one route's handler: authentication and the role check (if
// the route needs a role), then the route's own handler.
func (a *handler) endpoint(rt route) http.Handler {
	h := rt.handle
	return a.wrap(func(w http.ResponseWriter, r *http.Request) error {
		if rt.Role == "" {
			return h(w, r)
		}
		p, err := a.authenticate(r)
		if err != nil {
			return err
		}
		if !p.Role.AtLeast(rt.Role) {
			return errorf(http.StatusForbidden, codeForbidden, "%s %s needs the %s role; this API key has %s", rt.Method, rt.Path, rt.Role, p.Role)
		}
		return h(w, r.WithContext(withPrincipal(r.Context(), p)))
	})
}

// writeErr writes err as the response: an *apiError as it is, a store
// sentinel as its status, anything else as 500 with the detail logged.
func (a *handler) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	ae := asAPIError(err)
	if ae.status >= 500 {
		a.log.ErrorContext(r.Context(), "request failed", slog.String(logKeyRequestID, RequestID(r.Context())),
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Any("error", err))
	}
	writeError(w, r, ae)
}

var errNoPrincipal = errors.New("no authenticated principal in context")
