package attest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/tensorguard/tensorguardflow/agent/internal/outbox"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// TestQuoteVerifies: a challenge is answered with a quote by the AK over
// the requested SHA-256 PCRs with the nonce, the PCR values the quote
// covers (they are the TPM's current values), the event log, and the
// outbox's msg_id, as a critical entry. After a PCR is extended the next
// answer shows the new value and still verifies.
func TestQuoteVerifies(t *testing.T) {
	dev, akPub := openSim(t)
	logPath := filepath.Join(t.TempDir(), "binary_bios_measurements")
	eventLog := []byte("\x00\x00\x00\x00\x03\x00\x00\x00 a TCG event log, as far as the agent cares")
	if err := os.WriteFile(logPath, eventLog, 0o600); err != nil {
		t.Fatal(err)
	}
	measure := sha256.Sum256([]byte("kernel"))
	if err := dev.ExtendPCR(16, tpm2.AlgSHA256, measure[:]); err != nil {
		t.Fatal(err)
	}
	r, box, _ := newResponder(t, dev, func(c *Config) { c.EventLogPath = logPath })
	run(t, r)

	c1 := newChallenge("c-1", 0, 7, 16)
	r.Handle(context.Background(), presence.Message{Topic: "cmd/attest", Payload: encode(t, c1)})
	ev := box.waitEvidence(t, 1)[0]
	ad := verifyQuote(t, ev, c1, akPub)
	now, err := dev.ReadPCRs(tpm2.AlgSHA256, c1.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range now {
		if !bytes.Equal(ev.PCRValues[i], v) {
			t.Fatalf("reported PCR %d = %x, the TPM has %x", i, ev.PCRValues[i], v)
		}
	}
	if !bytes.Equal(ev.EventLog, eventLog) {
		t.Fatalf("event log %q, want the file's %q", ev.EventLog, eventLog)
	}
	if outbox.ClassifyByTopic(testTopic) != outbox.ClassCritical {
		t.Fatal("the attestation topic is not a critical outbox class")
	}

	if err := dev.ExtendPCR(16, tpm2.AlgSHA256, measure[:]); err != nil {
		t.Fatal(err)
	}
	c2 := newChallenge("c-2", 16)
	send(t, r, c2)
	ev2 := box.waitEvidence(t, 2)[1]
	ad2 := verifyQuote(t, ev2, c2, akPub)
	// The TPM's clock and reset/restart counters travel in the quote.
	if ad2.ClockInfo.Clock < ad.ClockInfo.Clock || ad2.ClockInfo.ResetCount != ad.ClockInfo.ResetCount ||
		ad2.ClockInfo.RestartCount != ad.ClockInfo.RestartCount {
		t.Fatalf("clock info went from %+v to %+v", ad.ClockInfo, ad2.ClockInfo)
	}
	if bytes.Equal(ev2.PCRValues[16], ev.PCRValues[16]) {
		t.Fatal("PCR 16 did not change in the evidence after an extend")
	}
	if ev2.MsgID == ev.MsgID {
		t.Fatalf("two answers share msg_id %s", ev.MsgID)
	}
}

// TestDuplicateChallenge: a redelivered challenge (same id) costs no
// second quote and produces no second answer.
func TestDuplicateChallenge(t *testing.T) {
	dev, akPub := openSim(t)
	tpm := &countingTPM{TPM: dev}
	r, box, _ := newResponder(t, tpm, nil)
	run(t, r)

	a, b := newChallenge("a", 0), newChallenge("b", 0)
	send(t, r, a)
	r.Handle(context.Background(), presence.Message{Payload: encode(t, a), Duplicate: true})
	if err := r.HandleChallenge(encode(t, a)); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("third delivery of a: %v, want ErrDuplicate", err)
	}
	send(t, r, b)
	// Answers go in arrival order, so once b is answered a duplicate of a
	// would have been too.
	evs := box.waitEvidence(t, 2)
	if len(evs) != 2 || evs[0].ChallengeID != "a" || evs[1].ChallengeID != "b" {
		t.Fatalf("answered %v, want a then b", ids(evs))
	}
	verifyQuote(t, evs[0], a, akPub)
	if _, quotes := tpm.counts(); quotes != 2 {
		t.Fatalf("%d quotes, want 2", quotes)
	}
}

func ids(evs []wire.AttestEvidence) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.ChallengeID)
	}
	return out
}

