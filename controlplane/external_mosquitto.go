package controlplane

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/broker"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/ca"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
)

// Files of a managed mosquitto directory.
const (
	MosquittoConfFile       = "mosquitto.conf"
	MosquittoCAFile         = "ca.pem"
	MosquittoCRLFile        = "crl.pem"
	MosquittoACLFile        = "acl"
	MosquittoCertFile       = "server.crt"
	MosquittoKeyFile        = "server.key"
	MosquittoClientCertFile = "controlplane.crt"
	MosquittoClientKeyFile  = "controlplane.key"
)

// Timing of the mosquitto synchroniser.
const (
	// mosquittoQuiet is how long a burst of changes must pause before the
	// files are rewritten; mosquittoMaxDelay bounds the wait in a long
	// burst. Three agents enrolling at once cause one reload.
	mosquittoQuiet    = 250 * time.Millisecond
	mosquittoMaxDelay = time.Second
	// mosquittoResync re-renders everything periodically: changes made by
	// another replica or by `tg-controlplane init`, certificates expiring
	// out of the CRL, the CRL's own refresh, the server certificate's
	// renewal.
	mosquittoResync = 30 * time.Second
	// mosquittoRetry is the next attempt after a failed sync.
	mosquittoRetry = 5 * time.Second
	// mosquittoReloadTimeout bounds a reload command.
	mosquittoReloadTimeout = 30 * time.Second
	// mosquittoWait bounds how long a request (an enrollment, a
	// revocation) waits for its sync.
	mosquittoWait = 10 * time.Second
)

// mosquittoWriter renders the files an external mosquitto needs to enforce
// the embedded broker's rules, from the store and the CAs, and writes the
// ones whose content changed, each atomically (temporary file, fsync,
// rename) with the group mosquitto reads them as.
type mosquittoWriter struct {
	st        *store.Store
	ca        *ca.Authority
	dir       string
	options   broker.MosquittoOptions
	hostnames []string
	gid       int // -1: leave the group alone
	now       func() time.Time
}

// mosquittoListen returns the snippet's listener: the configured one, else
// the port of the external URL (else of the embedded listener) on every
// address.
func mosquittoListen(cfg Config) (bind string, port int) {
	if m := cfg.MQTT.External.Mosquitto; m != nil && m.Listen != "" {
		host, p, _ := net.SplitHostPort(m.Listen)
		n, _ := strconv.Atoi(p)
		return host, n
	}
	if h := externalHostPort(cfg.MQTT.External.URL); h != "" {
		_, p, _ := net.SplitHostPort(h)
		if n, err := strconv.Atoi(p); err == nil {
			return "", n
		}
	}
	return "", portOf(cfg.MQTT.Listen, 8883)
}

