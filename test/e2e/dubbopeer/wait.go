package dubbopeer

import (
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// WaitFor checks cond until it holds, and fails the test if it does not within timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	meshtest.Poll(t, timeout, what, cond)
}
