package install

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tensorguard/tensorguardflow/agent/internal/presence"
	"github.com/tensorguard/tensorguardflow/agent/internal/state"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// states returns the distinct states of reports in order, collapsing
// repeated progress reports.
func states(rs []wire.JobReport) []string {
	var out []string
	for _, r := range rs {
		if len(out) == 0 || out[len(out)-1] != r.State {
			out = append(out, r.State)
		}
	}
	return out
}

func last(rs []wire.JobReport) wire.JobReport {
	if len(rs) == 0 {
		return wire.JobReport{}
	}
	return rs[len(rs)-1]
}

func uniqueMsgIDs(t *testing.T, e *env) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	seen := map[string]bool{}
	for _, r := range e.reports {
		if r.MsgID == "" || seen[r.MsgID] {
			t.Errorf("msg_id %q missing or repeated", r.MsgID)
		}
		seen[r.MsgID] = true
	}
}

var fullPipeline = []string{wire.JobReceived, wire.JobDownloading, wire.JobVerifying, wire.JobPolicy,
	wire.JobKeyGrant, wire.JobInstalling, wire.JobSelfTest}

func TestInstallCommitsServesAndReloads(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pol := &fakePolicy{}
	e.policy = pol
	e.verdict = &wire.Verdict{Schema: wire.VerdictSchema, Device: testDevice, State: "trusted"}
	v1 := e.pkg(pkgOpts{version: "1.0.0", deviceTypes: []string{"x86-64", testDeviceType}})

	rec := e.install("job-1", v1)
	if rec.State != wire.JobCommitted || rec.Slot == nil || rec.Slot.Version != "1.0.0" {
		t.Fatalf("job-1: %+v", rec)
	}
	rs := e.reportsFor("job-1")
	if got, want := states(rs), append(slices.Clone(fullPipeline), wire.JobCommitted); !slices.Equal(got, want) {
		t.Fatalf("reported states %v, want %v", got, want)
	}
	for _, r := range rs[:len(rs)-1] {
		if r.InstalledName != "" {
			t.Errorf("%s report names %s installed before the commit", r.State, r.InstalledVersion)
		}
	}
	if f := last(rs); f.InstalledName != modelName || f.InstalledVersion != "1.0.0" || f.Attempt != 1 ||
		f.RolloutID != "ro-test" || f.Schema != wire.JobReportSchema || f.At.IsZero() {
		t.Errorf("final report %+v", f)
	}
	e.mu.Lock()
	for _, topic := range e.topics {
		if topic != mqttacl.JobTopic(testTenant, testDevice, "job-1") {
			t.Errorf("report on %s", topic)
		}
	}
	e.mu.Unlock()

	// The policy saw the documents, the device and its verdict.
	if len(pol.inputs) != 1 {
		t.Fatalf("policy evaluated %d times", len(pol.inputs))
	}
	in := pol.inputs[0]
	if in.Manifest.Name != modelName || in.Manifest.Version != "1.0.0" || in.DPCert == nil || in.DPCert.Epsilon != 2.5 ||
		in.Evidence == nil || in.Evidence.BaseModel != "lenet" || in.Device.DeviceType != testDeviceType ||
		in.Device.Labels["site"] != "lab" || in.Attestation == nil || in.Attestation.State != "trusted" ||
		in.Job.ID != "job-1" || in.Job.Kind != wire.JobInstall || in.Installed != nil {
		t.Errorf("policy input %+v", in)
	}
	// input.publishers: the key ids of the publishers the job pins.
	if !slices.Equal(in.Publishers, []string{keys.publisher.Public().KeyID()}) {
		t.Errorf("policy input publishers %q, want the job's pinned publisher %q", in.Publishers, keys.publisher.Public().KeyID())
	}
	if b, err := json.Marshal(in); err != nil || !bytes.Contains(b, []byte(`"dp_cert":{"schema":"tgsp.dp_cert.v1","epsilon":2.5`)) {
		t.Errorf("policy input JSON %s (%v)", b, err)
	}

	// A second version: previous kept, old model replaced.
	p := e.start(nil)
	p.waitServes(v1) // reloaded from the encrypted package and the stored grant
	v2 := e.pkg(pkgOpts{version: "1.1.0"})
	e.cp.installJob("job-2", v2)
	p.in.Kick()
	if rec := p.wait("job-2"); rec.State != wire.JobCommitted {
		t.Fatalf("job-2: %+v", rec)
	}
	p.serves(v2)
	s := p.slots()
	if s.Active.PackageID != v2.ref.ID || !s.Active.Committed || s.Previous == nil || s.Previous.PackageID != v1.ref.ID {
		t.Fatalf("slots %+v / %+v", s.Active, s.Previous)
	}
	if h := p.highest(modelName); h != "1.1.0" {
		t.Errorf("highest %q", h)
	}
	if pol.inputs[1].Installed == nil || pol.inputs[1].Installed.Version != "1.0.0" {
		t.Errorf("policy did not see the installed package: %+v", pol.inputs[1].Installed)
	}
	for _, r := range e.reportsFor("job-2") {
		want := "1.0.0"
		if r.State == wire.JobCommitted {
			want = "1.1.0"
		}
		if r.InstalledVersion != want { // the serving model, also during the trial
			t.Errorf("%s report: installed %q, want %q", r.State, r.InstalledVersion, want)
		}
	}
	if got := e.rt.openModels(); got != 1 {
		t.Errorf("%d models open, want 1", got)
	}

	// A third: the oldest package leaves the disk.
	v3 := e.pkg(pkgOpts{version: "2.0.0"})
	e.cp.installJob("job-3", v3)
	p.in.Kick()
	p.wait("job-3")
	p.serves(v3)
	p.stop()
	if got, want := e.packageFiles(), []string{v2.ref.ID + ".tgsp", v3.ref.ID + ".tgsp"}; !sameSet(got, want) {
		t.Errorf("package files %v, want %v", got, want)
	}
	if got := e.rt.openModels(); got != 0 {
		t.Errorf("%d models open after Run ended", got)
	}
	uniqueMsgIDs(t, e)
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func slotsJSON(t *testing.T, s slotPair) string {
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSelfTestFailureRollsBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	v1 := e.pkg(pkgOpts{version: "1.0.0"})
	e.install("job-1", v1)

	p := e.start(nil)
	p.waitServes(v1)
	before := slotsJSON(t, p.slots())
	bad := e.pkg(pkgOpts{version: "2.0.0", badSelfTest: true})
	e.cp.installJob("job-2", bad)
	p.in.Kick()
	rec := p.wait("job-2")
	if rec.State != wire.JobFailed || rec.Reason != wire.JobReasonSelfTest || !strings.Contains(rec.Detail, "element 1") {
		t.Fatalf("job-2: %s %s %s", rec.State, rec.Reason, rec.Detail)
	}
	p.serves(v1)
	if after := slotsJSON(t, p.slots()); after != before {
		t.Errorf("slots changed:\n%s\n%s", before, after)
	}
	if h := p.highest(modelName); h != "1.0.0" {
		t.Errorf("highest %q after a failed install", h)
	}
	if got := e.rt.openModels(); got != 1 {
		t.Errorf("%d models open, want 1 (the failed one closed)", got)
	}
	p.stop()
	rs := e.reportsFor("job-2")
	if got, want := states(rs), append(slices.Clone(fullPipeline), wire.JobFailed); !slices.Equal(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}
	if f := last(rs); f.Reason != wire.JobReasonSelfTest || f.InstalledVersion != "1.0.0" {
		t.Errorf("final report %+v", f)
	}
	if got := e.packageFiles(); !sameSet(got, []string{v1.ref.ID + ".tgsp"}) {
		t.Errorf("package files %v", got)
	}
}

func TestActivationFailureLeavesTheSlots(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	v1 := e.pkg(pkgOpts{version: "1.0.0"})
	e.install("job-1", v1)
	p := e.start(nil)
	p.waitServes(v1)
	before := slotsJSON(t, p.slots())
	e.rt.mu.Lock()
	e.rt.loadErr = errors.New("unsupported opset 99")
	e.rt.mu.Unlock()
	e.cp.installJob("job-2", e.pkg(pkgOpts{version: "1.2.0"}))
	p.in.Kick()
	rec := p.wait("job-2")
	if rec.State != wire.JobFailed || rec.Reason != wire.JobReasonActivation || !strings.Contains(rec.Detail, "opset 99") {
		t.Fatalf("job-2: %s %s %s", rec.State, rec.Reason, rec.Detail)
	}
	p.serves(v1)
	if after := slotsJSON(t, p.slots()); after != before {
		t.Errorf("slots changed:\n%s\n%s", before, after)
	}
	p.stop()
}

// TestRefusals: every refusal leaves the device as it was — same slots,
// same high-water mark, the same model serving, no package kept.
func TestRefusals(t *testing.T) {
	t.Parallel()
	type setup struct {
		e   *env
		job *wire.Job
	}
	pkgV := func(v string) func(e *env) *testPackage {
		return func(e *env) *testPackage { return e.pkg(pkgOpts{version: v}) }
	}
	tests := []struct {
		name   string
		pkg    func(e *env) *testPackage
		setup  func(s setup)
		reason string
		detail string
		grant  bool // the key grant was requested
	}{
		{name: "unknown publisher", reason: wire.JobReasonPublisher, detail: "not trusted",
			pkg: func(e *env) *testPackage { return e.pkg(pkgOpts{version: "2.0.0", signer: keys.stranger}) }},
		{name: "no usable publisher pinned", reason: wire.JobReasonPublisher, pkg: pkgV("2.0.0"),
			setup: func(s setup) { s.job.Publishers = [][]byte{[]byte("garbage")} }},
		{name: "publisher pinned as bare key body", reason: "", pkg: pkgV("2.0.0"), grant: true,
			setup: func(s setup) { s.job.Publishers = [][]byte{pemBody(keys.publisher.Public().MarshalPEM())} }},
		{name: "tampered payload", reason: wire.JobReasonSignature, detail: "hash mismatch",
			pkg: func(e *env) *testPackage {
				p := e.pkg(pkgOpts{version: "2.0.0"})
				blob := slices.Clone(p.blob)
				blob[100] ^= 1
				return newTestPackage(blob, p.ref.Name, p.ref.Version, p.marker, p.w)
			}},
		{name: "expired", reason: wire.JobReasonExpired, pkg: func(e *env) *testPackage {
			return e.pkg(pkgOpts{version: "2.0.0", created: time.Now().Add(-48 * time.Hour), expires: time.Now().Add(-time.Hour)})
		}},
		{name: "wrong device type", reason: wire.JobReasonDeviceType, detail: testDeviceType,
			pkg: func(e *env) *testPackage { return e.pkg(pkgOpts{version: "2.0.0", deviceTypes: []string{"x86-64"}}) }},
		{name: "older version", reason: wire.JobReasonOlderVersion, detail: "not newer", pkg: pkgV("0.9.0")},
		{name: "same version rebuilt", reason: wire.JobReasonOlderVersion, detail: "not newer",
			pkg: func(e *env) *testPackage { return e.pkg(pkgOpts{version: "1.0.0", seed: 7}) }},
		{name: "pre-release of the installed version", reason: wire.JobReasonOlderVersion, pkg: pkgV("1.0.0-rc.1")},
		{name: "policy deny", reason: wire.JobReasonPolicyDeny, detail: "epsilon 2.5 > 1", pkg: pkgV("2.0.0"),
			setup: func(s setup) { s.e.policy = &fakePolicy{deny: []string{"epsilon 2.5 > 1", "no base model allowed"}} }},
		{name: "policy error fails closed", reason: wire.JobReasonPolicyDeny, detail: "bundle missing", pkg: pkgV("2.0.0"),
			setup: func(s setup) { s.e.policy = &fakePolicy{err: errors.New("bundle missing")} }},
		{name: "key grant refused", reason: wire.JobReasonKeyGrant, detail: "quarantined", grant: true, pkg: pkgV("2.0.0"),
			setup: func(s setup) {
				s.e.cp.set(func(cp *fakeCP) { cp.grantRefusal = "device quarantined: attestation untrusted" })
			}},
		{name: "key grant retried after server errors", reason: "", grant: true, pkg: pkgV("2.0.0"),
			setup: func(s setup) { s.e.cp.set(func(cp *fakeCP) { cp.grantFails = 2 }) }},
		{name: "grant the device key cannot open", reason: wire.JobReasonKeyGrant, detail: "open the key grant", grant: true,
			pkg: pkgV("2.0.0"), setup: func(s setup) { s.e.keys = otherKeyFor{"2.0.0"} }},
		{name: "job names another version", reason: wire.JobReasonMalformed, detail: "the job names", pkg: pkgV("2.0.0"),
			setup: func(s setup) { s.job.Package.Version = "3.0.0" }},
		{name: "no tg-model.json", reason: wire.JobReasonMalformed, detail: ModelSpecPath, grant: true,
			pkg: func(e *env) *testPackage {
				return e.pkg(pkgOpts{version: "2.0.0", files: map[string][]byte{ModelSpecPath: nil}})
			}},
		{name: "self-test names no output", reason: wire.JobReasonMalformed, detail: "not an output", grant: true,
			pkg: func(e *env) *testPackage {
				return e.pkg(pkgOpts{version: "2.0.0", files: map[string][]byte{"selftest.json": []byte(
					`{"schema":"tg.selftest.v1","tolerance":0,"cases":[{"inputs":{"x":{"shape":[1],"data":[1]}},"outputs":{"z":{"shape":[1],"data":[1]}}}]}`)}})
			}},
		{name: "package not in the registry", reason: wire.JobReasonDownload, detail: "404", pkg: pkgV("2.0.0"),
			setup: func(s setup) { s.e.cp.set(func(cp *fakeCP) { delete(cp.blobs, s.job.Package.ID) }) }},
		{name: "blob does not hash to its id", reason: wire.JobReasonDownload, detail: "SHA-256", pkg: pkgV("2.0.0"),
			setup: func(s setup) {
				s.e.cp.set(func(cp *fakeCP) {
					b := slices.Clone(cp.blobs[s.job.Package.ID])
					b[len(b)/2] ^= 0xff
					cp.blobs[s.job.Package.ID] = b
				})
			}},
		{name: "package over the size limit", reason: wire.JobReasonDownload, detail: "max_package_bytes", pkg: pkgV("2.0.0"),
			setup: func(s setup) { s.job.Package.Size = DefaultMaxPackageBytes + 1 }},
		{name: "package url off the control plane", reason: wire.JobReasonMalformed, detail: "not a path", pkg: pkgV("2.0.0"),
			setup: func(s setup) { s.job.Package.URL = "https://evil.example/p.tgsp" }},
		{name: "unknown job kind", reason: wire.JobReasonInternal, detail: "not supported", pkg: pkgV("2.0.0"),
			setup: func(s setup) { s.job.Kind = "reboot" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			v1 := e.pkg(pkgOpts{version: "1.0.0"})
			e.install("job-1", v1)
			grantsBefore := e.cp.grantCount()

			pkg := tc.pkg(e)
			e.cp.addPackage(pkg)
			job := wire.Job{ID: "job-x", Kind: wire.JobInstall, Package: pkg.ref}
			if tc.setup != nil {
				tc.setup(setup{e: e, job: &job})
			}
			p := e.start(nil)
			p.waitServes(v1)
			before := slotsJSON(t, p.slots())
			e.cp.addJob(job, true)
			p.in.Kick()
			rec := p.wait("job-x")
			if tc.reason == "" { // a control case: installs
				if rec.State != wire.JobCommitted {
					t.Fatalf("job: %s %s %s", rec.State, rec.Reason, rec.Detail)
				}
				p.stop()
				if e.cp.grantCount() <= grantsBefore {
					t.Error("no key grant requested")
				}
				return
			}
			if rec.State != wire.JobRefused || rec.Reason != tc.reason || !strings.Contains(rec.Detail, tc.detail) {
				t.Fatalf("job: %s %s %q; want refused %s containing %q", rec.State, rec.Reason, rec.Detail, tc.reason, tc.detail)
			}
			p.serves(v1)
			if after := slotsJSON(t, p.slots()); after != before {
				t.Errorf("slots changed:\n%s\n%s", before, after)
			}
			if h := p.highest(modelName); h != "1.0.0" {
				t.Errorf("highest %q", h)
			}
			p.stop()
			if asked := e.cp.grantCount() > grantsBefore; asked != tc.grant {
				t.Errorf("key grant requested: %v, want %v", asked, tc.grant)
			}
			if got := e.packageFiles(); !sameSet(got, []string{v1.ref.ID + ".tgsp"}) {
				t.Errorf("package files %v", got)
			}
			if f := last(e.reportsFor("job-x")); f.State != wire.JobRefused || f.Reason != tc.reason || f.InstalledVersion != "1.0.0" {
				t.Errorf("final report %+v", f)
			}
		})
	}
}

func TestRollbackJobAndTheHighWaterMark(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	// Nothing to roll back to on a fresh device.
	e.cp.addJob(wire.Job{ID: "job-rb0", Kind: wire.JobRollback}, true)
	p := e.start(nil)
	if rec := p.wait("job-rb0"); rec.State != wire.JobRefused || rec.Reason != wire.JobReasonNoPrevious {
		t.Fatalf("rollback on a fresh device: %+v", rec)
	}
	p.stop()

	v1 := e.pkg(pkgOpts{version: "1.0.0"})
	v2 := e.pkg(pkgOpts{version: "2.0.0"})
	e.install("job-1", v1)
	e.install("job-2", v2)

	p = e.start(nil)
	defer p.stop()
	p.waitServes(v2)
	e.cp.addJob(wire.Job{ID: "job-rb", Kind: wire.JobRollback, Package: v1.ref}, true)
	p.in.Kick()
	if rec := p.wait("job-rb"); rec.State != wire.JobRolledBack {
		t.Fatalf("rollback: %s %s %s", rec.State, rec.Reason, rec.Detail)
	}
	p.serves(v1)
	s := p.slots()
	if s.Active.PackageID != v1.ref.ID || !s.Active.Committed || s.Previous.PackageID != v2.ref.ID {
		t.Fatalf("slots after rollback: %+v / %+v", s.Active, s.Previous)
	}
	if h := p.highest(modelName); h != "2.0.0" {
		t.Fatalf("highest %q after the rollback, want 2.0.0 kept", h)
	}
	waitReport(t, e, "job-rb", func(r wire.JobReport) bool {
		return r.State == wire.JobRolledBack && r.InstalledVersion == "1.0.0"
	})

	// Newer than the active 1.0.0 but below 2.0.0, committed before: no.
	v15 := e.pkg(pkgOpts{version: "1.5.0"})
	e.cp.installJob("job-15", v15)
	p.in.Kick()
	if rec := p.wait("job-15"); rec.State != wire.JobRefused || rec.Reason != wire.JobReasonOlderVersion || !strings.Contains(rec.Detail, "2.0.0") {
		t.Fatalf("1.5.0 after rolling back from 2.0.0: %s %s %s", rec.State, rec.Reason, rec.Detail)
	}

	// 2.0.0 again is fine, from the previous slot's file: no download.
	gets := len(e.cp.rangesSeen())
	e.cp.addJob(wire.Job{ID: "job-2b", Kind: wire.JobInstall, Package: v2.ref}, true)
	p.in.Kick()
	if rec := p.wait("job-2b"); rec.State != wire.JobCommitted {
		t.Fatalf("2.0.0 again: %s %s %s", rec.State, rec.Reason, rec.Detail)
	}
	p.serves(v2)
	if n := len(e.cp.rangesSeen()); n != gets {
		t.Errorf("the package kept in the previous slot was downloaded again (%d requests)", n-gets)
	}

	// A rollback to what the previous slot does not hold.
	e.cp.addJob(wire.Job{ID: "job-rb2", Kind: wire.JobRollback, Package: v15.ref}, true)
	p.in.Kick()
	if rec := p.wait("job-rb2"); rec.State != wire.JobRefused || rec.Reason != wire.JobReasonNoPrevious {
		t.Fatalf("rollback to 1.5.0: %+v", rec)
	}
	// A rollback to the package already active is done at once.
	e.cp.addJob(wire.Job{ID: "job-rb3", Kind: wire.JobRollback, Package: v2.ref}, true)
	p.in.Kick()
	if rec := p.wait("job-rb3"); rec.State != wire.JobRolledBack {
		t.Fatalf("rollback to the active package: %+v", rec)
	}
	p.serves(v2)
}

func waitReport(t *testing.T, e *env, id string, ok func(wire.JobReport) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, r := range e.reportsFor(id) {
			if ok(r) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching report for %s among %+v", id, e.reportsFor(id))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func countReports(e *env, id, state string) int {
	n := 0
	for _, r := range e.reportsFor(id) {
		if r.State == state {
			n++
		}
	}
	return n
}

func TestDownloadResumesWithRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		setup  func(cp *fakeCP)
		ranges []string
	}{
		{"connection cut twice", func(cp *fakeCP) { cp.cuts = []int64{40000, 30000} },
			[]string{"", "bytes=40000-", "bytes=70000-"}},
		{"server ignores Range", func(cp *fakeCP) { cp.cuts, cp.ignoreRange = []int64{40000}, true },
			[]string{"", "bytes=40000-"}},
		{"server stalls", func(cp *fakeCP) { cp.stalls = []int64{50000} },
			[]string{"", "bytes=50000-"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.client.StallTimeout = 300 * time.Millisecond
			v1 := e.pkg(pkgOpts{version: "1.0.0"})
			e.cp.set(tc.setup)
			rec := e.install("job-1", v1)
			if rec.State != wire.JobCommitted {
				t.Fatalf("job: %s %s %s", rec.State, rec.Reason, rec.Detail)
			}
			want := tc.ranges
			if got := e.cp.rangesSeen(); !slices.Equal(got, want) {
				t.Errorf("Range headers %q, want %q", got, want)
			}
			var progress []int64
			for _, r := range e.reportsFor("job-1") {
				if r.State == wire.JobDownloading {
					progress = append(progress, r.Downloaded)
				}
			}
			// Entering the state, the first bytes, the end: not every chunk.
			if len(progress) != 3 || progress[0] != 0 || progress[2] != v1.ref.Size {
				t.Errorf("downloading reports %v (size %d)", progress, v1.ref.Size)
			}
		})
	}
}

