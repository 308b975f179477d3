package enroll

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// Pin is the SHA-256 of a CA certificate's DER encoding.
type Pin [sha256.Size]byte

const pinPrefix = "sha256:"

// ParsePin parses "sha256:<64 hex digits>" (hex in either case).
func ParsePin(s string) (Pin, error) {
	var p Pin
	rest, ok := strings.CutPrefix(s, pinPrefix)
	if !ok {
		return p, fmt.Errorf("ca hash %q: want sha256:<64 hex digits>", s)
	}
	b, err := hex.DecodeString(rest)
	if err != nil || len(b) != sha256.Size {
		return p, fmt.Errorf("ca hash %q: want sha256:<64 hex digits>", s)
	}
	copy(p[:], b)
	return p, nil
}

// PinOf returns the pin of cert.
func PinOf(cert *x509.Certificate) Pin { return sha256.Sum256(cert.Raw) }

// String returns "sha256:<hex>".
func (p Pin) String() string { return pinPrefix + hex.EncodeToString(p[:]) }

// verifyPinned returns a tls.Config.VerifyConnection that accepts a server
// whose presented chain contains a certificate with hash pin and whose leaf
// verifies for serverName up to that certificate. found receives the pinned
// certificate, so the caller can trust it from then on.
func verifyPinned(pin Pin, serverName string, found func(*x509.Certificate)) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%w: server sent no certificate", ErrPinMismatch)
		}
		var anchor *x509.Certificate
		for _, c := range cs.PeerCertificates {
			h := PinOf(c)
			if subtle.ConstantTimeCompare(h[:], pin[:]) == 1 {
				anchor = c
				break
			}
		}
		if anchor == nil {
			return fmt.Errorf("%w: no certificate in the server's chain has hash %s (the server must send its platform CA certificate)", ErrPinMismatch, pin)
		}
		roots := x509.NewCertPool()
		roots.AddCert(anchor)
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: inter,
			DNSName:       serverName,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			return fmt.Errorf("%w: %v", ErrPinMismatch, err)
		}
		if found != nil {
			found(anchor)
		}
		return nil
	}
}