// malformedChallenges are payloads that must be dropped without an answer.
func malformedChallenges(t testing.TB) map[string][]byte {
	good := newChallenge("good", 0, 7)
	mut := func(f func(c *wire.AttestChallenge)) []byte {
		c := good
		c.PCRs = append([]int(nil), good.PCRs...)
		f(&c)
		return encode(t, c)
	}
	pcrs := func(p ...int) []byte { return mut(func(c *wire.AttestChallenge) { c.PCRs = p }) }
	all := make([]int, 25)
	for i := range all {
		all[i] = i
	}
	g := encode(t, good)
	return map[string][]byte{
		"empty":              nil,
		"not json":           []byte("attest please"),
		"truncated":          g[:len(g)/2],
		"json null":          []byte("null"),
		"json array":         []byte(`[1,2]`),
		"trailing object":    append(append([]byte(nil), g...), []byte(`{}`)...),
		"trailing garbage":   append(append([]byte(nil), g...), 'x'),
		"too large":          append(append([]byte(nil), g[:len(g)-1]...), []byte(`,"pad":"`+strings.Repeat("x", MaxChallengeBytes)+`"}`)...),
		"wrong schema":       mut(func(c *wire.AttestChallenge) { c.Schema = "tg.attest.challenge.v2" }),
		"no schema":          mut(func(c *wire.AttestChallenge) { c.Schema = "" }),
		"no id":              mut(func(c *wire.AttestChallenge) { c.ID = "" }),
		"id with space":      mut(func(c *wire.AttestChallenge) { c.ID = "a b" }),
		"id with control":    mut(func(c *wire.AttestChallenge) { c.ID = "a\nb" }),
		"id not ascii":       mut(func(c *wire.AttestChallenge) { c.ID = "défi" }),
		"id too long":        mut(func(c *wire.AttestChallenge) { c.ID = strings.Repeat("i", MaxIDLength+1) }),
		"no nonce":           mut(func(c *wire.AttestChallenge) { c.Nonce = nil }),
		"short nonce":        mut(func(c *wire.AttestChallenge) { c.Nonce = c.Nonce[:31] }),
		"long nonce":         mut(func(c *wire.AttestChallenge) { c.Nonce = append(c.Nonce, 0) }),
		"nonce not base64":   bytes.Replace(g, []byte(`"nonce":"`), []byte(`"nonce":"!!`), 1),
		"nonce a number":     bytes.Replace(g, []byte(`"nonce":"`), []byte(`"nonce":1,"x":"`), 1),
		"no pcrs":            pcrs(),
		"pcr 24":             pcrs(0, 24),
		"pcr -1":             pcrs(-1, 0),
		"pcr repeated":       pcrs(0, 7, 7),
		"pcrs descending":    pcrs(7, 0),
		"25 pcrs":            pcrs(all...),
		"pcr not an integer": bytes.Replace(g, []byte(`"pcrs":[0,`), []byte(`"pcrs":[0.5,`), 1),
		"no issued_at":       mut(func(c *wire.AttestChallenge) { c.IssuedAt = time.Time{} }),
		"no expires_at":      mut(func(c *wire.AttestChallenge) { c.ExpiresAt = time.Time{} }),
		"expires at issue":   mut(func(c *wire.AttestChallenge) { c.ExpiresAt = c.IssuedAt }),
		"expires before":     mut(func(c *wire.AttestChallenge) { c.ExpiresAt = c.IssuedAt.Add(-time.Second) }),
		"time not rfc3339":   bytes.Replace(g, []byte(`"issued_at":"`), []byte(`"issued_at":"yesterday","x":"`), 1),
	}
}

