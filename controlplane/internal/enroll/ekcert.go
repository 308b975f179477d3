package enroll

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"slices"
	"time"
)

var (
	oidSubjectAltName  = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidEKCertificate   = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
)

// TPMInfo is what an EK certificate's subjectAltName says about the TPM
// (TCG EK Credential Profile: tcg-at-tpmManufacturer, tpmModel,
// tpmVersion), e.g. "id:49465800" (Infineon), "SLB9670", "id:000F0000".
type TPMInfo struct {
	Manufacturer string `json:"manufacturer,omitempty"`
	Model        string `json:"model,omitempty"`
	Version      string `json:"version,omitempty"`
}

// verifyEKCert checks an EK certificate the way the TCG EK Credential
// Profile shapes them, which plain crypto/x509 verification rejects:
//
//   - the subject is usually empty and the subjectAltName, marked critical,
//     holds only a directoryName with the TPM manufacturer, model and
//     version; Go handles no directoryName SAN, reports the extension as an
//     unhandled critical extension and refuses the chain. We parse that SAN
//     ourselves and accept it; any other unhandled critical extension is
//     still refused.
//   - the extended key usage is tcg-kp-EKCertificate (2.23.133.8.1), which
//     Go does not know, and issuing CAs usually carry no EKU; so the chain
//     is verified for any usage, and if the leaf carries an EKU at all it
//     must include tcg-kp-EKCertificate (a certificate the same CA issued
//     for another purpose is not an EK credential).
func verifyEKCert(der []byte, ekPub crypto.PublicKey, roots, intermediates *x509.CertPool, now time.Time) (*x509.Certificate, TPMInfo, error) {
	var info TPMInfo
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		// Go rejects some real-world EK certificates (e.g. negative serial
		// numbers, from some older TPM firmware); they are refused here.
		return nil, info, fmt.Errorf("parse EK certificate: %w", err)
	}
	for _, oid := range cert.UnhandledCriticalExtensions {
		if !oid.Equal(oidSubjectAltName) {
			return nil, info, fmt.Errorf("EK certificate has unhandled critical extension %v", oid)
		}
	}
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(oidSubjectAltName) {
			if info, err = parseTPMSAN(ext.Value); err != nil {
				return nil, info, fmt.Errorf("EK certificate subjectAltName: %w", err)
			}
		}
	}
	if len(cert.ExtKeyUsage) > 0 || len(cert.UnknownExtKeyUsage) > 0 {
		if !slices.ContainsFunc(cert.UnknownExtKeyUsage, oidEKCertificate.Equal) {
			return nil, info, fmt.Errorf("EK certificate extended key usage lacks tcg-kp-EKCertificate")
		}
	}
	// Verify a shallow copy so the caller's certificate keeps its fields.
	check := *cert
	check.UnhandledCriticalExtensions = nil
	if _, err := check.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, info, fmt.Errorf("EK certificate chain: %w", err)
	}
	eq, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !eq.Equal(ekPub) {
		return nil, info, fmt.Errorf("EK certificate is for another key than the EK public area sent")
	}
	return cert, info, nil
}

// parseTPMSAN reads the TPM attributes from a GeneralNames value. Other
// name forms are ignored.
func parseTPMSAN(der []byte) (TPMInfo, error) {
	var info TPMInfo
	var names []asn1.RawValue
	if rest, err := asn1.Unmarshal(der, &names); err != nil || len(rest) > 0 {
		return info, fmt.Errorf("not a GeneralNames sequence")
	}
	for _, n := range names {
		if n.Class != asn1.ClassContextSpecific || n.Tag != 4 { // directoryName
			continue
		}
		var rdns pkix.RDNSequence
		if rest, err := asn1.Unmarshal(n.Bytes, &rdns); err != nil || len(rest) > 0 {
			return info, fmt.Errorf("malformed directoryName")
		}
		for _, rdn := range rdns {
			for _, atv := range rdn {
				s, _ := atv.Value.(string)
				switch {
				case atv.Type.Equal(oidTPMManufacturer):
					info.Manufacturer = s
				case atv.Type.Equal(oidTPMModel):
					info.Model = s
				case atv.Type.Equal(oidTPMVersion):
					info.Version = s
				}
			}
		}
	}
	return info, nil
}