// externalHostPort is host:port of an ssl:// URL, or "".
func externalHostPort(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

// mosquittoGroup resolves the group that must read the files: the
// configured one (an error if absent), else "mosquitto" if it exists, else
// none (-1).
func mosquittoGroup(name string) (int, error) {
	explicit := name != ""
	if !explicit {
		name = "mosquitto"
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		if explicit {
			return -1, fmt.Errorf("mqtt.external.mosquitto.group: %w", err)
		}
		return -1, nil
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return -1, fmt.Errorf("group %s: gid %q", name, g.Gid)
	}
	return gid, nil
}

func newMosquittoWriter(cfg Config, st *store.Store, auth *ca.Authority, dir, group string, now func() time.Time) (*mosquittoWriter, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	gid, err := mosquittoGroup(group)
	if err != nil {
		return nil, err
	}
	bind, port := mosquittoListen(cfg)
	hostnames := slices.Clone(cfg.HTTP.Hostnames)
	if h := externalHostPort(cfg.MQTT.External.URL); h != "" {
		if host, _, err := net.SplitHostPort(h); err == nil && !slices.Contains(hostnames, host) {
			hostnames = append(hostnames, host)
		}
	}
	w := &mosquittoWriter{st: st, ca: auth, dir: abs, hostnames: hostnames, gid: gid, now: now}
	w.options = broker.MosquittoOptions{
		Port: port, BindAddress: bind,
		CAFile: w.path(MosquittoCAFile), CertFile: w.path(MosquittoCertFile), KeyFile: w.path(MosquittoKeyFile),
		CRLFile: w.path(MosquittoCRLFile), ACLFile: w.path(MosquittoACLFile),
	}
	return w, nil
}

func (w *mosquittoWriter) path(name string) string { return filepath.Join(w.dir, name) }

// mosquittoFile is one rendered file.
type mosquittoFile struct {
	name string
	data []byte
	mode os.FileMode
}

// render computes every file except the control plane's client identity.
func (w *mosquittoWriter) render(ctx context.Context) ([]mosquittoFile, error) {
	if err := w.ca.Refresh(ctx); err != nil {
		return nil, err
	}
	acl, err := w.renderACL(ctx)
	if err != nil {
		return nil, err
	}
	crl, err := w.renderCRL(ctx)
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := w.serverCert()
	if err != nil {
		return nil, err
	}
	return []mosquittoFile{
		{MosquittoCAFile, w.ca.AllRootsPEM(), 0o644},
		{MosquittoCRLFile, crl, 0o644},
		{MosquittoACLFile, []byte(acl), 0o640},
		{MosquittoCertFile, certPEM, 0o644},
		{MosquittoKeyFile, keyPEM, 0o640},
		{MosquittoConfFile, []byte(broker.MosquittoConfig(w.options)), 0o644},
	}, nil
}

// renderACL lists every enrolled device, enabled operator and the control
// plane; revoked and deleted devices and disabled operators get no block.
func (w *mosquittoWriter) renderACL(ctx context.Context) (string, error) {
	ids := []mqttacl.Identity{mqttacl.ControlPlane("")}
	for _, t := range w.ca.Tenants() {
		devs, err := w.st.ListDevices(ctx, t, store.DeviceFilter{Status: store.DeviceEnrolled})
		if err != nil {
			return "", fmt.Errorf("list devices of %s: %w", t, err)
		}
		for _, d := range devs {
			ids = append(ids, mqttacl.Device(t, d.ID))
		}
		ops, err := w.st.ListOperators(ctx, t)
		if err != nil {
			return "", fmt.Errorf("list operators of %s: %w", t, err)
		}
		for _, o := range ops {
			if !o.Disabled {
				ids = append(ids, mqttacl.Operator(t, o.ID))
			}
		}
	}
	return broker.MosquittoACL(ids)
}

// renderCRL returns one PEM CRL per root (platform first, then each
// tenant), concatenated: mosquitto's crlfile loads every CRL in the file,
// and with CRL checking on, OpenSSL refuses a client whose issuer has no
// CRL, so each CA that issues client certificates needs one — the platform
// CA's (it issues the control plane's certificate) is always empty. A CRL
// in the current file is kept while it lists exactly the revoked serials
// and is younger than ca.CRLRefresh, so an unchanged fleet renders
// byte-identically and causes no reload.
func (w *mosquittoWriter) renderCRL(ctx context.Context) ([]byte, error) {
	existing := readCRLs(w.path(MosquittoCRLFile))
	now := w.now()
	var out bytes.Buffer
	for _, root := range w.ca.Roots() {
		var want []string
		if root.Tenant != "" {
			var err error
			if want, err = w.ca.RevokedSerials(ctx, root.Tenant); err != nil {
				return nil, err
			}
		}
		if blk := findCRL(existing, root.Cert, want, now); blk != nil {
			out.Write(blk)
			continue
		}
		var l ca.RevocationList
		var err error
		if root.Tenant == "" {
			l, err = w.ca.PlatformCRL()
		} else {
			l, err = w.ca.TenantCRL(ctx, root.Tenant, want)
		}
		if err != nil {
			return nil, err
		}
		out.Write(l.PEM())
	}
	return out.Bytes(), nil
}

type pemCRL struct {
	crl *x509.RevocationList
	pem []byte
}

func readCRLs(path string) []pemCRL {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []pemCRL
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		if blk.Type != "X509 CRL" {
			continue
		}
		if crl, err := x509.ParseRevocationList(blk.Bytes); err == nil {
			out = append(out, pemCRL{crl: crl, pem: pem.EncodeToMemory(blk)})
		}
	}
}

func findCRL(crls []pemCRL, issuer *x509.Certificate, want []string, now time.Time) []byte {
	for _, c := range crls {
		if !ca.CRLStale(c.crl, issuer, want, now) {
			return c.pem
		}
	}
	return nil
}

