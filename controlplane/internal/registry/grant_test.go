package registry

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// grantFixture is a tenant with a pinned publisher, a pushed package, and
// a fleet with one trusted device holding a KEM key.
type grantFixture struct {
	e      *env
	signer *tgsp.SignerPrivateKey
	input  string // the packed directory
	pkg    store.Package
	raw    []byte
	fleet  store.Fleet
	dev    store.Device
	devKey *tgsp.RecipientPrivateKey
}

func newGrantFixture(t *testing.T, backend string, tune ...func(*Options)) *grantFixture {
	t.Helper()
	e := newEnv(t, backend, tune...)
	ctx := context.Background()
	f := &grantFixture{e: e, signer: e.publisher("acme", "ml"), input: modelDir(t, "grant")}
	f.raw = pack(t, f.input, tgsp.PackOptions{Name: "resnet", Version: "1.0.0", Signer: f.signer,
		Recipients: []*tgsp.RecipientPublicKey{e.recipient("acme")}, CreatedAt: e.clk.Now(), ExpiresAt: e.clk.Now().Add(72 * time.Hour)})
	var err error
	if f.pkg, _, _, err = e.push("acme", f.raw); err != nil {
		t.Fatal(err)
	}
	if f.fleet, err = e.st.CreateFleet(ctx, "acme", store.Fleet{Name: "edge"}); err != nil {
		t.Fatal(err)
	}
	f.dev, f.devKey = f.device(t, "acme", f.fleet.ID, store.TPMHardware, true)
	f.attest(t, f.dev, store.VerdictTrusted, e.clk.Now())
	return f
}

