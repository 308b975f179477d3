package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/kek"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
)

type fixture struct {
	st   *store.Store
	kek  kek.Provider
	dir  string
	a    *Authority
	fl   map[string]store.Fleet
	devs map[string]store.Device
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(dir, "cp.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	key := make([]byte, kek.KeySize)
	_, _ = rand.Read(key)
	p, err := kek.NewMemoryProvider(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsurePlatformCA(ctx, p, dir, nil); err != nil {
		t.Fatal(err)
	}
	f := &fixture{st: st, kek: p, dir: dir, fl: map[string]store.Fleet{}, devs: map[string]store.Device{}}
	for _, tenant := range []string{"a", "b"} {
		dek, row, err := NewTenantKeys(ctx, p, tenant, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateTenant(ctx, store.Tenant{ID: tenant, WrappedDEK: dek}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateCA(ctx, tenant, row); err != nil {
			t.Fatal(err)
		}
		if f.fl[tenant], err = st.CreateFleet(ctx, tenant, store.Fleet{Name: "f"}); err != nil {
			t.Fatal(err)
		}
		if f.devs[tenant], err = st.CreateDevice(ctx, tenant, store.Device{FleetID: f.fl[tenant].ID, Name: "d", TPMKind: store.TPMNone}); err != nil {
			t.Fatal(err)
		}
	}
	if f.a, err = Open(ctx, Options{Store: st, KEK: p, DataDir: dir, Hostnames: []string{"cp.example", "10.0.0.7"}}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) issue(t *testing.T, tenant string, record bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	d := f.devs[tenant]
	c, err := f.a.IssueDeviceCert(context.Background(), DeviceCertRequest{Tenant: tenant, Fleet: d.FleetID, Device: d.ID, PublicKey: key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if record {
		if err := f.st.RecordCertificate(context.Background(), tenant, c.Record(tenant, d.ID)); err != nil {
			t.Fatal(err)
		}
	}
	return c.Cert, key
}

// chains verifies cert as crypto/tls does with ClientCAs.
func (f *fixture) chains(t *testing.T, cert *x509.Certificate) [][]*x509.Certificate {
	t.Helper()
	ch, err := cert.Verify(x509.VerifyOptions{Roots: f.a.ClientCAs(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func TestVerifyClient(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	good, _ := f.issue(t, "a", true)
	unrecorded, _ := f.issue(t, "a", false)

	// Tenant b's CA signing a certificate that claims tenant a.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forged, err := f.a.issueLeaf(ctx, "b", mqttacl.Device("a", f.devs["a"].ID), pkix.Name{CommonName: f.devs["a"].ID}, key.Public(), DefaultDeviceCertTTL)
	if err != nil {
		t.Fatal(err)
	}
	op, err := f.st.CreateOperator(ctx, "a", store.Operator{Name: "o", Role: store.RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	opPEM, err := f.a.IssueOperatorCert(ctx, "a", op.ID, csr)
	if err != nil {
		t.Fatal(err)
	}
	opCert, err := parseCertPEM(opPEM)
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		cert *x509.Certificate
		want string // "" = accepted
	}{
		{"recorded device certificate", good, ""},
		{"operator certificate", opCert, ""},
		{"never recorded", unrecorded, "never issued"},
		{"other tenant's CA", forged.Cert, "not issued by its tenant's CA"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.a.VerifyClient(ctx, f.chains(t, tc.cert))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !errors.Is(err, ErrClientRefused) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}

	// A disabled operator's certificate is refused.
	yes := true
	if _, err := f.st.UpdateOperator(ctx, "a", op.ID, store.OperatorUpdate{Disabled: &yes}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.VerifyClient(ctx, f.chains(t, opCert)); !errors.Is(err, ErrClientRefused) {
		t.Errorf("disabled operator: %v", err)
	}
}

// TestRevocationCache: answers are cached, and InvalidateRevocations makes
// a revocation effective at once, for HTTPS and for the broker.
func TestRevocationCache(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cert, _ := f.issue(t, "a", true)
	ba := BrokerAuthority{A: f.a}
	if _, err := f.a.VerifyClient(ctx, f.chains(t, cert)); err != nil {
		t.Fatal(err)
	}
	if ba.IsRevoked(cert.SerialNumber) {
		t.Fatal("broker: revoked before revocation")
	}
	if err := f.st.RevokeCertificate(ctx, "a", store.SerialString(cert.SerialNumber)); err != nil {
		t.Fatal(err)
	}
	// Still cached (another replica revoked it): accepted for up to the TTL.
	if _, err := f.a.VerifyClient(ctx, f.chains(t, cert)); err != nil {
		t.Fatalf("cached answer not used: %v", err)
	}
	f.a.InvalidateRevocations()
	if _, err := f.a.VerifyClient(ctx, f.chains(t, cert)); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("after invalidation: %v", err)
	}
	if !ba.IsRevoked(cert.SerialNumber) {
		t.Fatal("broker: not revoked after invalidation")
	}
}

func TestServerCertificate(t *testing.T) {
	f := newFixture(t)
	c, err := f.a.ServerCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.Leaf
	if !slices.Contains(leaf.DNSNames, "localhost") || !slices.Contains(leaf.DNSNames, "cp.example") {
		t.Errorf("DNS SANs %v", leaf.DNSNames)
	}
	for _, ip := range []string{"127.0.0.1", "::1", "10.0.0.7"} {
		if !slices.ContainsFunc(leaf.IPAddresses, net.ParseIP(ip).Equal) {
			t.Errorf("IP SANs %v lack %s", leaf.IPAddresses, ip)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(f.a.PlatformCA())
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "cp.example"}); err != nil {
		t.Error(err)
	}
	if again, _ := f.a.ServerCertificate(nil); again != c {
		t.Error("server certificate reissued on every handshake")
	}
	if !strings.HasPrefix(f.a.CAHash(), "sha256:") || len(f.a.CAHash()) != 7+64 {
		t.Errorf("CA hash %q", f.a.CAHash())
	}
}

// TestKeysNeedTheKEK: the platform CA and tenant CA keys do not open under
// another KEK.
func TestKeysNeedTheKEK(t *testing.T) {
	f := newFixture(t)
	other, _ := kek.NewMemoryProvider(make([]byte, kek.KeySize))
	if _, err := Open(context.Background(), Options{Store: f.st, KEK: other, DataDir: f.dir}); err == nil {
		t.Fatal("platform CA opened under another KEK")
	}
	if _, err := EnsurePlatformCA(context.Background(), f.kek, f.dir, nil); err != nil {
		t.Fatal(err)
	}
	row, err := f.st.GetCA(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	kr := kek.NewKeyring(f.kek, storeDEKs{f.st}, kek.KeyringOptions{})
	if _, err := kr.Open(context.Background(), "b", row.WrappedKey, caKeyAAD("b")); err == nil {
		t.Fatal("tenant a's CA key opened as tenant b's")
	}
}

func TestIssueOperatorCertRefusesBadCSR(t *testing.T) {
	f := newFixture(t)
	key, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	for name, b := range map[string][]byte{"garbage": []byte("nope"), "P-224": csr} {
		if _, err := f.a.IssueOperatorCert(context.Background(), "a", "op-aaaaaaaaaaaaaaaaaaaa", b); !errors.Is(err, ErrBadCSR) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
