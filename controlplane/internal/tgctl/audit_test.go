package tgctl

import (
	"os"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/internal/audit"
)

// TestAuditVerifyDetectsTampering edits, reorders and deletes entries in
// the control plane's database and expects `tgctl audit verify` to name
// the first bad seq each time; deleting the newest entries is caught by
// the anchor the previous run stored in the context.
func TestAuditVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	api, db := startAPI(t)
	e := newEnv(t)
	login(t, e, api.Server.URL, api.AdminKey)
	for _, name := range []string{"f1", "f2", "f3", "f4", "f5"} {
		mustRun(t, e, "fleet", "create", name)
	}
	// 5 fleet.create entries.
	out := mustRun(t, e, "audit", "verify", "--page-size", "2")
	if !strings.Contains(out, "verified: 5 entries") || !strings.Contains(out, "Head:    acme@5:") ||
		!strings.Contains(out, `Stored the head as the anchor of context "default"`) {
		t.Fatalf("audit verify:\n%s", out)
	}
	anchor := storedAnchor(t, e)
	if anchor.Seq != 5 || anchor.Tenant != "acme" {
		t.Fatalf("stored anchor %v", anchor)
	}
	// The next run verifies against it.
	mustRun(t, e, "fleet", "create", "f6")
	out = mustRun(t, e, "audit", "verify")
	if !strings.Contains(out, "verified: 6 entries") || !strings.Contains(out, anchor.String()+" (matched)") {
		t.Fatalf("audit verify:\n%s", out)
	}
	if got := storedAnchor(t, e); got.Seq != 6 {
		t.Fatalf("anchor not advanced: %v", got)
	}

	failsAt := func(what, wantSeq, wantKind string) {
		t.Helper()
		r := run(t, e, "", "audit", "verify", "--page-size", "2")
		if r.code != 1 || strings.Count(r.stderr, "\n") != 1 ||
			!strings.HasPrefix(r.stderr, `tgctl: audit chain of tenant "acme": seq `+wantSeq+": "+wantKind) {
			t.Fatalf("%s: exit %d, stderr %q; want seq %s, %s", what, r.code, r.stderr, wantSeq, wantKind)
		}
		// JSON output says the same, for scripts.
		r = run(t, e, "", "audit", "verify", "-o", "json")
		if r.code != 1 || !strings.Contains(r.stdout, `"ok": false`) || !strings.Contains(r.stdout, `"seq": `+wantSeq+",") {
			t.Fatalf("%s: -o json: exit %d, stdout %s", what, r.code, r.stdout)
		}
		if got := storedAnchor(t, e); got.Seq != 6 {
			t.Fatalf("%s: a failed verification moved the anchor to %v", what, got)
		}
	}

	// An edited field.
	tamper(t, db, `UPDATE audit_log SET actor = 'key-mallory' WHERE tenant_id = 'acme' AND seq = 3`)
	failsAt("edited actor", "3", "hash mismatch")
	tamper(t, db, `UPDATE audit_log SET actor = ? WHERE tenant_id = 'acme' AND seq = 3`, actorOf(t, db, 2))
	mustRun(t, e, "audit", "verify")

	// Edited details (the fleet's name).
	tamper(t, db, `UPDATE audit_log SET details = replace(details, 'f4', 'fx') WHERE tenant_id = 'acme' AND seq = 4`)
	failsAt("edited details", "4", "hash mismatch")
	tamper(t, db, `UPDATE audit_log SET details = replace(details, 'fx', 'f4') WHERE tenant_id = 'acme' AND seq = 4`)
	mustRun(t, e, "audit", "verify")

	// Two entries swapped (their seqs exchanged).
	tamper(t, db, `UPDATE audit_log SET seq = -seq WHERE tenant_id = 'acme' AND seq IN (2, 3)`)
	tamper(t, db, `UPDATE audit_log SET seq = CASE seq WHEN -2 THEN 3 ELSE 2 END WHERE tenant_id = 'acme' AND seq IN (-2, -3)`)
	failsAt("reordered", "2", "hash mismatch")
	tamper(t, db, `UPDATE audit_log SET seq = -seq WHERE tenant_id = 'acme' AND seq IN (2, 3)`)
	tamper(t, db, `UPDATE audit_log SET seq = CASE seq WHEN -2 THEN 3 ELSE 2 END WHERE tenant_id = 'acme' AND seq IN (-2, -3)`)
	mustRun(t, e, "audit", "verify")

	// A deleted entry in the middle.
	tamper(t, db, `CREATE TABLE saved AS SELECT * FROM audit_log WHERE tenant_id = 'acme' AND seq = 2`)
	tamper(t, db, `DELETE FROM audit_log WHERE tenant_id = 'acme' AND seq = 2`)
	failsAt("deleted entry", "2", "sequence error")
	tamper(t, db, `INSERT INTO audit_log SELECT * FROM saved`)
	tamper(t, db, `DROP TABLE saved`)
	mustRun(t, e, "audit", "verify")

	// The newest entry deleted: the chain that is left is consistent; only
	// the stored anchor (seq 6) shows the loss.
	tamper(t, db, `DELETE FROM audit_log WHERE tenant_id = 'acme' AND seq = 6`)
	failsAt("deleted newest", "6", "chain truncated")
	// Without the anchor (no context) the truncated chain looks fine, which
	// is why verify stores one.
	r := run(t, env{"TG_BASE_URL": api.Server.URL, "TG_API_KEY": api.AdminKey, "XDG_CONFIG_HOME": t.TempDir()}, "", "audit", "verify")
	if r.code != 0 || !strings.Contains(r.stdout, "verified: 5 entries") || !strings.Contains(r.stdout, "pass it as --anchor") {
		t.Fatalf("verify without anchor: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// An explicit --anchor catches it too.
	r = run(t, env{"TG_BASE_URL": api.Server.URL, "TG_API_KEY": api.AdminKey, "XDG_CONFIG_HOME": t.TempDir()}, "", "audit", "verify", "--anchor", storedAnchor(t, e).String())
	if r.code != 1 || !strings.Contains(r.stderr, "seq 6: chain truncated") {
		t.Fatalf("verify --anchor: exit %d, %q", r.code, r.stderr)
	}
}

func storedAnchor(t *testing.T, e env) audit.Checkpoint {
	t.Helper()
	b, err := os.ReadFile(e.configPath())
	if err != nil {
		t.Fatal(err)
	}
	cf, err := parseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	c := cf.context(cf.CurrentContext)
	cp, err := audit.ParseCheckpoint(c.AuditAnchor)
	if err != nil {
		t.Fatalf("stored anchor %q: %v", c.AuditAnchor, err)
	}
	return cp
}

// actorOf reads an entry's actor (all entries here have the same one).
func actorOf(t *testing.T, dbPath string, seq int) string {
	t.Helper()
	db := openDB(t, dbPath)
	defer db.Close()
	var actor string
	if err := db.QueryRow(`SELECT actor FROM audit_log WHERE tenant_id = 'acme' AND seq = ?`, seq).Scan(&actor); err != nil {
		t.Fatal(err)
	}
	return actor
}
