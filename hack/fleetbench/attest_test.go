package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// TestTrackerPairsVerdictsWithEvidence checks the pairing the latency rests
// on: a verdict belongs to the evidence whose challenge was issued at
// evidence_at − nonce_age_ms, whatever order verdicts come in.
func TestTrackerPairsVerdictsWithEvidence(t *testing.T) {
	tr := newAttestTracker(2, 10*time.Second)
	tr.register("dev-a")
	tr.register("dev-b")
	base := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	sent := time.Now()
	tr.setPhase(1)
	// dev-a answers two challenges (a late one still pending), dev-b one.
	tr.evidence("dev-a", base, sent)
	tr.evidence("dev-a", base.Add(10*time.Second), sent.Add(10*time.Second))
	tr.evidence("dev-b", base.Add(time.Second), sent.Add(time.Second))
	verdict := func(dev, state string, issued time.Time, ageMS int64) wire.Verdict {
		return wire.Verdict{Schema: wire.VerdictSchema, Device: dev, State: state,
			EvidenceAt: issued.Add(time.Duration(ageMS)*time.Millisecond + 700*time.Microsecond), NonceAgeMS: ageMS}
	}
	tr.verdict(verdict("dev-a", wire.VerdictUnknown, time.Time{}, 0), sent)
	tr.verdict(verdict("dev-a", wire.VerdictTrusted, base.Add(10*time.Second), 40), sent.Add(10*time.Second+50*time.Millisecond))
	tr.verdict(verdict("dev-b", wire.VerdictTrusted, base.Add(time.Second), 25), sent.Add(time.Second+30*time.Millisecond))
	tr.verdict(verdict("dev-a", wire.VerdictTrusted, base.Add(3*time.Second), 5), sent) // answers nothing we sent
	tr.verdict(verdict("dev-x", wire.VerdictTrusted, base, 5), sent)                    // not ours
	tr.setPhase(2)
	select {
	case <-tr.drained:
		t.Fatal("drained with dev-a's first evidence still open")
	default:
	}
	tr.verdict(wire.Verdict{Schema: wire.VerdictSchema, Device: "dev-b", State: wire.VerdictStale, EvidenceAt: base}, sent)
	tr.verdict(verdict("dev-a", wire.VerdictTrusted, base, 70), sent.Add(80*time.Millisecond))
	select {
	case <-tr.drained:
	default:
		t.Fatal("not drained after every window evidence got its verdict")
	}
	select {
	case <-tr.all:
	default:
		t.Fatal("both devices were trusted")
	}

	r := tr.res
	if r.Evidence != 3 || r.Verdicts != 3 || r.Unknown != 1 || r.Unmatched != 2 || r.NotTrusted != 1 {
		t.Fatalf("evidence %d verdicts %d unknown %d unmatched %d not trusted %d; want 3 3 1 2 1",
			r.Evidence, r.Verdicts, r.Unknown, r.Unmatched, r.NotTrusted)
	}
	want := map[string][]time.Duration{"dev-a": {50 * time.Millisecond, 80 * time.Millisecond}, "dev-b": {30 * time.Millisecond}}
	got := map[string][]time.Duration{}
	for _, l := range tr.latency {
		got[l.device] = append(got[l.device], l.lat)
	}
	for dev, w := range want {
		if len(got[dev]) != len(w) {
			t.Fatalf("%s: latencies %v, want %v", dev, got[dev], w)
		}
		for i := range w {
			if got[dev][i] != w[i] {
				t.Errorf("%s: latencies %v, want %v", dev, got[dev], w)
			}
		}
	}
}

func TestLogWarnings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cp.log")
	log := `time=2026-01-01T00:00:00Z level=INFO msg="before the phase"
time=2026-01-01T00:00:00Z level=WARN msg="old warning"
`
	offset := int64(len(log))
	log += `time=2026-01-01T00:00:01Z level=INFO msg="api listening" addr=127.0.0.1:1
time=2026-01-01T00:00:02Z level=WARN msg="attestation evidence dropped: verification queue full" tenant=t device=d
time=2026-01-01T00:00:03Z level=WARN msg="attestation evidence dropped: verification queue full" tenant=t device=e
time=2026-01-01T00:00:04Z level=ERROR msg=boom error="x \"y\""
{"time":"2026-01-01T00:00:05Z","level":"WARN","msg":"json warning"}
`
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	got := logWarnings(path, offset)
	want := map[string]int{
		"WARN attestation evidence dropped: verification queue full": 2,
		"ERROR boom":        1,
		"WARN json warning": 1,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("got %v, want %v", got, want)
		}
	}
}

func TestMaxInWindow(t *testing.T) {
	t0 := time.Now()
	at := func(ms ...int) []time.Time {
		var out []time.Time
		for _, m := range ms {
			out = append(out, t0.Add(time.Duration(m)*time.Millisecond))
		}
		return out
	}
	for _, c := range []struct {
		ts   []time.Time
		want int
	}{
		{nil, 0},
		{at(0), 1},
		{at(0, 999), 2},
		{at(0, 1000), 1},
		{at(2500, 0, 10, 3000, 3400, 20), 3},
	} {
		if got := maxInWindow(c.ts, time.Second); got != c.want {
			t.Errorf("maxInWindow(%v) = %d, want %d", c.ts, got, c.want)
		}
	}
}
