package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestPush walks a package through every outcome of a push, on SQLite and
// PostgreSQL.
func TestPush(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			ctx := context.Background()
			signer, err := tgsp.GenerateSigner(nil)
			if err != nil {
				t.Fatal(err)
			}
			cp := e.recipient("acme")
			dir := modelDir(t, "v1")
			dpCert := []byte(`{"schema":"tgsp.dp_cert.v1","epsilon":3,"delta":1e-5,"accountant":"rdp","noise_multiplier":1.1,"clipping_norm":1,"sampling_rate":0.01,"steps":1000,"dataset_size":60000}`)
			opts := tgsp.PackOptions{Name: "resnet", Version: "1.0.0", Signer: signer, Recipients: []*tgsp.RecipientPublicKey{cp},
				DPCert: dpCert, CreatedAt: e.clk.Now(), ExpiresAt: e.clk.Now().Add(30 * 24 * time.Hour)}
			raw := pack(t, dir, opts)

			// Signed by a key the tenant has not pinned.
			_, _, n, err := e.push("acme", raw)
			if !errors.Is(err, ErrUnknownPublisher) || n != 0 || !strings.Contains(err.Error(), signer.Public().KeyID()) {
				t.Fatalf("push before the publisher is pinned: %v (recorded %d)", err, n)
			}
			e.stagingEmpty()
			if _, err := e.st.CreatePublisher(ctx, "acme", store.Publisher{Name: "ml", KeyID: signer.Public().KeyID(), PublicKey: signer.Public().Bytes()}); err != nil {
				t.Fatal(err)
			}

			p, created, n, err := e.push("acme", raw)
			if err != nil || !created || n != 1 {
				t.Fatalf("push = %v, created %v, recorded %d", err, created, n)
			}
			if p.ID != sha(raw) || p.Name != "resnet" || p.Version != "1.0.0" || p.Size != int64(len(raw)) ||
				p.PublisherKeyID != signer.Public().KeyID() || !bytes.Equal(p.DPCert, dpCert) || p.Evidence != nil {
				t.Fatalf("pushed = %+v", p)
			}
			opened, err := tgsp.Open(bytes.NewReader(raw), int64(len(raw)))
			if err != nil {
				t.Fatal(err)
			}
			if p.SignedID != opened.ID() || !bytes.Equal(p.Manifest, opened.ManifestBytes) {
				t.Fatalf("signed id %s / manifest do not match the package's", p.SignedID)
			}
			if got, err := e.blobBytes("acme", p.ID); err != nil || !bytes.Equal(got, raw) {
				t.Fatalf("stored blob differs (%v)", err)
			}
			if _, err := os.Stat(filepath.Join(e.blobDir, "acme", "sha256", p.ID[:2], p.ID)); err != nil {
				t.Fatalf("blob layout: %v", err)
			}
			e.stagingEmpty()

			// The same bytes again: idempotent, nothing recorded.
			again, created, n, err := e.push("acme", raw)
			if err != nil || created || n != 0 || again.ID != p.ID || !again.CreatedAt.Equal(p.CreatedAt) {
				t.Fatalf("second push = %+v, created %v, recorded %d, %v", again, created, n, err)
			}
			// Other content under the same name and version (packing again
			// draws a new DEK): conflict, and its blob is not kept.
			other := pack(t, dir, opts)
			if sha(other) == sha(raw) {
				t.Fatal("two packs gave identical bytes")
			}
			_, _, n, err = e.push("acme", other)
			if !errors.Is(err, ErrConflict) || n != 0 || !strings.Contains(err.Error(), p.ID) {
				t.Fatalf("conflicting push: %v (recorded %d)", err, n)
			}
			if _, err := e.blobBytes("acme", sha(other)); !errors.Is(err, ErrBlobNotFound) {
				t.Fatalf("conflicting blob kept: %v", err)
			}
			e.stagingEmpty()

			// Tampered: a flipped payload byte (hash) and a flipped signature byte.
			for name, off := range map[string]int{"payload": 100, "signature": signatureOffset(t, raw) + 10} {
				bad := bytes.Clone(raw)
				bad[off] ^= 1
				_, _, n, err := e.push("acme", bad)
				if !errors.Is(err, ErrInvalidPackage) || n != 0 {
					t.Errorf("tampered %s: %v (recorded %d)", name, err, n)
				}
			}
			trunc := raw[:len(raw)-1]
			if _, _, _, err := e.push("acme", trunc); !errors.Is(err, ErrInvalidPackage) {
				t.Errorf("truncated: %v", err)
			}
			if _, _, _, err := e.push("acme", []byte("not a package at all, just some bytes of text")); !errors.Is(err, ErrInvalidPackage) {
				t.Errorf("garbage: %v", err)
			}

			// Not packed for this control plane.
			stranger, err := tgsp.GenerateRecipient(nil)
			if err != nil {
				t.Fatal(err)
			}
			o2 := opts
			o2.Version, o2.Recipients = "1.0.1", []*tgsp.RecipientPublicKey{stranger.Public()}
			_, _, _, err = e.push("acme", pack(t, dir, o2))
			if !errors.Is(err, ErrNotRecipient) || !strings.Contains(err.Error(), "tgctl package recipient") {
				t.Errorf("not for us: %v", err)
			}
			// A package for the stranger and us is fine.
			o2.Recipients = []*tgsp.RecipientPublicKey{stranger.Public(), cp}
			if _, created, _, err := e.push("acme", pack(t, dir, o2)); err != nil || !created {
				t.Errorf("two recipients: %v", err)
			}

			// Expired.
			o3 := opts
			o3.Version, o3.CreatedAt, o3.ExpiresAt = "0.9.0", e.clk.Now().Add(-48*time.Hour), e.clk.Now().Add(-time.Hour)
			if _, _, _, err := e.push("acme", pack(t, dir, o3)); !errors.Is(err, ErrExpired) {
				t.Errorf("expired: %v", err)
			}
			e.stagingEmpty()

			// Tenants are isolated: beta pins the same signer, but the
			// package was packed for acme's key, not beta's.
			if _, err := e.st.CreatePublisher(ctx, "beta", store.Publisher{Name: "ml", KeyID: signer.Public().KeyID(), PublicKey: signer.Public().Bytes()}); err != nil {
				t.Fatal(err)
			}
			if _, _, _, err := e.push("beta", raw); !errors.Is(err, ErrNotRecipient) {
				t.Errorf("acme's package pushed to beta: %v", err)
			}
			if _, err := e.reg.Lookup(ctx, "beta", p.ID); !errors.Is(err, ErrNotFound) {
				t.Errorf("beta finds acme's package: %v", err)
			}
			if e.recipient("beta").KeyID() == cp.KeyID() {
				t.Error("acme and beta share a recipient key")
			}

			// Lookup by id and by name@version.
			for _, ref := range []string{p.ID, "resnet@1.0.0"} {
				if got, err := e.reg.Lookup(ctx, "acme", ref); err != nil || got.ID != p.ID || !bytes.Equal(got.Manifest, p.Manifest) {
					t.Errorf("lookup %s = %+v, %v", ref, got.ID, err)
				}
			}
			for _, ref := range []string{"resnet@9.9.9", "resnet", strings.Repeat("0", 64), "../../etc"} {
				if _, err := e.reg.Lookup(ctx, "acme", ref); !errors.Is(err, ErrNotFound) {
					t.Errorf("lookup %q: %v", ref, err)
				}
			}
		})
	}
}

