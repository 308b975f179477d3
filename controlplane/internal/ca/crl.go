package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// CRLValidity is the NextUpdate horizon of the CRLs this package signs.
// A relying party that checks CRLs (mosquitto with crlfile) refuses every
// certificate of a CA whose CRL has expired, so whoever publishes them must
// re-sign well before: see CRLStale.
const CRLValidity = 7 * 24 * time.Hour

// CRLRefresh is the age after which a CRL is re-signed even when nothing in
// it changed.
const CRLRefresh = 24 * time.Hour

// RevocationList is one signed CRL.
type RevocationList struct {
	// Issuer is the CA that signed it (a tenant root or the platform root).
	Issuer *x509.Certificate
	// Serials are the revoked serial numbers, in SerialString form, sorted.
	Serials []string
	// DER is the signed CRL.
	DER []byte
}

// PEM returns the CRL in PEM ("X509 CRL").
func (l RevocationList) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: l.DER})
}

// RevokedSerials returns the serials of tenant's revoked certificates that
// have not expired yet (an expired certificate is refused anyway), sorted.
func (a *Authority) RevokedSerials(ctx context.Context, tenant string) ([]string, error) {
	certs, err := a.st.RevokedSerials(ctx, tenant)
	if err != nil {
		return nil, fmt.Errorf("revoked certificates of tenant %s: %w", tenant, err)
	}
	out := make([]string, 0, len(certs))
	for _, c := range certs {
		out = append(out, c.Serial)
	}
	slices.Sort(out)
	return out, nil
}

// TenantCRL signs a CRL with tenant's CA listing serials (SerialString
// form), valid from now for CRLValidity.
func (a *Authority) TenantCRL(ctx context.Context, tenant string, serials []string) (RevocationList, error) {
	t, err := a.signer(ctx, tenant)
	if err != nil {
		return RevocationList{}, err
	}
	return a.signCRL(t.cert, t.key, serials)
}

// PlatformCRL signs the platform CA's CRL. The platform CA issues only
// server certificates and the control plane's own client certificate, none
// of which is ever revoked, so it is empty; it exists because a TLS stack
// that checks CRLs refuses a client whose issuer has none.
func (a *Authority) PlatformCRL() (RevocationList, error) {
	return a.signCRL(a.platformCert, a.platformKey, nil)
}

func (a *Authority) signCRL(issuer *x509.Certificate, key *ecdsa.PrivateKey, serials []string) (RevocationList, error) {
	now := a.now()
	entries := make([]x509.RevocationListEntry, 0, len(serials))
	sorted := slices.Clone(serials)
	slices.Sort(sorted)
	for _, s := range sorted {
		n, ok := new(big.Int).SetString(s, 16)
		if !ok {
			return RevocationList{}, fmt.Errorf("revoked serial %q is not hex", s)
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: now})
	}
	tmpl := &x509.RevocationList{
		RevokedCertificateEntries: entries,
		// Monotonic across re-signings by any replica with a sane clock.
		Number:     big.NewInt(now.UnixMicro()),
		ThisUpdate: now.Add(-backdate),
		NextUpdate: now.Add(CRLValidity),
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, key)
	if err != nil {
		return RevocationList{}, fmt.Errorf("sign CRL of %s: %w", issuer.Subject, err)
	}
	if sorted == nil {
		sorted = []string{}
	}
	return RevocationList{Issuer: issuer, Serials: sorted, DER: der}, nil
}

// CRLStale reports whether crl must be re-signed at now: it does not verify
// under issuer, lists other serials than want, or is older than CRLRefresh.
func CRLStale(crl *x509.RevocationList, issuer *x509.Certificate, want []string, now time.Time) bool {
	if crl == nil || crl.CheckSignatureFrom(issuer) != nil || !bytes.Equal(crl.RawIssuer, issuer.RawSubject) {
		return true
	}
	if now.Sub(crl.ThisUpdate.Add(backdate)) >= CRLRefresh || !now.Before(crl.NextUpdate) {
		return true
	}
	have := make([]string, 0, len(crl.RevokedCertificateEntries))
	for _, e := range crl.RevokedCertificateEntries {
		have = append(have, store.SerialString(e.SerialNumber))
	}
	slices.Sort(have)
	w := slices.Clone(want)
	slices.Sort(w)
	return !slices.Equal(have, w)
}

// Root is a CA certificate that issues client certificates.
type Root struct {
	// Tenant is empty for the platform CA.
	Tenant string
	Cert   *x509.Certificate
}

// Roots returns the platform root and every tenant root, platform first,
// then by tenant id.
func (a *Authority) Roots() []Root {
	out := []Root{{Cert: a.platformCert}}
	for _, id := range a.Tenants() {
		if t, err := a.tenant(id); err == nil {
			out = append(out, Root{Tenant: id, Cert: t.cert})
		}
	}
	return out
}
