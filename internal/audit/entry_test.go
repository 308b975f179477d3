package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// t0 is the time of the first entry of every test chain.
var t0 = time.Date(2026, 3, 14, 15, 9, 26, 535_897_000, time.UTC)

// chain builds n entries of tenant with Next, one second apart.
func chain(t testing.TB, tenant string, n int) []Entry {
	t.Helper()
	var out []Entry
	var prev *Entry
	for i := range n {
		e, err := Next(prev, Entry{
			Tenant:    tenant,
			Time:      t0.Add(time.Duration(i) * time.Second),
			Actor:     "op-" + strings.Repeat("a", 20),
			Action:    []string{"fleet.create", "device.enroll", "rollout.create", "policy.update"}[i%4],
			Target:    fmt.Sprintf("flt-%020d", i),
			RequestID: fmt.Sprintf("req-%d", i),
			Details:   json.RawMessage(fmt.Sprintf(`{"n":%d,"name":"wave <%d>"}`, i, i)),
		})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
		prev = &out[len(out)-1]
	}
	return out
}

func TestNext(t *testing.T) {
	t.Parallel()
	loc := time.FixedZone("CET", 3600)
	first, err := Next(nil, Entry{
		Tenant:  "acme",
		Time:    time.Date(2026, 1, 2, 4, 5, 6, 123_456_789, loc),
		Actor:   "system",
		Action:  "tenant.create",
		Details: json.RawMessage(` { "b" : 1, "a" : {"d": 2, "c": [3, 1.50]} } `),
	})
	if err != nil {
		t.Fatal(err)
	}
	if first.Seq != 1 || first.PrevHash != Genesis("acme") {
		t.Fatalf("first entry: seq %d prev %s", first.Seq, first.PrevHash)
	}
	if want := time.Date(2026, 1, 2, 3, 5, 6, 123_456_000, time.UTC); first.Time != want {
		t.Fatalf("time = %v, want %v (UTC, microseconds)", first.Time, want)
	}
	if got, want := string(first.Details), `{"a":{"c":[3,1.50],"d":2},"b":1}`; got != want {
		t.Fatalf("details = %s, want %s", got, want)
	}
	if h, err := ComputeHash(first); err != nil || h != first.Hash {
		t.Fatalf("ComputeHash = %s, %v; entry has %s", h, err, first.Hash)
	}

	second, err := Next(&first, Entry{Tenant: "acme", Time: t0, Actor: "key-x", Action: "fleet.delete"})
	if err != nil {
		t.Fatal(err)
	}
	if second.Seq != 2 || second.PrevHash != first.Hash || second.Hash == first.Hash {
		t.Fatalf("second entry: seq %d prev %s hash %s", second.Seq, second.PrevHash, second.Hash)
	}
	// Next ignores whatever Seq, PrevHash and Hash the caller set.
	again, err := Next(&first, Entry{Tenant: "acme", Time: t0, Actor: "key-x", Action: "fleet.delete", Seq: 99, Hash: Hash{1}, PrevHash: Hash{2}})
	if err != nil || !sameEntry(again, second) {
		t.Fatalf("Next depends on caller-set chain fields: %+v, %v", again, err)
	}
}

