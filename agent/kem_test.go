package agent_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/simulator"

	"github.com/tensorguard/tensorguardflow/agent"
	"github.com/tensorguard/tensorguardflow/agent/internal/enroll/enrolltest"
	"github.com/tensorguard/tensorguardflow/agent/internal/keys"
	"github.com/tensorguard/tensorguardflow/agent/internal/state"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// grantFor packs a package to a control-plane recipient key, unwraps its
// DEK with that key and re-wraps it to the device's KEM public key, as the
// control plane does for a rollout. It returns the verified package, the
// grant and the DEK.
func grantFor(t *testing.T, devicePub []byte) (*tgsp.Package, []byte, *tgsp.DEK) {
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
	if err := os.WriteFile(filepath.Join(in, "model.onnx"), []byte("weights"), 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := tgsp.Pack(&buf, in, tgsp.PackOptions{Name: "m", Version: "1.0.0", Signer: signer,
		Recipients: []*tgsp.RecipientPublicKey{cpKey.Public()}}); err != nil {
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
	to, err := tgsp.ParseRecipientPublicKeyBytes(devicePub)
	if err != nil {
		t.Fatalf("the control plane holds no valid KEM key for the device: %v", err)
	}
	grant, err := pkg.GrantKey(dek, to)
	if err != nil {
		t.Fatal(err)
	}
	return pkg, grant, dek
}

// deviceKeys opens a stopped agent's state and TPM (the simulator with the
// test config's fixed seed; nil for tpm.none) the way the install pipeline
// will, and returns its key custodian and a function closing both (the
// simulator is a process-wide singleton: close it before the agent runs
// again).
func deviceKeys(t *testing.T, cfg *agent.Config) (*keys.Custodian, func()) {
	t.Helper()
	db, err := state.Open(cfg.StatePath, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TPM.None {
		return keys.New(db, nil), func() { _ = db.Close() }
	}
	sim, err := simulator.GetWithFixedSeedInsecure(*cfg.TPM.SimulatorSeed)
	if err != nil {
		_ = db.Close()
		t.Fatal(err)
	}
	dev := tpmdev.New(sim, tpmdev.KindSimulated)
	return keys.New(db, dev), func() { _ = dev.Close(); _ = db.Close() }
}

func quietAgent(t *testing.T, cfg *agent.Config) *agent.Agent {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := agent.New(cfg, logger, agent.WithNotifier(&notifier{}), agent.WithRetry(20*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestKEMKeyAtEnrollment: enrolling generates the device's package
// decryption key, seals it with the TPM and sends its public part, which
// the control plane stores; a grant to that public key opens on the
// device with the sealed key; the key is kept across restarts (a second
// Enroll and a Run register nothing new); a re-enrollment makes a new key.
// With and without a TPM.
func TestKEMKeyAtEnrollment(t *testing.T) {
	for _, tc := range []struct {
		name       string
		none       bool
		protection string
	}{
		{"simulator", false, keys.ProtectionTPM},
		{"no TPM", true, keys.ProtectionSoftware},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := enrolltest.Start(t, enrolltest.Options{AllowNoTPM: true})
			cp.AddToken("tok-1", time.Now().Add(time.Hour))
			cfg := testConfig(t, cp, "mqtts://127.0.0.1:1")
			if tc.none {
				cfg.TPM = agent.TPMConfig{None: true}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			st, fresh, err := quietAgent(t, cfg).Enroll(ctx)
			if err != nil || !fresh {
				t.Fatalf("enroll: %v (fresh %v)", err, fresh)
			}
			if st.KEMKey != tc.protection || !st.KEMKeyRegistered {
				t.Fatalf("status: kem_key %q registered %v; want %q, registered", st.KEMKey, st.KEMKeyRegistered, tc.protection)
			}
			registered := cp.KEMPublic(st.DeviceID)
			if registered == nil {
				t.Fatal("the enrollment request carried no KEM key")
			}
			if fi, err := os.Stat(cfg.StatePath); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("state file mode %v, %v; want 0600", fi.Mode().Perm(), err)
			}

			// A restart: the same identity, the same key, nothing sent.
			st2, fresh, err := quietAgent(t, cfg).Enroll(ctx)
			if err != nil || fresh || st2.DeviceID != st.DeviceID {
				t.Fatalf("second enroll: %+v fresh=%v %v", st2, fresh, err)
			}
			_, run := start(t, cfg, &notifier{})
			time.Sleep(500 * time.Millisecond) // the kem-key task would PUT at once
			run.stop(t)
			if n := cp.Calls("kem-key"); n != 0 {
				t.Fatalf("a registered key was registered again (%d PUTs)", n)
			}
			if got := cp.KEMPublic(st.DeviceID); !bytes.Equal(got, registered) {
				t.Fatal("the device's KEM key changed across restarts")
			}

			// The key the control plane grants to opens on the device, from
			// the sealed (or, without a TPM, stored) private key.
			pkg, grant, dek := grantFor(t, registered)
			kc, closeKeys := deviceKeys(t, cfg)
			if p, err := kc.Protection(); err != nil || p != tc.protection {
				t.Fatalf("stored protection %q, %v", p, err)
			}
			got, err := kc.OpenGrant(pkg, grant)
			if err != nil {
				t.Fatalf("open the grant on the device: %v", err)
			}
			if !got.Equal(dek) {
				t.Fatal("the grant opened to another DEK")
			}
			closeKeys()

			// Re-enrollment (a fresh state, a new token) makes a new key.
			cp.AddToken("tok-2", time.Now().Add(time.Hour))
			cfg2 := *cfg
			cfg2.Token = "tok-2"
			cfg2.StatePath = filepath.Join(t.TempDir(), "agent.db")
			st3, _, err := quietAgent(t, &cfg2).Enroll(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if again := cp.KEMPublic(st3.DeviceID); again == nil || bytes.Equal(again, registered) {
				t.Fatal("re-enrollment did not make a new KEM key")
			}
			kc, closeKeys = deviceKeys(t, cfg)
			defer closeKeys()
			if _, err := kc.OpenGrant(pkg, mustGrant(t, pkg, dek, cp.KEMPublic(st3.DeviceID))); !errors.Is(err, tgsp.ErrNotRecipient) {
				t.Fatalf("the old key opened the new device's grant: %v", err)
			}
		})
	}
}

func mustGrant(t *testing.T, pkg *tgsp.Package, dek *tgsp.DEK, to []byte) []byte {
	t.Helper()
	pub, err := tgsp.ParseRecipientPublicKeyBytes(to)
	if err != nil {
		t.Fatal(err)
	}
	g, err := pkg.GrantKey(dek, pub)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// forgetKEMKey turns a stopped agent's state into that of an agent from
// before key grants: no KEM key, nothing registered.
func forgetKEMKey(t *testing.T, path string) {
	t.Helper()
	db, err := state.Open(path, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, k := range []string{"key", "registered"} {
		if err := db.Delete(keys.Namespace, k); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKEMKeyRegisteredOnStart: a device enrolled without a KEM key (an
// older agent) gets one on its next start and registers it with PUT
// /api/v1/device/kem-key, retrying transient failures; it is then
// registered for good (no PUT after the next restart) and opens grants. A
// control plane that holds another key for the device refuses it: the
// agent keeps running, does not retry, and stays unregistered.
func TestKEMKeyRegisteredOnStart(t *testing.T) {
	cp := enrolltest.Start(t, enrolltest.Options{})
	cp.AddToken("tok-1", time.Now().Add(time.Hour))
	cfg := testConfig(t, cp, "mqtts://127.0.0.1:1")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, _, err := quietAgent(t, cfg).Enroll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	device := st.DeviceID
	forgetKEMKey(t, cfg.StatePath)
	cp.SetKEMPublic(device, nil)
	if st, err := agent.ReadStatus(cfg); err != nil || st.KEMKey != "" || st.KEMKeyRegistered {
		t.Fatalf("status of an older agent's state: %+v, %v", st, err)
	}

	cp.FailNext("kem-key", 2, 503, "INTERNAL")
	_, run := start(t, cfg, &notifier{})
	waitFor(t, 20*time.Second, "KEM key registration", func() bool { return cp.KEMPublic(device) != nil })
	waitFor(t, 5*time.Second, "registration recorded", func() bool {
		st, err := agent.ReadStatus(cfg)
		return err == nil && st.KEMKeyRegistered
	})
	run.stop(t)
	if n := cp.Calls("kem-key"); n != 3 {
		t.Fatalf("%d PUTs, want 3 (two transient failures, then success)", n)
	}
	registered := cp.KEMPublic(device)

	_, run = start(t, cfg, &notifier{})
	time.Sleep(500 * time.Millisecond)
	run.stop(t)
	if n := cp.Calls("kem-key"); n != 3 {
		t.Fatalf("registered again after a restart (%d PUTs)", n)
	}
	pkg, grant, dek := grantFor(t, registered)
	kc, closeKeys := deviceKeys(t, cfg)
	got, err := kc.OpenGrant(pkg, grant)
	closeKeys()
	if err != nil || !got.Equal(dek) {
		t.Fatalf("open a grant to the registered key: %v", err)
	}

	// The control plane has another key: 409, not retried, not registered.
	forgetKEMKey(t, cfg.StatePath)
	other, err := tgsp.GenerateRecipient(nil)
	if err != nil {
		t.Fatal(err)
	}
	cp.SetKEMPublic(device, other.Public().Bytes())
	logs := &logBuffer{t: t}
	a, err := agent.New(cfg, slog.New(slog.NewTextHandler(logs, nil)), agent.WithNotifier(&notifier{}),
		agent.WithRetry(20*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(rctx) }()
	waitFor(t, 20*time.Second, "the refused PUT", func() bool { return cp.Calls("kem-key") == 4 })
	time.Sleep(300 * time.Millisecond) // no retry follows
	rcancel()
	if err := <-done; err != nil {
		t.Fatalf("the agent stopped over a refused KEM key: %v", err)
	}
	if n := cp.Calls("kem-key"); n != 4 {
		t.Fatalf("a permanent refusal was retried (%d PUTs)", n)
	}
	if !strings.Contains(logs.String(), "another package decryption key") {
		t.Error("the refusal was not explained in the log")
	}
	if st, err := agent.ReadStatus(cfg); err != nil || st.KEMKeyRegistered {
		t.Fatalf("status after the refusal: %+v, %v", st, err)
	}
}
