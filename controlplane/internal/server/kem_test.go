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
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/controlplanetest"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/enrollbind"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmdevtest"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

func newKEMPublic(t *testing.T) []byte {
	t.Helper()
	k, err := tgsp.GenerateRecipient(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k.Public().Bytes()
}

// requestKEM is the enrollment request of an agent since key grants: the
// TPM certification covers the KEM public key.
func (a *tpmAgent) requestKEM(t *testing.T, token string, kem []byte) wire.EnrollRequest {
	t.Helper()
	req := a.request(t, token)
	c, err := a.d.CertifyKey(a.tls, a.ak, enrollbind.QualifyingDataKEM(token, req.CSR, kem))
	if err != nil {
		t.Fatal(err)
	}
	req.TPM.TLSKeyCertify, req.TPM.TLSKeyCertifySignature = c.Attest, c.Signature
	req.KEMPublic = kem
	return req
}

// activate answers the challenge in r (a 200 from /enroll).
func (a *tpmAgent) activate(t *testing.T, h *controlplanetest.Harness, c *http.Client, r response) response {
	t.Helper()
	ch := decodeInto[wire.Challenge](t, r, http.StatusOK)
	secret, err := a.d.ActivateCredential(a.ak, a.ek, ch.CredentialBlob, ch.EncryptedSecret)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	return mustDo(t, c, http.MethodPost, h.BaseURL+"/api/v1/enroll/activate", wire.ChallengeAnswer{SessionID: ch.SessionID, Secret: secret})
}

// operatorDevice reads a device through the operator API, as tgctl does.
func operatorDevice(t *testing.T, h *controlplanetest.Harness, id string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.BaseURL+"/api/v1/devices/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+h.AdminKey)
	resp, err := httpClient(h, nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/devices/%s: %d, %v", id, resp.StatusCode, err)
	}
	if _, ok := v["kem_public"]; ok {
		t.Error("the operator view shows the KEM key itself")
	}
	return v
}

func storedKEM(t *testing.T, h *controlplanetest.Harness, id string) []byte {
	t.Helper()
	d, err := h.Store().GetDevice(context.Background(), h.Tenant, id)
	if err != nil {
		t.Fatal(err)
	}
	return d.KEMPublic
}

// TestEnrollKEMKey: a TPM enrollment stores the KEM public key the TPM
// certification covers and shows kem_key to the operator and the device;
// a key swapped after certification is refused as not bound, a malformed
// one is 400, and an agent without a key (an older one) still enrolls.
func TestEnrollKEMKey(t *testing.T) {
	ekCA := tpmdevtest.NewCA(t, "test TPM manufacturer")
	h := controlplanetest.Start(t, controlplanetest.WithEKRoots(ekCA.Cert))
	fleet := h.CreateFleet(t, "lab", store.FleetPolicy{AllowSimulatedTPM: true, AllowNoTPM: true})
	a := newTPMAgent(t, ekCA)
	anon := httpClient(h, nil)

	t.Run("swapped after certification", func(t *testing.T) {
		req := a.requestKEM(t, h.CreateToken(t, fleet.ID, time.Hour), newKEMPublic(t))
		req.KEMPublic = newKEMPublic(t) // a man in the middle's key
		r := mustDo(t, anon, http.MethodPost, h.BaseURL+"/api/v1/enroll", req)
		if r.status != http.StatusForbidden || r.errorCode(t) != wire.CodeEnrollRefused || !strings.Contains(string(r.body), "not bound") {
			t.Fatalf("got %d %s, want 403 ENROLLMENT_REFUSED (not bound)", r.status, r.body)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		kem := newKEMPublic(t)
		for name, bad := range map[string][]byte{
			"truncated":         kem[:len(kem)-1],
			"unknown algorithm": append([]byte{0x7f}, kem[1:]...),
			"garbage":           []byte("not a key"),
		} {
			r := mustDo(t, anon, http.MethodPost, h.BaseURL+"/api/v1/enroll", a.requestKEM(t, h.CreateToken(t, fleet.ID, time.Hour), bad))
			if r.status != http.StatusBadRequest || r.errorCode(t) != wire.CodeBadRequest || !strings.Contains(string(r.body), "kem_public") {
				t.Errorf("%s: got %d %s, want 400 naming kem_public", name, r.status, r.body)
			}
		}
	})
	t.Run("stored", func(t *testing.T) {
		kem := newKEMPublic(t)
		r := mustDo(t, anon, http.MethodPost, h.BaseURL+"/api/v1/enroll", a.requestKEM(t, h.CreateToken(t, fleet.ID, time.Hour), kem))
		resp := decodeInto[wire.EnrollResponse](t, a.activate(t, h, anon, r), http.StatusCreated)
		if got := storedKEM(t, h, resp.DeviceID); !bytes.Equal(got, kem) {
			t.Fatalf("stored KEM key %x…, want the one sent", got[:min(8, len(got))])
		}
		if v := operatorDevice(t, h, resp.DeviceID); v["kem_key"] != true {
			t.Errorf("operator view kem_key %v, want true", v["kem_key"])
		}
		last, err := h.Store().LastAudit(context.Background(), h.Tenant)
		if err != nil || last.Action != "device.enroll" || !strings.Contains(string(last.Details), keyID(t, kem)) {
			t.Errorf("audit entry %s %s does not name the KEM key id (%v)", last.Action, last.Details, err)
		}
		cert := parseCert(t, resp.CertificatePEM)
		dc := httpClient(h, &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: a.signer(t), Leaf: cert})
		self := decodeInto[map[string]any](t, mustDo(t, dc, http.MethodGet, h.BaseURL+"/api/v1/device/self", nil), http.StatusOK)
		if self["kem_key"] != true {
			t.Errorf("device/self kem_key %v", self["kem_key"])
		}
		// The key is set once: the route refuses another one.
		r = mustDo(t, dc, http.MethodPut, h.BaseURL+"/api/v1/device/kem-key", wire.KEMKeyRequest{KEMPublic: newKEMPublic(t)})
		if r.status != http.StatusConflict || r.errorCode(t) != wire.CodeConflict {
			t.Errorf("PUT another key after enrolling with one: %d %s", r.status, r.body)
		}
		if got := storedKEM(t, h, resp.DeviceID); !bytes.Equal(got, kem) {
			t.Error("the PUT changed the enrolled key")
		}
		// The device is enrolled; delete it so the TPM may enroll again below.
		if err := h.Store().DeleteDevice(context.Background(), h.Tenant, resp.DeviceID); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("older agent without a key", func(t *testing.T) {
		r := mustDo(t, anon, http.MethodPost, h.BaseURL+"/api/v1/enroll", a.request(t, h.CreateToken(t, fleet.ID, time.Hour)))
		resp := decodeInto[wire.EnrollResponse](t, a.activate(t, h, anon, r), http.StatusCreated)
		if got := storedKEM(t, h, resp.DeviceID); got != nil {
			t.Fatalf("stored a KEM key %x for a request without one", got)
		}
		if v := operatorDevice(t, h, resp.DeviceID); v["kem_key"] != false {
			t.Errorf("operator view kem_key %v, want false", v["kem_key"])
		}
	})
	t.Run("no TPM", func(t *testing.T) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		kem := newKEMPublic(t)
		r := mustDo(t, anon, http.MethodPost, h.BaseURL+"/api/v1/enroll",
			wire.EnrollRequest{Token: h.CreateToken(t, fleet.ID, time.Hour), CSR: csr, TPMKind: wire.TPMKindNone, KEMPublic: kem})
		resp := decodeInto[wire.EnrollResponse](t, r, http.StatusCreated)
		if got := storedKEM(t, h, resp.DeviceID); !bytes.Equal(got, kem) {
			t.Fatal("KEM key of a device without a TPM not stored")
		}
		r = mustDo(t, anon, http.MethodPost, h.BaseURL+"/api/v1/enroll",
			wire.EnrollRequest{Token: h.CreateToken(t, fleet.ID, time.Hour), CSR: csr, TPMKind: wire.TPMKindNone, KEMPublic: []byte("junk")})
		if r.status != http.StatusBadRequest || r.errorCode(t) != wire.CodeBadRequest {
			t.Errorf("malformed key without a TPM: %d %s", r.status, r.body)
		}
	})
}

// noTPMDevice enrolls a device without a TPM and without a KEM key (an
// older agent) and returns its id and a client presenting its certificate.
func noTPMDevice(t *testing.T, h *controlplanetest.Harness, fleet string) (string, *http.Client) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	r := mustDo(t, httpClient(h, nil), http.MethodPost, h.BaseURL+"/api/v1/enroll",
		wire.EnrollRequest{Token: h.CreateToken(t, fleet, time.Hour), CSR: csr, TPMKind: wire.TPMKindNone})
	resp := decodeInto[wire.EnrollResponse](t, r, http.StatusCreated)
	cert := parseCert(t, resp.CertificatePEM)
	return resp.DeviceID, httpClient(h, &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: crypto.Signer(key), Leaf: cert})
}

