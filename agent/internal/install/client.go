package install

import (
	"bytes"
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

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// Device routes of the control plane this package uses (device mTLS).
const (
	PathJobs      = "/api/v1/device/jobs"
	PathKeyGrants = "/api/v1/device/key-grants"
	PathPackages  = "/api/v1/device/packages/"
	PathSelf      = "/api/v1/device/self"
)

// maxJSONResponse bounds a JSON answer (a job list of a few hundred jobs,
// each with its publisher keys, fits easily).
const maxJSONResponse = 4 << 20

// APIError is a non-2xx answer of the control plane.
type APIError struct {
	Status int
	wire.APIError
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("control plane answered %d %s: %s", e.Status, e.Code, msg)
}

// temporary reports whether the same request may succeed later: server
// errors, rate limits and transport failures, not refusals.
func temporary(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var api *APIError
	if errors.As(err, &api) {
		return api.Status >= 500 || api.Status == http.StatusTooManyRequests || api.Status == http.StatusRequestTimeout
	}
	return true
}

// Client calls the device routes of one control plane over mTLS. The TLS
// config carries the device certificate (GetClientCertificate, asked at
// every handshake so a renewal takes effect) and the control plane's CA.
type Client struct {
	base *url.URL
	http *http.Client
	// Timeout bounds each JSON request; StallTimeout is how long a
	// download may go without receiving a byte before it is cut.
	Timeout      time.Duration
	StallTimeout time.Duration
}

// NewClient returns a Client for serverURL (https://host[:port]).
func NewClient(serverURL string, tlsConfig *tls.Config) (*Client, error) {
	u, err := url.Parse(serverURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("install: server url %q must be an https:// URL with a host", serverURL)
	}
	if tlsConfig == nil {
		return nil, errors.New("install: a TLS config with the device certificate is required")
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return &Client{
		base: u,
		http: &http.Client{
			Transport: &http.Transport{
				Proxy:                 http.ProxyFromEnvironment,
				DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
				TLSClientConfig:       tlsConfig.Clone(),
				TLSHandshakeTimeout:   10 * time.Second,
				ResponseHeaderTimeout: 30 * time.Second,
				IdleConnTimeout:       60 * time.Second,
				MaxIdleConns:          2,
			},
			// The API never redirects; following one could leave the
			// control plane.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		Timeout:      30 * time.Second,
		StallTimeout: 60 * time.Second,
	}, nil
}

// CloseIdleConnections drops kept-alive connections.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// Jobs lists the device's open jobs, oldest first (GET /api/v1/device/jobs,
// a bare JSON array).
func (c *Client) Jobs(ctx context.Context) ([]wire.Job, error) {
	var jobs []wire.Job
	if err := c.doJSON(ctx, http.MethodGet, PathJobs, nil, &jobs); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return jobs, nil
}

// Job fetches one job (GET /api/v1/device/jobs/{id}).
func (c *Client) Job(ctx context.Context, id string) (wire.Job, error) {
	var j wire.Job
	if err := c.doJSON(ctx, http.MethodGet, PathJobs+"/"+url.PathEscape(id), nil, &j); err != nil {
		return wire.Job{}, fmt.Errorf("fetch job %s: %w", id, err)
	}
	if j.ID != id {
		return wire.Job{}, fmt.Errorf("fetch job %s: the control plane answered job %q", id, j.ID)
	}
	return j, nil
}

// Attestation returns the device's own current attestation verdict, as the
// control plane holds it (GET /api/v1/device/self, its "attestation"
// field; nil when the control plane sends none).
func (c *Client) Attestation(ctx context.Context) (*wire.Verdict, error) {
	var self struct {
		Attestation *wire.Verdict `json:"attestation"`
	}
	if err := c.doJSON(ctx, http.MethodGet, PathSelf, nil, &self); err != nil {
		return nil, fmt.Errorf("own attestation verdict: %w", err)
	}
	return self.Attestation, nil
}

// KeyGrant asks for the package's key (POST /api/v1/device/key-grants).
func (c *Client) KeyGrant(ctx context.Context, req wire.KeyGrantRequest) (wire.KeyGrant, error) {
	var g wire.KeyGrant
	if err := c.doJSON(ctx, http.MethodPost, PathKeyGrants, req, &g); err != nil {
		return wire.KeyGrant{}, fmt.Errorf("key grant: %w", err)
	}
	if g.PackageID != req.PackageID || len(g.Grant) == 0 {
		return wire.KeyGrant{}, fmt.Errorf("key grant: answer is for package %q with %d bytes", g.PackageID, len(g.Grant))
	}
	return g, nil
}

// packageURL resolves a PackageRef URL against the server. Only paths on
// the same control plane are followed.
func (c *Client) packageURL(ref wire.PackageRef) (string, error) {
	p := ref.URL
	if p == "" {
		p = PathPackages + ref.ID
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(u.Path, "/") {
		return "", fmt.Errorf("package url %q is not a path on the control plane", ref.URL)
	}
	full := *c.base
	full.Path += u.Path
	full.RawPath = ""
	full.RawQuery = u.RawQuery
	return full.String(), nil
}

// get starts a GET of the package blob from offset (a Range request when
// offset > 0). The caller closes the body.
func (c *Client) get(ctx context.Context, rawURL string, offset int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent &&
		resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		defer resp.Body.Close()
		return nil, apiError(resp)
	}
	return resp, nil
}

func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	u := *c.base
	u.Path += path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return apiError(resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJSONResponse+1))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if len(data) > maxJSONResponse {
		return fmt.Errorf("response larger than %d bytes", maxJSONResponse)
	}
	// Answers may grow fields; the device keeps working with the ones it
	// knows (requests are strict on the server).
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

func apiError(resp *http.Response) error {
	e := &APIError{Status: resp.StatusCode}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb wire.ErrorBody
	if json.Unmarshal(data, &eb) == nil {
		e.APIError = eb.Error
	}
	return e
}
