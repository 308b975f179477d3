package testpg

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// InstallHint is the message a test gets when PostgreSQL is missing.
const InstallHint = "PostgreSQL not installed: run hack/install-deps.sh (apt-get install postgresql)"

// EnvDatabaseURL names the environment variable that points tests at an
// external PostgreSQL server instead of a throwaway one.
const EnvDatabaseURL = "TG_TEST_DATABASE_URL"

// errMissing marks "PostgreSQL is not installed": the one failure that is a
// skip outside CI rather than an error.
var errMissing = errors.New(InstallHint)

// debianBinGlob is where Debian's postgresql-<major> packages put the server
// binaries; initdb is not on PATH there. A variable so tests can point it
// at an empty place.
var debianBinGlob = "/usr/lib/postgresql/*/bin"

var (
	sharedMu   sync.Mutex
	shared     *server
	sharedErr  error
	sharedDone bool // startShared ran (successfully or not)
)

// Start returns the DSN (a postgres:// URL) of a new, empty database that
// exists until t ends. The first call in a test binary starts the shared
// server; see the package documentation for the lifetime and the
// TG_TEST_DATABASE_URL and CI=true behaviour.
func Start(t testing.TB) string {
	t.Helper()
	if ext := os.Getenv(EnvDatabaseURL); ext != "" {
		dsn, err := createExternal(t, ext)
		if err != nil {
			t.Fatalf("testpg: %s: %v", EnvDatabaseURL, err)
		}
		return dsn
	}
	s, err := startShared()
	if errors.Is(err, errMissing) {
		unavailable(t, err.Error())
		return ""
	}
	if err != nil {
		t.Fatalf("testpg: %v", err)
	}
	dsn, err := createDatabase(t, s.admin, s.dsn)
	if err != nil {
		t.Fatalf("testpg: %v", err)
	}
	return dsn
}

// Main runs the tests of a package and then stops the shared server, if one
// was started. Call it from TestMain; it does not return.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop stops the shared server and removes its directory. Start after Stop
// starts a new server. Safe to call when no server runs.
func Stop() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.stop()
	}
	shared, sharedErr, sharedDone = nil, nil, false
}

// unavailable reports a missing PostgreSQL: fatal in CI, where every test
// must run, a skip elsewhere so `go test ./...` works on a bare laptop.
func unavailable(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
		return
	}
	t.Skip(msg)
}

func startShared() (*server, error) {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if !sharedDone {
		shared, sharedErr = startServer()
		sharedDone = true
	}
	return shared, sharedErr
}

// server is one running postgres process and the directory that holds its
// data, socket and log.
type server struct {
	dir    string
	bin    string              // PostgreSQL's server binaries
	cred   *syscall.Credential // whom postgres runs as (nil: as we are)
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been reaped
	admin  *sql.DB       // connected to the "postgres" database, for CREATE/DROP DATABASE
}

// dsn returns the URL of database db on this server, over its Unix socket.
func (s *server) dsn(db string) string {
	q := url.Values{"host": {s.dir}, "sslmode": {"disable"}}
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/" + db, RawQuery: q.Encode()}
	return u.String()
}

func startServer() (*server, error) {
	s, err := initServer()
	if err != nil {
		return nil, err
	}
	if err := s.run(); err != nil {
		_ = os.RemoveAll(s.dir)
		return nil, err
	}
	return s, nil
}

// initServer makes a server directory with a fresh cluster in it
// (initdb); nothing runs yet.
func initServer() (*server, error) {
	bin, err := findBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	sweepStale()

	// The pid in the name lets a later run tell whether the owner is gone.
	dir, err := os.MkdirTemp("", fmt.Sprintf("testpg-%d-", os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("create server directory: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(dir)
		}
	}()
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("hand %s to the postgres user: %w", dir, err)
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"),
		"-D", filepath.Join(dir, "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
		"--no-sync", "--no-instructions")
	// The postgres user may not be able to enter the test's working directory,
	// and initdb fails if it cannot resolve its own cwd.
	initdb.Dir = dir
	initdb.SysProcAttr = procAttr(cred, false)
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	ok = true
	return &server{dir: dir, bin: bin, cred: cred}, nil
}

// run starts postgres on the server's data directory and waits until it
// answers.
func (s *server) run() error {
	logPath := filepath.Join(s.dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child holds its own descriptor

	cmd := exec.Command(filepath.Join(s.bin, "postgres"),
		"-D", filepath.Join(s.dir, "data"),
		"-k", s.dir, // Unix socket in our own directory ...
		"-h", "", // ... and no TCP listener at all
		"-p", "5432",
		"-F", // fsync off: the data is thrown away
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=300",
		"-c", "log_min_messages=warning",
	)
	cmd.Dir = s.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = procAttr(s.cred, true)

	s.cmd, s.exited = cmd, make(chan struct{})
	if err := startLocked(cmd, s.exited); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	if s.admin == nil {
		admin, err := sql.Open("pgx", s.dsn("postgres"))
		if err != nil {
			s.kill()
			return err
		}
		s.admin = admin
	}
	if err := s.waitReady(30*time.Second, logPath); err != nil {
		s.halt()
		return err
	}
	return nil
}

// startLocked starts cmd from an OS thread that stays alive until the process
// exits. The parent-death signal is tied to the thread that forked the child,
// not to the process, so forking from a thread the Go runtime might retire
// could kill the server early.
func startLocked(cmd *exec.Cmd, exited chan<- struct{}) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(exited)
	}()
	return <-started
}

