package tgctl

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
)

// TestPolicyPushShow: `tgctl policy push --fleet F DIR` pushes the example
// policy as revision 1, 2, …; `policy show` reads the current revision; a
// broken policy is named with file and line before anything is sent.
func TestPolicyPushShow(t *testing.T) {
	t.Parallel()
	api, _ := startAPI(t)
	e := newEnv(t)
	login(t, e, api.Server.URL, api.AdminKey)
	mustRun(t, e, "fleet", "create", "edge")
	example := filepath.Join("..", "..", "..", "examples", "policy")

	if r := run(t, e, "", "policy", "push", example); r.code != 2 || !strings.Contains(r.stderr, "--fleet") {
		t.Errorf("push without --fleet: %d %s", r.code, r.stderr)
	}
	if r := run(t, e, "", "policy", "show", "--fleet", "edge"); r.code != 1 || !strings.Contains(r.stderr, "NOT_FOUND") {
		t.Errorf("show before a push: %d %s", r.code, r.stderr)
	}
	var first, second client.PolicyPushed
	if err := json.Unmarshal([]byte(mustRun(t, e, "policy", "push", "--fleet", "edge", example, "-o", "json")), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(mustRun(t, e, "policy", "push", "--fleet", "edge", example, "-o", "json")), &second); err != nil {
		t.Fatal(err)
	}
	if first.Revision != 1 || second.Revision != 2 || len(first.Files) != 2 || !strings.HasPrefix(first.KeyID, "tgpol-") {
		t.Errorf("pushes = %+v, %+v", first, second)
	}
	table := mustRun(t, e, "policy", "show", "--fleet", "edge")
	if !strings.Contains(table, "REVISION") || !strings.Contains(table, second.SHA256) {
		t.Errorf("show: %s", table)
	}

	broken := t.TempDir()
	if err := os.WriteFile(filepath.Join(broken, "install.rego"), []byte("package tensorguard.install\n\nallow if {\n\tx > 1\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, e, "", "policy", "push", "--fleet", "edge", broken)
	if r.code != 1 || !strings.Contains(r.stderr, "install.rego:4") || !strings.Contains(r.stderr, "unsafe") {
		t.Errorf("broken policy: %d %s", r.code, r.stderr)
	}
	var cur client.PolicyRevision
	if err := json.Unmarshal([]byte(mustRun(t, e, "policy", "show", "--fleet", "edge", "-o", "json")), &cur); err != nil || cur.Revision != 2 {
		t.Errorf("after the refused push: %+v %v", cur, err)
	}
}
