package sdnotify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Sentinel errors; returned errors wrap them.
var (
	// ErrNotify means the notification could not be delivered to
	// NOTIFY_SOCKET (the socket is set but unreachable).
	ErrNotify = errors.New("sdnotify: cannot notify systemd")

	// ErrWatchdogConfig means WATCHDOG_USEC or WATCHDOG_PID is malformed.
	ErrWatchdogConfig = errors.New("sdnotify: invalid watchdog environment")
)

func notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNotify, firstLine(state), err)
	}
	return nil
}

func firstLine(s string) string {
	for i := range len(s) {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}

// Ready sends READY=1: startup (or a reload) is complete.
func Ready() error { return notify(daemon.SdNotifyReady) }

// Stopping sends STOPPING=1: shutdown has begun.
func Stopping() error { return notify(daemon.SdNotifyStopping) }

// Reloading sends RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload
// requires (systemd ≥ 253; older versions ignore the extra field). Send
// Ready when the reload is done, whether it succeeded or kept the old config.
func Reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return notify(daemon.SdNotifyReloading)
	}
	usec := ts.Nano() / 1000
	return notify(daemon.SdNotifyReloading + "\nMONOTONIC_USEC=" + strconv.FormatInt(usec, 10))
}

// Status sends a one-line STATUS= shown by `systemctl status`.
func Status(msg string) error { return notify("STATUS=" + msg) }

// WatchdogInterval returns systemd's watchdog timeout for this process, or
// 0 when the watchdog is off (or watches another PID).
func WatchdogInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrWatchdogConfig, err)
	}
	return d, nil
}

// RunWatchdog runs a Watchdog with the default logger; see Watchdog.Run.
func RunWatchdog(ctx context.Context, healthy func() bool) error {
	return (&Watchdog{Healthy: healthy}).Run(ctx)
}

// Watchdog is the ping task for a daemon's task group.
type Watchdog struct {
	Healthy func() bool  // required: true while the daemon's loops make progress
	Logger  *slog.Logger // default slog.Default()
}

// Run pings WATCHDOG=1 every WatchdogSec/2 while Healthy() returns true,
// until ctx ends (then it returns nil). Without a watchdog it just waits for
// ctx, so it can always run in a task group. Failing to reach the
// socket is logged, not fatal: systemd's timeout is the arbiter.
func (w *Watchdog) Run(ctx context.Context) error {
	log := w.Logger
	if log == nil {
		log = slog.Default()
	}
	if w.Healthy == nil {
		return errors.New("sdnotify: watchdog needs a health function")
	}
	timeout, err := WatchdogInterval()
	if err != nil {
		return err
	}
	if timeout == 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(timeout / 2)
	defer t.Stop()
	wasHealthy := true
	for {
		ok := w.Healthy()
		switch {
		case ok:
			if !wasHealthy {
				log.Info("healthy again; resuming watchdog pings")
			}
			if err := notify(daemon.SdNotifyWatchdog); err != nil {
				log.Warn("watchdog ping failed", "err", err)
			}
		case wasHealthy:
			log.Error("unhealthy; withholding watchdog pings, systemd will restart the service", "watchdog_timeout", timeout)
		}
		wasHealthy = ok
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
