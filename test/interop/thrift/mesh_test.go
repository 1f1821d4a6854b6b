package thriftinterop

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// TestMesh runs the meltemi binary as users do, `meltemi mesh -f DIR`, configured only by manifests: a
// ServiceEntry whose port is named tcp-metaprotocol-thrift with two real Apache THeader servers as endpoints
// labelled v1 and v2, a DestinationRule with those subsets, and a MetaRouter that routes on the method, on a
// THeader key (setting another), and splits the rest 20/80.
func TestMesh(t *testing.T) {
	t.Parallel()
	tr := theaderTransport("theader+binary", thrift.THeaderProtocolBinary)
	block := meshtest.NewNet()
	v1 := startApacheServer(t, block.Host(1), "v1", tr)
	v2 := startApacheServer(t, block.Host(2), "v2", tr)
	service := block.Host(10)
	port := meshtest.FreePort(t, service)

	dir := t.TempDir()
	svc := meshtest.Service{Name: "echo", Host: echoHost, Addresses: []string{service}, Port: port, Protocol: "thrift",
		Endpoints: []meshtest.Endpoint{{Addr: v1.addr, Version: "v1"}, {Addr: v2.addr, Version: "v2"}}}
	meshtest.WriteAtomically(t, dir, "echo.yaml", svc.YAML(t))
	meshtest.WriteAtomically(t, dir, "router.yaml", svc.Router(fmt.Sprintf(`  - name: canary
    match:
      attributes:
        env:
          exact: canary
    route:
    - destination:
        host: %[1]s
        subset: v2
    requestMutation:
    - key: %[2]s
      value: %[3]s
  - name: fail-to-v1
    match:
      attributes:
        method:
          exact: fail
    route:
    - destination:
        host: %[1]s
        subset: v1
  - name: split
    route:
    - destination:
        host: %[1]s
        subset: v1
      weight: 20
    - destination:
        host: %[1]s
        subset: v2
      weight: 80
`, echoHost, routedByKey, routedByValue)))

	bin := meshtest.Build(t, t.TempDir())
	mesh := meshtest.StartMesh(t, bin, dir, block.Host(100))
	addr := net.JoinHostPort(service, strconv.Itoa(port))
	// The proxy binds the ServiceEntry's address once its config arrived.
	meshtest.Poll(t, 30*time.Second, "the mesh to listen on "+addr, func() bool {
		mesh.Proc.Alive(t)
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	ctx := testCtx(t)
	c := dialApache(t, addr, tr)

	t.Run("routes on method", func(t *testing.T) {
		var ee interface{ GetWhy() string }
		if _, err := c.echo.Fail(ctx, "f"); !errors.As(err, &ee) || ee.GetWhy() != "v1:f" {
			t.Fatalf("fail returned %v; want EchoError{why: v1:f}", err)
		}
	})

	t.Run("routes on a THeader key and the server reads the mutation", func(t *testing.T) {
		canary := withHeader(ctx, "env", "canary")
		if got, err := c.echo.Header(canary, routedByKey); err != nil || got != "v2:"+routedByValue {
			t.Fatalf("v2 read %s as %q (%v); want v2:%s", routedByKey, got, err, routedByValue)
		}
		if got, err := c.echo.Echo(canary, nonASCII); err != nil || got != "v2:"+nonASCII {
			t.Fatalf("echo answered %q (%v); want v2:%s", got, err, nonASCII)
		}
	})

	t.Run("weighted split 20/80", func(t *testing.T) {
		const workers = 8
		clients := make([]*apacheClient, workers)
		for i := range clients {
			clients[i] = dialApache(t, addr, tr)
		}
		big := strings.Repeat("x", 64<<10)
		seen := checkSplit(t, 1000, workers, 0.2, func(w, i int) (string, error) {
			msg := fmt.Sprint("split-", i)
			if i%100 == 0 {
				msg += big
			}
			got, err := clients[w].echo.Echo(ctx, msg)
			v, rest, _ := strings.Cut(got, ":")
			if err == nil && rest != msg {
				err = fmt.Errorf("echo(%.20q) answered %.20q, not its own answer", msg, got)
			}
			return v, err
		})
		// The metrics count what the clients saw (and the earlier subtests' calls to v2).
		mesh.WaitMetric(t, 10*time.Second, "istio_requests_total", map[string]string{"destination_version": "v2"},
			fmt.Sprint("at least ", seen["v2"]), func(v float64) bool { return v >= float64(seen["v2"]) })
	})
}