// device enrolls a device in fleet, with a KEM key if withKEM.
func (f *grantFixture) device(t *testing.T, tenant, fleet string, kind store.TPMKind, withKEM bool) (store.Device, *tgsp.RecipientPrivateKey) {
	t.Helper()
	k, err := tgsp.GenerateRecipient(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := store.Device{FleetID: fleet, Name: "d", DeviceType: "jetson-orin", TPMKind: kind}
	if kind != store.TPMNone {
		d.EKFingerprint, d.EKPublic, d.AKPublic = store.NewID("ek"), []byte("ek"), []byte("ak")
	}
	if withKEM {
		d.KEMPublic = k.Public().Bytes()
	}
	d, err = f.e.st.CreateDevice(context.Background(), tenant, d)
	if err != nil {
		t.Fatal(err)
	}
	return f.reload(t, d), k
}

func (f *grantFixture) reload(t *testing.T, d store.Device) store.Device {
	t.Helper()
	d, err := f.e.st.GetDevice(context.Background(), d.Tenant, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// attest stores a verdict for d as the attestation service would.
func (f *grantFixture) attest(t *testing.T, d store.Device, state store.VerdictState, at time.Time) {
	t.Helper()
	err := f.e.st.PutAttestationState(context.Background(), d.Tenant, store.AttestationState{
		DeviceID: d.ID, State: state, VerdictAt: at, EvidenceAt: at,
		Quarantined: state == store.VerdictUntrusted || state == store.VerdictStale,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// grant asks for the package key as d; it returns the grant and how often
// the audit callback ran.
func (f *grantFixture) grant(d store.Device, packageID string) (Grant, int, error) {
	n := 0
	g, err := f.e.reg.GrantKey(context.Background(), GrantRequest{Device: d, JobID: "job-1", PackageID: packageID},
		func(*store.Tx, Grant) error { n++; return nil })
	return g, n, err
}

// TestGrantDecrypts: a trusted device gets a grant that it, and only it,
// opens with its private key, and the package then decrypts to exactly the
// packed files. On SQLite and PostgreSQL.
func TestGrantDecrypts(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			f := newGrantFixture(t, b)
			g, audited, err := f.grant(f.dev, f.pkg.ID)
			if err != nil || audited != 1 {
				t.Fatalf("grant = %v, audited %d", err, audited)
			}
			if g.FleetID != f.fleet.ID || g.Package.ID != f.pkg.ID || len(g.Bytes) == 0 {
				t.Fatalf("grant = %+v", g)
			}
			// As the agent: verify, open the grant, unpack.
			p, err := tgsp.Open(bytes.NewReader(f.raw), int64(len(f.raw)))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.VerifySignature([]*tgsp.SignerPublicKey{f.signer.Public()}, f.e.clk.Now()); err != nil {
				t.Fatal(err)
			}
			other, _ := tgsp.GenerateRecipient(nil)
			if _, err := p.OpenGrant(g.Bytes, other); !errors.Is(err, tgsp.ErrNotRecipient) {
				t.Fatalf("another key opens the grant: %v", err)
			}
			dek, err := p.OpenGrant(g.Bytes, f.devKey)
			if err != nil {
				t.Fatalf("open grant: %v", err)
			}
			out := filepath.Join(t.TempDir(), "out")
			if err := p.Unpack(context.Background(), dek, out, tgsp.UnpackOptions{CheckDigests: true}); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"model.onnx", "weights/w.bin"} {
				want, _ := os.ReadFile(filepath.Join(f.input, name))
				got, err := os.ReadFile(filepath.Join(out, name))
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s decrypts to %d bytes (%v), want the %d packed", name, len(got), err, len(want))
				}
			}
		})
	}
}

// TestGrantRefusals: every reason to withhold a key is a refusal, nothing
// is audited, and the reason says what is wrong.
func TestGrantRefusals(t *testing.T) {
	t.Parallel()
	f := newGrantFixture(t, "sqlite")
	ctx := context.Background()
	st := f.e.st
	now := f.e.clk.Now()

	type tc struct {
		name    string
		setup   func(t *testing.T) (store.Device, string)
		mention string
	}
	cases := []tc{
		{"revoked", func(t *testing.T) (store.Device, string) {
			d, _ := f.device(t, "acme", f.fleet.ID, store.TPMHardware, true)
			f.attest(t, d, store.VerdictTrusted, now)
			if _, err := st.RevokeDevice(ctx, "acme", d.ID); err != nil {
				t.Fatal(err)
			}
			return f.reload(t, d), f.pkg.ID
		}, "revoked"},
		{"no KEM key", func(t *testing.T) (store.Device, string) {
			d, _ := f.device(t, "acme", f.fleet.ID, store.TPMHardware, false)
			f.attest(t, d, store.VerdictTrusted, now)
			return f.reload(t, d), f.pkg.ID
		}, "KEM"},
		{"quarantined", func(t *testing.T) (store.Device, string) {
			d, _ := f.device(t, "acme", f.fleet.ID, store.TPMHardware, true)
			f.attest(t, d, store.VerdictTrusted, now)
			if err := st.SetQuarantined(ctx, "acme", d.ID, true); err != nil {
				t.Fatal(err)
			}
			return f.reload(t, d), f.pkg.ID
		}, "quarantined"},
		{"untrusted", func(t *testing.T) (store.Device, string) {
			d, _ := f.device(t, "acme", f.fleet.ID, store.TPMHardware, true)
			f.attest(t, d, store.VerdictUntrusted, now)
			// Even if the flag were lifted, the verdict alone refuses.
			if err := st.SetQuarantined(ctx, "acme", d.ID, false); err != nil {
				t.Fatal(err)
			}
			return f.reload(t, d), f.pkg.ID
		}, "untrusted"},
		{"never attested", func(t *testing.T) (store.Device, string) {
			d, _ := f.device(t, "acme", f.fleet.ID, store.TPMHardware, true)
			return d, f.pkg.ID
		}, "unknown"},
		{"verdict too old", func(t *testing.T) (store.Device, string) {
			d, _ := f.device(t, "acme", f.fleet.ID, store.TPMHardware, true)
			f.attest(t, d, store.VerdictTrusted, now.Add(-3*DefaultAttestationInterval))
			return f.reload(t, d), f.pkg.ID
		}, "two attestation intervals"},
		{"no TPM, fleet does not allow it", func(t *testing.T) (store.Device, string) {
			d, _ := f.device(t, "acme", f.fleet.ID, store.TPMNone, true)
			return d, f.pkg.ID
		}, "allow_no_tpm"},
		{"other tenant's package", func(t *testing.T) (store.Device, string) {
			fl, err := st.CreateFleet(ctx, "beta", store.Fleet{Name: "edge"})
			if err != nil {
				t.Fatal(err)
			}
			d, _ := f.device(t, "beta", fl.ID, store.TPMHardware, true)
			f.attest(t, d, store.VerdictTrusted, now)
			return f.reload(t, d), f.pkg.ID
		}, "not in the registry"},
		{"unknown package", func(t *testing.T) (store.Device, string) {
			return f.dev, sha([]byte("nothing"))
		}, "not in the registry"},
		{"malformed package id", func(t *testing.T) (store.Device, string) {
			return f.dev, "resnet@1.0.0"
		}, "64 lowercase hex"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, pkg := c.setup(t)
			_, audited, err := f.grant(d, pkg)
			var re *GrantRefusedError
			if !errors.As(err, &re) || !errors.Is(err, ErrGrantRefused) || audited != 0 {
				t.Fatalf("grant = %v (audited %d), want a refusal", err, audited)
			}
			if !strings.Contains(re.Reason, c.mention) {
				t.Errorf("reason %q does not mention %q", re.Reason, c.mention)
			}
		})
	}

	// The trusted device of the fixture still gets its key: none of the
	// above was a false refusal.
	if _, _, err := f.grant(f.dev, f.pkg.ID); err != nil {
		t.Fatalf("trusted device refused: %v", err)
	}
}

