// Command tgspbench is the benchmark behind `make bench` (hack/bench.sh).
//
// It times the real tgsp binary (pack, verify and unpack of a random,
// incompressible payload, 1 GiB by default) and compares verify and unpack
// with baselines measured in the same run over the same number of 64 KiB
// chunks held in memory: SHA-256 alone (what verify must do per byte), and
// SHA-256 plus AES-256-GCM open (what unpack must do per byte), each on one
// core and on two. It prints a table and writes a one-line JSON summary.
//
// Being below a target is reported, never an error, because the machines
// this runs on are shared and noisy: the exit status is non-zero only when
// something actually failed (a command, a wrong unpacked byte, a full disk).
//
// The page cache cannot be dropped without root, so every measurement runs
// once to warm it and then BENCH_REPS times; the best run counts. Nothing is
// dirty when a timed run starts (the previous output is deleted and the
// filesystem synced, untimed).
//
// Peak RSS comes from GNU time (/usr/bin/time -f %M). The rusage of a child
// that os/exec reaped is no substitute: Go starts children with
// CLONE_VM|CLONE_VFORK, and the kernel folds the high-water mark of the mm a
// process had before execve, which is the parent's, into the child's
// ru_maxrss. Without GNU time it falls back to that rusage, and says so: the
// bench process's own peak is then a floor under every number.
//
// Environment: BENCH_SIZE_MB (payload MiB, default 1024), BENCH_REPS (timed
// runs after the warm-up, default 3), KEEP=1 (keep the work files).
package main

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tensorguard/tensorguardflow/tgsp"
)

const (
	mib = 1 << 20

	// targetRatio is the throughput verify and unpack should reach relative
	// to their in-memory baselines with the same number of cores.
	targetRatio = 0.8
	// targetRSSMiB bounds the peak RSS of every tgsp command.
	targetRSSMiB = 64
	// minSpeedup is the least 2-core/1-core speed-up of a baseline that
	// counts as a quiet machine (the baselines share nothing).
	minSpeedup = 1.7

	// bufferBytes is the plaintext the baselines keep in memory and cycle
	// over, so that they cover any payload size without allocating it.
	bufferBytes = 64 * mib
	// genBlock is the write size when generating the payload.
	genBlock = 4 * mib
	// readBlock is verify's read size (tgsp's hashBufSize).
	readBlock = 4 * tgsp.CipherChunkSize

	workerArg = "baseline-worker"
	gnuTime   = "/usr/bin/time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == workerArg {
		os.Exit(workerMain(os.Args[2:]))
	}
	os.Exit(benchMain(os.Args[1:]))
}

// --- configuration -----------------------------------------------------------

type config struct {
	bin     string // the tgsp binary under test
	dir     string // .bench
	sizeMiB int64  // payload plaintext
	files   int    // the payload is split into this many files
	reps    int    // timed runs after the warm-up
	keep    bool   // keep the work directory
}

func envInt(name string, def int) int {
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tgspbench: %s=%q is not an integer, using %d\n", name, v, def)
		return def
	}
	return n
}

func benchMain(args []string) int {
	var cfg config
	fs := flag.NewFlagSet("tgspbench", flag.ContinueOnError)
	fs.StringVar(&cfg.bin, "tgsp", "bin/tgsp", "tgsp binary to benchmark")
	fs.StringVar(&cfg.dir, "dir", ".bench", "output directory (summary tgsp.json; work files in tgsp-work/)")
	fs.Int64Var(&cfg.sizeMiB, "size-mb", int64(envInt("BENCH_SIZE_MB", 1024)), "payload size in MiB (env BENCH_SIZE_MB)")
	fs.IntVar(&cfg.files, "files", 4, "number of payload files (even, so half of them make the half-size payload)")
	fs.IntVar(&cfg.reps, "reps", envInt("BENCH_REPS", 3), "timed runs after one warm-up run (env BENCH_REPS)")
	fs.BoolVar(&cfg.keep, "keep", os.Getenv("KEEP") == "1", "keep the work files (env KEEP=1)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch {
	case cfg.sizeMiB < 2:
		fmt.Fprintln(os.Stderr, "tgspbench: size must be at least 2 MiB")
		return 2
	case cfg.files < 2 || cfg.files%2 != 0:
		fmt.Fprintln(os.Stderr, "tgspbench: files must be even and at least 2")
		return 2
	case cfg.reps < 1:
		fmt.Fprintln(os.Stderr, "tgspbench: reps must be at least 1")
		return 2
	}
	if err := run(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "tgspbench: %v\n", err)
		return 1
	}
	return 0
}

// --- the benchmark -----------------------------------------------------------

// sample is one run of something timed.
type sample struct {
	wall   time.Duration
	rssKiB int64 // peak RSS of the tgsp process; 0 for in-process baselines
	// Page-cache change across the run (/proc/meminfo), in KiB.
	dirtyKiB, cachedKiB int64
}

// result is a measurement: its timed samples (the warm-up is not among them).
type result struct {
	key     string // JSON key
	name    string
	par     string // "1 core", "2 workers", ...
	bytes   int64  // plaintext bytes the throughput is computed over
	samples []sample
	peakKiB int64 // the largest RSS seen, warm-up included
	note    string
}

