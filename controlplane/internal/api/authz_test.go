package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// objects is one of each kind of object in tenant acme.
type objects struct {
	fleet    api.Fleet
	device   store.Device
	token    api.EnrollmentTokenCreated
	operator api.Operator
	key      api.APIKeyCreated
	// publisher and pkg: a pinned publisher and a pushed package.
	publisher api.Publisher
	pkg       api.Package
	// rollout: a rollout of pkg to fleet.
	rollout api.Rollout
}

func makeObjects(t *testing.T, c *client) objects {
	t.Helper()
	admin := c.env.AdminKey
	var o objects
	c.call("POST", "/api/v1/fleets", "/api/v1/fleets", admin, api.FleetCreate{Name: "edge"}, 201, &o.fleet)
	c.call("POST", "/api/v1/fleets/{fleet}/enrollment-tokens", "/api/v1/fleets/edge/enrollment-tokens", admin, nil, 201, &o.token)
	c.call("POST", "/api/v1/operators", "/api/v1/operators", admin, api.OperatorCreate{Name: "carol", Role: "operator"}, 201, &o.operator)
	c.call("POST", "/api/v1/api-keys", "/api/v1/api-keys", admin, api.APIKeyCreate{Name: "carol-ci", Role: "operator", OperatorID: o.operator.ID}, 201, &o.key)
	o.device = seedDevice(t, c.env.Store, "acme", o.fleet.ID, "ek-acme", map[string]string{"site": "berlin"})
	k := newKit(t, c, admin)
	c.call("POST", "/api/v1/publishers", "/api/v1/publishers", admin, k.publisherCreate("ml-team"), 201, &o.publisher)
	c.push(admin, k.pack("resnet", "1.0.0"), 201, &o.pkg)
	c.call("POST", "/api/v1/rollouts", "/api/v1/rollouts", admin, api.RolloutCreate{Package: o.pkg.ID, Fleet: o.fleet.ID}, 201, &o.rollout)
	return o
}

// path fills a route pattern with the ids of o.
func (o objects) path(pattern string) string {
	id := ""
	switch {
	case strings.HasPrefix(pattern, "/api/v1/operators/"):
		id = o.operator.ID
	case strings.HasPrefix(pattern, "/api/v1/api-keys/"):
		id = o.key.ID
	case strings.HasPrefix(pattern, "/api/v1/enrollment-tokens/"):
		id = o.token.ID
	case strings.HasPrefix(pattern, "/api/v1/devices/"):
		id = o.device.ID
	case strings.HasPrefix(pattern, "/api/v1/rollouts/"):
		id = o.rollout.ID
	}
	p := strings.ReplaceAll(pattern, "{fleet}", o.fleet.ID)
	p = strings.ReplaceAll(p, "{publisher}", o.publisher.Name)
	p = strings.ReplaceAll(p, "{package}", o.pkg.ID)
	return strings.ReplaceAll(p, "{id}", id)
}

// validBody is a body each route accepts, so that only the credential
// decides the answer.
func validBody(t *testing.T, method, pattern string) any {
	switch method + " " + pattern {
	case "POST /api/v1/operators":
		return api.OperatorCreate{Name: "mallory", Role: "admin"}
	case "PATCH /api/v1/operators/{id}":
		return map[string]any{"role": "admin"}
	case "POST /api/v1/api-keys":
		return api.APIKeyCreate{Name: "k", Role: "admin"}
	case "POST /api/v1/fleets":
		return api.FleetCreate{Name: "stolen"}
	case "PATCH /api/v1/fleets/{fleet}":
		return map[string]any{"policy": map[string]any{"allow_no_tpm": true}}
	case "POST /api/v1/fleets/{fleet}/enrollment-tokens", "POST /api/v1/devices/{id}/revoke":
		return map[string]any{}
	case "PATCH /api/v1/devices/{id}":
		return map[string]any{"name": "stolen"}
	case "POST /api/v1/mqtt/credentials":
		return api.MQTTCredentialsRequest{CSR: csrPEM(t, p256Key(t))}
	case "POST /api/v1/fleets/{fleet}/policy":
		return api.PolicyPush{Files: map[string]string{"install.rego": "package tensorguard.install\n\nallow := true\n"}}
	case "POST /api/v1/publishers":
		k, err := tgsp.GenerateSigner(nil)
		if err != nil {
			t.Fatal(err)
		}
		return api.PublisherCreate{Name: "stolen", PublicKeyPEM: string(k.Public().MarshalPEM())}
	case "POST /api/v1/rollouts/{id}/pause", "POST /api/v1/rollouts/{id}/abort", "POST /api/v1/rollouts/{id}/rollback":
		return api.RolloutAction{Reason: "a test"}
	case "POST /api/v1/rollouts":
		return api.RolloutCreate{Package: "resnet@1.0.0", Fleet: "edge"}
	case "POST /api/v1/packages":
		return []byte("a .tgsp file: the role check comes before the body is read")
	}
	return nil
}

