package brpcinterop

import (
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/test/interop/brpc/echopb"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// TestMesh runs the meltemi binary as users do, `meltemi mesh -f DIR`, configured only by manifests: a
// ServiceEntry whose port is named tcp-metaprotocol-brpc, with the v1 and v2 pbrpc servers as endpoints, a
// DestinationRule with those subsets, and a MetaRouter that matches on the method: Upper goes to v2 with a
// user field stamped on the way, Echo is split 20/80 between v1 and v2, and nothing else has a route. A real
// pbrpc client dials the service's address, which the proxy binds.
func TestMesh(t *testing.T) {
	t.Parallel()
	bin := meshtest.Build(t, t.TempDir())
	block := meshtest.NewNet()
	v1, v2 := startEchoServer(t, block.Host(2), "v1"), startEchoServer(t, block.Host(3), "v2")
	svcHost := block.Host(1)
	svcAddr := net.JoinHostPort(svcHost, strconv.Itoa(meshtest.FreePort(t, svcHost)))

	dir := t.TempDir()
	meshtest.WriteAtomically(t, dir, "echo.yaml", echoManifests(t, svcAddr, "brpc", v1, v2))
	mesh := meshtest.StartMesh(t, bin, dir, block.Host(4))
	meshtest.Poll(t, 10*time.Second, "the proxy to listen on "+svcAddr, func() bool {
		c, err := net.Dial("tcp", svcAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	c := dialEcho(t, svcAddr)

	t.Run("route on method with a request mutation", func(t *testing.T) {
		const n = 20
		for i := range n {
			v, err := c.echo(echoService, "Upper", fmt.Sprint("upper-", i))
			if err != nil {
				t.Fatal(err)
			}
			if v != "v2" {
				t.Fatalf("Upper answered by %s, want v2", v)
			}
		}
		var stamped int
		for _, f := range v2.tap.allReceived(t) {
			if f.GetMeta().GetRequest().GetMethodName() == "Upper" {
				if got := userFields(t, f.GetMeta())["x-routed-by"]; got != "upper-route" {
					t.Fatalf("an Upper call reached v2 with x-routed-by %q, want %q", got, "upper-route")
				}
				stamped++
			}
		}
		if stamped != n {
			t.Fatalf("v2 read %d Upper calls, want %d", stamped, n)
		}
	})

	const splitCalls, p = 1000, 0.2
	t.Run("weighted split 20/80", func(t *testing.T) {
		// 4.5 standard deviations: a correct split falls outside about once in 150,000 runs, while a
		// 30/70 split (its mean 7.9 deviations away) almost always does.
		sigma := math.Sqrt(splitCalls * p * (1 - p))
		lo, hi := int(math.Ceil(splitCalls*p-4.5*sigma)), int(math.Floor(splitCalls*p+4.5*sigma))
		const callers = 8
		var mu sync.Mutex
		by := map[string]int{}
		var failed atomic.Int64
		var firstErr atomic.Value
		var wg sync.WaitGroup
		for k := range callers {
			wg.Go(func() {
				for i := k; i < splitCalls; i += callers {
					v, err := c.echo(echoService, "Echo", fmt.Sprint("split-", i))
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
						continue
					}
					mu.Lock()
					by[v]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if n := failed.Load(); n > 0 {
			t.Fatalf("%d of %d calls failed, first: %v", n, splitCalls, firstErr.Load())
		}
		t.Logf("v1 %d, v2 %d of %d (v1 must be within [%d, %d])", by["v1"], by["v2"], splitCalls, lo, hi)
		if by["v1"]+by["v2"] != splitCalls || by["v1"] < lo || by["v1"] > hi {
			t.Fatalf("answers by version %v of %d calls; want v1 within [%d, %d]", by, splitCalls, lo, hi)
		}
	})

	t.Run("no route", func(t *testing.T) {
		_, pkg, err := c.call(echoService, "Missing", &echopb.EchoRequest{Message: "x"}, callOptions{})
		if err == nil || !strings.Contains(err.Error(), "code=1001, msg='meltemi: route_not_found") {
			t.Fatalf("a call no route matches: %v; want pbrpc's report of error 1001 from meltemi", err)
		}
		if code := pkg.GetMeta().GetResponse().GetErrorCode(); code != 1001 {
			t.Fatalf("response error_code %d, want 1001", code)
		}
		mesh.WaitMetric(t, 10*time.Second, "istio_requests_total",
			map[string]string{"request_protocol": "brpc", "response_flags": "NR"}, "1", func(v float64) bool { return v == 1 })
	})

	// Every call is counted once, with the protocol's name.
	mesh.WaitMetric(t, 10*time.Second, "istio_requests_total", map[string]string{"request_protocol": "brpc"},
		fmt.Sprint(20+splitCalls+1), func(v float64) bool { return v == 20+splitCalls+1 })
}

// echoManifests is the ServiceEntry, DestinationRule and MetaRouter of the echo service at svcAddr.
func echoManifests(t *testing.T, svcAddr, protocol string, v1, v2 *echoServer) string {
	t.Helper()
	svcHost, svcPort, err := net.SplitHostPort(svcAddr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(svcPort)
	svc := meshtest.Service{Name: "echo", Host: echoHost, Addresses: []string{svcHost}, Port: port, Protocol: protocol,
		Endpoints: []meshtest.Endpoint{{Addr: v1.Addr, Version: "v1"}, {Addr: v2.Addr, Version: "v2"}}}
	destination := func(subset string) string {
		return fmt.Sprintf("    - destination:\n        host: %s\n        subset: %s\n", echoHost, subset)
	}
	return svc.YAML(t) + "---\n" + svc.Router(`  - name: upper
    match:
      attributes:
        method:
          exact: Upper
    route:
`+destination("v2")+`    requestMutation:
    - key: x-routed-by
      value: upper-route
  - name: echo-split
    match:
      attributes:
        method:
          exact: Echo
    route:
`+destination("v1")+`      weight: 20
`+destination("v2")+`      weight: 80
`)
}

// TestMeshAutoProtocol serves the same service on a port named tcp-metaprotocol-auto: the proxy learns from
// each connection's first bytes that it speaks bRPC, routes on bRPC's metadata, answers in bRPC, and counts
// the calls as bRPC.
func TestMeshAutoProtocol(t *testing.T) {
	t.Parallel()
	bin := meshtest.Build(t, t.TempDir())
	block := meshtest.NewNet()
	v1, v2 := startEchoServer(t, block.Host(2), "v1"), startEchoServer(t, block.Host(3), "v2")
	svcHost := block.Host(1)
	svcAddr := net.JoinHostPort(svcHost, strconv.Itoa(meshtest.FreePort(t, svcHost)))
	dir := t.TempDir()
	meshtest.WriteAtomically(t, dir, "echo.yaml", echoManifests(t, svcAddr, "auto", v1, v2))
	mesh := meshtest.StartMesh(t, bin, dir, block.Host(4))
	meshtest.Poll(t, 10*time.Second, "the proxy to listen on "+svcAddr, func() bool {
		c, err := net.Dial("tcp", svcAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	c := dialEcho(t, svcAddr)
	for i := range 5 {
		if v, err := c.echo(echoService, "Upper", fmt.Sprint("auto-", i)); err != nil || v != "v2" {
			t.Fatalf("Upper answered by %q (%v), want v2", v, err)
		}
	}
	if _, _, err := c.call(echoService, "Missing", &echopb.EchoRequest{Message: "x"}, callOptions{}); err == nil ||
		!strings.Contains(err.Error(), "code=1001") {
		t.Fatalf("a call no route matches: %v; want bRPC error 1001", err)
	}
	mesh.WaitMetric(t, 10*time.Second, "istio_requests_total", map[string]string{"request_protocol": "brpc"},
		"6", func(v float64) bool { return v == 6 })
}