func (r *result) best() sample {
	return slices.MinFunc(r.samples, func(a, b sample) int { return int(a.wall - b.wall) })
}

func (r *result) mibps() float64 { return float64(r.bytes) / mib / r.best().wall.Seconds() }

type bench struct {
	cfg      config
	self     string // this executable, for the baseline workers
	bin      string // absolute path of tgsp
	work     string
	in, half string // payload directories
	signer   string // key prefixes
	rcpt     string
	pkg      string // the full-size package
	halfPkg  string
	out      string // unpack output (same filesystem as everything else)
	rssFile  string
	timeOK   bool  // GNU time works
	floorKiB int64 // peak RSS reported for a trivial command
	full     int64 // payload bytes
	halfSize int64
	names    []string // payload file names
	sizes    []int64
	// 1-minute load average before and after, printed so that a reader can
	// tell a quiet run from a busy one.
	loadStart, loadEnd float64
}

func run(cfg config) (err error) {
	b := &bench{cfg: cfg}
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if b.bin, err = filepath.Abs(cfg.bin); err != nil {
		return err
	}
	if _, err := os.Stat(b.bin); err != nil {
		return fmt.Errorf("tgsp binary: %w (run make build first)", err)
	}
	b.work = filepath.Join(cfg.dir, "tgsp-work")
	b.in = filepath.Join(b.work, "in", "model")
	b.half = filepath.Join(b.work, "in", "model-half")
	b.signer = filepath.Join(b.work, "keys", "signer")
	b.rcpt = filepath.Join(b.work, "keys", "recipient")
	b.pkg = filepath.Join(b.work, "pkg", "model.tgsp")
	b.halfPkg = filepath.Join(b.work, "pkg", "model-half.tgsp")
	b.out = filepath.Join(b.work, "out")
	b.rssFile = filepath.Join(b.work, "rss.txt")
	b.full = cfg.sizeMiB * mib

	if err := os.RemoveAll(b.work); err != nil { // a KEEP=1 leftover
		return err
	}
	for _, d := range []string{b.in, b.half, filepath.Dir(b.signer), filepath.Dir(b.pkg)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	defer func() {
		if cfg.keep {
			fmt.Printf("KEEP=1: work files kept in %s\n", b.work)
			return
		}
		if rerr := os.RemoveAll(b.work); rerr != nil && err == nil {
			err = fmt.Errorf("clean up: %w", rerr)
		}
	}()
	if err := b.checkSpace(); err != nil {
		return err
	}
	b.probeTime()

	fmt.Printf("tgspbench: %d MiB payload in %d files, %d timed runs after 1 warm-up, in %s\n",
		cfg.sizeMiB, cfg.files, cfg.reps, b.work)
	b.loadStart = loadavg()
	if b.loadStart > 0.5 {
		fmt.Printf("tgspbench: load average %.2f before starting: other work is running, expect noisy numbers\n", b.loadStart)
	}
	start := time.Now()
	if err := b.setup(); err != nil {
		return err
	}
	var rs []*result
	add := func(r *result, err error) error {
		if err != nil {
			return err
		}
		rs = append(rs, r)
		return nil
	}

	// The baselines run before and after the tgsp runs and keep the best
	// of both rounds, so that a neighbour busy during one round does not
	// skew every ratio.
	baselines := func(round string) error {
		step("baselines, %s round (in memory, %d MiB buffer cycled)", round, bufferBytes/mib)
		i := 0
		for _, m := range []struct{ mode, key, name string }{
			{"open+sha", "baseline_open_sha", "baseline AES-256-GCM open + SHA-256"},
			{"sha", "baseline_sha", "baseline SHA-256"},
		} {
			for _, n := range []int{1, 2} {
				r, err := b.baseline(m.mode, n, fmt.Sprintf("%s_%dc", m.key, n), m.name, b.full, "")
				if err != nil {
					return err
				}
				if round == "first" {
					rs = append(rs, r)
				} else {
					rs[i].samples = append(rs[i].samples, r.samples...)
				}
				i++
			}
		}
		return nil
	}
	if err := baselines("first"); err != nil {
		return err
	}

	step("pack")
	if err := add(b.measure("pack", "pack", "tgsp pack", "1 thread", b.full,
		func() error { return rmSync(b.pkg) }, nil,
		"pack", "--signer-key", b.signer+".key", "--recipient", b.rcpt+".pub", "--out", b.pkg, b.in)); err != nil {
		return err
	}
	rs[len(rs)-1].note = "single-threaded; includes fsync of the package"

	step("verify")
	for _, w := range []int{1, 2} {
		if err := add(b.measure("verify", fmt.Sprintf("verify_w%d", w), "tgsp verify", workers(w), b.full, sync0, nil,
			"verify", "--trust", b.signer+".pub", "--workers", strconv.Itoa(w), b.pkg)); err != nil {
			return err
		}
	}

	step("unpack")
	for _, w := range []int{1, 2} {
		r, err := b.unpack(fmt.Sprintf("unpack_w%d", w), "tgsp unpack", w, b.pkg, b.full, b.names)
		if err := add(r, err); err != nil {
			return err
		}
	}

	step("half-size payload (%d MiB): pack once, unpack --workers 2", b.halfSize/mib)
	packHalf, err := b.once("pack_half", "tgsp pack (half payload)", "1 thread", b.halfSize,
		"pack", "--signer-key", b.signer+".key", "--recipient", b.rcpt+".pub", "--out", b.halfPkg, b.half)
	if err := add(packHalf, err); err != nil {
		return err
	}
	packHalf.note = "one run, for RSS"
	r, err := b.unpack("unpack_half_w2", "tgsp unpack (half payload)", 2, b.halfPkg, b.halfSize, b.names[:len(b.names)/2])
	if err := add(r, err); err != nil {
		return err
	}
	if err := rmSync(b.out); err != nil {
		return err
	}

	step("I/O reference points (1 process, no crypto)")
	if err := add(b.baseline("pread", 1, "io_pread_1", "read package, 256 KiB pread", b.full, b.pkg)); err != nil {
		return err
	}
	pw := filepath.Join(b.work, "pwrite")
	for _, m := range []struct {
		mode, key, note string
		n               int
	}{
		{"pwrite", "io_pwrite_1", "", 1},
		{"pwrite", "io_pwrite_2", "one file, 4 MiB shards alternating between threads, as unpack", 2},
		{"pwrite-own", "io_pwrite_own_2", "each thread its own file", 2},
	} {
		r, err := b.baseline(m.mode, m.n, m.key, "write to page cache, 64 KiB pwrite", b.full, pw)
		if err := add(r, err); err != nil {
			return err
		}
		r.note = m.note
	}

	if err := baselines("second"); err != nil {
		return err
	}
	b.loadEnd = loadavg()
	return b.report(rs, time.Since(start))
}

func workers(n int) string {
	if n == 1 {
		return "1 worker"
	}
	return fmt.Sprintf("%d workers", n)
}

func step(format string, args ...any) {
	fmt.Printf("  %s ... %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// checkSpace fails early rather than halfway through on a full disk: the
// payload, the packages, one unpacked tree and the pwrite file coexist.
func (b *bench) checkSpace() error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(b.work, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", b.work, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	need := b.full*9/2 + 256*mib
	if free < need {
		return fmt.Errorf("%s has %d MiB free, the benchmark needs about %d MiB (lower BENCH_SIZE_MB)", b.work, free/mib, need/mib)
	}
	return nil
}

// probeTime checks that GNU time works here and records what it reports for
// a trivial command, the floor under every RSS number.
func (b *bench) probeTime() {
	cmd := exec.Command(gnuTime, "-f", "%M", "-o", b.rssFile, "true")
	if err := cmd.Run(); err == nil {
		if kib, err := readRSSFile(b.rssFile); err == nil {
			b.timeOK, b.floorKiB = true, kib
			return
		}
	}
	cmd = exec.Command("true")
	if err := cmd.Run(); err == nil {
		b.floorKiB = maxrss(cmd)
	}
	fmt.Fprintf(os.Stderr, "tgspbench: %s -f %%M unusable (bash hack/install-deps.sh installs it); "+
		"peak RSS falls back to rusage, which includes this process's own peak (%d KiB)\n", gnuTime, b.floorKiB)
}

func (b *bench) rssMethod() string {
	if b.timeOK {
		return fmt.Sprintf("GNU time %%M (trivial command: %.1f MiB)", kibToMiB(b.floorKiB))
	}
	return fmt.Sprintf("os/exec rusage Maxrss, floored at this process's peak (%.1f MiB); install GNU time", kibToMiB(b.floorKiB))
}

func maxrss(cmd *exec.Cmd) int64 {
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return int64(ru.Maxrss) // KiB on Linux
	}
	return 0
}

func readRSSFile(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// GNU time prefixes "Command exited with non-zero status N" on failure;
	// the number is the last line.
	lines := strings.Fields(strings.TrimSpace(string(b)))
	if len(lines) == 0 {
		return 0, errors.New("empty GNU time output")
	}
	return strconv.ParseInt(lines[len(lines)-1], 10, 64)
}

// setup makes the keys and the payload: files of random bytes (all-zero
// chunks would be skipped by unpack as holes), and a half-size payload made
// of hard links to the first half of the files.
func (b *bench) setup() error {
	step("keys and %d MiB of random payload", b.cfg.sizeMiB)
	for _, k := range []struct{ kind, prefix string }{{"signer", b.signer}, {"recipient", b.rcpt}} {
		if _, err := b.tgsp("keygen", "--kind", k.kind, "--out", k.prefix); err != nil {
			return err
		}
	}
	var seed [32]byte
	crand.Read(seed[:])
	rng := rand.NewChaCha8(seed)
	buf := make([]byte, genBlock)
	per := b.full / int64(b.cfg.files)
	for i := range b.cfg.files {
		size := per
		if i == b.cfg.files-1 {
			size = b.full - per*int64(i)
		}
		name := fmt.Sprintf("weights-%03d.bin", i)
		b.names, b.sizes = append(b.names, name), append(b.sizes, size)
		if err := writeRandom(filepath.Join(b.in, name), size, rng, buf); err != nil {
			return err
		}
		if i < b.cfg.files/2 {
			if err := os.Link(filepath.Join(b.in, name), filepath.Join(b.half, name)); err != nil {
				return err
			}
			b.halfSize += size
		}
	}
	syscall.Sync() // write the payload back now, not during a timed run
	return nil
}

func writeRandom(path string, size int64, rng *rand.ChaCha8, buf []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		rng.Read(buf[:n]) // never fails
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return fmt.Errorf("write payload: %w", err)
		}
		left -= n
	}
	return f.Close()
}

