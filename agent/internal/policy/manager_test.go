package policy

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/agent/internal/install"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence"
	"github.com/tensorguard/tensorguardflow/agent/internal/state"
	"github.com/tensorguard/tensorguardflow/internal/policybundle"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

const (
	tenant = "acme"
	fleet  = "flt-aaaaaaaaaaaaaaaaaaaa"
	device = "dev-bbbbbbbbbbbbbbbbbbbb"
)

// fakeCP is the control plane's device policy routes: a key and the
// current bundle, with call counts and injectable failures.
type fakeCP struct {
	mu      sync.Mutex
	key     *wire.PolicyKey
	bundle  []byte
	fail    error
	fetches int
}

func (f *fakeCP) PolicyKey(context.Context) (wire.PolicyKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return wire.PolicyKey{}, f.fail
	}
	if f.key == nil {
		return wire.PolicyKey{}, ErrNoPolicy
	}
	return *f.key, nil
}

func (f *fakeCP) PolicyBundle(_ context.Context, etag string) ([]byte, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches++
	if f.fail != nil {
		return nil, false, f.fail
	}
	if f.bundle == nil {
		return nil, false, ErrNoPolicy
	}
	if etag == `"`+policybundle.Digest(f.bundle)+`"` {
		return nil, true, nil
	}
	return f.bundle, false, nil
}

func (f *fakeCP) set(key *policybundle.SigningKey, bundle []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if key != nil {
		p := key.Public()
		f.key = &wire.PolicyKey{KeyID: p.ID, Algorithm: p.Algorithm, PublicKeyPEM: p.PublicKeyPEM}
	}
	f.bundle = bundle
}

// outbox records enqueued events.
type outbox struct {
	mu     sync.Mutex
	events []wire.PolicyEvent
}

func (o *outbox) EnqueueFunc(topic string, _ byte, _ bool, build func(string) ([]byte, error)) (uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	b, err := build("msg-" + topic)
	if err != nil {
		return 0, err
	}
	var ev wire.PolicyEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		return 0, err
	}
	o.events = append(o.events, ev)
	return uint64(len(o.events)), nil
}

func (o *outbox) last() wire.PolicyEvent {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.events) == 0 {
		return wire.PolicyEvent{}
	}
	return o.events[len(o.events)-1]
}

const allowTrusted = `package tensorguard.install

default allow := false

allow if input.attestation.state == "trusted"

reasons contains sprintf("revision %s denies: %s", [data.rev, object.get(input, ["attestation", "state"], "unknown")]) if not allow
`

