package integration

// The process harness of the fleet tests: TestMain builds tg-controlplane,
// tg-agent and tgctl once; each test runs them as real processes on
// loopback (the control plane with its embedded broker, agents with swtpm or
// the simulator TPM), keeps every process's output, prints it when the test
// fails, and ends with a clean SIGTERM shutdown whose exit code it checks.
//
// This file owns the package's TestMain; there must be no other.

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/testpg"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmdevtest"
)

// bins are the binaries TestMain built. faultAgent is tg-agent built with
// the faultinject tag (agent/internal/install/fault_on.go), for the tests
// that crash or fail devices on purpose; every other test runs the agent
// as shipped.
var bins struct {
	dir, agent, controlplane, tgctl, tgsp, faultAgent string
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tg-integration-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	faultDir := filepath.Join(dir, "faultinject")
	for _, args := range [][]string{
		{"build", "-o", dir + string(filepath.Separator),
			"./agent/cmd/tg-agent", "./controlplane/cmd/tg-controlplane", "./controlplane/cmd/tgctl", "./tgsp/cmd/tgsp"},
		{"build", "-tags", "faultinject", "-o", faultDir + string(filepath.Separator), "./agent/cmd/tg-agent"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: go %s: %v\n%s", strings.Join(args, " "), err, out)
			return 1
		}
	}
	bins.dir = dir
	bins.agent = filepath.Join(dir, "tg-agent")
	bins.controlplane = filepath.Join(dir, "tg-controlplane")
	bins.tgctl = filepath.Join(dir, "tgctl")
	bins.tgsp = filepath.Join(dir, "tgsp")
	bins.faultAgent = filepath.Join(faultDir, "tg-agent")
	code := m.Run()
	testpg.Stop()
	return code
}

// testEnv is the environment of every process the harness starts: nothing
// of the developer's TG_* settings or systemd's sockets leaks in.
func testEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "TG_") || k == "DATABASE_URL" || k == "NOTIFY_SOCKET" || k == "WATCHDOG_USEC" ||
			k == "WATCHDOG_PID" || k == "XDG_CONFIG_HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// proc is one process the harness started. Its stdout and stderr are kept
// and printed if the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *lockedWriter
	done chan struct{}
	err  error // valid after done is closed
}

// procs registers a test's processes for the failure dump.
type procs struct {
	mu   sync.Mutex
	list []*proc
}

var testProcs sync.Map // *testing.T name → *procs

func registerProc(t *testing.T, p *proc) {
	v, loaded := testProcs.LoadOrStore(t.Name(), &procs{})
	ps := v.(*procs)
	if !loaded {
		t.Cleanup(func() {
			testProcs.Delete(t.Name())
			if !t.Failed() {
				return
			}
			ps.mu.Lock()
			defer ps.mu.Unlock()
			for _, p := range ps.list {
				t.Logf("===== output of %s (%s) =====\n%s", p.name, strings.Join(p.cmd.Args, " "), p.log)
			}
		})
	}
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
}

// startProc starts bin with args; the process is killed at cleanup if it
// still runs (a test that wants a clean stop calls stop first).
func startProc(t *testing.T, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), log: &lockedWriter{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.Env = env
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	registerProc(t, p)
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and requires exit status 0 within timeout.
func (p *proc) stop(t *testing.T, timeout time.Duration) {
	t.Helper()
	if p.exited() {
		t.Fatalf("%s had already exited before SIGTERM: %v", p.name, p.err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", p.name, err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("%s exited with %v after SIGTERM (want 0)", p.name, p.err)
		}
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s of SIGTERM", p.name, timeout)
	}
}

// kill sends SIGKILL and waits.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("SIGKILL %s: %v", p.name, err)
	}
	<-p.done
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process can take it before ours binds it: callers retry.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// eventually polls cond every 100ms until it returns nil or timeout passes,
// then fails with cond's last error.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// ---- control plane ----

// cpOptions configure a control-plane process.
type cpOptions struct {
	// ekRoots and ekIntermediates are PEM files (enrollment.ek_roots, …).
	ekRoots, ekIntermediates []string
	// databaseURL is DATABASE_URL; empty means SQLite in the data dir.
	databaseURL string
	// moreTenants are created with init next to "acme".
	moreTenants []string
}

