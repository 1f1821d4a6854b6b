//go:build !linux

package meshload

import "time"

// maxSleep bounds one sleep so that a cancelled load stops promptly even at a low rate.
const maxSleep = 10 * time.Millisecond

// newPacer returns a sleep for the open loop's pacer; elsewhere than Linux it is the runtime's timer, which
// may wake up to a millisecond late (SendLag shows how late).
func newPacer() func(time.Duration) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return func(d time.Duration) {
		t.Reset(min(d, maxSleep))
		<-t.C
	}
}
