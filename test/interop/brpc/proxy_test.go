package brpcinterop

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/brpc"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/test/interop/brpc/echopb"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// The in-process tests run a proxy built from Meltemi's public API between real pbrpc clients and two real
// pbrpc servers, v1 and v2, each on a loopback address of its own.

// echoHost is the service the servers stand for, as a mesh would name it.
const echoHost = "echo.interop.svc.cluster.local"

// Clusters of the echo service's subsets, named as Istio names them.
var (
	clusterV1 = "outbound|8000|v1|" + echoHost
	clusterV2 = "outbound|8000|v2|" + echoHost
)

// bench is a proxy in front of two echo servers.
type bench struct {
	v1, v2 *echoServer
	proxy  *meshtest.Proxy
	host   string // the proxy listener's host; the port is the kernel's choice
	addr   string // the proxy listener's bound address
}

// listenerName names the proxy's bRPC listener (also its stat prefix).
const listenerName = "brpc-in"

// startBench starts the servers on hosts 2 and 3 of a block of the test's own, and a proxy listening on host
// 1 with routes.
func startBench(t *testing.T, routes ...proxy.Route) *bench {
	t.Helper()
	block := meshtest.NewNet()
	b := &bench{v1: startEchoServer(t, block.Host(2), "v1"), v2: startEchoServer(t, block.Host(3), "v2"),
		host: block.Host(1)}
	b.proxy = meshtest.StartProxy(t, b.config(routes...), brpc.Registration())
	b.addr = b.proxy.Addr(listenerName)
	return b
}

// config is the proxy's config: one bRPC listener with routes, and a cluster for each subset. The listener's
// name and address stay the same from one config to the next, so it keeps its socket. Each endpoint gets one
// upstream connection, which every client shares: the tests check how correlation ids are kept apart on it.
func (b *bench) config(routes ...proxy.Route) *proxy.Config {
	cluster := func(name string, s *echoServer) proxy.Cluster {
		return proxy.Cluster{
			Name:                   name,
			Service:                proxy.Service{Host: echoHost, Name: "echo", Namespace: "interop"},
			ConnectionsPerEndpoint: 1,
			Subset:                 map[string]string{"version": s.Version},
			Endpoints: []proxy.Endpoint{
				{Address: b.v1.Addr, Labels: map[string]string{"app": "echo", "version": "v1"}},
				{Address: b.v2.Addr, Labels: map[string]string{"app": "echo", "version": "v2"}},
			},
		}
	}
	return &proxy.Config{
		Listeners: []proxy.Listener{{
			Name:    listenerName,
			Address: b.host + ":0",
			Codec:   proxy.CodecConfig{Name: brpc.Name},
			Routes:  proxy.RouteConfig{Name: "echo", Routes: routes},
		}},
		Clusters: []proxy.Cluster{cluster(clusterV1, b.v1), cluster(clusterV2, b.v2)},
	}
}

// match is a route condition that key equals value.
func match(key, value string) proxy.MetadataMatcher {
	return proxy.MetadataMatcher{Key: key, Kind: proxy.MatchExact, Value: value}
}

