// Package enrolltest is a fake control plane for the agent's tests: an
// HTTPS server (httptest, on loopback) that implements the device routes of
// docs/api.md — /api/v1/enroll, /api/v1/enroll/activate,
// /api/v1/device/renew, /api/v1/device/self and /api/v1/device/kem-key —
// with real checks and real cryptography: it verifies the CSR, the AK's
// TPM2_Certify of the TLS key and its binding to the token, the CSR and the
// KEM public key (which must parse), builds a genuine credential-activation
// challenge for the device's EK and AK (go-tpm's credactivation.Generate),
// and issues certificates from a test tenant CA shaped as docs/identity.md
// says. Its server certificate comes from a separate platform CA, which it
// sends in its chain so that pinning works.
//
// A device without a TPM (tpm_kind "none", a CSR and no evidence) is
// enrolled at once with 201 when Options.AllowNoTPM says the fleet allows
// it, and refused with 403 ENROLLMENT_REFUSED otherwise, as the control
// plane does.
//
// It counts calls per route and can inject failures, so tests can assert
// "no second enrollment" or exercise retries. It is a fake, not the control
// plane: no database, no audit, one fleet whose only policy is AllowNoTPM;
// integration/ runs the real one.
package enrolltest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/legacy/tpm2/credactivation"

	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/enrollbind"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// Options configures a ControlPlane; zero fields take defaults.
type Options struct {
	Tenant  string        // default "acme"
	Fleet   string        // default "flt-aaaaaaaaaaaaaaaaaaaa"
	CertTTL time.Duration // device certificate lifetime; default 24h
	// EKRoots, when set, requires an EK certificate chaining to them.
	EKRoots *x509.CertPool
	// AllowNoTPM is the fleet's allow_no_tpm: devices without a TPM are
	// enrolled (201, no challenge) only when it is set.
	AllowNoTPM bool
}

// ControlPlane is the running fake.
type ControlPlane struct {
	opts   Options
	srv    *httptest.Server
	URL    string // https://127.0.0.1:port
	Pin    string // "sha256:<hex>" of the platform CA
	Server *x509.Certificate

	serverCert  tls.Certificate
	platformCA  *x509.Certificate
	tenantCA    *x509.Certificate
	tenantCAKey crypto.Signer
	tenantCAPEM string
	platformPEM string
	mu          sync.Mutex
	tokens      map[string]*token
	sessions    map[string]*session
	devices     map[string]*device
	calls       map[string]int
	failures    map[string][]failure
	certTTL     time.Duration
}

type token struct {
	expires time.Time
	used    bool
}

type session struct {
	token      string
	kind       string
	secretHash [32]byte
	csr        *x509.CertificateRequest
	kem        []byte
}

type device struct {
	id       string
	kind     string // wire.TPMKind…
	pub      crypto.PublicKey
	revoked  bool
	serial   *big.Int
	notAfter time.Time
	kem      []byte // KEM public key, nil when none registered
}

type failure struct {
	status int
	code   string
}

// Start starts the fake on a loopback port; it stops at test cleanup.
func Start(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	if opts.Tenant == "" {
		opts.Tenant = "acme"
	}
	if opts.Fleet == "" {
		opts.Fleet = "flt-aaaaaaaaaaaaaaaaaaaa"
	}
	if opts.CertTTL <= 0 {
		opts.CertTTL = 24 * time.Hour
	}
	cp := &ControlPlane{
		opts: opts, certTTL: opts.CertTTL,
		tokens: map[string]*token{}, sessions: map[string]*session{}, devices: map[string]*device{},
		calls: map[string]int{}, failures: map[string][]failure{},
	}
	var platformKey crypto.Signer
	cp.platformCA, platformKey = newCA(t, "TensorGuardFlow platform CA")
	cp.tenantCA, cp.tenantCAKey = newCA(t, "tenant "+opts.Tenant+" CA")
	cp.platformPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cp.platformCA.Raw}))
	cp.tenantCAPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cp.tenantCA.Raw}))
	sum := sha256.Sum256(cp.platformCA.Raw)
	cp.Pin = fmt.Sprintf("sha256:%x", sum)

	srvKey := mustKey(t)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "controlplane"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, cp.platformCA, srvKey.Public(), platformKey)
	if err != nil {
		t.Fatal(err)
	}
	cp.Server, _ = x509.ParseCertificate(srvDER)
	// The chain includes the platform CA so a pinning client finds it.
	cp.serverCert = tls.Certificate{Certificate: [][]byte{srvDER, cp.platformCA.Raw}, PrivateKey: srvKey}
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(cp.tenantCA)

	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/enroll", cp.count("enroll", cp.handleEnroll))
	mux.HandleFunc("POST /api/v1/enroll/activate", cp.count("activate", cp.handleActivate))
	mux.HandleFunc("POST /api/v1/device/renew", cp.count("renew", cp.handleRenew))
	mux.HandleFunc("GET /api/v1/device/self", cp.count("self", cp.handleSelf))
	mux.HandleFunc("PUT /api/v1/device/kem-key", cp.count("kem-key", cp.handleKEMKey))
	cp.srv = httptest.NewUnstartedServer(mux)
	cp.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{cp.serverCert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    clientCAs,
		MinVersion:   tls.VersionTLS12,
	}
	// Refused handshakes (pin tests) are expected; keep them out of the log.
	cp.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	cp.srv.StartTLS()
	cp.URL = cp.srv.URL
	t.Cleanup(cp.srv.Close)
	return cp
}