// tgsp runs the binary once and returns its wall time and peak RSS.
func (b *bench) tgsp(args ...string) (sample, error) {
	var cmd *exec.Cmd
	if b.timeOK {
		cmd = exec.Command(gnuTime, append([]string{"-f", "%M", "-o", b.rssFile, b.bin}, args...)...)
	} else {
		cmd = exec.Command(b.bin, args...)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	m0 := readMeminfo()
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	m1 := readMeminfo()
	if err != nil {
		return sample{}, fmt.Errorf("tgsp %s: %v: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	s := sample{wall: wall, dirtyKiB: m1.dirty - m0.dirty, cachedKiB: m1.cached - m0.cached}
	if b.timeOK {
		if s.rssKiB, err = readRSSFile(b.rssFile); err != nil {
			return sample{}, fmt.Errorf("peak RSS of tgsp %s: %w", args[0], err)
		}
	} else {
		s.rssKiB = maxrss(cmd)
	}
	return s, nil
}

// measure runs tgsp once to warm the page cache, then cfg.reps timed times.
// prep runs (untimed) before every run; check after the warm-up.
func (b *bench) measure(op, key, name, par string, size int64, prep, check func() error, args ...string) (*result, error) {
	r := &result{key: key, name: name, par: par, bytes: size}
	for i := 0; i <= b.cfg.reps; i++ {
		if err := prep(); err != nil {
			return nil, err
		}
		s, err := b.tgsp(args...)
		if err != nil {
			return nil, err
		}
		r.peakKiB = max(r.peakKiB, s.rssKiB)
		if i == 0 {
			if check != nil {
				if err := check(); err != nil {
					return nil, fmt.Errorf("%s: %w", op, err)
				}
			}
			continue
		}
		r.samples = append(r.samples, s)
	}
	return r, nil
}

// once runs tgsp a single time, for what only needs its RSS.
func (b *bench) once(key, name, par string, size int64, args ...string) (*result, error) {
	s, err := b.tgsp(args...)
	if err != nil {
		return nil, err
	}
	return &result{key: key, name: name, par: par, bytes: size, samples: []sample{s}, peakKiB: s.rssKiB}, nil
}

func (b *bench) unpack(key, name string, w int, pkg string, size int64, names []string) (*result, error) {
	r, err := b.measure("unpack", key, name, workers(w), size,
		func() error { return rmSync(b.out) },
		func() error { return sameFiles(b.in, b.out, names) },
		"unpack", "--trust", b.signer+".pub", "--recipient-key", b.rcpt+".key", "--out", b.out,
		"--workers", strconv.Itoa(w), pkg)
	if err != nil {
		return nil, err
	}
	s := r.best()
	r.note = fmt.Sprintf("output to page cache, not fsynced: Cached %+.0f MiB, Dirty %+.0f MiB",
		kibToMiB(s.cachedKiB), kibToMiB(s.dirtyKiB))
	return r, nil
}

func sync0() error {
	syscall.Sync()
	return nil
}

// rmSync removes path and syncs, so a timed run starts with nothing dirty.
func rmSync(path string) error {
	if err := os.RemoveAll(path); err != nil {
		return err
	}
	syscall.Sync()
	return nil
}

// sameFiles checks that out holds exactly names, byte for byte as in in.
func sameFiles(in, out string, names []string) error {
	des, err := os.ReadDir(out)
	if err != nil {
		return err
	}
	var got []string
	for _, d := range des {
		got = append(got, d.Name())
	}
	if !slices.Equal(got, names) {
		return fmt.Errorf("unpacked %v, want %v", got, names)
	}
	a, c := make([]byte, genBlock), make([]byte, genBlock)
	for _, n := range names {
		if err := sameFile(filepath.Join(in, n), filepath.Join(out, n), a, c); err != nil {
			return err
		}
	}
	return nil
}

func sameFile(p1, p2 string, a, c []byte) error {
	f1, err := os.Open(p1)
	if err != nil {
		return err
	}
	defer f1.Close()
	f2, err := os.Open(p2)
	if err != nil {
		return err
	}
	defer f2.Close()
	for off := int64(0); ; off += int64(len(a)) {
		n1, err1 := io.ReadFull(f1, a)
		n2, err2 := io.ReadFull(f2, c)
		if n1 != n2 || !bytes.Equal(a[:n1], c[:n2]) {
			return fmt.Errorf("unpacked %s differs from the input near offset %d", p2, off)
		}
		if err1 == io.EOF || err1 == io.ErrUnexpectedEOF {
			if err2 != err1 {
				return fmt.Errorf("unpacked %s differs in length from the input", p2)
			}
			return nil
		}
		if err1 != nil {
			return err1
		}
		if err2 != nil {
			return err2
		}
	}
}

type meminfo struct{ dirty, cached int64 }

func readMeminfo() meminfo {
	var m meminfo
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fs[1], 10, 64)
		switch fs[0] {
		case "Dirty:":
			m.dirty = v
		case "Cached:":
			m.cached = v
		}
	}
	return m
}

// loadavg is the 1-minute load average, or -1 if unknown.
func loadavg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, err := strconv.ParseFloat(strings.Fields(string(b) + " x")[0], 64)
	if err != nil {
		return -1
	}
	return f
}