// TestIntactCalls checks that calls come back as the server answered them: a small one, one with a 64 KiB
// payload and an attachment (which pbrpc carries after the payload), and a gzip-compressed one with a log id,
// whose body the proxy must forward without reading it.
func TestIntactCalls(t *testing.T) {
	t.Parallel()
	b := startBench(t, proxy.Route{Name: "all", Cluster: clusterV1})
	c := dialEcho(t, b.addr)
	rng := rand.New(rand.NewChaCha8([32]byte{'b', 'r', 'p', 'c'}))
	random := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		return p
	}

	for _, tc := range []struct {
		name string
		req  *echopb.EchoRequest
		opts callOptions
	}{
		{name: "small", req: &echopb.EchoRequest{Message: "hello"}},
		{name: "64 KiB payload and attachment", req: &echopb.EchoRequest{Message: "big", Payload: random(64 << 10)},
			opts: callOptions{attachment: random(4 << 10)}},
		{name: "gzip and log id", req: &echopb.EchoRequest{Message: strings.Repeat("squeeze ", 1000),
			Payload: bytes.Repeat([]byte{7}, 20000)}, opts: callOptions{gzip: true, logID: 424242}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, pkg, err := c.call(echoService, "Echo", tc.req, tc.opts)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if out.GetMessage() != tc.req.GetMessage() || !bytes.Equal(out.GetPayload(), tc.req.GetPayload()) {
				t.Fatalf("answer: message of %d bytes, payload of %d bytes; sent %d and %d bytes",
					len(out.GetMessage()), len(out.GetPayload()), len(tc.req.GetMessage()), len(tc.req.GetPayload()))
			}
			if out.GetVersion() != "v1" || out.GetService() != echoService || out.GetMethod() != "Echo" {
				t.Fatalf("answered by %s for %s/%s", out.GetVersion(), out.GetService(), out.GetMethod())
			}
			if !bytes.Equal(pkg.GetAttachment(), tc.opts.attachment) {
				t.Fatalf("attachment: got %d bytes back, sent %d", len(pkg.GetAttachment()), len(tc.opts.attachment))
			}
			if out.GetLogId() != tc.opts.logID {
				t.Fatalf("the server read log id %d, the client sent %d", out.GetLogId(), tc.opts.logID)
			}
			if got := pkg.GetMeta().GetResponse().GetErrorCode(); got != 0 {
				t.Fatalf("response error_code %d", got)
			}
		})
	}
}

// TestRoutingOnMetadata routes on each key the codec exposes, `service`, `method` and Aeraki's `cmd`, to the
// v1 and v2 servers, which both serve every method: only the routes decide who answers.
func TestRoutingOnMetadata(t *testing.T) {
	t.Parallel()
	b := startBench(t,
		proxy.Route{Name: "by-service", Match: []proxy.MetadataMatcher{match("service", adminService)}, Cluster: clusterV2},
		proxy.Route{Name: "by-cmd", Match: []proxy.MetadataMatcher{match("cmd", echoService+"/Upper")}, Cluster: clusterV2},
		proxy.Route{Name: "by-method", Match: []proxy.MetadataMatcher{match("method", "Echo")}, Cluster: clusterV1},
	)
	c := dialEcho(t, b.addr)
	for _, tc := range []struct {
		service, method, want string
	}{
		{adminService, "Echo", "v2"}, // by service, although its method is Echo
		{echoService, "Upper", "v2"}, // by cmd
		{echoService, "Echo", "v1"},  // by method
	} {
		for i := range 5 {
			got, err := c.echo(tc.service, tc.method, fmt.Sprint("route-", i))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("%s/%s answered by %s, want %s", tc.service, tc.method, got, tc.want)
			}
		}
	}
}

