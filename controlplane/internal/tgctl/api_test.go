package tgctl

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/api/apitest"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// These tests run tgctl against the real operator API (api.New over a
// SQLite store) through apitest.

// startAPI starts the API on a SQLite file and returns it with the path of
// that file, for tests that tamper with the database behind its back.
func startAPI(t *testing.T) (*apitest.Env, string) {
	t.Helper()
	dbPath := filepath.Join(t.TempDir(), "cp.db")
	return apitest.New(t, apitest.Options{DSN: "sqlite://" + dbPath}), dbPath
}

// login logs e in to srv with key (read from stdin, as an operator would).
func login(t *testing.T, e env, server, key string, extra ...string) string {
	t.Helper()
	r := run(t, e, key+"\n", append([]string{"login", "--server", server, "--api-key", "-"}, extra...)...)
	if r.code != 0 {
		t.Fatalf("login: exit %d: %s", r.code, r.stderr)
	}
	noSecret(t, key, r.stdout, r.stderr)
	return r.stdout
}

func TestLoginWritesPrivateContext(t *testing.T) {
	t.Parallel()
	api, _ := startAPI(t)
	e := newEnv(t)
	out := login(t, e, api.Server.URL, api.AdminKey)
	if !strings.Contains(out, "tenant acme") || !strings.Contains(out, `Context "default"`) {
		t.Fatalf("login output: %s", out)
	}
	fi, err := os.Stat(e.configPath())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("context file mode %04o, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(e.configPath())); di.Mode().Perm() != 0o700 {
		t.Fatalf("context dir mode %04o, want 0700", di.Mode().Perm())
	}
	b, _ := os.ReadFile(e.configPath())
	cf, err := parseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	c := cf.context("default")
	if cf.CurrentContext != "default" || c == nil || c.APIKey != api.AdminKey || c.Server != api.Server.URL || c.Tenant != "acme" {
		t.Fatalf("context file:\n%s", b)
	}

	// A second, named context; it becomes current, the first one stays.
	viewerKey := api.Key("acme", "viewer", store.RoleViewer)
	login(t, e, api.Server.URL, viewerKey, "--context", "ro")
	list := mustRun(t, e, "context", "list")
	noSecret(t, api.AdminKey, list)
	noSecret(t, viewerKey, list)
	if !strings.Contains(list, "*        ro") || !strings.Contains(list, "default") {
		t.Fatalf("context list:\n%s", list)
	}
	who := mustRun(t, e, "whoami", "-o", "json")
	if !strings.Contains(who, `"role": "viewer"`) {
		t.Fatalf("whoami in context ro: %s", who)
	}
	who = mustRun(t, e, "whoami", "-o", "json", "--context", "default")
	if !strings.Contains(who, `"role": "admin"`) {
		t.Fatalf("whoami in context default: %s", who)
	}

	// A bad key is refused and nothing is written.
	before, _ := os.ReadFile(e.configPath())
	r := run(t, e, "", "login", "--server", api.Server.URL, "--api-key", "tgk_key-aaaaaaaaaaaaaaaaaaaa_bad", "--context", "bad")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "tgctl: UNAUTHENTICATED: ") {
		t.Fatalf("bad key: exit %d, stderr %q", r.code, r.stderr)
	}
	if after, _ := os.ReadFile(e.configPath()); string(after) != string(before) {
		t.Fatal("a failed login changed the context file")
	}

	// logout drops the key, not the context.
	mustRun(t, e, "logout")
	r = run(t, e, "", "whoami")
	if r.code != 1 || !strings.Contains(r.stderr, "no API key") {
		t.Fatalf("whoami after logout: exit %d, %q", r.code, r.stderr)
	}
	mustRun(t, e, "context", "use", "default")
	mustRun(t, e, "whoami")
}