func kibToMiB(k int64) float64 { return float64(k) / 1024 }

// baseline runs a baseline worker process with GOMAXPROCS=n: a fresh
// process, so "1 core" really is one P, and this process stays small.
func (b *bench) baseline(mode string, n int, key, name string, size int64, file string) (*result, error) {
	cmd := exec.Command(b.self, workerArg, "-mode", mode, "-goroutines", strconv.Itoa(n),
		"-bytes", strconv.FormatInt(size, 10), "-reps", strconv.Itoa(b.cfg.reps), "-file", file)
	cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", n))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("baseline %s on %d cores: %w", mode, n, err)
	}
	var wr workerResult
	if err := json.Unmarshal(out, &wr); err != nil {
		return nil, fmt.Errorf("baseline %s: %w", mode, err)
	}
	r := &result{key: key, name: name, par: cores(n), bytes: size}
	for _, ns := range wr.SamplesNS {
		r.samples = append(r.samples, sample{wall: time.Duration(ns)})
	}
	if len(r.samples) == 0 {
		return nil, fmt.Errorf("baseline %s: no samples", mode)
	}
	return r, nil
}

func cores(n int) string {
	if n == 1 {
		return "1 core"
	}
	return fmt.Sprintf("%d cores", n)
}

// --- report ------------------------------------------------------------------

