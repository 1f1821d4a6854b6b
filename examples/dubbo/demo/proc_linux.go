package main

import "syscall"

// childProcAttr puts a child in a process group of its own, so that Ctrl-C reaches only the demo, which then
// stops its traffic before the processes it serves; and has the kernel kill the child if the demo dies
// without stopping it.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