// PlatformCAPEM is the platform CA certificate (what a CA file would hold).
func (cp *ControlPlane) PlatformCAPEM() []byte { return []byte(cp.platformPEM) }

// ServerCertificate is the server's certificate (for 127.0.0.1 and
// localhost, from the platform CA), for a test broker that devices must
// trust like the control plane.
func (cp *ControlPlane) ServerCertificate() tls.Certificate { return cp.serverCert }

// TenantCA is the CA that issues device certificates.
func (cp *ControlPlane) TenantCA() *x509.Certificate { return cp.tenantCA }

// Tenant and Fleet return the ids device certificates carry.
func (cp *ControlPlane) Tenant() string { return cp.opts.Tenant }

// Fleet returns the fleet id devices enroll into.
func (cp *ControlPlane) Fleet() string { return cp.opts.Fleet }

// SetCertTTL changes the lifetime of certificates issued from now on.
func (cp *ControlPlane) SetCertTTL(d time.Duration) {
	cp.mu.Lock()
	cp.certTTL = d
	cp.mu.Unlock()
}

// AddToken creates a one-time token valid until expires.
func (cp *ControlPlane) AddToken(tok string, expires time.Time) {
	cp.mu.Lock()
	cp.tokens[tok] = &token{expires: expires}
	cp.mu.Unlock()
}

// Calls returns how many requests route ("enroll", "activate", "renew",
// "self", "kem-key") received, including refused and injected-failure ones.
func (cp *ControlPlane) Calls(route string) int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.calls[route]
}

// Devices returns the enrolled device ids.
func (cp *ControlPlane) Devices() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var out []string
	for id := range cp.devices {
		out = append(out, id)
	}
	return out
}

// TPMKind returns the TPM kind a device enrolled with ("none" for a device
// without a TPM), or "" for an unknown device.
func (cp *ControlPlane) TPMKind(deviceID string) string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if d := cp.devices[deviceID]; d != nil {
		return d.kind
	}
	return ""
}

// KEMPublic returns the KEM public key the device registered (at
// enrollment or with PUT /api/v1/device/kem-key), or nil.
func (cp *ControlPlane) KEMPublic(deviceID string) []byte {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if d := cp.devices[deviceID]; d != nil {
		return bytes.Clone(d.kem)
	}
	return nil
}

// SetKEMPublic replaces a device's registered KEM public key (nil: none), as
// if it had been registered before.
func (cp *ControlPlane) SetKEMPublic(deviceID string, kem []byte) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if d := cp.devices[deviceID]; d != nil {
		d.kem = bytes.Clone(kem)
	}
}

// Revoke marks a device revoked: renewals are refused with REVOKED.
func (cp *ControlPlane) Revoke(deviceID string) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if d := cp.devices[deviceID]; d != nil {
		d.revoked = true
	}
}

// FailNext makes the next n requests to route fail with status and an error
// body with code.
func (cp *ControlPlane) FailNext(route string, n, status int, code string) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	for range n {
		cp.failures[route] = append(cp.failures[route], failure{status, code})
	}
}

