package install

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
	"github.com/tensorguard/tensorguardflow/agent/internal/outbox"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence"
	"github.com/tensorguard/tensorguardflow/agent/internal/state"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// Keys shared by the tests of this package (ML-DSA key generation is not
// free): the tenant's publisher, a publisher nobody pinned, the control
// plane's recipient key (packages are packed to it; it grants the DEK to
// devices) and the device's KEM key.
type testKeys struct {
	publisher *tgsp.SignerPrivateKey
	stranger  *tgsp.SignerPrivateKey
	cp        *tgsp.RecipientPrivateKey
	device    *tgsp.RecipientPrivateKey
	other     *tgsp.RecipientPrivateKey // another device's
}

var keys = func() testKeys {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	p, err := tgsp.GenerateSigner(nil)
	must(err)
	s, err := tgsp.GenerateSigner(nil)
	must(err)
	c, err := tgsp.GenerateRecipient(nil)
	must(err)
	d, err := tgsp.GenerateRecipient(nil)
	must(err)
	o, err := tgsp.GenerateRecipient(nil)
	must(err)
	return testKeys{publisher: p, stranger: s, cp: c, device: d, other: o}
}()

const (
	testTenant     = "acme"
	testDevice     = "dev-test"
	testDeviceType = "jetson-orin"
	modelName      = "mnist"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// --- packages -----------------------------------------------------------

// weights of the fake linear model y = x·W + b (x: [1,4], y: [1,3]),
// different for each seed.
type weights struct {
	W [4][3]float32 `json:"w"`
	B [3]float32    `json:"b"`
}

func weightsFor(seed int) weights {
	var w weights
	for i := range 4 {
		for j := range 3 {
			w.W[i][j] = float32(seed) + float32(i)*0.25 - float32(j)*0.5
		}
	}
	for j := range 3 {
		w.B[j] = float32(seed*10 + j)
	}
	return w
}

func (w weights) apply(x []float32) []float32 {
	y := make([]float32, 3)
	for j := range 3 {
		s := w.B[j]
		for i := range 4 {
			s += x[i] * w.W[i][j]
		}
		y[j] = s
	}
	return y
}

var probe = []float32{0.5, -1, 2, 0.25}

// pkgOpts describes a test package.
type pkgOpts struct {
	version     string
	seed        int // weights; default from the version's major number
	deviceTypes []string
	created     time.Time
	expires     time.Time
	signer      *tgsp.SignerPrivateKey
	// badSelfTest ships expected outputs the model does not produce.
	badSelfTest bool
	// files replaces or adds plaintext files (nil value: remove).
	files map[string][]byte
}

// testPackage is a packed package: the registry's view of it.
type testPackage struct {
	ref    wire.PackageRef
	blob   []byte
	marker []byte // random bytes inside the model file, to find leaks
	w      weights
}

func buildPackage(t testing.TB, o pkgOpts) *testPackage {
	t.Helper()
	if o.signer == nil {
		o.signer = keys.publisher
	}
	if o.seed == 0 {
		v, err := tgsp.ParseVersion(o.version)
		if err != nil {
			t.Fatal(err)
		}
		o.seed = int(v.Major)*100 + int(v.Minor)*10 + int(v.Patch)
	}
	w := weightsFor(o.seed)
	marker := make([]byte, 96<<10)
	if _, err := rand.Read(marker); err != nil {
		t.Fatal(err)
	}
	head, _ := json.Marshal(w)
	model := append(append(head, '\n'), marker...)
	want := w.apply(probe)
	if o.badSelfTest {
		want[1] += 0.5
	}
	selftest, _ := json.Marshal(SelfTest{Schema: SelfTestSchema, Tolerance: 1e-4, Cases: []SelfTestCase{{
		Inputs:  map[string]Tensor{"x": {Shape: []int64{1, 4}, Data: probe}},
		Outputs: map[string]Tensor{"y": {Shape: []int64{1, 3}, Data: want}},
	}}})
	spec, _ := json.Marshal(ModelSpec{Schema: ModelSchema, Runtime: "fake", Model: "model.onnx",
		Inputs: []string{"x"}, Outputs: []string{"y"}, SelfTest: "selftest.json"})
	files := map[string][]byte{ModelSpecPath: spec, "selftest.json": selftest, "model.onnx": model}
	for p, b := range o.files {
		if b == nil {
			delete(files, p)
		} else {
			files[p] = b
		}
	}
	if m, ok := o.files["model.onnx"]; ok {
		marker = m // a real model: its bytes are the plaintext to look for
	}
	dir := t.TempDir() // the publisher's side: not the device's state dir
	for p, b := range files {
		if err := os.WriteFile(filepath.Join(dir, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	_, err := tgsp.Pack(&buf, dir, tgsp.PackOptions{
		Name: modelName, Version: o.version, DeviceTypes: o.deviceTypes,
		CreatedAt: o.created, ExpiresAt: o.expires,
		DPCert:     []byte(`{"schema":"tgsp.dp_cert.v1","epsilon":2.5,"delta":1e-5,"accountant":"rdp","noise_multiplier":1.1,"clipping_norm":1,"sampling_rate":0.01,"steps":100,"dataset_size":60000}`),
		Evidence:   []byte(`{"schema":"tgsp.evidence.v1","base_model":"lenet","trainer":"tg-tinker/test"}`),
		Signer:     o.signer,
		Recipients: []*tgsp.RecipientPublicKey{keys.cp.Public()},
	})
	if err != nil {
		t.Fatal(err)
	}
	return newTestPackage(buf.Bytes(), modelName, o.version, marker, w)
}

func newTestPackage(blob []byte, name, version string, marker []byte, w weights) *testPackage {
	sum := sha256.Sum256(blob)
	id := hex.EncodeToString(sum[:])
	return &testPackage{
		ref:  wire.PackageRef{ID: id, Name: name, Version: version, Size: int64(len(blob)), URL: PathPackages + id},
		blob: blob, marker: marker, w: w,
	}
}

// --- the control plane --------------------------------------------------

// fakeCP serves the device routes over mTLS like the control plane: jobs,
// package blobs through http.ServeContent (Range support), key grants
// wrapped to the device's key.
type fakeCP struct {
	t   testing.TB
	srv *httptest.Server

	mu           sync.Mutex
	jobs         map[string]wire.Job
	open         []string
	blobs        map[string][]byte
	ranges       []string // the Range header of every package GET ("" for none)
	cuts         []int64  // cut the next package responses after this many body bytes
	ignoreRange  bool     // answer every package GET with the whole blob
	stalls       []int64  // stop sending the next package responses after this many bytes, connection open
	cancelled    map[string]bool
	grantRefusal string // non-empty: 403 KEY_GRANT_REFUSED with this message
	grantFails   int    // answer this many grant requests 503 first
	grants       int
}

func newFakeCP(t testing.TB) (*fakeCP, *tls.Config) {
	cp := &fakeCP{t: t, jobs: map[string]wire.Job{}, blobs: map[string][]byte{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathJobs, cp.listJobs)
	mux.HandleFunc("GET "+PathJobs+"/{id}", cp.getJob)
	mux.HandleFunc("GET "+PathPackages+"{id}", cp.getPackage)
	mux.HandleFunc("POST "+PathKeyGrants, cp.keyGrant)

	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test device CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	devDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: testDevice}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, &devKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	clients := x509.NewCertPool()
	clients.AddCert(ca)

	cp.srv = httptest.NewUnstartedServer(mux)
	cp.srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients}
	cp.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // connections cut on purpose
	cp.srv.StartTLS()
	t.Cleanup(cp.srv.Close)

	roots := x509.NewCertPool()
	roots.AddCert(cp.srv.Certificate())
	return cp, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{devDER}, PrivateKey: devKey}}}
}

