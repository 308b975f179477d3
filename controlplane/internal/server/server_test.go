package server_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane"
	"github.com/tensorguard/tensorguardflow/controlplane/controlplanetest"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/testpg"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/enrollbind"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmdevtest"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmsim"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

func TestMain(m *testing.M) { testpg.Main(m) }

// response is one HTTP exchange's outcome.
type response struct {
	status int
	body   []byte
	header http.Header
}

func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var e wire.ErrorBody
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	if e.Error.RequestID == "" || e.Error.RequestID != r.header.Get("X-Request-Id") {
		t.Errorf("request id in body %q, header %q", e.Error.RequestID, r.header.Get("X-Request-Id"))
	}
	return e.Error.Code
}

func httpClient(h *controlplanetest.Harness, cert *tls.Certificate) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: h.TLSConfig(cert)}}
}

func do(t *testing.T, c *http.Client, method, url string, body any) (response, error) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, body: b, header: resp.Header}, err
}

func mustDo(t *testing.T, c *http.Client, method, url string, body any) response {
	t.Helper()
	r, err := do(t, c, method, url, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

func decodeInto[T any](t *testing.T, r response, want int) T {
	t.Helper()
	var v T
	if r.status != want {
		t.Fatalf("status %d, want %d: %s", r.status, want, r.body)
	}
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	return v
}

// tpmAgent is the device side of enrollment over a real (simulated) TPM,
// written against internal/tpmdev as the agent does it.
type tpmAgent struct {
	d   *tpmdev.Device
	ek  *tpmdev.EK
	ak  *tpmdev.Key
	tls *tpmdev.Key
}

func newTPMAgent(t *testing.T, ekCA *tpmdevtest.CA) *tpmAgent {
	t.Helper()
	d, err := tpmsim.Open(ekCA.IssueEK)
	if err != nil {
		t.Fatal(err)
	}
	a := &tpmAgent{d: d}
	if a.ek, err = d.EK(); err != nil {
		t.Fatal(err)
	}
	if a.ak, err = d.AK(); err != nil {
		t.Fatal(err)
	}
	if a.tls, err = d.TLSKey(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.ek.Close(); a.ak.Close(); a.tls.Close(); _ = d.Close() })
	return a
}

func (a *tpmAgent) signer(t *testing.T) crypto.Signer {
	t.Helper()
	s, err := a.tls.Signer()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (a *tpmAgent) request(t *testing.T, token string) wire.EnrollRequest {
	t.Helper()
	csr, err := tpmdev.CreateCSR(a.signer(t), pkix.Name{CommonName: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.d.CertifyKey(a.tls, a.ak, enrollbind.QualifyingData(token, csr))
	if err != nil {
		t.Fatal(err)
	}
	return wire.EnrollRequest{Token: token, CSR: csr, TPMKind: string(a.d.Kind()), TPM: &wire.TPMEvidence{
		EKPublic: a.ek.PublicArea(), EKCert: a.ek.Cert, AKPublic: a.ak.PublicArea(), TLSKeyPublic: a.tls.PublicArea(),
		TLSKeyCertify: c.Attest, TLSKeyCertifySignature: c.Signature,
	}}
}

// enroll runs both steps and returns the activation response.
func (a *tpmAgent) enroll(t *testing.T, h *controlplanetest.Harness, c *http.Client, token string) response {
	t.Helper()
	r := mustDo(t, c, http.MethodPost, h.BaseURL+"/api/v1/enroll", a.request(t, token))
	if r.status != http.StatusOK {
		return r
	}
	ch := decodeInto[wire.Challenge](t, r, http.StatusOK)
	secret, err := a.d.ActivateCredential(a.ak, a.ek, ch.CredentialBlob, ch.EncryptedSecret)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	return mustDo(t, c, http.MethodPost, h.BaseURL+"/api/v1/enroll/activate", wire.ChallengeAnswer{SessionID: ch.SessionID, Secret: secret})
}

func parseCert(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode([]byte(p))
	if blk == nil {
		t.Fatalf("no PEM in %q", p)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func csrPEM(t *testing.T, k crypto.Signer) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func checkDeviceCert(t *testing.T, h *controlplanetest.Harness, cert *x509.Certificate, fleet, device string, pub crypto.PublicKey) {
	t.Helper()
	want := "spiffe://tensorguardflow/tenant/" + h.Tenant + "/device/" + device
	if len(cert.URIs) != 1 || cert.URIs[0].String() != want {
		t.Errorf("SAN URIs %v, want [%s]", cert.URIs, want)
	}
	if cert.Subject.CommonName != device || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != h.Tenant ||
		len(cert.Subject.OrganizationalUnit) != 1 || cert.Subject.OrganizationalUnit[0] != fleet {
		t.Errorf("subject %v", cert.Subject)
	}
	if !cert.PublicKey.(*ecdsa.PublicKey).Equal(pub) {
		t.Error("certificate is not for the device's key")
	}
	if d := cert.NotAfter.Sub(cert.NotBefore); d < 24*time.Hour || d > 24*time.Hour+10*time.Minute {
		t.Errorf("lifetime %v, want about 24h", d)
	}
	if cert.SerialNumber.BitLen() < 64 {
		t.Errorf("serial %s is not random", cert.SerialNumber)
	}
}

func backends(t *testing.T) map[string]func(t *testing.T) []controlplanetest.Option {
	return map[string]func(t *testing.T) []controlplanetest.Option{
		"sqlite": func(*testing.T) []controlplanetest.Option { return nil },
		"postgres": func(t *testing.T) []controlplanetest.Option {
			return []controlplanetest.Option{controlplanetest.WithDatabaseURL(testpg.Start(t))}
		},
	}
}

// TestEnrollTPMEndToEnd enrolls a simulated TPM over real HTTPS, then uses
// the certificate: device/self, renewal with the same key (and refusal with
// another), reuse of the token, and revocation at the handshake and on an
// open connection. On both database backends.
func TestEnrollTPMEndToEnd(t *testing.T) {
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			ekCA := tpmdevtest.NewCA(t, "test TPM manufacturer")
			opts := append(backends(t)[name](t), controlplanetest.WithEKRoots(ekCA.Cert))
			h := controlplanetest.Start(t, opts...)
			ctx := context.Background()
			fleet := h.CreateFleet(t, "lab", store.FleetPolicy{AllowSimulatedTPM: true})
			token := h.CreateToken(t, fleet.ID, time.Hour)
			a := newTPMAgent(t, ekCA)
			anon := httpClient(h, nil)

			r := a.enroll(t, h, anon, token)
			resp := decodeInto[wire.EnrollResponse](t, r, http.StatusCreated)
			cert := parseCert(t, resp.CertificatePEM)
			checkDeviceCert(t, h, cert, fleet.ID, resp.DeviceID, a.tls.Public())
			if !strings.Contains(resp.CAPEM, string(h.CP.CA().PlatformCAPEM())) {
				t.Error("CA bundle lacks the platform CA")
			}
			// The broker to use: the embedded broker's port on the host the
			// device reached the API by.
			if want := "mqtts://127.0.0.1:" + portOf(t, h.MQTTAddr); resp.BrokerURL != want {
				t.Errorf("broker_url %q, want %q", resp.BrokerURL, want)
			}
			tenantCA, err := h.CP.CA().TenantCAPEM(ctx, h.Tenant)
			if err != nil || !strings.Contains(resp.CAPEM, string(tenantCA)) {
				t.Errorf("CA bundle lacks the tenant CA: %v", err)
			}

			dev, err := h.Store().GetDevice(ctx, h.Tenant, resp.DeviceID)
			if err != nil {
				t.Fatal(err)
			}
			if dev.TPMKind != store.TPMSimulator || len(dev.EKFingerprint) != 64 || len(dev.AKPublic) == 0 ||
				dev.CertSerial != store.SerialString(cert.SerialNumber) || dev.FleetID != fleet.ID {
				t.Errorf("device row %+v", dev)
			}
			toks, err := h.Store().ListEnrollmentTokens(ctx, h.Tenant, fleet.ID)
			if err != nil || len(toks) != 1 || toks[0].UsedByDevice != resp.DeviceID || toks[0].UsedAt.IsZero() {
				t.Errorf("token after enrollment: %+v, %v", toks, err)
			}
			last, err := h.Store().LastAudit(ctx, h.Tenant)
			if err != nil || last.Action != "device.enroll" || last.Actor != "device:"+resp.DeviceID || last.RequestID != r.header.Get("X-Request-Id") {
				t.Errorf("last audit entry %+v, %v", last, err)
			}

			// The same token again: used.
			r = mustDo(t, anon, http.MethodPost, h.BaseURL+"/api/v1/enroll", a.request(t, token))
			if r.status != http.StatusConflict || r.errorCode(t) != wire.CodeTokenUsed {
				t.Errorf("reused token: %d %s", r.status, r.body)
			}

			devCert := &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: a.signer(t), Leaf: cert}
			dc := httpClient(h, devCert)
			self := decodeInto[map[string]any](t, mustDo(t, dc, http.MethodGet, h.BaseURL+"/api/v1/device/self", nil), http.StatusOK)
			if self["id"] != resp.DeviceID || self["status"] != "enrolled" {
				t.Errorf("device/self %v", self)
			}
			// Its own verdict: unknown until attested.
			if att, _ := self["attestation"].(map[string]any); att["state"] != "unknown" || att["device"] != resp.DeviceID ||
				att["schema"] != wire.VerdictSchema {
				t.Errorf("device/self attestation %v", self["attestation"])
			}

			// Renewal: same TPM key yes, another key no.
			r = mustDo(t, dc, http.MethodPost, h.BaseURL+"/api/v1/device/renew", map[string]string{"csr": csrPEM(t, a.signer(t))})
			renewed := decodeInto[wire.EnrollResponse](t, r, http.StatusOK)
			newCert := parseCert(t, renewed.CertificatePEM)
			checkDeviceCert(t, h, newCert, fleet.ID, resp.DeviceID, a.tls.Public())
			if newCert.SerialNumber.Cmp(cert.SerialNumber) == 0 {
				t.Error("renewal kept the serial")
			}
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			r = mustDo(t, dc, http.MethodPost, h.BaseURL+"/api/v1/device/renew", map[string]string{"csr": csrPEM(t, other)})
			if r.status != http.StatusForbidden || r.errorCode(t) != wire.CodeForbidden {
				t.Errorf("renewal with another key: %d %s", r.status, r.body)
			}

			if err := mqttHandshake(h, devCert); err != nil {
				t.Errorf("MQTT TLS with the device certificate: %v", err)
			}

			// Revocation: refused on the open connection and at a new handshake,
			// on the API and the broker.
			h.RevokeDevice(t, resp.DeviceID)
			if err := mqttHandshake(h, devCert); err == nil {
				t.Error("MQTT TLS with a revoked certificate was accepted")
			}
			r = mustDo(t, dc, http.MethodGet, h.BaseURL+"/api/v1/device/self", nil)
			if r.status != http.StatusForbidden || r.errorCode(t) != wire.CodeRevoked {
				t.Errorf("device/self after revocation on an open connection: %d %s", r.status, r.body)
			}
			if r, err := do(t, httpClient(h, devCert), http.MethodGet, h.BaseURL+"/api/v1/device/self", nil); err == nil {
				t.Errorf("new connection with a revoked certificate was accepted: %d %s", r.status, r.body)
			} else if !strings.Contains(err.Error(), "tls") {
				t.Errorf("revoked: want a TLS refusal, got %v", err)
			}
		})
	}
}

// mqttHandshake connects to the broker with cert and reports whether the
// server accepted it: under TLS 1.3 a refusal arrives as an alert on the
// first read, while an accepted client just waits for its CONNECT.
func mqttHandshake(h *controlplanetest.Harness, cert *tls.Certificate) error {
	c, err := tls.Dial("tcp", h.MQTTAddr, h.TLSConfig(cert))
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	var b [1]byte
	_, err = c.Read(b[:])
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return fmt.Errorf("broker closed the connection: %v", err)
}

// TestEnrollRefusals covers the token and fleet-policy refusals.
func TestEnrollRefusals(t *testing.T) {
	ekCA := tpmdevtest.NewCA(t, "test TPM manufacturer")
	h := controlplanetest.Start(t, controlplanetest.WithEKRoots(ekCA.Cert))
	ctx := context.Background()
	strict := h.CreateFleet(t, "strict", store.FleetPolicy{})
	open := h.CreateFleet(t, "open", store.FleetPolicy{AllowNoTPM: true, CertTTL: store.Duration(2 * time.Hour)})
	c := httpClient(h, nil)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	noTPM := func(token string) wire.EnrollRequest {
		return wire.EnrollRequest{Token: token, CSR: csr, TPMKind: wire.TPMKindNone}
	}

	a := newTPMAgent(t, ekCA)
	cases := []struct {
		name   string
		req    wire.EnrollRequest
		status int
		code   string
		msg    string // in the error message, if set
	}{
		{"unknown token", noTPM("tgt_tok-aaaaaaaaaaaaaaaaaaaa_" + strings.Repeat("a", 52)), http.StatusUnauthorized, wire.CodeUnauthenticated, ""},
		{"garbage token", noTPM("nope"), http.StatusUnauthorized, wire.CodeUnauthenticated, ""},
		{"expired token", noTPM(h.CreateToken(t, open.ID, -time.Minute)), http.StatusGone, wire.CodeTokenExpired, ""},
		{"no TPM into a fleet that forbids it", noTPM(h.CreateToken(t, strict.ID, time.Hour)), http.StatusForbidden, wire.CodeEnrollRefused,
			"fleet strict does not allow devices without a TPM"},
		{"simulated TPM into a fleet that forbids it", a.request(t, h.CreateToken(t, strict.ID, time.Hour)), http.StatusForbidden, wire.CodeEnrollRefused,
			"fleet strict does not accept TPM kind simulated"},
		{"unknown TPM kind", wire.EnrollRequest{Token: h.CreateToken(t, open.ID, time.Hour), CSR: csr, TPMKind: "quantum"}, http.StatusBadRequest, wire.CodeBadRequest, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustDo(t, c, http.MethodPost, h.BaseURL+"/api/v1/enroll", tc.req)
			if r.status != tc.status || r.errorCode(t) != tc.code || !strings.Contains(string(r.body), tc.msg) {
				t.Errorf("got %d %s, want %d %s %q", r.status, r.body, tc.status, tc.code, tc.msg)
			}
		})
	}

	t.Run("forged session handle", func(t *testing.T) {
		r := mustDo(t, c, http.MethodPost, h.BaseURL+"/api/v1/enroll/activate",
			wire.ChallengeAnswer{SessionID: "enr-aaaaaaaaaaaaaaaaaaaa.AAAAAAAAAAAAAAAAAAAAAA", Secret: []byte("x")})
		if r.status != http.StatusForbidden || r.errorCode(t) != wire.CodeEnrollRefused {
			t.Errorf("got %d %s", r.status, r.body)
		}
	})

	t.Run("no TPM into a fleet that allows it", func(t *testing.T) {
		r := mustDo(t, c, http.MethodPost, h.BaseURL+"/api/v1/enroll", noTPM(h.CreateToken(t, open.ID, time.Hour)))
		resp := decodeInto[wire.EnrollResponse](t, r, http.StatusCreated)
		cert := parseCert(t, resp.CertificatePEM)
		if d := cert.NotAfter.Sub(cert.NotBefore); d > 2*time.Hour+10*time.Minute {
			t.Errorf("lifetime %v ignores the fleet's cert_ttl 2h", d)
		}
		dev, err := h.Store().GetDevice(ctx, h.Tenant, resp.DeviceID)
		if err != nil || dev.TPMKind != store.TPMNone || dev.EKFingerprint != "" {
			t.Errorf("device %+v, %v", dev, err)
		}
		dc := httpClient(h, &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert})
		self := decodeInto[map[string]any](t, mustDo(t, dc, http.MethodGet, h.BaseURL+"/api/v1/device/self", nil), http.StatusOK)
		if self["tpm_kind"] != "none" {
			t.Errorf("device/self %v", self)
		}

		// Malformed bodies on the device route too.
		for _, body := range []string{`{bad`, `{"csr":1}`, `{"csr":"x","extra":1}`, `{"csr":"x"} {}`, ``} {
			r := mustDo(t, dc, http.MethodPost, h.BaseURL+"/api/v1/device/renew", body)
			if r.status != http.StatusBadRequest || r.errorCode(t) != wire.CodeBadRequest {
				t.Errorf("renew %q: %d %s", body, r.status, r.body)
			}
		}
	})
}

