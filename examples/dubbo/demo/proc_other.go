//go:build !linux

package main

import "syscall"

// childProcAttr keeps the defaults where the kernel cannot kill a child when its parent dies: the children
// stay in the demo's process group, so Ctrl-C reaches them too, and a provider also ends when its stdin
// closes.
func childProcAttr() *syscall.SysProcAttr { return nil }
