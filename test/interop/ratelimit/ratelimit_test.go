package ratelimitinterop

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

const (
	echoHost    = "echo.ratelimit.test"
	guardedHost = "guarded.ratelimit.test"
	rlsHost     = "rate-limit-server.ratelimit.test"
	rlsCluster  = "outbound|8081||" + rlsHost
	domain      = "meltemi-test"
)

// limits is the rate limit service's config, in its own format: echo calls of user gold share 10 an hour;
// those of any other user get 3 an hour each. An hour, not a minute, so that a window does not end while a
// test runs (the service counts in fixed windows of the unit).
const limits = `domain: ` + domain + `
descriptors:
- key: method
  value: echo
  descriptors:
  - key: user
    value: gold
    rate_limit:
      unit: hour
      requests_per_unit: 10
  - key: user
    rate_limit:
      unit: hour
      requests_per_unit: 3
`

// callCounter counts calls by method.
type callCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func newCallCounter() *callCounter { return &callCounter{n: map[string]int{}} }

func (c *callCounter) add(method string) {
	c.mu.Lock()
	c.n[method]++
	c.mu.Unlock()
}

func (c *callCounter) get(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[method]
}

// manifests is what one mesh serves: the echo service at echoAddr (rate limited, letting requests through
// when the service fails) and the guarded service at guardedAddr (refusing them then), both served by the
// one Thrift server, and the rate limit service, a ServiceEntry with a plain gRPC port.
func manifests(t *testing.T, echoAddr, guardedAddr, server, rls string) string {
	t.Helper()
	serviceEntry := func(name, host, addr string) string {
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		sh, sp, _ := net.SplitHostPort(server)
		return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %s}
spec:
  hosts: [%s]
  addresses: [%s]
  ports: [{number: %s, name: tcp-metaprotocol-thrift, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: %s, ports: {tcp-metaprotocol-thrift: %s}}]
---
`, name, host, h, p, sh, sp)
	}
	router := func(name, host string, deny bool) string {
		return fmt.Sprintf(`apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: %s}
spec:
  hosts: [%s]
  globalRateLimit:
    match:
      attributes:
        method: {exact: echo}
    domain: %s
    requestTimeout: 2s
    denyOnFail: %v
    rateLimitService: %q
    descriptors:
    - {property: method, descriptorKey: method}
    - {property: user, descriptorKey: user}
---
`, name, host, domain, deny, rlsCluster)
	}
	rh, rp, _ := net.SplitHostPort(rls)
	return serviceEntry("echo", echoHost, echoAddr) + serviceEntry("guarded", guardedHost, guardedAddr) +
		router("echo", echoHost, false) + router("guarded", guardedHost, true) +
		fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: rate-limit-server}
spec:
  hosts: [%s]
  ports: [{number: 8081, name: grpc, protocol: GRPC}]
  resolution: STATIC
  endpoints: [{address: %s, ports: {grpc: %s}}]
`, rlsHost, rh, rp)
}

// overLimit reports whether err is the proxy's over-limit answer, as Apache Thrift reads it: a
// TApplicationException of type INTERNAL_ERROR naming the kind.
func overLimit(err error) bool {
	var ae thrift.TApplicationException
	return errors.As(err, &ae) && ae.TypeId() == thrift.INTERNAL_ERROR && strings.Contains(ae.Error(), "over_limit")
}