// TestOperatorJourney walks every route group through tgctl.
func TestOperatorJourney(t *testing.T) {
	t.Parallel()
	api, _ := startAPI(t)
	e := newEnv(t)
	login(t, e, api.Server.URL, api.AdminKey)

	var fleet client.Fleet
	mustJSON(t, mustRun(t, e, "fleet", "create", "jetsons", "--allow-no-tpm", "--cert-ttl", "12h", "-o", "json"), &fleet)
	if fleet.Name != "jetsons" || !fleet.Policy.AllowNoTPM || fleet.Policy.AllowSimulatedTPM || fleet.Policy.CertTTL != "12h" {
		t.Fatalf("fleet %+v", fleet)
	}
	mustJSON(t, mustRun(t, e, "fleet", "update", "jetsons", "--allow-simulated-tpm", "-o", "json"), &fleet)
	if !fleet.Policy.AllowNoTPM || !fleet.Policy.AllowSimulatedTPM || fleet.Policy.CertTTL != "12h" {
		t.Fatalf("updated fleet %+v", fleet)
	}
	if out := mustRun(t, e, "fleet", "list"); !strings.Contains(out, fleet.ID) {
		t.Fatalf("fleet list:\n%s", out)
	}

	// The attestation policy from flags; flags not given keep their value.
	golden := strings.Repeat("AB", 32)
	mustJSON(t, mustRun(t, e, "fleet", "update", "jetsons", "--attest-interval", "10s", "--attest-pcrs", "0,7,16",
		"--attest-golden", "7="+golden, "--revoke-on-untrusted", "-o", "json"), &fleet)
	att := fleet.Policy.Attestation
	if att.Interval != "10s" || !slices.Equal(att.PCRs, []int{0, 7, 16}) || !att.RevokeOnUntrusted || len(att.Rules) != 1 ||
		att.Rules[7].Mode != client.PCRGolden || !slices.Equal(att.Rules[7].Allow, []string{strings.ToLower(golden)}) ||
		!slices.Equal(att.AllowedKinds, []string{"hardware", "swtpm", "simulated"}) || !fleet.Policy.AllowNoTPM {
		t.Fatalf("attestation policy %+v", fleet.Policy)
	}
	if out := mustRun(t, e, "fleet", "get", "jetsons"); !strings.Contains(out, "PCR 7 golden") || !strings.Contains(out, "0,7*,16") {
		t.Fatalf("fleet get:\n%s", out)
	}
	fleet = client.Fleet{} // decoding merges into maps
	mustJSON(t, mustRun(t, e, "fleet", "update", "jetsons", "--attest-golden", "none", "--attest-tpm-kinds", "hardware", "-o", "json"), &fleet)
	if att := fleet.Policy.Attestation; len(att.Rules) != 0 || att.Interval != "10s" || !slices.Equal(att.AllowedKinds, []string{"hardware"}) {
		t.Fatalf("after clearing the rules: %+v", att)
	}
	for _, bad := range [][]string{
		{"--attest-golden", "7=abcd"},      // not a SHA-256 digest: the server says so
		{"--attest-pcrs", "0,24"},          // out of range
		{"--attest-interval", "100ms"},     // below 1s
		{"--attest-tpm-kinds", "emulated"}, // not a kind
		{"--attest-golden", "3=" + golden}, // PCR 3 not selected
	} {
		r := run(t, e, "", append([]string{"fleet", "update", "jetsons"}, bad...)...)
		if r.code != 1 || !strings.Contains(r.stderr, "attestation") {
			t.Errorf("fleet update %v: exit %d, stderr %q (want 1 naming the attestation policy)", bad, r.code, r.stderr)
		}
	}
	if r := run(t, e, "", "fleet", "update", "jetsons", "--attest-golden", "seven"); r.code != 2 || !strings.Contains(r.stderr, "PCR=HEX") {
		t.Errorf("--attest-golden seven: exit %d, stderr %q", r.code, r.stderr)
	}

	out := mustRun(t, e, "token", "create", "jetsons", "--ttl", "30m")
	if !strings.Contains(out, "tgt_") || !strings.Contains(out, "tg-agent enroll --server "+api.Server.URL+" --ca-hash "+api.CA.CAHash()+" --token tgt_") {
		t.Fatalf("token create:\n%s", out)
	}
	var toks []client.EnrollmentToken
	mustJSON(t, mustRun(t, e, "token", "list", "jetsons", "-o", "json"), &toks)
	if len(toks) != 1 || toks[0].State != client.TokenActive || toks[0].FleetID != fleet.ID {
		t.Fatalf("tokens %+v", toks)
	}
	if out := mustRun(t, e, "token", "list", "jetsons"); strings.Contains(out, "tgt_") {
		t.Fatalf("token list shows a secret:\n%s", out)
	}
	mustRun(t, e, "token", "delete", toks[0].ID)

	// A device as enrollment would create it.
	dev, err := api.Store.CreateDevice(context.Background(), "acme", store.Device{FleetID: fleet.ID, Name: "jetson-01", TPMKind: store.TPMNone, DeviceType: "jetson-orin"})
	if err != nil {
		t.Fatal(err)
	}
	mustRun(t, e, "device", "label", dev.ID, "site=berlin", "rack=r7")
	mustRun(t, e, "device", "label", dev.ID, "rack-")
	mustRun(t, e, "device", "rename", dev.ID, "jetson-one")
	var devs []client.Device
	mustJSON(t, mustRun(t, e, "device", "list", "--fleet", "jetsons", "--label", "site=berlin", "-o", "json"), &devs)
	if len(devs) != 1 || devs[0].Name != "jetson-one" || len(devs[0].Labels) != 1 || devs[0].Labels["site"] != "berlin" {
		t.Fatalf("devices %+v", devs)
	}
	mustJSON(t, mustRun(t, e, "device", "list", "--online", "-o", "json"), &devs)
	if len(devs) != 0 {
		t.Fatalf("online devices %+v", devs)
	}
	if out := mustRun(t, e, "device", "get", dev.ID); !strings.Contains(out, "Labels:          site=berlin") {
		t.Fatalf("device get:\n%s", out)
	}
	var revoked client.Device
	mustJSON(t, mustRun(t, e, "device", "revoke", dev.ID, "-o", "json"), &revoked)
	if revoked.Status != "revoked" {
		t.Fatalf("revoked device %+v", revoked)
	}
	mustRun(t, e, "device", "delete", dev.ID)

	// Operators and API keys; a viewer key cannot mutate.
	var op client.Operator
	mustJSON(t, mustRun(t, e, "operator", "create", "bob", "--role", "viewer", "-o", "json"), &op)
	mustJSON(t, mustRun(t, e, "operator", "update", op.ID, "--role", "operator", "-o", "json"), &op)
	if op.Role != "operator" {
		t.Fatalf("operator %+v", op)
	}
	var key client.CreatedAPIKey
	mustJSON(t, mustRun(t, e, "apikey", "create", "--name", "ci", "--role", "viewer", "--expires-in", "7d", "-o", "json"), &key)
	if !strings.HasPrefix(key.Key, "tgk_") || key.ExpiresAt == nil {
		t.Fatalf("api key %+v", key)
	}
	r := run(t, e, "", "fleet", "create", "other", "--api-key", key.Key)
	if r.code != 1 || !strings.HasPrefix(r.stderr, "tgctl: FORBIDDEN: ") || !strings.Contains(r.stderr, "(request ") {
		t.Fatalf("viewer fleet create: exit %d, %q", r.code, r.stderr)
	}
	noSecret(t, key.Key, r.stderr)
	if out := mustRun(t, e, "apikey", "list"); strings.Contains(out, key.Key) || !strings.Contains(out, key.ID) {
		t.Fatalf("apikey list:\n%s", out)
	}
	mustRun(t, e, "apikey", "revoke", key.ID)
	if r := run(t, e, "", "whoami", "--api-key", key.Key); r.code != 1 || !strings.HasPrefix(r.stderr, "tgctl: UNAUTHENTICATED: ") {
		t.Fatalf("revoked key: exit %d, %q", r.code, r.stderr)
	}
	mustRun(t, e, "operator", "delete", op.ID)
	mustRun(t, e, "fleet", "delete", "jetsons")

	// The CA as the server reports it.
	var ca client.CAInfo
	mustJSON(t, mustRun(t, e, "ca", "show", "-o", "json"), &ca)
	if ca.CAHash != api.CA.CAHash() {
		t.Fatalf("ca hash %s, want %s", ca.CAHash, api.CA.CAHash())
	}
	if out := mustRun(t, e, "ca", "show", "--pem"); out != ca.PlatformCAPEM {
		t.Fatalf("ca show --pem:\n%s", out)
	}

	// Everything above is in the audit chain, and it verifies.
	out = mustRun(t, e, "audit", "verify")
	if !strings.Contains(out, "Audit chain of tenant acme verified") {
		t.Fatalf("audit verify:\n%s", out)
	}
	// Nothing tgctl printed ever showed the admin key.
	noSecret(t, api.AdminKey, out)
}