// serverCert keeps the current server certificate while it chains to the
// platform CA, covers every hostname and is within two thirds of its
// lifetime; otherwise it issues a new one.
func (w *mosquittoWriter) serverCert() (certPEM, keyPEM []byte, err error) {
	certPEM, cerr := os.ReadFile(w.path(MosquittoCertFile))
	keyPEM, kerr := os.ReadFile(w.path(MosquittoKeyFile))
	if cerr == nil && kerr == nil && w.serverCertGood(certPEM) {
		return certPEM, keyPEM, nil
	}
	return w.ca.IssueServerCert(w.hostnames)
}

func (w *mosquittoWriter) serverCertGood(certPEM []byte) bool {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return false
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil || c.CheckSignatureFrom(w.ca.PlatformCA()) != nil {
		return false
	}
	if !w.now().Before(c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)) {
		return false
	}
	for _, h := range w.hostnames {
		if c.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

// write writes the files whose content, mode or group differ and returns
// their names.
func (w *mosquittoWriter) write(files []mosquittoFile) ([]string, error) {
	if err := w.ensureDir(); err != nil {
		return nil, err
	}
	var changed []string
	for _, f := range files {
		p := w.path(f.name)
		if w.upToDate(p, f) {
			continue
		}
		if err := writeFileAtomicGroup(p, f.data, f.mode, w.gid); err != nil {
			return changed, err
		}
		changed = append(changed, f.name)
	}
	return changed, nil
}

func (w *mosquittoWriter) upToDate(path string, f mosquittoFile) bool {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != f.mode {
		return false
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && w.gid >= 0 && int(st.Gid) != w.gid {
		return false
	}
	b, err := os.ReadFile(path)
	return err == nil && bytes.Equal(b, f.data)
}

// ensureDir creates the directory 0750 with the mosquitto group; an
// existing directory is left as it is.
func (w *mosquittoWriter) ensureDir() error {
	if _, err := os.Stat(w.dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(w.dir, 0o750); err != nil {
		return err
	}
	if w.gid >= 0 {
		if err := os.Chown(w.dir, -1, w.gid); err != nil {
			return fmt.Errorf("give %s to the mosquitto group: %w", w.dir, err)
		}
	}
	return os.Chmod(w.dir, 0o750)
}

// writeFileAtomicGroup writes data to path through a temporary file in the
// same directory that gets mode and group (gid -1: unchanged) before it is
// fsynced and renamed over path, so mosquitto never reads a partial file.
func writeFileAtomicGroup(path string, data []byte, mode os.FileMode, gid int) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	fail := func(err error) error {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if gid >= 0 {
		if err := tmp.Chown(-1, gid); err != nil {
			return fail(fmt.Errorf("give it to the mosquitto group (run as root or as a member of it): %w", err))
		}
	}
	if err := tmp.Chmod(mode); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp.Name(), path)
}

// mosquittoReloader reloads mosquitto: SIGHUP to the pid in its pid file,
// or a command.
type mosquittoReloader struct {
	pidFile string
	command []string
}

// errNotRunning: the pid file does not exist, so there is no mosquitto to
// reload; it reads the files when it starts.
var errNotRunning = errors.New("mosquitto is not running (no pid file)")

func (r mosquittoReloader) reload(ctx context.Context) error {
	if len(r.command) > 0 {
		ctx, cancel := context.WithTimeout(ctx, mosquittoReloadTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, r.command[0], r.command[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("reload command %q: %w: %s", strings.Join(r.command, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	b, err := os.ReadFile(r.pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return errNotRunning
	}
	if err != nil {
		return fmt.Errorf("mosquitto pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("mosquitto pid file %s: %q is not a pid", r.pidFile, strings.TrimSpace(string(b)))
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return errNotRunning
		}
		return fmt.Errorf("SIGHUP mosquitto (pid %d): %w", pid, err)
	}
	return nil
}

// mosquittoSyncer keeps a managed mosquitto's files current and reloads it
// after each change. Requests are coalesced: the first one starts a quiet
// period that further requests extend up to mosquittoMaxDelay, then one
// render, one write of the changed files and at most one reload serve them
// all. A request is answered by a sync that started after it was made, so a
// caller that committed a change and then waited knows mosquitto has been
// told about it.
type mosquittoSyncer struct {
	w      *mosquittoWriter
	reload func(context.Context) error
	log    *slog.Logger

	quiet, maxDelay, resync, retry time.Duration

	kick    chan struct{}
	mu      sync.Mutex
	pending *syncBatch

	reloads atomic.Int64 // successful reloads (tests)
}

type syncBatch struct {
	done chan struct{}
	err  error
}

func newMosquittoSyncer(w *mosquittoWriter, reload func(context.Context) error, log *slog.Logger) *mosquittoSyncer {
	return &mosquittoSyncer{
		w: w, reload: reload, log: log,
		quiet: mosquittoQuiet, maxDelay: mosquittoMaxDelay, resync: mosquittoResync, retry: mosquittoRetry,
		kick: make(chan struct{}, 1),
	}
}

// request asks for a sync and returns the batch that will answer it.
func (s *mosquittoSyncer) request() *syncBatch {
	s.mu.Lock()
	if s.pending == nil {
		s.pending = &syncBatch{done: make(chan struct{})}
	}
	b := s.pending
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return b
}

// Trigger asks for a sync without waiting.
func (s *mosquittoSyncer) Trigger() { s.request() }

// Sync asks for a sync and waits until mosquitto was told (or ctx ends).
func (s *mosquittoSyncer) Sync(ctx context.Context) error {
	b := s.request()
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run syncs at once — a failure there ends Run, since it means the
// directory, the group or the reload is misconfigured — then on requests
// and every resync interval until ctx ends, closing ready after the first
// sync. Later failures are logged and retried: the API and the devices
// already connected keep working meanwhile.
func (s *mosquittoSyncer) Run(ctx context.Context, ready chan<- struct{}) error {
	if err := s.syncOnce(ctx); err != nil {
		return fmt.Errorf("first sync of %s: %w", s.w.dir, err)
	}
	close(ready)
	resync := time.NewTimer(s.resync)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			s.fail(ctx.Err())
			return nil
		case <-resync.C:
			s.Trigger()
			continue
		case <-s.kick:
		}
		if !s.debounce(ctx) {
			s.fail(ctx.Err())
			return nil
		}
		s.mu.Lock()
		b := s.pending
		s.pending = nil
		s.mu.Unlock()
		if b == nil {
			continue
		}
		b.err = s.syncOnce(ctx)
		close(b.done)
		next := s.resync
		if b.err != nil && ctx.Err() == nil {
			s.log.Warn("mosquitto files not updated; retrying", "in", s.retry, "error", b.err)
			next = s.retry
		}
		resync.Reset(next)
	}
}

// debounce waits until no request came for s.quiet, or s.maxDelay passed.
func (s *mosquittoSyncer) debounce(ctx context.Context) bool {
	deadline := time.NewTimer(s.maxDelay)
	defer deadline.Stop()
	quiet := time.NewTimer(s.quiet)
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return true
		case <-quiet.C:
			return true
		case <-s.kick:
			quiet.Reset(s.quiet)
		}
	}
}

// fail answers a pending batch when Run ends.
func (s *mosquittoSyncer) fail(err error) {
	s.mu.Lock()
	b := s.pending
	s.pending = nil
	s.mu.Unlock()
	if b != nil {
		b.err = err
		close(b.done)
	}
}

func (s *mosquittoSyncer) syncOnce(ctx context.Context) error {
	files, err := s.w.render(ctx)
	if err != nil {
		return fmt.Errorf("render mosquitto files: %w", err)
	}
	changed, err := s.w.write(files)
	if err != nil {
		return err
	}
	if len(changed) == 0 {
		return nil
	}
	err = s.reload(ctx)
	switch {
	case errors.Is(err, errNotRunning):
		s.log.Warn("mosquitto files updated, but mosquitto is not running to reload them", "dir", s.w.dir, "changed", changed)
		return nil
	case err != nil:
		return err
	}
	s.reloads.Add(1)
	s.log.Info("mosquitto files updated and mosquitto reloaded", "dir", s.w.dir, "changed", changed)
	return nil
}

// MosquittoFiles are the files WriteMosquittoConfig writes.
type MosquittoFiles struct {
	Dir string `json:"dir"`
	// Config is the mosquitto.conf snippet (also written as mosquitto.conf).
	Config     string `json:"config"`
	ConfigFile string `json:"config_file"`
	// CAFile holds every tenant root and the platform root.
	CAFile string `json:"ca_file"`
	// CRLFile holds one CRL per CA in CAFile.
	CRLFile string `json:"crl_file"`
	// CertFile and KeyFile are the broker's server certificate and key.
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	// ACLFile holds one block per enrolled device, enabled operator and
	// the control plane.
	ACLFile string `json:"acl_file"`
	// ClientCertFile and ClientKeyFile are a control-plane client identity
	// for the external broker (for tools; serve issues its own).
	ClientCertFile string `json:"client_cert_file"`
	ClientKeyFile  string `json:"client_key_file"`
	// Managed says whether serve keeps these files current (dir is
	// mqtt.external.mosquitto.dir).
	Managed bool `json:"managed"`
}

// WriteMosquittoConfig writes what an external mosquitto needs to enforce
// the embedded broker's rules into dir and returns the paths and the
// mosquitto.conf snippet. With mqtt.external.mosquitto configured for the
// same dir, serve keeps the files current from then on; otherwise rerun it
// and reload mosquitto after devices enroll or are revoked.
func WriteMosquittoConfig(ctx context.Context, cfg Config, dir string) (MosquittoFiles, error) {
	cfg.Finish()
	if err := cfg.Validate(); err != nil {
		return MosquittoFiles{}, fmt.Errorf("config: %w", err)
	}
	provider, err := openKEK(cfg)
	if err != nil {
		return MosquittoFiles{}, err
	}
	st, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return MosquittoFiles{}, fmt.Errorf("open database: %w", err)
	}
	defer st.Close()
	auth, err := ca.Open(ctx, ca.Options{Store: st, KEK: provider, DataDir: cfg.DataDir})
	if err != nil {
		return MosquittoFiles{}, err
	}
	group := ""
	m := cfg.MQTT.External.Mosquitto
	if m != nil {
		group = m.Group
	}
	w, err := newMosquittoWriter(cfg, st, auth, dir, group, time.Now)
	if err != nil {
		return MosquittoFiles{}, err
	}
	files, err := w.render(ctx)
	if err != nil {
		return MosquittoFiles{}, err
	}
	cpCert, cpKey, err := auth.IssueControlPlaneCert("")
	if err != nil {
		return MosquittoFiles{}, err
	}
	if _, err := w.write(files); err != nil {
		return MosquittoFiles{}, err
	}
	// The control plane's key is not mosquitto's to read.
	if err := writeFileAtomicGroup(w.path(MosquittoClientCertFile), cpCert, 0o644, -1); err != nil {
		return MosquittoFiles{}, err
	}
	if err := writeFileAtomicGroup(w.path(MosquittoClientKeyFile), cpKey, 0o600, -1); err != nil {
		return MosquittoFiles{}, err
	}
	return MosquittoFiles{
		Dir: w.dir, Config: broker.MosquittoConfig(w.options), ConfigFile: w.path(MosquittoConfFile),
		CAFile: w.options.CAFile, CRLFile: w.options.CRLFile, CertFile: w.options.CertFile, KeyFile: w.options.KeyFile,
		ACLFile: w.options.ACLFile, ClientCertFile: w.path(MosquittoClientCertFile), ClientKeyFile: w.path(MosquittoClientKeyFile),
		Managed: m != nil && filepath.Clean(m.Dir) == w.dir,
	}, nil
}

// MosquittoInstructions explains, as mosquitto.conf comments, how to run
// mosquitto with the files and how to let serve keep them current.
func MosquittoInstructions(f MosquittoFiles) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, "# "+format+"\n", args...) }
	b.WriteString("\n")
	p("Files in %s are readable by group mosquitto (mosquitto 2 drops to that user).", f.Dir)
	p("Debian's mosquitto service (its mosquitto.conf has include_dir /etc/mosquitto/conf.d and")
	p("pid_file /run/mosquitto/mosquitto.pid):")
	p("  ln -s %s /etc/mosquitto/conf.d/tensorguard.conf && systemctl restart mosquitto", f.ConfigFile)
	p("Or on its own, with a main file that names the pid file and includes the snippet:")
	p("  printf 'pid_file /run/mosquitto/mosquitto.pid\\ninclude_dir %s\\n' > /etc/tg-mosquitto.conf", f.Dir)
	p("  mosquitto -c /etc/tg-mosquitto.conf")
	if f.Managed {
		p("tg-controlplane serve keeps ca.pem, crl.pem, acl and the server certificate current and reloads mosquitto.")
	} else {
		p("To keep ACL and CRL current on every enrollment and revocation, configure tg-controlplane serve with")
		p("  mqtt: {mode: external, external: {url: ssl://<host>:<port>,")
		p("         mosquitto: {dir: %s, pid_file: /run/mosquitto/mosquitto.pid}}}", f.Dir)
		p("otherwise rerun this command and reload mosquitto (systemctl reload mosquitto) after each change.")
	}
	return b.String()
}
