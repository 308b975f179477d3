package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/audit"
)

// One method per operator route of docs/api.md, in its order. Path segments
// are escaped, so an id or name can never change the route.

func seg(s string) string { return url.PathEscape(s) }

// Health is GET /healthz: nil when the server answers {"status":"ok"}.
func (c *Client) Health(ctx context.Context) error {
	var out struct {
		Status string `json:"status"`
	}
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil, &out)
}

// Whoami is GET /api/v1/whoami.
func (c *Client) Whoami(ctx context.Context) (Whoami, error) {
	var out Whoami
	err := c.do(ctx, http.MethodGet, "/api/v1/whoami", nil, nil, &out)
	return out, err
}

// CA is GET /api/v1/ca.
func (c *Client) CA(ctx context.Context) (CAInfo, error) {
	var out CAInfo
	err := c.do(ctx, http.MethodGet, "/api/v1/ca", nil, nil, &out)
	return out, err
}

// ListOperators is GET /api/v1/operators.
func (c *Client) ListOperators(ctx context.Context) ([]Operator, error) {
	var out []Operator
	err := c.do(ctx, http.MethodGet, "/api/v1/operators", nil, nil, &out)
	return out, err
}

// CreateOperator is POST /api/v1/operators.
func (c *Client) CreateOperator(ctx context.Context, in OperatorCreate) (Operator, error) {
	var out Operator
	err := c.do(ctx, http.MethodPost, "/api/v1/operators", nil, in, &out)
	return out, err
}

// GetOperator is GET /api/v1/operators/{id}.
func (c *Client) GetOperator(ctx context.Context, id string) (Operator, error) {
	var out Operator
	err := c.do(ctx, http.MethodGet, "/api/v1/operators/"+seg(id), nil, nil, &out)
	return out, err
}

// UpdateOperator is PATCH /api/v1/operators/{id}.
func (c *Client) UpdateOperator(ctx context.Context, id string, in OperatorUpdate) (Operator, error) {
	var out Operator
	err := c.do(ctx, http.MethodPatch, "/api/v1/operators/"+seg(id), nil, in, &out)
	return out, err
}

// DeleteOperator is DELETE /api/v1/operators/{id}.
func (c *Client) DeleteOperator(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/operators/"+seg(id), nil, nil, nil)
}

// ListAPIKeys is GET /api/v1/api-keys.
func (c *Client) ListAPIKeys(ctx context.Context) ([]APIKey, error) {
	var out []APIKey
	err := c.do(ctx, http.MethodGet, "/api/v1/api-keys", nil, nil, &out)
	return out, err
}

// CreateAPIKey is POST /api/v1/api-keys; the result holds the key, which
// the server never shows again.
func (c *Client) CreateAPIKey(ctx context.Context, in APIKeyCreate) (CreatedAPIKey, error) {
	var out CreatedAPIKey
	err := c.do(ctx, http.MethodPost, "/api/v1/api-keys", nil, in, &out)
	return out, err
}

// RevokeAPIKey is DELETE /api/v1/api-keys/{id}.
func (c *Client) RevokeAPIKey(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/api-keys/"+seg(id), nil, nil, nil)
}

// ListFleets is GET /api/v1/fleets.
func (c *Client) ListFleets(ctx context.Context) ([]Fleet, error) {
	var out []Fleet
	err := c.do(ctx, http.MethodGet, "/api/v1/fleets", nil, nil, &out)
	return out, err
}

// CreateFleet is POST /api/v1/fleets.
func (c *Client) CreateFleet(ctx context.Context, in FleetCreate) (Fleet, error) {
	var out Fleet
	err := c.do(ctx, http.MethodPost, "/api/v1/fleets", nil, in, &out)
	return out, err
}

// GetFleet is GET /api/v1/fleets/{fleet}; fleet is an id or a name.
func (c *Client) GetFleet(ctx context.Context, fleet string) (Fleet, error) {
	var out Fleet
	err := c.do(ctx, http.MethodGet, "/api/v1/fleets/"+seg(fleet), nil, nil, &out)
	return out, err
}

// UpdateFleet is PATCH /api/v1/fleets/{fleet}.
func (c *Client) UpdateFleet(ctx context.Context, fleet string, in FleetUpdate) (Fleet, error) {
	var out Fleet
	err := c.do(ctx, http.MethodPatch, "/api/v1/fleets/"+seg(fleet), nil, in, &out)
	return out, err
}

// DeleteFleet is DELETE /api/v1/fleets/{fleet}.
func (c *Client) DeleteFleet(ctx context.Context, fleet string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/fleets/"+seg(fleet), nil, nil, nil)
}

// CreateToken is POST /api/v1/fleets/{fleet}/enrollment-tokens; ttl is a
// duration ("1h", "7d"), empty for the server's default.
func (c *Client) CreateToken(ctx context.Context, fleet, ttl string) (CreatedToken, error) {
	in := struct {
		TTL string `json:"ttl,omitempty"`
	}{ttl}
	var out CreatedToken
	err := c.do(ctx, http.MethodPost, "/api/v1/fleets/"+seg(fleet)+"/enrollment-tokens", nil, in, &out)
	return out, err
}

