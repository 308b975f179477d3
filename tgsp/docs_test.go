package tgsp

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// fzDPCertValid is the example of SPEC.md §5.1.
const fzDPCertValid = `{"schema":"tgsp.dp_cert.v1","epsilon":2.93,"delta":1e-5,"accountant":"rdp",
 "noise_multiplier":1.1,"clipping_norm":1.0,"sampling_rate":0.004,"steps":3000,
 "dataset_size":60000,"sampling":"poisson"}`

// fzDocCase is a document built from a valid one by setting (or, with a nil
// value, deleting) fields, or given raw.
type fzDocCase struct {
	name string
	set  map[string]any
	raw  string
	ok   bool
}

func (c fzDocCase) doc(t testing.TB, base string) []byte {
	if c.raw != "" {
		return []byte(c.raw)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(base), &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range c.set {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var fzDPCertCases = []fzDocCase{
	{name: "spec example", raw: fzDPCertValid, ok: true},
	{name: "all accountants: prv", set: map[string]any{"accountant": "prv"}, ok: true},
	{name: "all accountants: moments", set: map[string]any{"accountant": "moments"}, ok: true},
	{name: "optional fields absent", set: map[string]any{"sampling": nil}, ok: true},
	{name: "optional fields set", set: map[string]any{"training_run": "run-7", "issued_at": "2026-11-27T00:00:00Z"}, ok: true},
	{name: "sampling rate 1", set: map[string]any{"sampling_rate": 1}, ok: true},
	{name: "tiny delta", set: map[string]any{"delta": 1e-300}, ok: true},
	{name: "huge epsilon", set: map[string]any{"epsilon": 1e300}, ok: true},

	{name: "epsilon 0", set: map[string]any{"epsilon": 0}},
	{name: "epsilon negative", set: map[string]any{"epsilon": -1}},
	{name: "epsilon missing", set: map[string]any{"epsilon": nil}},
	{name: "epsilon string", set: map[string]any{"epsilon": "1"}},
	{name: "epsilon overflow", raw: strings.Replace(fzDPCertValid, `"epsilon":2.93`, `"epsilon":1e400`, 1)},
	{name: "delta 0", set: map[string]any{"delta": 0}},
	{name: "delta 1", set: map[string]any{"delta": 1}},
	{name: "delta above 1", set: map[string]any{"delta": 1.5}},
	{name: "delta negative", set: map[string]any{"delta": -1e-5}},
	{name: "delta missing", set: map[string]any{"delta": nil}},
	{name: "unknown accountant", set: map[string]any{"accountant": "gdp"}},
	{name: "accountant upper case", set: map[string]any{"accountant": "RDP"}},
	{name: "accountant missing", set: map[string]any{"accountant": nil}},
	{name: "noise multiplier 0", set: map[string]any{"noise_multiplier": 0}},
	{name: "clipping norm negative", set: map[string]any{"clipping_norm": -1}},
	{name: "sampling rate 0", set: map[string]any{"sampling_rate": 0}},
	{name: "sampling rate above 1", set: map[string]any{"sampling_rate": 1.0001}},
	{name: "steps 0", set: map[string]any{"steps": 0}},
	{name: "steps fractional", set: map[string]any{"steps": 1.5}},
	{name: "dataset size 0", set: map[string]any{"dataset_size": 0}},
	{name: "dataset size negative", set: map[string]any{"dataset_size": -5}},
	{name: "issued_at not RFC 3339", set: map[string]any{"issued_at": "yesterday"}},
	{name: "issued_at date only", set: map[string]any{"issued_at": "2026-11-27"}},
	{name: "unknown field", set: map[string]any{"mechanism": "gaussian"}},
	{name: "field of another version", set: map[string]any{"epsilon_v2": 1}},
	{name: "wrong schema", set: map[string]any{"schema": "tgsp.dp_cert.v2"}},
	{name: "evidence schema", set: map[string]any{"schema": EvidenceSchema}},
	{name: "schema missing", set: map[string]any{"schema": nil}},
	{name: "trailing data", raw: fzDPCertValid + ` {}`},
	{name: "trailing garbage", raw: fzDPCertValid + `x`},
	{name: "two objects", raw: fzDPCertValid + fzDPCertValid},
	{name: "array", raw: `[` + fzDPCertValid + `]`},
	{name: "null", raw: `null`},
	{name: "empty object", raw: `{}`},
	{name: "not json", raw: `schema: tgsp.dp_cert.v1`},
	{name: "truncated", raw: fzDPCertValid[:len(fzDPCertValid)-1]},
	{name: "NaN literal", raw: strings.Replace(fzDPCertValid, `2.93`, `NaN`, 1)},
	{name: "Infinity literal", raw: strings.Replace(fzDPCertValid, `2.93`, `Infinity`, 1)},
}

func TestParseDPCert(t *testing.T) {
	t.Parallel()
	for _, tc := range fzDPCertCases {
		c, err := ParseDPCert(tc.doc(t, fzDPCertValid))
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case !tc.ok && !errors.Is(err, ErrMalformed):
			t.Errorf("%s: got %+v, err %v; want ErrMalformed", tc.name, c, err)
		}
	}
	c, err := ParseDPCert([]byte(fzDPCertValid))
	if err != nil {
		t.Fatal(err)
	}
	want := &DPCert{Schema: DPCertSchema, Epsilon: 2.93, Delta: 1e-5, Accountant: "rdp", NoiseMultiplier: 1.1,
		ClippingNorm: 1, SamplingRate: 0.004, Steps: 3000, DatasetSize: 60000, Sampling: "poisson"}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("ParseDPCert(spec example) = %+v, want %+v", c, want)
	}
}

const fzEvidenceValid = `{"schema":"tgsp.evidence.v1","base_model":"tiny-llama-1b",
 "datasets":[{"name":"mnist","sha256":"00ff","size":60000},{"name":"extra"}],
 "trainer":"tg-tinker/0.1.0","source_ref":"9c59a07",
 "metrics":{"accuracy":0.98,"loss":[0.5,0.1]},"claims":{"reviewed":true,"by":{"name":"x"}}}`

var fzEvidenceCases = []fzDocCase{
	{name: "full", raw: fzEvidenceValid, ok: true},
	{name: "minimal", raw: `{"schema":"tgsp.evidence.v1"}`, ok: true},
	{name: "empty datasets", set: map[string]any{"datasets": []any{}}, ok: true},
	{name: "no metrics", set: map[string]any{"metrics": nil}, ok: true},
	{name: "null metrics", raw: `{"schema":"tgsp.evidence.v1","metrics":null}`, ok: true},

	{name: "dataset without name", set: map[string]any{"datasets": []any{map[string]any{"sha256": "00"}}}},
	{name: "dataset with empty name", set: map[string]any{"datasets": []any{map[string]any{"name": ""}}}},
	{name: "dataset unknown field", set: map[string]any{"datasets": []any{map[string]any{"name": "a", "url": "b"}}}},
	{name: "dataset size string", set: map[string]any{"datasets": []any{map[string]any{"name": "a", "size": "1"}}}},
	{name: "unknown field", set: map[string]any{"signature": "x"}},
	{name: "wrong schema", set: map[string]any{"schema": "tgsp.evidence.v0"}},
	{name: "dp_cert schema", set: map[string]any{"schema": DPCertSchema}},
	{name: "schema missing", set: map[string]any{"schema": nil}},
	{name: "metrics not an object", set: map[string]any{"metrics": []any{1}}},
	{name: "trailing data", raw: fzEvidenceValid + `[]`},
	{name: "null", raw: `null`},
	{name: "empty", raw: ` `},
	{name: "string", raw: `"tgsp.evidence.v1"`},
}

func TestParseEvidence(t *testing.T) {
	t.Parallel()
	for _, tc := range fzEvidenceCases {
		e, err := ParseEvidence(tc.doc(t, fzEvidenceValid))
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case !tc.ok && !errors.Is(err, ErrMalformed):
			t.Errorf("%s: got %+v, err %v; want ErrMalformed", tc.name, e, err)
		}
	}
	e, err := ParseEvidence([]byte(fzEvidenceValid))
	if err != nil {
		t.Fatal(err)
	}
	if e.BaseModel != "tiny-llama-1b" || len(e.Datasets) != 2 || e.Datasets[0] != (EvidenceDataset{"mnist", "00ff", 60000}) ||
		e.Metrics["accuracy"] != 0.98 || e.Claims["reviewed"] != true || e.Trainer != "tg-tinker/0.1.0" || e.SourceRef != "9c59a07" {
		t.Errorf("ParseEvidence = %+v", e)
	}
}
