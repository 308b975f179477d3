// Package sdnotify tells systemd about the agent's life cycle (the unit is
// Type=notify, WatchdogSec= set): READY=1 when the agent is up, RELOADING=1
// around a SIGHUP reload, STOPPING=1 when it begins to shut down, and
// WATCHDOG=1 pings while its loops are healthy.
//
// It is a thin layer over go-systemd's daemon package. Outside systemd
// (NOTIFY_SOCKET unset) every call is a no-op that returns nil, so the agent
// runs the same in a terminal or a container. The environment is left in
// place so that later calls keep working.
//
// Guarantee: RunWatchdog pings only while healthy() reports true. An agent
// whose main loop is wedged stops pinging and systemd restarts it after
// WatchdogSec; a ping is never sent "because the process is still alive".
package sdnotify
