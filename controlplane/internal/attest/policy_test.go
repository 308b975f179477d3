package attest_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/attest"
)

const (
	digestA = "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"
	digestB = "0000000000000000000000000000000000000000000000000000000000000000"
)

func TestPolicyValidate(t *testing.T) {
	t.Parallel()
	golden := func(allow ...string) attest.PCRRule { return attest.PCRRule{Mode: attest.ModeGolden, Allow: allow} }
	for _, c := range []struct {
		name    string
		p       attest.Policy
		wantErr string
	}{
		{name: "zero value", p: attest.Policy{}},
		{name: "golden and baseline", p: attest.Policy{PCRs: []int{0, 7, 14}, Rules: map[int]attest.PCRRule{
			0: golden(digestA, digestB), 7: {Mode: attest.ModeBaseline}}, AllowedKinds: []string{"hardware", "swtpm"}}},
		{name: "PCR out of range", p: attest.Policy{PCRs: []int{24}}, wantErr: "out of range"},
		{name: "negative PCR", p: attest.Policy{PCRs: []int{-1}}, wantErr: "out of range"},
		{name: "rule for unselected PCR", p: attest.Policy{Rules: map[int]attest.PCRRule{9: golden(digestA)}}, wantErr: "not selected"},
		{name: "empty allow-list", p: attest.Policy{Rules: map[int]attest.PCRRule{0: golden()}}, wantErr: "empty allow-list"},
		{name: "short digest", p: attest.Policy{Rules: map[int]attest.PCRRule{0: golden(digestA[:62])}}, wantErr: "not a hex SHA-256"},
		{name: "non-hex digest", p: attest.Policy{Rules: map[int]attest.PCRRule{0: golden(strings.Repeat("zz", 32))}}, wantErr: "not a hex SHA-256"},
		{name: "baseline with allow-list", p: attest.Policy{Rules: map[int]attest.PCRRule{0: {Mode: attest.ModeBaseline, Allow: []string{digestA}}}}, wantErr: "no allow-list"},
		{name: "unknown mode", p: attest.Policy{Rules: map[int]attest.PCRRule{0: {Mode: "any"}}}, wantErr: "mode"},
		{name: "default any", p: attest.Policy{Default: "any"}, wantErr: "default mode"},
		{name: "kind none", p: attest.Policy{AllowedKinds: []string{"none"}}, wantErr: "cannot be allowed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := c.p.Validate()
			if (err == nil) != (c.wantErr == "") || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("Validate: %v, want error containing %q", err, c.wantErr)
			}
		})
	}
}

func TestPolicySelection(t *testing.T) {
	t.Parallel()
	if got := (attest.Policy{}).Selection(); !slices.Equal(got, []int{0, 1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("default selection %v", got)
	}
	if got := (attest.Policy{PCRs: []int{7, 0, 7, 4}}).Selection(); !slices.Equal(got, []int{0, 4, 7}) {
		t.Errorf("selection %v", got)
	}
}

// TestPolicyJSON: the policy round-trips through JSON and reads the golden
// file that documents its shape in the fleet policy.
func TestPolicyJSON(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join("testdata", "policy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var p attest.Policy
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	want := attest.Policy{
		PCRs:         []int{0, 1, 2, 3, 4, 5, 6, 7},
		Rules:        map[int]attest.PCRRule{0: {Mode: attest.ModeGolden, Allow: []string{digestA, digestB}}, 7: {Mode: attest.ModeBaseline}},
		Default:      attest.ModeBaseline,
		AllowedKinds: []string{"hardware", "swtpm"},
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("decoded %+v, want %+v", p, want)
	}
	again, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var p2 attest.Policy
	if err := json.Unmarshal(again, &p2); err != nil || !reflect.DeepEqual(p2, p) {
		t.Fatalf("round trip: %v %+v", err, p2)
	}
}
