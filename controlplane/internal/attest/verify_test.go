package attest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/attest"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// env is one device, its TPM, the control plane's nonce store and the
// fleet policy under which its baseline was taken.
type env struct {
	f        *tpmFixture
	clock    *fakeClock
	nonces   *attest.MemoryNonces
	v        *attest.Verifier
	policy   attest.Policy
	baseline map[int][]byte
}

func newEnv(t *testing.T, f *tpmFixture) *env {
	t.Helper()
	clock := &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	e := &env{f: f, clock: clock, nonces: &attest.MemoryNonces{Now: clock.Now}}
	e.v = attest.NewVerifier(e.nonces)
	e.policy = attest.Policy{AllowedKinds: []string{f.kind}}
	e.baseline = f.pcrs(e.policy.Selection())
	return e
}

// input is the verifier input for evidence ev from this device.
func (e *env) input(t testing.TB, ev wire.AttestEvidence) attest.Input {
	return attest.Input{
		Tenant: tenant, Fleet: fleet, Device: e.f.device, TPMKind: e.f.kind, AKPublic: e.f.akPub,
		Evidence: mustJSON(t, ev), Policy: e.policy, Baseline: e.baseline, Now: e.clock.Now(),
	}
}

// answer issues a challenge to the device and returns its honest answer.
func (e *env) answer(t testing.TB) (attest.Nonce, wire.AttestEvidence) {
	n := issue(t, e.nonces, e.f.device)
	e.clock.Advance(150 * time.Millisecond) // the round trip
	return n, e.f.quote(n, e.policy.Selection(), nil)
}

func (e *env) verify(t testing.TB, in attest.Input) attest.Result {
	t.Helper()
	in.Now = e.clock.Now()
	res, err := e.v.Verify(context.Background(), in)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return res
}

type want struct {
	codes []string // nil: trusted
	pcrs  []int    // PCR indices named by the reasons
}

type verifyCase struct {
	name string
	prep func(t *testing.T, e *env) attest.Input
	want want
}

func withEvidence(mut func(ev *wire.AttestEvidence)) func(*testing.T, *env) attest.Input {
	return func(t *testing.T, e *env) attest.Input {
		_, ev := e.answer(t)
		mut(&ev)
		return e.input(t, ev)
	}
}

func withInput(mut func(e *env, in *attest.Input)) func(*testing.T, *env) attest.Input {
	return func(t *testing.T, e *env) attest.Input {
		_, ev := e.answer(t)
		in := e.input(t, ev)
		mut(e, &in)
		return in
	}
}

// stateAfterGoodQuote verifies an honest quote and returns the state it
// leaves.
func stateAfterGoodQuote(t *testing.T, e *env) attest.DeviceState {
	_, ev := e.answer(t)
	res := e.verify(t, e.input(t, ev))
	if res.Verdict.State != wire.VerdictTrusted || res.State == nil {
		t.Fatalf("honest quote: %+v", res.Verdict)
	}
	return *res.State
}

func malformed(mut func(ev *wire.AttestEvidence)) verifyCase {
	return verifyCase{prep: withEvidence(mut), want: want{codes: []string{wire.ReasonMalformed}}}
}

