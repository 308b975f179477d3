// Package apitest helps tests talk to the operator API: a real in-memory
// CA that satisfies api.CA, a Revoker that records its calls, and Env, an
// httptest server over api.New with a SQLite store in t.TempDir() and a
// tenant with an admin API key. tgctl's tests can run against it as they
// would against a control plane.
package apitest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
	tgca "github.com/tensorguard/tensorguardflow/controlplane/internal/ca"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/policy"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/registry"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/rollout"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/kek"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// CA is a working certificate authority held in memory: a platform root
// and one root per tenant, created on first use. Set Err to make every
// call that can fail fail with it.
type CA struct {
	mu       sync.Mutex
	platform *authority
	tenants  map[string]*authority
	// Err, if set, is returned by TenantCAPEM and IssueOperatorCert.
	Err error
	// Issued records every operator certificate issued.
	Issued []*x509.Certificate
}

var _ api.CA = (*CA)(nil)

type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newAuthority(cn string) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

// NewCA returns a CA with a fresh platform root.
func NewCA() (*CA, error) {
	p, err := newAuthority("TensorGuardFlow platform CA (test)")
	if err != nil {
		return nil, err
	}
	return &CA{platform: p, tenants: map[string]*authority{}}, nil
}

func (c *CA) tenant(tenant string) (*authority, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.Err != nil {
		return nil, c.Err
	}
	if a := c.tenants[tenant]; a != nil {
		return a, nil
	}
	a, err := newAuthority("TensorGuardFlow tenant CA " + tenant + " (test)")
	if err != nil {
		return nil, err
	}
	c.tenants[tenant] = a
	return a, nil
}

// TenantCAPEM implements api.CA.
func (c *CA) TenantCAPEM(_ context.Context, tenant string) ([]byte, error) {
	a, err := c.tenant(tenant)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(a.pem), nil
}

// TenantRoot returns tenant's CA certificate, for verifying what it issued.
func (c *CA) TenantRoot(tenant string) (*x509.Certificate, error) {
	a, err := c.tenant(tenant)
	if err != nil {
		return nil, err
	}
	return a.cert, nil
}

// PlatformCAPEM implements api.CA.
func (c *CA) PlatformCAPEM() []byte { return bytes.Clone(c.platform.pem) }

// CAHash implements api.CA: sha256:<hex> of the platform CA's DER.
func (c *CA) CAHash() string {
	h := sha256.Sum256(c.platform.cert.Raw)
	return "sha256:" + hex.EncodeToString(h[:])
}

// IssueOperatorCert implements api.CA: a one-day client certificate with
// the operator's SPIFFE URI SAN, signed by the tenant CA.
func (c *CA) IssueOperatorCert(_ context.Context, tenant, operatorID string, csrDER []byte) ([]byte, error) {
	a, err := c.tenant(tenant)
	if err != nil {
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, err
	}
	uri, err := url.Parse("spiffe://tensorguardflow/tenant/" + tenant + "/operator/" + operatorID)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: operatorID, Organization: []string{tenant}},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, csr.PublicKey, a.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.Issued = append(c.Issued, cert)
	c.mu.Unlock()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// Revoker records DisconnectDevice calls.
type Revoker struct {
	mu    sync.Mutex
	calls []string
}

var _ api.Revoker = (*Revoker)(nil)

// DisconnectDevice implements api.Revoker.
func (r *Revoker) DisconnectDevice(tenant, device string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, tenant+"/"+device)
}

// Calls returns "tenant/device" for every call so far.
func (r *Revoker) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// Attester is an api.Attester that records its calls and returns a
// challenge without publishing it anywhere.
type Attester struct {
	mu    sync.Mutex
	calls []string
}

var _ api.Attester = (*Attester)(nil)

// ChallengeDevice implements api.Attester.
func (a *Attester) ChallengeDevice(_ context.Context, tenant, device string) (wire.AttestChallenge, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, tenant+"/"+device)
	now := time.Now().UTC()
	return wire.AttestChallenge{Schema: wire.AttestChallengeSchema, ID: fmt.Sprintf("chl-test-%d", len(a.calls)),
		Nonce: make([]byte, 32), PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7}, IssuedAt: now, ExpiresAt: now.Add(time.Minute)}, nil
}

// Calls returns "tenant/device" for every call so far.
func (a *Attester) Calls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

// Env is a running operator API with its store, CA and revoker, and one
// tenant with an admin API key.
type Env struct {
	T        testing.TB
	Store    *store.Store
	CA       *CA
	Revoker  *Revoker
	Attester *Attester
	Server   *httptest.Server
	// Packages is the package registry (local blobs in a temp dir, keys
	// under an in-memory KEK); Keys seals tenant secrets.
	Packages *registry.Registry
	Keys     *kek.Keyring
	// Rollouts is the rollout engine behind the rollout routes; it is not
	// run (no leader, nothing published): rollouts stay as created, with
	// their jobs as a test adds them.
	Rollouts *rollout.Engine
	Tenant   string
	AdminKey string
	// DSN is the store's database; for SQLite, "sqlite://" and the path.
	DSN string

	// PolicyKeys are the tenants' policy signing keys (sealed under Keys);
	// PolicyNotes records the fleets told of a new policy revision.
	PolicyKeys  *policy.Keys
	PolicyNotes *PolicyNotifier
}

