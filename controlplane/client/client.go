package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// DefaultTimeout bounds one request (connect, TLS, body) unless WithTimeout
// says otherwise.
const DefaultTimeout = 30 * time.Second

// maxResponse bounds how much of a response body is read (the API's bodies
// are far smaller; an audit page of 1,000 entries is well under this).
const maxResponse = 32 << 20

// Client calls the operator API of one control plane with one API key. It is
// safe for concurrent use.
type Client struct {
	base      *url.URL // scheme://host[:port], no trailing slash
	apiKey    string
	userAgent string
	http      *http.Client
}

type config struct {
	caPEM     []byte
	caFile    string
	caHash    string
	timeout   time.Duration
	userAgent string
	transport http.RoundTripper
}

// Option configures New.
type Option func(*config)

// WithCAFile trusts only the CA certificates in the PEM file at path.
func WithCAFile(path string) Option { return func(c *config) { c.caFile = path } }

// WithCAPEM trusts only the CA certificates in pem.
func WithCAPEM(pem []byte) Option { return func(c *config) { c.caPEM = pem } }

// WithCAHash pins the platform CA: "sha256:<64 hex digits>" of its DER.
func WithCAHash(hash string) Option { return func(c *config) { c.caHash = hash } }

// WithTimeout bounds each request; 0 means no bound.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithUserAgent sets the User-Agent header, e.g. "tgctl/1.2.3".
func WithUserAgent(ua string) Option { return func(c *config) { c.userAgent = ua } }

// WithTransport replaces the HTTP transport (tests). The TLS options are
// then ignored: the transport decides what it trusts.
func WithTransport(rt http.RoundTripper) Option { return func(c *config) { c.transport = rt } }

