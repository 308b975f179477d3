package client

import (
	"context"
	"net/http"
	"time"
)

// Fleet policy bundles (docs/policy.md).

// PolicyPush is the body of POST /api/v1/fleets/{fleet}/policy: the
// bundle's sources, relative path → content.
type PolicyPush struct {
	Files map[string]string `json:"files"`
}

// PolicyRevision describes a fleet's signed policy bundle.
type PolicyRevision struct {
	FleetID   string    `json:"fleet_id"`
	Revision  int64     `json:"revision"`
	SHA256    string    `json:"sha256"`
	Size      int64     `json:"size"`
	KeyID     string    `json:"key_id"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}

// PolicyPushed is the answer of a push.
type PolicyPushed struct {
	PolicyRevision
	Files []string `json:"files"`
	Roots []string `json:"roots"`
}

// PushPolicy is POST /api/v1/fleets/{fleet}/policy.
func (c *Client) PushPolicy(ctx context.Context, fleet string, in PolicyPush) (PolicyPushed, error) {
	var out PolicyPushed
	err := c.do(ctx, http.MethodPost, "/api/v1/fleets/"+seg(fleet)+"/policy", nil, in, &out)
	return out, err
}

// GetPolicy is GET /api/v1/fleets/{fleet}/policy.
func (c *Client) GetPolicy(ctx context.Context, fleet string) (PolicyRevision, error) {
	var out PolicyRevision
	err := c.do(ctx, http.MethodGet, "/api/v1/fleets/"+seg(fleet)+"/policy", nil, nil, &out)
	return out, err
}