func verifyCases() []verifyCase {
	named := func(name string, c verifyCase) verifyCase { c.name = name; return c }
	untrusted := func(codes ...string) want { return want{codes: codes} }
	return []verifyCase{
		{name: "good quote", prep: withEvidence(func(*wire.AttestEvidence) {})},
		{name: "wrong nonce in evidence", want: untrusted(wire.ReasonNonceUnknown),
			prep: withEvidence(func(ev *wire.AttestEvidence) { ev.Nonce = bytes.Repeat([]byte{7}, attest.NonceSize) })},
		{name: "quote over another nonce", want: untrusted(wire.ReasonNonceUnknown),
			prep: func(t *testing.T, e *env) attest.Input {
				n1 := issue(t, e.nonces, e.f.device)
				n2 := issue(t, e.nonces, e.f.device)
				ev := e.f.quote(n2, e.policy.Selection(), nil)
				ev.ChallengeID, ev.Nonce = n1.ID, n1.Value
				return e.input(t, ev)
			}},
		{name: "unknown challenge id", want: untrusted(wire.ReasonNonceUnknown),
			prep: withEvidence(func(ev *wire.AttestEvidence) { ev.ChallengeID = "never-issued" })},
		{name: "replayed nonce", want: untrusted(wire.ReasonNonceReplayed),
			prep: func(t *testing.T, e *env) attest.Input {
				_, ev := e.answer(t)
				if r := e.verify(t, e.input(t, ev)); r.Verdict.State != wire.VerdictTrusted {
					t.Fatalf("first presentation: %+v", r.Verdict)
				}
				return e.input(t, ev)
			}},
		{name: "expired nonce", want: untrusted(wire.ReasonNonceExpired),
			prep: func(t *testing.T, e *env) attest.Input {
				_, ev := e.answer(t)
				e.clock.Advance(90 * time.Second) // past the 1 min TTL, within MemoryNonces.Retain
				return e.input(t, ev)
			}},
		{name: "nonce issued to another device", want: untrusted(wire.ReasonNonceUnknown),
			prep: func(t *testing.T, e *env) attest.Input {
				n := issue(t, e.nonces, "dev-b")
				return e.input(t, e.f.quote(n, e.policy.Selection(), nil))
			}},
		{name: "nonce issued in another tenant", want: untrusted(wire.ReasonNonceUnknown),
			prep: func(t *testing.T, e *env) attest.Input {
				n, err := e.nonces.Issue(context.Background(), "globex", e.f.device, time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				return e.input(t, e.f.quote(n, e.policy.Selection(), nil))
			}},
		{name: "signed by another device's AK", want: untrusted(wire.ReasonBadSignature),
			prep: func(t *testing.T, e *env) attest.Input {
				n := issue(t, e.nonces, e.f.device)
				return e.input(t, e.f.quote(n, e.policy.Selection(), e.f.otherAK()))
			}},
		{name: "signature of another quote", want: untrusted(wire.ReasonBadSignature),
			prep: func(t *testing.T, e *env) attest.Input {
				_, ev := e.answer(t)
				_, other := e.answer(t)
				ev.Signature = other.Signature
				return e.input(t, ev)
			}},
		{name: "enrolled AK of another device", want: untrusted(wire.ReasonBadSignature),
			prep: withInput(func(e *env, in *attest.Input) { in.AKPublic = e.f.otherAK().PublicArea() })},
		{name: "reported PCR value changed", want: untrusted(wire.ReasonPCRDigest),
			prep: withEvidence(func(ev *wire.AttestEvidence) { ev.PCRValues[3] = bytes.Repeat([]byte{1}, 32) })},
		{name: "reported PCR value missing", want: untrusted(wire.ReasonPCRDigest),
			prep: withEvidence(func(ev *wire.AttestEvidence) { delete(ev.PCRValues, 7) })},
		{name: "quote over other PCRs", want: untrusted(wire.ReasonPCRDigest),
			prep: func(t *testing.T, e *env) attest.Input {
				n := issue(t, e.nonces, e.f.device)
				return e.input(t, e.f.quote(n, []int{0, 1, 2, 3, 4, 5, 6, 7, 16}, nil))
			}},
		named("evidence claims another device", malformed(func(ev *wire.AttestEvidence) { ev.Device = "dev-b" })),
		named("wrong schema", malformed(func(ev *wire.AttestEvidence) { ev.Schema = "tg.attest.evidence.v0" })),
		named("truncated quote", malformed(func(ev *wire.AttestEvidence) { ev.Quote = ev.Quote[:len(ev.Quote)-5] })),
		named("quote with trailing byte", malformed(func(ev *wire.AttestEvidence) { ev.Quote = append(ev.Quote, 0) })),
		named("garbage quote", malformed(func(ev *wire.AttestEvidence) { ev.Quote = bytes.Repeat([]byte{0xff}, 100) })),
		named("quote without magic", malformed(func(ev *wire.AttestEvidence) { ev.Quote[0] ^= 1 })),
		named("certify attestation instead of quote", malformed(func(ev *wire.AttestEvidence) { ev.Quote[5] = 0x17 })),
		named("empty quote", malformed(func(ev *wire.AttestEvidence) { ev.Quote = nil })),
		named("truncated signature", malformed(func(ev *wire.AttestEvidence) { ev.Signature = ev.Signature[:len(ev.Signature)-1] })),
		named("signature with trailing byte", malformed(func(ev *wire.AttestEvidence) { ev.Signature = append(ev.Signature, 0) })),
		named("garbage signature", malformed(func(ev *wire.AttestEvidence) { ev.Signature = []byte("not a TPMT_SIGNATURE") })),
		named("short nonce", malformed(func(ev *wire.AttestEvidence) { ev.Nonce = ev.Nonce[:16] })),
		named("short PCR value", malformed(func(ev *wire.AttestEvidence) { ev.PCRValues[0] = ev.PCRValues[0][:31] })),
		named("PCR index out of range", malformed(func(ev *wire.AttestEvidence) { ev.PCRValues[24] = make([]byte, 32) })),
		named("no challenge id", malformed(func(ev *wire.AttestEvidence) { ev.ChallengeID = "" })),
		named("garbage event log", malformed(func(ev *wire.AttestEvidence) { ev.EventLog = []byte("MZ\x90\x00 not a TCG log") })),
		named("truncated event log", malformed(func(ev *wire.AttestEvidence) {
			l := buildLog([]testEvent{{pcr: 16, typ: evPostCode, data: []byte("x")}})
			ev.EventLog = l[:len(l)-3]
		})),
		named("oversized event log", malformed(func(ev *wire.AttestEvidence) { ev.EventLog = make([]byte, attest.MaxEventLogBytes+1) })),
		{name: "garbage JSON", want: untrusted(wire.ReasonMalformed),
			prep: withInput(func(_ *env, in *attest.Input) { in.Evidence = []byte("\x00garbage{") })},
		{name: "truncated JSON", want: untrusted(wire.ReasonMalformed),
			prep: withInput(func(_ *env, in *attest.Input) { in.Evidence = in.Evidence[:len(in.Evidence)/2] })},
		{name: "JSON field of the wrong type", want: untrusted(wire.ReasonMalformed),
			prep: withInput(func(_ *env, in *attest.Input) {
				in.Evidence = bytes.Replace(in.Evidence, []byte(`"quote":"`), []byte(`"quote":7,"x":"`), 1)
			})},
		{name: "device reported an error", want: untrusted(wire.ReasonDeviceError),
			prep: withEvidence(func(ev *wire.AttestEvidence) {
				*ev = wire.AttestEvidence{Schema: ev.Schema, Device: ev.Device, Error: "TPM busy"}
			})},
		{name: "TPM kind refused", want: untrusted(wire.ReasonTPMKindRefused),
			prep: withInput(func(_ *env, in *attest.Input) { in.Policy.AllowedKinds = nil })}, // default: hardware only
		{name: "device without TPM", want: untrusted(wire.ReasonNotAttestable),
			prep: withInput(func(_ *env, in *attest.Input) { in.TPMKind, in.AKPublic = wire.TPMKindNone, nil })},
		{name: "invalid policy fails closed", want: untrusted(wire.ReasonPCRPolicy),
			prep: withInput(func(_ *env, in *attest.Input) { in.Policy.Default = "any" })},
		{name: "clock older than the last trusted quote", want: untrusted(wire.ReasonClockRollback),
			prep: func(t *testing.T, e *env) attest.Input {
				st := stateAfterGoodQuote(t, e)
				st.Clock += uint64(time.Hour / time.Millisecond)
				_, ev := e.answer(t)
				in := e.input(t, ev)
				in.Prev = &st
				return in
			}},
		{name: "reset count went back", want: untrusted(wire.ReasonClockRollback),
			prep: func(t *testing.T, e *env) attest.Input {
				st := stateAfterGoodQuote(t, e)
				st.ResetCount++
				_, ev := e.answer(t)
				in := e.input(t, ev)
				in.Prev = &st
				return in
			}},
		{name: "restart count went back", want: untrusted(wire.ReasonClockRollback),
			prep: func(t *testing.T, e *env) attest.Input {
				st := stateAfterGoodQuote(t, e)
				st.RestartCount++
				_, ev := e.answer(t)
				in := e.input(t, ev)
				in.Prev = &st
				return in
			}},
		{name: "later quote of the same boot",
			prep: func(t *testing.T, e *env) attest.Input {
				st := stateAfterGoodQuote(t, e)
				_, ev := e.answer(t)
				in := e.input(t, ev)
				in.Prev = &st
				return in
			}},
		{name: "golden values",
			prep: withInput(func(e *env, in *attest.Input) {
				in.Policy.Rules = goldenRules(e.baseline)
				in.Baseline = nil
			})},
		{name: "golden value mismatch", want: want{codes: []string{wire.ReasonPCRPolicy}, pcrs: []int{3}},
			prep: withInput(func(e *env, in *attest.Input) {
				in.Policy.Rules = goldenRules(e.baseline)
				in.Policy.Rules[3] = attest.PCRRule{Mode: attest.ModeGolden, Allow: []string{hex.EncodeToString(bytes.Repeat([]byte{3}, 32))}}
			})},
		{name: "baseline mismatch", want: want{codes: []string{wire.ReasonPCRPolicy, wire.ReasonPCRPolicy}, pcrs: []int{1, 5}},
			prep: withInput(func(e *env, in *attest.Input) {
				in.Baseline = maps.Clone(e.baseline)
				in.Baseline[1] = bytes.Repeat([]byte{1}, 32)
				in.Baseline[5] = bytes.Repeat([]byte{5}, 32)
			})},
	}
}

func goldenRules(values map[int][]byte) map[int]attest.PCRRule {
	rules := make(map[int]attest.PCRRule)
	for i, v := range values {
		rules[i] = attest.PCRRule{Mode: attest.ModeGolden, Allow: []string{
			hex.EncodeToString(bytes.Repeat([]byte{0xee}, 32)), hex.EncodeToString(v)}}
	}
	return rules
}

func checkResult(t *testing.T, e *env, res attest.Result, w want) {
	t.Helper()
	v := res.Verdict
	if v.Schema != wire.VerdictSchema || v.Tenant != tenant || v.Fleet != fleet || v.Device != e.f.device || v.TPMKind == "" || v.VerdictAt.IsZero() {
		t.Errorf("verdict header: %+v", v)
	}
	if got := codes(v); !slices.Equal(got, w.codes) {
		t.Fatalf("reasons %v, want %v (%+v)", got, w.codes, v.Reasons)
	}
	if got := reasonPCRs(v); !slices.Equal(got, w.pcrs) {
		t.Errorf("reasons name PCRs %v, want %v", got, w.pcrs)
	}
	if w.codes == nil {
		if v.State != wire.VerdictTrusted || !res.StateChanged || res.State == nil || res.State.VerifiedAt.IsZero() {
			t.Errorf("trusted result: %+v state %+v", v, res.State)
		}
		if len(v.PCRDigest) != 64 || v.NonceAgeMS != 150 || v.EvidenceAt.IsZero() {
			t.Errorf("verdict digest %q, nonce age %d ms, evidence at %v", v.PCRDigest, v.NonceAgeMS, v.EvidenceAt)
		}
		return
	}
	if v.State != wire.VerdictUntrusted || res.StateChanged || res.BaselineRecorded {
		t.Errorf("untrusted result: state %q, state changed %v, baseline recorded %v", v.State, res.StateChanged, res.BaselineRecorded)
	}
}

func runVerifyCases(t *testing.T, open func(t *testing.T) *tpmFixture) {
	f := open(t)
	e := newEnv(t, f)
	for _, c := range verifyCases() {
		t.Run(c.name, func(t *testing.T) {
			parent := f.t
			f.t = t
			defer func() { f.t = parent }()
			in := c.prep(t, e)
			checkResult(t, e, e.verify(t, in), c.want)
		})
	}
}

func TestVerifySimulator(t *testing.T) {
	runVerifyCases(t, func(t *testing.T) *tpmFixture { return openSim(t, "dev-a") })
}

func TestVerifySWTPM(t *testing.T) {
	t.Parallel() // swtpm is a process of its own; the simulator tests may run beside it
	runVerifyCases(t, func(t *testing.T) *tpmFixture { return openSWTPM(t, "dev-a") })
}

// TestBaselineRecordedOnFirstTrustedQuote: with no baseline, the first
// otherwise-trusted quote sets it, and a changed PCR is caught next time.
func TestBaselineRecordedOnFirstTrustedQuote(t *testing.T) {
	e := newEnv(t, openSim(t, "dev-a"))
	_, ev := e.answer(t)
	in := e.input(t, ev)
	in.Baseline = nil
	res := e.verify(t, in)
	checkResult(t, e, res, want{})
	if !res.BaselineRecorded || !maps.EqualFunc(res.Baseline, e.baseline, bytes.Equal) {
		t.Fatalf("baseline recorded %v: %x, want %x", res.BaselineRecorded, res.Baseline, e.baseline)
	}

	e.f.extend(2, sha256.Sum256([]byte("option ROM")))
	_, ev = e.answer(t)
	in = e.input(t, ev)
	in.Baseline, in.Prev = res.Baseline, res.State
	checkResult(t, e, e.verify(t, in), want{codes: []string{wire.ReasonPCRPolicy}, pcrs: []int{2}})

	// An untrusted first quote records nothing.
	_, ev = e.answer(t)
	in = e.input(t, ev)
	in.Baseline = map[int][]byte{0: make([]byte, 31)}
	if r := e.verify(t, in); r.BaselineRecorded || r.Verdict.State != wire.VerdictUntrusted {
		t.Fatalf("untrusted first quote: %+v, baseline recorded %v", r.Verdict, r.BaselineRecorded)
	}
}

// TestPCRExtended: a PCR the policy selects is extended on a running
// device (no event log), and the next verdict is untrusted naming it.
func TestPCRExtended(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) *tpmFixture
		pcr  int
	}{
		{"simulator", func(t *testing.T) *tpmFixture { return openSim(t, "dev-a") }, 7},
		{"swtpm tpm2_pcrextend", func(t *testing.T) *tpmFixture { return openSWTPM(t, "dev-a") }, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.open(t))
			st := stateAfterGoodQuote(t, e)
			e.f.extend(tc.pcr, sha256.Sum256([]byte("rootkit")))
			_, ev := e.answer(t)
			in := e.input(t, ev)
			in.Prev = &st
			checkResult(t, e, e.verify(t, in), want{codes: []string{wire.ReasonPCRPolicy}, pcrs: []int{tc.pcr}})

			// PCR 16 is not selected: extending it changes nothing.
			e.f.extend(16, sha256.Sum256([]byte("debug")))
			e.baseline = e.f.pcrs(e.policy.Selection())
			_, ev = e.answer(t)
			in = e.input(t, ev)
			in.Prev = &st
			checkResult(t, e, e.verify(t, in), want{})
		})
	}
}

