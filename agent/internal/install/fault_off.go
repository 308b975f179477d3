//go:build !faultinject

package install

import "log/slog"

// FaultInjection reports whether this build has the fault hooks of the
// end-to-end tests (build tag faultinject, fault_on.go). It is false in
// every build without the tag — every agent we ship: nothing in the
// environment can make such an agent kill itself or fail its self-tests.
const FaultInjection = false

func faultHook(*slog.Logger) func(point string) bool { return nil }

func faultSelfTest() error { return nil }
