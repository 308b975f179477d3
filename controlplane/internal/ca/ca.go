package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/kek"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
)

// Lifetimes and intervals.
const (
	// DefaultDeviceCertTTL is a device certificate's lifetime when the fleet
	// policy sets none.
	DefaultDeviceCertTTL = 24 * time.Hour
	// OperatorCertTTL is the lifetime of an operator's MQTT certificate.
	OperatorCertTTL = 24 * time.Hour
	// ServerCertTTL is the lifetime of the listener's server certificate;
	// it is reissued in memory after two thirds of it.
	ServerCertTTL = 90 * 24 * time.Hour
	// ControlPlaneCertTTL is the lifetime of the control plane's client
	// certificate for an external broker.
	ControlPlaneCertTTL = 365 * 24 * time.Hour
	caTTL               = 20 * 365 * 24 * time.Hour
	// backdate tolerates clocks of devices running a little behind.
	backdate = 5 * time.Minute

	// RefreshInterval is how often the tenant roots are reloaded.
	RefreshInterval = 30 * time.Second
	// RevocationCacheTTL bounds how long a revocation answer is reused.
	RevocationCacheTTL = 5 * time.Second
)

// File names of the platform CA inside the data directory.
const (
	PlatformCertFile = "pki/platform-ca.crt"
	PlatformKeyFile  = "pki/platform-ca.key.wrapped"
)

var platformKeyAAD = []byte("tensorguardflow platform-ca v1")

// Sentinel errors.
var (
	// ErrNoPlatformCA: the platform CA files do not exist (run init).
	ErrNoPlatformCA = errors.New("ca: no platform CA")
	// ErrUnknownTenant: the tenant has no CA.
	ErrUnknownTenant = errors.New("ca: unknown tenant")
	// ErrBadCSR: a certificate request does not parse, its signature is
	// wrong, or its key type is not accepted.
	ErrBadCSR = errors.New("ca: bad certificate request")
	// ErrClientRefused: a client certificate is revoked, unknown, for
	// another tenant's CA, or names a disabled operator.
	ErrClientRefused = errors.New("ca: client certificate refused")
)

// Options configures Open.
type Options struct {
	Store *store.Store
	KEK   kek.Provider
	// DataDir holds the platform CA files.
	DataDir string
	// Hostnames are the extra DNS names and IP addresses of the server
	// certificate (localhost, 127.0.0.1 and ::1 are always in it).
	Hostnames []string
	// CreatePlatformCA creates the platform CA when its files are absent.
	CreatePlatformCA bool
	Now              func() time.Time
	Logger           *slog.Logger
}

// Authority is the platform CA and every tenant CA. It is safe for
// concurrent use.
type Authority struct {
	st      *store.Store
	kek     kek.Provider
	keyring *kek.Keyring
	now     func() time.Time
	log     *slog.Logger

	platformCert *x509.Certificate
	platformKey  *ecdsa.PrivateKey
	platformPEM  []byte
	caHash       string
	hostnames    []string

	srvMu   sync.Mutex
	srvCert *tls.Certificate

	mu      sync.RWMutex
	tenants map[string]*tenantCA
	pool    *x509.CertPool

	revMu sync.Mutex
	rev   map[string]revEntry
}

type tenantCA struct {
	cert *x509.Certificate
	pem  []byte
	mu   sync.Mutex
	key  *ecdsa.PrivateKey // unsealed on first use
}

type revEntry struct {
	revoked, unknown bool
	until            time.Time
}