// TestReboot: a TPM reset shows as Reboot on a trusted verdict; the state
// then moves to the new boot, and the old boot's state is a rollback.
func TestReboot(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) *tpmFixture
	}{
		{"simulator reset", func(t *testing.T) *tpmFixture { return openSim(t, "dev-a") }},
		{"swtpm restart", func(t *testing.T) *tpmFixture { return openSWTPM(t, "dev-a") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.open(t))
			before := stateAfterGoodQuote(t, e)
			e.f.reboot()
			_, ev := e.answer(t)
			in := e.input(t, ev)
			in.Prev = &before
			res := e.verify(t, in)
			checkResult(t, e, res, want{})
			if !res.Verdict.Reboot || res.State.ResetCount <= before.ResetCount {
				t.Fatalf("reboot %v, reset count %d -> %d", res.Verdict.Reboot, before.ResetCount, res.State.ResetCount)
			}
			after := *res.State

			_, ev = e.answer(t)
			in = e.input(t, ev)
			in.Prev = &after
			if r := e.verify(t, in); r.Verdict.Reboot || r.Verdict.State != wire.VerdictTrusted {
				t.Fatalf("second quote of the new boot: %+v", r.Verdict)
			}

			// A quote of the old boot presented against the new state.
			old := after
			old.ResetCount = after.ResetCount + 1
			_, ev = e.answer(t)
			in = e.input(t, ev)
			in.Prev = &old
			checkResult(t, e, e.verify(t, in), want{codes: []string{wire.ReasonClockRollback}})
		})
	}
}

