package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"time"
)

// Authority is what the broker needs from the fleet CA. It is consulted on
// every TLS handshake, so a CA rotation or a revocation takes effect for the
// next connection without restarting the broker.
type Authority interface {
	// ClientCAs returns the roots that client certificates must chain to.
	ClientCAs() *x509.CertPool
	// IsRevoked reports whether the certificate with this serial number is
	// revoked. It must already answer true when the control plane calls
	// [Broker.Disconnect] for the revoked identity.
	IsRevoked(serial *big.Int) bool
}

// Config configures the embedded broker.
type Config struct {
	// Addr is the mTLS listener's address; default ":8883".
	Addr string
	// GetCertificate returns the broker's server certificate (reloadable).
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Authority verifies client certificates.
	Authority Authority
	// InsecureDevAddr, when set, adds a plain-TCP listener for development.
	// It must be a loopback address, and it is refused when Production is
	// set. On it, a client's MQTT username is taken as its SPIFFE ID — the
	// only place an identity comes from a client-chosen field.
	InsecureDevAddr string
	// Production refuses development-only settings.
	Production bool
	// HandshakeTimeout bounds the TLS handshake plus the CONNECT packet;
	// default 10 s.
	HandshakeTimeout time.Duration
	// Logger receives the broker's logs; default slog.Default().
	Logger *slog.Logger
}

const (
	defaultAddr             = ":8883"
	defaultHandshakeTimeout = 10 * time.Second
)

// ErrInsecureListener is returned by Validate for a plain-TCP listener that
// is not on loopback or is configured in production.
var ErrInsecureListener = errors.New("insecure MQTT listener refused")

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = defaultAddr
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = defaultHandshakeTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports whether the configuration can run.
func (c Config) Validate() error {
	if c.GetCertificate == nil {
		return errors.New("broker: no server certificate (GetCertificate)")
	}
	if c.Authority == nil {
		return errors.New("broker: no certificate authority")
	}
	if c.InsecureDevAddr != "" {
		if c.Production {
			return fmt.Errorf("%w: plain TCP on %s is for development only (TG_ENVIRONMENT=production)", ErrInsecureListener, c.InsecureDevAddr)
		}
		if !isLoopback(c.InsecureDevAddr) {
			return fmt.Errorf("%w: plain TCP address %s is not loopback", ErrInsecureListener, c.InsecureDevAddr)
		}
	}
	return nil
}

// isLoopback reports whether addr ("host:port") binds only loopback.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
