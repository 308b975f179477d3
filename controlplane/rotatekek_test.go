package controlplane

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/tensorguard/tensorguardflow/internal/kek"
)

// TestRotateKEK: after the KEK is rotated, a control plane on the new KEK
// opens everything sealed before (the platform CA, the tenant's data key
// and what it seals: the package recipient key and an artifact sealed
// through the trainer's host methods); the old KEK no longer opens it;
// running the rotation again changes nothing.
func TestRotateKEK(t *testing.T) {
	t.Setenv(EnvVarEnvironment, "")
	t.Setenv(EnvVarKeyMaster, "")
	t.Setenv(EnvVarDatabaseURL, "")
	ctx := context.Background()
	cfg := DefaultConfig(EnvDevelopment)
	cfg.DataDir = t.TempDir()
	cfg.DatabaseURL = ""
	cfg.KEK.File = ""
	cfg.HTTP.Listen, cfg.MQTT.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Finish()
	if _, err := Init(ctx, cfg, "acme"); err != nil {
		t.Fatal(err)
	}
	cp, err := New(cfg, WithGetenv(func(string) string { return "" }), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	recipient, err := cp.registry.RecipientPublicKey(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := cp.SealTenant(ctx, "acme", []byte("trainer checkpoint"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	cp.store.Close()

	newKey := filepath.Join(t.TempDir(), "kek-2")
	if err := kek.GenerateKeyFile(newKey); err != nil {
		t.Fatal(err)
	}
	r, err := RotateKEK(ctx, cfg, kek.Config{File: newKey})
	if err != nil {
		t.Fatal(err)
	}
	if r.Tenants != 1 || r.Already != 0 || r.PlatformKey != "rewrapped" {
		t.Fatalf("rotation %+v", r)
	}
	// The same command again (say, after it was interrupted) finds
	// everything done.
	if again, err := RotateKEK(ctx, cfg, kek.Config{File: newKey}); err != nil || again.Tenants != 0 || again.Already != 1 || again.PlatformKey != "already" {
		t.Fatalf("re-run: %+v %v", again, err)
	}
	// A KEK that is neither the old nor the new one opens nothing.
	third := filepath.Join(t.TempDir(), "kek-3")
	if err := kek.GenerateKeyFile(third); err != nil {
		t.Fatal(err)
	}
	wrong := cfg
	wrong.KEK = kek.Config{File: third}
	if r, err := RotateKEK(ctx, wrong, kek.Config{File: third}); err == nil {
		t.Fatalf("rotation from a KEK that wraps nothing: %+v", r)
	}
	next := cfg
	next.KEK = kek.Config{File: newKey}
	if _, err := New(cfg, WithGetenv(func(string) string { return "" }), WithLogger(slog.New(slog.DiscardHandler))); err == nil {
		t.Fatal("the old KEK still opens the control plane")
	}
	cp2, err := New(next, WithGetenv(func(string) string { return "" }), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatalf("control plane on the new KEK: %v", err)
	}
	defer cp2.store.Close()
	got, err := cp2.registry.RecipientPublicKey(ctx, "acme")
	if err != nil || got.KeyID() != recipient.KeyID() {
		t.Fatalf("recipient key after rotation: %v", err)
	}
	plain, err := cp2.OpenTenant(ctx, "acme", sealed, []byte("aad"))
	if err != nil || string(plain) != "trainer checkpoint" {
		t.Fatalf("artifact sealed before the rotation: %q %v", plain, err)
	}
}
