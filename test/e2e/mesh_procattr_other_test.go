//go:build !linux

package e2e

import "syscall"

// childProcAttr has nothing to add where the kernel cannot tie a child's life to its parent's; the tests'
// cleanups stop the processes.
func childProcAttr() *syscall.SysProcAttr { return nil }