func (s *server) waitReady(timeout time.Duration, logPath string) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("postgres exited during startup:\n%s", tail(logPath))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = s.admin.PingContext(ctx)
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("postgres not ready after %v: %v\n%s", timeout, err, tail(logPath))
}

func (s *server) stop() {
	if s.admin != nil {
		_ = s.admin.Close()
	}
	s.halt()
	_ = os.RemoveAll(s.dir)
}

// halt stops postgres and keeps its data. SIGINT is PostgreSQL's "fast"
// shutdown: abort sessions, checkpoint, exit.
func (s *server) halt() {
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		s.kill()
	}
}

func (s *server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// createDatabase creates a uniquely named database through admin, drops it
// when t ends, and returns its DSN.
func createDatabase(t testing.TB, admin *sql.DB, dsn func(db string) string) (string, error) {
	name := databaseName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE "`+name+`"`); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// FORCE ends sessions a test left open (PostgreSQL 13+).
		if _, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS "`+name+`" WITH (FORCE)`); err != nil {
			t.Logf("testpg: drop database %s: %v", name, err)
		}
	})
	return dsn(name), nil
}

// createExternal creates a database on the server that rawURL names.
func createExternal(t testing.TB, rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", errors.New("want a postgres://user:pass@host:port/db URL")
	}
	admin, err := sql.Open("pgx", rawURL)
	if err != nil {
		return "", err
	}
	// Registered before createDatabase's cleanup so that it runs after it.
	t.Cleanup(func() { _ = admin.Close() })
	return createDatabase(t, admin, func(db string) string {
		v := *u
		v.Path = "/" + db
		v.RawPath = ""
		return v.String()
	})
}

// databaseName derives a valid, unique PostgreSQL identifier from a test
// name, readable enough to find a test's database while debugging.
func databaseName(testName string) string {
	var b strings.Builder
	b.WriteString("tg_")
	for _, r := range strings.ToLower(testName) {
		if b.Len() >= 40 {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	b.WriteByte('_')
	b.WriteString(hex.EncodeToString(rnd[:]))
	return b.String()
}

// findBinDir returns a directory holding initdb and postgres: the newest
// Debian-installed major version, else the ones on PATH.
func findBinDir() (string, error) {
	dirs, _ := filepath.Glob(debianBinGlob)
	sort.Slice(dirs, func(i, j int) bool { return majorOf(dirs[i]) > majorOf(dirs[j]) })
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		d := filepath.Dir(p)
		if isExecutable(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errMissing
}

// majorOf reads the version from /usr/lib/postgresql/<version>/bin.
func majorOf(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// serverCredential returns whom to run the server as: nil for "as we are",
// the postgres OS user when we are root.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		// The postgresql package creates this user.
		return nil, fmt.Errorf("%w (running as root needs the postgres OS user: %v)", errMissing, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres user has non-numeric uid/gid %q/%q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// sweepStale removes server directories whose test binary and server are
// both gone, for binaries that ended without Stop (a crash, a timeout, no
// TestMain).
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "testpg-*-*"))
	for _, d := range dirs {
		parts := strings.SplitN(filepath.Base(d), "-", 3)
		owner, err := strconv.Atoi(parts[1])
		if err != nil || owner == os.Getpid() || processAlive(owner) {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
			first, _, _ := strings.Cut(string(b), "\n")
			if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && processAlive(pid) {
				continue
			}
		}
		_ = os.RemoveAll(d)
	}
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// tail returns the end of the server log for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no server log: " + err.Error() + ")"
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
