package controlplane

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/ca"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// mosquittoFixture is a data dir with one tenant, its store and CAs, and a
// writer for a mosquitto directory.
type mosquittoFixture struct {
	st    *store.Store
	auth  *ca.Authority
	w     *mosquittoWriter
	fleet store.Fleet
}

func newMosquittoFixture(t *testing.T) *mosquittoFixture {
	t.Helper()
	t.Setenv(EnvVarEnvironment, "")
	t.Setenv(EnvVarKeyMaster, "")
	t.Setenv(EnvVarDatabaseURL, "")
	ctx := context.Background()
	cfg := DefaultConfig(EnvDevelopment)
	cfg.DataDir = t.TempDir()
	cfg.DatabaseURL = ""
	cfg.KEK.File = ""
	cfg.Finish()
	cfg.MQTT.Mode = MQTTExternal
	cfg.MQTT.External.URL = "ssl://broker.example:18883"
	if _, err := Init(ctx, cfg, "acme"); err != nil {
		t.Fatal(err)
	}
	provider, err := openKEK(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	auth, err := ca.Open(ctx, ca.Options{Store: st, KEK: provider, DataDir: cfg.DataDir})
	if err != nil {
		t.Fatal(err)
	}
	w, err := newMosquittoWriter(cfg, st, auth, filepath.Join(t.TempDir(), "mosquitto"), "", time.Now)
	if err != nil {
		t.Fatal(err)
	}
	fleet, err := st.CreateFleet(ctx, "acme", store.Fleet{Name: "edge"})
	if err != nil {
		t.Fatal(err)
	}
	return &mosquittoFixture{st: st, auth: auth, w: w, fleet: fleet}
}

// enroll records a device with a certificate serial, as enrollment does.
func (f *mosquittoFixture) enroll(t *testing.T, serial string) string {
	t.Helper()
	ctx := context.Background()
	d, err := f.st.CreateDevice(ctx, "acme", store.Device{FleetID: f.fleet.ID, TPMKind: store.TPMNone})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := f.st.RecordCertificate(ctx, "acme", store.IssuedCert{Serial: serial, Tenant: "acme", DeviceID: d.ID,
		NotBefore: now, NotAfter: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	return d.ID
}

func (f *mosquittoFixture) read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(f.w.path(name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// crls parses crl.pem and returns, per issuer CN, the revoked serials.
func (f *mosquittoFixture) crls(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	rest := []byte(f.read(t, MosquittoCRLFile))
	roots := f.auth.Roots()
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		crl, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		verified := false
		for _, r := range roots {
			if crl.CheckSignatureFrom(r.Cert) == nil {
				verified = true
			}
		}
		if !verified {
			t.Fatalf("CRL of %s verifies under no root", crl.Issuer)
		}
		serials := []string{}
		for _, e := range crl.RevokedCertificateEntries {
			serials = append(serials, store.SerialString(e.SerialNumber))
		}
		out[crl.Issuer.CommonName] = serials
	}
	return out
}

func TestMosquittoSyncFiles(t *testing.T) {
	f := newMosquittoFixture(t)
	ctx := context.Background()
	var reloads atomic.Int64
	s := newMosquittoSyncer(f.w, func(context.Context) error { reloads.Add(1); return nil }, discardLogger())

	if err := s.syncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if reloads.Load() != 1 {
		t.Fatalf("first sync: %d reloads, want 1", reloads.Load())
	}
	for _, name := range []string{MosquittoConfFile, MosquittoCAFile, MosquittoCRLFile, MosquittoACLFile, MosquittoCertFile, MosquittoKeyFile} {
		fi, err := os.Stat(f.w.path(name))
		if err != nil {
			t.Fatal(err)
		}
		if secret := name == MosquittoKeyFile || name == MosquittoACLFile; secret && fi.Mode().Perm() != 0o640 {
			t.Errorf("%s has mode %v, want 0640", name, fi.Mode().Perm())
		}
	}
	conf := f.read(t, MosquittoConfFile)
	for _, want := range []string{"listener 18883\n", "crlfile " + f.w.path(MosquittoCRLFile), "acl_file " + f.w.path(MosquittoACLFile)} {
		if !strings.Contains(conf, want) {
			t.Errorf("mosquitto.conf lacks %q:\n%s", want, conf)
		}
	}
	// One CRL per CA, the platform's included: OpenSSL refuses a client
	// whose issuer has none.
	if got := f.crls(t); len(got) != 2 {
		t.Fatalf("CRLs %v, want the platform's and acme's", got)
	}
	certPEM := f.read(t, MosquittoCertFile)
	b, _ := pem.Decode([]byte(certPEM))
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil || leaf.VerifyHostname("broker.example") != nil {
		t.Fatalf("server certificate does not name the external URL's host: %v", err)
	}

	// Nothing changed: nothing written, no reload.
	crlBefore := f.read(t, MosquittoCRLFile)
	if err := s.syncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if reloads.Load() != 1 || f.read(t, MosquittoCRLFile) != crlBefore || f.read(t, MosquittoCertFile) != certPEM {
		t.Fatalf("an unchanged fleet rewrote files or reloaded (%d reloads)", reloads.Load())
	}

	// Enrollment: the device gets its ACL block.
	dev := f.enroll(t, "abc123")
	if err := s.syncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if acl := f.read(t, MosquittoACLFile); !strings.Contains(acl, "user "+dev+"\n") || reloads.Load() != 2 {
		t.Fatalf("after enrollment (%d reloads), ACL:\n%s", reloads.Load(), acl)
	}
	if f.read(t, MosquittoCRLFile) != crlBefore {
		t.Error("an enrollment re-signed the CRL")
	}

	// Revocation: the block goes, the serial enters the tenant's CRL.
	if _, err := f.st.RevokeDevice(ctx, "acme", dev); err != nil {
		t.Fatal(err)
	}
	if err := s.syncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if acl := f.read(t, MosquittoACLFile); strings.Contains(acl, dev) || reloads.Load() != 3 {
		t.Fatalf("after revocation (%d reloads), ACL:\n%s", reloads.Load(), acl)
	}
	var tenantSerials []string
	for cn, serials := range f.crls(t) {
		if strings.Contains(cn, "platform") {
			if len(serials) != 0 {
				t.Errorf("platform CRL lists %v", serials)
			}
			continue
		}
		tenantSerials = serials
	}
	if len(tenantSerials) != 1 || tenantSerials[0] != "abc123" {
		t.Fatalf("tenant CRL lists %v, want [abc123]", tenantSerials)
	}

	// A CRL due for refresh is re-signed even when nothing changed.
	f.w.now = func() time.Time { return time.Now().Add(ca.CRLRefresh + time.Minute) }
	if err := s.syncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if reloads.Load() != 4 {
		t.Fatalf("stale CRL not re-signed (%d reloads)", reloads.Load())
	}
}

// TestMosquittoSyncDebounce: a burst of requests is served by one sync and
// one reload, and every waiter is answered by it.
func TestMosquittoSyncDebounce(t *testing.T) {
	f := newMosquittoFixture(t)
	var reloads atomic.Int64
	s := newMosquittoSyncer(f.w, func(context.Context) error { reloads.Add(1); return nil }, discardLogger())
	s.quiet, s.maxDelay = 100*time.Millisecond, time.Second
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ready) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("first sync did not finish")
	}
	if reloads.Load() != 1 {
		t.Fatalf("startup: %d reloads", reloads.Load())
	}
	// Three enrollments, then their three sync requests as a burst (the
	// enrollments themselves are not timed: under load one can take longer
	// than the quiet window, which would rightly be a second reload).
	ids := make([]string, 3)
	for i := range ids {
		ids[i] = f.enroll(t, "f0"+strconv.Itoa(i))
	}
	errs := make(chan error, 3)
	for range ids {
		go func() { errs <- s.Sync(ctx) }()
	}
	for range ids {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if reloads.Load() != 2 {
		t.Fatalf("three enrollments caused %d reloads, want one", reloads.Load()-1)
	}
	acl := f.read(t, MosquittoACLFile)
	for _, id := range ids {
		if !strings.Contains(acl, "user "+id+"\n") {
			t.Errorf("ACL lacks %s", id)
		}
	}
}

func TestMosquittoReloader(t *testing.T) {
	dir := t.TempDir()
	t.Run("pid file", func(t *testing.T) {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		pidFile := filepath.Join(dir, "mosquitto.pid")
		r := mosquittoReloader{pidFile: pidFile}
		if err := r.reload(context.Background()); !errors.Is(err, errNotRunning) {
			t.Fatalf("no pid file: %v", err)
		}
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := r.reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		select {
		case <-hup:
		case <-time.After(5 * time.Second):
			t.Fatal("no SIGHUP")
		}
		if err := os.WriteFile(pidFile, []byte("garbage"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := r.reload(context.Background()); err == nil || !strings.Contains(err.Error(), "not a pid") {
			t.Fatalf("garbage pid file: %v", err)
		}
	})
	t.Run("command", func(t *testing.T) {
		marker := filepath.Join(dir, "reloaded")
		r := mosquittoReloader{command: []string{"sh", "-c", "echo reloaded >> " + marker}}
		if err := r.reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(marker); err != nil || string(b) != "reloaded\n" {
			t.Fatalf("command did not run: %q %v", b, err)
		}
		r = mosquittoReloader{command: []string{"sh", "-c", "echo nope >&2; exit 3"}}
		if err := r.reload(context.Background()); err == nil || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("failing command: %v", err)
		}
	})
}
