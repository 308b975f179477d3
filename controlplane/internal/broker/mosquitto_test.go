package broker

import (
	"bytes"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
)

// mosquittoBroker is a real mosquitto configured from MosquittoConfig.
type mosquittoBroker struct {
	cmd     *exec.Cmd
	dir     string
	aclPath string
	crlPath string
	log     *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func mosquittoPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"mosquitto", "/usr/sbin/mosquitto"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("mosquitto not installed: run hack/install-deps.sh (apt-get install mosquitto mosquitto-clients)")
	}
	t.Skip("mosquitto not installed (hack/install-deps.sh installs it)")
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startMosquitto renders the configuration for ids and runs mosquitto.
func startMosquitto(t *testing.T, ids []mqttacl.Identity) (*mosquittoBroker, *harness) {
	t.Helper()
	bin := mosquittoPath(t)
	ca := newTestCA(t)
	dir := t.TempDir()
	srvCert, _ := ca.server(t)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.cert.Raw)
	writePEM(t, filepath.Join(dir, "server.crt"), "CERTIFICATE", srvCert.Certificate[0])
	writeKey(t, filepath.Join(dir, "server.key"), srvCert.PrivateKey)
	m := &mosquittoBroker{dir: dir, aclPath: filepath.Join(dir, "acl"), crlPath: filepath.Join(dir, "crl.pem"), log: &lockedBuffer{}}
	m.writeCRL(t, ca)
	m.writeACL(t, ids)
	port := freePort(t)
	conf := MosquittoConfig(MosquittoOptions{
		Port:        port,
		BindAddress: "127.0.0.1",
		CAFile:      filepath.Join(dir, "ca.pem"),
		CertFile:    filepath.Join(dir, "server.crt"),
		KeyFile:     filepath.Join(dir, "server.key"),
		CRLFile:     m.crlPath,
		ACLFile:     m.aclPath,
	})
	// Test-only additions: log to stderr, and as root stay root so that
	// mosquitto can re-read the 0600 files in t.TempDir on SIGHUP.
	conf += "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
	if os.Geteuid() == 0 {
		conf += "user root\n"
	}
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	m.cmd = exec.Command(bin, "-c", confPath)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = m.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("mosquitto.conf:\n%s\nmosquitto log:\n%s", conf, m.log.String())
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("mosquitto exited:\n%s", m.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto not listening on %s:\n%s", addr, m.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return m, &harness{addr: addr, ca: ca, certs: map[mqttacl.Identity]tls.Certificate{}}
}

func (m *mosquittoBroker) writeACL(t *testing.T, ids []mqttacl.Identity) {
	t.Helper()
	acl, err := MosquittoACL(ids)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.aclPath, []byte(acl), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (m *mosquittoBroker) writeCRL(t *testing.T, ca *testCA) {
	t.Helper()
	if err := os.WriteFile(m.crlPath, ca.crlPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reload sends SIGHUP and waits until mosquitto has handled it.
func (m *mosquittoBroker) reload(t *testing.T) {
	t.Helper()
	before := strings.Count(m.log.String(), "Reloading config")
	if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(m.log.String(), "Reloading config") == before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
}

var conformanceIDs = []mqttacl.Identity{devA, devB, devC, opA, opG, cpID}

func TestMosquittoConformance(t *testing.T) {
	_, h := startMosquitto(t, conformanceIDs)
	runConformance(t, h)
}

// TestMosquittoRevocation: the control plane revokes by rewriting the CRL
// and the ACL (without the device) and sending SIGHUP. New connections are
// refused at TLS; the open connection can no longer publish or read.
func TestMosquittoRevocation(t *testing.T) {
	m, h := startMosquitto(t, conformanceIDs)
	cert, leaf := h.ca.issue(t, devA, "")
	rec, devRec := newRecorder(), newRecorder()
	oc := h.mustConnect(t, opA, clientOpts{})
	subscribeCode(t, oc, "tg/v1/acme/#", rec.handle)
	dc := h.mustConnect(t, devA, clientOpts{cert: &cert})
	subscribeCode(t, dc, mqttacl.CmdFilter("acme", "dev-aaaa"), devRec.handle)
	cp := h.mustConnect(t, cpID, clientOpts{})
	publish(t, dc, mqttacl.TelemetryTopic("acme", "dev-aaaa"), "before", false)
	rec.waitFor(t, "before")

	h.ca.revoke(leaf.SerialNumber)
	m.writeCRL(t, h.ca)
	var rest []mqttacl.Identity
	for _, id := range conformanceIDs {
		if id != devA {
			rest = append(rest, id)
		}
	}
	m.writeACL(t, rest)
	m.reload(t)

	if _, err := h.connect(t, devA, clientOpts{cert: &cert}); err == nil {
		t.Error("revoked device connected after reload")
	}
	if dc.IsConnectionOpen() {
		publish(t, dc, mqttacl.TelemetryTopic("acme", "dev-aaaa"), "after", false)
	}
	publish(t, cp, mqttacl.CmdTopic("acme", "dev-aaaa", "attest"), "cmd-after", false)
	publish(t, cp, mqttacl.RolloutEventsTopic("acme", "rol-1"), "sentinel", false)
	rec.waitFor(t, "sentinel")
	time.Sleep(300 * time.Millisecond)
	if rec.has("after") {
		t.Error("revoked device's publish was delivered")
	}
	if devRec.has("cmd-after") {
		t.Error("revoked device still reads its cmd/")
	}
}

func TestMosquittoACLRender(t *testing.T) {
	t.Parallel()
	got, err := MosquittoACL([]mqttacl.Identity{opA, devA, cpID, devA})
	if err != nil {
		t.Fatal(err)
	}
	want := `# TensorGuardFlow: generated by tg-controlplane; do not edit.
# 3 identities; anyone else has no access.

user controlplane
topic readwrite tg/v1/#

user dev-aaaa
topic read tg/v1/acme/devices/dev-aaaa/cmd/#
topic write tg/v1/acme/devices/dev-aaaa/attestation
topic write tg/v1/acme/devices/dev-aaaa/jobs/+
topic write tg/v1/acme/devices/dev-aaaa/status
topic write tg/v1/acme/devices/dev-aaaa/telemetry

user op-aaaa
topic read tg/v1/acme/#
`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if _, err := MosquittoACL([]mqttacl.Identity{devA, mqttacl.Device("globex", "dev-aaaa")}); err == nil {
		t.Error("two identities with one username rendered")
	}
	if _, err := MosquittoACL([]mqttacl.Identity{{Kind: "x"}}); err == nil {
		t.Error("invalid identity rendered")
	}
	conf := MosquittoConfig(MosquittoOptions{CAFile: "/c", CertFile: "/s", KeyFile: "/k", ACLFile: "/a"})
	for _, line := range []string{"listener 8883", "require_certificate true", "use_identity_as_username true", "allow_anonymous false", "acl_file /a"} {
		if !strings.Contains(conf, line+"\n") {
			t.Errorf("config lacks %q:\n%s", line, conf)
		}
	}
}