func TestNotifications(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.start(nil)
	defer p.stop()
	notify := func(payload any) {
		b, _ := json.Marshal(payload)
		p.in.Handle(context.Background(), presence.Message{Topic: mqttacl.CmdTopic(testTenant, testDevice, "job"), Payload: b})
	}

	// Not listed as open: only the notification brings it.
	v1 := e.pkg(pkgOpts{version: "1.0.0"})
	e.cp.addPackage(v1)
	e.cp.addJob(wire.Job{ID: "job-n", Kind: wire.JobInstall, Package: v1.ref}, false)
	notify("not a notification")
	notify(wire.JobNotify{Schema: "tg.job.notify.v0", JobID: "job-n"})
	notify(wire.JobNotify{Schema: wire.JobNotifySchema, JobID: "../x"})
	time.Sleep(100 * time.Millisecond)
	if rec := p.job("job-n"); rec != nil {
		t.Fatalf("an invalid notification started the job: %+v", rec)
	}
	notify(wire.JobNotify{Schema: wire.JobNotifySchema, JobID: "job-n"})
	if rec := p.wait("job-n"); rec.State != wire.JobCommitted {
		t.Fatalf("job-n: %+v", rec)
	}
	waitReport(t, e, "job-n", func(r wire.JobReport) bool { return r.State == wire.JobCommitted })

	// Asked again (the control plane did not get the answer): answered again.
	notify(wire.JobNotify{Schema: wire.JobNotifySchema, JobID: "job-n"})
	waitReport(t, e, "job-n", func(wire.JobReport) bool { return countReports(e, "job-n", wire.JobCommitted) == 2 })
	// A job the control plane does not know is dropped.
	notify(wire.JobNotify{Schema: wire.JobNotifySchema, JobID: "job-gone"})

	// A cancelled job (410 JOB_CANCELLED) is dropped, not started.
	e.cp.addPackage(e.pkg(pkgOpts{version: "1.1.0"}))
	e.cp.set(func(cp *fakeCP) { cp.cancelled = map[string]bool{"job-c": true} })
	e.cp.addJob(wire.Job{ID: "job-c", Kind: wire.JobInstall, Package: v1.ref}, false)
	notify(wire.JobNotify{Schema: wire.JobNotifySchema, JobID: "job-c"})

	// A failed job retried under a new attempt (the control plane's
	// deadline passed) is answered with its final state, not run again.
	bad := e.pkg(pkgOpts{version: "2.0.0", badSelfTest: true})
	e.cp.addPackage(bad)
	e.cp.addJob(wire.Job{ID: "job-a", Kind: wire.JobInstall, Package: bad.ref}, false)
	notify(wire.JobNotify{Schema: wire.JobNotifySchema, JobID: "job-a"})
	if rec := p.wait("job-a"); rec.State != wire.JobFailed {
		t.Fatalf("job-a: %+v", rec)
	}
	loads := e.rt.loadCount()
	e.cp.addJob(wire.Job{ID: "job-a", Kind: wire.JobInstall, Package: bad.ref, Attempt: 2}, true)
	p.in.Kick() // found in the list of open jobs this time
	waitReport(t, e, "job-a", func(r wire.JobReport) bool { return r.Attempt == 2 })
	var second []wire.JobReport
	for _, r := range e.reportsFor("job-a") {
		if r.Attempt == 2 {
			second = append(second, r)
		}
	}
	if len(second) != 1 || second[0].State != wire.JobFailed || second[0].Reason != wire.JobReasonSelfTest {
		t.Errorf("attempt 2 reports %+v, want the final state once", second)
	}
	if p.job("job-gone") != nil || p.job("job-c") != nil {
		t.Error("an unknown or cancelled job was recorded")
	}
	if e.rt.loadCount() != loads {
		t.Error("a finished job was run again")
	}
	p.serves(v1)
}

func TestNewerStateFormatIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	db, err := state.Open(e.dir+"/agent.db", state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := initStore(db); err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return sub(tx, bucketMeta).Put(keyFormat, []byte{0, 0, 0, 0, 0, 0, 0, 2})
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	p := e.start(nil)
	select {
	case err := <-p.done:
		p.ended = true
		if !errors.Is(err, ErrNewerFormat) {
			t.Fatalf("Run: %v, want ErrNewerFormat", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept running on a newer format")
	}
	p.kill()
}