// cpProc is a running tg-controlplane serve.
type cpProc struct {
	t       *testing.T
	proc    *proc
	dataDir string
	env     []string
	// baseURL is https://127.0.0.1:port, plainURL the same port in plain
	// HTTP (loopback, development).
	baseURL, plainURL string
	mqttAddr          string
	tenant            string
	adminKey          string
	caHash            string
	caPEM             []byte
	caPool            *x509.CertPool
	// keys holds the admin API key of every tenant init created.
	keys map[string]string
}

type initResult struct {
	Tenant string `json:"tenant"`
	APIKey string `json:"api_key"`
	CAHash string `json:"ca_hash"`
}

// startControlPlane runs `tg-controlplane init` for tenant acme (and
// opts.moreTenants) and then `serve` on free loopback ports, and waits for
// /readyz. The test must call shutdown at its end.
func startControlPlane(t *testing.T, opts cpOptions) *cpProc {
	t.Helper()
	dir := t.TempDir()
	cp := &cpProc{t: t, dataDir: filepath.Join(dir, "data"), tenant: "acme", keys: map[string]string{}}
	var env []string
	if opts.databaseURL != "" {
		env = append(env, "DATABASE_URL="+opts.databaseURL)
	}
	cp.env = testEnv(env...)
	for _, tenant := range append([]string{"acme"}, opts.moreTenants...) {
		cmd := exec.Command(bins.controlplane, "init", "--tenant", tenant, "--data-dir", cp.dataDir, "-o", "json")
		cmd.Env = cp.env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tg-controlplane init --tenant %s: %v\n%s", tenant, err, stderr.String())
		}
		var res initResult
		if err := json.Unmarshal(out, &res); err != nil || res.APIKey == "" {
			t.Fatalf("tg-controlplane init -o json: %v\n%s", err, out)
		}
		cp.keys[tenant] = res.APIKey
		if tenant == "acme" {
			cp.adminKey, cp.caHash = res.APIKey, res.CAHash
		}
	}
	list := func(files []string) string {
		q := make([]string, len(files))
		for i, f := range files {
			q[i] = strconv.Quote(f)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	var lastLog string
	for attempt := 0; attempt < 5; attempt++ {
		httpAddr := "127.0.0.1:" + freePort(t)
		mqttAddr := "127.0.0.1:" + freePort(t)
		config := filepath.Join(dir, "controlplane.yaml")
		writeFile(t, config, fmt.Sprintf(`version: 1
http: {listen: %q}
mqtt: {listen: %q, public_url: "mqtts://%s"}
enrollment:
  ek_roots: %s
  ek_intermediates: %s
shutdown_timeout: 10s
log: {level: debug}
`, httpAddr, mqttAddr, mqttAddr, list(opts.ekRoots), list(opts.ekIntermediates)))
		p := startProc(t, "tg-controlplane", cp.env, bins.controlplane, "serve", "--config", config, "--data-dir", cp.dataDir)
		if err := waitReady("http://"+httpAddr, p); err != nil {
			lastLog = p.log.String()
			if p.exited() && strings.Contains(lastLog, "address already in use") {
				continue // a port was taken between freePort and bind
			}
			t.Fatalf("control plane not ready: %v\n%s", err, lastLog)
		}
		cp.proc = p
		cp.baseURL, cp.plainURL, cp.mqttAddr = "https://"+httpAddr, "http://"+httpAddr, mqttAddr
		break
	}
	if cp.proc == nil {
		t.Fatalf("control plane did not start after 5 port picks:\n%s", lastLog)
	}
	// The platform CA, checked against the pin init printed.
	var ca client.CAInfo
	cp.tgctlJSON(&ca, "ca", "show")
	if ca.CAHash != cp.caHash {
		t.Fatalf("GET /api/v1/ca says ca_hash %s, init said %s", ca.CAHash, cp.caHash)
	}
	cp.caPEM = []byte(ca.PlatformCAPEM)
	cp.caPool = x509.NewCertPool()
	if !cp.caPool.AppendCertsFromPEM(cp.caPEM) {
		t.Fatalf("no platform CA in %q", ca.PlatformCAPEM)
	}
	return cp
}

func waitReady(plainURL string, p *proc) error {
	deadline := time.Now().Add(30 * time.Second)
	c := &http.Client{Timeout: time.Second}
	var lastErr error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("exited: %v", p.err)
		}
		resp, err := c.Get(plainURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("readyz: %s", resp.Status)
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready within 30s: %v", lastErr)
}

// shutdown stops the control plane with SIGTERM: exit 0 within 20s.
func (cp *cpProc) shutdown() {
	cp.t.Helper()
	cp.proc.stop(cp.t, 20*time.Second)
}

// tgctlAs runs tgctl against the control plane over HTTPS (pinned to the
// CA hash) with key and returns stdout, stderr and the exit code.
func (cp *cpProc) tgctlAs(key string, args ...string) (stdout, stderr string, code int) {
	cp.t.Helper()
	full := append([]string{"--server", cp.baseURL, "--ca-hash", cp.caHash, "--api-key", key}, args...)
	cmd := exec.Command(bins.tgctl, full...)
	cmd.Env = testEnv("XDG_CONFIG_HOME=" + cp.t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		cp.t.Fatalf("tgctl %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), code
}

// tgctl runs tgctl as the admin and fails the test unless it exits 0.
func (cp *cpProc) tgctl(args ...string) string {
	cp.t.Helper()
	out, errOut, code := cp.tgctlAs(cp.adminKey, args...)
	if code != 0 {
		cp.t.Fatalf("tgctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// tgctlJSON runs tgctl -o json as the admin and decodes its output into v.
func (cp *cpProc) tgctlJSON(v any, args ...string) {
	cp.t.Helper()
	cp.tgctlJSONAs(cp.adminKey, v, args...)
}

// tgctlJSONAs runs tgctl -o json with key, requires exit 0 and decodes its
// output into v.
func (cp *cpProc) tgctlJSONAs(key string, v any, args ...string) {
	cp.t.Helper()
	out, errOut, code := cp.tgctlAs(key, append(args, "-o", "json")...)
	if code != 0 {
		cp.t.Fatalf("tgctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		cp.t.Fatalf("tgctl %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// devices is `tgctl device list -o json`.
func (cp *cpProc) devices() []client.Device {
	cp.t.Helper()
	var devs []client.Device
	cp.tgctlJSON(&devs, "device", "list")
	return devs
}

// token creates an enrollment token for fleet and returns the secret and
// its id.
func (cp *cpProc) token(fleet string, extra ...string) (secret, id string) {
	cp.t.Helper()
	return cp.tokenAs(cp.adminKey, fleet, extra...)
}

// tokenAs creates an enrollment token with key (of any tenant).
func (cp *cpProc) tokenAs(key, fleet string, extra ...string) (secret, id string) {
	cp.t.Helper()
	var tok client.CreatedToken
	cp.tgctlJSONAs(key, &tok, append([]string{"token", "create", fleet}, extra...)...)
	if tok.Token == "" || tok.CAHash != cp.caHash {
		cp.t.Fatalf("token create: %+v", tok)
	}
	return tok.Token, tok.ID
}

// enrollDetails are the details of a device.enroll audit entry.
type enrollDetails struct {
	TPMKind        string `json:"tpm_kind"`
	EKCertVerified bool   `json:"ek_cert_verified"`
}

// enrollAudit returns the device.enroll entries of the audit chain by
// device id.
func (cp *cpProc) enrollAudit() map[string]enrollDetails {
	cp.t.Helper()
	var page struct {
		Entries []struct {
			Action  string          `json:"action"`
			Target  string          `json:"target"`
			Details json.RawMessage `json:"details"`
		} `json:"entries"`
	}
	cp.tgctlJSON(&page, "audit", "list", "--limit", "1000")
	out := map[string]enrollDetails{}
	for _, e := range page.Entries {
		if e.Action != "device.enroll" {
			continue
		}
		var d enrollDetails
		if err := json.Unmarshal(e.Details, &d); err != nil {
			cp.t.Fatalf("device.enroll details %s: %v", e.Details, err)
		}
		out[e.Target] = d
	}
	return out
}

// httpClient trusts the platform CA and presents cert, if any.
func (cp *cpProc) httpClient(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: cp.caPool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// ---- TPMs ----

// swtpmCA is a swtpm_localca certificate authority in a directory: every
// swtpm manufactured with it gets an EK certificate issued by its issuing
// CA, which its self-signed root signs.
type swtpmCA struct {
	dir                        string
	localcaConf, localcaOpts   string
	setupConf                  string
	rootFile, intermediateFile string
}

func newSWTPMCA(t *testing.T) *swtpmCA {
	t.Helper()
	tpmdevtest.RequireSWTPM(t)
	dir := t.TempDir()
	ca := &swtpmCA{
		dir:              filepath.Join(dir, "localca"),
		localcaConf:      filepath.Join(dir, "swtpm-localca.conf"),
		localcaOpts:      filepath.Join(dir, "swtpm-localca.options"),
		setupConf:        filepath.Join(dir, "swtpm_setup.conf"),
		rootFile:         filepath.Join(dir, "localca", "swtpm-localca-rootca-cert.pem"),
		intermediateFile: filepath.Join(dir, "localca", "issuercert.pem"),
	}
	writeFile(t, ca.localcaConf, fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", ca.dir))
	writeFile(t, ca.localcaOpts, "--platform-manufacturer TensorGuardFlow\n--platform-version 2.1\n--platform-model test\n")
	writeFile(t, ca.setupConf, fmt.Sprintf("create_certs_tool = swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
		ca.localcaConf, ca.localcaOpts))
	return ca
}

// swtpmProc is a manufactured swtpm serving its command port on loopback.
type swtpmProc struct {
	addr string
	proc *proc
}

// startSWTPM manufactures a TPM with ca (swtpm_setup --create-ek-cert; the
// CA is created on first use, so call it sequentially per CA) and starts
// `swtpm socket` on a free port. It is stopped at cleanup.
func startSWTPM(t *testing.T, ca *swtpmCA, name string) *swtpmProc {
	t.Helper()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", state, "--create-ek-cert", "--create-platform-cert",
		"--lock-nvram", "--config", ca.setupConf, "--logfile", filepath.Join(dir, "swtpm_setup.log"))
	cmd.Env = testEnv("XDG_CONFIG_HOME=" + dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		logf, _ := os.ReadFile(filepath.Join(dir, "swtpm_setup.log"))
		t.Fatalf("swtpm_setup: %v\n%s\n%s", err, out, logf)
	}
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(t)
		p := startProc(t, name, testEnv(), "swtpm", "socket", "--tpm2",
			"--tpmstate", "dir="+state,
			"--server", "type=tcp,bindaddr=127.0.0.1,port="+port,
			"--ctrl", "type=unixio,path="+filepath.Join(dir, "ctrl.sock"),
			"--flags", "not-need-init,startup-clear")
		addr := "127.0.0.1:" + port
		deadline := time.Now().Add(10 * time.Second)
		for !p.exited() && time.Now().Before(deadline) {
			// swtpm serves one client at a time; this probe leaves at once.
			if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
				_ = c.Close()
				s := &swtpmProc{addr: addr, proc: p}
				t.Cleanup(func() {
					if !p.exited() {
						_ = p.cmd.Process.Signal(syscall.SIGTERM)
						select {
						case <-p.done:
						case <-time.After(5 * time.Second):
						}
					}
				})
				return s
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !p.exited() {
			p.kill(t)
		}
	}
	t.Fatalf("swtpm did not start on a free port in 5 attempts")
	return nil
}

// ---- agents ----

// agentProcess is one device: its config, state and (when running) its
// tg-agent run process.
type agentProcess struct {
	t      *testing.T
	name   string
	config string
	state  string // the bbolt state file
	proc   *proc
	// bin is the tg-agent binary (empty: bins.agent) and env the extra
	// environment of the next start (e.g. TG_FAULT_* for bins.faultAgent).
	bin string
	env []string
}

// newAgent writes an agent config for cp with the token in a file and tpm
// as the YAML flow mapping of the tpm key (e.g. `{simulator: true,
// simulator_seed: 3}` or `{swtpm: "127.0.0.1:1234"}`).
func newAgent(t *testing.T, cp *cpProc, name, token, tpm string) *agentProcess {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, token+"\n")
	config := filepath.Join(dir, "agent.yaml")
	state := filepath.Join(dir, "state", "agent.db")
	writeFile(t, config, fmt.Sprintf(`version: 1
server_url: %s
ca_hash: %s
token_file: %s
state_path: %s
tpm: %s
mqtt: {url: "mqtts://%s", keepalive: 5s}
telemetry: {interval: 1s}
shutdown_timeout: 5s
log: {level: debug}
`, cp.baseURL, cp.caHash, tokenFile, state, tpm, cp.mqttAddr))
	return &agentProcess{t: t, name: name, config: config, state: state}
}

// start runs `tg-agent run`.
func (a *agentProcess) start() {
	a.t.Helper()
	a.proc = startProc(a.t, a.name, testEnv(a.env...), cmp.Or(a.bin, bins.agent), "run", "--config", a.config)
}

// status is `tg-agent status -o json`.
func (a *agentProcess) status() (agentStatus, error) {
	a.t.Helper()
	return readAgentStatus(a.t, bins.agent, a.config)
}

// waitConnected waits until the running agent reports an MQTT connection
// with a session number above minSession.
func (a *agentProcess) waitConnected(minSession uint64) agentStatus {
	a.t.Helper()
	var st agentStatus
	eventually(a.t, 60*time.Second, a.name+" connected", func() error {
		if a.proc.exited() {
			a.t.Fatalf("%s exited early: %v", a.name, a.proc.err)
		}
		var err error
		st, err = a.status()
		switch {
		case err != nil:
			return err
		case !st.Running || !st.Connected || st.Session <= minSession:
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	return st
}

// enroll runs `tg-agent enroll` and returns its combined output and exit
// code.
func (a *agentProcess) enroll() (string, int) {
	a.t.Helper()
	cmd := exec.Command(bins.agent, "enroll", "--config", a.config)
	cmd.Env = testEnv()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	a.t.Fatalf("tg-agent enroll: %v", err)
	return "", 0
}

// ---- MQTT ----

// mqttClient is a paho client over mTLS with a message log.
type mqttClient struct {
	c   paho.Client
	mu  sync.Mutex
	msg []paho.Message
}

// dialMQTT connects to addr with cert, trusting roots. The connection is
// closed at cleanup.
func dialMQTT(t *testing.T, addr string, roots *x509.CertPool, cert tls.Certificate, clientID string) (*mqttClient, error) {
	t.Helper()
	m := &mqttClient{}
	opts := paho.NewClientOptions().
		AddBroker("ssl://" + addr).
		SetClientID(clientID).
		SetTLSConfig(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetCleanSession(true).
		SetConnectTimeout(10 * time.Second).
		SetOrderMatters(false).
		SetDefaultPublishHandler(func(_ paho.Client, msg paho.Message) {
			m.mu.Lock()
			m.msg = append(m.msg, msg)
			m.mu.Unlock()
		})
	m.c = paho.NewClient(opts)
	tok := m.c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, errors.New("mqtt connect: timeout")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { m.c.Disconnect(100) })
	return m, nil
}

// subscribe subscribes to filter at QoS 1 and returns the granted QoS
// (0x80 is a refusal).
func (m *mqttClient) subscribe(t *testing.T, filter string) byte {
	t.Helper()
	tok := m.c.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("subscribe %s: timeout", filter)
	}
	if err := tok.Error(); err != nil {
		// paho reports a refused subscription as an error too.
		if res, ok := tok.(*paho.SubscribeToken).Result()[filter]; ok {
			return res
		}
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return tok.(*paho.SubscribeToken).Result()[filter]
}

// publish publishes at QoS 1 and waits for the broker's acknowledgement.
func (m *mqttClient) publish(t *testing.T, topic string, retained bool, payload []byte) error {
	t.Helper()
	tok := m.c.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(10 * time.Second) {
		return errors.New("publish: timeout")
	}
	return tok.Error()
}

// messages returns the messages received so far.
func (m *mqttClient) messages() []paho.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]paho.Message(nil), m.msg...)
}

// operatorMQTT gets operator MQTT credentials with `tgctl mqtt credentials`
// and connects with them.
func (cp *cpProc) operatorMQTT(clientID string) *mqttClient {
	cp.t.Helper()
	return cp.operatorMQTTAs(cp.adminKey, clientID)
}

// operatorMQTTAs is operatorMQTT with the API key of any tenant.
func (cp *cpProc) operatorMQTTAs(key, clientID string) *mqttClient {
	cp.t.Helper()
	dir := cp.t.TempDir()
	var creds struct {
		Tenant   string `json:"tenant"`
		CAFile   string `json:"ca_file"`
		CertFile string `json:"cert_file"`
		KeyFile  string `json:"key_file"`
	}
	cp.tgctlJSONAs(key, &creds, "mqtt", "credentials", "--out", dir)
	cert, err := tls.LoadX509KeyPair(creds.CertFile, creds.KeyFile)
	if err != nil {
		cp.t.Fatal(err)
	}
	caPEM, err := os.ReadFile(creds.CAFile)
	if err != nil {
		cp.t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		cp.t.Fatalf("no CA in %s", creds.CAFile)
	}
	m, err := dialMQTT(cp.t, cp.mqttAddr, roots, cert, clientID)
	if err != nil {
		cp.t.Fatalf("operator mqtt connect: %v", err)
	}
	return m
}
