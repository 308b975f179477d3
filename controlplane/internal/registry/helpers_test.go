package registry

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/ca"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/kek"
	"github.com/tensorguard/tensorguardflow/internal/testpg"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

func TestMain(m *testing.M) { testpg.Main(m) }

var backends = []string{"sqlite", "postgres"}

// clock is a settable clock shared by the registry and its store.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is a registry over a real store, with local blobs in a temp dir and
// a keyring over an in-memory KEK; tenants acme and beta exist, each with
// its data key.
type env struct {
	t       *testing.T
	st      *store.Store
	reg     *Registry
	blobDir string
	clk     *clock
	keys    *kek.Keyring
	opts    Options
}

func newEnv(t *testing.T, backend string, tune ...func(*Options)) *env {
	t.Helper()
	ctx := context.Background()
	dsn := "sqlite://" + filepath.Join(t.TempDir(), "cp.db")
	if backend == "postgres" {
		dsn = testpg.Start(t)
	}
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	st, err := store.Open(ctx, dsn, store.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	provider, err := kek.NewMemoryProvider(bytes.Repeat([]byte{7}, kek.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	keys := ca.TenantKeyring(st, provider, clk.Now)
	for _, tenant := range []string{"acme", "beta"} {
		dek, err := keys.NewTenantKey(ctx, tenant, 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateTenant(ctx, store.Tenant{ID: tenant, WrappedDEK: dek}); err != nil {
			t.Fatal(err)
		}
	}
	blobDir := filepath.Join(t.TempDir(), "packages")
	blobs, err := NewLocalBlobs(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Store: st, Keys: keys, Blobs: blobs, StagingDir: blobs.StagingDir(), Now: clk.Now,
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, nil))}
	for _, f := range tune {
		f(&opts)
	}
	reg, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, st: st, reg: reg, blobDir: blobDir, clk: clk, keys: keys, opts: opts}
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// publisher pins a fresh signer key in tenant and returns it.
func (e *env) publisher(tenant, name string) *tgsp.SignerPrivateKey {
	e.t.Helper()
	k, err := tgsp.GenerateSigner(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.st.CreatePublisher(context.Background(), tenant, store.Publisher{
		Name: name, KeyID: k.Public().KeyID(), PublicKey: k.Public().Bytes(),
	}); err != nil {
		e.t.Fatal(err)
	}
	return k
}

func (e *env) recipient(tenant string) *tgsp.RecipientPublicKey {
	e.t.Helper()
	k, err := e.reg.RecipientPublicKey(context.Background(), tenant)
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

// modelDir writes a small model tree and returns its directory.
func modelDir(t *testing.T, seed string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "weights"), 0o755); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("weights of "+seed+" "), 20000) // > one 64 KiB chunk
	for name, data := range map[string][]byte{"model.onnx": []byte("onnx " + seed), "weights/w.bin": big} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// pack builds a package of dir and returns its bytes.
func pack(t *testing.T, dir string, opts tgsp.PackOptions) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := tgsp.Pack(&b, dir, opts); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// push pushes raw to tenant, recording how often record ran.
func (e *env) push(tenant string, raw []byte) (store.Package, bool, int, error) {
	e.t.Helper()
	n := 0
	p, created, err := e.reg.Push(context.Background(), tenant, bytes.NewReader(raw), func(*store.Tx, store.Package) error {
		n++
		return nil
	})
	return p, created, n, err
}

// stagingEmpty fails if an upload was left in the staging directory.
func (e *env) stagingEmpty() {
	e.t.Helper()
	entries, err := os.ReadDir(e.opts.StagingDir)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(entries) != 0 {
		e.t.Errorf("staging dir holds %d file(s) after the push", len(entries))
	}
}

// blobBytes reads tenant's blob id back through the blob store.
func (e *env) blobBytes(tenant, id string) ([]byte, error) {
	b, err := e.opts.Blobs.Open(context.Background(), tenant, id)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return io.ReadAll(io.NewSectionReader(b, 0, b.Size()))
}