// TestMalformedChallenges: every malformed payload is refused with
// ErrMalformed, logged at debug level through Handle, and never answered;
// the responder keeps working.
func TestMalformedChallenges(t *testing.T) {
	r, box, logs := newResponder(t, nil, nil)
	run(t, r)
	bad := malformedChallenges(t)
	for name, p := range bad {
		if _, err := ParseChallenge(p); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: ParseChallenge: %v, want ErrMalformed", name, err)
		}
		if err := r.HandleChallenge(p); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: HandleChallenge: %v, want ErrMalformed", name, err)
		}
		r.Handle(context.Background(), presence.Message{Payload: p})
	}
	if n := logs.count("attestation challenge dropped"); n != len(bad) {
		t.Errorf("logged %d dropped challenges, want %d", n, len(bad))
	}
	// Edge cases that are well formed.
	for name, c := range map[string]wire.AttestChallenge{
		"all 24 pcrs":    newChallenge("all-24", 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23),
		"longest id":     newChallenge(strings.Repeat("~", MaxIDLength), 23),
		"base64 like id": newChallenge("Zm9v+/=_-:.", 0),
	} {
		if err := r.HandleChallenge(encode(t, c)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	good := newChallenge("good", 0)
	withExtra := bytes.Replace(encode(t, good), []byte(`{`), []byte(`{"future_field":{"x":1},`), 1)
	if err := r.HandleChallenge(withExtra); err != nil {
		t.Fatalf("unknown field: %v", err)
	}
	evs := box.waitEvidence(t, 4)
	if got := ids(evs); len(got) != 4 || got[3] != "good" {
		t.Fatalf("answered %v, want only the four well-formed challenges", got)
	}
}

// TestExpiredChallenge: a challenge expired by more than the skew is
// answered with ErrorExpired and no TPM use; one expired within the skew
// is quoted.
func TestExpiredChallenge(t *testing.T) {
	dev, akPub := openSim(t)
	tpm := &countingTPM{TPM: dev}
	r, box, _ := newResponder(t, tpm, func(c *Config) { c.Skew = 5 * time.Minute })
	run(t, r)

	old := newChallenge("old", 0)
	old.IssuedAt, old.ExpiresAt = old.IssuedAt.Add(-11*time.Minute), old.IssuedAt.Add(-10*time.Minute)
	send(t, r, old)
	ev := box.waitEvidence(t, 1)[0]
	if ev.Error != ErrorExpired || ev.ChallengeID != "old" || !bytes.Equal(ev.Nonce, old.Nonce) || ev.Quote != nil || ev.PCRValues != nil {
		t.Fatalf("expired challenge answered %+v", ev)
	}
	if aks, quotes := tpm.counts(); aks != 0 || quotes != 0 {
		t.Fatalf("expired challenge used the TPM: %d AK loads, %d quotes", aks, quotes)
	}

	late := newChallenge("late", 0)
	late.IssuedAt, late.ExpiresAt = late.IssuedAt.Add(-2*time.Minute), late.IssuedAt.Add(-time.Minute)
	send(t, r, late)
	verifyQuote(t, box.waitEvidence(t, 2)[1], late, akPub)
}

// TestNoTPM: a device enrolled without a TPM answers every challenge with
// ErrorNoTPM, so the verifier can tell "not attestable" from "silent".
func TestNoTPM(t *testing.T) {
	t.Parallel()
	r, box, _ := newResponder(t, nil, func(c *Config) { c.EventLogPath = "/proc/self/status" })
	run(t, r)
	c := newChallenge("c-1", 0, 7)
	send(t, r, c)
	ev := box.waitEvidence(t, 1)[0]
	if ev.Error != ErrorNoTPM || ev.ChallengeID != c.ID || !bytes.Equal(ev.Nonce, c.Nonce) ||
		ev.Quote != nil || ev.Signature != nil || ev.PCRValues != nil || ev.EventLog != nil {
		t.Fatalf("answer without a TPM: %+v", ev)
	}
}

// TestTPMErrors: a failed quote is retried once with a freshly loaded AK;
// when that fails too the answer carries the error, and the next challenge
// is quoted normally.
func TestTPMErrors(t *testing.T) {
	dev, akPub := openSim(t)
	tpm := &countingTPM{TPM: dev, failQuotes: 1}
	r, box, logs := newResponder(t, tpm, nil)
	run(t, r)

	c1 := newChallenge("c-1", 0)
	send(t, r, c1)
	verifyQuote(t, box.waitEvidence(t, 1)[0], c1, akPub)
	if aks, quotes := tpm.counts(); aks != 2 || quotes != 2 {
		t.Fatalf("one failure: %d AK loads and %d quotes, want 2 and 2", aks, quotes)
	}

	tpm.mu.Lock()
	tpm.failQuotes = 2
	tpm.mu.Unlock()
	c2 := newChallenge("c-2", 0)
	send(t, r, c2)
	ev := box.waitEvidence(t, 2)[1]
	if !strings.Contains(ev.Error, errInjected.Error()) || ev.ChallengeID != "c-2" || ev.Quote != nil {
		t.Fatalf("answer after two failures: %+v", ev)
	}
	if logs.count(`level=WARN msg="attestation quote failed"`) != 1 {
		t.Fatalf("quote failures not logged:\n%s", logs.b.String())
	}

	c3 := newChallenge("c-3", 0)
	send(t, r, c3)
	verifyQuote(t, box.waitEvidence(t, 3)[2], c3, akPub)
	if aks, _ := tpm.counts(); aks != 4 {
		t.Fatalf("%d AK loads, want 4 (the first, then one after each of 3 failures)", aks)
	}
}

// TestEventLog: the log is sent when present (up to the limit) and
// omitted when absent, too large, unreadable or not configured; each
// problem is logged once, not once per answer.
func TestEventLog(t *testing.T) {
	dev, akPub := openSim(t)
	dir := t.TempDir()
	write := func(name string, n int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Repeat([]byte{0xAB}, n), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name    string
		path    string
		wantLen int
		logged  string
	}{
		{"present", write("log", 50), 50, ""},
		{"exactly the limit", write("limit", 64), 64, ""},
		{"empty", write("empty", 0), 0, ""},
		{"absent", filepath.Join(dir, "missing"), 0, "no measured-boot event log"},
		{"too large", write("large", 65), 0, "larger than the limit"},
		{"unreadable", dir, 0, "event log unreadable"},
		{"not configured", "", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, box, logs := newResponder(t, dev, func(c *Config) { c.EventLogPath, c.MaxEventLog = tc.path, 64 })
			run(t, r)
			for i := range 2 {
				c := newChallenge(fmt.Sprintf("c-%d", i), 0)
				send(t, r, c)
				ev := box.waitEvidence(t, i+1)[i]
				verifyQuote(t, ev, c, akPub)
				if len(ev.EventLog) != tc.wantLen || (tc.wantLen == 0 && ev.EventLog != nil) {
					t.Fatalf("event log of %d bytes (nil %v), want %d", len(ev.EventLog), ev.EventLog == nil, tc.wantLen)
				}
			}
			if tc.logged != "" {
				if n := logs.count(tc.logged); n != 1 {
					t.Fatalf("%q logged %d times over two answers, want once", tc.logged, n)
				}
			}
		})
	}
}

