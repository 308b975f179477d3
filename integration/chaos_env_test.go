package integration

// The environment of the chaos tests (chaos_test.go): everything a fault is
// injected into runs as a real process or kernel object this file creates
// and removes again — a PostgreSQL server of its own (so it can be
// restarted without disturbing the package's shared one), a network
// namespace joined to the host by a veth pair (so one agent's network can
// be cut), and a small tmpfs (so one agent's state disk can be filled).
// All of it needs root.

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/testpg"
)

// chaosRequireRoot skips the test when not root outside CI, and fails it
// in CI: mounts and network namespaces need root.
func chaosRequireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const why = "the chaos tests need root (mount -t tmpfs, ip netns): run them as root, as CI does"
	if os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// run runs a command that must succeed (ip, mount, umount).
func chaosRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// ---- network namespace ----

// chaosNet is a network namespace joined to the host by a veth pair: the
// host end holds hostIP, the namespace end nsIP, on a /30 of their own.
// Processes on the host reach hostIP locally whatever the state of the
// link; a process in the namespace reaches it only over the link.
type chaosNet struct {
	ns             string
	hostIf, nsIf   string
	hostIP, nsIP   string
	cutAt, upAgain time.Time
}

func newChaosNet(t *testing.T) *chaosNet {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("ip not found: apt-get install iproute2")
	}
	id := os.Getpid() % 100000
	n := &chaosNet{
		ns:     fmt.Sprintf("tgchaos-%d", id),
		hostIf: fmt.Sprintf("tgc%dh", id),
		nsIf:   fmt.Sprintf("tgc%dn", id),
	}
	// A /30 in 10.234.0.0/16 that no interface of this machine uses.
	used := map[string]bool{}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			used[ipn.IP.Mask(net.CIDRMask(30, 32)).String()] = true
		}
	}
	for k := 0; k < 16384; k++ {
		b := (id + k) % 16384
		base := net.IPv4(10, 234, byte(b/64), byte(b%64*4))
		if !used[base.String()] {
			n.hostIP = net.IPv4(10, 234, byte(b/64), byte(b%64*4+1)).String()
			n.nsIP = net.IPv4(10, 234, byte(b/64), byte(b%64*4+2)).String()
			break
		}
	}
	chaosRun(t, "ip", "netns", "add", n.ns)
	t.Cleanup(func() {
		// Deleting the namespace deletes its veth end and so the pair.
		if out, err := exec.Command("ip", "netns", "del", n.ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", n.ns, err, out)
		}
		_ = exec.Command("ip", "link", "del", n.hostIf).Run() // gone already, normally
	})
	chaosRun(t, "ip", "link", "add", n.hostIf, "type", "veth", "peer", "name", n.nsIf)
	chaosRun(t, "ip", "link", "set", n.nsIf, "netns", n.ns)
	chaosRun(t, "ip", "addr", "add", n.hostIP+"/30", "dev", n.hostIf)
	chaosRun(t, "ip", "link", "set", n.hostIf, "up")
	chaosRun(t, "ip", "-n", n.ns, "addr", "add", n.nsIP+"/30", "dev", n.nsIf)
	chaosRun(t, "ip", "-n", n.ns, "link", "set", n.nsIf, "up")
	chaosRun(t, "ip", "-n", n.ns, "link", "set", "lo", "up")
	return n
}

// cut takes the namespace's end of the link down: its connections to the
// host stall and new ones fail (no route), while the host's own use of
// hostIP goes on.
func (n *chaosNet) cut(t *testing.T) {
	t.Helper()
	chaosRun(t, "ip", "-n", n.ns, "link", "set", n.nsIf, "down")
	n.cutAt = time.Now()
}

// restore brings the link up again.
func (n *chaosNet) restore(t *testing.T) {
	t.Helper()
	chaosRun(t, "ip", "-n", n.ns, "link", "set", n.nsIf, "up")
	n.upAgain = time.Now()
}

// reachable reports whether a TCP connection from inside the namespace to
// addr succeeds (bash's /dev/tcp, so no extra tool is needed).
func (n *chaosNet) reachable(addr string) bool {
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("ip", "netns", "exec", n.ns, "timeout", "2", "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%s", host, port))
	return cmd.Run() == nil
}

// ---- a small disk ----

// chaosTmpfs mounts a tmpfs of size bytes at dir (created) until the test
// ends. Register it before starting processes that use it: cleanups run
// last-in first-out, so they are gone before it is unmounted.
func chaosTmpfs(t *testing.T, dir string, size int64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	chaosRun(t, "mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tgchaos", dir)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
			_ = exec.Command("umount", "-l", dir).Run()
		}
	})
}

