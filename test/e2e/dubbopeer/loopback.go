package dubbopeer

import (
	"fmt"
	"os"
	"sync/atomic"
)

// loopbacks counts the loopback addresses handed out. It starts at an offset taken from the process id so
// that test binaries running side by side (go test ./... runs packages in parallel) mostly use different
// addresses; ports come from the kernel, so a shared address would still not clash.
var loopbacks atomic.Uint32

func init() { loopbacks.Store(uint32(os.Getpid()%40) * 1000) }

// NextLoopback returns a loopback address no other caller in this process got: 127.0.1.2, 127.0.1.3, ... On
// Linux the whole of 127.0.0.0/8 answers without configuration.
func NextLoopback() string {
	n := loopbacks.Add(1) - 1
	return fmt.Sprintf("127.0.%d.%d", 1+n/250, 2+n%250)
}
