package plancache_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/simulator"

	"github.com/tensorguard/tensorguardflow/agent/internal/plancache"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
)

// The simulator is a process-wide singleton (a second one blocks until the
// first is closed), so the tests that use it do not run in parallel, and
// close one before they open the next.

// openTPM opens the TPM simulator with a fixed seed: the same seed is the
// same TPM (as after a reboot), another seed another TPM.
func openTPM(t *testing.T, seed int64) *tpmdev.Device {
	t.Helper()
	sim, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		t.Fatal(err)
	}
	d := tpmdev.New(sim, tpmdev.KindSimulated)
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// testLog collects the cache's log lines.
type testLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *testLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *testLog) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

func open(t *testing.T, dir string, s plancache.Sealer, opts plancache.Options) *plancache.Cache {
	t.Helper()
	c, err := plancache.Open(dir, s, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return c
}

func randomPlan(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func testKey(i int) plancache.Key {
	return plancache.NewKey([]byte(fmt.Sprintf("model %d", i)), "10.3.0", "v1 workspace=0 fp16=false tf32=false", "Orin sm_87 cuda 12.6")
}

// entryFiles lists the entry files in dir.
func entryFiles(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		if strings.HasSuffix(de.Name(), ".plan") {
			out = append(out, de.Name())
		}
	}
	return out
}

// put stores plan under k and returns the name of k's entry file.
func put(t *testing.T, c *plancache.Cache, dir string, k plancache.Key, plan []byte) string {
	t.Helper()
	before := entryFiles(t, dir)
	if err := c.Put(k, plan); err != nil {
		t.Fatalf("Put: %v", err)
	}
	for _, f := range entryFiles(t, dir) {
		if !slices.Contains(before, f) {
			return f
		}
	}
	t.Fatal("Put wrote no new entry file")
	return ""
}

func mustGet(t *testing.T, c *plancache.Cache, k plancache.Key, want []byte) {
	t.Helper()
	got, err := c.Get(k)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get returned %d bytes that are not the plan", len(got))
	}
}

func wantMiss(t *testing.T, c *plancache.Cache, k plancache.Key, corrupt bool) {
	t.Helper()
	got, err := c.Get(k)
	if got != nil || !errors.Is(err, plancache.ErrMiss) || errors.Is(err, plancache.ErrCorrupt) != corrupt {
		t.Fatalf("Get = %d bytes, %v; want a miss (corrupt: %v)", len(got), err, corrupt)
	}
}

// TestRoundTrip: a plan put is the plan got, also after a restart of the
// agent and the TPM (the same simulator seed); files are 0600 in a 0700
// directory.
func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "plans")
	tpm := openTPM(t, 1)
	c := open(t, dir, tpm, plancache.Options{})
	plan := randomPlan(t, 100_000)
	k := testKey(1)
	wantMiss(t, c, k, false)
	put(t, c, dir, k, plan)
	mustGet(t, c, k, plan)
	if s := c.Stats(); s.Entries != 1 || s.Bytes != int64(len(plan))+36 || s.MaxBytes != plancache.DefaultMaxBytes {
		t.Errorf("Stats() = %+v", s)
	}

	// Replacing keeps one entry.
	plan2 := randomPlan(t, 5000)
	if err := c.Put(k, plan2); err != nil {
		t.Fatal(err)
	}
	mustGet(t, c, k, plan2)
	if s := c.Stats(); s.Entries != 1 || s.Bytes != int64(len(plan2))+36 {
		t.Errorf("Stats() after replacing = %+v", s)
	}

	_ = tpm.Close()
	tpm = openTPM(t, 1)
	c = open(t, dir, tpm, plancache.Options{})
	mustGet(t, c, k, plan2)
	if s := c.Stats(); s.Entries != 1 {
		t.Errorf("Stats() after reopening = %+v", s)
	}

	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", fi.Mode().Perm())
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		fi, err := de.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", de.Name(), fi.Mode().Perm())
		}
	}
	if len(des) != 2 {
		t.Errorf("the directory holds %d files, want the key and one entry", len(des))
	}

	if err := c.Remove(k); err != nil {
		t.Fatal(err)
	}
	wantMiss(t, c, k, false)
	if err := c.Remove(k); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

