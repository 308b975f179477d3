package controlplane_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/tensorguard/tensorguardflow/controlplane/controlplanetest"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/attest"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/ca"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/tgctl"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmsim"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// TestFleetAttestation runs the attestation service against a device that
// answers challenges with real quotes from the in-process TPM simulator
// (the agent's responder, reduced to its TPM calls, over mTLS MQTT as the
// device): its verdict, retained on the fleet's attestation topic, turns
// trusted; extending a quoted PCR turns it untrusted with PCR_POLICY within
// an interval; `tgctl fleet watch --once -o json` shows it; a device that
// stops answering goes stale (NO_ANSWER) within two intervals.
func TestFleetAttestation(t *testing.T) {
	// The fleet's own policy: a 1 s interval (the control plane's default
	// stays 60 s), PCRs 0, 7 and 16, PCR 0 against a golden value (the
	// simulator's is all zeros), the others against the baseline.
	const interval = time.Second
	h := controlplanetest.Start(t)
	ctx := context.Background()
	fleet := h.CreateFleet(t, "sims", store.FleetPolicy{AllowSimulatedTPM: true, Attestation: store.FleetAttestation{
		Interval: store.Duration(interval),
		Policy: attest.Policy{PCRs: []int{16, 0, 7}, Rules: map[int]attest.PCRRule{
			0: {Mode: attest.ModeGolden, Allow: []string{strings.Repeat("00", 32)}},
		}},
	}})

	tpm, err := tpmsim.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tpm.Close() })
	ak, err := tpm.AK()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ak.Close)
	fp := make([]byte, 32)
	_, _ = rand.Read(fp)
	dev, err := h.Store().CreateDevice(ctx, h.Tenant, store.Device{FleetID: fleet.ID, Name: "sim-1",
		TPMKind: store.TPMSimulator, EKFingerprint: hex.EncodeToString(fp), AKPublic: ak.PublicArea()})
	if err != nil {
		t.Fatal(err)
	}

	// Quarantined by hand before its first quote: a trusted verdict lifts it.
	if err := h.Store().SetQuarantined(ctx, h.Tenant, dev.ID, true); err != nil {
		t.Fatal(err)
	}
	quarantined := func(when string, want bool) {
		t.Helper()
		if q, err := h.Store().Quarantined(ctx, h.Tenant, dev.ID); err != nil || q != want {
			t.Errorf("%s: store says quarantined %v, %v; want %v", when, q, err, want)
		}
		var got struct {
			Quarantined *bool `json:"quarantined"`
		}
		api(t, h, http.MethodGet, "/api/v1/devices/"+dev.ID, h.AdminKey, nil, &got)
		if got.Quarantined == nil || *got.Quarantined != want {
			t.Errorf("%s: API device quarantined %v; want %v", when, got.Quarantined, want)
		}
	}

	// The operator's watcher: every verdict of the fleet.
	opKey, opCSR := newKeyAndCSR(t)
	var creds struct {
		CertificatePEM string `json:"certificate_pem"`
	}
	api(t, h, http.MethodPost, "/api/v1/mqtt/credentials", h.AdminKey,
		map[string]string{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: opCSR}))}, &creds)
	watcher := mqttConnect(t, h, tlsCert(t, creds.CertificatePEM, opKey), "watcher", nil)
	verdicts := make(chan wire.Verdict, 256)
	filter := mqttacl.FleetAttestationFilter(h.Tenant, fleet.ID)
	if tok := watcher.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		var v wire.Verdict
		if err := json.Unmarshal(m.Payload(), &v); err != nil {
			t.Errorf("verdict on %s: %v: %s", m.Topic(), err, m.Payload())
			return
		}
		if m.Topic() != mqttacl.FleetAttestationTopic(h.Tenant, fleet.ID, v.Device) {
			t.Errorf("verdict of %s on %s", v.Device, m.Topic())
		}
		verdicts <- v
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	wait := func(what string, within time.Duration, ok func(wire.Verdict) bool) wire.Verdict {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case v := <-verdicts:
				if v.Device == dev.ID && ok(v) {
					return v
				}
			case <-deadline:
				t.Fatalf("no %s verdict within %s", what, within)
			}
		}
	}
	// Never attested: unknown, which leaves the quarantine as it is.
	wait("unknown", 5*time.Second, func(v wire.Verdict) bool { return v.State == wire.VerdictUnknown })
	quarantined("unknown", true)

	// The device: a certificate from its tenant CA, connected over mTLS,
	// answering every challenge with a quote.
	devKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := h.CP.CA().IssueDeviceCert(ctx, ca.DeviceCertRequest{Tenant: h.Tenant, Fleet: fleet.ID, Device: dev.ID, PublicKey: devKey.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Store().RecordCertificate(ctx, h.Tenant, issued.Record(h.Tenant, dev.ID)); err != nil {
		t.Fatal(err)
	}
	var answering atomic.Bool
	answering.Store(true)
	challenges := make(chan wire.AttestChallenge, 16)
	device := mqttConnect(t, h, tlsCert(t, string(issued.PEM), devKey), dev.ID, nil)
	if tok := device.Subscribe(mqttacl.CmdTopic(h.Tenant, dev.ID, "attest"), 1, func(_ paho.Client, m paho.Message) {
		var c wire.AttestChallenge
		if err := json.Unmarshal(m.Payload(), &c); err != nil || c.Schema != wire.AttestChallengeSchema {
			t.Errorf("challenge: %v: %s", err, m.Payload())
			return
		}
		if !slices.Equal(c.PCRs, []int{0, 7, 16}) {
			t.Errorf("challenge for PCRs %v, want the fleet's 0, 7, 16", c.PCRs)
		}
		select {
		case challenges <- c:
		default:
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device subscribe: %v", tok.Error())
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	var lastEvidence atomic.Value // []byte: the last evidence published
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case c := <-challenges:
				if !answering.Load() {
					continue
				}
				q, err := tpm.Quote(ak, tpm2.AlgSHA256, c.PCRs, c.Nonce)
				ev := wire.AttestEvidence{Schema: wire.AttestEvidenceSchema, MsgID: c.ID, Device: dev.ID, ChallengeID: c.ID, Nonce: c.Nonce}
				if err != nil {
					ev.Error = err.Error()
				} else {
					ev.Quote, ev.Signature, ev.PCRValues = q.Attest, q.Signature, map[int][]byte{}
					for i, v := range q.PCRs {
						ev.PCRValues[int(i)] = v
					}
				}
				payload, _ := json.Marshal(ev)
				lastEvidence.Store(payload)
				if tok := device.Publish(mqttacl.AttestationTopic(h.Tenant, dev.ID), 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					t.Errorf("publish evidence: %v", tok.Error())
				}
			}
		}
	}()
	t.Cleanup(func() { close(done); <-stopped })

	start := time.Now()
	v := wait("trusted", 5*time.Second, func(v wire.Verdict) bool { return v.State == wire.VerdictTrusted })
	if v.TPMKind != string(store.TPMSimulator) || v.Fleet != fleet.ID || v.Tenant != h.Tenant || v.PCRDigest == "" || v.EvidenceAt.IsZero() {
		t.Errorf("trusted verdict %+v", v)
	}
	t.Logf("trusted after %s", time.Since(start))
	// The verdict is stored (with the quarantine) before it is published.
	quarantined("trusted", false)

	// On demand: the API challenges at once.
	var sent struct {
		ChallengeID string `json:"challenge_id"`
	}
	api(t, h, http.MethodPost, "/api/v1/devices/"+dev.ID+"/attest", h.AdminKey, nil, &sent)
	if sent.ChallengeID == "" {
		t.Error("attest: no challenge id")
	}

	// A changed PCR: untrusted within an interval (plus the scheduler's
	// jitter and the verification).
	evil := sha256.Sum256([]byte("an unexpected boot loader"))
	if err := tpm.ExtendPCR(7, tpm2.AlgSHA256, evil[:]); err != nil {
		t.Fatal(err)
	}
	v = wait("untrusted", 3*interval, func(v wire.Verdict) bool { return v.State == wire.VerdictUntrusted })
	found := false
	for _, r := range v.Reasons {
		if r.Code == wire.ReasonPCRPolicy && r.PCR != nil && *r.PCR == 7 {
			found = true
		}
	}
	if !found {
		t.Errorf("untrusted verdict without PCR_POLICY on PCR 7: %+v", v.Reasons)
	}
	quarantined("untrusted", true)

	// tgctl fleet watch --once -o json: the retained verdicts, one a line.
	var out, errb bytes.Buffer
	app := &tgctl.App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
		return map[string]string{"TG_BASE_URL": h.BaseURL, "TG_API_KEY": h.AdminKey, "TG_CA_HASH": h.CAHash,
			"XDG_CONFIG_HOME": t.TempDir(), "HOME": t.TempDir()}[k]
	}}
	if code := app.Main(ctx, []string{"fleet", "watch", "sims", "--once", "-o", "json"}); code != 0 {
		t.Fatalf("tgctl fleet watch: exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("tgctl fleet watch --once -o json printed %d lines:\n%s", len(lines), out.String())
	}
	var got wire.Verdict
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil || got.Device != dev.ID || got.State != wire.VerdictUntrusted {
		t.Fatalf("tgctl fleet watch: %v: %s", err, lines[0])
	}
	out.Reset()
	if code := app.Main(ctx, []string{"fleet", "watch", fleet.ID, "--once"}); code != 0 ||
		!strings.Contains(out.String(), dev.ID) || !strings.Contains(out.String(), "PCR_POLICY(pcr7)") {
		t.Fatalf("tgctl fleet watch --once: exit %d:\n%s%s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := app.Main(ctx, []string{"attest", dev.ID, "-o", "json"}); code != 0 || !strings.Contains(out.String(), `"challenge_id"`) {
		t.Fatalf("tgctl attest: exit %d: %s%s", code, out.String(), errb.String())
	}

	// A device that stops answering goes stale within two intervals.
	answering.Store(false)
	stop := time.Now()
	v = wait("stale", 2*interval+2*time.Second, func(v wire.Verdict) bool { return v.State == wire.VerdictStale })
	if len(v.Reasons) != 1 || v.Reasons[0].Code != wire.ReasonNoAnswer {
		t.Errorf("stale verdict reasons %+v", v.Reasons)
	}
	t.Logf("stale %s after the device stopped answering", time.Since(stop))
	quarantined("stale", true)
	// A late, duplicated answer — what a device whose network came back
	// delivers from its outbox — leaves a stale device stale (it becomes
	// trusted by answering a fresh challenge), not untrusted.
	if tok := device.Publish(mqttacl.AttestationTopic(h.Tenant, dev.ID), 1, false, lastEvidence.Load().([]byte)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish the old evidence again: %v", tok.Error())
	}
	time.Sleep(time.Second) // verified in milliseconds; the stored state below must still be stale

	// The state is in the database: the verdict, the TPM clock of the
	// last trusted quote and the baseline taken on first trust.
	st, err := h.Store().GetAttestationState(ctx, h.Tenant, dev.ID)
	if err != nil || st.State != store.VerdictStale || st.TPM == nil || len(st.BaselinePCRs) != 2 { // PCRs 7 and 16; PCR 0 is golden
		t.Errorf("stored attestation state %+v, %v", st, err)
	}

	// revoke_on_untrusted: the device answers again, still with PCR 7
	// extended; the untrusted verdict revokes it — its status, an audit
	// entry by "attestation", its MQTT session ended.
	var patched struct{}
	api(t, h, http.MethodPatch, "/api/v1/fleets/"+fleet.ID, h.AdminKey,
		map[string]any{"policy": map[string]any{"attestation": map[string]any{"revoke_on_untrusted": true}}}, &patched)
	answering.Store(true)
	v = wait("untrusted again", 5*time.Second, func(v wire.Verdict) bool { return v.State == wire.VerdictUntrusted })
	if !hasReasonCode(v, wire.ReasonPCRPolicy) {
		t.Errorf("untrusted verdict %+v", v)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		d, err := h.Store().GetDevice(ctx, h.Tenant, dev.ID)
		if err == nil && d.Status == store.DeviceRevoked && !device.IsConnectionOpen() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not revoked after the untrusted verdict: device %+v, %v; MQTT connection open %v", d, err, device.IsConnectionOpen())
		}
	}
	var auditPage struct {
		Entries []struct {
			Actor, Action, Target string
		} `json:"entries"`
	}
	api(t, h, http.MethodGet, "/api/v1/audit?limit=1000", h.AdminKey, nil, &auditPage)
	if !slices.ContainsFunc(auditPage.Entries, func(e struct{ Actor, Action, Target string }) bool {
		return e.Actor == "attestation" && e.Action == "device.revoke" && e.Target == dev.ID
	}) {
		t.Errorf("no device.revoke by attestation in the audit log: %+v", auditPage.Entries)
	}
	if !slices.ContainsFunc(auditPage.Entries, func(e struct{ Actor, Action, Target string }) bool {
		return e.Action == "device.attest" && e.Target == dev.ID
	}) {
		t.Errorf("the on-demand challenge is not in the audit log: %+v", auditPage.Entries)
	}
}

func hasReasonCode(v wire.Verdict, code string) bool {
	return slices.ContainsFunc(v.Reasons, func(r wire.VerdictReason) bool { return r.Code == code })
}
