package tgctl

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/controlplane/controlplanetest"
)

// TestAgainstControlPlane runs tgctl against a whole control plane in
// process, over HTTPS pinned to its CA hash, the way an operator would.
func TestAgainstControlPlane(t *testing.T) {
	t.Parallel()
	h := controlplanetest.Start(t)
	db, ok := strings.CutPrefix(h.Config.DatabaseURL, "sqlite://")
	if !ok {
		t.Fatalf("database %q is not SQLite", h.Config.DatabaseURL)
	}
	e := newEnv(t)

	// Pinning to another CA's hash is refused before the key is sent, and
	// nothing is saved; so is a server whose CA is not trusted at all.
	otherHash := sha256.Sum256([]byte("another control plane"))
	r := run(t, e, h.AdminKey+"\n", "login", "--server", h.BaseURL, "--api-key", "-", "--ca-hash", "sha256:"+hex.EncodeToString(otherHash[:]))
	if r.code != 1 || !strings.Contains(r.stderr, "does not contain the pinned CA") {
		t.Fatalf("login pinned to another CA: exit %d, %q", r.code, r.stderr)
	}
	r = run(t, e, h.AdminKey+"\n", "login", "--server", h.BaseURL, "--api-key", "-")
	if r.code != 1 || !strings.Contains(r.stderr, "--ca-hash") {
		t.Fatalf("login without CA: exit %d, %q", r.code, r.stderr)
	}
	if _, err := os.Stat(e.configPath()); !os.IsNotExist(err) {
		t.Fatalf("a refused login wrote the context file: %v", err)
	}

	// The documented first contact: pin the platform CA by its hash, which
	// the server sends in its chain.
	t.Run("ca-hash", func(t *testing.T) {
		if n := servedChainLength(t, h.BaseURL); n < 2 {
			t.Fatalf("the control plane's TLS chain holds %d certificate(s); it must include the platform CA", n)
		}
		e := newEnv(t)
		login(t, e, h.BaseURL, h.AdminKey, "--ca-hash", h.CAHash)
		mustRun(t, e, "whoami")
	})
	caPEM := mustRun(t, env{"TG_BASE_URL": h.PlainURL, "TG_API_KEY": h.AdminKey, "XDG_CONFIG_HOME": t.TempDir()}, "ca", "show", "--pem")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, []byte(caPEM), 0o644); err != nil {
		t.Fatal(err)
	}
	login(t, e, h.BaseURL, h.AdminKey, "--ca-file", caFile)
	if out := mustRun(t, e, "ca", "show"); !strings.Contains(out, h.CAHash) {
		t.Fatalf("ca show:\n%s", out)
	}
	mustRun(t, e, "fleet", "create", "jetsons", "--allow-no-tpm")
	out := mustRun(t, e, "token", "create", "jetsons", "--ttl", "1h")
	if !strings.Contains(out, "--server "+h.BaseURL+" --ca-hash "+h.CAHash+" --token tgt_") {
		t.Fatalf("token create:\n%s", out)
	}
	var devs []client.Device
	mustJSON(t, mustRun(t, e, "device", "list", "-o", "json"), &devs)
	if len(devs) != 0 {
		t.Fatalf("devices %+v", devs)
	}
	out = mustRun(t, e, "audit", "verify")
	if !strings.Contains(out, "verified:") || !strings.Contains(out, "Stored the head") {
		t.Fatalf("audit verify:\n%s", out)
	}
	head := storedAnchor(t, e)
	if head.Seq < 2 {
		t.Fatalf("head %v: want at least fleet.create and enrollment_token.create", head)
	}

	// An edited entry is found.
	tamper(t, db, `UPDATE audit_log SET action = 'fleet.delete' WHERE tenant_id = ? AND seq = ?`, h.Tenant, head.Seq-1)
	r = run(t, e, "", "audit", "verify")
	if want := "seq " + strconv.FormatUint(head.Seq-1, 10) + ": hash mismatch"; r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("edited entry: exit %d, %q, want %q", r.code, r.stderr, want)
	}
	tamper(t, db, `UPDATE audit_log SET action = 'fleet.create' WHERE tenant_id = ? AND seq = ?`, h.Tenant, head.Seq-1)
	// The newest entry deleted: the anchor catches it.
	tamper(t, db, `DELETE FROM audit_log WHERE tenant_id = ? AND seq = ?`, h.Tenant, head.Seq)
	r = run(t, e, "", "audit", "verify")
	if want := "seq " + strconv.FormatUint(head.Seq, 10) + ": chain truncated"; r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("deleted newest: exit %d, %q, want %q", r.code, r.stderr, want)
	}
}

// servedChainLength returns how many certificates the server at an https
// URL presents.
func servedChainLength(t *testing.T, baseURL string) int {
	t.Helper()
	conn, err := tls.Dial("tcp", strings.TrimPrefix(baseURL, "https://"), &tls.Config{InsecureSkipVerify: true}) // only counting
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return len(conn.ConnectionState().PeerCertificates)
}