// freeBytes is the space left on the filesystem of path.
func freeBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// fillTo writes a file at path until no more than left bytes remain free on
// its filesystem and returns the bytes written.
func fillTo(t *testing.T, path string, left int64) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n int64
	buf := make([]byte, 4096)
	for freeBytes(t, path) > left {
		k, err := f.Write(buf)
		n += int64(k)
		if err != nil {
			t.Fatalf("fill %s: %v", path, err)
		}
	}
	return n
}

// ---- PostgreSQL ----

// ---- the control plane ----

// chaosFleet is a control plane on its own PostgreSQL (testpg.Own), with its mosquitto (external
// mode), listening on the host end of a chaosNet so that an agent inside
// the namespace reaches it too.
type chaosFleet struct {
	cp        *cpProc
	mosquitto *mqBroker
	pg        *testpg.Server
	net       *chaosNet
	config    string
}

func startChaosFleet(t *testing.T, pg *testpg.Server, n *chaosNet, interval time.Duration) *chaosFleet {
	t.Helper()
	mosqBin := mqRequire(t, "mosquitto")
	dir := t.TempDir()
	mqOpenDirs(t, dir)
	dataDir := filepath.Join(dir, "data")
	managed := filepath.Join(dir, "mosquitto")
	runDir := filepath.Join(dir, "run")
	persist := filepath.Join(dir, "persist")
	mqChownToMosquitto(t, runDir)
	mqChownToMosquitto(t, persist)
	env := testEnv("DATABASE_URL=" + pg.Database())

	cmd := exec.Command(bins.controlplane, "init", "--tenant", "acme", "--data-dir", dataDir, "-o", "json")
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var res initResult
	if err != nil || json.Unmarshal(out, &res) != nil || res.APIKey == "" {
		t.Fatalf("tg-controlplane init: %v\n%s%s", err, out, stderr.String())
	}
	f := &chaosFleet{pg: pg, net: n, config: filepath.Join(dir, "controlplane.yaml")}
	for attempt := 0; ; attempt++ {
		httpAddr := net.JoinHostPort(n.hostIP, freePort(t))
		mqttAddr := net.JoinHostPort(n.hostIP, freePort(t))
		writeFile(t, f.config, fmt.Sprintf(`version: 1
http: {listen: %q, hostnames: [%q]}
mqtt:
  mode: external
  external:
    url: "mqtts://%s"
    mosquitto:
      dir: %q
      listen: %q
      pid_file: %q
enrollment: {allow_ek_without_cert: true}
attestation: {interval: %s}
shutdown_timeout: 10s
log: {level: debug}
`, httpAddr, n.hostIP, mqttAddr, managed, mqttAddr, filepath.Join(runDir, "mosquitto.pid"), interval))
		cmd := exec.Command(bins.controlplane, "mosquitto-config", "--config", f.config, "--data-dir", dataDir, "--out", managed)
		cmd.Env = env
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if out, err := cmd.Output(); err != nil {
			t.Fatalf("tg-controlplane mosquitto-config: %v\n%s%s", err, out, stderr.String())
		}
		b, err := mqStartManaged(t, mosqBin, dir, runDir, persist, managed, mqttAddr)
		if err != nil {
			if attempt < 3 && strings.Contains(err.Error(), "in use") {
				continue
			}
			t.Fatal(err)
		}
		f.mosquitto = b
		f.cp = &cpProc{t: t, dataDir: dataDir, env: env, baseURL: "https://" + httpAddr,
			mqttAddr: mqttAddr, tenant: "acme", adminKey: res.APIKey, caHash: res.CAHash, keys: map[string]string{"acme": res.APIKey}}
		if err := f.serve(); err != nil {
			if attempt < 3 && strings.Contains(err.Error(), "address already in use") {
				b.proc.kill(t)
				continue
			}
			t.Fatal(err)
		}
		break
	}
	var ca client.CAInfo
	f.cp.tgctlJSON(&ca, "ca", "show")
	if ca.CAHash != f.cp.caHash {
		t.Fatalf("ca_hash %s, init said %s", ca.CAHash, f.cp.caHash)
	}
	f.cp.caPEM = []byte(ca.PlatformCAPEM)
	return f
}

// serve starts `tg-controlplane serve` and waits for /readyz over HTTPS
// (the listener is not on loopback, so there is no plain HTTP).
func (f *chaosFleet) serve() error {
	t := f.cp.t
	t.Helper()
	p := startProc(t, "tg-controlplane", f.cp.env, bins.controlplane, "serve", "--config", f.config, "--data-dir", f.cp.dataDir)
	deadline := time.Now().Add(30 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("control plane exited: %v\n%s", p.err, p.log)
		}
		lastErr = f.ready()
		if lastErr == nil {
			f.cp.proc = p
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("control plane not ready within 30s: %v\n%s", lastErr, p.log)
}

func (f *chaosFleet) ready() error {
	// Readiness only: tgctl checks the CA against the pin init printed.
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(f.cp.baseURL + "/readyz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}
