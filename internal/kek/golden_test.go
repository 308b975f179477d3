package kek

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

// testdata/envelope_v1.json holds a wrapped DEK and an envelope written by
// this package's first format version, under a fixed KEK. Data sealed today
// must stay readable after every upgrade, so this test only reads it;
// `go test ./internal/kek -run TestGoldenEnvelope -update-golden` rewrites
// it, which is only right when a new format version is added alongside.
var goldenUpdate = flag.Bool("update-golden", false, "rewrite testdata/envelope_v1.json")

type goldenEnvelope struct {
	Comment    string `json:"comment"`
	KEK        string `json:"kek"`
	KEKID      string `json:"kek_id"`
	Tenant     string `json:"tenant"`
	DEKVersion uint32 `json:"dek_version"`
	WrappedDEK string `json:"wrapped_dek"`
	AAD        string `json:"aad"`
	Plaintext  string `json:"plaintext"`
	Envelope   string `json:"envelope"`
}

const goldenPath = "testdata/envelope_v1.json"

func TestGoldenEnvelope(t *testing.T) {
	ctx := context.Background()
	if *goldenUpdate {
		writeGolden(t)
	}
	data, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (regenerate with -update-golden only when adding a format version)", err)
	}
	var g goldenEnvelope
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	p := memProvider(t, unhex(t, g.KEK))
	if p.ID() != g.KEKID {
		t.Fatalf("KEK id = %s, golden says %s: the id derivation changed", p.ID(), g.KEKID)
	}
	store := newMemStore()
	store.put(g.Tenant, g.DEKVersion, unhex(t, g.WrappedDEK))
	ring := NewKeyring(p, store, KeyringOptions{})
	got, err := ring.Open(ctx, g.Tenant, unhex(t, g.Envelope), []byte(g.AAD))
	if err != nil {
		t.Fatalf("golden envelope no longer opens: %v", err)
	}
	if string(got) != g.Plaintext {
		t.Fatalf("golden plaintext = %q, want %q", got, g.Plaintext)
	}
	// KWP is deterministic: wrapping the same DEK again gives the same bytes.
	dek, err := p.UnwrapKey(ctx, unhex(t, g.WrappedDEK), TenantKeyAAD(g.Tenant, g.DEKVersion))
	if err != nil {
		t.Fatal(err)
	}
	again, err := p.WrapKey(ctx, dek, TenantKeyAAD(g.Tenant, g.DEKVersion))
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(again) != g.WrappedDEK {
		t.Fatalf("wrapping changed: %x, golden %s", again, g.WrappedDEK)
	}
}

func writeGolden(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	p := memProvider(t, testKey)
	store := newMemStore()
	ring := NewKeyring(p, store, KeyringOptions{})
	g := goldenEnvelope{
		Comment:    "kek envelope format v1; never edit, see golden_test.go",
		KEK:        hex.EncodeToString(testKey),
		KEKID:      p.ID(),
		Tenant:     "acme",
		DEKVersion: 3,
		AAD:        "tenants/acme/artifacts/model-7",
		Plaintext:  "tenant data sealed by format v1",
	}
	w, err := ring.NewTenantKey(ctx, g.Tenant, g.DEKVersion)
	if err != nil {
		t.Fatal(err)
	}
	store.put(g.Tenant, g.DEKVersion, w)
	env, err := ring.Seal(ctx, g.Tenant, []byte(g.Plaintext), []byte(g.AAD))
	if err != nil {
		t.Fatal(err)
	}
	g.WrappedDEK, g.Envelope = hex.EncodeToString(w), hex.EncodeToString(env)
	out, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(goldenPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goldenPath, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
