// Package policy_test evaluates the example install policy of
// examples/policy with OPA, as the agent does, against realistic inputs:
// the golden TGSP package's manifest and dp_cert.json.
package policy_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/internal/policybundle"
)

const golden = "../../tgsp/testdata/golden/v1"

func readJSON(t *testing.T, name string) json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(golden, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExamplePolicy(t *testing.T) {
	t.Parallel()
	files, err := policybundle.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	if got := files.Names(); !slices.Equal(got, []string{"data.json", "install.rego"}) {
		t.Fatalf("example files = %v (the test file must not be part of the bundle)", got)
	}
	u, err := policybundle.Build(files)
	if err != nil {
		t.Fatalf("the example does not build: %v", err)
	}
	if got := u.Roots(); !slices.Equal(got, []string{"max_delta", "max_epsilon", "publishers", "tensorguard"}) {
		t.Errorf("roots = %v", got)
	}
	ev, err := u.Prepare(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	manifest, dpCert, evidence := readJSON(t, "manifest.json"), readJSON(t, "dp_cert.json"), readJSON(t, "evidence.json")
	var m struct {
		PublisherKeyID string `json:"publisher_key_id"`
	}
	if err := json.Unmarshal(manifest, &m); err != nil || m.PublisherKeyID == "" {
		t.Fatalf("golden manifest: %v", err)
	}
	// The input document as the agent's install pipeline builds it
	// (agent/internal/install.PolicyInput marshalled, plus publishers).
	good := func() map[string]any {
		return map[string]any{
			"manifest": manifest, "dp_cert": dpCert, "evidence": evidence,
			"device": map[string]any{"device_id": "dev-aaaaaaaaaaaaaaaaaaaa", "tenant_id": "acme", "fleet_id": "flt-bbbbbbbbbbbbbbbbbbbb",
				"device_type": "jetson-orin", "tpm_kind": "hardware", "labels": map[string]string{"site": "berlin"}},
			"attestation": map[string]any{"schema": "tg.attest.verdict.v1", "state": "trusted", "evidence_at": "2026-11-27T00:05:00Z"},
			"publishers":  []string{"00000000000000000000000000000000", m.PublisherKeyID},
			"job":         map[string]any{"id": "job-1", "kind": "install", "attempt": 1},
			"now":         "2026-11-27T00:06:00Z",
		}
	}
	withCert := func(eps, delta any) json.RawMessage {
		var c map[string]any
		if err := json.Unmarshal(dpCert, &c); err != nil {
			t.Fatal(err)
		}
		c["epsilon"], c["delta"] = eps, delta
		if eps == nil {
			delete(c, "epsilon")
		}
		b, _ := json.Marshal(c)
		return b
	}
	for _, tc := range []struct {
		name   string
		change func(in map[string]any)
		allow  bool
		want   []string // substrings, one reason each, in order
	}{
		{"allowed", func(map[string]any) {}, true, nil},
		{"epsilon too high", func(in map[string]any) { in["dp_cert"] = withCert(9.5, 1e-5) }, false,
			[]string{"dp_cert epsilon 9.5 exceeds the fleet limit max_epsilon 8"}},
		{"epsilon at the limit", func(in map[string]any) { in["dp_cert"] = withCert(8, 1e-5) }, true, nil},
		{"delta too high", func(in map[string]any) { in["dp_cert"] = withCert(2.93, 1e-3) }, false,
			[]string{"dp_cert delta 0.001 exceeds the fleet limit max_delta 1e-05"}},
		{"unpinned publisher", func(in map[string]any) { in["publishers"] = []string{"00000000000000000000000000000000"} }, false,
			[]string{`publisher key "` + m.PublisherKeyID + `" is not pinned for this fleet`}},
		{"no publishers pinned", func(in map[string]any) { delete(in, "publishers") }, false,
			[]string{"is not pinned for this fleet"}},
		{"untrusted device", func(in map[string]any) {
			in["attestation"] = map[string]any{"state": "untrusted", "reasons": []any{map[string]any{"code": "PCR_POLICY", "pcr": 7}}}
		}, false, []string{`device attestation is "untrusted", not trusted`}},
		{"never attested", func(in map[string]any) { delete(in, "attestation") }, false,
			[]string{`device attestation is "unknown", not trusted`}},
		{"missing dp_cert", func(in map[string]any) { delete(in, "dp_cert") }, false,
			[]string{"package has no dp_cert.json"}},
		{"dp_cert without epsilon", func(in map[string]any) { in["dp_cert"] = withCert(nil, 1e-5) }, false,
			[]string{"dp_cert.json has no numeric epsilon"}},
		{"everything wrong", func(in map[string]any) {
			in["dp_cert"], in["publishers"], in["attestation"] = withCert(50, 0.5), nil, map[string]any{"state": "stale"}
		}, false, []string{`attestation is "stale"`, "delta 0.5 exceeds", "epsilon 50 exceeds", "is not pinned"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := good()
			tc.change(in)
			d, err := ev.Evaluate(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow != tc.allow || len(d.Reasons) != len(tc.want) {
				t.Fatalf("decision = %+v, want allow %v with %d reasons %q", d, tc.allow, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(d.Reasons[i], w) {
					t.Errorf("reason %d = %q, want it to contain %q", i, d.Reasons[i], w)
				}
			}
		})
	}
}

// TestExamplePolicyWithoutLimits: the same policy with its data.json
// removed denies everything instead of admitting any epsilon.
func TestExamplePolicyWithoutLimits(t *testing.T) {
	t.Parallel()
	files, err := policybundle.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	delete(files, "data.json")
	u, err := policybundle.Build(files)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := u.Prepare(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	d, err := ev.Evaluate(context.Background(), map[string]any{
		"manifest": readJSON(t, "manifest.json"), "dp_cert": readJSON(t, "dp_cert.json"),
		"attestation": map[string]any{"state": "trusted"},
		"publishers":  []string{"74de179003b61ff190e30b27126d43dc"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if d.Allow || !slices.Contains(d.Reasons, "fleet data has no numeric max_epsilon") {
		t.Errorf("decision without limits = %+v", d)
	}
}

// TestExamplePolicyFleetPins: a publisher pinned in the fleet's data.json
// is admitted without being in the input.
func TestExamplePolicyFleetPins(t *testing.T) {
	t.Parallel()
	files, err := policybundle.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	files["data.json"] = []byte(`{"max_epsilon": 8, "max_delta": 1e-5, "publishers": ["74de179003b61ff190e30b27126d43dc"]}`)
	u, err := policybundle.Build(files)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := u.Prepare(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]any{"manifest": readJSON(t, "manifest.json"), "dp_cert": readJSON(t, "dp_cert.json"),
		"attestation": map[string]any{"state": "trusted"}}
	if d, err := ev.Evaluate(context.Background(), in); err != nil || !d.Allow {
		t.Errorf("fleet-pinned publisher: %+v, %v", d, err)
	}
}
