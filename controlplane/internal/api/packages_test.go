package api_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
	"github.com/tensorguard/tensorguardflow/internal/audit"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// kit packs TGSP packages for a test: one signer, the tenant's control
// plane recipient key as fetched through the API, a small model tree.
type kit struct {
	t         *testing.T
	signer    *tgsp.SignerPrivateKey
	recipient *tgsp.RecipientPublicKey
	dir       string
	now       time.Time
}

func newKit(t *testing.T, c *client, key string) *kit {
	t.Helper()
	signer, err := tgsp.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	var rk api.RecipientKey
	c.call("GET", "/api/v1/packages/recipient", "/api/v1/packages/recipient", key, nil, 200, &rk)
	rcpt, err := tgsp.ParseRecipientPublicKey([]byte(rk.PublicKeyPEM))
	if err != nil || rcpt.KeyID() != rk.KeyID {
		t.Fatalf("recipient key %+v: %v", rk, err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "model.onnx"), bytes.Repeat([]byte("model bytes "), 30000), 0o644); err != nil {
		t.Fatal(err)
	}
	return &kit{t: t, signer: signer, recipient: rcpt, dir: dir, now: c.clk.Now()}
}

// pack builds name@version; tune may change the options.
func (k *kit) pack(name, version string, tune ...func(*tgsp.PackOptions)) []byte {
	k.t.Helper()
	o := tgsp.PackOptions{Name: name, Version: version, Signer: k.signer, Recipients: []*tgsp.RecipientPublicKey{k.recipient},
		CreatedAt: k.now, ExpiresAt: k.now.Add(30 * 24 * time.Hour),
		DPCert: []byte(`{"schema":"tgsp.dp_cert.v1","epsilon":2.5,"delta":1e-5,"accountant":"rdp","noise_multiplier":1.1,"clipping_norm":1,"sampling_rate":0.01,"steps":100,"dataset_size":1000}`)}
	for _, f := range tune {
		f(&o)
	}
	var b bytes.Buffer
	if _, err := tgsp.Pack(&b, k.dir, o); err != nil {
		k.t.Fatal(err)
	}
	return b.Bytes()
}

func (k *kit) publisherCreate(name string) api.PublisherCreate {
	return api.PublisherCreate{Name: name, PublicKeyPEM: string(k.signer.Public().MarshalPEM())}
}

func fileID(raw []byte) string {
	h := sha256.Sum256(raw)
	return hex.EncodeToString(h[:])
}

// push sends raw as a package push and checks the answer against the
// OpenAPI document.
func (c *client) push(key string, raw []byte, want int, out any) []byte {
	c.t.Helper()
	st, hdr, body := rawDo(c.t, c, "POST", "/api/v1/packages", key, "application/octet-stream", raw, false)
	if st != want {
		c.t.Fatalf("push: status %d, want %d; body %s", st, want, body)
	}
	checkResponse(c.t, "POST", "/api/v1/packages", st, hdr, body)
	if st < 300 {
		c.covered["POST /api/v1/packages"] = true
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			c.t.Fatal(err)
		}
	}
	return body
}

// get downloads a package file with extra request headers.
func (c *client) get(pattern, path, key string, hdrs map[string]string) (int, http.Header, []byte) {
	c.t.Helper()
	req, err := http.NewRequest("GET", c.env.Server.URL+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	for k, v := range hdrs {
		req.Header.Set(k, v)
	}
	resp, err := c.env.Server.Client().Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		checkResponse(c.t, "GET", pattern, resp.StatusCode, resp.Header, body)
	}
	if resp.StatusCode < 300 {
		c.covered["GET "+pattern] = true
	}
	return resp.StatusCode, resp.Header, body
}