func auditLen(t *testing.T, s *store.Store, tenant string) int {
	t.Helper()
	n := 0
	for _, err := range s.ListAudit(context.Background(), tenant, 0, 0) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

func TestUnauthenticated(t *testing.T) {
	t.Parallel()
	c := newClient(t, "")
	o := makeObjects(t, c)
	realID := strings.Split(c.env.AdminKey, "_")[1]
	for _, key := range []struct{ name, header string }{
		{"none", ""},
		{"garbage", "Bearer garbage"},
		{"unknown key", "Bearer tgk_key-aaaaaaaaaaaaaaaaaaaa_" + strings.Repeat("a", 52)},
		{"wrong secret", "Bearer tgk_" + realID + "_" + strings.Repeat("b", 52)},
		{"revoked", "Bearer " + o.key.Key},
		{"basic scheme", "Basic " + c.env.AdminKey},
	} {
		if key.name == "revoked" {
			c.call("DELETE", "/api/v1/api-keys/{id}", "/api/v1/api-keys/"+o.key.ID, c.env.AdminKey, nil, 204, nil)
		}
		for _, rt := range api.Routes() {
			if rt.Role == "" {
				continue
			}
			req, err := http.NewRequest(rt.Method, c.env.Server.URL+o.path(rt.Path), nil)
			if err != nil {
				t.Fatal(err)
			}
			if key.header != "" {
				req.Header.Set("Authorization", key.header)
			}
			resp, err := c.env.Server.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body [4096]byte
			n, _ := resp.Body.Read(body[:])
			resp.Body.Close()
			if resp.StatusCode != 401 || errCode(body[:n]) != "UNAUTHENTICATED" || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s: %s %s: %d %s (WWW-Authenticate %q), want 401 UNAUTHENTICATED",
					key.name, rt.Method, rt.Path, resp.StatusCode, body[:n], resp.Header.Get("WWW-Authenticate"))
				continue
			}
			checkResponse(t, rt.Method, rt.Path, resp.StatusCode, resp.Header, body[:n])
			// Never say which check failed.
			if msg := string(body[:n]); strings.Contains(msg, "revoked") || strings.Contains(msg, "secret") || strings.Contains(msg, "unknown") {
				t.Errorf("%s: 401 message says too much: %s", key.name, msg)
			}
		}
	}
}

