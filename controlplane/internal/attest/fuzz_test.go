package attest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/attest"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// acceptAnyNonce lets fuzzed evidence past the nonce check, so the fuzzer
// reaches the quote, signature, PCR and event-log code.
type acceptAnyNonce struct{}

func (acceptAnyNonce) Issue(context.Context, string, string, time.Duration) (attest.Nonce, error) {
	return attest.Nonce{}, nil
}

func (acceptAnyNonce) Consume(context.Context, string, string, string, []byte) (time.Time, error) {
	return time.Unix(1_800_000_000, 0), nil
}

// FuzzVerify feeds Verify real simulator evidence with fuzzed JSON, quote,
// signature and event log. It must never panic, and only the real quote
// with its real signature may ever be trusted.
func FuzzVerify(f *testing.F) {
	fx := openSim(f, "dev-a")
	e := &env{f: fx, clock: &fakeClock{now: time.Unix(1_800_000_000, 0)}, nonces: attest.NewMemoryNonces()}
	e.policy = attest.Policy{AllowedKinds: []string{fx.kind}}
	e.baseline = fx.pcrs(e.policy.Selection())
	_, honest := e.answer(f)
	log := buildLog([]testEvent{{pcr: 16, typ: evPostCode, data: []byte("seed")}, secureBootEvent(true)})
	in := e.input(f, honest)
	v := attest.NewVerifier(acceptAnyNonce{})

	realJSON := mustJSON(f, honest)
	f.Add(realJSON, []byte(nil), []byte(nil), []byte(nil))
	f.Add([]byte(nil), honest.Quote, honest.Signature, log)
	f.Add(realJSON[:len(realJSON)/2], honest.Quote[:40], honest.Signature[:10], log[:50])
	f.Add([]byte(`{"schema":"tg.attest.evidence.v1","device":"dev-a","pcr_values":{"-1":"AA=="}}`), []byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18}, []byte{0, 0x18, 0, 0x0b}, []byte{})
	f.Fuzz(func(t *testing.T, raw, quote, sig, eventLog []byte) {
		check := func(evJSON []byte) {
			in := in
			in.Evidence = evJSON
			res, err := v.Verify(context.Background(), in)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			st := res.Verdict.State
			if st != wire.VerdictTrusted && st != wire.VerdictUntrusted || (st == wire.VerdictTrusted) != (len(res.Verdict.Reasons) == 0) {
				t.Fatalf("verdict %+v", res.Verdict)
			}
			if st == wire.VerdictTrusted {
				var got wire.AttestEvidence
				if err := json.Unmarshal(evJSON, &got); err != nil || !bytes.Equal(got.Quote, honest.Quote) || !bytes.Equal(got.Nonce, honest.Nonce) {
					t.Fatalf("trusted evidence that is not the real quote: %s", evJSON)
				}
			}
		}
		if len(raw) > 0 {
			check(raw)
		}
		ev := honest
		ev.Quote, ev.Signature, ev.EventLog = quote, sig, eventLog
		if len(quote) == 0 {
			ev.Quote = honest.Quote
		}
		if len(sig) == 0 {
			ev.Signature = honest.Signature
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		check(b)
	})
}
