package enroll_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/agent/internal/enroll"
	"github.com/tensorguard/tensorguardflow/agent/internal/enroll/enrolltest"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmdevtest"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmsim"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

func kemPublic(t *testing.T) []byte {
	t.Helper()
	k, err := tgsp.GenerateRecipient(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k.Public().Bytes()
}

// simTPM opens the simulator with an EK certificate from a test
// manufacturer and returns it with its TLS key. The simulator is a
// process-wide singleton, so these tests do not run in parallel.
func simTPM(t *testing.T) (*tpmdev.Device, *tpmdev.Key, *tpmdevtest.CA) {
	t.Helper()
	ca := tpmdevtest.NewCA(t, "sim EK CA")
	dev, err := tpmsim.Open(ca.IssueEK)
	if err != nil {
		t.Fatal(err)
	}
	key, err := dev.TLSKey()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		key.Close()
		_ = dev.Close()
	})
	return dev, key, ca
}

func pinnedClient(t *testing.T, cp *enrolltest.ControlPlane, pin string) *enroll.Client {
	t.Helper()
	p, err := enroll.ParsePin(pin)
	if err != nil {
		t.Fatal(err)
	}
	c, err := enroll.New(enroll.Config{ServerURL: cp.URL, Pin: &p})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestEnrollAndRenew(t *testing.T) {
	dev, key, ekCA := simTPM(t)
	cp := enrolltest.Start(t, enrolltest.Options{EKRoots: ekCA.Pool()})
	cp.AddToken("tok-good", time.Now().Add(time.Hour))

	kem := kemPublic(t)
	id, err := pinnedClient(t, cp, cp.Pin).Enroll(ctx(t), dev, key, "tok-good", kem)
	if err != nil {
		t.Fatal(err)
	}
	if got := cp.KEMPublic(id.DeviceID); !bytes.Equal(got, kem) {
		t.Fatal("the control plane did not get the KEM key with the enrollment")
	}
	if id.TenantID != cp.Tenant() || id.FleetID != cp.Fleet() || !strings.HasPrefix(id.DeviceID, "dev-") {
		t.Fatalf("identity %+v", id)
	}
	if got := cp.Devices(); len(got) != 1 || got[0] != id.DeviceID {
		t.Fatalf("control plane devices %v, want [%s]", got, id.DeviceID)
	}
	if cp.Calls("enroll") != 1 || cp.Calls("activate") != 1 {
		t.Fatalf("calls enroll=%d activate=%d", cp.Calls("enroll"), cp.Calls("activate"))
	}
	// The trust bundle holds the tenant CA (from the response) and the
	// pinned platform CA (which signs the server certificate).
	if n := strings.Count(string(id.CAPEM), "BEGIN CERTIFICATE"); n != 2 {
		t.Fatalf("CA bundle has %d certificates, want 2", n)
	}

	// A stored identity parses back, and only for the same key.
	signer, _ := key.Signer()
	if _, err := enroll.ParseIdentity(id.CertChainPEM, id.CAPEM, signer.Public()); err != nil {
		t.Fatalf("parse stored identity: %v", err)
	}
	ak, _ := dev.AK()
	if _, err := enroll.ParseIdentity(id.CertChainPEM, id.CAPEM, ak.Public()); !errors.Is(err, enroll.ErrBadResponse) {
		t.Fatalf("identity accepted for another key: %v", err)
	}
	ak.Close()

	// Renewal over mTLS with the TPM-backed certificate.
	cert := id.TLSCertificate(signer)
	renewer, err := enroll.New(enroll.Config{ServerURL: cp.URL, CAPEM: id.CAPEM,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }})
	if err != nil {
		t.Fatal(err)
	}
	id2, err := renewer.Renew(ctx(t), signer)
	if err != nil {
		t.Fatal(err)
	}
	if id2.DeviceID != id.DeviceID || id2.Leaf.SerialNumber.Cmp(id.Leaf.SerialNumber) == 0 {
		t.Fatalf("renewed %s serial %v, was %s serial %v", id2.DeviceID, id2.Leaf.SerialNumber, id.DeviceID, id.Leaf.SerialNumber)
	}
	if self, err := renewer.Self(ctx(t)); err != nil || !strings.Contains(string(self), id.DeviceID) {
		t.Fatalf("self: %s %v", self, err)
	}

	// The KEM key route: the enrolled key again is fine, another one is a
	// permanent conflict.
	if err := renewer.RegisterKEMKey(ctx(t), kem); err != nil {
		t.Fatalf("register the enrolled KEM key again: %v", err)
	}
	err = renewer.RegisterKEMKey(ctx(t), kemPublic(t))
	if !errors.Is(err, enroll.ErrConflict) || enroll.Retryable(err) {
		t.Fatalf("register another KEM key: %v (retryable %v), want a permanent ErrConflict", err, enroll.Retryable(err))
	}
	if got := cp.KEMPublic(id.DeviceID); !bytes.Equal(got, kem) {
		t.Fatal("another KEM key replaced the enrolled one")
	}

	// A revoked device is told so, and it is not retryable.
	cp.Revoke(id.DeviceID)
	renewer.CloseIdleConnections()
	_, err = renewer.Renew(ctx(t), signer)
	if !errors.Is(err, enroll.ErrRevoked) || enroll.Retryable(err) {
		t.Fatalf("renew of a revoked device: %v (retryable %v)", err, enroll.Retryable(err))
	}
}

