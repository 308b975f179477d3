package controlplane_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/controlplanetest"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/ca"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/testpg"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// pkgDevice is a device created as enrollment would (directly in the
// store), with its mTLS certificate and, optionally, a KEM key.
type pkgDevice struct {
	dev    store.Device
	kem    *tgsp.RecipientPrivateKey
	client *http.Client
}

func newPkgDevice(t *testing.T, h *controlplanetest.Harness, tenant, fleet string, kind store.TPMKind, withKEM bool) *pkgDevice {
	t.Helper()
	ctx := context.Background()
	kem, err := tgsp.GenerateRecipient(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := store.Device{FleetID: fleet, Name: "dev", DeviceType: "jetson-orin", TPMKind: kind}
	if kind != store.TPMNone {
		fp := make([]byte, 32)
		_, _ = rand.Read(fp)
		d.EKFingerprint, d.EKPublic, d.AKPublic = hex.EncodeToString(fp), []byte("ek"), []byte("ak")
	}
	if withKEM {
		d.KEMPublic = kem.Public().Bytes()
	}
	d, err = h.Store().CreateDevice(ctx, tenant, d)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := h.CP.CA().IssueDeviceCert(ctx, ca.DeviceCertRequest{Tenant: tenant, Fleet: fleet, Device: d.ID, PublicKey: &key.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Store().RecordCertificate(ctx, tenant, issued.Record(tenant, d.ID)); err != nil {
		t.Fatal(err)
	}
	cert := tlsCert(t, string(issued.PEM), key)
	return &pkgDevice{dev: d, kem: kem, client: &http.Client{Timeout: 20 * time.Second,
		Transport: &http.Transport{TLSClientConfig: h.TLSConfig(&cert), DisableKeepAlives: true}}}
}

// trust stores a verdict for the device as the attestation service would.
func (d *pkgDevice) trust(t *testing.T, h *controlplanetest.Harness, state store.VerdictState) {
	t.Helper()
	now := time.Now()
	err := h.Store().PutAttestationState(context.Background(), d.dev.Tenant, store.AttestationState{
		DeviceID: d.dev.ID, State: state, VerdictAt: now, EvidenceAt: now, PCRDigest: strings.Repeat("ab", 32),
		Quarantined: state == store.VerdictUntrusted,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (d *pkgDevice) do(t *testing.T, h *controlplanetest.Harness, method, path string, body any, hdr map[string]string) (*http.Response, []byte, error) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, h.BaseURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp, raw, err
}

// askKey requests the package key for a job; it returns the status, the
// error code and message (if any) and the grant.
func (d *pkgDevice) askKey(t *testing.T, h *controlplanetest.Harness, jobID, pkgID string) (int, string, wire.KeyGrant) {
	t.Helper()
	resp, raw, err := d.do(t, h, "POST", "/api/v1/device/key-grants", wire.KeyGrantRequest{JobID: jobID, PackageID: pkgID}, nil)
	if err != nil {
		t.Fatalf("key grant: %v", err)
	}
	var g wire.KeyGrant
	var e wire.ErrorBody
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(raw, &g); err != nil {
			t.Fatal(err)
		}
	} else {
		_ = json.Unmarshal(raw, &e)
	}
	return resp.StatusCode, e.Error.Code + ": " + e.Error.Message, g
}

// pushPackage pins a publisher and pushes a package packed to the
// control plane's key, over the operator API; it returns the package id,
// the file, the signer and the packed directory.
func pushPackage(t *testing.T, h *controlplanetest.Harness) (string, []byte, *tgsp.SignerPrivateKey, string) {
	t.Helper()
	signer, err := tgsp.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	api(t, h, "POST", "/api/v1/publishers", h.AdminKey, map[string]string{"name": "ml", "public_key_pem": string(signer.Public().MarshalPEM())}, nil)
	var rk struct {
		PublicKeyPEM string `json:"public_key_pem"`
	}
	api(t, h, "GET", "/api/v1/packages/recipient", h.AdminKey, nil, &rk)
	cp, err := tgsp.ParseRecipientPublicKey([]byte(rk.PublicKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "weights"), 0o755); err != nil {
		t.Fatal(err)
	}
	weights := make([]byte, 3<<20) // several chunks, and more than one HTTP write
	_, _ = rand.Read(weights)
	for name, data := range map[string][]byte{"model.onnx": []byte("an onnx graph"), "weights/w.bin": weights} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	if _, err := tgsp.Pack(&b, dir, tgsp.PackOptions{Name: "resnet", Version: "1.0.0", Signer: signer, Recipients: []*tgsp.RecipientPublicKey{cp}}); err != nil {
		t.Fatal(err)
	}
	raw := b.Bytes()
	req, _ := http.NewRequest("POST", h.BaseURL+"/api/v1/packages", bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Authorization", "Bearer "+h.AdminKey)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: h.TLSConfig(nil)}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("push: %s %s", resp.Status, out)
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:]), raw, signer, dir
}

// TestPackageKeyGrants runs the registry in a whole control plane: an
// operator pushes a package over HTTPS; a trusted device downloads it in
// two ranges over mTLS, gets its key for its job of a rollout, and
// decrypts files identical to the packed ones; devices that are
// quarantined, untrusted, without a KEM key or a TPM, revoked or of another
// tenant get no key; every grant is audited.
func TestPackageKeyGrants(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			var opts []controlplanetest.Option
			if backend == "postgres" {
				opts = append(opts, controlplanetest.WithDatabaseURL(testpg.Start(t)))
			}
			testPackageKeyGrants(t, controlplanetest.Start(t, opts...))
		})
	}
}

