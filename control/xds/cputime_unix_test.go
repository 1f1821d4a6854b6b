//go:build unix

package xds_test

import (
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time this process (the controller; the proxies run in another) has used.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
