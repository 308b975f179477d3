//go:build unix && !linux

package testpg

import "syscall"

// procAttr runs a child as cred (nil: as ourselves). Only Linux has a
// parent-death signal; elsewhere a server left by a crashed run is removed by
// the next run's sweep once it has been stopped by hand.
func procAttr(cred *syscall.Credential, _ bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred}
}
