package testpg

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestStartGivesIsolatedDatabases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsnA, dsnB := Start(t), Start(t)
	if dsnA == dsnB {
		t.Fatalf("two Starts returned the same DSN %q", dsnA)
	}
	a, b := open(t, dsnA), open(t, dsnB)
	if _, err := a.ExecContext(ctx, `CREATE TABLE only_in_a (x int)`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.QueryRowContext(ctx, `SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("table created in database A is visible in database B")
	}
	var version string
	if err := a.QueryRowContext(ctx, `SHOW server_version`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	var fsync string
	if err := a.QueryRowContext(ctx, `SHOW fsync`).Scan(&fsync); err != nil {
		t.Fatal(err)
	}
	t.Logf("server %s, fsync=%s, dsn %s", version, fsync, dsnA)
	if os.Getenv(EnvDatabaseURL) == "" && fsync != "off" {
		t.Errorf("throwaway server runs with fsync=%s, want off", fsync)
	}
}

func TestDatabaseDroppedAfterTest(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("user", func(t *testing.T) {
		dsn := Start(t)
		name = dsn[strings.LastIndex(dsn, "/")+1 : strings.Index(dsn, "?")]
	})
	admin := open(t, Start(t))
	var n int
	if err := admin.QueryRow(`SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database %s still exists after its test ended", name)
	}
}

func TestConcurrentStarts(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				db := open(t, Start(t))
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := db.PingContext(ctx); err != nil {
					t.Error(err)
				}
			})
		}()
	}
	wg.Wait()
}

// TestExternalServer points TG_TEST_DATABASE_URL at a database of the shared
// server and checks that Start then creates databases there.
func TestExternalServer(t *testing.T) {
	ext := Start(t)
	t.Setenv(EnvDatabaseURL, ext)
	dsn := Start(t)
	if dsn == ext || !strings.Contains(dsn, "/tg_testexternalserver_") {
		t.Fatalf("Start with %s = %q, want a new database on that server", EnvDatabaseURL, dsn)
	}
	if err := open(t, dsn).Ping(); err != nil {
		t.Fatal(err)
	}
}

func TestDatabaseName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"TestX", "TestX/sub_case#01", strings.Repeat("Ä/", 100)} {
		got := databaseName(name)
		if len(got) > 63 {
			t.Errorf("databaseName(%q) = %q: longer than PostgreSQL's 63-byte limit", name, got)
		}
		for _, r := range got {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
				t.Errorf("databaseName(%q) = %q: character %q needs quoting", name, got, r)
			}
		}
	}
	if a, b := databaseName("TestX"), databaseName("TestX"); a == b {
		t.Error("databaseName is not unique")
	}
}

// fakeTB records whether a test was skipped or failed, without stopping the
// calling goroutine the way the real methods do.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Skip(args ...any)               { f.skipped = fmt.Sprint(args...) }
func (f *fakeTB) Fatal(args ...any)              { f.failed = fmt.Sprint(args...) }
func (f *fakeTB) Fatalf(format string, a ...any) { f.failed = fmt.Sprintf(format, a...) }

func TestMissingPostgreSQL(t *testing.T) {
	// Not parallel: it swaps the package's search path.
	old := debianBinGlob
	debianBinGlob = t.TempDir() + "/*/bin"
	t.Cleanup(func() { debianBinGlob = old })
	t.Setenv("PATH", t.TempDir())

	if _, err := findBinDir(); err != errMissing {
		t.Fatalf("findBinDir without binaries = %v, want errMissing", err)
	}
	for _, tc := range []struct {
		ci       string
		wantSkip bool
	}{{"true", false}, {"", true}, {"false", true}} {
		t.Setenv("CI", tc.ci)
		f := &fakeTB{}
		unavailable(f, errMissing.Error())
		got := f.failed
		if tc.wantSkip {
			got = f.skipped
		}
		if got != InstallHint {
			t.Errorf("CI=%q: skipped %q, failed %q; want the install hint as a %s",
				tc.ci, f.skipped, f.failed, map[bool]string{true: "skip", false: "failure"}[tc.wantSkip])
		}
	}
}

// TestOwnRestartKeepsData: a server of the test's own stops (its clients
// get errors) and starts again on the same data.
func TestOwnRestartKeepsData(t *testing.T) {
	p := Own(t)
	db, err := sql.Open("pgx", p.Database())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before')`); err != nil {
		t.Fatal(err)
	}
	p.Stop()
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err = db.PingContext(pctx)
	cancel()
	if err == nil {
		t.Fatal("the stopped server still answers")
	}
	p.Start()
	var v string
	if err := db.QueryRowContext(ctx, `SELECT v FROM kept`).Scan(&v); err != nil || v != "before" {
		t.Fatalf("after the restart: %q, %v", v, err)
	}
}
