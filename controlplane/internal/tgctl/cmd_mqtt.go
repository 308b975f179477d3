package tgctl

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

func (a *App) mqttCmd() *cobra.Command {
	var dir string
	creds := &cobra.Command{
		Use:   "credentials --out DIR",
		Short: "Get a read-only MQTT client certificate for the tenant's topics",
		Long: `credentials generates an ECDSA P-256 key on this machine (it never leaves it), has the
control plane certify it for read-only access to tg/v1/<tenant>/#, and writes
DIR/ca.pem, DIR/operator.crt and DIR/operator.key (mode 0600). It prints the
mosquitto_sub command that watches the tenant's topics with them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usagef("--out DIR is required")
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return fmt.Errorf("generate key: %w", err)
			}
			csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
				Subject: pkix.Name{CommonName: "tgctl operator"}, // the server sets the identity
			}, key)
			if err != nil {
				return fmt.Errorf("create CSR: %w", err)
			}
			csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})
			cr, err := c.MQTTCredentials(cmd.Context(), csrPEM)
			if err != nil {
				return err
			}
			if err := checkIssued(cr.CertificatePEM, key); err != nil {
				return err
			}
			keyDER, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return fmt.Errorf("encode key: %w", err)
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("create %s: %w", dir, err)
			}
			paths := struct{ ca, cert, key string }{filepath.Join(dir, "ca.pem"), filepath.Join(dir, "operator.crt"), filepath.Join(dir, "operator.key")}
			if err := writeFileAtomic(paths.key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
				return err
			}
			if err := writeFileAtomic(paths.cert, []byte(cr.CertificatePEM), 0o644); err != nil {
				return err
			}
			if err := writeFileAtomic(paths.ca, []byte(cr.CAPEM), 0o644); err != nil {
				return err
			}
			host, port := brokerHostPort(cr.BrokerURL, c.BaseURL())
			sub := fmt.Sprintf("mosquitto_sub -h %s -p %s --cafile %s --cert %s --key %s -t 'tg/v1/%s/#' -v",
				host, port, shellQuote(paths.ca), shellQuote(paths.cert), shellQuote(paths.key), cr.Tenant)
			if a.jsonOutput() {
				return writeJSON(a.Stdout, struct {
					Tenant        string `json:"tenant"`
					BrokerURL     string `json:"broker_url"`
					CAFile        string `json:"ca_file"`
					CertFile      string `json:"cert_file"`
					KeyFile       string `json:"key_file"`
					MosquittoSub  string `json:"mosquitto_sub"`
					CertificateNB string `json:"certificate_not_after"`
				}{cr.Tenant, cr.BrokerURL, paths.ca, paths.cert, paths.key, sub, certNotAfter(cr.CertificatePEM)})
			}
			fmt.Fprintf(a.Stdout, "Wrote %s, %s and %s (key mode 0600); read-only on tg/v1/%s/#, valid until %s.\n\n%s\n",
				paths.ca, paths.cert, paths.key, cr.Tenant, orDash(certNotAfter(cr.CertificatePEM)), sub)
			return nil
		},
	}
	creds.Flags().StringVar(&dir, "out", "", "directory to write ca.pem, operator.crt and operator.key into")
	return group("mqtt", "MQTT access for operators", creds)
}

// checkIssued makes sure the returned certificate is for the key just
// generated, so a confused server cannot leave unusable files behind.
func checkIssued(certPEM string, key *ecdsa.PrivateKey) error {
	blk, _ := pem.Decode([]byte(certPEM))
	if blk == nil || blk.Type != "CERTIFICATE" {
		return fmt.Errorf("the server returned no PEM certificate")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return fmt.Errorf("the server returned a bad certificate: %w", err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return fmt.Errorf("the server's certificate is not for the key sent")
	}
	return nil
}

func certNotAfter(certPEM string) string {
	blk, _ := pem.Decode([]byte(certPEM))
	if blk == nil {
		return ""
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return ""
	}
	return ts(cert.NotAfter)
}

// brokerHostPort takes host and port from the broker URL (mqtts://,
// ssl://, tls://, tcp://); a missing or unspecified host (0.0.0.0, ::) is
// the API server's host, a missing port 8883.
func brokerHostPort(brokerURL, apiURL string) (string, string) {
	host, port := "", "8883"
	if u, err := url.Parse(brokerURL); err == nil && u.Host != "" {
		host = u.Hostname()
		if p := u.Port(); p != "" {
			port = p
		}
	} else if h, p, err := net.SplitHostPort(brokerURL); err == nil {
		host, port = h, p
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if u, err := url.Parse(apiURL); err == nil {
			host = u.Hostname()
		}
	}
	return host, port
}

// shellQuote quotes a path for a copy-pasted shell command when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, created with mode perm, so a reader never sees half a file and
// a key is never readable by others, even for a moment.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
