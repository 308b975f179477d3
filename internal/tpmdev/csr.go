package tpmdev

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
)

// CreateCSR returns a DER PKCS #10 certificate request for signer's key,
// signed by it (with the TLS key's Signer, the TPM signs). The control plane
// sets the certificate's subject and SAN itself (docs/identity.md); the
// subject here is informational.
func CreateCSR(signer crypto.Signer, subject pkix.Name) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:            subject,
		SignatureAlgorithm: x509.ECDSAWithSHA256,
	}, signer)
	if err != nil {
		return nil, fmt.Errorf("create csr: %w", err)
	}
	return der, nil
}
