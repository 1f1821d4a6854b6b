package thriftinterop

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/test/interop/thrift/apachegen/echo"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// nonASCII is text whose bytes are not its characters: Greek, CJK, an emoji and a NUL.
const nonASCII = "μελτέμι · 季節風 · 🌬️ · nul:\x00."

// TestApache puts an in-process proxy between real Apache Thrift clients and two real Apache Thrift servers
// (v1 and v2), for each transport an Apache service may speak.
func TestApache(t *testing.T) {
	t.Parallel()
	for _, tr := range apacheTransports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			testApacheTransport(t, tr)
		})
	}
}

func testApacheTransport(t *testing.T, tr apacheTransport) {
	block := meshtest.NewNet()
	v1 := startApacheServer(t, block.Host(1), "v1", tr)
	v2 := startApacheServer(t, block.Host(2), "v2", tr)
	p := startRoutingProxy(t, block.Host(10), v1.addr, v2.addr, "env", "canary", routedByKey)
	ctx := testCtx(t)
	c := dialApache(t, p.Addr(mainListener), tr)

	t.Run("answers intact", func(t *testing.T) {
		big := strings.Repeat("0123456789abcdef", 64<<10/16)
		for name, msg := range map[string]string{"empty": "", "non-ASCII": nonASCII, "64 KiB": big,
			"64 KiB non-ASCII": strings.Repeat("é", 32<<10)} {
			got, err := c.echo.Echo(ctx, msg)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got != "v1:"+msg {
				t.Fatalf("%s: answered %d bytes %.40q; want v1: and the %d bytes sent", name, len(got), got, len(msg))
			}
		}
	})

	t.Run("routes on method", func(t *testing.T) {
		if got, err := c.echo.Echo(ctx, "a"); err != nil || got != "v1:a" {
			t.Fatalf("echo answered %q (%v); want v1:a", got, err)
		}
		// fail's route sends it to v2; its declared exception comes back as the client's error.
		_, err := c.echo.Fail(ctx, "b")
		var ee *echo.EchoError
		if !errors.As(err, &ee) || ee.Why != "v2:b" {
			t.Fatalf("fail returned %v (%T); want EchoError{why: v2:b}", err, err)
		}
	})

	t.Run("routes on multiplexed service and method", func(t *testing.T) {
		// The narrow listener routes Calc:add alone; the client's Calc calls are multiplexed.
		n := dialApache(t, p.Addr(narrowListener), tr)
		if got, err := n.calc.Add(ctx, 2, 3); err != nil || got != 5 {
			t.Fatalf("Calc:add(2, 3) answered %d (%v); want 5", got, err)
		}
	})

	t.Run("no route is a TApplicationException", func(t *testing.T) {
		n := dialApache(t, p.Addr(narrowListener), tr)
		got, err := n.echo.Echo(ctx, "nowhere")
		var tae thrift.TApplicationException
		if !errors.As(err, &tae) {
			t.Fatalf("echo with no route answered %q, %v (%T); want a TApplicationException", got, err, err)
		}
		if tae.TypeId() != thrift.UNKNOWN_METHOD || !strings.HasPrefix(tae.Error(), "meltemi: ") {
			t.Fatalf("TApplicationException type %d %q; want UNKNOWN_METHOD (%d) from meltemi", tae.TypeId(),
				tae.Error(), thrift.UNKNOWN_METHOD)
		}
		// The local reply kept the connection in step: the next call on it is answered.
		if got, err := n.calc.Add(ctx, 20, 22); err != nil || got != 42 {
			t.Fatalf("Calc:add after the local reply answered %d (%v); want 42", got, err)
		}
		p.WaitMetric("meltemi_proxy_local_replies_total", map[string]string{"listener": narrowListener},
			"at least 1", func(v float64) bool { return v >= 1 })
	})

	t.Run("oneway reaches the server", func(t *testing.T) {
		msg := "ping " + tr.name
		if err := c.echo.Notify(ctx, msg); err != nil {
			t.Fatal(err)
		}
		meshtest.Poll(t, 10*time.Second, "the oneway call to reach v1", func() bool { return v1.notifiedWith(msg) })
		// A oneway gets no reply: the next call's reply must still be its own.
		if got, err := c.echo.Echo(ctx, "after oneway"); err != nil || got != "v1:after oneway" {
			t.Fatalf("echo after the oneway answered %q (%v)", got, err)
		}
	})

	if tr.headers {
		t.Run("routes on a THeader key and the server reads the mutation", func(t *testing.T) {
			canary := withHeader(ctx, "env", "canary")
			if got, err := c.echo.Echo(canary, "c"); err != nil || got != "v2:c" {
				t.Fatalf("echo with env=canary answered %q (%v); want v2:c", got, err)
			}
			if got, err := c.echo.Header(canary, routedByKey); err != nil || got != "v2:"+routedByValue {
				t.Fatalf("v2 read %s as %q (%v); want v2:%s", routedByKey, got, err, routedByValue)
			}
			// The client's own headers pass through untouched.
			if got, err := c.echo.Header(withHeader(canary, "x-mine", nonASCII), "x-mine"); err != nil ||
				got != "v2:"+nonASCII {
				t.Fatalf("v2 read x-mine as %q (%v); want v2:%s", got, err, nonASCII)
			}
			// Calls without the key take the method's route, which sets nothing.
			if got, err := c.echo.Header(withHeader(ctx, "env", "prod"), routedByKey); err != nil || got != "v1:" {
				t.Fatalf("v1 read %s as %q (%v); want it absent", routedByKey, got, err)
			}
		})
	}

	t.Run("weighted split 20/80", func(t *testing.T) {
		const workers = 8
		clients := make([]*apacheClient, workers)
		for i := range clients {
			clients[i] = dialApache(t, p.Addr(splitListener), tr)
		}
		checkSplit(t, 1000, workers, 0.2, func(w, i int) (string, error) {
			msg := fmt.Sprint("split-", i)
			got, err := clients[w].echo.Echo(ctx, msg)
			v, rest, _ := strings.Cut(got, ":")
			if err == nil && rest != msg {
				err = fmt.Errorf("echo(%q) answered %q, not its own answer", msg, got)
			}
			return v, err
		})
	})

	t.Run("concurrent clients share the endpoint's few upstream connections", func(t *testing.T) {
		const clients, calls = 16, 50
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for k := range clients {
			c := dialApache(t, p.Addr(mainListener), tr)
			wg.Go(func() {
				for i := range calls {
					msg := fmt.Sprintf("client-%d-call-%d", k, i)
					if got, err := c.echo.Echo(ctx, msg); err != nil || got != "v1:"+msg {
						errs <- fmt.Errorf("echo(%q) answered %q (%v)", msg, got, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		// Every call of every test above, from 16 clients and more, went to v1 and v2 over the proxy's pool of
		// connections to each, every one of them multiplexing several clients.
		if n1, n2 := v1.accepted.Load(), v2.accepted.Load(); n1 != proxy.DefaultConnectionsPerEndpoint ||
			n2 != proxy.DefaultConnectionsPerEndpoint {
			t.Fatalf("servers accepted %d (v1) and %d (v2) connections from the proxy; want %d each", n1, n2,
				proxy.DefaultConnectionsPerEndpoint)
		}
	})
}
