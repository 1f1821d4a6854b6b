//go:build linux

package meshtest

import "syscall"

// childProcAttr makes the kernel kill a child process when the test binary dies, so that a test killed by its
// timeout leaves no meltemi process holding its addresses.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