// TestRequestMutation checks that user_fields a route sets reach the server. A pbrpc handler cannot read
// them (pbrpc's RpcMeta has no user_fields), so the test looks at what the server really received: the
// frames its socket delivered, decoded by pbrpc's reader, and the response the real server built from the
// request's meta, which keeps the fields pbrpc does not know and so carries them back to the client.
func TestRequestMutation(t *testing.T) {
	t.Parallel()
	stamp := []codec.KeyValue{{Key: "x-routed-by", Value: "meltemi"}, {Key: "x-lane", Value: "canary"}}
	b := startBench(t,
		proxy.Route{Name: "stamped", Match: []proxy.MetadataMatcher{match("method", "Echo")}, Cluster: clusterV2,
			RequestMutation: stamp},
		proxy.Route{Name: "plain", Cluster: clusterV2},
	)
	c := dialEcho(t, b.addr)
	payload := bytes.Repeat([]byte("p"), 3000)
	_, stampedResp, err := c.call(echoService, "Echo", &echopb.EchoRequest{Message: "stamp me", Payload: payload},
		callOptions{attachment: []byte("att"), logID: 7})
	if err != nil {
		t.Fatalf("stamped call: %v", err)
	}
	_, plainResp, err := c.call(echoService, "Upper", &echopb.EchoRequest{Message: "leave me"}, callOptions{})
	if err != nil {
		t.Fatalf("plain call: %v", err)
	}

	want := map[string]string{"x-routed-by": "meltemi", "x-lane": "canary"}
	frames := b.v2.tap.allReceived(t)
	if len(frames) != 2 || b.v1.tap.connections() != 0 {
		t.Fatalf("v2 read %d frames and v1 %d connections; want 2 frames at v2 only", len(frames),
			b.v1.tap.connections())
	}
	stamped, plain := frames[0], frames[1]
	if got := userFields(t, stamped.GetMeta()); !maps.Equal(got, want) {
		t.Errorf("user_fields the server read with the stamped call: %v, want %v", got, want)
	}
	// The rest of the frame is as the client sent it.
	req := stamped.GetMeta().GetRequest()
	in := &echopb.EchoRequest{}
	if err := proto.Unmarshal(stamped.GetData(), in); err != nil || in.GetMessage() != "stamp me" ||
		!bytes.Equal(in.GetPayload(), payload) || string(stamped.GetAttachment()) != "att" ||
		req.GetServiceName() != echoService || req.GetMethodName() != "Echo" || req.GetLogId() != 7 {
		t.Errorf("the stamped request as the server read it: %s/%s log id %d, message %q, payload %d bytes, "+
			"attachment %q (%v)", req.GetServiceName(), req.GetMethodName(), req.GetLogId(), in.GetMessage(),
			len(in.GetPayload()), stamped.GetAttachment(), err)
	}
	if got := userFields(t, plain.GetMeta()); len(got) != 0 {
		t.Errorf("user_fields the server read with the call of the route without a mutation: %v", got)
	}
	// The real server answered with the meta it read, so the client sees the fields it never sent.
	if got := userFields(t, stampedResp.GetMeta()); !maps.Equal(got, want) {
		t.Errorf("user_fields in the response to the stamped call: %v, want %v", got, want)
	}
	if got := userFields(t, plainResp.GetMeta()); len(got) != 0 {
		t.Errorf("user_fields in the response to the plain call: %v", got)
	}
}

// TestNoRouteLocalError checks the proxy's own answer to a call no route matches: the real pbrpc client
// reports it as a server error with bRPC's ENOSERVICE (1001) and the proxy's reason, and its connection
// keeps serving.
func TestNoRouteLocalError(t *testing.T) {
	t.Parallel()
	b := startBench(t, proxy.Route{Name: "echo-only", Match: []proxy.MetadataMatcher{match("method", "Echo")},
		Cluster: clusterV1})
	c := dialEcho(t, b.addr)
	_, pkg, err := c.call(echoService, "Missing", &echopb.EchoRequest{Message: "x"}, callOptions{})
	if err == nil {
		t.Fatal("a call no route matches succeeded")
	}
	const wantErr = "[client-002]Server response error. code=1001, msg='meltemi: route_not_found: "
	if !strings.HasPrefix(err.Error(), wantErr) {
		t.Fatalf("the pbrpc client reports %q; want it to start with %q", err, wantErr)
	}
	if code := pkg.GetMeta().GetResponse().GetErrorCode(); code != 1001 {
		t.Fatalf("response error_code %d, want 1001", code)
	}
	t.Logf("pbrpc client error: %v", err)
	if v, err := c.echo(echoService, "Echo", "after the error"); err != nil || v != "v1" {
		t.Fatalf("a call after the local error on the same connection: %s, %v", v, err)
	}
	if n := b.v1.tap.connections() + b.v2.tap.connections(); n != 1 {
		t.Fatalf("the servers accepted %d connections; want only the one for the routed call", n)
	}
	if frames := b.v1.tap.allReceived(t); len(frames) != 1 || frames[0].GetMeta().GetRequest().GetMethodName() != "Echo" {
		t.Fatalf("v1 read %d frames; want only the routed Echo", len(frames))
	}
	b.proxy.WaitMetric("meltemi_proxy_local_replies_total",
		map[string]string{"listener": listenerName, "reason": codec.RouteNotFound.String()}, "1",
		func(v float64) bool { return v == 1 })
	b.proxy.WaitMetric("istio_requests_total", map[string]string{"response_flags": "NR", "request_protocol": "brpc"},
		"1", func(v float64) bool { return v == 1 })
}