// runPackageCRUD walks publishers and packages through their happy paths
// (part of TestCRUD, on both databases).
func runPackageCRUD(t *testing.T, c *client) {
	admin := c.env.AdminKey
	auditBefore := auditLen(t, c.env.Store, "acme")
	k := newKit(t, c, admin)

	var pub api.Publisher
	c.call("POST", "/api/v1/publishers", "/api/v1/publishers", admin, k.publisherCreate("ml-team"), 201, &pub)
	if pub.Name != "ml-team" || pub.KeyID != k.signer.Public().KeyID() || pub.PublicKeyPEM != string(k.signer.Public().MarshalPEM()) {
		t.Errorf("publisher = %+v", pub)
	}
	c.wantError("POST", "/api/v1/publishers", "/api/v1/publishers", admin, k.publisherCreate("again"), 409, "CONFLICT")
	c.wantError("POST", "/api/v1/publishers", "/api/v1/publishers", admin, k.publisherCreate(pub.KeyID), 400, "BAD_REQUEST")
	c.wantError("POST", "/api/v1/publishers", "/api/v1/publishers", admin,
		api.PublisherCreate{Name: "x", PublicKeyPEM: string(k.recipient.MarshalPEM())}, 400, "BAD_REQUEST")
	var pubs []api.Publisher
	c.call("GET", "/api/v1/publishers", "/api/v1/publishers", admin, nil, 200, &pubs)
	if len(pubs) != 1 || pubs[0] != pub {
		t.Errorf("publishers = %+v", pubs)
	}
	for _, ref := range []string{"ml-team", pub.KeyID} {
		var got api.Publisher
		c.call("GET", "/api/v1/publishers/{publisher}", "/api/v1/publishers/"+ref, admin, nil, 200, &got)
		if got != pub {
			t.Errorf("publisher %s = %+v", ref, got)
		}
	}

	raw := k.pack("resnet", "1.0.0")
	var pkg api.Package
	c.push(admin, raw, 201, &pkg)
	if pkg.ID != fileID(raw) || pkg.Name != "resnet" || pkg.Version != "1.0.0" || pkg.Size != int64(len(raw)) || pkg.PublisherKeyID != pub.KeyID {
		t.Errorf("pushed = %+v", pkg)
	}
	var again api.Package
	c.push(admin, raw, 200, &again)
	if again != pkg {
		t.Errorf("idempotent push = %+v, want %+v", again, pkg)
	}
	var list []api.Package
	c.call("GET", "/api/v1/packages", "/api/v1/packages", admin, nil, 200, &list)
	if len(list) != 1 || list[0] != pkg {
		t.Errorf("packages = %+v", list)
	}
	c.call("GET", "/api/v1/packages", "/api/v1/packages?name=bert", admin, nil, 200, &list)
	if len(list) != 0 {
		t.Errorf("packages named bert = %+v", list)
	}
	for _, ref := range []string{pkg.ID, "resnet@1.0.0"} {
		var d api.PackageDetail
		c.call("GET", "/api/v1/packages/{package}", "/api/v1/packages/"+ref, admin, nil, 200, &d)
		var dp tgsp.DPCert
		if d.Package != pkg || json.Unmarshal(d.DPCert, &dp) != nil || dp.Epsilon != 2.5 || string(d.Evidence) != "null" {
			t.Errorf("package %s = %+v (dp_cert %s)", ref, d.Package, d.DPCert)
		}
		var m tgsp.Manifest
		if err := json.Unmarshal(d.Manifest, &m); err != nil || m.Name != "resnet" || m.PublisherKeyID != pub.KeyID {
			t.Errorf("manifest %s: %v", d.Manifest, err)
		}
	}
	st, hdr, body := c.get("/api/v1/packages/{package}/blob", "/api/v1/packages/"+pkg.ID+"/blob", admin, nil)
	if st != 200 || !bytes.Equal(body, raw) || hdr.Get("ETag") != `"`+pkg.ID+`"` || hdr.Get("Accept-Ranges") != "bytes" {
		t.Errorf("download: %d, %d bytes, ETag %q", st, len(body), hdr.Get("ETag"))
	}
	c.call("DELETE", "/api/v1/packages/{package}", "/api/v1/packages/resnet@1.0.0", admin, nil, 204, nil)
	c.wantError("GET", "/api/v1/packages/{package}", "/api/v1/packages/"+pkg.ID, admin, nil, 404, "NOT_FOUND")
	c.wantError("GET", "/api/v1/packages/{package}/blob", "/api/v1/packages/"+pkg.ID+"/blob", admin, nil, 404, "NOT_FOUND")
	c.call("DELETE", "/api/v1/publishers/{publisher}", "/api/v1/publishers/ml-team", admin, nil, 204, nil)
	c.wantError("GET", "/api/v1/publishers/{publisher}", "/api/v1/publishers/ml-team", admin, nil, 404, "NOT_FOUND")

	var page api.AuditPage
	c.call("GET", "/api/v1/audit", "/api/v1/audit?after="+strconv.Itoa(auditBefore), admin, nil, 200, &page)
	var actions []string
	for _, e := range page.Entries {
		actions = append(actions, e.Action)
	}
	if got, want := strings.Join(actions, " "), "publisher.create package.push package.delete publisher.delete"; got != want {
		t.Errorf("audit actions %q, want %q", got, want)
	}
	if len(page.Entries) == 4 {
		var det map[string]any
		_ = json.Unmarshal(page.Entries[1].Details, &det)
		if page.Entries[1].Target != pkg.ID || det["name"] != "resnet" || det["version"] != "1.0.0" {
			t.Errorf("package.push entry: target %s details %s", page.Entries[1].Target, page.Entries[1].Details)
		}
	}
	var all api.AuditPage
	c.call("GET", "/api/v1/audit", "/api/v1/audit?limit=1000", admin, nil, 200, &all)
	if _, err := audit.Verify(all.Entries, audit.VerifyOptions{Tenant: "acme"}); err != nil {
		t.Errorf("audit chain: %v", err)
	}
}