func (cp *ControlPlane) count(route string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cp.mu.Lock()
		cp.calls[route]++
		var f *failure
		if q := cp.failures[route]; len(q) > 0 {
			f, cp.failures[route] = &q[0], q[1:]
		}
		cp.mu.Unlock()
		if f != nil {
			writeErr(w, f.status, f.code, "injected failure")
			return
		}
		h(w, r)
	}
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, wire.ErrorBody{Error: wire.APIError{Code: code, Message: msg, RequestID: "req-fake"}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func (cp *ControlPlane) handleEnroll(w http.ResponseWriter, r *http.Request) {
	var req wire.EnrollRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error())
		return
	}
	cp.mu.Lock()
	tok := cp.tokens[req.Token]
	cp.mu.Unlock()
	switch {
	case tok == nil:
		writeErr(w, http.StatusUnauthorized, wire.CodeUnauthenticated, "unknown token")
		return
	case tok.used:
		writeErr(w, http.StatusConflict, wire.CodeTokenUsed, "token already used")
		return
	case time.Now().After(tok.expires):
		writeErr(w, http.StatusGone, wire.CodeTokenExpired, "token expired")
		return
	}
	if len(req.KEMPublic) > 0 {
		if _, err := tgsp.ParseRecipientPublicKeyBytes(req.KEMPublic); err != nil {
			writeErr(w, http.StatusBadRequest, wire.CodeBadRequest, "kem_public: "+err.Error())
			return
		}
	}
	if req.TPMKind == wire.TPMKindNone {
		cp.enrollWithoutTPM(w, &req)
		return
	}
	ch, err := cp.challenge(&req)
	if err != nil {
		writeErr(w, http.StatusForbidden, wire.CodeEnrollRefused, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, ch)
}

// enrollWithoutTPM admits a device without a TPM if the fleet allows it:
// a valid P-256 CSR and no evidence; the token is consumed and the
// certificate issued at once (201).
func (cp *ControlPlane) enrollWithoutTPM(w http.ResponseWriter, req *wire.EnrollRequest) {
	if !cp.opts.AllowNoTPM {
		writeErr(w, http.StatusForbidden, wire.CodeEnrollRefused, "fleet "+cp.opts.Fleet+" does not allow devices without a TPM (allow_no_tpm is false)")
		return
	}
	if req.TPM != nil {
		writeErr(w, http.StatusBadRequest, wire.CodeBadRequest, "tpm_kind none carries no TPM evidence")
		return
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil || csr.CheckSignature() != nil {
		writeErr(w, http.StatusBadRequest, wire.CodeBadRequest, "bad csr")
		return
	}
	if k, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve.Params().Name != "P-256" {
		writeErr(w, http.StatusBadRequest, wire.CodeBadRequest, "csr key is not ECDSA P-256")
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	tok := cp.tokens[req.Token]
	if tok == nil || tok.used {
		writeErr(w, http.StatusConflict, wire.CodeTokenUsed, "token already used")
		return
	}
	tok.used = true
	d := &device{id: newID("dev-"), kind: wire.TPMKindNone, pub: csr.PublicKey, kem: bytes.Clone(req.KEMPublic)}
	cp.devices[d.id] = d
	resp, err := cp.issueLocked(d)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, wire.CodeInternal, "issue")
		return
	}
	writeJSON(w, http.StatusCreated, resp)
}