// TestGlobalRateLimit runs two `meltemi mesh` processes, each a proxy of its own, that share one real Envoy
// rate limit service and its redis-server, and calls through both with real Apache Thrift clients.
func TestGlobalRateLimit(t *testing.T) {
	block := meshtest.NewNet()
	redis := startRedis(t, block.Host(1))
	rls := startRateLimitService(t, block.Host(2), redis, limits)
	server := startEchoServer(t, block.Host(3))
	bin := meshtest.Build(t, t.TempDir())

	type mesh struct {
		admin           meshtest.Admin
		echo, guarded   *echoClient
		echoAddr, gAddr string
	}
	var meshes []*mesh
	for i := range 2 {
		// Each proxy serves the services on addresses of its own: two proxies, one set of limits.
		m := &mesh{echoAddr: meshtest.FreeAddr(t, block.Host(10+i)), gAddr: meshtest.FreeAddr(t, block.Host(20+i))}
		dir := t.TempDir()
		meshtest.WriteAtomically(t, dir, "mesh.yaml", manifests(t, m.echoAddr, m.gAddr, server.addr, rls.grpcAddr))
		m.admin = meshtest.StartMesh(t, bin, dir, block.Host(30+i))
		for _, addr := range []string{m.echoAddr, m.gAddr} {
			meshtest.Poll(t, 10*time.Second, "the proxy to listen on "+addr, func() bool {
				c, err := net.Dial("tcp", addr)
				if err == nil {
					c.Close()
				}
				return err == nil
			})
		}
		m.echo, m.guarded = dialEcho(t, m.echoAddr), dialEcho(t, m.gAddr)
		meshes = append(meshes, m)
	}
	// checks sums a ratelimit counter over both proxies.
	checks := func(name string) float64 {
		var sum float64
		for _, m := range meshes {
			sum += m.admin.Value(t, "meltemi_proxy_ratelimit_"+name+"_total", map[string]string{"domain": domain})
		}
		return sum
	}
	// burst makes n echo calls with the given headers, alternating between the proxies, and returns how many
	// passed; every other call must have been refused as over the limit.
	burst := func(t *testing.T, method string, n int, kv ...string) int {
		t.Helper()
		window := time.Now().Truncate(time.Hour)
		passed := 0
		for i := range n {
			msg := fmt.Sprint(method, "-", i)
			got, err := meshes[i%2].echo.call(method, msg, kv...)
			switch {
			case err == nil && got == msg:
				passed++
			case overLimit(err):
			default:
				t.Fatalf("call %d through proxy %d: %q, %v; want its answer or the over-limit error", i, i%2, got, err)
			}
		}
		if time.Now().Truncate(time.Hour) != window {
			t.Skip("the calls straddled the end of an hour, where the service's window starts afresh")
		}
		return passed
	}

	t.Run("one limit across two proxies", func(t *testing.T) {
		before := server.calls.get("echo")
		if got := burst(t, "echo", 16, "user", "gold"); got != 10 {
			t.Fatalf("%d of 16 calls passed across the two proxies, want the limit, 10", got)
		}
		if got := server.calls.get("echo") - before; got != 10 {
			t.Errorf("the server answered %d calls, want 10: refused calls must not reach it", got)
		}
		// The proxies count 10 allowed and 6 refused between them, each its own share.
		meshtest.Poll(t, 10*time.Second, "the proxies' counters", func() bool {
			return checks("ok") == 10 && checks("over_limit") == 6
		})
		for i, m := range meshes {
			if ok := m.admin.Value(t, "meltemi_proxy_ratelimit_ok_total", nil); ok == 0 {
				t.Errorf("proxy %d allowed nothing: the limit was not shared", i)
			}
		}
	})

	t.Run("descriptors from metadata select the limits", func(t *testing.T) {
		for _, user := range []string{"ann", "bob"} {
			if got := burst(t, "echo", 6, "user", user); got != 3 {
				t.Errorf("user %s: %d of 6 calls passed, want 3, the limit of each user but gold", user, got)
			}
		}
		// gold is still over its own limit, whatever the others did.
		if got := burst(t, "echo", 2, "user", "gold"); got != 0 {
			t.Errorf("gold: %d calls passed after its limit was reached", got)
		}
	})

	t.Run("requests not selected are never checked", func(t *testing.T) {
		ok, over := checks("ok"), checks("over_limit")
		// ping is not selected by the match; an echo call without a user lacks a descriptor's property.
		if got := burst(t, "ping", 20, "user", "gold"); got != 20 {
			t.Errorf("%d of 20 ping calls passed, want all", got)
		}
		if got := burst(t, "echo", 20); got != 20 {
			t.Errorf("%d of 20 echo calls without a user passed, want all", got)
		}
		if checks("ok") != ok || checks("over_limit") != over || checks("error") != 0 {
			t.Errorf("the rate limit service was asked about requests it should not see: ok %v→%v, over_limit %v→%v",
				ok, checks("ok"), over, checks("over_limit"))
		}
	})

	t.Run("the service down: deny on fail, or allow", func(t *testing.T) {
		rls.proc.Stop()
		m := meshes[0]
		// A selected request whose check fails passes through echo (denyOnFail false) ...
		if got, err := m.echo.call("echo", "allowed", "user", "gold"); err != nil || got != "allowed" {
			t.Errorf("echo with the service down: %q, %v; want it let through", got, err)
		}
		// ... and is refused through guarded (denyOnFail true), with the protocol's over-limit error.
		if _, err := m.guarded.call("echo", "denied", "user", "carol"); !overLimit(err) {
			t.Errorf("guarded with the service down: %v; want the over-limit error", err)
		}
		// Requests not selected are still not checked, and pass.
		if got, err := m.guarded.call("ping", "ping", "user", "carol"); err != nil || got != "ping" {
			t.Errorf("ping through guarded with the service down: %q, %v", got, err)
		}
		meshtest.Poll(t, 10*time.Second, "the failed checks to be counted", func() bool {
			v := func(name string) float64 {
				return m.admin.Value(t, "meltemi_proxy_ratelimit_"+name+"_total", map[string]string{"domain": domain})
			}
			return v("error") == 2 && v("failure_mode_allowed") == 1
		})
	})
}
