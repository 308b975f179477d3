package audit

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"testing"
	"time"
)

// testdata/chain_v1.json pins the tg-audit-v1 encoding: a fixed chain with
// each entry's hash preimage and hash. Stored chains are verified for
// years, so the encoding must never change silently; this test only reads
// the file. `go test ./internal/audit -run TestGolden -update-golden`
// rewrites it, which is only right together with a new domain string.
var goldenUpdate = flag.Bool("update-golden", false, "rewrite testdata/chain_v1.json")

const goldenPath = "testdata/chain_v1.json"

type goldenChain struct {
	Comment   string   `json:"comment"`
	Tenant    string   `json:"tenant"`
	Genesis   string   `json:"genesis"`
	Entries   []Entry  `json:"entries"`
	Preimages []string `json:"preimages"`
}

func TestGoldenChain(t *testing.T) {
	if *goldenUpdate {
		writeGoldenChain(t)
	}
	data, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (regenerate with -update-golden only together with a new domain)", err)
	}
	var g goldenChain
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	if got := Genesis(g.Tenant).String(); got != g.Genesis {
		t.Fatalf("Genesis(%q) = %s, golden %s", g.Tenant, got, g.Genesis)
	}
	if len(g.Entries) != len(g.Preimages) || len(g.Entries) < 3 {
		t.Fatalf("golden file has %d entries and %d preimages", len(g.Entries), len(g.Preimages))
	}
	for i, e := range g.Entries {
		p, err := preimage(e)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(p); got != g.Preimages[i] {
			t.Fatalf("entry %d: preimage\n got  %s\n want %s", e.Seq, got, g.Preimages[i])
		}
		h, err := ComputeHash(e)
		if err != nil {
			t.Fatal(err)
		}
		if h != e.Hash {
			t.Fatalf("entry %d: hash %s, golden %s", e.Seq, h, e.Hash)
		}
	}
	if _, err := Verify(g.Entries, VerifyOptions{Tenant: g.Tenant}); err != nil {
		t.Fatalf("golden chain does not verify: %v", err)
	}
}

func writeGoldenChain(t *testing.T) {
	t.Helper()
	g := goldenChain{
		Comment: "tg-audit-v1 encoding; never edit, see golden_test.go",
		Tenant:  "acme",
		Genesis: Genesis("acme").String(),
	}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 678_901_000, time.UTC)
	inputs := []Entry{
		{Tenant: "acme", Time: ts, Actor: "system", Action: "tenant.create", Target: "acme", RequestID: "req-0001"},
		{Tenant: "acme", Time: ts.Add(1500 * time.Millisecond), Actor: "op-abcdefghijklmnopqrst", Action: "fleet.create",
			Target: "flt-abcdefghijklmnopqrst", RequestID: "req-0002",
			Details: json.RawMessage(`{"name":"jetsons <eu>","labels":{"site":"Zürich","tier":"edge"},"waves":[1,5,25.0]}`)},
		{Tenant: "acme", Time: ts.Add(time.Hour), Actor: "device:dev-abcdefghijklmnopqrst", Action: "device.enroll",
			Target: "dev-abcdefghijklmnopqrst"},
	}
	var prev *Entry
	for _, in := range inputs {
		e, err := Next(prev, in)
		if err != nil {
			t.Fatal(err)
		}
		g.Entries = append(g.Entries, e)
		g.Preimages = append(g.Preimages, hex.EncodeToString(encode(e)))
		prev = &g.Entries[len(g.Entries)-1]
	}
	out, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goldenPath, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
