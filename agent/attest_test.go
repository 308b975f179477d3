package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/tensorguard/tensorguardflow/agent"
	"github.com/tensorguard/tensorguardflow/agent/internal/enroll/enrolltest"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence/presencetest"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

func attestChallenge(t *testing.T, id string, pcrs ...int) (wire.AttestChallenge, string) {
	t.Helper()
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	c := wire.AttestChallenge{Schema: wire.AttestChallengeSchema, ID: id, Nonce: nonce, PCRs: pcrs,
		IssuedAt: now, ExpiresAt: now.Add(time.Minute)}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return c, string(b)
}

func evidence(msgs []presencetest.Received, topic string) []wire.AttestEvidence {
	var out []wire.AttestEvidence
	for _, m := range msgs {
		if m.Topic == topic {
			var ev wire.AttestEvidence
			if json.Unmarshal([]byte(m.Payload), &ev) == nil {
				out = append(out, ev)
			}
		}
	}
	return out
}

// onlineDevice waits for the agent's online status and then for its
// subscription to cmd/attest (the session announces itself online before
// it subscribes, and a challenge published in between reaches nobody — the
// control plane's next interval covers that; a test must wait).
func onlineDevice(t *testing.T, obs *presencetest.Observer, b *tlsBroker, tenant string) string {
	t.Helper()
	msgs := obs.WaitFor(t, 20*time.Second, "online status", func(m []presencetest.Received) bool {
		for _, s := range statuses(m) {
			if s.State == presence.StateOnline {
				return true
			}
		}
		return false
	})
	device := statuses(msgs)[0].Device
	waitFor(t, 10*time.Second, "the agent's cmd/attest subscription", func() bool {
		cl, ok := b.srv.Clients.Get(device)
		if !ok {
			return false
		}
		for filter := range cl.State.Subscriptions.GetAll() {
			if mqttacl.Match(filter, mqttacl.CmdTopic(tenant, device, "attest")) {
				return true
			}
		}
		return false
	})
	return device
}

// TestAttestOverMQTT: a challenge published on the device's cmd/attest
// topic (by the test, as the control plane would) is answered on its
// attestation topic with a quote over the requested PCRs bound to the
// nonce; a redelivered challenge id is not answered twice; a malformed
// challenge is ignored without disturbing the agent. (The quote's
// signature against the AK is verified in package attest's tests, which
// hold the AK's public key.)
func TestAttestOverMQTT(t *testing.T) {
	cp := enrolltest.Start(t, enrolltest.Options{})
	cp.AddToken("tok-1", time.Now().Add(time.Hour))
	broker := startTLSBroker(t, cp)
	obs := presencetest.Observe(t, broker.plainURL, "tg/v1/"+cp.Tenant()+"/#")
	start(t, testConfig(t, cp, broker.tlsURL), &notifier{})
	device := onlineDevice(t, obs, broker, cp.Tenant())
	cmd := mqttacl.CmdTopic(cp.Tenant(), device, "attest")
	topic := mqttacl.AttestationTopic(cp.Tenant(), device)

	obs.Publish(t, cmd, false, `{"schema":"tg.attest.challenge.v1","nonce":"not base64"}`)
	c, payload := attestChallenge(t, "ch-1", 0, 7, 16)
	obs.Publish(t, cmd, false, payload)
	obs.Publish(t, cmd, false, payload) // a redelivery
	c2, payload2 := attestChallenge(t, "ch-2", 7)
	obs.Publish(t, cmd, false, payload2)

	msgs := obs.WaitFor(t, 20*time.Second, "evidence for ch-2", func(m []presencetest.Received) bool {
		evs := evidence(m, topic)
		return len(evs) > 0 && evs[len(evs)-1].ChallengeID == "ch-2"
	})
	evs := evidence(msgs, topic)
	if len(evs) != 2 || evs[0].ChallengeID != "ch-1" {
		t.Fatalf("answers %+v, want one for ch-1 and one for ch-2", evs)
	}
	for i, want := range []wire.AttestChallenge{c, c2} {
		ev := evs[i]
		if ev.Schema != wire.AttestEvidenceSchema || ev.Device != device || ev.MsgID == "" || ev.Error != "" ||
			!bytes.Equal(ev.Nonce, want.Nonce) || ev.EventLog != nil {
			t.Fatalf("evidence %d: %+v", i, ev)
		}
		ad, err := tpm2.DecodeAttestationData(ev.Quote)
		if err != nil {
			t.Fatalf("evidence %d quote: %v", i, err)
		}
		if ad.Type != tpm2.TagAttestQuote || !bytes.Equal(ad.ExtraData, want.Nonce) ||
			!slices.Equal(ad.AttestedQuoteInfo.PCRSelection.PCRs, want.PCRs) || len(ev.PCRValues) != len(want.PCRs) {
			t.Fatalf("evidence %d quotes %+v over %v with %d values", i, ad, ad.AttestedQuoteInfo.PCRSelection, len(ev.PCRValues))
		}
		h := sha256.New()
		for _, p := range want.PCRs {
			h.Write(ev.PCRValues[p])
		}
		if !bytes.Equal(h.Sum(nil), ad.AttestedQuoteInfo.PCRDigest) {
			t.Fatalf("evidence %d: PCR values do not match the quoted digest", i)
		}
	}
	if evs[0].MsgID == evs[1].MsgID {
		t.Fatalf("both answers have msg_id %s", evs[0].MsgID)
	}
	// Still online: the malformed challenge did not end the session.
	if s := statuses(obs.Messages()); s[len(s)-1].State != presence.StateOnline {
		t.Fatalf("status after the challenges: %+v", s[len(s)-1])
	}
}

// TestAttestWithoutTPM: a device enrolled with tpm: {none: true} answers a
// challenge with the error "no TPM", which the verifier records as not
// attestable.
func TestAttestWithoutTPM(t *testing.T) {
	cp := enrolltest.Start(t, enrolltest.Options{AllowNoTPM: true})
	cp.AddToken("tok-1", time.Now().Add(time.Hour))
	broker := startTLSBroker(t, cp)
	obs := presencetest.Observe(t, broker.plainURL, "tg/v1/"+cp.Tenant()+"/#")
	cfg := noTPMConfig(t, cp, broker.tlsURL)
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := agent.New(cfg, logger, agent.WithNotifier(&notifier{}), agent.WithRetry(100*time.Millisecond, time.Second),
		agent.WithTPMOpener(func(*agent.Config) (*tpmdev.Device, error) {
			return nil, errors.New("the TPM must not be opened with tpm.none")
		}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	device := onlineDevice(t, obs, broker, cp.Tenant())

	c, payload := attestChallenge(t, "ch-1", 0)
	obs.Publish(t, mqttacl.CmdTopic(cp.Tenant(), device, "attest"), false, payload)
	topic := mqttacl.AttestationTopic(cp.Tenant(), device)
	msgs := obs.WaitFor(t, 20*time.Second, "evidence", func(m []presencetest.Received) bool { return len(evidence(m, topic)) > 0 })
	ev := evidence(msgs, topic)[0]
	if ev.Error != "no TPM" || ev.ChallengeID != c.ID || !bytes.Equal(ev.Nonce, c.Nonce) || ev.Quote != nil || ev.Device != device {
		t.Fatalf("evidence without a TPM: %+v", ev)
	}
}
