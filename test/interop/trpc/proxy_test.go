package trpc

// Unary calls between real trpc-go clients and servers through a proxy built in-process from the public API.

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"trpc.group/trpc-go/trpc-go/client"
	"trpc.group/trpc-go/trpc-go/errs"

	"github.com/meltemi-mesh/meltemi/codec"
	meltemitrpc "github.com/meltemi-mesh/meltemi/codec/trpc"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/test/interop/trpc/echopb"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// The service as a mesh would name it, and the listener the tests send to.
const (
	echoHost  = "echo.default.svc.cluster.local"
	listener  = "trpc-in" // also its stat prefix
	canaryEnv = "canary"
)

// peers are two Echo servers, v1 and v2, each on a loopback address of its own, and the address the proxy
// listens on, in the same block.
type peers struct {
	v1, v2    *echoServer
	proxyHost string
}

func startPeers(t *testing.T) *peers {
	t.Helper()
	block := meshtest.NewNet()
	return &peers{v1: startEchoServer(t, block.Host(1), "v1"), v2: startEchoServer(t, block.Host(2), "v2"),
		proxyHost: block.Host(3)}
}

// cluster returns the cluster of one server, named as Istio names a subset's cluster.
func cluster(s *echoServer) proxy.Cluster {
	return proxy.Cluster{
		Name:      "outbound|8000|" + s.version + "|" + echoHost,
		Service:   proxy.Service{Host: echoHost, Name: "echo", Namespace: "default"},
		Endpoints: []proxy.Endpoint{{Address: s.addr, Labels: map[string]string{"app": "echo", "version": s.version}}},
	}
}

// startProxy runs a proxy with one tRPC listener on the peers' proxy address, the given routes, and a cluster
// for each server.
func (p *peers) startProxy(t *testing.T, routes ...proxy.Route) *meshtest.Proxy {
	t.Helper()
	return meshtest.StartProxy(t, &proxy.Config{
		Listeners: []proxy.Listener{{
			Name:    listener,
			Address: p.proxyHost + ":0",
			Codec:   proxy.CodecConfig{Name: meltemitrpc.Name},
			Routes:  proxy.RouteConfig{Name: "echo", Routes: routes},
		}},
		Clusters: []proxy.Cluster{cluster(p.v1), cluster(p.v2)},
	}, meltemitrpc.Registration())
}

func to(s *echoServer) string { return cluster(s).Name }

func exact(key, value string) []proxy.MetadataMatcher {
	return []proxy.MetadataMatcher{{Key: key, Kind: proxy.MatchExact, Value: value}}
}

// TestCallsThroughProxy sends calls through a catch-all route and checks the answers arrive intact.
func TestCallsThroughProxy(t *testing.T) {
	t.Parallel()
	p := startPeers(t)
	px := p.startProxy(t, proxy.Route{Name: "all", Cluster: to(p.v1)})
	addr, ctx := px.Addr(listener), testCtx(t)

	big := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	for _, tt := range []struct {
		name string
		req  *echopb.EchoRequest
	}{
		{"text", &echopb.EchoRequest{Text: "hello meltemi"}},
		{"empty", &echopb.EchoRequest{}},
		{"unicode", &echopb.EchoRequest{Text: "héllo wörld ☃ 𝄞"}},
		{"64 KiB payload", &echopb.EchoRequest{Text: "big", Payload: big}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rsp, err := call(ctx, addr, funcSay, tt.req)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if rsp.GetVersion() != "v1" || rsp.GetText() != tt.req.GetText() || !bytes.Equal(rsp.GetPayload(), tt.req.GetPayload()) {
				t.Fatalf("answer from %q: text %q, %d payload bytes; want v1 echoing %q and %d bytes", rsp.GetVersion(),
					rsp.GetText(), len(rsp.GetPayload()), tt.req.GetText(), len(tt.req.GetPayload()))
			}
			if rsp.GetFunc() != funcSay {
				t.Fatalf("server dispatched on %q; want %q", rsp.GetFunc(), funcSay)
			}
		})
	}
}

