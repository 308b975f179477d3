package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// rehash recomputes e's hash as an attacker with write access can.
func rehash(t testing.TB, e Entry) Entry {
	t.Helper()
	h, err := ComputeHash(e)
	if err != nil {
		t.Fatal(err)
	}
	e.Hash = h
	return e
}

// rewriteFrom re-links entries[i:] to entries[i-1] (or genesis), renumbering
// and rehashing them: a consistent rewrite that only an anchor can catch.
func rewriteFrom(t testing.TB, entries []Entry, i int) []Entry {
	t.Helper()
	out := slices.Clone(entries)
	for j := i; j < len(out); j++ {
		out[j].Seq = uint64(j + 1)
		out[j].PrevHash = Genesis(out[j].Tenant)
		if j > 0 {
			out[j].PrevHash = out[j-1].Hash
		}
		out[j] = rehash(t, out[j])
	}
	return out
}

func TestVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	acme := chain(t, "acme", 5)
	globex := chain(t, "globex", 5)
	head := Checkpoint{Tenant: "acme", Seq: 5, Hash: acme[4].Hash}
	at4 := Checkpoint{Tenant: "acme", Seq: 4, Hash: acme[3].Hash}

	edit := func(i int, f func(e *Entry)) []Entry {
		out := slices.Clone(acme)
		f(&out[i])
		return out
	}
	del := func(idx ...int) []Entry {
		var out []Entry
		for i, e := range acme {
			if !slices.Contains(idx, i) {
				out = append(out, e)
			}
		}
		return out
	}

	tests := []struct {
		name    string
		entries []Entry
		opts    VerifyOptions
		want    error  // nil: the chain verifies
		seq     uint64 // first bad seq reported
	}{
		{"intact", acme, VerifyOptions{}, nil, 0},
		{"intact with anchor at head", acme, VerifyOptions{Anchor: &head}, nil, 0},
		{"intact with older anchor", acme, VerifyOptions{Anchor: &at4}, nil, 0},
		{"intact with tenant", acme, VerifyOptions{Tenant: "acme"}, nil, 0},
		{"empty", nil, VerifyOptions{}, nil, 0},
		{"same instant in another zone", edit(2, func(e *Entry) { e.Time = e.Time.In(time.FixedZone("X", 5*3600)) }), VerifyOptions{}, nil, 0},

		// Edited fields of seq 3.
		{"edit actor", edit(2, func(e *Entry) { e.Actor = "op-mallory" }), VerifyOptions{}, ErrHashMismatch, 3},
		{"edit action", edit(2, func(e *Entry) { e.Action = "fleet.delete" }), VerifyOptions{}, ErrHashMismatch, 3},
		{"edit target", edit(2, func(e *Entry) { e.Target = "flt-other" }), VerifyOptions{}, ErrHashMismatch, 3},
		{"edit request id", edit(2, func(e *Entry) { e.RequestID = "req-x" }), VerifyOptions{}, ErrHashMismatch, 3},
		{"edit details", edit(2, func(e *Entry) { e.Details = json.RawMessage(`{"n":3,"name":"wave <9>"}`) }), VerifyOptions{}, ErrHashMismatch, 3},
		{"re-serialised details (same JSON)", edit(2, func(e *Entry) { e.Details = json.RawMessage("{\n  \"name\": \"wave <2>\",\n  \"n\": 2\n}") }), VerifyOptions{}, nil, 0},
		{"details with a shadowing duplicate key", edit(2, func(e *Entry) { e.Details = json.RawMessage(`{"n":7,"n":2,"name":"wave <2>"}`) }), VerifyOptions{}, ErrInvalidEntry, 3},
		{"details number rewritten", edit(2, func(e *Entry) { e.Details = json.RawMessage(`{"n":2.0,"name":"wave <2>"}`) }), VerifyOptions{}, ErrHashMismatch, 3},
		{"remove details", edit(2, func(e *Entry) { e.Details = nil }), VerifyOptions{}, ErrHashMismatch, 3},
		{"edit time", edit(2, func(e *Entry) { e.Time = e.Time.Add(-time.Hour) }), VerifyOptions{}, ErrHashMismatch, 3},
		{"edit time by a microsecond", edit(2, func(e *Entry) { e.Time = e.Time.Add(time.Microsecond) }), VerifyOptions{}, ErrHashMismatch, 3},
		{"edit time below a microsecond", edit(2, func(e *Entry) { e.Time = e.Time.Add(time.Nanosecond) }), VerifyOptions{}, ErrInvalidEntry, 3},
		{"edit prev hash", edit(2, func(e *Entry) { e.PrevHash[0] ^= 1 }), VerifyOptions{}, ErrHashMismatch, 3},
		{"edit hash", edit(2, func(e *Entry) { e.Hash[31] ^= 1 }), VerifyOptions{}, ErrHashMismatch, 3},
		{"edit seq", edit(2, func(e *Entry) { e.Seq = 30 }), VerifyOptions{}, ErrSequence, 3},
		{"edit tenant", edit(2, func(e *Entry) { e.Tenant = "globex" }), VerifyOptions{}, ErrForeignTenant, 3},
		{"edit first entry", edit(0, func(e *Entry) { e.Actor = "system" }), VerifyOptions{}, ErrHashMismatch, 1},
		{"edit last entry", edit(4, func(e *Entry) { e.Action = "x.y" }), VerifyOptions{}, ErrHashMismatch, 5},
		{"edit and rehash one entry", edit(2, func(e *Entry) { e.Actor = "op-mallory"; *e = rehash(t, *e) }), VerifyOptions{}, ErrBrokenChain, 4},
		{"edit empty tenant", edit(0, func(e *Entry) { e.Tenant = "" }), VerifyOptions{}, ErrInvalidEntry, 1},

		// Deletions.
		{"delete first", del(0), VerifyOptions{}, ErrSequence, 1},
		{"delete middle", del(2), VerifyOptions{}, ErrSequence, 3},
		{"delete two in the middle", del(1, 2), VerifyOptions{}, ErrSequence, 2},
		{"delete last without anchor (undetectable)", del(4), VerifyOptions{}, nil, 0},
		{"delete last with anchor", del(4), VerifyOptions{Anchor: &head}, ErrTruncated, 5},
		{"delete last two with anchor", del(3, 4), VerifyOptions{Anchor: &head}, ErrTruncated, 4},
		{"delete all with anchor", nil, VerifyOptions{Anchor: &head}, ErrTruncated, 1},
		{"delete middle, renumber and rehash the rest", func() []Entry {
			out := del(2)
			for i := 2; i < len(out); i++ {
				out[i].Seq--
				out[i] = rehash(t, out[i])
			}
			return out
		}(), VerifyOptions{}, ErrBrokenChain, 3},
		{"delete middle, rewrite consistently (no anchor: undetectable)", rewriteFrom(t, del(2), 2), VerifyOptions{}, nil, 0},
		{"delete middle, rewrite consistently, anchor at 4", rewriteFrom(t, del(2), 2), VerifyOptions{Anchor: &at4}, ErrAnchorMismatch, 4},
		{"delete middle, rewrite consistently, anchor at head", rewriteFrom(t, del(2), 2), VerifyOptions{Anchor: &head}, ErrTruncated, 5},

		// Reordering and replay.
		{"swap 2 and 3", func() []Entry { out := slices.Clone(acme); out[1], out[2] = out[2], out[1]; return out }(), VerifyOptions{}, ErrSequence, 2},
		{"swap contents of 2 and 3, keep seqs", func() []Entry {
			out := slices.Clone(acme)
			out[1], out[2] = out[2], out[1]
			out[1].Seq, out[2].Seq = 2, 3
			return out
		}(), VerifyOptions{}, ErrHashMismatch, 2},
		{"reverse", func() []Entry { out := slices.Clone(acme); slices.Reverse(out); return out }(), VerifyOptions{}, ErrSequence, 1},
		{"replay 3 right after itself", slices.Insert(slices.Clone(acme), 3, acme[2]), VerifyOptions{}, ErrSequence, 4},
		{"replay 2 at the end", append(slices.Clone(acme), acme[1]), VerifyOptions{}, ErrSequence, 6},
		{"replay 2 at the end as seq 6", append(slices.Clone(acme), func() Entry { e := acme[1]; e.Seq = 6; return rehash(t, e) }()), VerifyOptions{}, ErrBrokenChain, 6},

		// Other tenants.
		{"insert a globex entry", slices.Insert(slices.Clone(acme[:2]), 2, globex[2]), VerifyOptions{}, ErrForeignTenant, 3},
		{"globex entry relabelled as acme", append(slices.Clone(acme[:2]), func() Entry {
			e := globex[2]
			e.Tenant = "acme"
			return rehash(t, e)
		}()), VerifyOptions{}, ErrBrokenChain, 3},
		{"globex chain relabelled as acme", func() []Entry {
			out := slices.Clone(globex)
			for i := range out {
				out[i].Tenant = "acme"
				out[i] = rehash(t, out[i])
			}
			return out
		}(), VerifyOptions{}, ErrBrokenChain, 1},
		{"globex chain verified as acme's", globex, VerifyOptions{Tenant: "acme"}, ErrForeignTenant, 1},
		{"globex chain against acme anchor", globex, VerifyOptions{Anchor: &head}, ErrForeignTenant, 1},

		// Anchors.
		{"anchor with wrong hash", acme, VerifyOptions{Anchor: &Checkpoint{Tenant: "acme", Seq: 3, Hash: acme[1].Hash}}, ErrAnchorMismatch, 3},
		{"anchor beyond the head", acme, VerifyOptions{Anchor: &Checkpoint{Tenant: "acme", Seq: 9, Hash: acme[4].Hash}}, ErrTruncated, 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rep, err := Verify(tc.entries, tc.opts)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if rep.Entries != uint64(len(tc.entries)) || (len(tc.entries) > 0 && rep.Head.Hash != tc.entries[len(tc.entries)-1].Hash) {
					t.Fatalf("report %+v does not describe the chain", rep)
				}
				if rep.Anchored != (tc.opts.Anchor != nil) {
					t.Fatalf("report.Anchored = %v", rep.Anchored)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Seq != tc.seq {
				t.Fatalf("Verify = %v, want the first bad seq to be %d", err, tc.seq)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("seq %d:", tc.seq)) {
				t.Fatalf("message %q does not name seq %d", err, tc.seq)
			}
			if rep.Entries != tc.seq-1 || rep.Head.Seq != tc.seq-1 {
				t.Fatalf("report %+v should cover the %d entries before the failure", rep, tc.seq-1)
			}
		})
	}
}