// TestMultiplexedUpstream runs many concurrent calls from several clients, whose correlation ids overlap
// (each counts from 1), over the proxy's one connection to the server: every caller gets its own answer,
// which it could not if two calls in flight shared an id upstream.
func TestMultiplexedUpstream(t *testing.T) {
	t.Parallel()
	const clients, callersPer, callsPer = 4, 8, 50
	b := startBench(t, proxy.Route{Name: "all", Cluster: clusterV1})
	calls := runCallers(t, b.addr, clients, callersPer, callsPer, "mux")

	if n := b.v1.tap.connections(); n != 1 {
		t.Fatalf("the server accepted %d connections; want the calls multiplexed on one", n)
	}
	if got := len(b.v1.tap.allReceived(t)); got != calls {
		t.Fatalf("the server read %d calls; want %d", got, calls)
	}
	b.proxy.WaitMetric("meltemi_proxy_upstream_connects_total", map[string]string{"address": b.v1.Addr}, "1",
		func(v float64) bool { return v == 1 })
}

// runCallers starts callersPer goroutines on each of clients new clients of addr, each making callsPer
// calls of Echo with a message of its own and checking its answer, and returns how many calls were made.
func runCallers(t *testing.T, addr string, clients, callersPer, callsPer int, tag string) int {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, clients*callersPer)
	for ci := range clients {
		c := dialEcho(t, addr)
		for k := range callersPer {
			wg.Go(func() {
				for i := range callsPer {
					if _, err := c.echo(echoService, "Echo", fmt.Sprintf("%s-%d-%d-%d", tag, ci, k, i)); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	return clients * callersPer * callsPer
}

// TestCorrelationIDWidths makes enough calls that the correlation ids, the client's and the proxy's, need
// one, two and then three varint bytes; then a new client (ids from 1) shares the proxy's busy upstream
// connection with the old one; then the old client (ids past 16383) moves to a new upstream connection. The
// proxy picks upstream ids as wide as the client's, so the server sees ids past 16383 there too.
func TestCorrelationIDWidths(t *testing.T) {
	t.Parallel()
	const warmup, callers, followUp = 17000, 8, 300
	b := startBench(t, proxy.Route{Name: "all", Cluster: clusterV1})
	busy := dialEcho(t, b.addr)
	callAll := func(c *echoClient, n int, tag, want string) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		for k := range callers {
			wg.Go(func() {
				for i := k; i < n; i += callers {
					v, err := c.echo(echoService, "Echo", fmt.Sprintf("%s-%d", tag, i))
					if err == nil && v != want {
						err = fmt.Errorf("%s call %d answered by %s, want %s", tag, i, v, want)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}

	callAll(busy, warmup, "warmup", "v1")
	maxID := func(s *echoServer) int64 {
		var m int64
		for _, f := range s.tap.allReceived(t) {
			m = max(m, f.GetMeta().GetCorrelationId())
		}
		return m
	}
	if got := maxID(b.v1); got <= 16383 {
		t.Fatalf("the largest correlation id the server saw is %d; the test needs ids past 16383", got)
	}

	// A new client counts from 1 while the proxy's upstream ids are past 16383.
	fresh := dialEcho(t, b.addr)
	callAll(fresh, followUp, "fresh", "v1")

	// The busy client's ids are past 16383; v2 is a new upstream connection.
	b.proxy.Apply(b.config(proxy.Route{Name: "all", Cluster: clusterV2}))
	callAll(busy, followUp, "moved", "v2")
	if got := maxID(b.v2); got <= 16383 {
		t.Fatalf("the v2 server saw correlation ids up to %d; the proxy's ids should be as wide as the client's", got)
	}
	if n := b.v1.tap.connections(); n != 1 {
		t.Fatalf("v1 accepted %d connections; want one for all %d calls", n, warmup+followUp)
	}
}