// TestEventLog replays synthetic logs against the simulator's PCRs,
// extended with the same digests the log records.
func TestEventLog(t *testing.T) {
	e := newEnv(t, openSim(t, "dev-a"))
	events := []testEvent{
		{pcr: 0, typ: evNoAction, data: []byte("StartupLocality\x00\x00")},
		{pcr: 0, typ: evPostCode, data: []byte("firmware volume")},
		{pcr: 4, typ: evEFIBootServicesApp, data: []byte("\\EFI\\BOOT\\BOOTX64.EFI")},
		secureBootEvent(true),
		{pcr: 7, typ: evSeparator, data: []byte{0, 0, 0, 0}},
		{pcr: 4, typ: evEFIBootServicesApp, data: []byte("vmlinuz")},
	}
	for _, ev := range events {
		if ev.typ != evNoAction {
			e.f.extend(int(ev.pcr), ev.sha256())
		}
	}
	e.baseline = e.f.pcrs(e.policy.Selection())
	good := buildLog(events)

	tampered := slices.Clone(events)
	tampered[5] = testEvent{pcr: 4, typ: evEFIBootServicesApp, data: []byte("vmlinuz-evil")}

	secureBootOff := slices.Clone(events)
	secureBootOff[3] = secureBootEvent(false) // claims off; its digest no longer matches what PCR 7 holds

	for _, c := range []struct {
		name       string
		log        []byte
		extend     int // PCR to extend first, without a log entry (-1: none)
		want       want
		secureBoot bool
		replayed   []int
	}{
		{name: "log reproduces the quote", log: good, extend: -1, secureBoot: true, replayed: []int{0, 4, 7}},
		{name: "tampered event", log: buildLog(tampered), extend: -1, want: want{codes: []string{wire.ReasonEventLog}, pcrs: []int{4}}},
		{name: "secure boot event replaced", log: buildLog(secureBootOff), extend: -1, want: want{codes: []string{wire.ReasonEventLog}, pcrs: []int{7}}},
		{name: "dropped event", log: buildLog(events[:5]), extend: -1, want: want{codes: []string{wire.ReasonEventLog}, pcrs: []int{4}}},
		// The go-tpm-tools trap: PCR 5 changed and the log has no event
		// for it. The log replays fine; our policy still refuses PCR 5.
		{name: "PCR without events changed", log: good, extend: 5, want: want{codes: []string{wire.ReasonPCRPolicy}, pcrs: []int{5}}},
		{name: "empty log and a changed PCR", log: buildLog(nil), extend: 6, want: want{codes: []string{wire.ReasonPCRPolicy, wire.ReasonPCRPolicy}, pcrs: []int{5, 6}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.f.t = t
			if c.extend >= 0 {
				e.f.extend(c.extend, sha256.Sum256([]byte("unlogged")))
			}
			_, ev := e.answer(t)
			ev.EventLog = c.log
			res := e.verify(t, e.input(t, ev))
			checkResult(t, e, res, c.want)
			if c.want.codes != nil {
				return
			}
			if res.Boot == nil || res.Boot.SecureBoot == nil || *res.Boot.SecureBoot != c.secureBoot ||
				!slices.Equal(res.Boot.Replayed, c.replayed) || res.Boot.Events != len(events) {
				t.Fatalf("boot info %+v", res.Boot)
			}
		})
	}
}

func TestEventLogWithoutSHA256Bank(t *testing.T) {
	e := newEnv(t, openSim(t, "dev-a"))
	log := buildLog(nil)
	// Rewrite the header's SHA-256 entry (0x000b) to SHA-384 (0x000c, 48).
	i := bytes.Index(log, []byte{0x0b, 0x00, 0x20, 0x00})
	copy(log[i:], []byte{0x0c, 0x00, 0x30, 0x00})
	_, ev := e.answer(t)
	ev.EventLog = log
	checkResult(t, e, e.verify(t, e.input(t, ev)), want{codes: []string{wire.ReasonEventLog}})
}