// signatureOffset finds the body of the package's SIGN section.
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

func TestPushTooLarge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sqlite", func(o *Options) { o.MaxPackageSize = 64 << 10 })
	signer := e.publisher("acme", "ml")
	raw := pack(t, modelDir(t, "big"), tgsp.PackOptions{Name: "m", Version: "1.0.0", Signer: signer,
		Recipients: []*tgsp.RecipientPublicKey{e.recipient("acme")}})
	if len(raw) <= 64<<10 {
		t.Fatalf("test package is only %d bytes", len(raw))
	}
	if _, _, _, err := e.push("acme", raw); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("push of %d bytes with a 64 KiB limit: %v", len(raw), err)
	}
	e.stagingEmpty()
}

// TestRecipientKeyCustody: the key is created once per tenant, stored only
// sealed under the tenant's data key, and every replica uses the same one.
func TestRecipientKeyCustody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sqlite")
	ctx := context.Background()
	if _, err := e.st.GetRecipientKey(ctx, "acme"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a key before first use: %v", err)
	}
	pub := e.recipient("acme")
	row, err := e.st.GetRecipientKey(ctx, "acme")
	if err != nil || row.KeyID != pub.KeyID() || !bytes.Equal(row.PublicKey, pub.Bytes()) {
		t.Fatalf("stored key = %+v, %v", row, err)
	}
	// The private key is sealed: opening it takes the tenant's data key
	// and this tenant's binding.
	priv, err := e.reg.recipientKey(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(row.WrappedKey, priv.MarshalPEM()) || bytes.Contains(row.WrappedKey, []byte("PRIVATE KEY")) {
		t.Fatal("the stored recipient key is not sealed")
	}
	if _, err := e.keys.Open(ctx, "beta", row.WrappedKey, e.reg.recipients.aad("acme")); err == nil {
		t.Fatal("acme's sealed key opens as beta's")
	}
	if _, err := e.keys.Open(ctx, "acme", row.WrappedKey, e.reg.recipients.aad("beta")); err == nil {
		t.Fatal("acme's sealed key opens under beta's binding")
	}
	// Another replica (a new registry over the same store) unseals the
	// same key instead of making one.
	other, err := New(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := other.RecipientPublicKey(ctx, "acme")
	if err != nil || k2.KeyID() != pub.KeyID() {
		t.Fatalf("second replica's key = %v, %v; want %s", k2, err, pub.KeyID())
	}
	// A key sealed for another tenant in acme's row is refused.
	beta := e.recipient("beta")
	_ = beta
	betaRow, err := e.st.GetRecipientKey(ctx, "beta")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.keys.Open(ctx, "acme", betaRow.WrappedKey, e.reg.recipients.aad("acme")); err == nil {
		t.Fatal("beta's sealed key opens as acme's")
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	var inUse string
	e := newEnv(t, "sqlite", func(o *Options) {
		o.InUse = func(context.Context, *store.Tx, string, string) (string, error) { return inUse, nil }
	})
	ctx := context.Background()
	signer := e.publisher("acme", "ml")
	raw := pack(t, modelDir(t, "d"), tgsp.PackOptions{Name: "m", Version: "1.0.0", Signer: signer,
		Recipients: []*tgsp.RecipientPublicKey{e.recipient("acme")}})
	p, _, _, err := e.push("acme", raw)
	if err != nil {
		t.Fatal(err)
	}
	inUse = "rollout rol-1"
	if _, err := e.reg.Delete(ctx, "acme", p.ID, nil); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "rol-1") {
		t.Fatalf("delete while in use: %v", err)
	}
	if _, err := e.blobBytes("acme", p.ID); err != nil {
		t.Fatalf("refused delete removed the blob: %v", err)
	}
	inUse = ""
	if _, err := e.reg.Delete(ctx, "beta", p.ID, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("beta deletes acme's package: %v", err)
	}
	recorded := 0
	got, err := e.reg.Delete(ctx, "acme", "m@1.0.0", func(*store.Tx, store.Package) error { recorded++; return nil })
	if err != nil || got.ID != p.ID || recorded != 1 {
		t.Fatalf("delete = %+v, %v, recorded %d", got, err, recorded)
	}
	if _, err := e.blobBytes("acme", p.ID); !errors.Is(err, ErrBlobNotFound) {
		t.Fatalf("blob after delete: %v", err)
	}
	if _, err := e.reg.Lookup(ctx, "acme", p.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("record after delete: %v", err)
	}
	// A failing audit keeps the package.
	p, _, _, err = e.push("acme", raw)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("audit failed")
	if _, err := e.reg.Delete(ctx, "acme", p.ID, func(*store.Tx, store.Package) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("delete with a failing audit: %v", err)
	}
	if _, err := e.blobBytes("acme", p.ID); err != nil {
		t.Fatalf("blob gone after a failed delete: %v", err)
	}
}

// TestPushRecordFailure: when the record's transaction fails, nothing is
// left behind: no record, no blob.
func TestPushRecordFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sqlite")
	signer := e.publisher("acme", "ml")
	raw := pack(t, modelDir(t, "f"), tgsp.PackOptions{Name: "m", Version: "1.0.0", Signer: signer,
		Recipients: []*tgsp.RecipientPublicKey{e.recipient("acme")}})
	boom := errors.New("audit failed")
	_, _, err := e.reg.Push(context.Background(), "acme", bytes.NewReader(raw), func(*store.Tx, store.Package) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("push = %v", err)
	}
	if _, err := e.reg.Lookup(context.Background(), "acme", sha(raw)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("record kept: %v", err)
	}
	if _, err := e.blobBytes("acme", sha(raw)); !errors.Is(err, ErrBlobNotFound) {
		t.Fatalf("blob kept: %v", err)
	}
	e.stagingEmpty()
}

func TestLocalBlobsRefusesBadNames(t *testing.T) {
	t.Parallel()
	l, err := NewLocalBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range [][2]string{{"../x", sha([]byte("a"))}, {"acme", "../../etc/passwd"}, {"acme", strings.ToUpper(sha([]byte("a")))}} {
		if _, err := l.Open(ctx, c[0], c[1]); err == nil || errors.Is(err, ErrBlobNotFound) {
			t.Errorf("Open(%q, %q) = %v", c[0], c[1], err)
		}
		if err := l.Delete(ctx, c[0], c[1]); err == nil {
			t.Errorf("Delete(%q, %q) accepted", c[0], c[1])
		}
	}
}

// TestStagingSweep: New removes uploads abandoned a day ago, and only
// those.
func TestStagingSweep(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sqlite")
	old := filepath.Join(e.opts.StagingDir, stagingPrefix+"old.tgsp")
	fresh := filepath.Join(e.opts.StagingDir, stagingPrefix+"fresh.tgsp")
	for _, f := range []string{old, fresh} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-25 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if _, err := New(e.opts); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("abandoned upload kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh upload removed: %v", err)
	}
}