// signatureOffset finds the body of a package's SIGN section.
func signatureOffset(t *testing.T, raw []byte) int {
	t.Helper()
	var hdr [12]byte
	copy(hdr[:], "SIGN")
	binary.BigEndian.PutUint64(hdr[4:], tgsp.SignatureSize)
	i := bytes.LastIndex(raw, hdr[:])
	if i < 0 {
		t.Fatal("no signature section")
	}
	return i + len(hdr)
}

// TestPackagePushRefusals: every kind of bad push gets its status and
// code, and none of them stores or audits anything.
func TestPackagePushRefusals(t *testing.T) {
	t.Parallel()
	c := newClient(t, "")
	admin := c.env.AdminKey
	k := newKit(t, c, admin)
	raw := k.pack("resnet", "1.0.0")

	wantPush := func(name string, body []byte, ctype string, status int, code, mention string) {
		t.Helper()
		st, hdr, out := rawDo(t, c, "POST", "/api/v1/packages", admin, ctype, body, false)
		if st != status || errCode(out) != code || !strings.Contains(string(out), mention) {
			t.Errorf("%s: %d %s, want %d %s mentioning %q", name, st, out, status, code, mention)
			return
		}
		checkResponse(t, "POST", "/api/v1/packages", st, hdr, out)
	}
	before := auditLen(t, c.env.Store, "acme")
	wantPush("unknown publisher", raw, "application/octet-stream", 422, "UNKNOWN_PUBLISHER", k.signer.Public().KeyID())
	c.call("POST", "/api/v1/publishers", "/api/v1/publishers", admin, k.publisherCreate("ml"), 201, nil)
	before++

	payload := bytes.Clone(raw)
	payload[200] ^= 0x80
	wantPush("tampered payload", payload, "application/octet-stream", 422, "INVALID_PACKAGE", "hash mismatch")
	sig := bytes.Clone(raw)
	sig[signatureOffset(t, raw)+7] ^= 1
	wantPush("tampered signature", sig, "application/octet-stream", 422, "INVALID_PACKAGE", "signature")
	wantPush("truncated", raw[:len(raw)/2], "application/octet-stream", 422, "INVALID_PACKAGE", "malformed")
	stranger, _ := tgsp.GenerateRecipient(nil)
	wantPush("not for this control plane", k.pack("resnet", "1.0.1", func(o *tgsp.PackOptions) {
		o.Recipients = []*tgsp.RecipientPublicKey{stranger.Public()}
	}), "application/octet-stream", 422, "NOT_A_RECIPIENT", "tgctl package recipient")
	wantPush("expired", k.pack("resnet", "0.1.0", func(o *tgsp.PackOptions) {
		o.CreatedAt, o.ExpiresAt = k.now.Add(-72*time.Hour), k.now.Add(-time.Hour)
	}), "application/octet-stream", 422, "PACKAGE_EXPIRED", "expired")
	wantPush("JSON body", []byte(`{"name":"x"}`), "application/json", 415, "UNSUPPORTED_MEDIA_TYPE", "octet-stream")
	wantPush("no content type", raw, "", 415, "UNSUPPORTED_MEDIA_TYPE", "octet-stream")
	if n := auditLen(t, c.env.Store, "acme"); n != before {
		t.Errorf("refused pushes left %d audit entries", n-before)
	}
	var list []api.Package
	c.call("GET", "/api/v1/packages", "/api/v1/packages", admin, nil, 200, &list)
	if len(list) != 0 {
		t.Errorf("refused pushes stored %+v", list)
	}

	// Stored once; the same file again is 200; other content under the
	// same name and version is 409 naming the stored id.
	var pkg api.Package
	c.push(admin, raw, 201, &pkg)
	c.push(admin, raw, 200, nil)
	wantPush("conflicting content", k.pack("resnet", "1.0.0"), "application/octet-stream", 409, "CONFLICT", pkg.ID)
	if n := auditLen(t, c.env.Store, "acme"); n != before+1 {
		t.Errorf("audit grew by %d, want 1 (one stored push)", n-before)
	}

	// A viewer may read but not push.
	viewer := c.env.Key("acme", "vera", "viewer")
	wantPushAs := func(key string, status int, code string) {
		t.Helper()
		st, _, out := rawDo(t, c, "POST", "/api/v1/packages", key, "application/octet-stream", raw, false)
		if st != status || errCode(out) != code {
			t.Errorf("push as viewer: %d %s", st, out)
		}
	}
	wantPushAs(viewer, 403, "FORBIDDEN")
	c.call("GET", "/api/v1/packages/{package}", "/api/v1/packages/"+pkg.ID, viewer, nil, 200, nil)

	// A package in use by a rollout cannot be deleted (the rollout engine's
	// hook, exercised here through the store's foreign-key rule in the
	// registry tests).
	c.wantError("DELETE", "/api/v1/packages/{package}", "/api/v1/packages/resnet@9.9.9", admin, nil, 404, "NOT_FOUND")
}