// TestKeyFields: a key that differs in any field is another entry.
func TestKeyFields(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir, openTPM(t, 1), plancache.Options{})
	model := []byte("the model")
	k := plancache.NewKey(model, "10.3.0", "v1 workspace=0 fp16=false tf32=false", "Orin sm_87 cuda 12.6")
	plan := randomPlan(t, 1000)
	put(t, c, dir, k, plan)
	for name, other := range map[string]plancache.Key{
		"model":         plancache.NewKey([]byte("the model!"), k.TensorRTVersion, k.BuildOptions, k.Device),
		"TensorRT":      plancache.NewKey(model, "10.3.1", k.BuildOptions, k.Device),
		"build options": plancache.NewKey(model, k.TensorRTVersion, "v1 workspace=0 fp16=true tf32=false", k.Device),
		"device":        plancache.NewKey(model, k.TensorRTVersion, k.BuildOptions, "Xavier sm_72 cuda 12.6"),
	} {
		t.Run(name, func(t *testing.T) { wantMiss(t, c, other, false) })
	}
	mustGet(t, c, k, plan)

	bad := plancache.Key{ModelSHA256: k.ModelSHA256, BuildOptions: k.BuildOptions, Device: k.Device}
	if _, err := c.Get(bad); !errors.Is(err, plancache.ErrInvalidKey) {
		t.Errorf("Get without a TensorRT version: %v", err)
	}
	if err := c.Put(bad, plan); !errors.Is(err, plancache.ErrInvalidKey) {
		t.Errorf("Put without a TensorRT version: %v", err)
	}
	if err := c.Put(k, nil); err == nil {
		t.Error("Put of an empty plan")
	}
}

// TestAnotherTPM: the cache key sealed by one TPM does not open on another
// (the disk moved to another device): Open logs that, drops every entry
// (a miss each, not a crash and no plaintext), and starts over with a new
// key, which works from then on.
func TestAnotherTPM(t *testing.T) {
	dir := t.TempDir()
	tpm := openTPM(t, 1)
	c := open(t, dir, tpm, plancache.Options{})
	plan := randomPlan(t, 4096)
	k := testKey(1)
	put(t, c, dir, k, plan)
	put(t, c, dir, testKey(2), plan)
	sealed, err := os.ReadFile(filepath.Join(dir, "key.sealed"))
	if err != nil {
		t.Fatal(err)
	}
	_ = tpm.Close()

	var log testLog
	tpm2 := openTPM(t, 2)
	c = open(t, dir, tpm2, plancache.Options{Logger: log.logger()})
	if !strings.Contains(log.String(), "the TPM refuses the sealed key") || !strings.Contains(log.String(), "entries_removed=2") {
		t.Errorf("log: %q", log.String())
	}
	wantMiss(t, c, k, false)
	if files := entryFiles(t, dir); len(files) != 0 {
		t.Errorf("entries left under a lost key: %v", files)
	}
	resealed, err := os.ReadFile(filepath.Join(dir, "key.sealed"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(sealed, resealed) {
		t.Error("the sealed key was not replaced")
	}
	put(t, c, dir, k, plan)
	mustGet(t, c, k, plan)

	// The first TPM cannot open the second one's key either.
	_ = tpm2.Close()
	log = testLog{}
	c = open(t, dir, openTPM(t, 1), plancache.Options{Logger: log.logger()})
	wantMiss(t, c, k, false)
	if !strings.Contains(log.String(), "the TPM refuses the sealed key") {
		t.Errorf("log: %q", log.String())
	}
}

// failingUnseal is the TPM with Unseal failing as a TPM that does not
// answer would.
type failingUnseal struct{ plancache.Sealer }

func (failingUnseal) Unseal(tpmdev.SealedBlob) ([]byte, error) {
	return nil, errors.New("tpm: connection refused")
}

// TestKeyUnavailable: a TPM that does not answer is an error, and the
// entries stay for when it does; a damaged key file, a missing one, and a
// missing TPM are handled as documented.
func TestKeyUnavailable(t *testing.T) {
	dir := t.TempDir()
	tpm := openTPM(t, 1)
	c := open(t, dir, tpm, plancache.Options{})
	plan := randomPlan(t, 2048)
	k := testKey(1)
	put(t, c, dir, k, plan)

	if _, err := plancache.Open(dir, failingUnseal{tpm}, plancache.Options{}); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Open with a TPM that does not answer: %v", err)
	}
	c = open(t, dir, tpm, plancache.Options{})
	mustGet(t, c, k, plan)

	if _, err := plancache.Open(t.TempDir(), nil, plancache.Options{}); !errors.Is(err, plancache.ErrNoSealer) {
		t.Errorf("Open without a TPM: %v", err)
	}
	if _, err := plancache.Open(t.TempDir(), tpm, plancache.Options{MaxBytes: -1}); err == nil {
		t.Error("Open with negative MaxBytes")
	}

	for i, tc := range []struct {
		name   string
		change func(path string) error
	}{
		{"damaged key file", func(path string) error { return os.WriteFile(path, []byte("TGSEAL1\x00garbage"), 0o600) }},
		{"missing key file", os.Remove},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := testKey(10 + i)
			c := open(t, dir, tpm, plancache.Options{})
			put(t, c, dir, k, plan)
			if err := tc.change(filepath.Join(dir, "key.sealed")); err != nil {
				t.Fatal(err)
			}
			var log testLog
			c = open(t, dir, tpm, plancache.Options{Logger: log.logger()})
			if !strings.Contains(log.String(), "plan cache key lost") {
				t.Errorf("log: %q", log.String())
			}
			wantMiss(t, c, k, false)
			if files := entryFiles(t, dir); len(files) != 0 {
				t.Errorf("entries left under a lost key: %v", files)
			}
			put(t, c, dir, k, plan)
			mustGet(t, c, k, plan)
		})
	}
}

