package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/audit"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// testCA is a self-signed CA that issues server certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// serverCert issues a certificate for 127.0.0.1 and localhost (for
// other.example only with wrongName); withCA appends the CA to the
// presented chain.
func (ca *testCA) serverCert(t *testing.T, withCA, wrongName bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "control plane"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	if wrongName {
		tmpl.IPAddresses, tmpl.DNSNames = nil, []string{"other.example"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	chain := [][]byte{der}
	if withCA {
		chain = append(chain, ca.cert.Raw)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: key}
}

// tlsServer serves h over TLS with cert and counts the requests that
// reached it.
func tlsServer(t *testing.T, cert tls.Certificate, h http.Handler) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &hits
}

func whoamiHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(Whoami{Tenant: "acme", KeyID: "key-1", Role: "admin"})
	})
}

func TestCAHashPinning(t *testing.T) {
	t.Parallel()
	ca1, ca2 := newTestCA(t, "platform CA 1"), newTestCA(t, "platform CA 2")
	caFile := func(ca *testCA) string {
		p := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(p, ca.pem(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name      string
		withCA    bool // the server presents its CA in the chain
		wrongName bool
		opts      []Option
		wantErr   string // "" means success
	}{
		{name: "pinned CA", withCA: true, opts: []Option{WithCAHash(CAHash(ca1.cert))}},
		{name: "pinned CA upper-case hex", withCA: true, opts: []Option{WithCAHash("sha256:" + strings.ToUpper(CAHash(ca1.cert)[7:]))}},
		{name: "another CA pinned", withCA: true, opts: []Option{WithCAHash(CAHash(ca2.cert))}, wantErr: "does not contain the pinned CA"},
		{name: "CA not presented", withCA: false, opts: []Option{WithCAHash(CAHash(ca1.cert))}, wantErr: "does not contain the pinned CA"},
		{name: "wrong host name", withCA: true, wrongName: true, opts: []Option{WithCAHash(CAHash(ca1.cert))}, wantErr: "pinned CA"},
		{name: "CA file", withCA: false, opts: []Option{WithCAFile(caFile(ca1))}},
		{name: "CA file of another CA", withCA: true, opts: []Option{WithCAFile(caFile(ca2))}, wantErr: "certificate signed by unknown authority"},
		{name: "CA file and its hash", withCA: false, opts: []Option{WithCAFile(caFile(ca1)), WithCAHash(CAHash(ca1.cert))}},
		{name: "CA file and another hash", withCA: true, opts: []Option{WithCAFile(caFile(ca1)), WithCAHash(CAHash(ca2.cert))}, wantErr: "does not contain the pinned CA"},
		{name: "system roots", withCA: true, wantErr: "certificate signed by unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, hits := tlsServer(t, ca1.serverCert(t, tt.withCA, tt.wrongName), whoamiHandler())
			c, err := New(srv.URL, "tgk_key-1_secret", tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			who, err := c.Whoami(context.Background())
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Whoami: %v", err)
				}
				if who.Tenant != "acme" {
					t.Fatalf("tenant %q", who.Tenant)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if n := hits.Load(); n != 0 {
				t.Fatalf("the refused server got %d requests (and so the API key)", n)
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		url  string
		opts []Option
		want string
	}{
		{"ftp://x", nil, "scheme"},
		{"https://", nil, "no host"},
		{"https://u:p@x", nil, "credentials"},
		{"https://x/api", nil, "path"},
		{"http://127.0.0.1:8000", []Option{WithCAHash("sha256:" + strings.Repeat("00", 32))}, "plain http"},
		{"https://x", []Option{WithCAHash("md5:00")}, "want sha256"},
		{"https://x", []Option{WithCAHash("sha256:00")}, "want sha256"},
		{"https://x", []Option{WithCAFile("/nonexistent/ca.pem")}, "read CA file"},
	} {
		if _, err := New(tt.url, "k", tt.opts...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%q) err = %v, want %q", tt.url, err, tt.want)
		}
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		handler http.HandlerFunc
		check   func(t *testing.T, err error)
	}{
		{
			name: "API error",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				w.Write([]byte(`{"error":{"code":"NOT_FOUND","message":"fleet x not found","request_id":"req-1"}}`))
			},
			check: func(t *testing.T, err error) {
				var ae *wire.APIError
				if !errors.As(err, &ae) || ae.Code != wire.CodeNotFound || ae.Message != "fleet x not found" || ae.RequestID != "req-1" {
					t.Fatalf("err = %#v", err)
				}
			},
		},
		{
			name: "API error, request id from the header",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json; charset=utf-8")
				w.Header().Set("X-Request-Id", "req-h")
				w.WriteHeader(http.StatusForbidden)
				w.Write([]byte(`{"error":{"code":"FORBIDDEN","message":"role viewer"}}`))
			},
			check: func(t *testing.T, err error) {
				var ae *wire.APIError
				if !errors.As(err, &ae) || ae.RequestID != "req-h" {
					t.Fatalf("err = %#v", err)
				}
			},
		},
		{
			name: "HTML from a proxy",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(http.StatusBadGateway)
				w.Write([]byte("<html>\n<body>Bad gateway</body></html>"))
			},
			check: func(t *testing.T, err error) {
				var he *HTTPError
				if !errors.As(err, &he) || he.StatusCode != 502 {
					t.Fatalf("err = %#v", err)
				}
				if got, want := err.Error(), `HTTP 502 Bad Gateway: unexpected response (text/html): "<html> <body>Bad gateway</body></html>"`; got != want {
					t.Fatalf("err = %q, want %q", got, want)
				}
			},
		},
		{
			name: "empty error body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusServiceUnavailable)
			},
			check: func(t *testing.T, err error) {
				if err == nil || err.Error() != "HTTP 503 Service Unavailable: unexpected response" {
					t.Fatalf("err = %v", err)
				}
			},
		},
		{
			name: "JSON error body that is not the API's",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusInternalServerError)
				w.Write([]byte(`{"message":"oops"}`))
			},
			check: func(t *testing.T, err error) {
				var he *HTTPError
				if !errors.As(err, &he) || he.StatusCode != 500 {
					t.Fatalf("err = %#v", err)
				}
			},
		},
		{
			name: "success that is not JSON",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				w.Write([]byte("hello"))
			},
			check: func(t *testing.T, err error) {
				var he *HTTPError
				if !errors.As(err, &he) || he.StatusCode != 200 {
					t.Fatalf("err = %#v", err)
				}
			},
		},
		{
			name: "redirect is not followed",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://elsewhere.invalid/", http.StatusFound)
			},
			check: func(t *testing.T, err error) {
				var he *HTTPError
				if !errors.As(err, &he) || he.StatusCode != http.StatusFound {
					t.Fatalf("err = %#v", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			c, err := New(srv.URL, "tgk_key-1_secret")
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.GetFleet(context.Background(), "x")
			tt.check(t, err)
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Fatalf("error shows the API key: %v", err)
			}
		})
	}
}