func TestVerifierOptions(t *testing.T) {
	t.Parallel()
	h := Genesis("acme")
	for name, opts := range map[string]VerifyOptions{
		"anchor without tenant":     {Anchor: &Checkpoint{Seq: 1, Hash: h}},
		"anchor at seq 0":           {Anchor: &Checkpoint{Tenant: "acme", Hash: h}},
		"anchor for another tenant": {Tenant: "globex", Anchor: &Checkpoint{Tenant: "acme", Seq: 1, Hash: h}},
	} {
		if _, err := NewVerifier(opts); err == nil {
			t.Errorf("%s: NewVerifier accepted contradictory options", name)
		}
		if _, err := Verify(nil, opts); err == nil {
			t.Errorf("%s: Verify accepted contradictory options", name)
		}
	}
	rep, err := Verify(nil, VerifyOptions{Tenant: "acme"})
	if err != nil || rep.Head != (Checkpoint{Tenant: "acme", Seq: 0, Hash: Genesis("acme")}) {
		t.Fatalf("empty chain: %+v, %v", rep, err)
	}
}

// The streaming verifier holds constant state over a long chain and, after
// the first failure, keeps reporting it.
func TestVerifierStreaming(t *testing.T) {
	t.Parallel()
	const n = 20_000
	v, err := NewVerifier(VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var prev *Entry
	var last, at Entry
	for i := range n {
		e, err := Next(prev, Entry{Tenant: "acme", Time: t0.Add(time.Duration(i) * time.Millisecond), Actor: "system", Action: "device.heartbeat"})
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Add(e); err != nil {
			t.Fatalf("entry %d: %v", i+1, err)
		}
		if i == n/2 {
			at = e
		}
		last = e
		prev = &last
	}
	rep, err := v.Finish()
	if err != nil || rep.Entries != n || rep.Head.Hash != last.Hash {
		t.Fatalf("Finish = %+v, %v", rep, err)
	}

	// One edited entry: the failure is sticky.
	short := chain(t, "acme", 3)
	v2, _ := NewVerifier(VerifyOptions{})
	if err := v2.Add(short[0]); err != nil {
		t.Fatal(err)
	}
	bad := short[1]
	bad.Actor = "op-mallory"
	first := v2.Add(bad)
	if !errors.Is(first, ErrHashMismatch) {
		t.Fatalf("Add(edited) = %v", first)
	}
	if err := v2.Add(short[2]); err != first {
		t.Fatalf("after a failure Add returned %v, want the first error again", err)
	}
	if _, err := v2.Finish(); err != first {
		t.Fatalf("Finish = %v, want the first error", err)
	}

	// A streamed chain anchored at its midpoint.
	v3, _ := NewVerifier(VerifyOptions{Anchor: &Checkpoint{Tenant: "acme", Seq: at.Seq, Hash: at.Hash}})
	prev = nil
	for i := range n / 2 {
		e, _ := Next(prev, Entry{Tenant: "acme", Time: t0.Add(time.Duration(i) * time.Millisecond), Actor: "system", Action: "device.heartbeat"})
		if err := v3.Add(e); err != nil {
			t.Fatal(err)
		}
		last = e
		prev = &last
	}
	if _, err := v3.Finish(); !errors.Is(err, ErrTruncated) {
		t.Fatalf("chain cut before its anchor: Finish = %v, want ErrTruncated", err)
	}
}

func TestCheckpointText(t *testing.T) {
	t.Parallel()
	c := Checkpoint{Tenant: "acme", Seq: 42, Hash: Genesis("acme")}
	s := c.String()
	if want := "acme@42:" + c.Hash.String(); s != want {
		t.Fatalf("String() = %s, want %s", s, want)
	}
	back, err := ParseCheckpoint(s)
	if err != nil || back != c {
		t.Fatalf("ParseCheckpoint(%s) = %+v, %v", s, back, err)
	}
	odd := Checkpoint{Tenant: "we@ird:tenant", Seq: 1, Hash: c.Hash}
	if back, err := ParseCheckpoint(odd.String()); err != nil || back != odd {
		t.Fatalf("ParseCheckpoint(%s) = %+v, %v", odd, back, err)
	}
	for _, bad := range []string{"", "acme", "acme@42", "@42:" + c.Hash.String(), "acme@0:" + c.Hash.String(),
		"acme@x:" + c.Hash.String(), "acme@42:abc", "acme@-1:" + c.Hash.String()} {
		if _, err := ParseCheckpoint(bad); err == nil {
			t.Errorf("ParseCheckpoint(%q) succeeded", bad)
		}
	}
	data, err := json.Marshal(c)
	if err != nil || !strings.Contains(string(data), `"hash":"`+c.Hash.String()+`"`) {
		t.Fatalf("checkpoint JSON = %s, %v", data, err)
	}
}
