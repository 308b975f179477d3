package enroll

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/enrollbind"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// Routes of docs/api.md.
const (
	PathEnroll   = "/api/v1/enroll"
	PathActivate = "/api/v1/enroll/activate"
	PathRenew    = "/api/v1/device/renew"
	PathSelf     = "/api/v1/device/self"
	PathKEMKey   = "/api/v1/device/kem-key"
)

// maxResponse bounds what is read from the server.
const maxResponse = 1 << 20

// Config configures a Client. ServerURL is required, and exactly one way to
// trust the server: Pin (first contact) or CAPEM (a CA file, or the bundle
// of an enrolled Identity).
type Config struct {
	ServerURL string // https://host[:port]
	Pin       *Pin
	CAPEM     []byte
	// GetClientCertificate supplies the device certificate for the device
	// routes (Renew, Self). It is asked at every TLS handshake, so a renewed
	// certificate is used from the next connection on.
	GetClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	Timeout              time.Duration // per request; default 30s
	Now                  func() time.Time
	Logger               *slog.Logger
}

// Client talks to one control plane. It is safe for concurrent use.
type Client struct {
	cfg  Config
	base *url.URL
	http *http.Client
	log  *slog.Logger

	mu     sync.Mutex
	pinned *x509.Certificate // the certificate the pin matched, once seen
}

// New checks cfg and returns a Client. It does not contact the server.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.ServerURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("enroll: server url %q is not an absolute URL", cfg.ServerURL)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("enroll: server url %q must use https", cfg.ServerURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if (cfg.Pin == nil) == (len(cfg.CAPEM) == 0) {
		return nil, errors.New("enroll: need exactly one of a CA pin and a CA bundle")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Client{cfg: cfg, base: u, log: cfg.Logger}
	tc := &tls.Config{
		MinVersion:           tls.VersionTLS12,
		ServerName:           u.Hostname(),
		GetClientCertificate: cfg.GetClientCertificate,
	}
	if cfg.Pin != nil {
		// Chain verification is done by verifyPinned instead of against
		// the system roots, which must play no part here.
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = verifyPinned(*cfg.Pin, u.Hostname(), func(ca *x509.Certificate) {
			c.mu.Lock()
			c.pinned = ca
			c.mu.Unlock()
		})
	} else {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.CAPEM) {
			return nil, errors.New("enroll: CA bundle holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	if tc.GetClientCertificate == nil {
		// Without a callback Go sends no certificate, which is what the
		// enrollment routes want; make it explicit.
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &tls.Certificate{}, nil
		}
	}
	c.http = &http.Client{
		Timeout: cfg.Timeout,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:     tc,
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     60 * time.Second,
			MaxIdleConns:        2,
		},
		// The API never redirects; following one could leave the pinned
		// server.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// CloseIdleConnections drops kept-alive connections, so the next request
// handshakes again (with the current client certificate).
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// Identity is an enrolled device's certificate and the CAs it trusts.
type Identity struct {
	DeviceID string
	TenantID string
	FleetID  string
	// CertChainPEM is the device certificate followed by its intermediates.
	CertChainPEM []byte
	// CAPEM is the trust bundle for the control plane and the broker.
	CAPEM []byte
	// BrokerURL is the MQTT broker the control plane advertised, if any.
	BrokerURL string
	Leaf      *x509.Certificate
	chain     [][]byte
}

