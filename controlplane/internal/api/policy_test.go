package api_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
	"github.com/tensorguard/tensorguardflow/internal/policybundle"
)

// examplePolicy is examples/policy as a push body.
func examplePolicy(t *testing.T) api.PolicyPush {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "examples", "policy")
	files, err := policybundle.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := api.PolicyPush{Files: map[string]string{}}
	for name, b := range files {
		out.Files[name] = string(b)
	}
	if _, err := os.Stat(filepath.Join(dir, "install.rego")); err != nil {
		t.Fatal(err)
	}
	return out
}

// runPolicyCRUD pushes the example policy twice to a fleet (by name and by
// id), reads the current revision, and checks what was stored: a bundle
// signed by the tenant's key whose signed manifest carries the revision,
// the audit entries, and the device notifications.
func runPolicyCRUD(t *testing.T, c *client) {
	ctx := context.Background()
	admin := c.env.AdminKey
	var f api.Fleet
	c.call("POST", "/api/v1/fleets", "/api/v1/fleets", admin, api.FleetCreate{Name: "policy-fleet"}, 201, &f)
	c.wantError("GET", "/api/v1/fleets/{fleet}/policy", "/api/v1/fleets/policy-fleet/policy", admin, nil, 404, "NOT_FOUND")

	var first, second api.PolicyPushed
	c.call("POST", "/api/v1/fleets/{fleet}/policy", "/api/v1/fleets/policy-fleet/policy", admin, examplePolicy(t), 201, &first)
	c.call("POST", "/api/v1/fleets/{fleet}/policy", "/api/v1/fleets/"+f.ID+"/policy", admin, examplePolicy(t), 201, &second)
	if first.Revision != 1 || second.Revision != 2 || first.FleetID != f.ID || !strings.HasPrefix(first.KeyID, "tgpol-") ||
		second.KeyID != first.KeyID || !slices.Equal(first.Files, []string{"data.json", "install.rego"}) ||
		!slices.Contains(first.Roots, "tensorguard") || first.Size <= 0 || !strings.HasPrefix(first.CreatedBy, "key-") {
		t.Errorf("pushes = %+v, %+v", first, second)
	}
	var cur api.PolicyRevision
	c.call("GET", "/api/v1/fleets/{fleet}/policy", "/api/v1/fleets/policy-fleet/policy", admin, nil, 200, &cur)
	if cur != second.PolicyRevision {
		t.Errorf("current = %+v, want %+v", cur, second.PolicyRevision)
	}
	// The stored bundle verifies under the tenant's key, for this fleet
	// and revision.
	stored, err := c.env.Store.LatestPolicyBundle(ctx, "acme", f.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	vk, err := c.env.PolicyKeys.VerificationKey(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	b, err := policybundle.Verify(stored.Bundle, vk)
	if err != nil {
		t.Fatalf("stored bundle: %v", err)
	}
	if b.Revision != 2 || b.Tenant != "acme" || b.Fleet != f.ID || b.SHA256 != second.SHA256 {
		t.Errorf("signed manifest: revision %d tenant %s fleet %s sha %s", b.Revision, b.Tenant, b.Fleet, b.SHA256)
	}
	want := []string{"acme/" + f.ID + "@1", "acme/" + f.ID + "@2"}
	if got := c.env.PolicyNotes.Calls(); !slices.Equal(got, want) {
		t.Errorf("notifications = %v, want %v", got, want)
	}
}

// TestPolicyPushRefusals: a policy that does not compile is a 400 naming
// the file and line, and changes nothing (no revision, no audit entry, no
// notification).
func TestPolicyPushRefusals(t *testing.T) {
	t.Parallel()
	c := newClient(t, "")
	admin := c.env.AdminKey
	c.call("POST", "/api/v1/fleets", "/api/v1/fleets", admin, api.FleetCreate{Name: "edge"}, 201, nil)
	before := auditLen(t, c.env.Store, "acme")
	path := "/api/v1/fleets/edge/policy"
	for _, tc := range []struct {
		name    string
		files   map[string]string
		mention []string
	}{
		{"parse error", map[string]string{"install.rego": "package tensorguard.install\n\nallow if {\n\tinput.x ==\n}\n"},
			[]string{"install.rego:5", "rego_parse_error"}},
		{"unsafe variable", map[string]string{"policies/install.rego": "package tensorguard.install\n\nallow if {\n\tx > 1\n}\n"},
			[]string{"policies/install.rego:4", "rego_unsafe_var_error"}},
		{"network call", map[string]string{"install.rego": "package tensorguard.install\n\nallow if http.send({\"method\": \"get\", \"url\": \"http://x\"}).status_code == 200\n"},
			[]string{"install.rego:3", "http.send"}},
		{"no allow", map[string]string{"install.rego": "package tensorguard.other\n\nx := 1\n"},
			[]string{"no rule data.tensorguard.install.allow"}},
		{"bad data", map[string]string{"install.rego": "package tensorguard.install\n\nallow := true\n", "data.json": "{"},
			[]string{"data.json"}},
		{"bad path", map[string]string{"../install.rego": "package tensorguard.install\n\nallow := true\n"},
			[]string{"../install.rego"}},
		{"no files", map[string]string{}, []string{"files"}},
	} {
		c.wantError("POST", "/api/v1/fleets/{fleet}/policy", path, admin, api.PolicyPush{Files: tc.files}, 400, "BAD_REQUEST")
		_, _, raw := c.env.Do("POST", path, admin, api.PolicyPush{Files: tc.files})
		for _, m := range tc.mention {
			if !strings.Contains(string(raw), m) {
				t.Errorf("%s: error does not mention %q: %s", tc.name, m, raw)
			}
		}
	}
	c.wantError("POST", "/api/v1/fleets/{fleet}/policy", "/api/v1/fleets/nope/policy", admin, examplePolicy(t), 404, "NOT_FOUND")
	if n := auditLen(t, c.env.Store, "acme"); n != before {
		t.Errorf("refused pushes changed the audit chain: %d → %d", before, n)
	}
	if calls := c.env.PolicyNotes.Calls(); len(calls) != 0 {
		t.Errorf("refused pushes notified devices: %v", calls)
	}
	// The next good push is revision 1: refusals took no revision.
	var ok api.PolicyPushed
	c.call("POST", "/api/v1/fleets/{fleet}/policy", path, admin, examplePolicy(t), 201, &ok)
	if ok.Revision != 1 {
		t.Errorf("first accepted push has revision %d", ok.Revision)
	}
	var page api.AuditPage
	c.call("GET", "/api/v1/audit", "/api/v1/audit", admin, nil, 200, &page)
	last := page.Entries[len(page.Entries)-1]
	if last.Action != "policy.push" || last.Target != ok.FleetID || !strings.Contains(string(last.Details), ok.SHA256) {
		t.Errorf("audit entry = %+v %s", last, last.Details)
	}
}
