package integration

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the control plane's SQLite driver, to age a token

	"github.com/tensorguard/tensorguardflow/controlplane/client"
)

// TestEnrollmentRefusals drives `tg-agent enroll` against the control-plane
// process where the refusal travels the real wire: a reused token, an
// expired token, a token of a fleet that admits no software TPM, and an
// swtpm whose EK certificate chains to a manufacturer CA the control plane
// does not trust. Every refusal exits 2 with one line naming the reason, and
// a refused enrollment does not spend the token.
//
// An AK that is not in the EK's TPM, and a TLS key that is not a TPM key,
// cannot be produced by an honest tg-agent; they are covered with real TPMs
// by the verifier's tests in controlplane/internal/enroll (TestEnrollSimulator
// cases "AK in another TPM than the EK", "software TLS key certified by a
// forged signature", "software TLS key and software AK claiming TPM
// attributes", "duplicable TLS key"; TestFinishRefusals) and through the HTTP
// server by controlplane/internal/server's TestEnrollRefusals.
func TestEnrollmentRefusals(t *testing.T) {
	trusted := newSWTPMCA(t)
	untrusted := newSWTPMCA(t)
	trustedTPM := startSWTPM(t, trusted, "swtpm-trusted-ca")
	untrustedTPM := startSWTPM(t, untrusted, "swtpm-untrusted-ca")
	// The token cases use the simulator, whose EK (it has no certificate) a
	// fleet that allows simulated TPMs trusts on first use.
	cp := startControlPlane(t, cpOptions{ekRoots: []string{trusted.rootFile}, ekIntermediates: []string{trusted.intermediateFile}})
	cp.tgctl("fleet", "create", "edge", "--allow-simulated-tpm")
	cp.tgctl("fleet", "create", "hardware-only")

	refused := func(a *agentProcess, want string) {
		t.Helper()
		out, code := a.enroll()
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 2 || !strings.Contains(lines[len(lines)-1], want) {
			t.Fatalf("%s: tg-agent enroll exited %d, want 2 with a last line containing %q:\n%s", a.name, code, want, out)
		}
		t.Logf("%s: %s", a.name, lines[len(lines)-1])
	}
	enrolled := func(a *agentProcess) {
		t.Helper()
		if out, code := a.enroll(); code != 0 || !strings.Contains(out, "enrolled as dev-") {
			t.Fatalf("%s: tg-agent enroll exited %d:\n%s", a.name, code, out)
		}
	}
	tokenState := func(fleet, id string) string {
		t.Helper()
		var toks []client.EnrollmentToken
		cp.tgctlJSON(&toks, "token", "list", fleet)
		for _, k := range toks {
			if k.ID == id {
				return k.State
			}
		}
		t.Fatalf("token %s not in fleet %s's list", id, fleet)
		return ""
	}

	// A token enrolls one device, once.
	token, _ := cp.token("edge")
	enrolled(newAgent(t, cp, "first", token, "{simulator: true, simulator_seed: 301}"))
	refused(newAgent(t, cp, "reused-token", token, "{simulator: true, simulator_seed: 302}"), "already used")

	// An expired token. The API refuses to create one in the past, so the
	// test ages a fresh one in the database.
	token, id := cp.token("edge", "--ttl", "1h")
	cp.expireToken(id)
	if s := tokenState("edge", id); s != "expired" {
		t.Fatalf("aged token is %s", s)
	}
	refused(newAgent(t, cp, "expired-token", token, "{simulator: true, simulator_seed: 303}"), "expired")

	// A fleet whose policy admits no software TPM.
	token, id = cp.token("hardware-only")
	refused(newAgent(t, cp, "software-tpm-in-hardware-fleet", token, "{simulator: true, simulator_seed: 304}"),
		"ENROLLMENT_REFUSED: fleet hardware-only does not accept TPM kind simulated")
	if s := tokenState("hardware-only", id); s != "active" {
		t.Fatalf("a refused enrollment left the token %s", s)
	}

	// An EK certificate from a manufacturer CA the control plane does not
	// trust; then the same token with an swtpm of the trusted CA, which
	// proves the roots are in effect and the refusal did not spend it.
	token, id = cp.token("edge")
	refused(newAgent(t, cp, "ek-of-untrusted-ca", token, fmt.Sprintf("{swtpm: %q}", untrustedTPM.addr)),
		"ENROLLMENT_REFUSED: enroll: endorsement key not trusted: EK certificate chain")
	if s := tokenState("edge", id); s != "active" {
		t.Fatalf("a refused enrollment left the token %s", s)
	}
	enrolled(newAgent(t, cp, "ek-of-trusted-ca", token, fmt.Sprintf("{swtpm: %q}", trustedTPM.addr)))

	devs := cp.devices()
	if len(devs) != 2 {
		t.Fatalf("%d devices enrolled, want 2 (first, ek-of-trusted-ca): %+v", len(devs), devs)
	}
	kinds := map[string]int{}
	for _, d := range devs {
		kinds[d.TPMKind]++
	}
	if kinds["simulated"] != 1 || kinds["swtpm"] != 1 {
		t.Fatalf("device kinds %v", kinds)
	}
	for dev, d := range cp.enrollAudit() {
		if d.EKCertVerified != (d.TPMKind == "swtpm") {
			t.Fatalf("audit of %s: %+v", dev, d)
		}
	}
	cp.shutdown()
}

// expireToken moves a token's expiry into the past, directly in the
// control plane's SQLite database (the process keeps running; SQLite's WAL
// and busy timeout make the concurrent write safe).
func (cp *cpProc) expireToken(id string) {
	cp.t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(cp.dataDir, "controlplane.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		cp.t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Exec(`UPDATE enrollment_tokens SET expires_at = ? WHERE id = ?`, time.Now().Add(-time.Minute).UnixMicro(), id)
	if err != nil {
		cp.t.Fatalf("age token: %v", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		cp.t.Fatalf("age token %s: %d rows", id, n)
	}
}