// Options tune New. The zero value is a SQLite store in t.TempDir().
type Options struct {
	// DSN, if set, is the database (e.g. from testpg.Start).
	DSN string
	// Tenant is the first tenant's id; default "acme".
	Tenant string
	// Now is the API's clock (the store uses the same one).
	Now func() time.Time
}

// New starts an Env; everything is closed when t ends. Logs go to t.Log.
func New(t testing.TB, opts Options) *Env {
	t.Helper()
	if opts.DSN == "" {
		opts.DSN = "sqlite://" + filepath.Join(t.TempDir(), "cp.db")
	}
	if opts.Tenant == "" {
		opts.Tenant = "acme"
	}
	var sopts []store.Option
	if opts.Now != nil {
		sopts = append(sopts, store.WithClock(opts.Now))
	}
	st, err := store.Open(context.Background(), opts.DSN, sopts...)
	if err != nil {
		t.Fatalf("apitest: open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	ca, err := NewCA()
	if err != nil {
		t.Fatalf("apitest: CA: %v", err)
	}
	e := &Env{T: t, Store: st, CA: ca, Revoker: &Revoker{}, Attester: &Attester{}, Tenant: opts.Tenant, DSN: opts.DSN}
	logger := slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	provider, err := kek.NewMemoryProvider(bytes.Repeat([]byte{0x42}, kek.KeySize))
	if err != nil {
		t.Fatalf("apitest: KEK: %v", err)
	}
	e.Keys = tgca.TenantKeyring(st, provider, opts.Now)
	blobs, err := registry.NewLocalBlobs(filepath.Join(t.TempDir(), "packages"))
	if err != nil {
		t.Fatalf("apitest: blobs: %v", err)
	}
	e.Packages, err = registry.New(registry.Options{Store: st, Keys: e.Keys, Blobs: blobs, StagingDir: blobs.StagingDir(),
		Now: opts.Now, Logger: logger})
	if err != nil {
		t.Fatalf("apitest: registry: %v", err)
	}
	e.PolicyKeys, e.PolicyNotes = policy.NewKeys(st, e.Keys, logger), &PolicyNotifier{}
	e.Rollouts = rollout.New(rollout.Deps{Store: st, Now: opts.Now, Log: logger})
	h := api.New(api.Deps{
		Store: st, CA: ca, Revoker: e.Revoker, Attester: e.Attester, Packages: e.Packages, BrokerURL: "mqtts://broker.test:8883", Now: opts.Now,
		Logger: logger, PolicySigner: e.PolicyKeys, PolicyNotifier: e.PolicyNotes,
		Rollouts: e.Rollouts,
	})
	e.Server = httptest.NewServer(h)
	t.Cleanup(e.Server.Close)
	e.AdminKey = e.AddTenant(opts.Tenant)
	return e
}

// AddTenant creates a tenant (with its data key) with an admin operator
// "admin" and returns that operator's admin API key.
func (e *Env) AddTenant(tenant string) string {
	e.T.Helper()
	ctx := context.Background()
	dek, err := e.Keys.NewTenantKey(ctx, tenant, 1)
	if err != nil {
		e.T.Fatalf("apitest: tenant key: %v", err)
	}
	if _, err := e.Store.CreateTenant(ctx, store.Tenant{ID: tenant, WrappedDEK: dek}); err != nil {
		e.T.Fatalf("apitest: create tenant: %v", err)
	}
	return e.Key(tenant, "admin", store.RoleAdmin)
}

// Key creates an operator named name with role in tenant (or reuses the
// one of that name) and returns a new API key of that role for it.
func (e *Env) Key(tenant, name string, role store.Role) string {
	e.T.Helper()
	ctx := context.Background()
	op, err := e.Store.CreateOperator(ctx, tenant, store.Operator{Name: name, Role: role})
	if errors.Is(err, store.ErrConflict) {
		ops, lerr := e.Store.ListOperators(ctx, tenant)
		if lerr != nil {
			e.T.Fatalf("apitest: list operators: %v", lerr)
		}
		for _, o := range ops {
			if o.Name == name {
				op, err = o, nil
			}
		}
	}
	if err != nil {
		e.T.Fatalf("apitest: create operator: %v", err)
	}
	_, secret, err := e.Store.CreateAPIKey(ctx, tenant, store.APIKey{OperatorID: op.ID, Role: role, Name: name + "-key"})
	if err != nil {
		e.T.Fatalf("apitest: create API key: %v", err)
	}
	return secret
}

// Do sends a request with key as the bearer token (none if empty) and, if
// body is not nil, body as JSON: a string or []byte is sent as it is,
// anything else is marshalled. It returns the status, the headers and the
// body read in full.
func (e *Env) Do(method, path, key string, body any) (int, http.Header, []byte) {
	e.T.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewReader([]byte(b))
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.T.Fatalf("apitest: marshal body: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.Server.URL+path, rd)
	if err != nil {
		e.T.Fatalf("apitest: %v", err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := e.Server.Client().Do(req)
	if err != nil {
		e.T.Fatalf("apitest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		e.T.Fatalf("apitest: read %s %s: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, out
}

// tWriter sends log lines to t.Log.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