// TestRoles: a viewer key is refused every mutation (except the
// read-only MQTT credential, which is a viewer route by contract), an
// operator key every admin route, and nothing changes.
func TestRoles(t *testing.T) {
	t.Parallel()
	c := newClient(t, "")
	o := makeObjects(t, c)
	viewerKey := c.env.Key("acme", "vera", store.RoleViewer)
	operatorKey := c.env.Key("acme", "otto", store.RoleOperator)
	// An admin key of an operator demoted to viewer is a viewer key.
	demoted := c.env.Key("acme", "dora", store.RoleAdmin)
	var dora api.Whoami
	c.call("GET", "/api/v1/whoami", "/api/v1/whoami", demoted, nil, 200, &dora)
	role := "viewer"
	c.call("PATCH", "/api/v1/operators/{id}", "/api/v1/operators/"+dora.OperatorID, c.env.AdminKey, api.OperatorPatch{Role: &role}, 200, nil)
	before := auditLen(t, c.env.Store, "acme")

	mutating := 0
	for _, rt := range api.Routes() {
		if rt.Role == "" {
			continue
		}
		path, body := o.path(rt.Path), validBody(t, rt.Method, rt.Path)
		switch {
		case rt.Method == http.MethodGet:
			if rt.Role == "admin" {
				c.wantError(rt.Method, rt.Path, path, operatorKey, nil, 403, "FORBIDDEN")
			}
			continue
		case rt.Method == http.MethodPost && rt.Path == "/api/v1/mqtt/credentials":
			if rt.Role != "viewer" {
				t.Errorf("mqtt credentials need role %q, docs/api.md says viewer", rt.Role)
			}
			continue
		}
		mutating++
		if rt.Role == "viewer" {
			t.Errorf("%s %s mutates but a viewer may call it", rt.Method, rt.Path)
		}
		c.wantError(rt.Method, rt.Path, path, viewerKey, body, 403, "FORBIDDEN")
		c.wantError(rt.Method, rt.Path, path, demoted, body, 403, "FORBIDDEN")
		if rt.Role == "admin" {
			c.wantError(rt.Method, rt.Path, path, operatorKey, body, 403, "FORBIDDEN")
		}
	}
	if mutating != 24 { // docs/api.md: 24 mutating routes besides the MQTT credential
		t.Errorf("%d mutating routes checked, want 24", mutating)
	}
	if after := auditLen(t, c.env.Store, "acme"); after != before {
		t.Errorf("refused requests changed the audit chain: %d → %d entries", before, after)
	}
	if calls := c.env.Revoker.Calls(); len(calls) != 0 {
		t.Errorf("refused revoke reached the broker: %v", calls)
	}
	if _, err := c.env.Store.GetDevice(context.Background(), "acme", o.device.ID); err != nil {
		t.Errorf("device gone after refused requests: %v", err)
	}
	// The viewer can read, and an operator can mutate operator routes.
	c.call("GET", "/api/v1/fleets", "/api/v1/fleets", viewerKey, nil, 200, nil)
	c.call("POST", "/api/v1/fleets", "/api/v1/fleets", operatorKey, api.FleetCreate{Name: "otto-fleet"}, 201, nil)
}

// TestTenantIsolation: tenant beta's admin key sees none of acme's objects
// and every attempt on one by id or name is 404, changing nothing.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			c := newClient(t, backendDSN(t, b))
			o := makeObjects(t, c)
			beta := c.env.AddTenant("beta")
			acmeBefore := auditLen(t, c.env.Store, "acme")

			for _, rt := range api.Routes() {
				if rt.Role == "" || !strings.Contains(rt.Path, "{") {
					continue
				}
				c.wantError(rt.Method, rt.Path, o.path(rt.Path), beta, validBody(t, rt.Method, rt.Path), 404, "NOT_FOUND")
			}
			// Fleets by name, and the device filter naming acme's fleet.
			c.wantError("GET", "/api/v1/fleets/{fleet}", "/api/v1/fleets/edge", beta, nil, 404, "NOT_FOUND")
			c.wantError("GET", "/api/v1/devices", "/api/v1/devices?fleet="+o.fleet.ID, beta, nil, 404, "NOT_FOUND")
			// Lists show only beta's own objects.
			for _, p := range []string{"/api/v1/fleets", "/api/v1/devices", "/api/v1/api-keys", "/api/v1/operators"} {
				raw := c.call("GET", p, p, beta, nil, 200, nil)
				for _, id := range []string{o.fleet.ID, o.device.ID, o.key.ID, o.operator.ID, "acme"} {
					if strings.Contains(string(raw), id) {
						t.Errorf("beta's %s shows acme's %s: %s", p, id, raw)
					}
				}
			}
			var page api.AuditPage
			c.call("GET", "/api/v1/audit", "/api/v1/audit", beta, nil, 200, &page)
			if len(page.Entries) != 0 {
				t.Errorf("beta's audit shows %d entries", len(page.Entries))
			}
			var me api.Whoami
			c.call("GET", "/api/v1/whoami", "/api/v1/whoami", beta, nil, 200, &me)
			if me.Tenant != "beta" {
				t.Errorf("beta whoami = %+v", me)
			}
			if n := auditLen(t, c.env.Store, "acme"); n != acmeBefore {
				t.Errorf("acme's audit chain changed: %d → %d", acmeBefore, n)
			}
			if calls := c.env.Revoker.Calls(); len(calls) != 0 {
				t.Errorf("revoker called across tenants: %v", calls)
			}
			d, err := c.env.Store.GetDevice(context.Background(), "acme", o.device.ID)
			if err != nil || d.Status != store.DeviceEnrolled || d.Name != o.device.Name {
				t.Errorf("acme's device after beta's attempts: %+v, %v", d, err)
			}
			if _, err := c.env.Store.LookupEnrollmentToken(context.Background(), o.token.Token); err != nil {
				t.Errorf("acme's token after beta's attempts: %v", err)
			}
		})
	}
}