type jsonResult struct {
	Name       string    `json:"name"`
	Par        string    `json:"parallelism"`
	Bytes      int64     `json:"plaintext_bytes"`
	BestS      float64   `json:"best_s"`
	MiBps      float64   `json:"mib_per_s"`
	SamplesS   []float64 `json:"samples_s"`
	PeakRSSMiB float64   `json:"peak_rss_mib,omitempty"`
	DirtyMiB   *float64  `json:"page_cache_dirty_mib,omitempty"`
	CachedMiB  *float64  `json:"page_cache_cached_mib,omitempty"`
}

type jsonCheck struct {
	Value  float64 `json:"value"`
	Target float64 `json:"target,omitempty"`
	Status string  `json:"status,omitempty"`
}

type summary struct {
	Bench     string                `json:"bench"`
	Time      string                `json:"time"`
	Go        string                `json:"go"`
	CPU       string                `json:"cpu"`
	NumCPU    int                   `json:"num_cpu"`
	SizeBytes int64                 `json:"size_bytes"`
	Files     int                   `json:"files"`
	Reps      int                   `json:"reps"`
	RSSMethod string                `json:"rss_method"`
	ElapsedS  float64               `json:"elapsed_s"`
	LoadAvg   [2]float64            `json:"loadavg_1m_before_after"`
	Results   map[string]jsonResult `json:"results"`
	Checks    map[string]jsonCheck  `json:"checks"`
}