func TestNextRejects(t *testing.T) {
	t.Parallel()
	prev := chain(t, "acme", 1)[0]
	valid := Entry{Tenant: "acme", Time: t0, Actor: "system", Action: "fleet.create"}
	tests := []struct {
		name   string
		prev   *Entry
		modify func(e *Entry)
		want   string
	}{
		{"other tenant than prev", &prev, func(e *Entry) { e.Tenant = "globex" }, "cannot follow"},
		{"empty tenant", nil, func(e *Entry) { e.Tenant = "" }, "tenant is empty"},
		{"empty actor", nil, func(e *Entry) { e.Actor = "" }, "actor is empty"},
		{"empty action", nil, func(e *Entry) { e.Action = "" }, "action is empty"},
		{"zero time", nil, func(e *Entry) { e.Time = time.Time{} }, "time is not set"},
		{"year 10000", nil, func(e *Entry) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "outside years"},
		{"invalid UTF-8", nil, func(e *Entry) { e.Target = "dev-\xff" }, "target is not valid UTF-8"},
		{"long request id", nil, func(e *Entry) { e.RequestID = strings.Repeat("r", maxFieldLen+1) }, "request id is"},
		{"details array", nil, func(e *Entry) { e.Details = json.RawMessage(`[1]`) }, "must be a JSON object"},
		{"details string", nil, func(e *Entry) { e.Details = json.RawMessage(`"x"`) }, "must be a JSON object"},
		{"details not JSON", nil, func(e *Entry) { e.Details = json.RawMessage(`{"a":}`) }, "not JSON"},
		{"details duplicate key", nil, func(e *Entry) { e.Details = json.RawMessage(`{"a":1,"b":{"c":1,"c":2}}`) }, "repeat the key \"c\""},
		{"details invalid UTF-8", nil, func(e *Entry) { e.Details = json.RawMessage("{\"a\":\"\xff\"}") }, "not valid UTF-8"},
		{"details too deep", nil, func(e *Entry) {
			e.Details = json.RawMessage(`{"a":` + strings.Repeat("[", maxDetailsDepth) + strings.Repeat("]", maxDetailsDepth) + `}`)
		}, "nest deeper"},
		{"details unbalanced", nil, func(e *Entry) { e.Details = json.RawMessage(`{"a":[1}`) }, "not JSON"},
		{"details trailing data", nil, func(e *Entry) { e.Details = json.RawMessage(`{} {}`) }, "after the JSON value"},
		{"details too big", nil, func(e *Entry) {
			e.Details = json.RawMessage(`{"a":"` + strings.Repeat("x", maxDetailsLen) + `"}`)
		}, "more than"},
		{"prev with seq 0", &Entry{Tenant: "acme"}, func(*Entry) {}, "previous entry has seq 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := valid
			tc.modify(&e)
			_, err := Next(tc.prev, e)
			if !errors.Is(err, ErrInvalidEntry) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidEntry containing %q", err, tc.want)
			}
		})
	}
}

func TestCanonicalDetails(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
	}{
		{``, ``},
		{"  \n", ``},
		{`null`, ``},
		{` null `, ``},
		{`{}`, `{}`},
		{`{"b":2,"a":1}`, `{"a":1,"b":2}`},
		{`{"z":{"y":[{"b":1,"a":2}]}}`, `{"z":{"y":[{"a":2,"b":1}]}}`},
		{`{"n":1.0,"e":1e2,"big":12345678901234567890,"neg":-0}`, `{"big":12345678901234567890,"e":1e2,"n":1.0,"neg":-0}`},
		{`{"html":"<a href='x'>&</a>"}`, `{"html":"\u003ca href='x'\u003e\u0026\u003c/a\u003e"}`},
		{`{"u":"\u00e9t\u00e9","raw":"été"}`, `{"raw":"été","u":"été"}`},
		{`{"ls":"a` + "\u2028" + `b"}`, `{"ls":"a\u2028b"}`},
		{`{"t":true,"f":false,"n":null}`, `{"f":false,"n":null,"t":true}`},
	}
	for _, tc := range tests {
		got, err := CanonicalDetails(json.RawMessage(tc.in))
		if err != nil {
			t.Errorf("CanonicalDetails(%s): %v", tc.in, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("CanonicalDetails(%s) = %s, want %s", tc.in, got, tc.want)
		}
		again, err := CanonicalDetails(got)
		if err != nil || !bytes.Equal(again, got) {
			t.Errorf("not idempotent: %s -> %s (%v)", got, again, err)
		}
	}
}