func (cp *fakeCP) device(w http.ResponseWriter, r *http.Request) bool {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != testDevice {
		writeError(w, http.StatusUnauthorized, wire.CodeUnauthenticated, "device certificate required")
		return false
	}
	return true
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(wire.ErrorBody{Error: wire.APIError{Code: code, Message: msg, RequestID: "req-test"}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// addPackage makes p downloadable.
func (cp *fakeCP) addPackage(p *testPackage) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.blobs[p.ref.ID] = p.blob
}

// addJob adds a job; listed makes it appear in the open-jobs list.
func (cp *fakeCP) addJob(j wire.Job, listed bool) wire.Job {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	j.Schema = wire.JobSchema
	if j.Attempt == 0 {
		j.Attempt = 1
	}
	if j.RolloutID == "" {
		j.RolloutID = "ro-test"
	}
	if j.Publishers == nil {
		j.Publishers = [][]byte{keys.publisher.Public().MarshalPEM()}
	}
	j.CreatedAt = time.Now().UTC()
	cp.jobs[j.ID] = j
	if listed {
		cp.open = append(cp.open, j.ID)
	}
	return j
}

func (cp *fakeCP) installJob(id string, p *testPackage) wire.Job {
	cp.addPackage(p)
	return cp.addJob(wire.Job{ID: id, Kind: wire.JobInstall, Package: p.ref}, true)
}

func (cp *fakeCP) listJobs(w http.ResponseWriter, r *http.Request) {
	if !cp.device(w, r) {
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	out := []wire.Job{}
	for _, id := range cp.open {
		out = append(out, cp.jobs[id])
	}
	writeJSON(w, out)
}

func (cp *fakeCP) getJob(w http.ResponseWriter, r *http.Request) {
	if !cp.device(w, r) {
		return
	}
	cp.mu.Lock()
	j, ok := cp.jobs[r.PathValue("id")]
	cancelled := cp.cancelled[r.PathValue("id")]
	cp.mu.Unlock()
	if cancelled {
		writeError(w, http.StatusGone, wire.CodeJobCancelled, "job was cancelled: do not start it")
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, wire.CodeNotFound, "no such job")
		return
	}
	writeJSON(w, j)
}

func (cp *fakeCP) getPackage(w http.ResponseWriter, r *http.Request) {
	if !cp.device(w, r) {
		return
	}
	cp.mu.Lock()
	blob, ok := cp.blobs[r.PathValue("id")]
	cp.ranges = append(cp.ranges, r.Header.Get("Range"))
	cut := int64(-1)
	if len(cp.cuts) > 0 {
		cut, cp.cuts = cp.cuts[0], cp.cuts[1:]
	}
	stall := int64(-1)
	if len(cp.stalls) > 0 {
		stall, cp.stalls = cp.stalls[0], cp.stalls[1:]
	}
	if cp.ignoreRange {
		r.Header.Del("Range")
	}
	cp.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, wire.CodeNotFound, "no such package")
		return
	}
	var out http.ResponseWriter = w
	if cut >= 0 {
		out = &cutWriter{ResponseWriter: w, left: cut}
	}
	if stall >= 0 {
		out = &cutWriter{ResponseWriter: w, left: stall, stall: r.Context().Done()}
	}
	http.ServeContent(out, r, "", time.Unix(1700000000, 0), bytes.NewReader(blob))
}

