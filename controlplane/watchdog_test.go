package controlplane_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/controlplanetest"
)

// TestSystemdNotifications: under a Type=notify unit with WatchdogSec= the
// control plane says READY=1 once it serves and then pings WATCHDOG=1 while
// its database answers. (Not parallel: it sets the process environment.)
func TestSystemdNotifications(t *testing.T) {
	dir, err := os.MkdirTemp("", "tgsd") // short: a socket path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(int((400 * time.Millisecond).Microseconds())))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	controlplanetest.Start(t)
	var ready, pings int
	buf := make([]byte, 4096)
	deadline := time.Now().Add(30 * time.Second)
	for (ready == 0 || pings < 3) && time.Now().Before(deadline) {
		_ = conn.SetReadDeadline(deadline)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read notification: %v (READY=1 seen %d times, WATCHDOG=1 %d times)", err, ready, pings)
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			switch line {
			case "READY=1":
				ready++
			case "WATCHDOG=1":
				pings++
			}
		}
	}
	if ready != 1 || pings < 3 {
		t.Fatalf("READY=1 %d times, WATCHDOG=1 %d times; want 1 and at least 3", ready, pings)
	}
}
