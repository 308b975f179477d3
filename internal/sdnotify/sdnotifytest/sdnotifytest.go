// Package sdnotifytest stands in for systemd's notification socket in
// tests of daemons that notify it (internal/sdnotify).
package sdnotifytest

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Listen opens a unixgram socket and names it in NOTIFY_SOCKET for the rest
// of t, as systemd does for a Type=notify unit. It sets the environment,
// so t must not run in parallel.
func Listen(t *testing.T) *net.UnixConn {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

// Next returns the next datagram on conn, or "" after timeout.
func Next(t *testing.T, conn *net.UnixConn, timeout time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	n, err := conn.Read(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return ""
		}
		t.Fatal(err)
	}
	return string(buf[:n])
}
