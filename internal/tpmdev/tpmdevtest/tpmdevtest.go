package tpmdevtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
)

// Missing fails the test when CI=true and skips it otherwise, saying how to
// install what is missing.
func Missing(t testing.TB, what string) {
	t.Helper()
	msg := fmt.Sprintf("%s not found: run hack/install-deps.sh as root (it installs swtpm and swtpm-tools)", what)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// RequireSWTPM checks that swtpm, swtpm_setup and swtpm_localca are
// installed (see Missing).
func RequireSWTPM(t testing.TB) {
	t.Helper()
	for _, bin := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(bin); err != nil {
			Missing(t, bin)
		}
	}
}

// SWTPM is a manufactured swtpm (TPM 2.0) serving its command port on
// loopback TCP. Its state and its local CA live in the test's TempDir, so
// nothing is written under /var/lib/swtpm-localca.
type SWTPM struct {
	t        testing.TB
	dir      string
	stateDir string
	caDir    string

	mu   sync.Mutex
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

// StartSWTPM manufactures an swtpm (swtpm_setup --tpm2 --create-ek-cert
// --create-platform-cert --lock-nvram, with swtpm_localca's CA in a temp
// dir) and starts `swtpm socket`. The process is stopped at test cleanup.
func StartSWTPM(t testing.TB) *SWTPM {
	t.Helper()
	RequireSWTPM(t)
	dir := t.TempDir()
	s := &SWTPM{t: t, dir: dir, stateDir: filepath.Join(dir, "state"), caDir: filepath.Join(dir, "localca")}
	for _, d := range []string{s.stateDir, s.caDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	s.manufacture()
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *SWTPM) manufacture() {
	t := s.t
	t.Helper()
	localcaConf := filepath.Join(s.dir, "swtpm-localca.conf")
	localcaOpts := filepath.Join(s.dir, "swtpm-localca.options")
	setupConf := filepath.Join(s.dir, "swtpm_setup.conf")
	files := map[string]string{
		localcaConf: fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", s.caDir),
		localcaOpts: "--platform-manufacturer TensorGuardFlow\n--platform-version 2.1\n--platform-model test\n",
		setupConf: fmt.Sprintf("create_certs_tool = swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
			localcaConf, localcaOpts),
	}
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", s.stateDir,
		"--create-ek-cert", "--create-platform-cert", "--lock-nvram",
		"--config", setupConf, "--logfile", filepath.Join(s.dir, "swtpm_setup.log"))
	// swtpm_setup also reads per-user defaults under XDG_CONFIG_HOME; point
	// it at the temp dir so the developer's own files cannot leak in.
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+s.dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		logf, _ := os.ReadFile(filepath.Join(s.dir, "swtpm_setup.log"))
		t.Fatalf("swtpm_setup: %v\n%s\n%s", err, out, logf)
	}
}

func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *SWTPM) start() {
	t := s.t
	t.Helper()
	var lastErr error
	// swtpm needs a concrete port; another process can take the free port we
	// picked before swtpm binds it, so retry a few times.
	for range 5 {
		port, err := freeTCPPort()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("swtpm", "socket", "--tpm2",
			"--tpmstate", "dir="+s.stateDir,
			"--server", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(port),
			"--ctrl", "type=unixio,path="+filepath.Join(s.dir, "ctrl.sock"),
			"--flags", "not-need-init,startup-clear",
			"--log", "file="+filepath.Join(s.dir, "swtpm.log"))
		if err := cmd.Start(); err != nil {
			t.Fatalf("start swtpm: %v", err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = waitListening(addr, done); lastErr == nil {
			s.mu.Lock()
			s.cmd, s.addr, s.done = cmd, addr, done
			s.mu.Unlock()
			return
		}
		_ = cmd.Process.Kill()
		<-done
	}
	logf, _ := os.ReadFile(filepath.Join(s.dir, "swtpm.log"))
	t.Fatalf("swtpm did not start: %v\n%s", lastErr, logf)
}

func waitListening(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("swtpm exited")
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			// swtpm serves one client at a time; this probe disconnects at once.
			_ = c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no listener on %s", addr)
}

// Addr returns the command port address ("127.0.0.1:port"); it changes
// across Restart.
func (s *SWTPM) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Open connects a Device to the swtpm and closes it at test cleanup.
func (s *SWTPM) Open(t testing.TB) *tpmdev.Device {
	t.Helper()
	var d *tpmdev.Device
	var err error
	// The previous client's disconnect may not have been processed yet;
	// swtpm accepts one connection at a time.
	for range 50 {
		if d, err = tpmdev.OpenSWTPM(s.Addr()); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// Stop terminates swtpm (it keeps its state in the state directory).
func (s *SWTPM) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart stops swtpm and starts it again on the same state, as after a
// reboot of the machine.
func (s *SWTPM) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// EKRoots returns a pool with swtpm_localca's root CA
// (swtpm-localca-rootca-cert.pem).
func (s *SWTPM) EKRoots() *x509.CertPool {
	return s.pool("swtpm-localca-rootca-cert.pem")
}

// EKIntermediates returns a pool with swtpm_localca's issuing CA
// (issuercert.pem), which signs the EK certificates.
func (s *SWTPM) EKIntermediates() *x509.CertPool {
	return s.pool("issuercert.pem")
}

func (s *SWTPM) pool(name string) *x509.CertPool {
	s.t.Helper()
	b, err := os.ReadFile(filepath.Join(s.caDir, name))
	if err != nil {
		s.t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		s.t.Fatalf("no certificate in %s", name)
	}
	return p
}

// CA is a test TPM manufacturer: a self-signed root that issues EK
// certificates directly.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
}

// NewCA creates a CA named cn.
func NewCA(t testing.TB, cn string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"TensorGuardFlow test TPM manufacturer"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, key: key}
}

// Pool returns a pool holding only the CA's certificate.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Cert)
	return p
}

// PEM returns the CA certificate in PEM.
func (c *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
}

// TCG OIDs used in EK certificates.
var (
	oidSAN             = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidEKCertificate   = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
)

// IssueEK issues an EK certificate for pub in the shape the TCG EK
// Credential Profile prescribes and real manufacturers use: empty subject,
// a critical subjectAltName holding only a directoryName with the TPM
// manufacturer, model and firmware version, key usage keyEncipherment and
// the tcg-kp-EKCertificate extended key usage. Its signature has the type
// of tpmsim.IssueEKCert.
func (c *CA) IssueEK(pub crypto.PublicKey) ([]byte, error) {
	dirName, err := asn1.Marshal(pkix.RDNSequence{{
		{Type: oidTPMManufacturer, Value: "id:54474600"},
		{Type: oidTPMModel, Value: "tgf-simulator"},
		{Type: oidTPMVersion, Value: "id:00010002"},
	}})
	if err != nil {
		return nil, err
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dirName}})
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:       serial,
		NotBefore:          time.Now().Add(-time.Hour),
		NotAfter:           time.Now().Add(24 * time.Hour),
		KeyUsage:           x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{oidEKCertificate},
		ExtraExtensions:    []pkix.Extension{{Id: oidSAN, Critical: true, Value: san}},
	}
	return x509.CreateCertificate(rand.Reader, tmpl, c.Cert, pub, c.key)
}
