package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/tensorguard/tensorguardflow/controlplane/controlplanetest"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/policybundle"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// pushPolicy pushes a one-module policy to fleet through the operator API.
func pushPolicy(t *testing.T, h *controlplanetest.Harness, fleet, allow string) map[string]any {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"files": map[string]string{
		"install.rego": "package tensorguard.install\n\nallow := " + allow + "\n"}})
	req, _ := http.NewRequest(http.MethodPost, h.BaseURL+"/api/v1/fleets/"+fleet+"/policy", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+h.AdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient(h, nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(raw, &out) != nil {
		t.Fatalf("policy push: %d %s", resp.StatusCode, raw)
	}
	return out
}

func getRaw(t *testing.T, c *http.Client, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestDevicePolicy: a device fetches its fleet's signed bundle and the
// tenant's verification key over mTLS; the bundle verifies under the key
// for its own fleet; If-None-Match saves the download; nothing is served
// before a push, to a device of another fleet's bundle, or without a
// device certificate. On both database backends.
func TestDevicePolicy(t *testing.T) {
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			h := controlplanetest.Start(t, backends(t)[name](t)...)
			fleet := h.CreateFleet(t, "edge", store.FleetPolicy{AllowNoTPM: true})
			other := h.CreateFleet(t, "other", store.FleetPolicy{AllowNoTPM: true})
			dev, dc := noTPMDevice(t, h, fleet.ID)
			_, oc := noTPMDevice(t, h, other.ID)
			policyURL, keyURL := h.BaseURL+wire.PathDevicePolicy, h.BaseURL+wire.PathDevicePolicyKey

			for _, u := range []string{policyURL, keyURL} {
				if r := mustDo(t, dc, http.MethodGet, u, nil); r.status != http.StatusNotFound || r.errorCode(t) != wire.CodeNotFound {
					t.Errorf("before any push %s: %d %s", u, r.status, r.body)
				}
			}
			pushPolicy(t, h, "edge", "false")
			pushed := pushPolicy(t, h, fleet.ID, "true")

			key := decodeInto[wire.PolicyKey](t, mustDo(t, dc, http.MethodGet, keyURL, nil), http.StatusOK)
			if key.Algorithm != "ES256" || key.KeyID != pushed["key_id"] {
				t.Errorf("key = %+v, pushed %v", key, pushed)
			}
			resp, raw := getRaw(t, dc, policyURL, nil)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != wire.PolicyBundleContentType ||
				resp.Header.Get(wire.HeaderPolicyRevision) != "2" || resp.Header.Get(wire.HeaderPolicyKeyID) != key.KeyID {
				t.Fatalf("bundle: %d %v", resp.StatusCode, resp.Header)
			}
			b, err := policybundle.Verify(raw, policybundle.VerificationKey{ID: key.KeyID, Algorithm: key.Algorithm, PublicKeyPEM: key.PublicKeyPEM})
			if err != nil {
				t.Fatalf("served bundle does not verify: %v", err)
			}
			if b.Revision != 2 || b.Fleet != fleet.ID || b.Tenant != h.Tenant || `"`+b.SHA256+`"` != resp.Header.Get("ETag") || b.SHA256 != pushed["sha256"] {
				t.Errorf("bundle revision %d fleet %s sha %s, ETag %s", b.Revision, b.Fleet, b.SHA256, resp.Header.Get("ETag"))
			}
			resp, raw = getRaw(t, dc, policyURL, map[string]string{"If-None-Match": resp.Header.Get("ETag")})
			if resp.StatusCode != http.StatusNotModified || len(raw) != 0 {
				t.Errorf("If-None-Match: %d, %d bytes", resp.StatusCode, len(raw))
			}
			// The other fleet's device has no bundle; the key is the
			// tenant's, the same.
			if r := mustDo(t, oc, http.MethodGet, policyURL, nil); r.status != http.StatusNotFound {
				t.Errorf("other fleet: %d %s", r.status, r.body)
			}
			if k2 := decodeInto[wire.PolicyKey](t, mustDo(t, oc, http.MethodGet, keyURL, nil), http.StatusOK); k2 != key {
				t.Errorf("other fleet's key %+v", k2)
			}
			// No device certificate: 401; a revoked device: refused.
			if r := mustDo(t, httpClient(h, nil), http.MethodGet, policyURL, nil); r.status != http.StatusUnauthorized {
				t.Errorf("anonymous: %d", r.status)
			}
			if r := mustDo(t, dc, http.MethodPost, policyURL, nil); r.status != http.StatusMethodNotAllowed {
				t.Errorf("POST: %d", r.status)
			}
			h.RevokeDevice(t, dev)
			dc.CloseIdleConnections()
			if r, err := do(t, dc, http.MethodGet, policyURL, nil); err == nil && r.status == http.StatusOK {
				t.Errorf("revoked device got the bundle")
			}
		})
	}
}
