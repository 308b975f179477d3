package attest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmsim"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

const testTopic = "tg/v1/t1/devices/dev-1/attestation"

// fakeOutbox records what is enqueued, with msg ids "box-<seq>", and can
// fail the next calls with given errors or refuse payloads above MaxBytes
// the way the real outbox does (outbox.ErrTooLarge).
type fakeOutbox struct {
	mu       sync.Mutex
	seq      uint64
	msgs     []enqueued
	fail     []error
	maxBytes int
	tooLarge error
}

type enqueued struct {
	topic    string
	qos      byte
	retained bool
	msgID    string
	payload  []byte
}

func (o *fakeOutbox) EnqueueFunc(topic string, qos byte, retained bool, build func(string) ([]byte, error)) (uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.fail) > 0 {
		err := o.fail[0]
		o.fail = o.fail[1:]
		return 0, err
	}
	id := fmt.Sprintf("box-%d", o.seq+1)
	payload, err := build(id)
	if err != nil {
		return 0, fmt.Errorf("build payload: %w", err)
	}
	if o.maxBytes > 0 && len(topic)+len(payload) > o.maxBytes {
		return 0, o.tooLarge
	}
	o.seq++
	o.msgs = append(o.msgs, enqueued{topic, qos, retained, id, payload})
	return o.seq, nil
}

func (o *fakeOutbox) failNext(errs ...error) {
	o.mu.Lock()
	o.fail = append(o.fail, errs...)
	o.mu.Unlock()
}

func (o *fakeOutbox) sent() []enqueued {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.msgs)
}

// evidence decodes everything enqueued, checking the envelope on the way.
func (o *fakeOutbox) evidence(t testing.TB) []wire.AttestEvidence {
	t.Helper()
	var out []wire.AttestEvidence
	for _, m := range o.sent() {
		if m.topic != testTopic || m.qos != 1 || m.retained {
			t.Fatalf("enqueued on %s qos %d retained %v", m.topic, m.qos, m.retained)
		}
		var ev wire.AttestEvidence
		if err := json.Unmarshal(m.payload, &ev); err != nil {
			t.Fatalf("enqueued evidence does not decode: %v", err)
		}
		if ev.MsgID != m.msgID || ev.Schema != wire.AttestEvidenceSchema || ev.Device != "dev-1" {
			t.Fatalf("evidence msg_id %q (outbox id %q), schema %q, device %q", ev.MsgID, m.msgID, ev.Schema, ev.Device)
		}
		out = append(out, ev)
	}
	return out
}

// waitEvidence waits until n pieces of evidence were enqueued.
func (o *fakeOutbox) waitEvidence(t testing.TB, n int) []wire.AttestEvidence {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d evidence messages", n), func() bool { return len(o.sent()) >= n })
	return o.evidence(t)
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fakeClock moves only when told to.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []clockWaiter
}

type clockWaiter struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, clockWaiter{c.now.Add(d), ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
			continue
		}
		kept = append(kept, w)
	}
	c.waiters = kept
}

func (c *fakeClock) waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// countingTPM counts AK loads and quotes and can fail the next quotes.
type countingTPM struct {
	TPM
	mu         sync.Mutex
	aks        int
	quotes     int
	failQuotes int
}

var errInjected = errors.New("injected TPM failure")

func (c *countingTPM) AK() (*tpmdev.Key, error) {
	c.mu.Lock()
	c.aks++
	c.mu.Unlock()
	return c.TPM.AK()
}

func (c *countingTPM) Quote(ak *tpmdev.Key, hash tpm2.Algorithm, pcrs []int, nonce []byte) (*tpmdev.Quote, error) {
	c.mu.Lock()
	c.quotes++
	fail := c.failQuotes > 0
	if fail {
		c.failQuotes--
	}
	c.mu.Unlock()
	if fail {
		return nil, errInjected
	}
	return c.TPM.Quote(ak, hash, pcrs, nonce)
}

func (c *countingTPM) counts() (aks, quotes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.aks, c.quotes
}

// openSim starts the in-process simulator (one per process at a time: tests
// that use it do not run in parallel) and returns it with its AK's public
// key, which is the key the responder must quote with.
func openSim(t testing.TB) (*tpmdev.Device, crypto.PublicKey) {
	t.Helper()
	d, err := tpmsim.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	ak, err := d.AK()
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()
	return d, ak.Public()
}

// logBuffer collects a responder's log and passes it to t.Log.
type logBuffer struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *logBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.b.Write(p)
	w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (w *logBuffer) count(s string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Count(w.b.String(), s)
}

func testLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{t: t}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// newResponder returns a responder for device dev-1 that writes to a fresh
// fake outbox, after mutate adjusted its config.
func newResponder(t testing.TB, tpm TPM, mutate func(*Config)) (*Responder, *fakeOutbox, *logBuffer) {
	t.Helper()
	box := &fakeOutbox{}
	logger, logs := testLogger(t)
	cfg := Config{Device: "dev-1", Topic: testTopic, Outbox: box, TPM: tpm, MinInterval: time.Millisecond, Logger: logger}
	if mutate != nil {
		mutate(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, box, logs
}

// run runs r until the test ends and fails the test if Run fails; the
// returned function stops it early and returns Run's result.
func run(t testing.TB, r *Responder) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var result error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(20 * time.Second):
				result = errors.New("Run did not return after cancel")
			}
		})
		return result
	}
	var checked bool // the test looks at Run's result itself
	t.Cleanup(func() {
		if err := stop(); err != nil && !checked {
			t.Errorf("Run: %v", err)
		}
	})
	return func() error { checked = true; return stop() }
}

func newChallenge(id string, pcrs ...int) wire.AttestChallenge {
	nonce := make([]byte, NonceSize)
	_, _ = rand.Read(nonce)
	now := time.Now().UTC()
	return wire.AttestChallenge{
		Schema:    wire.AttestChallengeSchema,
		ID:        id,
		Nonce:     nonce,
		PCRs:      pcrs,
		IssuedAt:  now,
		ExpiresAt: now.Add(time.Minute),
	}
}

func encode(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func send(t testing.TB, r *Responder, c wire.AttestChallenge) {
	t.Helper()
	if err := r.HandleChallenge(encode(t, c)); err != nil {
		t.Fatalf("challenge %s refused: %v", c.ID, err)
	}
}

// verifyQuote checks ev the way the control plane must: the TPMS_ATTEST
// is a quote over exactly c's PCRs of the SHA-256 bank with c's nonce as
// extraData, signed (ECDSA P-256, SHA-256) by akPub, and its PCR digest is
// SHA-256 over the reported values in index order.
func verifyQuote(t testing.TB, ev wire.AttestEvidence, c wire.AttestChallenge, akPub crypto.PublicKey) *tpm2.AttestationData {
	t.Helper()
	if ev.Error != "" || ev.ChallengeID != c.ID || !bytes.Equal(ev.Nonce, c.Nonce) {
		t.Fatalf("evidence error %q, challenge %q (want %q), nonce %x (want %x)", ev.Error, ev.ChallengeID, c.ID, ev.Nonce, c.Nonce)
	}
	ad, err := tpm2.DecodeAttestationData(ev.Quote)
	if err != nil {
		t.Fatalf("quote is not a TPMS_ATTEST: %v", err)
	}
	if ad.Type != tpm2.TagAttestQuote || ad.AttestedQuoteInfo == nil {
		t.Fatalf("attestation type %#x, want a quote", ad.Type)
	}
	if !bytes.Equal(ad.ExtraData, c.Nonce) {
		t.Fatalf("quote extraData %x, want the nonce %x", ad.ExtraData, c.Nonce)
	}
	sel := ad.AttestedQuoteInfo.PCRSelection
	if sel.Hash != tpm2.AlgSHA256 || !slices.Equal(sel.PCRs, c.PCRs) {
		t.Fatalf("quoted selection %v %v, want SHA-256 %v", sel.Hash, sel.PCRs, c.PCRs)
	}
	if len(ev.PCRValues) != len(c.PCRs) {
		t.Fatalf("%d PCR values, want %d", len(ev.PCRValues), len(c.PCRs))
	}
	h := sha256.New()
	for _, i := range c.PCRs {
		v, ok := ev.PCRValues[i]
		if !ok || len(v) != sha256.Size {
			t.Fatalf("PCR %d value %x missing or not SHA-256", i, v)
		}
		h.Write(v)
	}
	if !bytes.Equal(h.Sum(nil), ad.AttestedQuoteInfo.PCRDigest) {
		t.Fatalf("quoted PCR digest %x is not SHA-256 of the reported values", ad.AttestedQuoteInfo.PCRDigest)
	}
	sig, err := tpm2.DecodeSignature(bytes.NewBuffer(ev.Signature))
	if err != nil {
		t.Fatalf("signature is not a TPMT_SIGNATURE: %v", err)
	}
	if sig.Alg != tpm2.AlgECDSA || sig.ECC == nil || sig.ECC.HashAlg != tpm2.AlgSHA256 {
		t.Fatalf("signature alg %v, want ECDSA-SHA256", sig.Alg)
	}
	digest := sha256.Sum256(ev.Quote)
	pub, ok := akPub.(*ecdsa.PublicKey)
	if !ok || !ecdsa.Verify(pub, digest[:], sig.ECC.R, sig.ECC.S) {
		t.Fatal("quote signature does not verify with the AK")
	}
	return ad
}
