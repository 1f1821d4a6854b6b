//go:build !linux

package meshtest

import "syscall"

func childProcAttr() *syscall.SysProcAttr { return nil }