// challenge verifies the evidence and makes the credential challenge.
func (cp *ControlPlane) challenge(req *wire.EnrollRequest) (*wire.Challenge, error) {
	if req.TPM == nil {
		return nil, errors.New("TPM evidence required")
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return nil, fmt.Errorf("csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr signature: %v", err)
	}
	ekPub, err := tpm2.DecodePublic(req.TPM.EKPublic)
	if err != nil {
		return nil, fmt.Errorf("ek public: %v", err)
	}
	ekKey, err := ekPub.Key()
	if err != nil {
		return nil, fmt.Errorf("ek key: %v", err)
	}
	if cp.opts.EKRoots != nil {
		c, err := x509.ParseCertificate(req.TPM.EKCert)
		if err != nil {
			return nil, fmt.Errorf("ek certificate: %v", err)
		}
		c.UnhandledCriticalExtensions = nil
		if _, err := c.Verify(x509.VerifyOptions{Roots: cp.opts.EKRoots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return nil, fmt.Errorf("ek certificate chain: %v", err)
		}
		if k, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(ekKey) {
			return nil, errors.New("ek certificate is for another key")
		}
	}
	akPub, err := tpm2.DecodePublic(req.TPM.AKPublic)
	if err != nil {
		return nil, fmt.Errorf("ak public: %v", err)
	}
	if akPub.Attributes&(tpm2.FlagRestricted|tpm2.FlagSign|tpm2.FlagFixedTPM) != tpm2.FlagRestricted|tpm2.FlagSign|tpm2.FlagFixedTPM {
		return nil, errors.New("ak is not a restricted TPM signing key")
	}
	tlsPub, err := tpm2.DecodePublic(req.TPM.TLSKeyPublic)
	if err != nil {
		return nil, fmt.Errorf("tls key public: %v", err)
	}
	tlsKey, err := tlsPub.Key()
	if err != nil {
		return nil, fmt.Errorf("tls key: %v", err)
	}
	if k, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || !k.Equal(tlsKey) {
		return nil, errors.New("csr is for another key than the TLS key")
	}
	ad, err := tpm2.DecodeAttestationData(req.TPM.TLSKeyCertify)
	if err != nil || ad.Type != tpm2.TagAttestCertify || ad.AttestedCertifyInfo == nil {
		return nil, fmt.Errorf("certify: %v", err)
	}
	if ok, err := ad.AttestedCertifyInfo.Name.MatchesPublic(tlsPub); err != nil || !ok {
		return nil, errors.New("certify names another key")
	}
	if !bytes.Equal(ad.ExtraData, enrollbind.QualifyingDataKEM(req.Token, req.CSR, req.KEMPublic)) {
		return nil, errors.New("certify not bound to this token, CSR and KEM key")
	}
	sig, err := tpm2.DecodeSignature(bytes.NewBuffer(req.TPM.TLSKeyCertifySignature))
	if err != nil || sig.ECC == nil {
		return nil, fmt.Errorf("certify signature: %v", err)
	}
	akKey, err := akPub.Key()
	if err != nil {
		return nil, fmt.Errorf("ak key: %v", err)
	}
	digest := sha256.Sum256(req.TPM.TLSKeyCertify)
	if ak, ok := akKey.(*ecdsa.PublicKey); !ok || !ecdsa.Verify(ak, digest[:], sig.ECC.R, sig.ECC.S) {
		return nil, errors.New("certify signature does not verify with the AK")
	}
	akName, err := akPub.Name()
	if err != nil || akName.Digest == nil {
		return nil, fmt.Errorf("ak name: %v", err)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	blob, enc, err := credactivation.Generate(akName.Digest, ekKey, 16, secret)
	if err != nil {
		return nil, fmt.Errorf("make credential: %v", err)
	}
	id := newID("enr-")
	cp.mu.Lock()
	cp.sessions[id] = &session{token: req.Token, kind: req.TPMKind, secretHash: sha256.Sum256(secret), csr: csr, kem: bytes.Clone(req.KEMPublic)}
	cp.mu.Unlock()
	return &wire.Challenge{SessionID: id, CredentialBlob: blob, EncryptedSecret: enc, ExpiresAt: time.Now().Add(2 * time.Minute)}, nil
}

func (cp *ControlPlane) handleActivate(w http.ResponseWriter, r *http.Request) {
	var ans wire.ChallengeAnswer
	if err := decode(r, &ans); err != nil {
		writeErr(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error())
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	s := cp.sessions[ans.SessionID]
	delete(cp.sessions, ans.SessionID)
	if s == nil {
		writeErr(w, http.StatusForbidden, wire.CodeEnrollRefused, "unknown session")
		return
	}
	got := sha256.Sum256(ans.Secret)
	if subtle.ConstantTimeCompare(got[:], s.secretHash[:]) != 1 {
		writeErr(w, http.StatusForbidden, wire.CodeEnrollRefused, "AK not in the same TPM as the EK")
		return
	}
	tok := cp.tokens[s.token]
	if tok == nil || tok.used {
		writeErr(w, http.StatusConflict, wire.CodeTokenUsed, "token already used")
		return
	}
	tok.used = true
	d := &device{id: newID("dev-"), kind: s.kind, pub: s.csr.PublicKey, kem: s.kem}
	cp.devices[d.id] = d
	resp, err := cp.issueLocked(d)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, wire.CodeInternal, "issue")
		return
	}
	writeJSON(w, http.StatusCreated, resp)
}

func (cp *ControlPlane) deviceFromTLS(r *http.Request) (*device, string) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return nil, wire.CodeUnauthenticated
	}
	id, err := mqttacl.IdentityFromCert(r.TLS.PeerCertificates[0])
	if err != nil || id.Kind != mqttacl.KindDevice || id.Tenant != cp.opts.Tenant {
		return nil, wire.CodeUnauthenticated
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	d := cp.devices[id.Device]
	if d == nil {
		return nil, wire.CodeUnauthenticated
	}
	if d.revoked {
		return nil, wire.CodeRevoked
	}
	return d, ""
}

