package api

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"strconv"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/audit"
)

// Audit paging limits.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
)

func (a *handler) listAudit(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if err := checkQuery(q, "after", "limit"); err != nil {
		return err
	}
	var after uint64
	if s, err := singleQuery(q, "after"); err != nil {
		return err
	} else if s != "" {
		if after, err = strconv.ParseUint(s, 10, 63); err != nil {
			return badRequest("query parameter \"after\": %q is not a sequence number", s)
		}
	}
	limit := DefaultAuditLimit
	if s, err := singleQuery(q, "limit"); err != nil {
		return err
	} else if s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxAuditLimit {
			return badRequest("query parameter \"limit\": %q is not a number from 1 to %d", s, MaxAuditLimit)
		}
		limit = n
	}
	page := AuditPage{Entries: []audit.Entry{}, NextAfter: after}
	for row, err := range a.store.ListAudit(r.Context(), p.Tenant, int64(after), limit) {
		if err != nil {
			return err
		}
		e, err := EntryFromRow(row)
		if err != nil {
			return err
		}
		page.Entries = append(page.Entries, e)
		page.NextAfter = e.Seq
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// parseOperatorCSR checks a PEM certificate request: one CERTIFICATE
// REQUEST block and nothing else, a valid self-signature, and an ECDSA
// P-256 or Ed25519 key.
func parseOperatorCSR(s string) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode([]byte(s))
	if block == nil || (block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST") {
		return nil, badRequest("field \"csr\": want a PEM CERTIFICATE REQUEST block")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, badRequest("field \"csr\": data after the CERTIFICATE REQUEST block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, badRequest("field \"csr\": %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, badRequest("field \"csr\": signature does not verify: %v", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, badRequest("field \"csr\": ECDSA key on %s; only P-256 is accepted", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return nil, badRequest("field \"csr\": %T key; only ECDSA P-256 and Ed25519 are accepted", csr.PublicKey)
	}
	return csr, nil
}

func (a *handler) mqttCredentials(w http.ResponseWriter, r *http.Request) error {
	var req MQTTCredentialsRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	csr, err := parseOperatorCSR(req.CSR)
	if err != nil {
		return err
	}
	p, err := caller(r)
	if err != nil {
		return err
	}
	// Issued outside the transaction (the CA may use the store itself); if
	// the audit entry then fails, the certificate is never handed out.
	certPEM, err := a.ca.IssueOperatorCert(r.Context(), p.Tenant, p.OperatorID, csr.Raw)
	if err != nil {
		return fmt.Errorf("issue operator certificate: %w", err)
	}
	details := map[string]any{"operator_id": p.OperatorID}
	if block, _ := pem.Decode(certPEM); block != nil {
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil {
			details["serial"] = cert.SerialNumber.Text(16)
			details["not_after"] = cert.NotAfter.UTC()
		}
	}
	err = a.mutate(r, "mqtt_credentials.issue", func(_ *store.Tx, p principal) (change, error) {
		return change{target: p.OperatorID, details: details}, nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, MQTTCredentials{
		CertificatePEM: string(certPEM), CAPEM: string(a.ca.PlatformCAPEM()), BrokerURL: a.brokerURL(), Tenant: p.Tenant,
	})
	return nil
}