func sign(t *testing.T, key policybundle.SigningKey, fleetID string, rev int64, policy string) []byte {
	t.Helper()
	u, err := policybundle.Build(policybundle.Files{
		"install.rego": []byte(policy),
		"data.json":    []byte(`{"rev": "` + time.Duration(rev).String() + `"}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := policybundle.Sign(u, policybundle.Meta{Tenant: tenant, Fleet: fleetID, Revision: rev}, key)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func openState(t *testing.T, path string) *state.DB {
	t.Helper()
	db, err := state.Open(path, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newManager(t *testing.T, db *state.DB, cp Fetcher, box Outbox) *Manager {
	t.Helper()
	m, err := New(Config{Tenant: tenant, Fleet: fleet, Device: device, Fetcher: cp, Store: db, Outbox: box,
		TelemetryTopic: "tg/v1/acme/devices/" + device + "/telemetry",
		Logger:         slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func trusted(state string) install.PolicyInput {
	in := install.PolicyInput{Device: install.DeviceFacts{DeviceID: device, TenantID: tenant, FleetID: fleet}}
	if state != "" {
		in.Attestation = &wire.Verdict{State: state}
	}
	return in
}

func decide(t *testing.T, m *Manager, st string) (bool, []string) {
	t.Helper()
	allow, reasons, err := m.Evaluate(context.Background(), trusted(st))
	if err != nil {
		t.Fatal(err)
	}
	return allow, reasons
}

func refusedReason(err error) string {
	var re *RefusedError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

// TestFetchPersistReload: the first update pins the key and installs the
// bundle; a restart (new Manager over the same state file) has the same
// bundle in force without contacting anyone; a newer revision replaces it.
func TestFetchPersistReload(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "agent.db")
	key, err := policybundle.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	cp := &fakeCP{}
	db := openState(t, path)
	box := &outbox{}
	m := newManager(t, db, cp, box)

	// Nothing fetched yet: fail closed.
	if allow, reasons := decide(t, m, "trusted"); allow || !strings.Contains(reasons[0], "not been fetched") {
		t.Errorf("before any fetch: %v %q", allow, reasons)
	}
	// The fleet has no policy: allowed, and remembered.
	if changed, err := m.Update(ctx); err != nil || changed {
		t.Fatalf("update without policy: %v %v", changed, err)
	}
	if allow, _ := decide(t, m, ""); !allow {
		t.Error("a fleet without policy denies")
	}

	cp.set(&key, sign(t, key, fleet, 1, allowTrusted))
	if changed, err := m.Update(ctx); err != nil || !changed {
		t.Fatalf("first update: %v %v", changed, err)
	}
	if s := m.Status(); s.Revision != 1 || s.KeyID != key.ID || !s.Loaded {
		t.Errorf("status = %+v", s)
	}
	if ev := box.last(); ev.Event != wire.PolicyEventInstalled || ev.Revision != 1 || ev.Schema != wire.PolicyEventSchema || ev.Kind != "policy" || ev.Device != device {
		t.Errorf("event = %+v", ev)
	}
	if allow, _ := decide(t, m, "trusted"); !allow {
		t.Error("trusted device denied")
	}
	if allow, reasons := decide(t, m, "untrusted"); allow || !slices.Equal(reasons, []string{"revision 1ns denies: untrusted"}) {
		t.Errorf("untrusted: %v %q", allow, reasons)
	}
	// The same bundle again: not modified, no refetch of the body.
	if changed, err := m.Update(ctx); err != nil || changed {
		t.Errorf("unchanged update: %v %v", changed, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart: the bundle is in force before any fetch, even with the
	// control plane unreachable.
	db = openState(t, path)
	defer db.Close()
	cp.mu.Lock()
	cp.fail = errors.New("network down")
	cp.mu.Unlock()
	m = newManager(t, db, cp, box)
	if s := m.Status(); s.Revision != 1 || !s.Loaded || s.KeyID != key.ID {
		t.Fatalf("after restart: %+v", m.Status())
	}
	if allow, reasons := decide(t, m, "stale"); allow || !slices.Equal(reasons, []string{"revision 1ns denies: stale"}) {
		t.Errorf("after restart: %v %q", allow, reasons)
	}
	if _, err := m.Update(ctx); err == nil || refusedReason(err) != "" {
		t.Errorf("update with the network down: %v", err)
	}
	cp.mu.Lock()
	cp.fail = nil
	cp.mu.Unlock()
	cp.set(nil, sign(t, key, fleet, 2, strings.Replace(allowTrusted, `== "trusted"`, `in {"trusted", "stale"}`, 1)))
	if changed, err := m.Update(ctx); err != nil || !changed {
		t.Fatalf("update to revision 2: %v %v", changed, err)
	}
	if allow, _ := decide(t, m, "stale"); !allow || m.Status().Revision != 2 {
		t.Errorf("revision 2 not in force: %+v", m.Status())
	}
}

// TestRefusals: an older or equal revision, a tampered bundle, one signed
// by another key (the control plane's key changed), one for another fleet,
// are refused with their reasons and reported; the active bundle stays,
// also across a restart.
func TestRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "agent.db")
	key, _ := policybundle.NewSigningKey()
	other, _ := policybundle.NewSigningKey()
	cp := &fakeCP{}
	db := openState(t, path)
	defer db.Close()
	box := &outbox{}
	m := newManager(t, db, cp, box)
	rev1 := sign(t, key, fleet, 1, allowTrusted)
	rev2 := sign(t, key, fleet, 2, allowTrusted)
	cp.set(&key, rev2)
	if _, err := m.Update(ctx); err != nil {
		t.Fatal(err)
	}
	sha2 := m.Status().SHA256

	tampered := append([]byte{}, rev1...)
	tampered[len(tampered)/2] ^= 0xff
	equalOther := sign(t, key, fleet, 2, strings.Replace(allowTrusted, "default allow := false", "default allow := true", 1))
	for _, tc := range []struct {
		name   string
		key    *policybundle.SigningKey
		bundle []byte
		reason string
	}{
		{"older revision", nil, rev1, wire.PolicyReasonOlder},
		{"equal revision, other content", nil, equalOther, wire.PolicyReasonOlder},
		{"tampered", nil, tampered, wire.PolicyReasonSignature},
		{"another fleet", nil, sign(t, key, "flt-cccccccccccccccccccc", 9, allowTrusted), wire.PolicyReasonWrongFleet},
		{"signed by another key", nil, sign(t, other, fleet, 3, allowTrusted), wire.PolicyReasonSignature},
		{"control plane key changed", &other, sign(t, other, fleet, 4, allowTrusted), wire.PolicyReasonKeyChange},
	} {
		cp.set(tc.key, tc.bundle)
		_, err := m.Update(ctx)
		if got := refusedReason(err); got != tc.reason || !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v (reason %q), want %s", tc.name, err, got, tc.reason)
		}
		if ev := box.last(); ev.Event != wire.PolicyEventRefused || ev.Reason != tc.reason || ev.Active != 2 {
			t.Errorf("%s: event %+v", tc.name, ev)
		}
		if s := m.Status(); s.Revision != 2 || s.SHA256 != sha2 || s.KeyID != key.ID {
			t.Errorf("%s: active changed to %+v", tc.name, s)
		}
	}
	// Install (the direct path) refuses the older revision too.
	if err := m.Install(ctx, rev1); refusedReason(err) != wire.PolicyReasonOlder {
		t.Errorf("Install(rev1): %v", err)
	}
	// After a restart the floor and the pin are still there.
	m2 := newManager(t, db, &fakeCP{}, nil)
	if err := m2.Install(ctx, rev1); refusedReason(err) != wire.PolicyReasonOlder {
		t.Errorf("after restart, Install(rev1): %v", err)
	}
	if err := m2.Install(ctx, sign(t, other, fleet, 5, allowTrusted)); refusedReason(err) != wire.PolicyReasonSignature {
		t.Errorf("after restart, other key: %v", err)
	}
}

// TestRunFollowsNotifications: Run fetches at start, and a cmd/policy
// notification of a newer revision makes it fetch again at once.
func TestRunFollowsNotifications(t *testing.T) {
	t.Parallel()
	key, _ := policybundle.NewSigningKey()
	cp := &fakeCP{}
	cp.set(&key, sign(t, key, fleet, 1, allowTrusted))
	db := openState(t, filepath.Join(t.TempDir(), "agent.db"))
	defer db.Close()
	m := newManager(t, db, cp, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitFor(t, func() bool { return m.Status().Revision == 1 })

	cp.set(nil, sign(t, key, fleet, 2, allowTrusted))
	notify := func(rev int64) {
		b, _ := json.Marshal(wire.PolicyNotify{Schema: wire.PolicyNotifySchema, Revision: rev})
		m.Handle(ctx, presence.Message{Topic: "tg/v1/acme/devices/" + device + "/cmd/policy", Payload: b})
	}
	notify(2)
	waitFor(t, func() bool { return m.Status().Revision == 2 })
	// A stale or malformed notification does not trigger a fetch.
	cp.mu.Lock()
	before := cp.fetches
	cp.mu.Unlock()
	notify(1)
	m.Handle(ctx, presence.Message{Payload: []byte("junk")})
	time.Sleep(50 * time.Millisecond)
	cp.mu.Lock()
	after := cp.fetches
	cp.mu.Unlock()
	if after != before {
		t.Errorf("stale notifications caused %d fetches", after-before)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEvaluateInput: the policy sees the install pipeline's input, with
// the pinned publishers added, and the example policy's rules work on it.
func TestEvaluateInput(t *testing.T) {
	t.Parallel()
	key, _ := policybundle.NewSigningKey()
	files, err := policybundle.ReadDir(filepath.Join("..", "..", "..", "examples", "policy"))
	if err != nil {
		t.Fatal(err)
	}
	u, err := policybundle.Build(files)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := policybundle.Sign(u, policybundle.Meta{Tenant: tenant, Fleet: fleet, Revision: 1}, key)
	if err != nil {
		t.Fatal(err)
	}
	cp := &fakeCP{}
	cp.set(&key, raw)
	db := openState(t, filepath.Join(t.TempDir(), "agent.db"))
	defer db.Close()
	pinned := []string{"74de179003b61ff190e30b27126d43dc"}
	m, err := New(Config{Tenant: tenant, Fleet: fleet, Device: device, Fetcher: cp, Store: db, Publishers: func() []string { return pinned }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	man := &tgsp.Manifest{Name: "resnet", Version: "1.0.0", PublisherKeyID: pinned[0]}
	in := install.PolicyInput{Manifest: man, DPCert: &tgsp.DPCert{Epsilon: 2.5, Delta: 1e-6}, Attestation: &wire.Verdict{State: "trusted"},
		Device: install.DeviceFacts{DeviceID: device, FleetID: fleet}}
	if allow, reasons, err := m.Evaluate(context.Background(), in); err != nil || !allow {
		t.Errorf("good input: %v %q %v", allow, reasons, err)
	}
	in.DPCert = &tgsp.DPCert{Epsilon: 12, Delta: 1e-6}
	if allow, reasons, _ := m.Evaluate(context.Background(), in); allow || !slices.Equal(reasons, []string{"dp_cert epsilon 12 exceeds the fleet limit max_epsilon 8"}) {
		t.Errorf("epsilon 12: %v %q", allow, reasons)
	}
	in.DPCert, pinned = nil, nil
	allow, reasons, _ := m.Evaluate(context.Background(), in)
	if allow || len(reasons) != 2 || !strings.Contains(reasons[0], "no dp_cert.json") || !strings.Contains(reasons[1], "not pinned") {
		t.Errorf("no dp_cert, no pins: %v %q", allow, reasons)
	}
}

// TestHTTPFetcher: the fetcher's mapping of the device routes' answers.
func TestHTTPFetcher(t *testing.T) {
	t.Parallel()
	key, _ := policybundle.NewSigningKey()
	raw := sign(t, key, fleet, 1, allowTrusted)
	etag := `"` + policybundle.Digest(raw) + `"`
	var noPolicy bool
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case noPolicy:
			w.WriteHeader(http.StatusNotFound)
		case r.URL.Path == wire.PathDevicePolicyKey:
			p := key.Public()
			_ = json.NewEncoder(w).Encode(wire.PolicyKey{KeyID: p.ID, Algorithm: p.Algorithm, PublicKeyPEM: p.PublicKeyPEM})
		case r.URL.Path == wire.PathDevicePolicy && r.Header.Get("If-None-Match") == etag:
			w.WriteHeader(http.StatusNotModified)
		case r.URL.Path == wire.PathDevicePolicy:
			_, _ = w.Write(raw)
		default:
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	defer srv.Close()
	tc := srv.Client().Transport.(*http.Transport).TLSClientConfig
	f, err := NewHTTPFetcher(srv.URL, tc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if k, err := f.PolicyKey(ctx); err != nil || k.KeyID != key.ID {
		t.Errorf("key: %+v %v", k, err)
	}
	if b, nm, err := f.PolicyBundle(ctx, ""); err != nil || nm || string(b) != string(raw) {
		t.Errorf("bundle: %d bytes, %v, %v", len(b), nm, err)
	}
	if _, nm, err := f.PolicyBundle(ctx, etag); err != nil || !nm {
		t.Errorf("If-None-Match: %v %v", nm, err)
	}
	noPolicy = true
	if _, _, err := f.PolicyBundle(ctx, ""); !errors.Is(err, ErrNoPolicy) {
		t.Errorf("404: %v", err)
	}
	if _, err := NewHTTPFetcher("http://x", tc); err == nil {
		t.Error("plain http accepted")
	}
}
