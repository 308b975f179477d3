package tgctl

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// TestPackageJourney: a publisher pins its key, packs to the key `tgctl
// package recipient` wrote, pushes, lists, inspects, downloads and deletes,
// all through tgctl against the real API.
func TestPackageJourney(t *testing.T) {
	t.Parallel()
	api, _ := startAPI(t)
	e := newEnv(t)
	login(t, e, api.Server.URL, api.AdminKey)
	dir := t.TempDir()
	signerPrefix := filepath.Join(dir, "signer")
	signerID, err := tgsp.WriteKeyPair(signerPrefix, tgsp.KindSigner, nil)
	if err != nil {
		t.Fatal(err)
	}

	// The recipient key, to stdout and to a file: the same PEM.
	pemOut := mustRun(t, e, "package", "recipient")
	cpPub := filepath.Join(dir, "cp.pub")
	mustRun(t, e, "package", "recipient", "--out", cpPub)
	if b, _ := os.ReadFile(cpPub); string(b) != pemOut || !strings.Contains(pemOut, "TGSP RECIPIENT PUBLIC KEY") {
		t.Fatalf("recipient key: stdout %q, file %q", pemOut, b)
	}
	rcpt, err := tgsp.LoadRecipientPublicKey(cpPub)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := tgsp.LoadSignerPrivateKey(signerPrefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dir, "model")
	if err := os.MkdirAll(model, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(model, "model.onnx"), bytes.Repeat([]byte("w"), 100000), 0o644); err != nil {
		t.Fatal(err)
	}
	pkgFile := filepath.Join(dir, "resnet.tgsp")
	f, err := os.Create(pkgFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tgsp.Pack(f, model, tgsp.PackOptions{Name: "resnet", Version: "1.2.0", Signer: signer, Recipients: []*tgsp.RecipientPublicKey{rcpt},
		DPCert: []byte(`{"schema":"tgsp.dp_cert.v1","epsilon":3,"delta":1e-5,"accountant":"rdp","noise_multiplier":1.1,"clipping_norm":1,"sampling_rate":0.01,"steps":500,"dataset_size":1000}`)}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	raw, _ := os.ReadFile(pkgFile)

	// Not yet pinned: refused, naming the code and the key.
	r := run(t, e, "", "package", "push", pkgFile)
	if r.code != 1 || !strings.Contains(r.stderr, "UNKNOWN_PUBLISHER") || !strings.Contains(r.stderr, signerID) {
		t.Fatalf("push before pinning: exit %d, %q", r.code, r.stderr)
	}
	if r := run(t, e, "", "publisher", "add", "ml"); r.code != 2 || !strings.Contains(r.stderr, "--key") {
		t.Fatalf("publisher add without --key: exit %d, %q", r.code, r.stderr)
	}
	if r := run(t, e, "", "publisher", "add", "ml", "--key", cpPub); r.code != 1 || !strings.Contains(r.stderr, "SIGNER PUBLIC KEY") {
		t.Fatalf("publisher add with a recipient key: exit %d, %q", r.code, r.stderr)
	}
	var pub client.Publisher
	mustJSON(t, mustRun(t, e, "publisher", "add", "ml", "--key", signerPrefix+".pub", "-o", "json"), &pub)
	if pub.Name != "ml" || pub.KeyID != signerID {
		t.Fatalf("publisher %+v", pub)
	}
	if out := mustRun(t, e, "publisher", "list"); !strings.Contains(out, signerID) {
		t.Fatalf("publisher list:\n%s", out)
	}

	out := mustRun(t, e, "package", "push", pkgFile)
	if !strings.Contains(out, "resnet@1.2.0 pushed") {
		t.Fatalf("push:\n%s", out)
	}
	if out := mustRun(t, e, "package", "push", pkgFile); !strings.Contains(out, "already stored") {
		t.Fatalf("second push:\n%s", out)
	}
	var pkgs []client.Package
	mustJSON(t, mustRun(t, e, "package", "list", "-o", "json"), &pkgs)
	if len(pkgs) != 1 || pkgs[0].Name != "resnet" || pkgs[0].Size != int64(len(raw)) {
		t.Fatalf("package list %+v", pkgs)
	}
	id := pkgs[0].ID
	if out := mustRun(t, e, "package", "get", "resnet@1.2.0"); !strings.Contains(out, "ε=3 δ=1e-05 (rdp") || !strings.Contains(out, id) ||
		!strings.Contains(out, "1 (100000 bytes)") {
		t.Fatalf("package get:\n%s", out)
	}
	dl := filepath.Join(dir, "copy.tgsp")
	mustRun(t, e, "package", "download", id, "--out", dl)
	if got, _ := os.ReadFile(dl); !bytes.Equal(got, raw) {
		t.Fatal("downloaded file differs from the pushed one")
	}
	if r := run(t, e, "", "package", "download", id, "--out", dl); r.code != 1 || !strings.Contains(r.stderr, "exists") {
		t.Fatalf("download over an existing file: exit %d, %q", r.code, r.stderr)
	}
	mustRun(t, e, "package", "delete", "resnet@1.2.0")
	if r := run(t, e, "", "package", "get", id); r.code != 1 || !strings.Contains(r.stderr, "NOT_FOUND") {
		t.Fatalf("get after delete: exit %d, %q", r.code, r.stderr)
	}
	mustRun(t, e, "publisher", "remove", "ml")
	mustJSON(t, mustRun(t, e, "publisher", "list", "-o", "json"), &pkgs)
	if len(pkgs) != 0 {
		t.Fatalf("publishers after remove: %+v", pkgs)
	}
}
