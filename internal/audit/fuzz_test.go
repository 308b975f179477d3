package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"
)

// Fuzz targets for the parsers of stored data, seeded from the table tests
// and the golden chain; plain `go test` runs the seeds, hack/fuzz.sh
// explores further. None may panic.

// FuzzCanonicalDetails: canonical form is idempotent, valid JSON, and
// survives an Entry JSON round trip (plain and indented) unchanged in
// meaning.
func FuzzCanonicalDetails(f *testing.F) {
	for _, s := range []string{``, `null`, `{}`, `{"b":2,"a":1}`, `{"a":1,"a":2}`, `[1]`, `"x"`, `{"a":}`, `{} {}`,
		`{"n":1.0,"e":1e2,"big":12345678901234567890}`, `{"html":"<&>"}`, "{\"ls\":\"\u2028\"}", `{"a":"\ud800"}`,
		`{"a":[[[[[[]]]]]]}`, "{\"a\":\"\xff\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, d []byte) {
		c, err := CanonicalDetails(d)
		if err != nil {
			if !errors.Is(err, ErrInvalidEntry) {
				t.Fatalf("err = %v, want ErrInvalidEntry", err)
			}
			return
		}
		if c == nil {
			return
		}
		if !json.Valid(c) || c[0] != '{' {
			t.Fatalf("canonical form %q is not a JSON object", c)
		}
		again, err := CanonicalDetails(c)
		if err != nil || !bytes.Equal(again, c) {
			t.Fatalf("not idempotent: %q -> %q, %v", c, again, err)
		}
		e, err := Next(nil, Entry{Tenant: "acme", Time: t0, Actor: "system", Action: "x.y", Details: d})
		if err != nil {
			t.Fatal(err)
		}
		for _, marshal := range []func(any) ([]byte, error){json.Marshal, func(v any) ([]byte, error) { return json.MarshalIndent(v, "", "\t") }} {
			data, err := marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			var back Entry
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatal(err)
			}
			if _, err := Verify([]Entry{back}, VerifyOptions{}); err != nil {
				t.Fatalf("details %q: entry does not verify after a JSON round trip: %v", c, err)
			}
		}
	})
}

// FuzzVerifyJSON: any JSON a store or an export file could hold is either
// rejected by json.Unmarshal, or verified without panicking; a chain that
// verifies has every hash right.
func FuzzVerifyJSON(f *testing.F) {
	if data, err := os.ReadFile(goldenPath); err == nil {
		var g goldenChain
		if json.Unmarshal(data, &g) == nil {
			seed, _ := json.Marshal(g.Entries)
			f.Add(seed)
			seed, _ = json.Marshal(g.Entries[1:])
			f.Add(seed)
		}
	}
	c := chain(f, "acme", 3)
	seed, _ := json.Marshal(c)
	f.Add(seed)
	f.Add(bytes.Replace(seed, []byte(`"seq":2`), []byte(`"seq":3`), 1))
	f.Add(bytes.Replace(seed, []byte(`op-`), []byte(`op_`), 1))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{}]`))
	f.Add([]byte(`[{"tenant":"acme","seq":1,"time":"0001-01-01T00:00:00Z"}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var entries []Entry
		if json.Unmarshal(data, &entries) != nil {
			return
		}
		rep, err := Verify(entries, VerifyOptions{})
		if err != nil {
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Seq != rep.Head.Seq+1 {
				t.Fatalf("Verify = %+v, %v", rep, err)
			}
			return
		}
		if rep.Entries != uint64(len(entries)) {
			t.Fatalf("report counts %d of %d entries", rep.Entries, len(entries))
		}
		prev := Genesis(rep.Tenant)
		for i, e := range entries {
			h, err := ComputeHash(e)
			if err != nil || h != e.Hash || e.PrevHash != prev || e.Seq != uint64(i+1) {
				t.Fatalf("verified a broken chain at entry %d", i)
			}
			prev = h
		}
	})
}

// FuzzEntryRoundTrip: any entry Next accepts survives JSON and verifies.
func FuzzEntryRoundTrip(f *testing.F) {
	f.Add("acme", "op-abc", "fleet.create", "flt-1", "req-1", []byte(`{"a":1}`), int64(1_700_000_000_123_456))
	f.Add("a\u2028", "device:dev-<1>", "x", "", "", []byte(nil), int64(-62135596800000000))
	f.Add("t", "\x00", "\ufffd", "\\", "\"", []byte(`null`), int64(253402300799999999))
	f.Fuzz(func(t *testing.T, tenant, actor, action, target, rid string, details []byte, micros int64) {
		e, err := Next(nil, Entry{Tenant: tenant, Actor: actor, Action: action, Target: target, RequestID: rid,
			Details: details, Time: time.UnixMicro(micros)})
		if err != nil {
			if !errors.Is(err, ErrInvalidEntry) {
				t.Fatalf("Next: %v", err)
			}
			return
		}
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var back Entry
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatalf("unmarshal %s: %v", data, err)
		}
		if !sameEntry(e, back) {
			t.Fatalf("round trip changed the entry: %+v -> %+v", e, back)
		}
		if _, err := Verify([]Entry{back}, VerifyOptions{Tenant: tenant}); err != nil {
			t.Fatalf("round-tripped entry does not verify: %v", err)
		}
	})
}