// ParseIdentity parses and checks a stored or received identity: the chain
// must verify to a CA in caPEM, the leaf must carry a device SPIFFE ID and be
// a certificate for pub (the TLS key: the TPM's, or the software key of a
// device without a TPM). Validity in time is not checked
// here (a stored certificate may have expired while the device was off).
func ParseIdentity(certChainPEM, caPEM []byte, pub crypto.PublicKey) (*Identity, error) {
	var chain [][]byte
	rest := certChainPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			chain = append(chain, b.Bytes)
		}
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: no certificate in the chain", ErrBadResponse)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("%w: device certificate: %v", ErrBadResponse, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%w: no CA certificate", ErrBadResponse)
	}
	inter := x509.NewCertPool()
	for _, der := range chain[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: intermediate certificate: %v", ErrBadResponse, err)
		}
		inter.AddCert(c)
	}
	mid := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: mid,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("%w: device certificate does not chain to the CA: %v", ErrBadResponse, err)
	}
	if k, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub) {
		return nil, fmt.Errorf("%w: device certificate is for another key than the device's TLS key", ErrBadResponse)
	}
	sid, err := mqttacl.IdentityFromCert(leaf)
	if err != nil || sid.Kind != mqttacl.KindDevice {
		return nil, fmt.Errorf("%w: device certificate has no device SPIFFE ID (%v)", ErrBadResponse, err)
	}
	id := &Identity{
		DeviceID:     sid.Device,
		TenantID:     sid.Tenant,
		CertChainPEM: bytes.Clone(certChainPEM),
		CAPEM:        bytes.Clone(caPEM),
		Leaf:         leaf,
		chain:        chain,
	}
	if len(leaf.Subject.OrganizationalUnit) > 0 {
		id.FleetID = leaf.Subject.OrganizationalUnit[0]
	}
	return id, nil
}

// TLSCertificate returns the identity as a client certificate whose private
// key is signer (the TPM, or the software key of a device without one).
func (id *Identity) TLSCertificate(signer crypto.Signer) *tls.Certificate {
	return &tls.Certificate{Certificate: id.chain, PrivateKey: signer, Leaf: id.Leaf}
}

// Enroll enrolls the device with token: the TLS key (tlsKey, loaded from
// dev) gets a certificate. kemPublic, when not empty, is the device's KEM
// public key (tgsp recipient encoding) for package key grants; the AK's
// certification of the TLS key covers it, so it cannot be swapped on the
// way. It loads the EK and the AK for the duration of the call. Errors are
// classified by Retryable.
func (c *Client) Enroll(ctx context.Context, dev *tpmdev.Device, tlsKey *tpmdev.Key, token string, kemPublic []byte) (*Identity, error) {
	if token == "" {
		return nil, errors.New("enroll: empty token")
	}
	signer, err := tlsKey.Signer()
	if err != nil {
		return nil, &tpmError{fmt.Errorf("enroll: %w", err)}
	}
	csr, err := tpmdev.CreateCSR(signer, pkix.Name{CommonName: "tg-agent"})
	if err != nil {
		return nil, &tpmError{fmt.Errorf("enroll: %w", err)}
	}
	ek, err := dev.EK()
	if err != nil {
		return nil, &tpmError{fmt.Errorf("enroll: %w", err)}
	}
	defer ek.Close()
	ak, err := dev.AK()
	if err != nil {
		return nil, &tpmError{fmt.Errorf("enroll: %w", err)}
	}
	defer ak.Close()
	cert, err := dev.CertifyKey(tlsKey, ak, enrollbind.QualifyingDataKEM(token, csr, kemPublic))
	if err != nil {
		return nil, &tpmError{fmt.Errorf("enroll: %w", err)}
	}
	req := wire.EnrollRequest{
		Token:   token,
		CSR:     csr,
		TPMKind: string(dev.Kind()),
		TPM: &wire.TPMEvidence{
			EKPublic:               ek.PublicArea(),
			EKCert:                 ek.Cert,
			AKPublic:               ak.PublicArea(),
			TLSKeyPublic:           tlsKey.PublicArea(),
			TLSKeyCertify:          cert.Attest,
			TLSKeyCertifySignature: cert.Signature,
		},
		KEMPublic: kemPublic,
	}
	status, body, err := c.do(ctx, http.MethodPost, PathEnroll, req)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if status == http.StatusOK {
		var ch wire.Challenge
		if err := decodeJSON(body, &ch); err != nil || ch.SessionID == "" {
			return nil, fmt.Errorf("enroll: %w: challenge: %v", ErrBadResponse, err)
		}
		secret, err := dev.ActivateCredential(ak, ek, ch.CredentialBlob, ch.EncryptedSecret)
		if err != nil {
			// The TPM refuses a challenge not made for this EK and AK:
			// the server is not talking to us, or is broken.
			return nil, &tpmError{fmt.Errorf("enroll: answer challenge: %w", err)}
		}
		status, body, err = c.do(ctx, http.MethodPost, PathActivate, wire.ChallengeAnswer{SessionID: ch.SessionID, Secret: secret})
		if err != nil {
			return nil, fmt.Errorf("enroll: activate: %w", err)
		}
	}
	if status != http.StatusCreated && status != http.StatusOK {
		return nil, fmt.Errorf("enroll: %w: unexpected status %d", ErrBadResponse, status)
	}
	id, err := c.identityFrom(body, signer.Public())
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	c.log.Info("enrolled", "device", id.DeviceID, "tenant", id.TenantID, "fleet", id.FleetID, "not_after", id.Leaf.NotAfter)
	return id, nil
}