// New returns a client for the control plane at baseURL (http:// or
// https://, host and optional port; a path is not allowed) using apiKey as
// the bearer credential. apiKey may be empty for the routes that need none.
func New(baseURL, apiKey string, opts ...Option) (*Client, error) {
	cfg := config{timeout: DefaultTimeout, userAgent: "tgctl"}
	for _, o := range opts {
		o(&cfg)
	}
	u, err := ParseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(apiKey, "\r\n") {
		return nil, errors.New("API key contains a line break")
	}
	rt := cfg.transport
	if rt == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = http.ProxyFromEnvironment
		tlsCfg, err := tlsConfig(u, cfg)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = tlsCfg
		rt = tr
	}
	return &Client{
		base:      u,
		apiKey:    apiKey,
		userAgent: cfg.userAgent,
		http: &http.Client{
			Transport: rt,
			Timeout:   cfg.timeout,
			// Never follow a redirect: it could carry the bearer key elsewhere,
			// and the API does not redirect.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// ParseBaseURL checks a control-plane URL: http or https, a host, no path
// beyond "/", no query, no credentials. It returns it without a trailing
// slash.
func ParseBaseURL(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("server URL: %w", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("server URL %q: scheme must be http or https", s)
	case u.Host == "":
		return nil, fmt.Errorf("server URL %q: no host", s)
	case u.User != nil:
		return nil, fmt.Errorf("server URL %q: must not contain credentials", s)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return nil, fmt.Errorf("server URL %q: must not have a path or query (want scheme://host[:port])", s)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// BaseURL returns the server URL the client talks to.
func (c *Client) BaseURL() string { return c.base.String() }

// ParseCAHash parses "sha256:<64 hex digits>" (case-insensitive hex).
func ParseCAHash(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	hexPart, ok := strings.CutPrefix(strings.TrimSpace(s), "sha256:")
	if !ok {
		return h, fmt.Errorf("CA hash %q: want sha256:<64 hex digits>", s)
	}
	b, err := hex.DecodeString(hexPart)
	if err != nil || len(b) != sha256.Size {
		return h, fmt.Errorf("CA hash %q: want sha256:<64 hex digits>", s)
	}
	copy(h[:], b)
	return h, nil
}

// CAHash returns "sha256:<hex>" of a certificate's DER: the form the control
// plane prints and WithCAHash takes.
func CAHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func tlsConfig(u *url.URL, cfg config) (*tls.Config, error) {
	hasCA := cfg.caFile != "" || len(cfg.caPEM) > 0
	if u.Scheme != "https" {
		if hasCA || cfg.caHash != "" {
			return nil, fmt.Errorf("server URL %s is plain http: a CA file or CA hash needs https", u)
		}
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
	var roots *x509.CertPool
	if hasCA {
		pemBytes := cfg.caPEM
		if cfg.caFile != "" {
			b, err := os.ReadFile(cfg.caFile)
			if err != nil {
				return nil, fmt.Errorf("read CA file: %w", err)
			}
			pemBytes = b
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", cfg.caFile)
		}
		tc.RootCAs = roots
	}
	if cfg.caHash == "" {
		return tc, nil
	}
	pin, err := ParseCAHash(cfg.caHash)
	if err != nil {
		return nil, err
	}
	// Go's own verification would use the system roots; pinning does its
	// own, below, with the same checks and only the pinned CA as root.
	tc.InsecureSkipVerify = true
	// The name comes from the URL, not the ConnectionState: for an IP
	// address no SNI is sent and cs.ServerName is empty.
	host := u.Hostname()
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		return verifyPinned(cs.PeerCertificates, host, pin, roots)
	}
	return tc, nil
}

// verifyPinned verifies the server chain against the CA whose DER hashes to
// pin (taken from the presented chain), or against roots when those are
// given, in which case the verified chain must also contain the pinned CA.
func verifyPinned(certs []*x509.Certificate, host string, pin [sha256.Size]byte, roots *x509.CertPool) error {
	if len(certs) == 0 {
		return errors.New("tls: server presented no certificate")
	}
	isPinned := func(c *x509.Certificate) bool { return sha256.Sum256(c.Raw) == pin }
	pinnedRoots := roots
	intermediates := x509.NewCertPool()
	found := false
	for _, c := range certs[1:] {
		if isPinned(c) {
			found = true
			if roots == nil {
				if pinnedRoots == nil {
					pinnedRoots = x509.NewCertPool()
				}
				pinnedRoots.AddCert(c)
				continue
			}
		}
		intermediates.AddCert(c)
	}
	if !found && roots == nil {
		return fmt.Errorf("tls: the server's certificate chain does not contain the pinned CA sha256:%s (another control plane, or it does not send its CA)", hex.EncodeToString(pin[:]))
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{
		DNSName:       host,
		Roots:         pinnedRoots,
		Intermediates: intermediates,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("tls: server certificate does not verify against the pinned CA: %w", err)
	}
	for _, chain := range chains {
		for _, c := range chain {
			if isPinned(c) {
				return nil
			}
		}
	}
	return fmt.Errorf("tls: the server's verified chain does not contain the pinned CA sha256:%s", hex.EncodeToString(pin[:]))
}

// HTTPError is an error response whose body is not the API's JSON error: a
// proxy's page, an empty body, a server that is not a control plane.
type HTTPError struct {
	StatusCode  int
	Status      string // "502 Bad Gateway"
	ContentType string
	Snippet     string // the start of the body, printable runes only
	RequestID   string // from X-Request-Id, if any
}

func (e *HTTPError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP %s: unexpected response", e.Status)
	if e.ContentType != "" {
		fmt.Fprintf(&b, " (%s)", e.ContentType)
	}
	if e.Snippet != "" {
		fmt.Fprintf(&b, ": %q", e.Snippet)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " (request %s)", e.RequestID)
	}
	return b.String()
}

// do sends one request. in, if not nil, is sent as JSON; a 2xx response body
// is decoded into out if out is not nil.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	u := *c.base
	// path has its segments escaped already (seg): keep them so, or an id
	// holding "/" would change the route.
	u.RawPath = path
	u.Path, _ = url.PathUnescape(path)
	u.RawQuery = query.Encode()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if len(data) > maxResponse {
		return fmt.Errorf("%s %s: response larger than %d bytes", method, path, maxResponse)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeError(resp, data)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if !isJSON(resp.Header.Get("Content-Type")) {
		return &HTTPError{StatusCode: resp.StatusCode, Status: resp.Status, ContentType: resp.Header.Get("Content-Type"),
			Snippet: snippet(data), RequestID: resp.Header.Get("X-Request-Id")}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

func decodeError(resp *http.Response, data []byte) error {
	rid := resp.Header.Get("X-Request-Id")
	if isJSON(resp.Header.Get("Content-Type")) {
		var eb wire.ErrorBody
		if err := json.Unmarshal(data, &eb); err == nil && eb.Error.Code != "" {
			ae := eb.Error
			if ae.RequestID == "" {
				ae.RequestID = rid
			}
			return &ae
		}
	}
	return &HTTPError{StatusCode: resp.StatusCode, Status: resp.Status, ContentType: resp.Header.Get("Content-Type"),
		Snippet: snippet(data), RequestID: rid}
}

func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// snippet returns the start of a body for an error message: one line,
// printable, at most 120 runes.
func snippet(b []byte) string {
	const max = 120
	s := strings.Join(strings.Fields(string(b)), " ")
	var out []rune
	for _, r := range s {
		if len(out) == max {
			return string(out) + "…"
		}
		if r < 0x20 || r == 0x7f || r == '\uFFFD' {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}
