package meshload

import (
	"runtime"
	"syscall"
	"time"
)

// prSetTimerSlack is prctl's PR_SET_TIMERSLACK.
const prSetTimerSlack = 29

// maxSleep bounds one sleep so that a cancelled load stops promptly even at a low rate.
const maxSleep = 10 * time.Millisecond

// newPacer returns a sleep for the open loop's pacer. The runtime's timers round waits up to a whole
// millisecond, so the pacer takes a thread of its own, asks the kernel for the least timer slack, and sleeps
// with nanosleep, which wakes within tens of microseconds. The thread dies with the goroutine (it is never
// unlocked), so its changed slack never serves anyone else.
func newPacer() func(time.Duration) {
	runtime.LockOSThread()
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1, 0)
	return func(d time.Duration) {
		ts := syscall.NsecToTimespec(int64(min(d, maxSleep)))
		syscall.Nanosleep(&ts, nil) // an early wake (EINTR) just means the pacer looks at the clock sooner
	}
}