// Open loads the platform CA from opts.DataDir (creating it if allowed) and
// every tenant CA from the store.
func Open(ctx context.Context, opts Options) (*Authority, error) {
	if opts.Store == nil || opts.KEK == nil {
		return nil, errors.New("ca: store and KEK are required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	a := &Authority{
		st:        opts.Store,
		kek:       opts.KEK,
		keyring:   kek.NewKeyring(opts.KEK, storeDEKs{opts.Store}, kek.KeyringOptions{Now: opts.Now}),
		now:       opts.Now,
		log:       opts.Logger,
		hostnames: opts.Hostnames,
		rev:       map[string]revEntry{},
	}
	if err := a.loadPlatform(ctx, opts.DataDir, opts.CreatePlatformCA); err != nil {
		return nil, err
	}
	if err := a.Refresh(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// Keyring returns the keyring that seals tenant secrets (CA keys, the
// package registry's recipient keys) under each tenant's data key.
func (a *Authority) Keyring() *kek.Keyring { return a.keyring }

// TenantKeyring returns a keyring over the tenant data keys stored in st
// (one per tenant, version 1, as NewTenantKeys makes them), for code that
// seals tenant secrets without an Authority.
func TenantKeyring(st *store.Store, provider kek.Provider, now func() time.Time) *kek.Keyring {
	return kek.NewKeyring(provider, storeDEKs{st}, kek.KeyringOptions{Now: now})
}

// EnsurePlatformCA creates the platform CA files in dataDir unless they
// exist, and reports whether it created them.
func EnsurePlatformCA(ctx context.Context, provider kek.Provider, dataDir string, now func() time.Time) (bool, error) {
	certPath := filepath.Join(dataDir, PlatformCertFile)
	if _, err := os.Stat(certPath); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("platform CA: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, err
	}
	t := now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "TensorGuardFlow platform CA", Organization: []string{"TensorGuardFlow"}},
		NotBefore:             t.Add(-backdate),
		NotAfter:              t.Add(caTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return false, fmt.Errorf("create platform CA: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return false, err
	}
	wrapped, err := provider.WrapKey(ctx, pkcs8, platformKeyAAD)
	clear(pkcs8)
	if err != nil {
		return false, fmt.Errorf("wrap platform CA key: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dataDir, "pki"), 0o700); err != nil {
		return false, err
	}
	// The key first: a certificate without its key would look like a
	// complete CA to the next run.
	if err := writeFileExcl(filepath.Join(dataDir, PlatformKeyFile), wrapped, 0o600); err != nil {
		return false, fmt.Errorf("write platform CA key: %w", err)
	}
	if err := writeFileExcl(certPath, pemCert(der), 0o644); err != nil {
		return false, fmt.Errorf("write platform CA certificate: %w", err)
	}
	return true, nil
}

func writeFileExcl(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func (a *Authority) loadPlatform(ctx context.Context, dataDir string, create bool) error {
	if create {
		if created, err := EnsurePlatformCA(ctx, a.kek, dataDir, a.now); err != nil {
			return err
		} else if created {
			a.log.Info("created the platform CA", "dir", filepath.Join(dataDir, "pki"))
		}
	}
	certPEM, err := os.ReadFile(filepath.Join(dataDir, PlatformCertFile))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w in %s: run `tg-controlplane init` first", ErrNoPlatformCA, dataDir)
	} else if err != nil {
		return fmt.Errorf("platform CA: %w", err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return fmt.Errorf("platform CA certificate: %w", err)
	}
	wrapped, err := os.ReadFile(filepath.Join(dataDir, PlatformKeyFile))
	if err != nil {
		return fmt.Errorf("platform CA key: %w", err)
	}
	pkcs8, err := a.kek.UnwrapKey(ctx, wrapped, platformKeyAAD)
	if err != nil {
		return fmt.Errorf("unwrap platform CA key (is this the KEK it was created with?): %w", err)
	}
	key, err := parseECKey(pkcs8)
	clear(pkcs8)
	if err != nil {
		return fmt.Errorf("platform CA key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return errors.New("platform CA key does not match its certificate")
	}
	a.platformCert, a.platformKey = cert, key
	a.platformPEM = pemCert(cert.Raw)
	sum := sha256.Sum256(cert.Raw)
	a.caHash = "sha256:" + hex.EncodeToString(sum[:])
	return nil
}

// CAHash is "sha256:<hex>" of the platform CA certificate's DER: what an
// agent pins on its first connection.
func (a *Authority) CAHash() string { return a.caHash }

// PlatformCAPEM returns the platform CA certificate in PEM.
func (a *Authority) PlatformCAPEM() []byte { return slices.Clone(a.platformPEM) }

// PlatformCA returns the platform CA certificate.
func (a *Authority) PlatformCA() *x509.Certificate { return a.platformCert }

// Refresh reloads the tenant roots from the store. Call it after creating a
// tenant; Run also calls it every RefreshInterval.
func (a *Authority) Refresh(ctx context.Context) error {
	tenants, err := a.st.ListTenants(ctx)
	if err != nil {
		return fmt.Errorf("list tenants: %w", err)
	}
	a.mu.RLock()
	old := a.tenants
	a.mu.RUnlock()
	next := make(map[string]*tenantCA, len(tenants))
	pool := x509.NewCertPool()
	for _, t := range tenants {
		row, err := a.st.GetCA(ctx, t.ID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		} else if err != nil {
			return fmt.Errorf("load CA of tenant %s: %w", t.ID, err)
		}
		if prev, ok := old[t.ID]; ok && bytes.Equal(prev.cert.Raw, row.CertDER) {
			next[t.ID] = prev // keep the unsealed key
		} else {
			cert, err := x509.ParseCertificate(row.CertDER)
			if err != nil {
				return fmt.Errorf("CA of tenant %s: %w", t.ID, err)
			}
			next[t.ID] = &tenantCA{cert: cert, pem: pemCert(cert.Raw)}
		}
		pool.AddCert(next[t.ID].cert)
	}
	a.mu.Lock()
	a.tenants, a.pool = next, pool
	a.mu.Unlock()
	return nil
}

// Run refreshes the tenant roots and prunes the revocation cache until ctx
// ends.
func (a *Authority) Run(ctx context.Context) error {
	t := time.NewTicker(RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := a.Refresh(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("reload tenant CAs", "error", err)
			}
			a.pruneRevocations()
		}
	}
}

// ClientCAs returns the pool of every tenant root.
func (a *Authority) ClientCAs() *x509.CertPool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.pool
}

// Tenants returns the ids of the tenants that have a CA.
func (a *Authority) Tenants() []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	ids := make([]string, 0, len(a.tenants))
	for id := range a.tenants {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (a *Authority) tenant(id string) (*tenantCA, error) {
	a.mu.RLock()
	t, ok := a.tenants[id]
	a.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownTenant, id)
	}
	return t, nil
}

// tenantCert returns the tenant's root, reloading once from the store when
// this process does not know the tenant yet (created by another process).
func (a *Authority) tenantCert(ctx context.Context, id string) (*tenantCA, error) {
	t, err := a.tenant(id)
	if err == nil {
		return t, nil
	}
	if _, gerr := a.st.GetCA(ctx, id); gerr != nil {
		return nil, err
	}
	if rerr := a.Refresh(ctx); rerr != nil {
		return nil, rerr
	}
	return a.tenant(id)
}

// TenantCAPEM returns the tenant's root certificate in PEM.
func (a *Authority) TenantCAPEM(ctx context.Context, tenant string) ([]byte, error) {
	t, err := a.tenantCert(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return slices.Clone(t.pem), nil
}

// Bundle returns the CA bundle a device trusts: its tenant's root and the
// platform root, in PEM.
func (a *Authority) Bundle(ctx context.Context, tenant string) ([]byte, error) {
	t, err := a.tenantCert(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return append(slices.Clone(t.pem), a.platformPEM...), nil
}

// AllRootsPEM returns every tenant root followed by the platform root: the
// cafile of an external broker, which must accept devices, operators and the
// control plane.
func (a *Authority) AllRootsPEM() []byte {
	var b []byte
	for _, id := range a.Tenants() {
		if t, err := a.tenant(id); err == nil {
			b = append(b, t.pem...)
		}
	}
	return append(b, a.platformPEM...)
}

func (a *Authority) signer(ctx context.Context, tenant string) (*tenantCA, error) {
	t, err := a.tenantCert(ctx, tenant)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.key != nil {
		return t, nil
	}
	row, err := a.st.GetCA(ctx, tenant)
	if err != nil {
		return nil, fmt.Errorf("CA of tenant %s: %w", tenant, err)
	}
	pkcs8, err := a.keyring.Open(ctx, tenant, row.WrappedKey, caKeyAAD(tenant))
	if err != nil {
		return nil, fmt.Errorf("unseal CA key of tenant %s: %w", tenant, err)
	}
	key, err := parseECKey(pkcs8)
	clear(pkcs8)
	if err != nil {
		return nil, fmt.Errorf("CA key of tenant %s: %w", tenant, err)
	}
	if !key.PublicKey.Equal(t.cert.PublicKey) {
		return nil, fmt.Errorf("CA key of tenant %s does not match its certificate", tenant)
	}
	t.key = key
	return t, nil
}

// Preload unseals the tenant's CA key, so that a later issue inside a
// database transaction needs no further reads.
func (a *Authority) Preload(ctx context.Context, tenant string) error {
	_, err := a.signer(ctx, tenant)
	return err
}

func caKeyAAD(tenant string) []byte { return []byte("tenant_cas/" + tenant + "/private_key") }

// NewTenant makes a tenant's keys: a fresh DEK wrapped under the KEK (store
// it as the tenant's WrappedDEK) and the tenant CA (certificate and key
// sealed under that DEK, for store.CreateCA). Nothing is stored, so the
// caller can write both in one transaction.
func (a *Authority) NewTenant(ctx context.Context, tenant string) (wrappedDEK []byte, ca store.CA, err error) {
	return NewTenantKeys(ctx, a.kek, tenant, a.now)
}

// NewTenantKeys is NewTenant without an Authority (for init, before the
// server runs).
func NewTenantKeys(ctx context.Context, provider kek.Provider, tenant string, now func() time.Time) (wrappedDEK []byte, ca store.CA, err error) {
	if !store.ValidTenantID(tenant) {
		return nil, store.CA{}, fmt.Errorf("tenant id %q must match ^[a-z0-9][a-z0-9-]{0,62}$", tenant)
	}
	if now == nil {
		now = time.Now
	}
	one := staticDEK{tenant: tenant}
	kr := kek.NewKeyring(provider, &one, kek.KeyringOptions{Now: now})
	if one.wrapped, err = kr.NewTenantKey(ctx, tenant, 1); err != nil {
		return nil, store.CA{}, fmt.Errorf("tenant data key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, store.CA{}, err
	}
	t := now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "TensorGuardFlow tenant " + tenant + " CA", Organization: []string{tenant}},
		NotBefore:             t.Add(-backdate),
		NotAfter:              t.Add(caTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, store.CA{}, fmt.Errorf("create CA of tenant %s: %w", tenant, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, store.CA{}, err
	}
	sealed, err := kr.Seal(ctx, tenant, pkcs8, caKeyAAD(tenant))
	clear(pkcs8)
	if err != nil {
		return nil, store.CA{}, fmt.Errorf("seal CA key of tenant %s: %w", tenant, err)
	}
	return one.wrapped, store.CA{Tenant: tenant, CertDER: der, WrappedKey: sealed}, nil
}

// IssuedCert is a certificate and what the store records about it.
type IssuedCert struct {
	Cert *x509.Certificate
	PEM  []byte
}

// Record is the issued_certs row for a device certificate.
func (c IssuedCert) Record(tenant, device string) store.IssuedCert {
	return store.IssuedCert{
		Serial: store.SerialString(c.Cert.SerialNumber), Tenant: tenant, DeviceID: device,
		NotBefore: c.Cert.NotBefore, NotAfter: c.Cert.NotAfter,
	}
}

// DeviceCertRequest says whom a device certificate is for.
type DeviceCertRequest struct {
	Tenant, Fleet, Device string
	PublicKey             crypto.PublicKey
	// TTL is the lifetime; zero means DefaultDeviceCertTTL.
	TTL time.Duration
}

// IssueDeviceCert issues a device certificate (docs/identity.md). The
// caller has verified the key (the CSR, the TPM evidence) and records the
// result.
func (a *Authority) IssueDeviceCert(ctx context.Context, r DeviceCertRequest) (IssuedCert, error) {
	if !mqttacl.ValidTenant(r.Tenant) || !mqttacl.ValidID(r.Device) || !mqttacl.ValidID(r.Fleet) {
		return IssuedCert{}, fmt.Errorf("ca: invalid device identity %s/%s/%s", r.Tenant, r.Fleet, r.Device)
	}
	if err := checkLeafKey(r.PublicKey, false); err != nil {
		return IssuedCert{}, err
	}
	if r.TTL <= 0 {
		r.TTL = DefaultDeviceCertTTL
	}
	id := mqttacl.Device(r.Tenant, r.Device)
	return a.issueLeaf(ctx, r.Tenant, id, pkix.Name{CommonName: r.Device, Organization: []string{r.Tenant}, OrganizationalUnit: []string{r.Fleet}}, r.PublicKey, r.TTL)
}

// IssueOperatorCert issues a read-only operator MQTT certificate for the
// key in csrDER (DER or PEM) and returns it in PEM.
func (a *Authority) IssueOperatorCert(ctx context.Context, tenant, operatorID string, csrDER []byte) ([]byte, error) {
	if !mqttacl.ValidTenant(tenant) || !mqttacl.ValidID(operatorID) {
		return nil, fmt.Errorf("ca: invalid operator identity %s/%s", tenant, operatorID)
	}
	csr, err := ParseCSR(csrDER)
	if err != nil {
		return nil, err
	}
	if err := checkLeafKey(csr.PublicKey, true); err != nil {
		return nil, err
	}
	id := mqttacl.Operator(tenant, operatorID)
	c, err := a.issueLeaf(ctx, tenant, id, pkix.Name{CommonName: operatorID, Organization: []string{tenant}}, csr.PublicKey, OperatorCertTTL)
	if err != nil {
		return nil, err
	}
	return c.PEM, nil
}

func (a *Authority) issueLeaf(ctx context.Context, tenant string, id mqttacl.Identity, subject pkix.Name, pub crypto.PublicKey, ttl time.Duration) (IssuedCert, error) {
	t, err := a.signer(ctx, tenant)
	if err != nil {
		return IssuedCert{}, err
	}
	u, err := url.Parse(id.SPIFFEID())
	if err != nil {
		return IssuedCert{}, err
	}
	now := a.now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      subject,
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	return sign(tmpl, t.cert, pub, t.key)
}

func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (IssuedCert, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return IssuedCert{}, fmt.Errorf("ca: sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return IssuedCert{}, err
	}
	return IssuedCert{Cert: cert, PEM: pemCert(der)}, nil
}

// ServerCertificate returns the listener's server certificate, reissuing it
// in memory after two thirds of its lifetime. It fits
// tls.Config.GetCertificate.
func (a *Authority) ServerCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	a.srvMu.Lock()
	defer a.srvMu.Unlock()
	if c := a.srvCert; c != nil {
		lifetime := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
		if a.now().Before(c.Leaf.NotBefore.Add(lifetime * 2 / 3)) {
			return c, nil
		}
	}
	certPEM, keyPEM, err := a.IssueServerCert(a.hostnames)
	if err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	// Send the platform CA too: a client that knows only its hash (an
	// agent's first contact, `tgctl login --ca-hash`) must find it in the
	// chain to pin it (docs/api.md, "Enrollment, step by step").
	c.Certificate = append(c.Certificate, a.platformCert.Raw)
	a.srvCert = &c
	return &c, nil
}

// IssueServerCert issues a server certificate from the platform CA for
// hostnames (DNS names or IP addresses) plus localhost, 127.0.0.1 and ::1,
// with a fresh key; it returns both in PEM.
func (a *Authority) IssueServerCert(hostnames []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := a.now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "tg-controlplane-server", Organization: []string{"TensorGuardFlow"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(ServerCertTTL),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, h := range hostnames {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if h != "" && !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	c, err := sign(tmpl, a.platformCert, key.Public(), a.platformKey)
	if err != nil {
		return nil, nil, err
	}
	return c.PEM, pemKey(key), nil
}

// IssueControlPlaneCert issues the control plane's MQTT client certificate
// (SAN spiffe://tensorguardflow/controlplane[/<instance>], CN as
// broker.MosquittoUsername expects) from the platform CA, with a fresh key.
func (a *Authority) IssueControlPlaneCert(instance string) (certPEM, keyPEM []byte, err error) {
	id := mqttacl.ControlPlane(instance)
	u, err := url.Parse(id.SPIFFEID())
	if err != nil {
		return nil, nil, err
	}
	cn := "controlplane"
	if instance != "" {
		cn += "." + instance
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := a.now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"TensorGuardFlow"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(ControlPlaneCertTTL),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	c, err := sign(tmpl, a.platformCert, key.Public(), a.platformKey)
	if err != nil {
		return nil, nil, err
	}
	return c.PEM, pemKey(key), nil
}

// ParseCSR parses a PKCS #10 request in DER or PEM and checks its
// signature.
func ParseCSR(b []byte) (*x509.CertificateRequest, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "CERTIFICATE REQUEST" && blk.Type != "NEW CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("%w: PEM block %q", ErrBadCSR, blk.Type)
		}
		b = blk.Bytes
	}
	csr, err := x509.ParseCertificateRequest(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	return csr, nil
}

// checkLeafKey accepts ECDSA P-256 (devices, whose TPM keys are P-256) and,
// for operators, whose keys come from stock tools, also ECDSA P-384 and RSA
// of at least 2048 bits.
func checkLeafKey(pub crypto.PublicKey, operator bool) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || (operator && k.Curve == elliptic.P384()) {
			return nil
		}
	default:
		if operator {
			if rk, ok := pub.(interface{ Size() int }); ok && rk.Size() >= 256 {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: key type %T not accepted", ErrBadCSR, pub)
}

// VerifyClient checks a client certificate chain that crypto/tls verified
// against ClientCAs: the chain ends at the root of the tenant the
// certificate's SPIFFE SAN names, and the certificate is one the CA issued
// and did not revoke (devices) or names an operator that exists and is not
// disabled. It returns the certificate's identity.
func (a *Authority) VerifyClient(ctx context.Context, chains [][]*x509.Certificate) (mqttacl.Identity, error) {
	if len(chains) == 0 || len(chains[0]) == 0 {
		return mqttacl.Identity{}, fmt.Errorf("%w: no verified chain", ErrClientRefused)
	}
	leaf := chains[0][0]
	id, err := mqttacl.IdentityFromCert(leaf)
	if err != nil {
		return mqttacl.Identity{}, fmt.Errorf("%w: %v", ErrClientRefused, err)
	}
	if id.Kind != mqttacl.KindDevice && id.Kind != mqttacl.KindOperator {
		return id, fmt.Errorf("%w: %s is not a device or operator identity", ErrClientRefused, id)
	}
	t, err := a.tenant(id.Tenant)
	if err != nil {
		return id, fmt.Errorf("%w: %v", ErrClientRefused, err)
	}
	ok := false
	for _, ch := range chains {
		if ch[0].Equal(leaf) && ch[len(ch)-1].Equal(t.cert) {
			ok = true
			break
		}
	}
	if !ok {
		return id, fmt.Errorf("%w: %s is not issued by its tenant's CA", ErrClientRefused, id)
	}
	switch id.Kind {
	case mqttacl.KindDevice:
		revoked, err := a.IsRevoked(ctx, id.Tenant, store.SerialString(leaf.SerialNumber))
		switch {
		case errors.Is(err, store.ErrNotFound):
			return id, fmt.Errorf("%w: certificate %s of %s was never issued", ErrClientRefused, leaf.SerialNumber.Text(16), id)
		case err != nil:
			return id, fmt.Errorf("%w: revocation check: %v", ErrClientRefused, err)
		case revoked:
			return id, fmt.Errorf("%w: certificate %s of %s is revoked", ErrClientRefused, leaf.SerialNumber.Text(16), id)
		}
	case mqttacl.KindOperator:
		op, err := a.st.GetOperator(ctx, id.Tenant, id.Operator)
		if err != nil || op.Disabled {
			return id, fmt.Errorf("%w: operator %s is unknown or disabled", ErrClientRefused, id.Operator)
		}
	}
	return id, nil
}

// IsRevoked reports whether tenant's device certificate serial is revoked,
// from a cache of at most RevocationCacheTTL. A serial the CA never issued
// is store.ErrNotFound.
func (a *Authority) IsRevoked(ctx context.Context, tenant, serial string) (bool, error) {
	key := tenant + "/" + serial
	now := a.now()
	a.revMu.Lock()
	e, ok := a.rev[key]
	a.revMu.Unlock()
	if ok && now.Before(e.until) {
		if e.unknown {
			return false, fmt.Errorf("certificate %s: %w", serial, store.ErrNotFound)
		}
		return e.revoked, nil
	}
	revoked, err := a.st.IsRevoked(ctx, tenant, serial)
	unknown := errors.Is(err, store.ErrNotFound)
	if err != nil && !unknown {
		return false, err
	}
	a.revMu.Lock()
	a.rev[key] = revEntry{revoked: revoked, unknown: unknown, until: now.Add(RevocationCacheTTL)}
	a.revMu.Unlock()
	return revoked, err
}

// isRevokedSerial answers for a serial of any tenant (the broker knows only
// the serial). Device certificates are found in their tenant's records; a
// serial in no tenant's records is an operator certificate (the chain
// already proved a tenant CA issued it), which is not revocable by serial.
// A database error fails closed.
func (a *Authority) isRevokedSerial(serial *big.Int) bool {
	s := store.SerialString(serial)
	key := "*/" + s
	now := a.now()
	a.revMu.Lock()
	e, ok := a.rev[key]
	a.revMu.Unlock()
	if ok && now.Before(e.until) {
		return e.revoked
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	revoked := false
	for _, t := range a.Tenants() {
		r, err := a.st.IsRevoked(ctx, t, s)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			a.log.Warn("revocation check failed; refusing", "serial", s, "error", err)
			return true
		}
		revoked = r
		break
	}
	a.revMu.Lock()
	a.rev[key] = revEntry{revoked: revoked, until: now.Add(RevocationCacheTTL)}
	a.revMu.Unlock()
	return revoked
}

// InvalidateRevocations drops every cached revocation answer. Call it right
// after revoking a certificate or a device, before disconnecting it.
func (a *Authority) InvalidateRevocations() {
	a.revMu.Lock()
	clear(a.rev)
	a.revMu.Unlock()
}

func (a *Authority) pruneRevocations() {
	now := a.now()
	a.revMu.Lock()
	defer a.revMu.Unlock()
	for k, e := range a.rev {
		if !now.Before(e.until) {
			delete(a.rev, k)
		}
	}
}

// BrokerAuthority adapts the Authority to the embedded broker's Authority
// interface (ClientCAs, IsRevoked by serial).
type BrokerAuthority struct{ A *Authority }

// ClientCAs returns every tenant root.
func (b BrokerAuthority) ClientCAs() *x509.CertPool { return b.A.ClientCAs() }

// IsRevoked reports whether the certificate with this serial is revoked.
func (b BrokerAuthority) IsRevoked(serial *big.Int) bool { return b.A.isRevokedSerial(serial) }

// storeDEKs reads tenant DEKs from the store: one wrapped key per tenant,
// version 1.
type storeDEKs struct{ st *store.Store }

func (s storeDEKs) CurrentDEK(ctx context.Context, tenant string) (uint32, []byte, error) {
	w, err := s.DEK(ctx, tenant, 1)
	return 1, w, err
}

func (s storeDEKs) DEK(ctx context.Context, tenant string, version uint32) ([]byte, error) {
	if version != 1 {
		return nil, fmt.Errorf("tenant %s version %d: %w", tenant, version, kek.ErrNoKey)
	}
	t, err := s.st.GetTenant(ctx, tenant)
	if errors.Is(err, store.ErrNotFound) || (err == nil && len(t.WrappedDEK) == 0) {
		return nil, fmt.Errorf("tenant %s: %w", tenant, kek.ErrNoKey)
	} else if err != nil {
		return nil, err
	}
	return t.WrappedDEK, nil
}

// staticDEK serves one wrapped DEK before it is stored, so a new tenant's
// CA key can be sealed in the transaction that creates the tenant.
type staticDEK struct {
	tenant  string
	wrapped []byte
}

func (s *staticDEK) CurrentDEK(ctx context.Context, tenant string) (uint32, []byte, error) {
	w, err := s.DEK(ctx, tenant, 1)
	return 1, w, err
}

func (s *staticDEK) DEK(_ context.Context, tenant string, version uint32) ([]byte, error) {
	if tenant != s.tenant || version != 1 || s.wrapped == nil {
		return nil, kek.ErrNoKey
	}
	return s.wrapped, nil
}

func randomSerial() *big.Int {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			panic(err) // crypto/rand never fails on Linux
		}
		if n.Sign() > 0 {
			return n
		}
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err) // a P-256 key always marshals
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

func parseECKey(pkcs8 []byte) (*ecdsa.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(pkcs8)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("CA key is %T, want ECDSA", k)
	}
	return ek, nil
}