// TestMalformedJSON: every route of this package answers a malformed body
// with 400 BAD_REQUEST in the API's error shape.
func TestMalformedJSON(t *testing.T) {
	h := controlplanetest.Start(t)
	c := httpClient(h, nil)
	bodies := []string{`{bad`, `{"token":1}`, `{"token":"t","unknown":true}`, `{"token":"t"} trailing`, `[]`, ``}
	for _, path := range []string{"/api/v1/enroll", "/api/v1/enroll/activate"} {
		for _, body := range bodies {
			t.Run(path+" "+body, func(t *testing.T) {
				r := mustDo(t, c, http.MethodPost, h.BaseURL+path, body)
				if r.status != http.StatusBadRequest || r.errorCode(t) != wire.CodeBadRequest {
					t.Errorf("got %d %s", r.status, r.body)
				}
			})
		}
	}
	t.Run("too large", func(t *testing.T) {
		r := mustDo(t, c, http.MethodPost, h.BaseURL+"/api/v1/enroll", `{"token":"`+strings.Repeat("a", 2<<20)+`"}`)
		if r.status != http.StatusRequestEntityTooLarge || r.errorCode(t) != wire.CodeTooLarge {
			t.Errorf("got %d %s", r.status, r.body)
		}
	})
	t.Run("wrong media type", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, h.BaseURL+"/api/v1/enroll", strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "text/plain")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("got %d", resp.StatusCode)
		}
	})
	t.Run("wrong method", func(t *testing.T) {
		r := mustDo(t, c, http.MethodGet, h.BaseURL+"/api/v1/enroll", nil)
		if r.status != http.StatusMethodNotAllowed || r.errorCode(t) != wire.CodeMethod {
			t.Errorf("got %d %s", r.status, r.body)
		}
	})
	t.Run("device routes need a client certificate", func(t *testing.T) {
		r := mustDo(t, c, http.MethodGet, h.BaseURL+"/api/v1/device/self", nil)
		if r.status != http.StatusUnauthorized || r.errorCode(t) != wire.CodeUnauthenticated {
			t.Errorf("got %d %s", r.status, r.body)
		}
	})
}