// TestTampered: an entry changed in any way is a miss that says it was
// corrupt, is removed, and is a plain miss afterwards.
func TestTampered(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir, openTPM(t, 1), plancache.Options{})
	plan := randomPlan(t, 3000)
	k := testKey(1)
	for name, tamper := range map[string]func([]byte) []byte{
		"magic":       func(b []byte) []byte { b[0] ^= 1; return b },
		"version":     func(b []byte) []byte { b[7] = 9; return b },
		"nonce":       func(b []byte) []byte { b[10] ^= 0x80; return b },
		"ciphertext":  func(b []byte) []byte { b[len(b)/2] ^= 1; return b },
		"tag":         func(b []byte) []byte { b[len(b)-1] ^= 1; return b },
		"truncated":   func(b []byte) []byte { return b[:len(b)-1] },
		"cut to 10":   func(b []byte) []byte { return b[:10] },
		"appended":    func(b []byte) []byte { return append(b, 0) },
		"empty":       func([]byte) []byte { return nil },
		"the plan":    func([]byte) []byte { return plan }, // plaintext where ciphertext belongs
		"other entry": nil,                                 // filled in below
	} {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(dir, put(t, c, dir, k, plan))
			if tamper == nil {
				// Another entry of the same key: same length, other nonce.
				tamper = func([]byte) []byte {
					other, err := os.ReadFile(filepath.Join(dir, put(t, c, dir, testKey(99), plan)))
					if err != nil {
						t.Fatal(err)
					}
					other[len(other)-1] ^= 1
					return other
				}
			}
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, tamper(b), 0o600); err != nil {
				t.Fatal(err)
			}
			wantMiss(t, c, k, true)
			if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("corrupt entry still there: %v", err)
			}
			wantMiss(t, c, k, false)
		})
	}
	// And the cache still works.
	put(t, c, dir, k, plan)
	mustGet(t, c, k, plan)
}