// TestRouting routes on each key the codec exposes: caller, callee and func from the request header, and a
// trans_info key set with client.WithMetaData. Every route sends to v2, and the last route sends Say to v1, so
// a match that fails to fire shows as an answer from v1.
func TestRouting(t *testing.T) {
	t.Parallel()
	p := startPeers(t)
	px := p.startProxy(t,
		proxy.Route{Name: "by-caller", Match: exact("caller", "trpc.meltemi.canary.client"), Cluster: to(p.v2)},
		proxy.Route{Name: "by-callee", Match: exact("callee", "trpc.meltemi.echo.EchoCanary"), Cluster: to(p.v2)},
		proxy.Route{Name: "by-trans-info", Match: exact("env", canaryEnv), Cluster: to(p.v2)},
		proxy.Route{Name: "by-func", Match: exact("func", funcShout), Cluster: to(p.v2)},
		proxy.Route{Name: "say", Match: exact("func", funcSay), Cluster: to(p.v1)},
	)
	addr, ctx := px.Addr(listener), testCtx(t)

	for _, tt := range []struct {
		name string
		fn   string
		opts []client.Option
		want string
	}{
		{"func Say", funcSay, nil, "v1"},
		{"func Shout", funcShout, nil, "v2"},
		{"caller", funcSay, []client.Option{client.WithCallerServiceName("trpc.meltemi.canary.client")}, "v2"},
		{"other caller", funcSay, []client.Option{client.WithCallerServiceName("trpc.meltemi.other.client")}, "v1"},
		{"callee", funcSay, []client.Option{client.WithServiceName("trpc.meltemi.echo.EchoCanary")}, "v2"},
		{"trans_info", funcSay, []client.Option{client.WithMetaData("env", []byte(canaryEnv))}, "v2"},
		{"other trans_info value", funcSay, []client.Option{client.WithMetaData("env", []byte("prod"))}, "v1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 5 {
				rsp, err := call(ctx, addr, tt.fn, &echopb.EchoRequest{Text: fmt.Sprint(tt.name, i)}, tt.opts...)
				if err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				if rsp.GetVersion() != tt.want || rsp.GetFunc() != tt.fn {
					t.Fatalf("call %d of %s answered by %q; want %q", i, rsp.GetFunc(), rsp.GetVersion(), tt.want)
				}
			}
		})
	}
}

// TestNoRoute: a call no route matches gets the proxy's own error reply, which trpc-go's client reports as a
// callee framework error with the codec's code for RouteNotFound (11, TRPC_SERVER_NOSERVICE_ERR; a trpc-go
// server would answer an unknown func with 12). The connection stays usable.
func TestNoRoute(t *testing.T) {
	t.Parallel()
	p := startPeers(t)
	px := p.startProxy(t, proxy.Route{Name: "say", Match: exact("func", funcSay), Cluster: to(p.v1)})
	addr, ctx := px.Addr(listener), testCtx(t)
	// One connection for both calls, so the second shows the first left it usable.
	mux := client.WithMultiplexed(true)

	_, err := call(ctx, addr, funcShout, &echopb.EchoRequest{Text: "nowhere"}, mux)
	var e *errs.Error
	if !errors.As(err, &e) {
		t.Fatalf("call with no route returned %v (%T); want an *errs.Error", err, err)
	}
	want := meltemitrpc.ErrorRet(codec.RouteNotFound)
	if e.Type != errs.ErrorTypeCalleeFramework || int32(errs.Code(err)) != want || !strings.Contains(e.Msg, "no route") {
		t.Fatalf("client reports type %d code %d message %q; want a callee framework error (type %d) with code %d "+
			"and a message saying there is no route", e.Type, errs.Code(err), e.Msg, errs.ErrorTypeCalleeFramework, want)
	}
	t.Logf("trpc-go client reports: %v", err)
	px.WaitMetric("meltemi_proxy_local_replies_total", nil, "1", func(v float64) bool { return v == 1 })

	if _, err := say(ctx, addr, "after the error", mux); err != nil {
		t.Fatalf("call after the error reply: %v", err)
	}
}

// TestWeightedSplit sends 1000 calls to a 30/70 split of v1 and v2.
func TestWeightedSplit(t *testing.T) {
	t.Parallel()
	p := startPeers(t)
	px := p.startProxy(t, proxy.Route{Name: "split",
		WeightedClusters: []proxy.WeightedCluster{{Name: to(p.v1), Weight: 30}, {Name: to(p.v2), Weight: 70}}})
	counts := splitCalls(t, px.Addr(listener), funcSay, 1000)
	checkSplit(t, counts, 1000, 0.3)
}

// splitCalls makes n Say calls from 8 concurrent callers and counts the answers by version.
func splitCalls(t *testing.T, addr, fn string, n int) map[string]int {
	t.Helper()
	ctx := testCtx(t)
	var mu sync.Mutex
	counts := map[string]int{}
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				rsp, err := call(ctx, addr, fn, &echopb.EchoRequest{Text: fmt.Sprint("split-", i)})
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				mu.Lock()
				counts[rsp.GetVersion()]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d calls failed, first: %v", failed.Load(), n, firstErr.Load())
	}
	return counts
}