// TestGrantNoTPMFleet: a device without a TPM gets keys while its fleet
// admits such devices, and not once the policy stops admitting them.
func TestGrantNoTPMFleet(t *testing.T) {
	t.Parallel()
	f := newGrantFixture(t, "sqlite")
	ctx := context.Background()
	fl, err := f.e.st.CreateFleet(ctx, "acme", store.Fleet{Name: "kiosks", Policy: store.FleetPolicy{AllowNoTPM: true}})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := f.device(t, "acme", fl.ID, store.TPMNone, true)
	if _, audited, err := f.grant(d, f.pkg.ID); err != nil || audited != 1 {
		t.Fatalf("no-TPM device in an allow_no_tpm fleet: %v (audited %d)", err, audited)
	}
	policy := store.FleetPolicy{AllowNoTPM: false}
	if _, err := f.e.st.UpdateFleet(ctx, "acme", fl.ID, store.FleetUpdate{Policy: &policy}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.grant(d, f.pkg.ID); !errors.Is(err, ErrGrantRefused) {
		t.Fatalf("after the fleet stopped admitting no-TPM devices: %v", err)
	}
}

// TestGrantPackageState: a package whose publisher was removed, or which
// expired after the push, is no longer released.
func TestGrantPackageState(t *testing.T) {
	t.Parallel()
	f := newGrantFixture(t, "sqlite")
	ctx := context.Background()
	// Expiry: move the clock past it (and keep the verdict fresh).
	f.e.clk.Advance(73 * time.Hour)
	f.attest(t, f.dev, store.VerdictTrusted, f.e.clk.Now())
	if _, _, err := f.grant(f.dev, f.pkg.ID); !errors.Is(err, ErrGrantRefused) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired package: %v", err)
	}

	g := newGrantFixture(t, "sqlite")
	if err := g.e.st.DeletePublisher(ctx, "acme", "ml"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.grant(g.dev, g.pkg.ID); !errors.Is(err, ErrGrantRefused) || !strings.Contains(err.Error(), "no longer a pinned publisher") {
		t.Fatalf("publisher removed: %v", err)
	}
}

// fakeAuthorizer stands where the rollout engine will: it names the fleet
// of a job, or refuses.
type fakeAuthorizer struct {
	fleet string
	err   error
	calls []string
}

func (a *fakeAuthorizer) Authorize(_ context.Context, tenant, device, jobID, packageID string) (string, error) {
	a.calls = append(a.calls, tenant+"/"+device+"/"+jobID+"/"+packageID)
	return a.fleet, a.err
}

// TestGrantAuthorizer: the authorizer is asked with the job and package,
// its refusal is the grant's, and a job of another fleet is refused even
// when the authorizer allows it.
func TestGrantAuthorizer(t *testing.T) {
	t.Parallel()
	az := &fakeAuthorizer{}
	f := newGrantFixture(t, "sqlite", func(o *Options) { o.Authorizer = az })
	az.err = Refuse("job job-1 is finished")
	if _, audited, err := f.grant(f.dev, f.pkg.ID); !errors.Is(err, ErrGrantRefused) || !strings.Contains(err.Error(), "finished") || audited != 0 {
		t.Fatalf("authorizer refusal: %v (audited %d)", err, audited)
	}
	if want := "acme/" + f.dev.ID + "/job-1/" + f.pkg.ID; len(az.calls) != 1 || az.calls[0] != want {
		t.Fatalf("authorizer calls %v, want [%s]", az.calls, want)
	}
	az.err, az.fleet = nil, store.NewID(store.PrefixFleet)
	if _, _, err := f.grant(f.dev, f.pkg.ID); !errors.Is(err, ErrGrantRefused) || !strings.Contains(err.Error(), az.fleet) {
		t.Fatalf("job of another fleet: %v", err)
	}
	az.fleet = f.fleet.ID
	if _, audited, err := f.grant(f.dev, f.pkg.ID); err != nil || audited != 1 {
		t.Fatalf("authorized: %v (audited %d)", err, audited)
	}
	// An error that is not a refusal is not dressed up as one.
	boom := errors.New("database down")
	az.err = boom
	if _, _, err := f.grant(f.dev, f.pkg.ID); !errors.Is(err, boom) || errors.Is(err, ErrGrantRefused) {
		t.Fatalf("authorizer failure: %v", err)
	}
}

// TestGrantAuditFailure: a grant whose audit entry cannot be written is not
// handed out.
func TestGrantAuditFailure(t *testing.T) {
	t.Parallel()
	f := newGrantFixture(t, "sqlite")
	boom := errors.New("audit failed")
	g, err := f.e.reg.GrantKey(context.Background(), GrantRequest{Device: f.dev, JobID: "j", PackageID: f.pkg.ID},
		func(*store.Tx, Grant) error { return boom })
	if !errors.Is(err, boom) || g.Bytes != nil {
		t.Fatalf("grant with a failing audit = %d bytes, %v", len(g.Bytes), err)
	}
}