func TestMQTTCredentials(t *testing.T) {
	t.Parallel()
	api, _ := startAPI(t)
	e := newEnv(t)
	login(t, e, api.Server.URL, api.AdminKey)
	dir := filepath.Join(t.TempDir(), "mqtt creds")
	out := mustRun(t, e, "mqtt", "credentials", "--out", dir)
	want := "mosquitto_sub -h broker.test -p 8883 --cafile '" + dir + "/ca.pem' --cert '" + dir + "/operator.crt' --key '" + dir + "/operator.key' -t 'tg/v1/acme/#' -v"
	if !strings.Contains(out, want) {
		t.Fatalf("output:\n%s\nwant the line\n%s", out, want)
	}
	fi, err := os.Stat(filepath.Join(dir, "operator.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("operator.key: %v, mode %v", err, fi)
	}
	keyPEM, _ := os.ReadFile(filepath.Join(dir, "operator.key"))
	certPEM, _ := os.ReadFile(filepath.Join(dir, "operator.crt"))
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if string(caPEM) != string(api.CA.PlatformCAPEM()) {
		t.Fatal("ca.pem is not the platform CA")
	}
	blk, _ := pem.Decode(keyPEM)
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		t.Fatalf("operator.key holds %T", key)
	}
	if err := checkIssued(string(certPEM), ek); err != nil {
		t.Fatal(err)
	}
	cblk, _ := pem.Decode(certPEM)
	cert, _ := x509.ParseCertificate(cblk.Bytes)
	if len(cert.URIs) != 1 || !strings.HasPrefix(cert.URIs[0].String(), "spiffe://tensorguardflow/tenant/acme/operator/") {
		t.Fatalf("operator certificate URIs %v", cert.URIs)
	}
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%v in:\n%s", err, s)
	}
}

