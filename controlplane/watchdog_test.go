package controlplane_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/controlplanetest"
	"github.com/tensorguard/tensorguardflow/internal/sdnotify/sdnotifytest"
)

// TestSystemdNotifications: under a Type=notify unit with WatchdogSec= the
// control plane says READY=1 once it serves and then pings WATCHDOG=1 while
// its database answers. (Not parallel: it sets the process environment.)
func TestSystemdNotifications(t *testing.T) {
	conn := sdnotifytest.Listen(t)
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(int((400 * time.Millisecond).Microseconds())))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	controlplanetest.Start(t)
	var ready, pings int
	deadline := time.Now().Add(30 * time.Second)
	for (ready == 0 || pings < 3) && time.Now().Before(deadline) {
		msg := sdnotifytest.Next(t, conn, time.Until(deadline))
		for _, line := range strings.Split(msg, "\n") {
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
