package attest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"
)

// FuzzHandleChallenge: no input panics; an input is either refused with
// ErrMalformed and leaves nothing to answer, or is a well-formed challenge
// that survives a JSON round trip and is answered exactly once with its id
// and nonce. The responder has no TPM here (fuzzing a simulator would
// measure the simulator), so the answer is ErrorNoTPM or ErrorExpired.
func FuzzHandleChallenge(f *testing.F) {
	real := newChallenge("01JABCDEF-challenge", 0, 1, 2, 3, 4, 5, 6, 7)
	b, err := json.Marshal(real)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	for _, p := range malformedChallenges(f) {
		f.Add(p)
	}
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		box := &fakeOutbox{}
		r, err := New(Config{Device: "dev-1", Topic: testTopic, Outbox: box, Logger: discard})
		if err != nil {
			t.Fatal(err)
		}
		herr := r.HandleChallenge(data)
		answered, err := r.answerNext()
		if err != nil {
			t.Fatalf("answer: %v", err)
		}
		if herr != nil {
			if !errors.Is(herr, ErrMalformed) {
				t.Fatalf("refused with %v, want ErrMalformed", herr)
			}
			if answered || len(box.sent()) != 0 {
				t.Fatal("a refused challenge was answered")
			}
			return
		}
		c, err := ParseChallenge(data)
		if err != nil {
			t.Fatalf("accepted, but ParseChallenge refuses it: %v", err)
		}
		again, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := ParseChallenge(again)
		if err != nil {
			t.Fatalf("re-encoded challenge refused: %v\n%s", err, again)
		}
		if c2.Schema != c.Schema || c2.ID != c.ID || !bytes.Equal(c2.Nonce, c.Nonce) || !slices.Equal(c2.PCRs, c.PCRs) ||
			!c2.IssuedAt.Equal(c.IssuedAt) || !c2.ExpiresAt.Equal(c.ExpiresAt) {
			t.Fatalf("round trip changed the challenge: %+v → %+v", c, c2)
		}
		evs := box.evidence(t)
		if !answered || len(evs) != 1 {
			t.Fatalf("answered %v with %d messages, want one", answered, len(evs))
		}
		ev := evs[0]
		if ev.ChallengeID != c.ID || !bytes.Equal(ev.Nonce, c.Nonce) || (ev.Error != ErrorNoTPM && ev.Error != ErrorExpired) {
			t.Fatalf("answer %+v to %+v", ev, c)
		}
		if err := r.HandleChallenge(data); !errors.Is(err, ErrDuplicate) {
			t.Fatalf("second delivery: %v, want ErrDuplicate", err)
		}
	})
}
