package keys_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/simulator"

	"github.com/tensorguard/tensorguardflow/agent/internal/keys"
	"github.com/tensorguard/tensorguardflow/agent/internal/state"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmdevtest"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// controlPlane is the control plane's side of a key grant: a package
// packed to its own recipient key, whose DEK it unwraps and re-wraps to a
// device.
type controlPlane struct {
	pkg    *tgsp.Package
	dek    *tgsp.DEK
	signer *tgsp.SignerPublicKey
}

func packPackage(t *testing.T) *controlPlane {
	t.Helper()
	signer, err := tgsp.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	cpKey, err := tgsp.GenerateRecipient(nil)
	if err != nil {
		t.Fatal(err)
	}
	in := t.TempDir()
	if err := os.WriteFile(filepath.Join(in, "model.onnx"), bytes.Repeat([]byte("weights "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := tgsp.Pack(&buf, in, tgsp.PackOptions{
		Name: "resnet", Version: "1.2.3", Signer: signer, Recipients: []*tgsp.RecipientPublicKey{cpKey.Public()},
	}); err != nil {
		t.Fatal(err)
	}
	pkg, err := tgsp.Open(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if err := pkg.VerifySignature([]*tgsp.SignerPublicKey{signer.Public()}, time.Now()); err != nil {
		t.Fatal(err)
	}
	dek, err := pkg.UnwrapDEK(cpKey)
	if err != nil {
		t.Fatal(err)
	}
	return &controlPlane{pkg: pkg, dek: dek, signer: signer.Public()}
}

// grant re-wraps the DEK to a device's KEM public key, as the control plane
// does for each device of a rollout.
func (cp *controlPlane) grant(t *testing.T, to *tgsp.RecipientPublicKey) []byte {
	t.Helper()
	g, err := cp.pkg.GrantKey(cp.dek, to)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func openState(t *testing.T, path string) *state.DB {
	t.Helper()
	db, err := state.Open(path, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newState(t *testing.T) *state.DB {
	t.Helper()
	db := openState(t, filepath.Join(t.TempDir(), "agent.db"))
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// backend is one way the device protects its key.
type backend struct {
	name       string
	protection string
	// open returns the TPM (nil for none) and a function that simulates
	// a reboot: it closes the TPM and returns it opened again.
	open func(t *testing.T) (tpm *tpmdev.Device, reboot func() *tpmdev.Device)
}

var backends = []backend{
	{"simulator", keys.ProtectionTPM, func(t *testing.T) (*tpmdev.Device, func() *tpmdev.Device) {
		// A fixed seed plays the role of the TPM's persistent state.
		open := func() *tpmdev.Device {
			sim, err := simulator.GetWithFixedSeedInsecure(42)
			if err != nil {
				t.Fatal(err)
			}
			return tpmdev.New(sim, tpmdev.KindSimulated)
		}
		d := open()
		t.Cleanup(func() { _ = d.Close() })
		return d, func() *tpmdev.Device {
			_ = d.Close()
			d = open()
			return d
		}
	}},
	{"swtpm", keys.ProtectionTPM, func(t *testing.T) (*tpmdev.Device, func() *tpmdev.Device) {
		s := tpmdevtest.StartSWTPM(t)
		d := s.Open(t)
		return d, func() *tpmdev.Device {
			_ = d.Close()
			s.Restart()
			d = s.Open(t)
			return d
		}
	}},
	{"no TPM", keys.ProtectionSoftware, func(t *testing.T) (*tpmdev.Device, func() *tpmdev.Device) {
		return nil, func() *tpmdev.Device { return nil }
	}},
}

func sealer(d *tpmdev.Device) keys.Sealer {
	if d == nil {
		return nil // not a typed nil: no TPM
	}
	return d
}

// TestOpenGrant runs the whole key-grant path with a real package: the
// control plane wraps the package's DEK to the device's KEM public key;
// the device opens the grant with its private key (unsealed by the TPM);
// the DEK is the package's and decrypts it; a grant for another device's
// key does not open; after a reboot (TPM and state reopened) the key is
// the same and still opens grants.
func TestOpenGrant(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			cp := packPackage(t)
			tpm, reboot := b.open(t)
			statePath := filepath.Join(t.TempDir(), "agent.db")
			db := openState(t, statePath)
			c := keys.New(db, sealer(tpm))

			if _, err := c.Public(); !errors.Is(err, keys.ErrNoKey) {
				t.Fatalf("Public before Generate: %v, want ErrNoKey", err)
			}
			if _, err := c.OpenGrant(cp.pkg, []byte("x")); !errors.Is(err, keys.ErrNoKey) {
				t.Fatalf("OpenGrant before Generate: %v, want ErrNoKey", err)
			}
			pub, err := c.Generate(nil)
			if err != nil {
				t.Fatal(err)
			}
			if p, err := c.Protection(); err != nil || p != b.protection {
				t.Fatalf("protection %q, %v; want %q", p, err, b.protection)
			}
			if stored, err := c.Public(); err != nil || !bytes.Equal(stored.Bytes(), pub.Bytes()) {
				t.Fatalf("stored public key differs (%v)", err)
			}

			dek, err := c.OpenGrant(cp.pkg, cp.grant(t, pub))
			if err != nil {
				t.Fatalf("OpenGrant: %v", err)
			}
			if !dek.Equal(cp.dek) {
				t.Fatal("the grant opened to another key than the package's DEK")
			}
			out := filepath.Join(t.TempDir(), "out")
			if err := cp.pkg.Unpack(context.Background(), dek, out, tgsp.UnpackOptions{}); err != nil {
				t.Fatalf("unpack with the granted DEK: %v", err)
			}

			// Another device (its own state and key; the same TPM, which
			// is the hardest case) cannot open this device's grant.
			other := keys.New(newState(t), sealer(tpm))
			otherPub, err := other.Generate(nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := other.OpenGrant(cp.pkg, cp.grant(t, pub)); !errors.Is(err, tgsp.ErrNotRecipient) {
				t.Fatalf("another device opened the grant: %v", err)
			}
			if _, err := c.OpenGrant(cp.pkg, cp.grant(t, otherPub)); !errors.Is(err, tgsp.ErrNotRecipient) {
				t.Fatalf("this device opened another's grant: %v", err)
			}

			// A reboot: the TPM and the state file come back, and so does
			// the key.
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			tpm = reboot()
			db = openState(t, statePath)
			defer db.Close()
			c = keys.New(db, sealer(tpm))
			if again, err := c.Public(); err != nil || !bytes.Equal(again.Bytes(), pub.Bytes()) {
				t.Fatalf("public key after reboot: %v", err)
			}
			if dek, err := c.OpenGrant(cp.pkg, cp.grant(t, pub)); err != nil || !dek.Equal(cp.dek) {
				t.Fatalf("OpenGrant after reboot: %v", err)
			}
		})
	}
}

func readRecord(t *testing.T, db *state.DB) map[string]any {
	t.Helper()
	raw, err := db.Get(keys.Namespace, "key")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestStoredForm: with a TPM the state file holds only the sealed blob, no
// private key; without one it holds the private key (and says so); a
// changed sealed blob is refused by the TPM; a TPM-sealed key cannot be
// used when no TPM is configured.
func TestStoredForm(t *testing.T) {
	tpm, _ := backends[0].open(t)
	db := newState(t)
	c := keys.New(db, tpm)
	pub, err := c.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := readRecord(t, db)
	if rec["protection"] != keys.ProtectionTPM || rec["private"] != nil || rec["sealed"] == nil {
		t.Fatalf("TPM record %v", rec)
	}

	soft := newState(t)
	if _, err := keys.New(soft, nil).Generate(nil); err != nil {
		t.Fatal(err)
	}
	if r := readRecord(t, soft); r["protection"] != keys.ProtectionSoftware || r["private"] == nil || r["sealed"] != nil {
		t.Fatalf("software record %v", r)
	}

	cp := packPackage(t)
	grant := cp.grant(t, pub)
	if _, err := keys.New(db, nil).OpenGrant(cp.pkg, grant); !errors.Is(err, keys.ErrProtection) {
		t.Fatalf("TPM-sealed key without a TPM: %v, want ErrProtection", err)
	}

	// Flip one byte of the sealed private area in the state file.
	raw, err := db.Get(keys.Namespace, "key")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Version    int    `json:"version"`
		Protection string `json:"protection"`
		Public     []byte `json:"public"`
		Sealed     []byte `json:"sealed"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	r.Sealed[len(r.Sealed)-1] ^= 1
	tampered, _ := json.Marshal(r)
	if err := db.Put(keys.Namespace, "key", tampered); err != nil {
		t.Fatal(err)
	}
	if _, err := c.OpenGrant(cp.pkg, grant); !errors.Is(err, tpmdev.ErrSealedBlob) {
		t.Fatalf("tampered sealed key: %v, want ErrSealedBlob", err)
	}
	if err := db.Put(keys.Namespace, "key", raw); err != nil {
		t.Fatal(err)
	}
	if _, err := c.OpenGrant(cp.pkg, grant); err != nil {
		t.Fatalf("restored record: %v", err)
	}
}

// TestRegistration: the registered flag belongs to one key; a new key
// (re-enrollment) is unregistered until recorded again.
func TestRegistration(t *testing.T) {
	t.Parallel()
	c := keys.New(newState(t), nil)
	if ok, err := c.Registered(); err != nil || ok {
		t.Fatalf("registered without a key: %v, %v", ok, err)
	}
	if err := c.SetRegistered(); !errors.Is(err, keys.ErrNoKey) {
		t.Fatalf("SetRegistered without a key: %v", err)
	}
	first, err := c.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Registered(); ok {
		t.Fatal("a new key is registered")
	}
	if err := c.SetRegistered(); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Registered(); err != nil || !ok {
		t.Fatalf("after SetRegistered: %v, %v", ok, err)
	}
	second, err := c.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Fatal("Generate returned the same key twice")
	}
	if ok, _ := c.Registered(); ok {
		t.Fatal("the new key inherited the old key's registration")
	}
}
