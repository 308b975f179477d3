package main

import (
	"slices"
	"testing"

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

func TestParseRolloutSettings(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		devices, agents, waves string
		wantWaves              []int
		wantAgents             int
		ok                     bool
	}{
		{name: "defaults", wantWaves: []int{100}, wantAgents: 10, ok: true},
		{name: "canary waves", waves: "5, 25,100", wantWaves: []int{5, 25, 100}, wantAgents: 10, ok: true},
		{name: "no real agents", agents: "0", wantWaves: []int{100}, ok: true},
		{name: "agents beyond devices", devices: "4", agents: "5"},
		{name: "waves not ending at 100", waves: "10,50"},
		{name: "waves not increasing", waves: "50,50,100"},
		{name: "wave above 100", waves: "50,150"},
		{name: "wave not a number", waves: "ten,100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("BENCH_ROLLOUT_DEVICES", tc.devices)
			t.Setenv("BENCH_ROLLOUT_AGENTS", tc.agents)
			t.Setenv("BENCH_ROLLOUT_WAVES", tc.waves)
			t.Setenv("TG_ONNXRUNTIME_LIB", "/opt/libonnxruntime.so.1")
			r, err := parseRolloutSettings(".")
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if !tc.ok {
				return
			}
			if !slices.Equal(r.waves, tc.wantWaves) || r.agents != tc.wantAgents || r.onnxLib != "/opt/libonnxruntime.so.1" {
				t.Errorf("got waves %v agents %d lib %s", r.waves, r.agents, r.onnxLib)
			}
		})
	}
}

// TestRolloutWatch: all closes only when every device of the fleet is
// expected and trusted, whichever comes first, and a verdict that is not
// trusted is counted.
func TestRolloutWatch(t *testing.T) {
	w := newRolloutWatch(2)
	closed := func() bool {
		select {
		case <-w.all:
			return true
		default:
			return false
		}
	}
	w.verdict(wire.Verdict{Device: "dev-a", State: wire.VerdictTrusted}) // before it is expected
	w.expect("dev-a")
	if closed() {
		t.Fatal("closed before dev-b enrolled")
	}
	w.expect("dev-b")
	if closed() {
		t.Fatal("closed before dev-b was trusted")
	}
	w.verdict(wire.Verdict{Device: "dev-b", State: wire.VerdictUnknown})
	w.verdict(wire.Verdict{Device: "dev-b", State: wire.VerdictStale, Reasons: []wire.VerdictReason{{Code: "NO_ANSWER"}}})
	if closed() || w.notTrusted != 1 || w.firstNot == "" {
		t.Fatalf("closed %v, not trusted %d (%q)", closed(), w.notTrusted, w.firstNot)
	}
	w.verdict(wire.Verdict{Device: "dev-b", State: wire.VerdictTrusted})
	if !closed() {
		t.Fatal("not closed after every device was trusted")
	}
	w.verdict(wire.Verdict{Device: "dev-b", State: wire.VerdictTrusted}) // no second close
}

func TestReadProcStat(t *testing.T) {
	s, err := readProcStat()
	if err != nil {
		t.Fatal(err)
	}
	if s.total <= 0 || s.busy < 0 || s.busy > s.total {
		t.Fatalf("busy %d of total %d", s.busy, s.total)
	}
}