// tamper runs SQL against the control plane's database behind its back.
func tamper(t *testing.T, dbPath, query string, args ...any) {
	t.Helper()
	db := openDB(t, dbPath)
	defer db.Close()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func openDB(t *testing.T, dbPath string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", dbPath)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec("PRAGMA busy_timeout = 5000"); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestAttestationHistory: tgctl attestation history against the real API,
// as a table and as JSON, newest first, --limit, and another tenant's
// device (404).
func TestAttestationHistory(t *testing.T) {
	t.Parallel()
	api, _ := startAPI(t)
	e := newEnv(t)
	login(t, e, api.Server.URL, api.AdminKey)
	ctx := context.Background()
	fleet, err := api.Store.CreateFleet(ctx, "acme", store.Fleet{Name: "sims", Policy: store.FleetPolicy{AllowSimulatedTPM: true}})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := api.Store.CreateDevice(ctx, "acme", store.Device{FleetID: fleet.ID, Name: "sim-1", TPMKind: store.TPMSimulator, EKFingerprint: "sha256:01"})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, st := range []store.VerdictState{store.VerdictTrusted, store.VerdictUntrusted} {
		rec := store.AttestationRecord{DeviceID: dev.ID, State: st, PCRDigest: "00112233445566778899aabbccddeeff",
			EvidenceAt: t0.Add(time.Duration(i) * time.Minute), VerdictAt: t0.Add(time.Duration(i)*time.Minute + time.Second)}
		if st == store.VerdictUntrusted {
			rec.Reasons = []byte(`[{"code":"PCR_POLICY","pcr":7}]`)
		}
		if _, err := api.Store.AppendAttestationHistory(ctx, "acme", rec); err != nil {
			t.Fatal(err)
		}
	}
	out := mustRun(t, e, "attestation", "history", dev.ID)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "VERDICT AT") ||
		!strings.Contains(lines[1], "untrusted") || !strings.Contains(lines[1], "PCR_POLICY(pcr7)") ||
		!strings.Contains(lines[2], "trusted") || !strings.Contains(lines[2], "2026-01-02T03:04:06Z") {
		t.Fatalf("attestation history:\n%s", out)
	}
	var recs []client.AttestationRecord
	mustJSON(t, mustRun(t, e, "attestation", "history", dev.ID, "--limit", "1", "-o", "json"), &recs)
	if len(recs) != 1 || recs[0].State != "untrusted" || len(recs[0].Reasons) != 1 || recs[0].Reasons[0].Code != "PCR_POLICY" {
		t.Fatalf("attestation history --limit 1 -o json: %+v", recs)
	}
	beta := api.AddTenant("beta")
	e2 := newEnv(t)
	login(t, e2, api.Server.URL, beta)
	if r := run(t, e2, "", "attestation", "history", dev.ID); r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("another tenant's device: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
}