func (cp *ControlPlane) handleRenew(w http.ResponseWriter, r *http.Request) {
	d, code := cp.deviceFromTLS(r)
	if d == nil {
		status := http.StatusUnauthorized
		if code == wire.CodeRevoked {
			status = http.StatusForbidden
		}
		writeErr(w, status, code, "device certificate required")
		return
	}
	var req struct {
		CSR string `json:"csr"`
	}
	if err := decode(r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error())
		return
	}
	b, _ := pem.Decode([]byte(req.CSR))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		writeErr(w, http.StatusBadRequest, wire.CodeBadRequest, "csr must be PEM")
		return
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		writeErr(w, http.StatusBadRequest, wire.CodeBadRequest, "bad csr")
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if k, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || !k.Equal(d.pub) {
		writeErr(w, http.StatusForbidden, wire.CodeForbidden, "renewal must keep the TPM key")
		return
	}
	resp, err := cp.issueLocked(d)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, wire.CodeInternal, "issue")
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (cp *ControlPlane) handleSelf(w http.ResponseWriter, r *http.Request) {
	d, code := cp.deviceFromTLS(r)
	if d == nil {
		writeErr(w, http.StatusUnauthorized, code, "device certificate required")
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"id": d.id, "fleet_id": cp.opts.Fleet, "status": "enrolled",
		"cert_serial": d.serial.Text(16), "cert_not_after": d.notAfter, "kem_key": d.kem != nil,
	})
}

// handleKEMKey is PUT /api/v1/device/kem-key: set once; the same key again
// is 200, another 409.
func (cp *ControlPlane) handleKEMKey(w http.ResponseWriter, r *http.Request) {
	d, code := cp.deviceFromTLS(r)
	if d == nil {
		status := http.StatusUnauthorized
		if code == wire.CodeRevoked {
			status = http.StatusForbidden
		}
		writeErr(w, status, code, "device certificate required")
		return
	}
	var req wire.KEMKeyRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error())
		return
	}
	if _, err := tgsp.ParseRecipientPublicKeyBytes(req.KEMPublic); err != nil {
		writeErr(w, http.StatusBadRequest, wire.CodeBadRequest, "kem_public: "+err.Error())
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	switch {
	case d.kem == nil:
		d.kem = bytes.Clone(req.KEMPublic)
	case !bytes.Equal(d.kem, req.KEMPublic):
		writeErr(w, http.StatusConflict, wire.CodeConflict, "the device already has another KEM key")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": d.id, "kem_key": true})
}

func (cp *ControlPlane) issueLocked(d *device) (*wire.EnrollResponse, error) {
	now := time.Now()
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	u, _ := url.Parse(mqttacl.Device(cp.opts.Tenant, d.id).SPIFFEID())
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: d.id, Organization: []string{cp.opts.Tenant}, OrganizationalUnit: []string{cp.opts.Fleet}},
		NotBefore:    now.Add(-2 * time.Second),
		NotAfter:     now.Add(cp.certTTL),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, cp.tenantCA, d.pub, cp.tenantCAKey)
	if err != nil {
		return nil, err
	}
	d.serial, d.notAfter = serial, tmpl.NotAfter
	return &wire.EnrollResponse{
		DeviceID:       d.id,
		CertificatePEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		CAPEM:          cp.tenantCAPEM,
	}, nil
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

func newID(prefix string) string {
	var b [13]byte
	_, _ = rand.Read(b[:])
	return prefix + strings.ToLower(idEncoding.EncodeToString(b[:]))[:20]
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCA(t testing.TB, cn string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := mustKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}