// TestListener: plain HTTP from loopback in development, refused when not
// allowed; HTTPS with the platform CA's certificate; the operator API is
// mounted.
func TestListener(t *testing.T) {
	h := controlplanetest.Start(t)
	plain := &http.Client{Timeout: 10 * time.Second}
	for _, path := range []string{"/healthz", "/readyz"} {
		r := mustDo(t, plain, http.MethodGet, h.PlainURL+path, nil)
		if r.status != http.StatusOK || r.header.Get("X-Request-Id") == "" {
			t.Errorf("plain %s: %d %s", path, r.status, r.body)
		}
	}
	r := mustDo(t, httpClient(h, nil), http.MethodGet, h.BaseURL+"/healthz", nil)
	if r.status != http.StatusOK {
		t.Errorf("https healthz: %d", r.status)
	}
	req, _ := http.NewRequest(http.MethodGet, h.BaseURL+"/api/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+h.AdminKey)
	req.Header.Set("X-Request-Id", "my-request-1")
	resp, err := httpClient(h, nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Request-Id") != "my-request-1" {
		t.Errorf("whoami through the mounted API: %d, request id %q", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	}

	noPlain := controlplanetest.Start(t, controlplanetest.WithConfig(func(c *controlplane.Config) {
		f := false
		c.HTTP.AllowPlainLoopback = &f
	}))
	r = mustDo(t, plain, http.MethodGet, noPlain.PlainURL+"/healthz", nil)
	if r.status != http.StatusForbidden {
		t.Errorf("plain HTTP when not allowed: %d %s", r.status, r.body)
	}
	if r := mustDo(t, httpClient(noPlain, nil), http.MethodGet, noPlain.BaseURL+"/healthz", nil); r.status != http.StatusOK {
		t.Errorf("https when plain is off: %d", r.status)
	}
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("split %q: %v", addr, err)
	}
	return port
}