func TestEntryJSONRoundTrip(t *testing.T) {
	t.Parallel()
	entries := chain(t, "acme", 4)
	entries = append(entries, mustNext(t, &entries[3], Entry{Tenant: "acme", Time: t0, Actor: "device:dev-1", Action: "device.attest"}))
	data, err := json.Marshal(entries)
	if err != nil {
		t.Fatal(err)
	}
	var back []Entry
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if len(back) != len(entries) {
		t.Fatalf("round trip has %d entries, want %d", len(back), len(entries))
	}
	for i := range entries {
		if !sameEntry(entries[i], back[i]) {
			t.Fatalf("entry %d changed: %+v -> %+v", i, entries[i], back[i])
		}
	}
	if _, err := Verify(back, VerifyOptions{}); err != nil {
		t.Fatalf("chain no longer verifies after a JSON round trip: %v", err)
	}

	// The wire shape other tools read.
	var arr []map[string]any
	if err := json.Unmarshal(data, &arr); err != nil {
		t.Fatal(err)
	}
	m := arr[0]
	for _, k := range []string{"tenant", "seq", "time", "actor", "action", "target", "request_id", "details", "prev_hash", "hash"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %v", k, m)
		}
	}
	if h, _ := m["hash"].(string); h != entries[0].Hash.String() || len(h) != 64 {
		t.Errorf("hash encodes as %v, want hex %s", m["hash"], entries[0].Hash)
	}
	if ts, _ := m["time"].(string); ts != "2026-03-14T15:09:26.535897Z" {
		t.Errorf("time encodes as %v", m["time"])
	}
}

// sameEntry compares entries field by field: times as instants, details
// as bytes.
func sameEntry(a, b Entry) bool {
	if !a.Time.Equal(b.Time) || !bytes.Equal(a.Details, b.Details) {
		return false
	}
	a.Time, b.Time, a.Details, b.Details = time.Time{}, time.Time{}, nil, nil
	return reflect.DeepEqual(a, b)
}

func mustNext(t testing.TB, prev *Entry, e Entry) Entry {
	t.Helper()
	out, err := Next(prev, e)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestHashText(t *testing.T) {
	t.Parallel()
	h := Genesis("acme")
	got, err := ParseHash(h.String())
	if err != nil || got != h {
		t.Fatalf("ParseHash(String()) = %s, %v", got, err)
	}
	for _, bad := range []string{"", h.String()[:63], h.String() + "0", strings.Repeat("g", 64)} {
		if _, err := ParseHash(bad); err == nil {
			t.Errorf("ParseHash(%q) succeeded", bad)
		}
	}
	var e Entry
	if err := json.Unmarshal([]byte(`{"hash":"abc"}`), &e); err == nil {
		t.Error("a 3-digit hash unmarshalled")
	}
}

func TestGenesisDiffersPerTenant(t *testing.T) {
	t.Parallel()
	if Genesis("acme") == Genesis("globex") || Genesis("a") == Genesis("") {
		t.Fatal("two tenants share a genesis hash")
	}
}

// Every field is an input of the hash, and moving bytes between adjacent
// fields changes it (the encoding is length-prefixed).
func TestHashCoversEveryField(t *testing.T) {
	t.Parallel()
	base := chain(t, "acme", 2)[1]
	h0, err := ComputeHash(base)
	if err != nil {
		t.Fatal(err)
	}
	edits := map[string]func(e *Entry){
		"tenant":            func(e *Entry) { e.Tenant = "acmf" },
		"seq":               func(e *Entry) { e.Seq++ },
		"time":              func(e *Entry) { e.Time = e.Time.Add(time.Microsecond) },
		"actor":             func(e *Entry) { e.Actor += "x" },
		"action":            func(e *Entry) { e.Action = "fleet.delete" },
		"target":            func(e *Entry) { e.Target = "" },
		"request id":        func(e *Entry) { e.RequestID = "req-x" },
		"details":           func(e *Entry) { e.Details = json.RawMessage(`{"n":2}`) },
		"details removed":   func(e *Entry) { e.Details = nil },
		"prev hash":         func(e *Entry) { e.PrevHash[31] ^= 1 },
		"actor into action": func(e *Entry) { e.Actor, e.Action = e.Actor[:len(e.Actor)-1], e.Actor[len(e.Actor)-1:]+e.Action },
		"target into rid":   func(e *Entry) { e.Target, e.RequestID = "", e.Target+e.RequestID },
	}
	for name, edit := range edits {
		e := base
		edit(&e)
		h, err := ComputeHash(e)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if h == h0 {
			t.Errorf("editing %s does not change the hash", name)
		}
	}
	e := base
	e.Hash = Hash{}
	if h, _ := ComputeHash(e); h != h0 {
		t.Error("the Hash field is an input of its own hash")
	}
	e.Time = base.Time.In(time.FixedZone("X", -7*3600))
	if h, _ := ComputeHash(e); h != h0 {
		t.Error("the time zone changes the hash; only the instant should")
	}
}
