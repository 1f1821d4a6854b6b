//go:build !unix

package main

import (
	"errors"
	"time"
)

// cpuTime is unsupported where there is no getrusage.
func cpuTime() (user, sys time.Duration, err error) {
	return 0, 0, errors.New("CPU time is not available on this system")
}
