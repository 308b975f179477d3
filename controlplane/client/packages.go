package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// The package registry's objects and routes (docs/api.md, "Packages and key
// grants").

// Publisher is a TGSP signer key the tenant trusts.
type Publisher struct {
	Name string `json:"name"`
	// KeyID is the tgsp key id (32 hex digits).
	KeyID        string    `json:"key_id"`
	PublicKeyPEM string    `json:"public_key_pem"`
	CreatedAt    time.Time `json:"created_at"`
}

// PublisherCreate is the body of POST /api/v1/publishers.
type PublisherCreate struct {
	Name         string `json:"name"`
	PublicKeyPEM string `json:"public_key_pem"`
}

// RecipientKey is the control plane's TGSP recipient key of the tenant.
type RecipientKey struct {
	KeyID        string `json:"key_id"`
	PublicKeyPEM string `json:"public_key_pem"`
}

// Package is a package in the tenant's registry.
type Package struct {
	// ID is the lowercase hex SHA-256 of the .tgsp file.
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	Version        string    `json:"version"`
	SignedID       string    `json:"signed_id"`
	Size           int64     `json:"size"`
	PublisherKeyID string    `json:"publisher_key_id"`
	ExpiresAt      time.Time `json:"expires_at"`
	CreatedAt      time.Time `json:"created_at"`
}

// PackageDetail is a package with its signed manifest and its attached
// documents (nil when absent).
type PackageDetail struct {
	Package
	Manifest json.RawMessage `json:"manifest"`
	DPCert   json.RawMessage `json:"dp_cert"`
	Evidence json.RawMessage `json:"evidence"`
}

// ListPublishers is GET /api/v1/publishers.
func (c *Client) ListPublishers(ctx context.Context) ([]Publisher, error) {
	var out []Publisher
	err := c.do(ctx, http.MethodGet, "/api/v1/publishers", nil, nil, &out)
	return out, err
}

// CreatePublisher is POST /api/v1/publishers.
func (c *Client) CreatePublisher(ctx context.Context, in PublisherCreate) (Publisher, error) {
	var out Publisher
	err := c.do(ctx, http.MethodPost, "/api/v1/publishers", nil, in, &out)
	return out, err
}

// GetPublisher is GET /api/v1/publishers/{publisher}: a name or a key id.
func (c *Client) GetPublisher(ctx context.Context, ref string) (Publisher, error) {
	var out Publisher
	err := c.do(ctx, http.MethodGet, "/api/v1/publishers/"+seg(ref), nil, nil, &out)
	return out, err
}

// DeletePublisher is DELETE /api/v1/publishers/{publisher}.
func (c *Client) DeletePublisher(ctx context.Context, ref string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/publishers/"+seg(ref), nil, nil, nil)
}

// PackageRecipient is GET /api/v1/packages/recipient.
func (c *Client) PackageRecipient(ctx context.Context) (RecipientKey, error) {
	var out RecipientKey
	err := c.do(ctx, http.MethodGet, "/api/v1/packages/recipient", nil, nil, &out)
	return out, err
}

// ListPackages is GET /api/v1/packages; name, if set, keeps its versions
// only.
func (c *Client) ListPackages(ctx context.Context, name string) ([]Package, error) {
	var q url.Values
	if name != "" {
		q = url.Values{"name": {name}}
	}
	var out []Package
	err := c.do(ctx, http.MethodGet, "/api/v1/packages", q, nil, &out)
	return out, err
}

// GetPackage is GET /api/v1/packages/{package}: an id or NAME@VERSION.
func (c *Client) GetPackage(ctx context.Context, ref string) (PackageDetail, error) {
	var out PackageDetail
	err := c.do(ctx, http.MethodGet, "/api/v1/packages/"+seg(ref), nil, nil, &out)
	return out, err
}

// DeletePackage is DELETE /api/v1/packages/{package}.
func (c *Client) DeletePackage(ctx context.Context, ref string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/packages/"+seg(ref), nil, nil, nil)
}

// transfer returns the client's HTTP client without its per-request
// timeout: a package transfer takes as long as its size needs, bounded by
// ctx (and by the server dropping a stalled peer).
func (c *Client) transfer() *http.Client {
	h := *c.http
	h.Timeout = 0
	return &h
}

// PushPackage is POST /api/v1/packages: it streams size bytes of body (a
// .tgsp file). created is false when the server already had the identical
// file.
func (c *Client) PushPackage(ctx context.Context, body io.Reader, size int64) (pkg Package, created bool, err error) {
	req, err := c.request(ctx, http.MethodPost, "/api/v1/packages", body)
	if err != nil {
		return Package{}, false, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Accept", "application/json")
	resp, err := c.transfer().Do(req)
	if err != nil {
		return Package{}, false, fmt.Errorf("POST /api/v1/packages: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return Package{}, false, fmt.Errorf("POST /api/v1/packages: read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return Package{}, false, decodeError(resp, data)
	}
	if err := json.Unmarshal(data, &pkg); err != nil {
		return Package{}, false, fmt.Errorf("POST /api/v1/packages: decode response: %w", err)
	}
	return pkg, resp.StatusCode == http.StatusCreated, nil
}

// DownloadPackage is GET /api/v1/packages/{package}/blob: it writes the
// .tgsp file to w and returns its size.
func (c *Client) DownloadPackage(ctx context.Context, ref string, w io.Writer) (int64, error) {
	path := "/api/v1/packages/" + seg(ref) + "/blob"
	req, err := c.request(ctx, http.MethodGet, path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.transfer().Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
		return 0, decodeError(resp, data)
	}
	n, err := io.Copy(w, resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("GET %s: %d of %d bytes", path, n, resp.ContentLength)
	}
	return n, err
}

// request builds an authenticated request for path (segments escaped).
func (c *Client) request(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	u := *c.base
	u.RawPath = path
	u.Path, _ = url.PathUnescape(path)
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("User-Agent", c.userAgent)
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	return req, nil
}
