// Package sdnotify tells systemd about a daemon's life cycle — the agent's
// and the control plane's (both units are Type=notify with WatchdogSec=):
// READY=1 when it is up, RELOADING=1 around a SIGHUP reload, STOPPING=1
// when it begins to shut down, and WATCHDOG=1 pings while it is healthy.
//
// It is a thin layer over go-systemd's daemon package. Outside systemd
// (NOTIFY_SOCKET unset) every call is a no-op that returns nil, so a daemon
// runs the same in a terminal or a container. The environment is left in
// place so that later calls keep working.
//
// Guarantee: RunWatchdog pings only while healthy() reports true. A daemon
// whose main loop is wedged stops pinging and systemd restarts it after
// WatchdogSec; a ping is never sent "because the process is still alive".
package sdnotify
