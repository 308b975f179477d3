package policy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/policybundle"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// HTTPFetcher is the Fetcher over the control plane's device routes, with
// the device's mTLS identity.
type HTTPFetcher struct {
	base    *url.URL
	http    *http.Client
	timeout time.Duration
}

var _ Fetcher = (*HTTPFetcher)(nil)

// NewHTTPFetcher returns a Fetcher for serverURL (https://host[:port])
// whose TLS config carries the device certificate (GetClientCertificate)
// and the control plane's CA.
func NewHTTPFetcher(serverURL string, tlsConfig *tls.Config) (*HTTPFetcher, error) {
	u, err := url.Parse(serverURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("policy: server url %q must be an https:// URL with a host", serverURL)
	}
	if tlsConfig == nil {
		return nil, errors.New("policy: a TLS config with the device certificate is required")
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return &HTTPFetcher{base: u, timeout: 60 * time.Second, http: &http.Client{
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:     tlsConfig.Clone(),
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     60 * time.Second,
			MaxIdleConns:        1,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

// CloseIdleConnections drops kept-alive connections (after a certificate
// renewal).
func (f *HTTPFetcher) CloseIdleConnections() { f.http.CloseIdleConnections() }

func (f *HTTPFetcher) get(ctx context.Context, path string, hdr map[string]string, limit int64) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.base.String()+path, nil)
	if err != nil {
		return 0, nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := f.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return 0, nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if int64(len(body)) > limit {
		return 0, nil, fmt.Errorf("GET %s: answer larger than %d bytes", path, limit)
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusNotModified:
		return resp.StatusCode, body, nil
	case http.StatusNotFound:
		return 0, nil, ErrNoPolicy
	}
	var e wire.ErrorBody
	if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
		return 0, nil, fmt.Errorf("GET %s: %d %s: %s", path, resp.StatusCode, e.Error.Code, e.Error.Message)
	}
	return 0, nil, fmt.Errorf("GET %s: HTTP %d", path, resp.StatusCode)
}

// PolicyKey implements Fetcher.
func (f *HTTPFetcher) PolicyKey(ctx context.Context) (wire.PolicyKey, error) {
	_, body, err := f.get(ctx, wire.PathDevicePolicyKey, nil, 64<<10)
	if err != nil {
		return wire.PolicyKey{}, err
	}
	var k wire.PolicyKey
	if err := json.Unmarshal(body, &k); err != nil {
		return wire.PolicyKey{}, fmt.Errorf("policy key: %w", err)
	}
	return k, nil
}

// PolicyBundle implements Fetcher.
func (f *HTTPFetcher) PolicyBundle(ctx context.Context, etag string) ([]byte, bool, error) {
	var hdr map[string]string
	if etag != "" {
		hdr = map[string]string{"If-None-Match": etag}
	}
	status, body, err := f.get(ctx, wire.PathDevicePolicy, hdr, policybundle.MaxBundleSize)
	if err != nil {
		return nil, false, err
	}
	return body, status == http.StatusNotModified, nil
}