// EnrollWithoutTPM enrolls a device that has no TPM (tpm_kind "none"): it
// sends the token and a CSR signed by key, a software key the caller keeps,
// with no TPM evidence, and expects the certificate at once (201). The
// control plane admits this only into a fleet whose policy allows devices
// without a TPM and marks the device so; its refusal wraps ErrRefused and
// Explain says what to change. kemPublic is as for Enroll, protected only by
// the pinned TLS connection. Errors are classified by Retryable.
func (c *Client) EnrollWithoutTPM(ctx context.Context, key crypto.Signer, token string, kemPublic []byte) (*Identity, error) {
	if token == "" {
		return nil, errors.New("enroll: empty token")
	}
	csr, err := tpmdev.CreateCSR(key, pkix.Name{CommonName: "tg-agent"})
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	req := wire.EnrollRequest{Token: token, CSR: csr, TPMKind: wire.TPMKindNone, KEMPublic: kemPublic}
	status, body, err := c.do(ctx, http.MethodPost, PathEnroll, req)
	if err != nil {
		if errors.Is(err, ErrRefused) {
			err = &noTPMRefusal{err}
		}
		return nil, fmt.Errorf("enroll without a TPM: %w", err)
	}
	if status != http.StatusCreated {
		// 200 would be a TPM challenge, which a device without a TPM
		// cannot answer and did not ask for.
		return nil, fmt.Errorf("enroll without a TPM: %w: unexpected status %d", ErrBadResponse, status)
	}
	id, err := c.identityFrom(body, key.Public())
	if err != nil {
		return nil, fmt.Errorf("enroll without a TPM: %w", err)
	}
	c.log.Info("enrolled without a TPM", "device", id.DeviceID, "tenant", id.TenantID, "fleet", id.FleetID, "not_after", id.Leaf.NotAfter)
	return id, nil
}

type renewRequest struct {
	CSR string `json:"csr"`
}

// Renew asks for a new certificate for the same key (the TPM's, or the
// software key of a device without a TPM); the client must present the
// current one (Config.GetClientCertificate).
func (c *Client) Renew(ctx context.Context, signer crypto.Signer) (*Identity, error) {
	if c.cfg.GetClientCertificate == nil {
		return nil, errors.New("renew: no client certificate configured")
	}
	csr, err := tpmdev.CreateCSR(signer, pkix.Name{CommonName: "tg-agent"})
	if err != nil {
		return nil, &tpmError{fmt.Errorf("renew: %w", err)}
	}
	req := renewRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}
	status, body, err := c.do(ctx, http.MethodPost, PathRenew, req)
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	if status != http.StatusOK && status != http.StatusCreated {
		return nil, fmt.Errorf("renew: %w: unexpected status %d", ErrBadResponse, status)
	}
	id, err := c.identityFrom(body, signer.Public())
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	return id, nil
}

// RegisterKEMKey registers the device's KEM public key (PUT
// /api/v1/device/kem-key) for a device enrolled without one; the client
// must present the device certificate. The same key again succeeds; a
// device that already has another key gets an error wrapping ErrConflict.
// Errors are classified by Retryable.
func (c *Client) RegisterKEMKey(ctx context.Context, kemPublic []byte) error {
	if c.cfg.GetClientCertificate == nil {
		return errors.New("register KEM key: no client certificate configured")
	}
	if _, _, err := c.do(ctx, http.MethodPut, PathKEMKey, wire.KEMKeyRequest{KEMPublic: kemPublic}); err != nil {
		return fmt.Errorf("register KEM key: %w", err)
	}
	return nil
}

