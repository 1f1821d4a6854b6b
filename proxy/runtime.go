package proxy

import (
	"os"
	"runtime/debug"
)

// GCPercent is the garbage collector's target in a process that runs a proxy. The proxy's requests allocate
// next to nothing, so a tighter target than Go's default of 100 costs no measurable CPU, while it keeps the
// memory a burst of load leaves behind from staying resident (measured in bench/README.md).
const GCPercent = 50

// TuneRuntime sets the process's garbage collector to GCPercent, unless GOGC says otherwise. It is for the
// main function of a process whose work is proxying.
func TuneRuntime() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
	}
}