// TestOutboxRefusals: evidence too large with its event log goes without
// it; a full outbox drops the answer but lets a redelivery through; a
// storage error ends Run.
func TestOutboxRefusals(t *testing.T) {
	dev, akPub := openSim(t)
	logPath := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(logPath, bytes.Repeat([]byte{1}, 8000), 0o600); err != nil {
		t.Fatal(err)
	}
	r, box, _ := newResponder(t, dev, func(c *Config) { c.EventLogPath = logPath })
	box.maxBytes, box.tooLarge = 4000, fmt.Errorf("outbox: enqueue: %w", outbox.ErrTooLarge)
	stop := run(t, r)

	c1 := newChallenge("too-large", 0)
	send(t, r, c1)
	ev := box.waitEvidence(t, 1)[0]
	verifyQuote(t, ev, c1, akPub)
	if ev.EventLog != nil {
		t.Fatalf("evidence kept its %d-byte event log past the outbox limit", len(ev.EventLog))
	}

	box.failNext(fmt.Errorf("outbox: enqueue: %w", outbox.ErrOutboxFull))
	c2 := newChallenge("full", 0)
	send(t, r, c2)
	waitUntil(t, "the full outbox to refuse", func() bool {
		box.mu.Lock()
		defer box.mu.Unlock()
		return len(box.fail) == 0
	})
	send(t, r, c2) // the redelivery is not a duplicate: nothing was sent
	verifyQuote(t, box.waitEvidence(t, 2)[1], c2, akPub)

	storage := errors.New("disk on fire")
	box.failNext(storage)
	send(t, r, newChallenge("storage", 0))
	waitUntil(t, "the storage error", func() bool {
		box.mu.Lock()
		defer box.mu.Unlock()
		return len(box.fail) == 0
	})
	if err := stop(); !errors.Is(err, storage) {
		t.Fatalf("Run after a storage error: %v", err)
	}
}