// cutWriter drops the connection after left body bytes, as a network
// failure would.
type cutWriter struct {
	http.ResponseWriter
	left  int64
	stall <-chan struct{} // set: hang until the client gives up instead
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) <= c.left {
		n, err := c.ResponseWriter.Write(p)
		c.left -= int64(n)
		return n, err
	}
	_, _ = c.ResponseWriter.Write(p[:c.left])
	c.left = 0
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	if c.stall != nil {
		<-c.stall
	}
	panic(http.ErrAbortHandler)
}

func (cp *fakeCP) rangesSeen() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return slices.Clone(cp.ranges)
}

func (cp *fakeCP) grantCount() int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.grants
}

// set changes the control plane's behaviour under its lock.
func (cp *fakeCP) set(f func(cp *fakeCP)) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	f(cp)
}

func (cp *fakeCP) keyGrant(w http.ResponseWriter, r *http.Request) {
	if !cp.device(w, r) {
		return
	}
	var req wire.KeyGrantRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error())
		return
	}
	cp.mu.Lock()
	cp.grants++
	refusal := cp.grantRefusal
	fails := cp.grantFails > 0
	if fails {
		cp.grantFails--
	}
	j, okJob := cp.jobs[req.JobID]
	blob, okPkg := cp.blobs[req.PackageID]
	cp.mu.Unlock()
	switch {
	case fails:
		writeError(w, http.StatusServiceUnavailable, wire.CodeInternal, "try again")
		return
	case refusal != "":
		writeError(w, http.StatusForbidden, wire.CodeKeyGrantRefused, refusal)
		return
	case !okJob || !okPkg || j.Package.ID != req.PackageID:
		writeError(w, http.StatusNotFound, wire.CodeNotFound, "no such job or package")
		return
	}
	pkg, err := tgsp.Open(bytes.NewReader(blob), int64(len(blob)))
	if err == nil {
		err = pkg.VerifySignature([]*tgsp.SignerPublicKey{keys.publisher.Public(), keys.stranger.Public()}, time.Now())
	}
	var grant []byte
	if err == nil {
		var dek *tgsp.DEK
		if dek, err = pkg.UnwrapDEK(keys.cp); err == nil {
			grant, err = pkg.GrantKey(dek, keys.device.Public())
		}
	}
	if err != nil {
		writeError(w, http.StatusConflict, wire.CodeConflict, err.Error())
		return
	}
	writeJSON(w, wire.KeyGrant{Schema: wire.KeyGrantSchema, PackageID: req.PackageID, Grant: grant})
}