// ListTokens is GET /api/v1/fleets/{fleet}/enrollment-tokens.
func (c *Client) ListTokens(ctx context.Context, fleet string) ([]EnrollmentToken, error) {
	var out []EnrollmentToken
	err := c.do(ctx, http.MethodGet, "/api/v1/fleets/"+seg(fleet)+"/enrollment-tokens", nil, nil, &out)
	return out, err
}

// DeleteToken is DELETE /api/v1/enrollment-tokens/{id}.
func (c *Client) DeleteToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/enrollment-tokens/"+seg(id), nil, nil, nil)
}

// ListDevices is GET /api/v1/devices.
func (c *Client) ListDevices(ctx context.Context, f DeviceFilter) ([]Device, error) {
	q := url.Values{}
	if f.Fleet != "" {
		q.Set("fleet", f.Fleet)
	}
	if f.Online != nil {
		q.Set("online", strconv.FormatBool(*f.Online))
	}
	for _, l := range f.Labels {
		q.Add("label", l)
	}
	var out []Device
	err := c.do(ctx, http.MethodGet, "/api/v1/devices", q, nil, &out)
	return out, err
}

// GetDevice is GET /api/v1/devices/{id}.
func (c *Client) GetDevice(ctx context.Context, id string) (Device, error) {
	var out Device
	err := c.do(ctx, http.MethodGet, "/api/v1/devices/"+seg(id), nil, nil, &out)
	return out, err
}

// UpdateDevice is PATCH /api/v1/devices/{id}.
func (c *Client) UpdateDevice(ctx context.Context, id string, in DeviceUpdate) (Device, error) {
	var out Device
	err := c.do(ctx, http.MethodPatch, "/api/v1/devices/"+seg(id), nil, in, &out)
	return out, err
}

// DeleteDevice is DELETE /api/v1/devices/{id}.
func (c *Client) DeleteDevice(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/devices/"+seg(id), nil, nil, nil)
}

// RevokeDevice is POST /api/v1/devices/{id}/revoke; it returns the revoked
// device.
func (c *Client) RevokeDevice(ctx context.Context, id string) (Device, error) {
	var out Device
	err := c.do(ctx, http.MethodPost, "/api/v1/devices/"+seg(id)+"/revoke", nil, struct{}{}, &out)
	return out, err
}

// ListAudit is GET /api/v1/audit: entries with seq > after, at most limit
// of them (0: the server's default).
func (c *Client) ListAudit(ctx context.Context, after uint64, limit int) (AuditPage, error) {
	q := url.Values{}
	q.Set("after", strconv.FormatUint(after, 10))
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out AuditPage
	err := c.do(ctx, http.MethodGet, "/api/v1/audit", q, nil, &out)
	return out, err
}

// MQTTCredentials is POST /api/v1/mqtt/credentials with a PEM CSR.
func (c *Client) MQTTCredentials(ctx context.Context, csrPEM []byte) (MQTTCredentials, error) {
	in := struct {
		CSR string `json:"csr"`
	}{string(csrPEM)}
	var out MQTTCredentials
	err := c.do(ctx, http.MethodPost, "/api/v1/mqtt/credentials", nil, in, &out)
	return out, err
}

// WalkAudit calls fn with every audit entry with seq > after, in the order
// the server returns them, fetching pages of pageSize (0: the server's
// default) until a page comes back empty. It stops at fn's first error and
// returns it.
func (c *Client) WalkAudit(ctx context.Context, after uint64, pageSize int, fn func(audit.Entry) error) error {
	for {
		page, err := c.ListAudit(ctx, after, pageSize)
		if err != nil {
			return err
		}
		if len(page.Entries) == 0 {
			return nil
		}
		for _, e := range page.Entries {
			if err := fn(e); err != nil {
				return err
			}
		}
		next := page.NextAfter
		if next == 0 {
			next = page.Entries[len(page.Entries)-1].Seq
		}
		if next <= after {
			return fmt.Errorf("GET /api/v1/audit: paging does not advance (after=%d, next_after=%d)", after, next)
		}
		after = next
	}
}

// AttestDevice is POST /api/v1/devices/{id}/attest: the control plane
// challenges the device now; the verdict follows on MQTT.
func (c *Client) AttestDevice(ctx context.Context, id string) (AttestChallengeSent, error) {
	var out AttestChallengeSent
	err := c.do(ctx, http.MethodPost, "/api/v1/devices/"+seg(id)+"/attest", nil, nil, &out)
	return out, err
}

// ListAttestations is GET /api/v1/devices/{id}/attestations: the device's
// attestation verdicts before before (zero: the newest), newest first, at
// most limit of them (0: the server's default).
func (c *Client) ListAttestations(ctx context.Context, id string, before time.Time, limit int) ([]AttestationRecord, error) {
	q := url.Values{}
	if !before.IsZero() {
		q.Set("before", before.UTC().Format(time.RFC3339Nano))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out []AttestationRecord
	err := c.do(ctx, http.MethodGet, "/api/v1/devices/"+seg(id)+"/attestations", q, nil, &out)
	return out, err
}
