// Package testpg gives tests a real, throwaway PostgreSQL database.
//
// [Start] returns the DSN of a fresh, empty database that is dropped when the
// test ends. By default all tests of one test binary share a single
// PostgreSQL server that testpg starts on first use from Debian's binaries
// (/usr/lib/postgresql/<version>/bin: initdb and postgres) in a temporary
// directory. The server listens only on a Unix socket inside that directory
// (no TCP port, so parallel test binaries never collide), runs with fsync off
// because its data is disposable, and runs as the postgres OS user when the
// tests run as root (initdb refuses to run as root).
//
// Lifetime: a package that uses testpg should stop the shared server after
// its tests with
//
//	func TestMain(m *testing.M) { testpg.Main(m) }
//
// Without that, the server still cannot outlive the test binary: it is started
// with a parent-death signal, and a later Start removes directories left
// behind by test binaries that are gone.
//
// If TG_TEST_DATABASE_URL is set (postgres://user:pass@host:port/db), no
// server is started: each Start creates a fresh database on that server (the
// role needs CREATEDB) and drops it afterwards.
//
// If PostgreSQL is not installed, Start skips the test with a message naming
// the install command — except when CI=true, where a missing dependency must
// fail the build rather than silently shrink it, so Start fails the test.
package testpg