// TestPackagePushTooLarge: a push whose announced length exceeds the limit
// is refused before its body is read.
func TestPackagePushTooLarge(t *testing.T) {
	t.Parallel()
	c := newClient(t, "")
	max := c.env.Packages.MaxPackageSize()
	// Over a raw connection: only the headers and a few bytes are sent, so
	// an answer proves the server did not wait for the announced body.
	conn, err := net.Dial("tcp", strings.TrimPrefix(c.env.Server.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "POST /api/v1/packages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\nTGSP", c.env.AdminKey, max+1)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("announced %d bytes: %v", max+1, err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || errCode(out) != "PAYLOAD_TOO_LARGE" {
		t.Fatalf("announced %d bytes: %d %s", max+1, resp.StatusCode, out)
	}
	checkResponse(t, "POST", "/api/v1/packages", resp.StatusCode, resp.Header, out)
}

// TestPackageDownloadRanges: the file is served with ranges; a download
// interrupted at any offset and resumed from there gives identical bytes.
func TestPackageDownloadRanges(t *testing.T) {
	t.Parallel()
	c := newClient(t, "")
	admin := c.env.AdminKey
	k := newKit(t, c, admin)
	c.call("POST", "/api/v1/publishers", "/api/v1/publishers", admin, k.publisherCreate("ml"), 201, nil)
	raw := k.pack("resnet", "1.0.0")
	var pkg api.Package
	c.push(admin, raw, 201, &pkg)
	pattern, path := "/api/v1/packages/{package}/blob", "/api/v1/packages/"+pkg.ID+"/blob"

	for _, cut := range []int{1, 4096, len(raw) / 3, len(raw) - 1} {
		st, hdr, head := c.get(pattern, path, admin, map[string]string{"Range": "bytes=0-" + strconv.Itoa(cut-1)})
		if st != 206 || len(head) != cut || hdr.Get("Content-Range") != "bytes 0-"+strconv.Itoa(cut-1)+"/"+strconv.Itoa(len(raw)) {
			t.Fatalf("first part to %d: %d, %d bytes, %q", cut, st, len(head), hdr.Get("Content-Range"))
		}
		// Resume, as the agent does: from the offset, if the file is still
		// the same one (If-Range with the ETag).
		st, _, tail := c.get(pattern, path, admin, map[string]string{"Range": "bytes=" + strconv.Itoa(cut) + "-", "If-Range": hdr.Get("ETag")})
		if st != 206 || !bytes.Equal(append(head, tail...), raw) {
			t.Fatalf("resumed at %d: %d, the joined parts differ from the file", cut, st)
		}
	}
	// A stale If-Range gets the whole file, a range past the end 416.
	if st, _, body := c.get(pattern, path, admin, map[string]string{"Range": "bytes=10-", "If-Range": `"another"`}); st != 200 || !bytes.Equal(body, raw) {
		t.Errorf("stale If-Range: %d, %d bytes", st, len(body))
	}
	if st, _, _ := c.get(pattern, path, admin, map[string]string{"Range": "bytes=" + strconv.Itoa(len(raw)+10) + "-"}); st != 416 {
		t.Errorf("range past the end: %d", st)
	}
	// Another tenant cannot download it.
	beta := c.env.AddTenant("beta")
	c.wantError("GET", pattern, path, beta, nil, 404, "NOT_FOUND")
}