func TestEnrollErrors(t *testing.T) {
	dev, key, _ := simTPM(t)
	cp := enrolltest.Start(t, enrolltest.Options{})
	cp.AddToken("tok-used", time.Now().Add(time.Hour))
	cp.AddToken("tok-old", time.Now().Add(-time.Minute))
	if _, err := pinnedClient(t, cp, cp.Pin).Enroll(ctx(t), dev, key, "tok-used", nil); err != nil {
		t.Fatal(err)
	}
	other := enrolltest.Start(t, enrolltest.Options{})

	tests := []struct {
		name      string
		pin       string
		token     string
		inject    func()
		want      error
		code      string
		retryable bool
	}{
		{name: "token used", pin: cp.Pin, token: "tok-used", want: enroll.ErrTokenUsed, code: wire.CodeTokenUsed},
		{name: "token expired", pin: cp.Pin, token: "tok-old", want: enroll.ErrTokenExpired, code: wire.CodeTokenExpired},
		{name: "unknown token", pin: cp.Pin, token: "tok-nope", code: wire.CodeUnauthenticated},
		{name: "pin mismatch", pin: other.Pin, token: "tok-used", want: enroll.ErrPinMismatch},
		{name: "server unavailable", pin: cp.Pin, token: "tok-used", code: wire.CodeInternal, retryable: true,
			inject: func() { cp.FailNext("enroll", 1, http.StatusServiceUnavailable, wire.CodeInternal) }},
		{name: "refused evidence", pin: cp.Pin, token: "tok-used", want: enroll.ErrRefused, code: wire.CodeEnrollRefused,
			inject: func() { cp.FailNext("enroll", 1, http.StatusForbidden, wire.CodeEnrollRefused) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.inject != nil {
				tc.inject()
			}
			before := cp.Calls("enroll")
			_, err := pinnedClient(t, cp, tc.pin).Enroll(ctx(t), dev, key, tc.token, nil)
			if err == nil {
				t.Fatal("enrolled")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			var api *enroll.APIError
			if tc.code != "" && (!errors.As(err, &api) || api.Code != tc.code) {
				t.Fatalf("error %v, want code %s", err, tc.code)
			}
			if got := enroll.Retryable(err); got != tc.retryable {
				t.Fatalf("Retryable(%v) = %v", err, got)
			}
			if errors.Is(err, enroll.ErrPinMismatch) && cp.Calls("enroll") != before {
				t.Fatal("request reached the server despite the pin mismatch")
			}
			if enroll.Explain(err) == "" {
				t.Fatal("no explanation")
			}
		})
	}
}

func TestCAFileAndConfig(t *testing.T) {
	dev, key, _ := simTPM(t)
	cp := enrolltest.Start(t, enrolltest.Options{})
	cp.AddToken("tok-a", time.Now().Add(time.Hour))
	c, err := enroll.New(enroll.Config{ServerURL: cp.URL + "/", CAPEM: cp.PlatformCAPEM()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Enroll(ctx(t), dev, key, "tok-a", nil); err != nil {
		t.Fatal(err)
	}
	other := enrolltest.Start(t, enrolltest.Options{})
	c, err = enroll.New(enroll.Config{ServerURL: cp.URL, CAPEM: other.PlatformCAPEM()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Enroll(ctx(t), dev, key, "tok-a", nil); !errors.Is(err, enroll.ErrPinMismatch) {
		t.Fatalf("CA file of another server: %v", err)
	}

	pin, _ := enroll.ParsePin(cp.Pin)
	for _, cfg := range []enroll.Config{
		{ServerURL: "http://127.0.0.1:1", Pin: &pin},
		{ServerURL: "127.0.0.1:8000", Pin: &pin},
		{ServerURL: cp.URL},
		{ServerURL: cp.URL, Pin: &pin, CAPEM: cp.PlatformCAPEM()},
		{ServerURL: cp.URL, CAPEM: []byte("not pem")},
	} {
		if _, err := enroll.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	for _, s := range []string{"", "sha256:", "sha1:" + strings.Repeat("0", 64), "sha256:" + strings.Repeat("g", 64), "sha256:" + strings.Repeat("0", 62)} {
		if _, err := enroll.ParsePin(s); err == nil {
			t.Errorf("ParsePin(%q) accepted", s)
		}
	}
	// "SHA256:" is not the documented prefix.
	if _, err := enroll.ParsePin(strings.ToUpper(cp.Pin[:7]) + cp.Pin[7:]); err == nil {
		t.Errorf("ParsePin accepted an upper-case prefix")
	}
	if p, err := enroll.ParsePin(cp.Pin); err != nil || p.String() != cp.Pin {
		t.Errorf("ParsePin round trip: %v %v", p, err)
	}
}