// --- the runtime --------------------------------------------------------

// fakeRuntime loads the test packages' linear models. It counts open
// models so tests see leaks, and can fail loads.
type fakeRuntime struct {
	mu      sync.Mutex
	open    int
	loads   int
	loadErr error
}

type linearModel struct {
	rt     *fakeRuntime
	w      weights
	in     string
	out    string
	closed bool
}

func (r *fakeRuntime) Load(files map[string][]byte, meta ModelMeta) (Model, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loads++
	if r.loadErr != nil {
		return nil, r.loadErr
	}
	if meta.Runtime != "fake" {
		return nil, fmt.Errorf("runtime %q is not fake", meta.Runtime)
	}
	b, ok := files[meta.Model]
	if !ok {
		return nil, fmt.Errorf("no model file %s", meta.Model)
	}
	head, _, _ := bytes.Cut(b, []byte("\n"))
	var w weights
	if err := json.Unmarshal(head, &w); err != nil {
		return nil, err
	}
	r.open++
	return &linearModel{rt: r, w: w, in: meta.Inputs[0], out: meta.Outputs[0]}, nil
}

func (r *fakeRuntime) loadCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loads
}

func (r *fakeRuntime) openModels() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.open
}

func (m *linearModel) Backend() string { return "fake" }

func (m *linearModel) Inputs() []inference.TensorInfo {
	return []inference.TensorInfo{{Name: m.in, DataType: inference.FP32, Shape: []int64{1, 4}}}
}

func (m *linearModel) Outputs() []inference.TensorInfo {
	return []inference.TensorInfo{{Name: m.out, DataType: inference.FP32, Shape: []int64{1, 3}}}
}

func (m *linearModel) Infer(inputs map[string]inference.Tensor) (map[string]inference.Tensor, error) {
	x, ok := inputs[m.in]
	if !ok || len(x.Float32) != 4 {
		return nil, fmt.Errorf("want input %s of 4 values", m.in)
	}
	return map[string]inference.Tensor{m.out: {Shape: []int64{1, 3}, Float32: m.w.apply(x.Float32)}}, nil
}

func (m *linearModel) Close() error {
	m.rt.mu.Lock()
	defer m.rt.mu.Unlock()
	if m.closed {
		return errors.New("closed twice")
	}
	m.closed = true
	m.rt.open--
	return nil
}

// otherKeyFor opens grants of one version with another device's key.
type otherKeyFor struct{ version string }

func (o otherKeyFor) OpenGrant(pkg *tgsp.Package, grant []byte) (*tgsp.DEK, error) {
	k := keys.device
	if pkg.Manifest.Version == o.version {
		k = keys.other
	}
	return pkg.OpenGrant(grant, k)
}

func pemBody(b []byte) []byte {
	blk, _ := pem.Decode(b)
	return blk.Bytes
}

// --- policy -------------------------------------------------------------

type fakePolicy struct {
	mu     sync.Mutex
	deny   []string
	err    error
	inputs []PolicyInput
}

func (p *fakePolicy) Evaluate(_ context.Context, in PolicyInput) (bool, []string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inputs = append(p.inputs, in)
	return len(p.deny) == 0 && p.err == nil, p.deny, p.err
}

// --- the device ---------------------------------------------------------

// env is one device: its state directory (bbolt file and packages) and
// the control plane it talks to. Each proc is one agent process on it.
type env struct {
	t       *testing.T
	dir     string
	cp      *fakeCP
	client  *Client
	rt      *fakeRuntime
	runtime Runtime // replaces rt when set
	policy  Policy
	keys    KeyOpener
	verdict *wire.Verdict
	devType string

	progressInterval time.Duration

	mu      sync.Mutex
	markers [][]byte
	reports []wire.JobReport
	topics  []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), rt: &fakeRuntime{}, keys: RecipientKey{Key: keys.device}, devType: testDeviceType,
		progressInterval: time.Hour}
	var tlsCfg *tls.Config
	e.cp, tlsCfg = newFakeCP(t)
	var err error
	if e.client, err = NewClient(e.cp.srv.URL, tlsCfg); err != nil {
		t.Fatal(err)
	}
	e.client.StallTimeout = 5 * time.Second
	// Registered after TempDir, so it runs before the directory goes.
	t.Cleanup(e.assertNoPlaintext)
	return e
}