// checkSplit requires v1's share of n calls to be within 4.5 binomial standard deviations of p: a correct split
// falls outside about once in 150,000 runs.
func checkSplit(t *testing.T, counts map[string]int, n int, p float64) {
	t.Helper()
	sigma := math.Sqrt(float64(n) * p * (1 - p))
	lo, hi := int(math.Ceil(float64(n)*p-4.5*sigma)), int(math.Floor(float64(n)*p+4.5*sigma))
	t.Logf("v1 %d, v2 %d of %d (v1 must be within [%d, %d])", counts["v1"], counts["v2"], n, lo, hi)
	if counts["v1"]+counts["v2"] != n || counts["v1"] < lo || counts["v1"] > hi {
		t.Fatalf("answers by version %v of %d calls; want v1 within [%d, %d] for a %.0f/%.0f split", counts, n, lo, hi,
			100*p, 100*(1-p))
	}
}

// TestRequestMutation: trans_info keys a route sets reach the server, which reads them with trpc.GetMetaData;
// a key the client set too is overridden, and the client's other keys are kept.
func TestRequestMutation(t *testing.T) {
	t.Parallel()
	p := startPeers(t)
	route := proxy.Route{Name: "stamp", Cluster: to(p.v1), RequestMutation: []codec.KeyValue{
		{Key: "x-routed-by", Value: "meltemi"}, {Key: "x-override", Value: "from-proxy"}}}
	px := p.startProxy(t, route)
	addr, ctx := px.Addr(listener), testCtx(t)

	for _, tt := range []struct {
		name string
		opts []client.Option
		want map[string]string
	}{
		{"no client metadata", nil, map[string]string{"x-routed-by": "meltemi", "x-override": "from-proxy"}},
		{"client metadata kept and overridden",
			[]client.Option{client.WithMetaData("x-override", []byte("from-client")),
				client.WithMetaData("x-keep", []byte("kept"))},
			map[string]string{"x-routed-by": "meltemi", "x-override": "from-proxy", "x-keep": "kept"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rsp, err := say(ctx, addr, tt.name, tt.opts...)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			got := map[string]string{}
			for k, v := range rsp.GetMetadata() {
				got[k] = string(v)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("server read metadata %v; want %v", got, tt.want)
			}
		})
	}
}

// TestOneway: a call made with client.WithSendOnly reaches the server once, and the client connection it went
// on still carries a two-way call afterwards.
func TestOneway(t *testing.T) {
	t.Parallel()
	p := startPeers(t)
	px := p.startProxy(t, proxy.Route{Name: "all", Cluster: to(p.v1)})
	addr, ctx := px.Addr(listener), testCtx(t)
	mux := client.WithMultiplexed(true)

	if _, err := call(ctx, addr, funcNotify, &echopb.EchoRequest{Text: "fire"}, client.WithSendOnly(), mux); err != nil {
		t.Fatalf("oneway call: %v", err)
	}
	meshtest.Poll(t, callTimeout, "the server to receive the oneway Notify", func() bool {
		return p.v1.notifiedCount("fire") == 1
	})
	if _, err := say(ctx, addr, "after oneway", mux); err != nil {
		t.Fatalf("call after the oneway call: %v", err)
	}
	if n := p.v1.notifiedCount("fire"); n != 1 {
		t.Fatalf("the server received Notify %d times; want once", n)
	}
}

// TestMultiplexing sends 64 concurrent calls on one client connection (trpc-go's multiplexed pool) and checks
// each caller gets its own answer, over one upstream connection.
func TestMultiplexing(t *testing.T) {
	t.Parallel()
	p := startPeers(t)
	px := p.startProxy(t, proxy.Route{Name: "all", Cluster: to(p.v1)})
	addr, ctx := px.Addr(listener), testCtx(t)

	const callers = 64
	var mu sync.Mutex
	remotes := map[string]int{}
	errc := make(chan error, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			// Distinct texts of distinct lengths, so a mixed-up answer cannot pass for the right one.
			text := fmt.Sprintf("caller-%02d-%s", i, strings.Repeat("x", i*37))
			rsp, err := say(ctx, addr, text, client.WithMultiplexed(true))
			if err != nil {
				errc <- fmt.Errorf("caller %d: %w", i, err)
				return
			}
			mu.Lock()
			remotes[rsp.GetRemote()]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if len(remotes) != 1 {
		t.Errorf("the server saw calls on %d connections (%v); want them multiplexed on one", len(remotes), remotes)
	}
	m := px.Metrics()
	if n := m.Sum("meltemi_proxy_upstream_connects_total", map[string]string{"address": p.v1.addr}); n != 1 {
		t.Errorf("upstream connects to %s = %v; want 1:\n%s", p.v1.addr, n,
			m.Describe("meltemi_proxy_upstream_connects_total"))
	}
	if n := m.Sum("meltemi_proxy_downstream_connections_total", map[string]string{"listener": listener}); n != 1 {
		t.Errorf("downstream connections = %v; want the client's one:\n%s", n,
			m.Describe("meltemi_proxy_downstream_connections_total"))
	}
}