func TestRequestShape(t *testing.T) {
	t.Parallel()
	type seen struct{ method, path, query, auth, ua, ct, body string }
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		if r.Body != nil {
			buf := make([]byte, 1024)
			n, _ := r.Body.Read(buf)
			b.Write(buf[:n])
		}
		got <- seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("User-Agent"), r.Header.Get("Content-Type"), b.String()}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`[]`))
	}))
	defer srv.Close()
	c, err := New(srv.URL+"/", "tgk_key-1_s", WithUserAgent("tgctl/1.0"))
	if err != nil {
		t.Fatal(err)
	}
	online := true
	if _, err := c.ListDevices(context.Background(), DeviceFilter{Fleet: "edge/1", Online: &online, Labels: []string{"a=b", "c=d"}}); err != nil {
		t.Fatal(err)
	}
	s := <-got
	if s.method != "GET" || s.path != "/api/v1/devices" || s.query != "fleet=edge%2F1&label=a%3Db&label=c%3Dd&online=true" ||
		s.auth != "Bearer tgk_key-1_s" || s.ua != "tgctl/1.0" || s.ct != "" {
		t.Fatalf("request = %+v", s)
	}
	// A path segment cannot change the route.
	c.GetFleet(context.Background(), "../operators")
	if s := <-got; s.path != "/api/v1/fleets/..%2Foperators" {
		t.Fatalf("path = %q", s.path)
	}
	c.UpdateDevice(context.Background(), "dev-1", DeviceUpdate{Labels: map[string]string{}})
	if s := <-got; s.method != "PATCH" || s.ct != "application/json" || s.body != `{"labels":{}}` {
		t.Fatalf("request = %+v", s)
	}
}

func TestWalkAudit(t *testing.T) {
	t.Parallel()
	var entries []audit.Entry
	var prev *audit.Entry
	for i := 0; i < 7; i++ {
		e, err := audit.Next(prev, audit.Entry{Tenant: "acme", Time: time.Unix(int64(1000+i), 0), Actor: "key-1", Action: "fleet.create"})
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
		prev = &e
	}
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		after, _ := strconv.Atoi(r.URL.Query().Get("after"))
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		page := AuditPage{Entries: []audit.Entry{}, NextAfter: uint64(after)}
		for _, e := range entries {
			if e.Seq > uint64(after) && len(page.Entries) < limit {
				page.Entries = append(page.Entries, e)
				page.NextAfter = e.Seq
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(page)
	}))
	defer srv.Close()
	c, _ := New(srv.URL, "k")
	v, _ := audit.NewVerifier(audit.VerifyOptions{})
	if err := c.WalkAudit(context.Background(), 0, 3, v.Add); err != nil {
		t.Fatal(err)
	}
	rep, err := v.Finish()
	if err != nil || rep.Entries != 7 {
		t.Fatalf("report %+v, %v", rep, err)
	}
	if n := requests.Load(); n != 4 { // 3+3+1, then an empty page
		t.Fatalf("%d requests, want 4", n)
	}
}