// TestRenamedEntry: an entry file moved to another key's name does not
// open there (the key is authenticated with the entry).
func TestRenamedEntry(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir, openTPM(t, 1), plancache.Options{})
	k1, k2 := testKey(1), testKey(2)
	f1 := put(t, c, dir, k1, []byte("plan one: the weights of model 1"))
	f2 := put(t, c, dir, k2, []byte("plan two: the weights of model 2"))
	if err := os.Rename(filepath.Join(dir, f1), filepath.Join(dir, f2)); err != nil {
		t.Fatal(err)
	}
	wantMiss(t, c, k2, true)
	wantMiss(t, c, k1, false)
	if s := c.Stats(); s.Entries != 0 || s.Bytes != 0 {
		t.Errorf("Stats() = %+v, want empty", s)
	}
}

// TestEviction: the entries stay within MaxBytes, the least recently used
// go first, use counts Gets, and the order survives a restart (through the
// files' modification times).
func TestEviction(t *testing.T) {
	dir := t.TempDir()
	tpm := openTPM(t, 1)
	var mu sync.Mutex
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		clock = clock.Add(time.Minute)
		return clock
	}
	const planSize = 1000
	entrySize := int64(planSize + 36)
	opts := plancache.Options{MaxBytes: 3*entrySize + 10, Now: now}
	c := open(t, dir, tpm, opts)
	plans := map[int][]byte{}
	for i := 1; i <= 5; i++ {
		plans[i] = randomPlan(t, planSize)
	}
	for i := 1; i <= 3; i++ {
		put(t, c, dir, testKey(i), plans[i])
	}
	mustGet(t, c, testKey(1), plans[1]) // 2 is now the least recently used
	put(t, c, dir, testKey(4), plans[4])
	wantMiss(t, c, testKey(2), false)
	for _, i := range []int{1, 3, 4} {
		mustGet(t, c, testKey(i), plans[i])
	}
	if s := c.Stats(); s.Entries != 3 || s.Bytes != 3*entrySize {
		t.Errorf("Stats() = %+v", s)
	}
	if n := len(entryFiles(t, dir)); n != 3 {
		t.Errorf("%d entry files, want 3", n)
	}

	// Use order now: 1, 3, 4 (oldest first). Restart, touch 1, add 5: 3
	// goes.
	c = open(t, dir, tpm, opts)
	mustGet(t, c, testKey(1), plans[1])
	put(t, c, dir, testKey(5), plans[5])
	wantMiss(t, c, testKey(3), false)
	for _, i := range []int{1, 4, 5} {
		mustGet(t, c, testKey(i), plans[i])
	}

	// A smaller MaxBytes at the next start evicts down to it, oldest first
	// (use order: 1, 4, 5).
	small := opts
	small.MaxBytes = entrySize
	c = open(t, dir, tpm, small)
	if s := c.Stats(); s.Entries != 1 {
		t.Errorf("Stats() after shrinking = %+v", s)
	}
	mustGet(t, c, testKey(5), plans[5])

	// A plan that cannot fit is refused, and nothing is written or evicted.
	if err := c.Put(testKey(6), randomPlan(t, planSize+1)); !errors.Is(err, plancache.ErrTooLarge) {
		t.Errorf("Put of an oversized plan: %v", err)
	}
	mustGet(t, c, testKey(5), plans[5])
}