// TestRateLimit: at most one answer per MinInterval. Challenges arriving
// meanwhile wait in the queue; beyond QueueSize the oldest are dropped.
func TestRateLimit(t *testing.T) {
	dev, akPub := openSim(t)
	tpm := &countingTPM{TPM: dev}
	clk := &fakeClock{now: time.Now()}
	r, box, logs := newResponder(t, tpm, func(c *Config) {
		c.Clock, c.MinInterval, c.QueueSize = clk, time.Second, 4
	})
	run(t, r)

	first := newChallenge("c-0", 0)
	send(t, r, first)
	verifyQuote(t, box.waitEvidence(t, 1)[0], first, akPub)

	// A flood of ten while the clock stands still: none is answered, and
	// only the newest four are kept.
	var flood []wire.AttestChallenge
	for i := 1; i <= 10; i++ {
		c := newChallenge(fmt.Sprintf("c-%d", i), 0)
		flood = append(flood, c)
		send(t, r, c)
	}
	waitUntil(t, "Run to wait for the rate limit", func() bool { return clk.waiting() == 1 })
	if n := len(box.sent()); n != 1 {
		t.Fatalf("%d answers before the interval passed, want 1", n)
	}
	for i, c := range flood[6:] {
		clk.Advance(time.Second)
		evs := box.waitEvidence(t, i+2)
		verifyQuote(t, evs[i+1], c, akPub)
		if i < 3 {
			waitUntil(t, "Run to wait for the rate limit", func() bool { return clk.waiting() == 1 })
			if n := len(box.sent()); n != i+2 {
				t.Fatalf("%d answers after %d intervals, want %d", n, i+1, i+2)
			}
		}
	}
	if got := ids(box.evidence(t)); strings.Join(got, " ") != "c-0 c-7 c-8 c-9 c-10" {
		t.Fatalf("answered %v, want c-0 and the newest four", got)
	}
	if _, quotes := tpm.counts(); quotes != 5 {
		t.Fatalf("%d quotes, want 5", quotes)
	}
	if logs.count("dropped=6") != 1 {
		t.Fatal("the six dropped challenges were not logged")
	}
}

func TestEventLogPathFor(t *testing.T) {
	t.Parallel()
	for dev, want := range map[string]string{
		"/dev/tpmrm0": DefaultEventLogPath,
		"/dev/tpm0":   DefaultEventLogPath,
		"/dev/tpmrm1": "/sys/kernel/security/tpm1/binary_bios_measurements",
		"/dev/tpm12":  "/sys/kernel/security/tpm12/binary_bios_measurements",
		"/dev/tpmrm":  DefaultEventLogPath,
		"/dev/tpmx":   DefaultEventLogPath,
		"/dev/vtpm0":  DefaultEventLogPath,
		"":            DefaultEventLogPath,
	} {
		if got := EventLogPathFor(dev); got != want {
			t.Errorf("EventLogPathFor(%q) = %q, want %q", dev, got, want)
		}
	}
}

// TestWithMsgID: splicing the msg_id gives the same bytes as marshalling
// the evidence with it, including ids that need escaping.
func TestWithMsgID(t *testing.T) {
	t.Parallel()
	for _, ev := range []wire.AttestEvidence{
		{Schema: wire.AttestEvidenceSchema, Device: "d", ChallengeID: "c", Error: ErrorNoTPM},
		{Schema: wire.AttestEvidenceSchema, Device: "d", ChallengeID: "c", Nonce: []byte{1}, Quote: []byte{2},
			Signature: []byte{3}, PCRValues: map[int][]byte{0: {4}, 7: {5}}, EventLog: []byte{6}},
	} {
		for _, id := range []string{"0123abcd-1", `odd"id\`} {
			payload, err := json.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			got, err := withMsgID(payload, id)
			if err != nil {
				t.Fatal(err)
			}
			ev.MsgID = id
			want, _ := json.Marshal(ev)
			ev.MsgID = ""
			if !bytes.Equal(got, want) {
				t.Fatalf("spliced\n%s\nwant\n%s", got, want)
			}
		}
	}
	if _, err := withMsgID([]byte(`{"msg_id":""}`), "x"); err == nil {
		t.Fatal("spliced into a payload of another shape")
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{
		{Topic: testTopic, Outbox: &fakeOutbox{}},
		{Device: "d", Outbox: &fakeOutbox{}},
		{Device: "d", Topic: testTopic},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted an incomplete config", cfg)
		}
	}
}
