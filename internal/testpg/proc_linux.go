package testpg

import "syscall"

// procAttr runs a child as cred (nil: as ourselves). For the long-running
// server it also asks the kernel to stop it when the test binary dies, so a
// crashed or timed-out test run leaves no server behind.
func procAttr(cred *syscall.Credential, server bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Credential: cred}
	if server {
		a.Pdeathsig = syscall.SIGINT // PostgreSQL's fast shutdown
	}
	return a
}