// TestLeftovers: Open removes files of writes a crash interrupted, and
// leaves files that are not its own alone.
func TestLeftovers(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{".tmp-12345": "half an entry", "README": "not ours"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	open(t, dir, openTPM(t, 1), plancache.Options{})
	if _, err := os.Stat(filepath.Join(dir, ".tmp-12345")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("leftover temporary file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "README")); err != nil {
		t.Errorf("a file not the cache's was touched: %v", err)
	}
}

// recordingSealer remembers what it sealed: the cache key in the clear,
// for TestNoPlaintext to look for.
type recordingSealer struct {
	plancache.Sealer
	mu     sync.Mutex
	sealed [][]byte
}

func (r *recordingSealer) Seal(data []byte) (tpmdev.SealedBlob, error) {
	r.mu.Lock()
	r.sealed = append(r.sealed, bytes.Clone(data))
	r.mu.Unlock()
	return r.Sealer.Seal(data)
}

// TestNoPlaintext: after plans went through the cache (put, got, evicted,
// replaced), no file under its directory holds any part of a plan or the
// cache key in the clear.
func TestNoPlaintext(t *testing.T) {
	dir := t.TempDir()
	rec := &recordingSealer{Sealer: openTPM(t, 1)}
	c := open(t, dir, rec, plancache.Options{MaxBytes: 3 * 20_036})
	var plans [][]byte
	for i := range 5 {
		// Recognizable text and random bytes, like weights next to names.
		p := append(bytes.Repeat([]byte(fmt.Sprintf("layer.%d.weight ", i)), 500), randomPlan(t, 20_000-500*len(fmt.Sprintf("layer.%d.weight ", i)))...)
		plans = append(plans, p)
		put(t, c, dir, testKey(i), p)
		mustGet(t, c, testKey(i), p)
	}
	if err := c.Put(testKey(4), plans[3]); err != nil {
		t.Fatal(err)
	}
	if len(rec.sealed) != 1 || len(rec.sealed[0]) != 32 {
		t.Fatalf("sealed %d secrets", len(rec.sealed))
	}
	secrets := [][]byte{rec.sealed[0], []byte("layer.")}
	for _, p := range plans {
		// Every 64-byte window start at 1 KiB steps: any stretch of a
		// plan written in the clear would contain one.
		for off := 0; off+64 <= len(p); off += 1024 {
			secrets = append(secrets, p[off:off+64])
		}
	}
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range secrets {
			if bytes.Contains(b, s) {
				return fmt.Errorf("%s holds plaintext (%q…)", d.Name(), s[:min(len(s), 16)])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files != 4 { // the key and three entries
		t.Errorf("%d files in the cache directory, want 4", files)
	}
}

// TestConcurrent runs Gets, Puts and Removes from several goroutines on a
// cache small enough to evict all the time (run it with -race): every Get
// returns its key's plan or a plain miss, never another plan or a corrupt
// entry.
func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	const keys, planSize = 6, 2000
	c := open(t, dir, openTPM(t, 1), plancache.Options{MaxBytes: 3 * (planSize + 36)})
	plans := make([][]byte, keys)
	for i := range plans {
		plans[i] = randomPlan(t, planSize)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	var hits, misses sync.Map
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := mrand.New(mrand.NewPCG(uint64(g), 1))
			for range 150 {
				i := r.IntN(keys)
				k := testKey(i)
				switch op := r.IntN(10); {
				case op < 5:
					got, err := c.Get(k)
					switch {
					case err == nil && !bytes.Equal(got, plans[i]):
						errs <- fmt.Errorf("Get(%d) returned another plan", i)
						return
					case err == nil:
						hits.Store(g, true)
					case errors.Is(err, plancache.ErrMiss) && !errors.Is(err, plancache.ErrCorrupt):
						misses.Store(g, true)
					default:
						errs <- fmt.Errorf("Get(%d): %w", i, err)
						return
					}
				case op < 9:
					if err := c.Put(k, plans[i]); err != nil {
						errs <- fmt.Errorf("Put(%d): %w", i, err)
						return
					}
				default:
					if err := c.Remove(k); err != nil {
						errs <- fmt.Errorf("Remove(%d): %w", i, err)
						return
					}
				}
				if s := c.Stats(); s.Bytes > s.MaxBytes {
					errs <- fmt.Errorf("Stats() = %+v, over the limit", s)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s := c.Stats()
	if files := entryFiles(t, dir); len(files) != s.Entries || s.Entries > 3 {
		t.Errorf("%d entry files, Stats() = %+v", len(files), s)
	}
	var nh, nm int
	hits.Range(func(any, any) bool { nh++; return true })
	misses.Range(func(any, any) bool { nm++; return true })
	if nh == 0 || nm == 0 {
		t.Errorf("the workload saw %d goroutines with hits and %d with misses; it tests nothing", nh, nm)
	}
}
