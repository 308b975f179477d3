package enroll_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/agent/internal/enroll"
	"github.com/tensorguard/tensorguardflow/agent/internal/enroll/enrolltest"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// TestEnrollWithoutTPM: one request, 201, a certificate for the software
// key that renews with the same key; a fleet that does not allow it is a
// permanent refusal that Explain turns into what to change; a server that
// answers with a TPM challenge is not trusted.
func TestEnrollWithoutTPM(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	cp := enrolltest.Start(t, enrolltest.Options{AllowNoTPM: true})
	cp.AddToken("tok-1", time.Now().Add(time.Hour))
	id, err := pinnedClient(t, cp, cp.Pin).EnrollWithoutTPM(ctx(t), key, "tok-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cp.TPMKind(id.DeviceID) != wire.TPMKindNone || cp.Calls("enroll") != 1 || cp.Calls("activate") != 0 {
		t.Fatalf("kind %q, enroll %d, activate %d", cp.TPMKind(id.DeviceID), cp.Calls("enroll"), cp.Calls("activate"))
	}
	if !id.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Fatal("certificate for another key")
	}
	renewer, err := enroll.New(enroll.Config{ServerURL: cp.URL, CAPEM: id.CAPEM,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return id.TLSCertificate(key), nil }})
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := renewer.Renew(ctx(t), key)
	if err != nil || renewed.DeviceID != id.DeviceID || renewed.Leaf.SerialNumber.Cmp(id.Leaf.SerialNumber) == 0 {
		t.Fatalf("renew: %+v %v", renewed, err)
	}

	// Enrolled without a KEM key (an older agent): it registers one later.
	if cp.KEMPublic(id.DeviceID) != nil {
		t.Fatal("a KEM key appeared from nowhere")
	}
	kem := kemPublic(t)
	if err := renewer.RegisterKEMKey(ctx(t), kem); err != nil {
		t.Fatalf("register KEM key: %v", err)
	}
	if got := cp.KEMPublic(id.DeviceID); string(got) != string(kem) {
		t.Fatal("the control plane did not store the registered KEM key")
	}

	strict := enrolltest.Start(t, enrolltest.Options{})
	strict.AddToken("tok-1", time.Now().Add(time.Hour))
	_, err = pinnedClient(t, strict, strict.Pin).EnrollWithoutTPM(ctx(t), key, "tok-1", nil)
	if !errors.Is(err, enroll.ErrRefused) || enroll.Retryable(err) {
		t.Fatalf("strict fleet: %v (retryable %v)", err, enroll.Retryable(err))
	}
	if msg := enroll.Explain(err); !strings.Contains(msg, "without a TPM") || !strings.Contains(msg, "--allow-no-tpm") ||
		strings.Contains(msg, "TPM evidence") {
		t.Fatalf("Explain: %s", msg)
	}

	// A server that answers 200 (a TPM challenge) to a device without one.
	challenger := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"session_id":"enr-x","credential_blob":"AA==","encrypted_secret":"AA=="}`))
	}))
	defer challenger.Close()
	c, err := enroll.New(enroll.Config{ServerURL: challenger.URL, CAPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: challenger.Certificate().Raw})})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnrollWithoutTPM(ctx(t), key, "tok-1", nil); !errors.Is(err, enroll.ErrBadResponse) {
		t.Fatalf("challenge to a device without a TPM: %v", err)
	}
}