// Self returns the control plane's record of this device (GET
// /api/v1/device/self) as raw JSON.
func (c *Client) Self(ctx context.Context) (json.RawMessage, error) {
	_, body, err := c.do(ctx, http.MethodGet, PathSelf, nil)
	if err != nil {
		return nil, fmt.Errorf("device self: %w", err)
	}
	return body, nil
}

// identityFrom checks an EnrollResponse and builds the Identity. The trust
// bundle is the response's CA plus what this client trusted the server with
// (the pinned platform CA, or the configured bundle), so the device keeps
// reaching this control plane whichever CA signs its server certificate.
func (c *Client) identityFrom(body []byte, pub crypto.PublicKey) (*Identity, error) {
	var resp wire.EnrollResponse
	if err := decodeJSON(body, &resp); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadResponse, err)
	}
	bundle := []byte(strings.TrimSpace(resp.CAPEM) + "\n")
	c.mu.Lock()
	pinned := c.pinned
	c.mu.Unlock()
	if pinned != nil {
		bundle = appendCert(bundle, pinned)
	}
	if len(c.cfg.CAPEM) > 0 {
		bundle = appendPEMs(bundle, c.cfg.CAPEM)
	}
	id, err := ParseIdentity([]byte(resp.CertificatePEM), bundle, pub)
	if err != nil {
		return nil, err
	}
	if resp.DeviceID != id.DeviceID {
		return nil, fmt.Errorf("%w: response names device %q, certificate %q", ErrBadResponse, resp.DeviceID, id.DeviceID)
	}
	if !c.cfg.Now().Before(id.Leaf.NotAfter) {
		return nil, fmt.Errorf("%w: certificate already expired at %s", ErrBadResponse, id.Leaf.NotAfter)
	}
	if resp.BrokerURL != "" {
		u, err := url.Parse(resp.BrokerURL)
		if err != nil || (u.Scheme != "mqtts" && u.Scheme != "ssl" && u.Scheme != "tls") || u.Host == "" {
			return nil, fmt.Errorf("%w: broker_url %q is not an mqtts:// URL", ErrBadResponse, resp.BrokerURL)
		}
		id.BrokerURL = resp.BrokerURL
	}
	return id, nil
}

// appendCert adds cert to a PEM bundle unless it is already there.
func appendCert(bundle []byte, cert *x509.Certificate) []byte {
	rest := bundle
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if bytes.Equal(b.Bytes, cert.Raw) {
			return bundle
		}
	}
	return append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
}

func appendPEMs(bundle, more []byte) []byte {
	for {
		var b *pem.Block
		b, more = pem.Decode(more)
		if b == nil {
			return bundle
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			bundle = appendCert(bundle, c)
		}
	}
}

func decodeJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	// Responses may grow fields; the device must keep working, so unknown
	// fields are accepted here (requests are strict on the server).
	if err := dec.Decode(v); err != nil {
		return err
	}
	return nil
}

// do sends a JSON request and returns a 2xx status and body, or an error:
// *APIError for a non-2xx answer, a transportError for network failures.
func (c *Client) do(ctx context.Context, method, path string, in any) (int, []byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, nil, err
		}
		body = bytes.NewReader(b)
	}
	u := *c.base
	u.Path += path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return 0, nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
		var verr *tls.CertificateVerificationError
		if errors.As(err, &verr) && !errors.Is(err, ErrPinMismatch) {
			return 0, nil, fmt.Errorf("%w: %v", ErrPinMismatch, err)
		}
		return 0, nil, &transportError{err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return 0, nil, &transportError{fmt.Errorf("read response: %w", err)}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, data, nil
	}
	apiErr := &APIError{Status: resp.StatusCode}
	var eb wire.ErrorBody
	if json.Unmarshal(data, &eb) == nil {
		apiErr.APIError = eb.Error
	}
	if apiErr.RequestID == "" {
		apiErr.RequestID = resp.Header.Get("X-Request-Id")
	}
	return resp.StatusCode, nil, apiErr
}