func (e *env) pkg(o pkgOpts) *testPackage {
	p := buildPackage(e.t, o)
	e.mu.Lock()
	e.markers = append(e.markers, p.marker)
	e.mu.Unlock()
	return p
}

// assertNoPlaintext scans every file under the state directory for the
// plaintext of every model the test packed.
func (e *env) assertNoPlaintext() {
	e.mu.Lock()
	markers := slices.Clone(e.markers)
	e.mu.Unlock()
	err := filepath.WalkDir(e.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i, m := range markers {
			for _, off := range []int{0, len(m) / 2, len(m) - 64} {
				if bytes.Contains(b, m[off:off+64]) {
					e.t.Errorf("plaintext of model %d found in %s", i, p)
				}
			}
		}
		return nil
	})
	if err != nil {
		e.t.Error(err)
	}
}

type proc struct {
	e      *env
	db     *state.DB
	in     *Installer
	cancel context.CancelFunc
	done   chan error
	boxOff context.CancelFunc
	boxRun chan error
	box    *outbox.Outbox
	ended  bool // Run returned (its result was taken)
	closed bool
}

// start opens the state and runs an installer (and the outbox drain) on it.
func (e *env) start(hook func(string) bool) *proc {
	e.t.Helper()
	db, err := state.Open(filepath.Join(e.dir, "agent.db"), state.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	box, err := outbox.Open(db, outbox.Config{Logger: testLogger(e.t), RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond})
	if err != nil {
		e.t.Fatal(err)
	}
	var rt Runtime = e.rt
	if e.runtime != nil {
		rt = e.runtime
	}
	in, err := New(Config{
		Store: db, Outbox: box, Client: e.client, PackageDir: filepath.Join(e.dir, "packages"),
		Facts: func() DeviceFacts {
			return DeviceFacts{DeviceID: testDevice, TenantID: testTenant, FleetID: "fl-test", DeviceType: e.devType,
				Labels: map[string]string{"site": "lab"}, TPMKind: "swtpm", AgentVersion: "test"}
		},
		Runtime: rt, Keys: e.keys, Policy: e.policy,
		Verdict:          func() *wire.Verdict { return e.verdict },
		DownloadAttempts: 4,
		Backoff:          presence.Backoff{Min: 5 * time.Millisecond, Max: 20 * time.Millisecond},
		ProgressInterval: e.progressInterval,
		RetryInterval:    50 * time.Millisecond,
		Logger:           testLogger(e.t),
		hook:             hook,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	p := &proc{e: e, db: db, in: in, box: box, done: make(chan error, 1), boxRun: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- in.Run(ctx) }()
	bctx, bcancel := context.WithCancel(context.Background())
	p.boxOff = bcancel
	go func() { p.boxRun <- box.Run(bctx, e) }()
	return p
}

// Publish collects reports (the outbox's publisher).
func (e *env) Publish(_ context.Context, topic string, _ byte, _ bool, payload []byte) error {
	var r wire.JobReport
	if err := json.Unmarshal(payload, &r); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reports = append(e.reports, r)
	e.topics = append(e.topics, topic)
	return nil
}

// stop ends the process cleanly: Run returns, the outbox drains. Stopping
// a stopped process does nothing.
func (p *proc) stop() {
	p.e.t.Helper()
	if p.closed {
		return
	}
	p.cancel()
	if !p.ended {
		p.ended = true
		if err := <-p.done; err != nil {
			p.e.t.Errorf("Run: %v", err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := p.box.Stats()
		if err != nil {
			p.e.t.Fatal(err)
		}
		if st.Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			p.e.t.Errorf("outbox did not drain: %+v", st)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.kill()
}

// kill ends the process as a SIGKILL would: no draining, the file closed
// as it is.
func (p *proc) kill() {
	if p.closed {
		return
	}
	p.closed = true
	p.cancel()
	if !p.ended {
		p.ended = true
		<-p.done
	}
	p.boxOff()
	<-p.boxRun
	if err := p.db.Close(); err != nil {
		p.e.t.Fatal(err)
	}
}

// waitCrash waits for Run to stop at the test checkpoint.
func (p *proc) waitCrash(point string) {
	p.e.t.Helper()
	select {
	case err := <-p.done:
		p.ended = true
		if !errors.Is(err, errCrash) {
			p.e.t.Fatalf("Run returned %v, want the crash at %s", err, point)
		}
	case <-time.After(30 * time.Second):
		p.e.t.Fatalf("checkpoint %s never reached", point)
	}
	p.kill()
}

// job reads a job record.
func (p *proc) job(id string) *jobRecord {
	var rec *jobRecord
	err := p.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketInstall) == nil { // Run has not created it yet
			return nil
		}
		var err error
		rec, err = getJob(tx, id)
		return err
	})
	if err != nil {
		p.e.t.Fatal(err)
	}
	return rec
}

// wait waits until job id is terminal and returns its record.
func (p *proc) wait(id string) *jobRecord {
	p.e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if rec := p.job(id); rec != nil && wire.JobTerminal(rec.State) && rec.Reported == rec.State {
			return rec
		}
		select {
		case err := <-p.done:
			p.ended = true
			p.e.t.Fatalf("Run ended before job %s finished: %v", id, err)
		default:
		}
		if time.Now().After(deadline) {
			p.e.t.Fatalf("job %s did not finish: %+v", id, p.job(id))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *proc) slots() slotPair {
	var s slotPair
	if err := p.db.View(func(tx *bolt.Tx) error {
		var err error
		s, err = getSlots(tx)
		return err
	}); err != nil {
		p.e.t.Fatal(err)
	}
	return s
}

func (p *proc) highest(name string) string {
	var h string
	_ = p.db.View(func(tx *bolt.Tx) error { h = getHighest(tx, name); return nil })
	return h
}

// serves asserts that the serving model is pkg's.
func (p *proc) serves(pkg *testPackage) {
	p.e.t.Helper()
	slot, ok := p.in.Active()
	if !ok {
		p.e.t.Fatalf("no model serving, want %s", pkg.ref.Version)
	}
	if slot.PackageID != pkg.ref.ID || slot.Version != pkg.ref.Version || !slot.Committed {
		p.e.t.Fatalf("serving %s %s (committed %v), want %s", slot.Version, slot.PackageID, slot.Committed, pkg.ref.Version)
	}
	out, err := p.infer(map[string]Tensor{"x": {Shape: []int64{1, 4}, Data: probe}})
	if err != nil {
		p.e.t.Fatal(err)
	}
	if want := pkg.w.apply(probe); !slices.Equal(out["y"].Data, want) {
		p.e.t.Fatalf("inference gave %v, want %v (model %s)", out["y"].Data, want, pkg.ref.Version)
	}
}

// infer runs the serving model on float inputs.
func (p *proc) infer(inputs map[string]Tensor) (map[string]Tensor, error) {
	var out map[string]Tensor
	err := p.in.WithServing(func(_ Slot, m Model) error {
		var err error
		out, err = runFloat(m, inputs)
		return err
	})
	return out, err
}

// waitActive waits until the serving slot has version.
func (p *proc) waitActive(version string) {
	p.e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s, ok := p.in.Active(); ok && s.Version == version {
			return
		}
		if time.Now().After(deadline) {
			s, _ := p.in.Active()
			p.e.t.Fatalf("serving %q, want %s", s.Version, version)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitServes waits until the serving model is pkg's (after a restart the
// active slot is loaded at the start of Run).
func (p *proc) waitServes(pkg *testPackage) {
	p.e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s, ok := p.in.Active(); ok && s.PackageID == pkg.ref.ID {
			p.serves(pkg)
			return
		}
		if time.Now().After(deadline) {
			p.serves(pkg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// reportsFor returns the reports of job id seen so far.
func (e *env) reportsFor(id string) []wire.JobReport {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []wire.JobReport
	for _, r := range e.reports {
		if r.JobID == id {
			out = append(out, r)
		}
	}
	return out
}

// packageFiles lists the package directory.
func (e *env) packageFiles() []string {
	ents, _ := os.ReadDir(filepath.Join(e.dir, "packages"))
	var out []string
	for _, en := range ents {
		out = append(out, en.Name())
	}
	return out
}

// install runs one install job to its end in a process of its own.
func (e *env) install(id string, pkg *testPackage) *jobRecord {
	e.t.Helper()
	e.cp.installJob(id, pkg)
	p := e.start(nil)
	defer p.stop()
	return p.wait(id)
}