func testPackageKeyGrants(t *testing.T, h *controlplanetest.Harness) {
	ctx := context.Background()
	pkgID, raw, signer, input := pushPackage(t, h)
	fleet := h.CreateFleet(t, "edge", store.FleetPolicy{})

	trusted := newPkgDevice(t, h, h.Tenant, fleet.ID, store.TPMHardware, true)
	trusted.trust(t, h, store.VerdictTrusted)

	// Download, interrupted and resumed: the parts join to the file.
	cut := len(raw)/2 + 123
	resp, head, err := trusted.do(t, h, "GET", "/api/v1/device/packages/"+pkgID, nil, map[string]string{"Range": "bytes=0-" + strconv.Itoa(cut-1)})
	if err != nil || resp.StatusCode != 206 || len(head) != cut {
		t.Fatalf("first range: %v %v, %d bytes", err, resp, len(head))
	}
	resp, tail, err := trusted.do(t, h, "GET", "/api/v1/device/packages/"+pkgID, nil,
		map[string]string{"Range": "bytes=" + strconv.Itoa(cut) + "-", "If-Range": resp.Header.Get("ETag")})
	if err != nil || resp.StatusCode != 206 || !bytes.Equal(append(head, tail...), raw) {
		t.Fatalf("resumed download: %v %v; joined parts equal the file: %v", err, resp, bytes.Equal(append(head, tail...), raw))
	}
	if resp, _, _ := trusted.do(t, h, "GET", "/api/v1/device/packages/"+strings.Repeat("0", 64), nil, nil); resp == nil || resp.StatusCode != 404 {
		t.Fatalf("unknown package: %v", resp)
	}

	// Malformed requests and wrong methods.
	if resp, body, _ := trusted.do(t, h, "POST", "/api/v1/device/key-grants", wire.KeyGrantRequest{PackageID: pkgID}, nil); resp == nil || resp.StatusCode != 400 {
		t.Errorf("grant without a job id: %v %s", resp, body)
	}
	if resp, _, _ := trusted.do(t, h, "GET", "/api/v1/device/key-grants", nil, nil); resp == nil || resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET key-grants: %v", resp)
	}
	if resp, _, _ := trusted.do(t, h, "DELETE", "/api/v1/device/packages/"+pkgID, nil, nil); resp == nil || resp.StatusCode != 405 {
		t.Errorf("DELETE device package: %v", resp)
	}
	// No client certificate, no package.
	anon := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: h.TLSConfig(nil)}}
	if resp, err := anon.Get(h.BaseURL + "/api/v1/device/packages/" + pkgID); err != nil || resp.StatusCode != 401 {
		t.Errorf("download without a certificate: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// The key is granted for a job of a running rollout, as an agent would
	// ask for it: the job id from GET /api/v1/device/jobs.
	if st, msg, _ := trusted.askKey(t, h, "job-aaaaaaaaaaaaaaaaaaaa", pkgID); st != 403 || !strings.HasPrefix(msg, wire.CodeKeyGrantRefused) {
		t.Fatalf("trusted device without a job: %d %s", st, msg)
	}
	api(t, h, "POST", "/api/v1/rollouts", h.AdminKey, map[string]any{"package": pkgID, "fleet": fleet.ID, "waves": []int{100}, "device_timeout": "1h"}, nil)
	var jobID string
	for deadline := time.Now().Add(15 * time.Second); jobID == ""; time.Sleep(50 * time.Millisecond) {
		resp, body, err := trusted.do(t, h, "GET", "/api/v1/device/jobs", nil, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("device jobs: %v %v %s", err, resp, body)
		}
		var jobs []wire.Job
		if err := json.Unmarshal(body, &jobs); err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			if j.Package.ID == pkgID {
				jobID = j.ID
			}
		}
		if jobID == "" && time.Now().After(deadline) {
			t.Fatalf("no job for the trusted device: %s", body)
		}
	}

	// The key, opened with the device's private key, decrypts the package.
	st, msg, g := trusted.askKey(t, h, jobID, pkgID)
	if st != 200 || g.Schema != wire.KeyGrantSchema || g.PackageID != pkgID {
		t.Fatalf("trusted device: %d %s %+v", st, msg, g)
	}
	p, err := tgsp.Open(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.VerifySignature([]*tgsp.SignerPublicKey{signer.Public()}, time.Now()); err != nil {
		t.Fatal(err)
	}
	dek, err := p.OpenGrant(g.Grant, trusted.kem)
	if err != nil {
		t.Fatalf("open grant: %v", err)
	}
	out := filepath.Join(t.TempDir(), "model")
	if err := p.Unpack(ctx, dek, out, tgsp.UnpackOptions{CheckDigests: true}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"model.onnx", "weights/w.bin"} {
		want, _ := os.ReadFile(filepath.Join(input, name))
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: decrypted file differs from the packed one (%v)", name, err)
		}
	}

	// Refusals: each is the registry's own check of the device, made before
	// any job is looked at.
	quarantined := newPkgDevice(t, h, h.Tenant, fleet.ID, store.TPMHardware, true)
	quarantined.trust(t, h, store.VerdictTrusted)
	if err := h.Store().SetQuarantined(ctx, h.Tenant, quarantined.dev.ID, true); err != nil {
		t.Fatal(err)
	}
	untrusted := newPkgDevice(t, h, h.Tenant, fleet.ID, store.TPMHardware, true)
	untrusted.trust(t, h, store.VerdictUntrusted)
	noKEM := newPkgDevice(t, h, h.Tenant, fleet.ID, store.TPMHardware, false)
	noKEM.trust(t, h, store.VerdictTrusted)
	noTPM := newPkgDevice(t, h, h.Tenant, fleet.ID, store.TPMNone, true)
	for name, c := range map[string]struct {
		d       *pkgDevice
		mention string
	}{
		"quarantined": {quarantined, "quarantined"},
		"untrusted":   {untrusted, "verdict is untrusted"},
		"no KEM key":  {noKEM, "KEM public key"},
		"no TPM":      {noTPM, "allow_no_tpm"},
	} {
		st, msg, g := c.d.askKey(t, h, jobID, pkgID)
		if st != 403 || !strings.HasPrefix(msg, wire.CodeKeyGrantRefused+": ") || !strings.Contains(msg, c.mention) || g.Grant != nil {
			t.Errorf("%s device: %d %q, want 403 KEY_GRANT_REFUSED mentioning %q", name, st, msg, c.mention)
		}
	}

	// Not attested yet, or stale: refused for now — 503 with Retry-After,
	// which the agent retries (403 would end its job).
	for _, state := range []store.VerdictState{store.VerdictUnknown, store.VerdictStale} {
		d := newPkgDevice(t, h, h.Tenant, fleet.ID, store.TPMHardware, true)
		if state == store.VerdictStale {
			d.trust(t, h, state)
		}
		st, msg, g := d.askKey(t, h, jobID, pkgID)
		if st != 503 || !strings.HasPrefix(msg, wire.CodeKeyGrantRefused+": ") || !strings.Contains(msg, "verdict is "+string(state)) || g.Grant != nil {
			t.Errorf("%s device: %d %q, want 503 KEY_GRANT_REFUSED (for now)", state, st, msg)
		}
	}

	// Revoked: the certificate is refused (at the handshake, or 403 REVOKED).
	revoked := newPkgDevice(t, h, h.Tenant, fleet.ID, store.TPMHardware, true)
	revoked.trust(t, h, store.VerdictTrusted)
	h.RevokeDevice(t, revoked.dev.ID)
	resp, body, err := revoked.do(t, h, "POST", "/api/v1/device/key-grants", wire.KeyGrantRequest{JobID: jobID, PackageID: pkgID}, nil)
	if err == nil && (resp.StatusCode != 403 || !strings.Contains(string(body), wire.CodeRevoked)) {
		t.Errorf("revoked device: %d %s", resp.StatusCode, body)
	}

	// Another tenant's trusted device: neither the file nor the key.
	betaFleet := addTenant(t, h, "beta")
	stranger := newPkgDevice(t, h, "beta", betaFleet.ID, store.TPMHardware, true)
	stranger.trust(t, h, store.VerdictTrusted)
	if resp, _, err := stranger.do(t, h, "GET", "/api/v1/device/packages/"+pkgID, nil, nil); err != nil || resp.StatusCode != 404 {
		t.Errorf("other tenant's download: %v %v", resp, err)
	}
	if st, msg, _ := stranger.askKey(t, h, jobID, pkgID); st != 403 || !strings.HasPrefix(msg, wire.CodeKeyGrantRefused) {
		t.Errorf("other tenant's key grant: %d %s", st, msg)
	}

	// Exactly the one grant is in the audit chain.
	var page struct {
		Entries []struct {
			Actor, Action, Target string
			Details               map[string]any
		} `json:"entries"`
	}
	api(t, h, "GET", "/api/v1/audit?limit=1000", h.AdminKey, nil, &page)
	grants := 0
	for _, e := range page.Entries {
		if e.Action != "key.grant" {
			continue
		}
		grants++
		if e.Actor != "device:"+trusted.dev.ID || e.Target != trusted.dev.ID || e.Details["package_id"] != pkgID ||
			e.Details["job_id"] != jobID || e.Details["fleet_id"] != fleet.ID {
			t.Errorf("key.grant entry %+v", e)
		}
	}
	if grants != 1 {
		t.Errorf("%d key.grant entries, want 1", grants)
	}
}

// addTenant creates another tenant (its data key and CA) with one fleet.
func addTenant(t *testing.T, h *controlplanetest.Harness, tenant string) store.Fleet {
	t.Helper()
	ctx := context.Background()
	dek, caRow, err := h.CP.CA().NewTenant(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	err = h.Store().WithTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.CreateTenant(ctx, store.Tenant{ID: tenant, WrappedDEK: dek}); err != nil {
			return err
		}
		_, err := tx.CreateCA(ctx, tenant, caRow)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.CP.CA().Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	f, err := h.Store().CreateFleet(ctx, tenant, store.Fleet{Name: "edge"})
	if err != nil {
		t.Fatal(err)
	}
	return f
}
