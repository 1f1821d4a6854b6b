package meshtest

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
)

// nets counts the /24 loopback blocks handed out. It starts at an offset taken from the process id, so that
// test binaries running side by side (the e2e and interop modules, say) mostly use different blocks; ports
// are chosen by the kernel, so a shared block would clash only on the fixed ports of service addresses.
var nets atomic.Uint32

func init() { nets.Store(uint32(os.Getpid()%1000) * 8) }

// Net is a loopback block of a test's own, 127.A.B.0/24 with A from 20 to 59. On Linux the whole of
// 127.0.0.0/8 answers without configuration.
type Net struct{ n uint32 }

// NewNet returns a block no other caller in this process got (until 10240 blocks have been handed out).
func NewNet() Net { return Net{n: (nets.Add(1) - 1) % (40 * 256)} }

// Host returns 127.A.B.i.
func (n Net) Host(i int) string { return fmt.Sprintf("127.%d.%d.%d", 20+n.n/256, n.n%256, i) }

// FreeAddr returns host:port with a port nobody listens on at host right now. The caller binds it a moment
// later; the host is the test's own, so nothing else competes for the port in between.
func FreeAddr(t testing.TB, host string) string {
	t.Helper()
	return net.JoinHostPort(host, strconv.Itoa(FreePort(t, host)))
}

// FreePort returns a port nobody listens on at host right now.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("find a free port on %s: %v", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