// TestPutKEMKey: PUT /api/v1/device/kem-key sets the calling device's key
// (and only its own: the device comes from its certificate), once; the same
// key again is a harmless retry, another key 409; bodies without a valid
// key are 400; without a device certificate 401; a revoked device is
// refused. On both database backends.
func TestPutKEMKey(t *testing.T) {
	for name, opts := range backends(t) {
		t.Run(name, func(t *testing.T) {
			h := controlplanetest.Start(t, opts(t)...)
			fleet := h.CreateFleet(t, "plain", store.FleetPolicy{AllowNoTPM: true})
			dev, dc := noTPMDevice(t, h, fleet.ID)
			other, _ := noTPMDevice(t, h, fleet.ID)
			url := h.BaseURL + "/api/v1/device/kem-key"
			kem := newKEMPublic(t)

			bad := map[string]string{
				"no key":            `{}`,
				"null key":          `{"kem_public":null}`,
				"not base64":        `{"kem_public":"%%%"}`,
				"not a KEM key":     `{"kem_public":"` + base64.StdEncoding.EncodeToString([]byte("garbage")) + `"}`,
				"truncated key":     `{"kem_public":"` + base64.StdEncoding.EncodeToString(kem[:100]) + `"}`,
				"unknown field":     `{"kem_public":"` + base64.StdEncoding.EncodeToString(kem) + `","x":1}`,
				"malformed JSON":    `{"kem_public":`,
				"trailing data":     `{"kem_public":"` + base64.StdEncoding.EncodeToString(kem) + `"} {}`,
				"wrong type":        `{"kem_public":42}`,
				"empty body":        ``,
				"array, not object": `[]`,
			}
			for what, body := range bad {
				r := mustDo(t, dc, http.MethodPut, url, body)
				if r.status != http.StatusBadRequest || r.errorCode(t) != wire.CodeBadRequest {
					t.Errorf("%s: %d %s, want 400", what, r.status, r.body)
				}
			}
			if got := storedKEM(t, h, dev); got != nil {
				t.Fatal("a refused body set a key")
			}

			if r := mustDo(t, httpClient(h, nil), http.MethodPut, url, wire.KEMKeyRequest{KEMPublic: kem}); r.status != http.StatusUnauthorized ||
				r.errorCode(t) != wire.CodeUnauthenticated {
				t.Errorf("without a device certificate: %d %s", r.status, r.body)
			}
			if r := mustDo(t, dc, http.MethodPost, url, wire.KEMKeyRequest{KEMPublic: kem}); r.status != http.StatusMethodNotAllowed {
				t.Errorf("POST: %d %s, want 405", r.status, r.body)
			}

			r := mustDo(t, dc, http.MethodPut, url, wire.KEMKeyRequest{KEMPublic: kem})
			view := decodeInto[map[string]any](t, r, http.StatusOK)
			if view["id"] != dev || view["kem_key"] != true {
				t.Fatalf("PUT answered %v", view)
			}
			if got := storedKEM(t, h, dev); !bytes.Equal(got, kem) {
				t.Fatal("key not stored")
			}
			if got := storedKEM(t, h, other); got != nil {
				t.Fatal("the key went to another device")
			}
			last, err := h.Store().LastAudit(context.Background(), h.Tenant)
			if err != nil || last.Action != "device.kem_key" || last.Actor != "device:"+dev || last.Target != dev ||
				!strings.Contains(string(last.Details), keyID(t, kem)) {
				t.Errorf("audit entry %+v, %v", last, err)
			}

			// A retry with the same key: 200, nothing changes, no second audit entry.
			r = mustDo(t, dc, http.MethodPut, url, wire.KEMKeyRequest{KEMPublic: kem})
			if r.status != http.StatusOK {
				t.Errorf("same key again: %d %s", r.status, r.body)
			}
			if again, _ := h.Store().LastAudit(context.Background(), h.Tenant); again.Seq != last.Seq {
				t.Errorf("a retry appended %s", again.Action)
			}
			// Another key: 409, the first stays.
			r = mustDo(t, dc, http.MethodPut, url, wire.KEMKeyRequest{KEMPublic: newKEMPublic(t)})
			if r.status != http.StatusConflict || r.errorCode(t) != wire.CodeConflict {
				t.Errorf("another key: %d %s, want 409", r.status, r.body)
			}
			if got := storedKEM(t, h, dev); !bytes.Equal(got, kem) {
				t.Fatal("another key replaced the first")
			}

			// A revoked device registers nothing.
			rev, rc := noTPMDevice(t, h, fleet.ID)
			h.RevokeDevice(t, rev)
			if r, err := do(t, rc, http.MethodPut, url, wire.KEMKeyRequest{KEMPublic: newKEMPublic(t)}); err == nil && r.status < 400 {
				t.Errorf("revoked device: %d %s", r.status, r.body)
			}
			if got := storedKEM(t, h, rev); got != nil {
				t.Fatal("a revoked device registered a key")
			}
		})
	}
}

func keyID(t *testing.T, kem []byte) string {
	t.Helper()
	k, err := tgsp.ParseRecipientPublicKeyBytes(kem)
	if err != nil {
		t.Fatal(err)
	}
	return k.KeyID()
}
