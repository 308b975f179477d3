package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// TestRolloutRefusals drives one real agent (on swtpm, its fleet attested
// every 30 s and on demand) through the refusals of issue 5, each
// reported with its reason while the device keeps serving 1.0.0:
//
//   - a package signed by a publisher nobody pinned: the control plane
//     refuses the push (UNKNOWN_PUBLISHER);
//   - an older version: the device refuses it (OLDER_VERSION);
//   - a package that expired after it was pushed and rolled out (EXPIRED);
//   - a package whose publisher was unpinned after its rollout was
//     created: the device gets the job with the publishers pinned now and
//     refuses it (UNKNOWN_PUBLISHER);
//   - a device whose attestation turns untrusted (its PCR 7 is not the
//     fleet's golden value) while its job waits before the key grant: the
//     control plane refuses the key (KEY_GRANT_REFUSED), no key.grant is
//     audited, and the operator sees it in `tgctl rollout status`;
//   - the fleet's policy (examples/policy, with max_epsilon lowered to 2)
//     and a package trained to ε = 3 (tgsp pack --dp-cert): POLICY_DENY
//     with the policy's reason.
func TestRolloutRefusals(t *testing.T) {
	ca := newSWTPMCA(t)
	tpms := swtpms(t, ca, 1) // the agent restarts: its TPM must outlive it
	e := newRolloutEnv(t, 2*time.Second, cpOptions{ekRoots: []string{ca.rootFile}, ekIntermediates: []string{ca.intermediateFile}})
	cp := e.cp
	cp.tgctl("fleet", "create", "edge", "--allow-simulated-tpm")
	faults := t.TempDir()
	hold := holdFile(faults, "persisted:"+wire.JobKeyGrant)
	a := e.startAgents("edge", 1, agentSpec{tpms: tpms, bin: bins.faultAgent,
		env: func(int) []string { return []string{"TG_FAULT_DIR=" + faults} }})[0]
	// Trusted within the control plane's 2 s; from now on challenged every
	// 30 s (and on demand), so the agent can be stopped for a few seconds
	// without its verdict going stale.
	cp.tgctl("fleet", "update", "edge", "--attest-interval", "30s")
	op := cp.operatorMQTT("refusals-watcher")
	if q := op.subscribe(t, mqttacl.TelemetryTopic(cp.tenant, a.id)); q > 1 {
		t.Fatalf("operator subscription to telemetry refused: %#x", q)
	}

	run := func(pkg string) (client.Rollout, client.RolloutJob) {
		t.Helper()
		r := cp.createRollout(pkg, "edge", "--device-timeout", "2m")
		return rolloutJob(t, cp, r.ID)
	}
	refused := func(what string, j client.RolloutJob, reason, detail string) {
		t.Helper()
		if j.State != "refused" || j.Reason != reason || !strings.Contains(j.Detail, detail) ||
			j.InstalledName != "mnist" || j.InstalledVersion != "1.0.0" {
			t.Errorf("%s: job %s %s %q (installed %s %s), want refused %s %q with 1.0.0 installed",
				what, j.State, j.Reason, j.Detail, j.InstalledName, j.InstalledVersion, reason, detail)
		}
		waitServing(t, []*fleetAgent{a}, "mnist", "1.0.0")
		t.Logf("%s: %s %s: %s", what, j.State, j.Reason, j.Detail)
	}

	// 1.0.0 installs: the device has something to protect.
	e.push(e.pack(pkgSpec{version: "1.0.0", epsilon: 1}))
	if _, j := run("mnist@1.0.0"); j.State != "succeeded" {
		t.Fatalf("install of 1.0.0: %+v", j)
	}
	waitServing(t, []*fleetAgent{a}, "mnist", "1.0.0")

	// Unknown publisher: the push is refused, nothing is stored.
	stranger := e.newSigner("stranger")
	out, errOut, code := cp.tgctlAs(cp.adminKey, "package", "push", e.pack(pkgSpec{version: "1.5.0", signer: stranger, epsilon: 1}))
	if code == 0 || !strings.Contains(errOut, "UNKNOWN_PUBLISHER") {
		t.Errorf("push of a stranger's package: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("push of a stranger's package: exit %d: %s", code, strings.TrimSpace(errOut))
	if _, _, code := cp.tgctlAs(cp.adminKey, "package", "get", "mnist@1.5.0"); code == 0 {
		t.Error("the refused package was stored")
	}

	// Older version.
	e.push(e.pack(pkgSpec{version: "0.9.0", epsilon: 1}))
	_, j := run("mnist@0.9.0")
	refused("older version", j, wire.JobReasonOlderVersion, "0.9.0")

	// Expired after the push: the device verifies the expiry itself. The
	// agent is down while the package expires (its fleet's verdicts last
	// 60 s, so it stays eligible).
	p := e.push(e.pack(pkgSpec{version: "1.1.0", epsilon: 1, expires: "5s"}))
	a.proc.stop(t, 15*time.Second)
	r := cp.createRollout("mnist@1.1.0", "edge", "--device-timeout", "2m")
	time.Sleep(time.Until(p.ExpiresAt.Add(500 * time.Millisecond)))
	a.start()
	_, j = rolloutJob(t, cp, r.ID)
	refused("expired", j, wire.JobReasonExpired, "expired")

	// A publisher unpinned after the rollout was created.
	ml2 := e.newSigner("ml2")
	cp.tgctl("publisher", "add", "ml2", "--key", ml2+".pub")
	e.push(e.pack(pkgSpec{version: "1.2.0", signer: ml2, epsilon: 1}))
	a.proc.stop(t, 15*time.Second)
	r = cp.createRollout("mnist@1.2.0", "edge", "--device-timeout", "2m")
	cp.tgctl("publisher", "remove", "ml2")
	a.start()
	_, j = rolloutJob(t, cp, r.ID)
	refused("unpinned publisher", j, wire.JobReasonPublisher, "")

	// Untrusted device: the job waits before its key grant (fault hook)
	// while PCR 7 stops matching the fleet's golden value.
	writeFile(t, hold, "")
	e.push(e.pack(pkgSpec{version: "1.3.0", epsilon: 1}))
	r = cp.createRollout("mnist@1.3.0", "edge", "--device-timeout", "2m")
	cp.waitRollout(r.ID, 60*time.Second, "job waiting before its key grant", func(r client.Rollout) error {
		if j, ok := findJob(r, a.id); !ok || j.ReportState != wire.JobPolicy {
			return fmt.Errorf("job %s, report %s", j.State, j.ReportState)
		}
		return nil
	})
	cp.tgctl("fleet", "update", "edge", "--attest-golden", "7="+strings.Repeat("ab", 32))
	cp.tgctl("attest", a.id)
	cp.waitVerdict("edge", a.id, 30*time.Second, "verdict untrusted (PCR 7)", func(v wire.Verdict) bool {
		return v.State == wire.VerdictUntrusted && hasReason(v, "PCR_POLICY", 7)
	})
	if d := deviceByID(t, cp, a.id); !d.Quarantined {
		t.Fatalf("untrusted device not quarantined: %+v", d)
	}
	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	r, j = rolloutJob(t, cp, r.ID)
	refused("untrusted device", j, wire.JobReasonKeyGrant, "")
	if !strings.Contains(j.Detail, "quarantined") && !strings.Contains(j.Detail, "untrusted") {
		t.Errorf("key grant refusal does not say why: %q", j.Detail)
	}
	status := cp.tgctl("rollout", "status", r.ID)
	if !hasRow(status, a.id, "refused", wire.JobReasonKeyGrant) {
		t.Errorf("tgctl rollout status does not show the refused key grant:\n%s", status)
	}
	for _, g := range cp.audit("key.grant") {
		var d struct {
			JobID string `json:"job_id"`
		}
		if err := json.Unmarshal(g.Details, &d); err != nil || d.JobID == j.JobID {
			t.Errorf("key.grant audited for the untrusted device's job: %s (%v)", g.Details, err)
		}
	}
	cp.tgctl("fleet", "update", "edge", "--attest-golden", "none")
	cp.tgctl("attest", a.id)
	e.waitTrusted("edge", a.id)

	// The fleet's policy: examples/policy with max_epsilon 2.
	policy := t.TempDir()
	rego, err := os.ReadFile(filepath.Join("..", "examples", "policy", "install.rego"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(policy, "install.rego"), string(rego))
	writeFile(t, filepath.Join(policy, "data.json"), `{"max_epsilon": 2, "max_delta": 1e-5, "publishers": []}`)
	cp.tgctl("policy", "push", "--fleet", "edge", policy)
	eventually(t, 30*time.Second, "the device installs policy revision 1", func() error {
		for _, m := range op.messages() {
			var ev wire.PolicyEvent
			if json.Unmarshal(m.Payload(), &ev) == nil && ev.Kind == "policy" && ev.Event == wire.PolicyEventInstalled && ev.Revision == 1 {
				return nil
			}
		}
		return fmt.Errorf("%d telemetry messages, no policy installed", len(op.messages()))
	})
	e.push(e.pack(pkgSpec{version: "1.4.0", epsilon: 3}))
	_, j = run("mnist@1.4.0")
	refused("policy", j, wire.JobReasonPolicyDeny, "dp_cert epsilon 3 exceeds the fleet limit max_epsilon 2")
	if strings.Contains(j.Detail, "is not pinned") {
		t.Errorf("the policy did not see the job's pinned publishers: %q", j.Detail)
	}
	if strings.Contains(j.Detail, "device attestation is") {
		t.Errorf("the policy did not see the device's own trusted verdict: %q", j.Detail)
	}

	a.proc.stop(t, 15*time.Second)
	cp.shutdown()
}

// hasRow reports whether a line of a tgctl table holds every field.
func hasRow(table string, fields ...string) bool {
	for line := range strings.Lines(table) {
		cols := strings.Fields(line)
		all := true
		for _, f := range fields {
			found := false
			for _, c := range cols {
				found = found || c == f
			}
			all = all && found
		}
		if all {
			return true
		}
	}
	return false
}