func (b *bench) report(rs []*result, elapsed time.Duration) error {
	by := map[string]*result{}
	for _, r := range rs {
		by[r.key] = r
	}
	ratio := func(lib, base string) float64 {
		return by[base].best().wall.Seconds() / by[lib].best().wall.Seconds()
	}
	status := func(ok bool, good, bad string) string {
		if ok {
			return good
		}
		return bad
	}
	checks := map[string]jsonCheck{}
	ratioCheck := func(key, lib, base string) jsonCheck {
		v := ratio(lib, base)
		c := jsonCheck{Value: round(v, 3), Target: targetRatio, Status: status(v >= targetRatio, "PASS", "BELOW")}
		checks[key] = c
		return c
	}
	unpack := ratioCheck("unpack_w2_vs_baseline_open_sha_2c", "unpack_w2", "baseline_open_sha_2c")
	verify := ratioCheck("verify_w2_vs_baseline_sha_2c", "verify_w2", "baseline_sha_2c")
	// Informational: the same ratios on one core show whether a shortfall is
	// per-byte overhead or poor scaling.
	u1, v1 := ratio("unpack_w1", "baseline_open_sha_1c"), ratio("verify_w1", "baseline_sha_1c")
	checks["unpack_w1_vs_baseline_open_sha_1c"] = jsonCheck{Value: round(u1, 3)}
	checks["verify_w1_vs_baseline_sha_1c"] = jsonCheck{Value: round(v1, 3)}
	// A model of the best unpack can do on 2 cores: the per-byte crypto, the
	// page-cache write of the output and the read of the package, each
	// measured on one core above, split perfectly over two. Its ratio to the
	// crypto baseline is the ceiling for unpack while it writes through the
	// page cache; unpack's ratio to it is how much is lost beyond that.
	model := (by["baseline_open_sha_1c"].best().wall + by["io_pwrite_1"].best().wall + by["io_pread_1"].best().wall) / 2
	ceiling := by["baseline_open_sha_2c"].best().wall.Seconds() / model.Seconds()
	vsModel := model.Seconds() / by["unpack_w2"].best().wall.Seconds()
	checks["model_unpack_2c_s"] = jsonCheck{Value: round(model.Seconds(), 4)}
	checks["model_unpack_2c_vs_baseline_open_sha_2c"] = jsonCheck{Value: round(ceiling, 3)}
	checks["unpack_w2_vs_model_unpack_2c"] = jsonCheck{Value: round(vsModel, 3)}
	for _, k := range []string{"pack", "verify_w1", "verify_w2", "unpack_w1", "unpack_w2", "unpack_half_w2"} {
		mb := kibToMiB(by[k].peakKiB)
		checks["peak_rss_mib_"+k] = jsonCheck{Value: round(mb, 1), Target: targetRSSMiB, Status: status(mb < targetRSSMiB, "PASS", "OVER")}
	}
	rssFull, rssHalf := kibToMiB(by["unpack_w2"].peakKiB), kibToMiB(by["unpack_half_w2"].peakKiB)
	// "The same" allows for allocator and scheduling jitter: 10% or 2 MiB.
	sameRSS := abs(rssFull-rssHalf) <= max(2, 0.1*rssFull)
	checks["unpack_rss_full_minus_half_mib"] = jsonCheck{Value: round(rssFull-rssHalf, 1), Status: status(sameRSS, "SIZE-INDEPENDENT", "DIFFERS")}

	// On an idle machine the 2-core baselines run close to twice as fast as
	// the 1-core ones; if not, a neighbour held a core and the ratios are
	// not to be trusted.
	noisy := false
	for _, k := range []string{"baseline_open_sha", "baseline_sha"} {
		sc := by[k+"_1c"].best().wall.Seconds() / by[k+"_2c"].best().wall.Seconds()
		checks[k+"_2c_speedup"] = jsonCheck{Value: round(sc, 3), Target: minSpeedup, Status: status(sc >= minSpeedup, "OK", "NOISY")}
		noisy = noisy || sc < minSpeedup
	}

	// Table.
	fmt.Printf("\nTGSP benchmark: %d MiB random payload in %d files; best of %d timed runs after 1 warm-up "+
		"(baselines: of 2 rounds, before and after); %s, %d CPUs, %s\n",
		b.full/mib, b.cfg.files, b.cfg.reps, cpuModel(), runtime.NumCPU(), runtime.Version())
	fmt.Printf("throughput = plaintext bytes / wall time (tgsp rows: whole process, via the real binary %s)\n\n", b.cfg.bin)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tparallelism\tbest\tMiB/s\tpeak RSS\tnote")
	for _, r := range rs {
		rss := "-"
		if r.peakKiB > 0 {
			rss = fmt.Sprintf("%.1f MiB", kibToMiB(r.peakKiB))
		}
		name := r.name
		if r.bytes != b.full {
			name = fmt.Sprintf("%s [%d MiB]", name, r.bytes/mib)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.3fs\t%.0f\t%s\t%s\n", name, r.par, r.best().wall.Seconds(), r.mibps(), rss, r.note)
	}
	tw.Flush()

	fmt.Println()
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "unpack --workers 2 / baseline open+SHA-256, 2 cores\t%.2f\ttarget ≥ %.2f\t%s\n", unpack.Value, targetRatio, unpack.Status)
	fmt.Fprintf(tw, "verify --workers 2 / baseline SHA-256, 2 cores\t%.2f\ttarget ≥ %.2f\t%s\n", verify.Value, targetRatio, verify.Status)
	fmt.Fprintf(tw, "unpack --workers 1 / baseline open+SHA-256, 1 core\t%.2f\t(scaling check)\t\n", u1)
	fmt.Fprintf(tw, "verify --workers 1 / baseline SHA-256, 1 core\t%.2f\t(scaling check)\t\n", v1)
	fmt.Fprintf(tw, "model: unpack on 2 cores = (open+SHA-256 + pwrite + pread, 1 core each) / 2\t%.3fs\t\t\n", model.Seconds())
	fmt.Fprintf(tw, "baseline open+SHA-256, 2 cores / model\t%.2f\t(ceiling for unpack via the page cache)\t\n", ceiling)
	fmt.Fprintf(tw, "unpack --workers 2 / model\t%.2f\t(1.00: nothing lost beyond the model)\t\n", vsModel)
	for _, k := range []string{"pack", "verify_w1", "verify_w2", "unpack_w1", "unpack_w2", "unpack_half_w2"} {
		c := checks["peak_rss_mib_"+k]
		fmt.Fprintf(tw, "peak RSS %s\t%.1f MiB\ttarget < %d MiB\t%s\n", k, c.Value, targetRSSMiB, c.Status)
	}
	fmt.Fprintf(tw, "peak RSS unpack %d MiB vs %d MiB payload\t%+.1f MiB\tsame within max(2 MiB, 10%%)\t%s\n",
		b.full/mib, b.halfSize/mib, rssFull-rssHalf, checks["unpack_rss_full_minus_half_mib"].Status)
	tw.Flush()
	if noisy {
		fmt.Printf("\nNOISY: a 2-core baseline ran less than %.1fx faster than on 1 core, so something else held a core; "+
			"the ratios above are unreliable, run again on a quieter machine\n", minSpeedup)
	}
	fmt.Printf("\npeak RSS method: %s\n", b.rssMethod())
	fmt.Printf("unpack output %s is on the same filesystem as the package; each unpack writes %d MiB into the page cache "+
		"(not fsynced: the CLI has no --sync), which the timed run does not wait to reach the disk\n", b.out, b.full/mib)
	fmt.Printf("elapsed %s; 1-minute load average %.2f before, %.2f after (the baselines need quiet cores too)\n",
		elapsed.Round(time.Second), b.loadStart, b.loadEnd)

	// JSON.
	sum := summary{
		Bench: "tgsp", Time: time.Now().UTC().Format(time.RFC3339), Go: runtime.Version(), CPU: cpuModel(),
		NumCPU: runtime.NumCPU(), SizeBytes: b.full, Files: b.cfg.files, Reps: b.cfg.reps,
		RSSMethod: b.rssMethod(), ElapsedS: round(elapsed.Seconds(), 1), LoadAvg: [2]float64{b.loadStart, b.loadEnd},
		Results: map[string]jsonResult{}, Checks: checks,
	}
	for _, r := range rs {
		best := r.best()
		jr := jsonResult{Name: r.name, Par: r.par, Bytes: r.bytes, BestS: round(best.wall.Seconds(), 4),
			MiBps: round(r.mibps(), 1), PeakRSSMiB: round(kibToMiB(r.peakKiB), 1)}
		for _, s := range r.samples {
			jr.SamplesS = append(jr.SamplesS, round(s.wall.Seconds(), 4))
		}
		if strings.HasPrefix(r.key, "unpack") {
			d, c := round(kibToMiB(best.dirtyKiB), 0), round(kibToMiB(best.cachedKiB), 0)
			jr.DirtyMiB, jr.CachedMiB = &d, &c
		}
		sum.Results[r.key] = jr
	}
	line, err := json.Marshal(sum)
	if err != nil {
		return err
	}
	path := filepath.Join(b.cfg.dir, "tgsp.json")
	if err := os.WriteFile(path, append(line, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("summary written to %s\n", path)
	return nil
}

func round(v float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	return float64(int64(v*p+0.5*sign(v))) / p
}

func sign(v float64) float64 {
	if v < 0 {
		return -1
	}
	return 1
}

func abs(v float64) float64 { return v * sign(v) }

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// --- baseline worker ---------------------------------------------------------

// workerResult is what a baseline worker prints: its timed samples.
type workerResult struct {
	SamplesNS []int64 `json:"samples_ns"`
}

// workerMain runs one baseline in this process (started with GOMAXPROCS set
// by the parent) and prints a workerResult.
func workerMain(args []string) int {
	fs := flag.NewFlagSet(workerArg, flag.ContinueOnError)
	mode := fs.String("mode", "", "open+sha, sha, pread, pwrite or pwrite-own")
	n := fs.Int("goroutines", 1, "goroutines sharing the work")
	size := fs.Int64("bytes", 0, "plaintext bytes to cover")
	reps := fs.Int("reps", 3, "timed runs after one warm-up")
	file := fs.String("file", "", "the file pread reads, or the directory pwrite writes in")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	samples, err := runWorker(*mode, *n, *size, *reps, *file)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tgspbench %s: %v\n", workerArg, err)
		return 1
	}
	wr := workerResult{}
	for _, d := range samples {
		wr.SamplesNS = append(wr.SamplesNS, int64(d))
	}
	if err := json.NewEncoder(os.Stdout).Encode(wr); err != nil {
		return 1
	}
	return 0
}

func runWorker(mode string, n int, size int64, reps int, file string) ([]time.Duration, error) {
	chunks := (size + tgsp.ChunkSize - 1) / tgsp.ChunkSize
	var pass func() error // one timed run
	var warm func() error // the warm-up; pass if nil
	switch mode {
	case "open+sha", "sha":
		ct, key := sealedBuffer()
		open := mode == "open+sha"
		bufChunks := int64(len(ct) / tgsp.CipherChunkSize)
		pass = func() error {
			return parallel(n, chunks, func(from, to int64) error { return cryptoRange(ct, key, from, to, open) })
		}
		// One pass over the buffer faults it in and wakes the cores.
		warm = func() error {
			return parallel(n, bufChunks, func(from, to int64) error { return cryptoRange(ct, key, from, to, open) })
		}
	case "pread":
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		blocks := (fi.Size() + readBlock - 1) / readBlock
		pass = func() error {
			return parallel(n, blocks, func(from, to int64) error {
				buf := make([]byte, readBlock)
				for i := from; i < to; i++ {
					if _, err := f.ReadAt(buf, i*readBlock); err != nil && err != io.EOF {
						return err
					}
				}
				return nil
			})
		}
	case "pwrite", "pwrite-own":
		pt := make([]byte, bufferBytes)
		var seed [32]byte
		crand.Read(seed[:])
		rand.NewChaCha8(seed).Read(pt)
		defer os.RemoveAll(file)
		own := mode == "pwrite-own"
		pass = func() error { return writeLikeUnpack(file, pt, size, n, own) }
	default:
		return nil, fmt.Errorf("unknown mode %q", mode)
	}
	if warm == nil {
		warm = pass
	}
	var out []time.Duration
	for i := 0; i <= reps; i++ {
		if strings.HasPrefix(mode, "pwrite") {
			if err := rmSync(file); err != nil {
				return nil, err
			}
			if err := os.Mkdir(file, 0o755); err != nil {
				return nil, err
			}
		}
		run := pass
		if i == 0 {
			run = warm
		}
		start := time.Now()
		if err := run(); err != nil {
			return nil, err
		}
		if i > 0 {
			out = append(out, time.Since(start))
		}
	}
	return out, nil
}

// parallel splits [0, total) into n contiguous ranges, one goroutine each.
func parallel(n int, total int64, fn func(from, to int64) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			errs[g] = fn(int64(g)*total/int64(n), int64(g+1)*total/int64(n))
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sealedBuffer returns bufferBytes of random plaintext sealed as 64 KiB
// AES-256-GCM chunks (nonce = chunk index), and the key.
func sealedBuffer() ([]byte, []byte) {
	key := make([]byte, 32)
	crand.Read(key)
	aead := newGCM(key)
	var seed [32]byte
	crand.Read(seed[:])
	rng := rand.NewChaCha8(seed)
	pt := make([]byte, tgsp.ChunkSize)
	nb := bufferBytes / tgsp.ChunkSize
	ct := make([]byte, 0, nb*tgsp.CipherChunkSize)
	var nonce [12]byte
	for i := range nb {
		rng.Read(pt)
		binary.BigEndian.PutUint64(nonce[4:], uint64(i))
		ct = aead.Seal(ct, nonce[:], pt, nil)
	}
	return ct, key
}

func newGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// cryptoRange does, for chunks [from, to) of the payload, the per-byte work
// of unpack (open) or verify (!open): SHA-256 of each ciphertext chunk, one
// digest per 64-chunk shard, and, for unpack, AES-256-GCM open of the chunk.
// Payload chunk c is buffer chunk c mod the buffer's chunk count.
func cryptoRange(ct, key []byte, from, to int64, open bool) error {
	aead := newGCM(key) // one per goroutine, as unpack's workers
	nb := int64(len(ct) / tgsp.CipherChunkSize)
	h := sha256.New()
	pt := make([]byte, 0, tgsp.ChunkSize)
	var nonce [12]byte
	var sum [32]byte
	for c := from; c < to; c++ {
		i := c % nb
		chunk := ct[i*tgsp.CipherChunkSize : (i+1)*tgsp.CipherChunkSize]
		h.Write(chunk)
		if open {
			binary.BigEndian.PutUint64(nonce[4:], uint64(i))
			if _, err := aead.Open(pt[:0], nonce[:], chunk, nil); err != nil {
				return fmt.Errorf("baseline chunk %d: %w", i, err)
			}
		}
		if (c+1)%tgsp.ChunksPerShard == 0 || c == to-1 {
			h.Sum(sum[:0])
			h.Reset()
		}
	}
	return nil
}

// writeLikeUnpack fills size bytes of files in dir from pt with 64 KiB
// pwrites, as unpack does, without the crypto. Shared (!own): one file,
// truncated to size, n goroutines taking 4 MiB shards in turn, as unpack's
// workers do within a file. own: goroutine g writes every n-th shard into a
// file of its own, so no two goroutines share an inode.
func writeLikeUnpack(dir string, pt []byte, size int64, n int, own bool) (err error) {
	nf := 1
	if own {
		nf = n
	}
	files := make([]*os.File, 0, nf)
	defer func() {
		for _, f := range files {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
	}()
	for i := range nf {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		files = append(files, f)
		if err := f.Truncate(size / int64(nf)); err != nil {
			return err
		}
	}
	const shard = tgsp.ChunksPerShard * tgsp.ChunkSize
	shards := (size + shard - 1) / shard
	nb := int64(len(pt) / tgsp.ChunkSize)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			f := files[0]
			if own {
				f = files[g]
			}
			for s := int64(g); s < shards; s += int64(n) {
				start := s * shard
				if own { // shard s is the (s/n)-th shard of g's file
					start = s / int64(n) * shard
				}
				for off := s * shard; off < min((s+1)*shard, size); off += tgsp.ChunkSize {
					i := (off / tgsp.ChunkSize) % nb
					k := min(tgsp.ChunkSize, size-off)
					if _, err := f.WriteAt(pt[i*tgsp.ChunkSize:i*tgsp.ChunkSize+k], start+off-s*shard); err != nil {
						errs[g] = err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
