package sdnotify

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/sdnotify/sdnotifytest"
)

func TestLifecycleMessages(t *testing.T) {
	conn := sdnotifytest.Listen(t)
	for _, tc := range []struct {
		send func() error
		want string
	}{
		{Ready, "READY=1"},
		{func() error { return Status("connected, 0 queued") }, "STATUS=connected, 0 queued"},
		{Stopping, "STOPPING=1"},
	} {
		if err := tc.send(); err != nil {
			t.Fatal(err)
		}
		if got := sdnotifytest.Next(t, conn, time.Second); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
	if err := Reloading(); err != nil {
		t.Fatal(err)
	}
	got := sdnotifytest.Next(t, conn, time.Second)
	lines := strings.Split(got, "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("reloading message %q", got)
	}
	if us, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64); err != nil || us <= 0 {
		t.Errorf("MONOTONIC_USEC %q", lines[1])
	}
}

func TestOutsideSystemdIsANoOp(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	if err := Ready(); err != nil {
		t.Errorf("Ready without NOTIFY_SOCKET: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := RunWatchdog(ctx, func() bool { return true }); err != nil {
		t.Errorf("RunWatchdog without a watchdog: %v", err)
	}
	if ctx.Err() == nil {
		t.Error("RunWatchdog without a watchdog returned before ctx ended")
	}
}

func TestUnreachableSocketIsAnError(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent.sock"))
	if err := Ready(); !errors.Is(err, ErrNotify) {
		t.Errorf("Ready to a missing socket: %v", err)
	}
}

func TestWatchdogPingsOnlyWhileHealthy(t *testing.T) {
	conn := sdnotifytest.Listen(t)
	t.Setenv("WATCHDOG_USEC", "100000") // 100ms: ping every 50ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if d, err := WatchdogInterval(); err != nil || d != 100*time.Millisecond {
		t.Fatalf("WatchdogInterval = %v, %v", d, err)
	}
	var healthy atomic.Bool
	healthy.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		w := &Watchdog{Healthy: healthy.Load, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		done <- w.Run(ctx)
	}()

	for i := range 3 {
		if got := sdnotifytest.Next(t, conn, 2*time.Second); got != "WATCHDOG=1" {
			t.Fatalf("ping %d: got %q", i, got)
		}
	}
	healthy.Store(false)
	// At most one ping can be in flight from before the switch.
	for sdnotifytest.Next(t, conn, 150*time.Millisecond) != "" {
	}
	if got := sdnotifytest.Next(t, conn, 300*time.Millisecond); got != "" {
		t.Fatalf("pinged while unhealthy: %q", got)
	}
	healthy.Store(true)
	if got := sdnotifytest.Next(t, conn, 2*time.Second); got != "WATCHDOG=1" {
		t.Fatalf("no ping after recovering: %q", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("RunWatchdog did not return after cancel")
	}
	if err := Stopping(); err != nil {
		t.Fatal(err)
	}
	for {
		got := sdnotifytest.Next(t, conn, time.Second)
		if got == "STOPPING=1" {
			break
		}
		if got != "WATCHDOG=1" {
			t.Fatalf("got %q, want STOPPING=1", got)
		}
	}
}

func TestWatchdogForAnotherPIDIsOff(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	if d, err := WatchdogInterval(); err != nil || d != 0 {
		t.Errorf("WatchdogInterval for another pid = %v, %v; want 0", d, err)
	}
}

func TestMalformedWatchdogEnvironment(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "soon")
	if _, err := WatchdogInterval(); !errors.Is(err, ErrWatchdogConfig) {
		t.Errorf("WatchdogInterval: %v", err)
	}
	if err := RunWatchdog(context.Background(), func() bool { return true }); !errors.Is(err, ErrWatchdogConfig) {
		t.Errorf("RunWatchdog: %v", err)
	}
}
