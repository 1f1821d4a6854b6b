package trpc

// trpc-go bidirectional streams (INIT, DATA, FEEDBACK, CLOSE frames) through the in-process proxy: a client's
// INIT is routed like a unary request, and every later frame of the stream must go to the upstream the INIT
// went to.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"trpc.group/trpc-go/trpc-go/client"
	"trpc.group/trpc-go/trpc-go/errs"

	"github.com/meltemi-mesh/meltemi/codec"
	meltemitrpc "github.com/meltemi-mesh/meltemi/codec/trpc"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/test/interop/trpc/echopb"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// streamCtx bounds one stream: a proxy that drops stream frames fails the test in seconds, not at the
// test binary's timeout.
func streamCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

// TestStreamThroughProxy runs a bidirectional stream through a catch-all route: every message is answered
// intact (a 64 KiB one too, more than trpc-go's initial flow-control window of 64 KiB over two messages, so
// FEEDBACK frames must pass), by the same server on the same upstream connection, and the route's mutation
// of the INIT's trans_info reaches the server. Closing the client's side ends the stream cleanly.
func TestStreamThroughProxy(t *testing.T) {
	t.Parallel()
	p := startPeers(t)
	px := p.startProxy(t, proxy.Route{Name: "all", Cluster: to(p.v1),
		RequestMutation: []codec.KeyValue{{Key: "x-routed-by", Value: "meltemi"}}})
	addr := px.Addr(listener)

	s, err := newStreamClient().chat(streamCtx(t), addr, client.WithMetaData("x-keep", []byte("kept")))
	if err != nil {
		t.Fatalf("open the stream: %v", err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	remotes := map[string]bool{}
	for i := range 20 {
		req := &echopb.EchoRequest{Text: fmt.Sprint("message-", i)}
		if i%5 == 4 {
			req.Payload = big
		}
		if err := s.SendMsg(req); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		rsp := &echopb.EchoReply{}
		if err := s.RecvMsg(rsp); err != nil {
			t.Fatalf("receive %d: %v", i, err)
		}
		if rsp.GetText() != req.GetText() || !bytes.Equal(rsp.GetPayload(), req.GetPayload()) || rsp.GetVersion() != "v1" {
			t.Fatalf("message %d answered by %q with %q and %d payload bytes; want v1 echoing %q and %d bytes", i,
				rsp.GetVersion(), rsp.GetText(), len(rsp.GetPayload()), req.GetText(), len(req.GetPayload()))
		}
		if md := rsp.GetMetadata(); string(md["x-routed-by"]) != "meltemi" || string(md["x-keep"]) != "kept" {
			t.Fatalf("the server read the stream's metadata as %q; want x-routed-by=meltemi and x-keep=kept", md)
		}
		remotes[rsp.GetRemote()] = true
	}
	if len(remotes) != 1 {
		t.Fatalf("the stream's messages reached the server on %d connections: %v", len(remotes), remotes)
	}
	if err := closeChat(s); err != nil {
		t.Fatal(err)
	}
	if errs := p.v1.failedChats(); len(errs) != 0 {
		t.Fatalf("the server's stream failed: %v", errs)
	}
}

// TestStreamRouting routes INITs like unary requests, on func, caller and a trans_info key; every message of
// a stream is then answered by the server its INIT went to.
func TestStreamRouting(t *testing.T) {
	t.Parallel()
	p := startPeers(t)
	px := p.startProxy(t,
		proxy.Route{Name: "by-trans-info", Match: exact("env", canaryEnv), Cluster: to(p.v2)},
		proxy.Route{Name: "by-caller", Match: exact("caller", "trpc.meltemi.canary.client"), Cluster: to(p.v2)},
		proxy.Route{Name: "chat", Match: exact("func", funcChat), Cluster: to(p.v1)},
	)
	addr := px.Addr(listener)
	sc := newStreamClient()

	for _, tt := range []struct {
		name string
		opts []client.Option
		want string
	}{
		{"func", nil, "v1"},
		{"trans_info", []client.Option{client.WithMetaData("env", []byte(canaryEnv))}, "v2"},
		{"other trans_info value", []client.Option{client.WithMetaData("env", []byte("prod"))}, "v1"},
		{"caller", []client.Option{client.WithCallerServiceName("trpc.meltemi.canary.client")}, "v2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := sc.chat(streamCtx(t), addr, tt.opts...)
			if err != nil {
				t.Fatalf("open the stream: %v", err)
			}
			for i := range 5 {
				rsp, err := exchange(s, fmt.Sprint(tt.name, i))
				if err != nil {
					t.Fatal(err)
				}
				if rsp.GetVersion() != tt.want || rsp.GetFunc() != funcChat {
					t.Fatalf("message %d of %s answered by %q; want %q", i, rsp.GetFunc(), rsp.GetVersion(), tt.want)
				}
			}
			if err := closeChat(s); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestStreamsPinned opens 32 concurrent streams on one client connection, split 50/50 between v1 and v2, and
// interleaves their messages: each stream's messages are all answered by one server on one upstream
// connection, both servers get streams, and the proxy opens one upstream connection per server.
func TestStreamsPinned(t *testing.T) {
	t.Parallel()
	p := startPeers(t)
	px := p.startProxy(t, proxy.Route{Name: "split",
		WeightedClusters: []proxy.WeightedCluster{{Name: to(p.v1), Weight: 50}, {Name: to(p.v2), Weight: 50}}})
	addr := px.Addr(listener)
	sc := newStreamClient() // one client stream transport: its streams to addr share one connection

	const streams, messages = 32, 10
	type seen struct{ version, remote string }
	var mu sync.Mutex
	byStream := map[int]map[seen]int{}
	errc := make(chan error, streams)
	var opened, ready sync.WaitGroup
	opened.Add(streams)
	start := make(chan struct{})
	for i := range streams {
		ready.Go(func() {
			s, err := sc.chat(streamCtx(t), addr)
			opened.Done()
			if err != nil {
				errc <- fmt.Errorf("stream %d: open: %w", i, err)
				return
			}
			<-start // every stream is open before any sends, so their frames interleave on the connection
			for j := range messages {
				rsp, err := exchange(s, fmt.Sprintf("stream-%02d-message-%d-%s", i, j, strings.Repeat("x", i)))
				if err != nil {
					errc <- fmt.Errorf("stream %d: %w", i, err)
					return
				}
				mu.Lock()
				if byStream[i] == nil {
					byStream[i] = map[seen]int{}
				}
				byStream[i][seen{rsp.GetVersion(), rsp.GetRemote()}]++
				mu.Unlock()
			}
			if err := closeChat(s); err != nil {
				errc <- fmt.Errorf("stream %d: %w", i, err)
			}
		})
	}
	opened.Wait()
	close(start)
	ready.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	versions := map[string]int{}
	for i, s := range byStream {
		if len(s) != 1 {
			t.Errorf("stream %d was answered by more than one server or connection: %v", i, s)
		}
		for k := range s {
			versions[k.version]++
		}
	}
	t.Logf("streams by version: %v", versions)
	// A 50/50 split of 32 streams sends them all to one server about once in 2 billion runs.
	if versions["v1"] == 0 || versions["v2"] == 0 {
		t.Errorf("streams by version %v; want both servers to get some of a 50/50 split", versions)
	}
	m := px.Metrics()
	if n := m.Sum("meltemi_proxy_downstream_connections_total", map[string]string{"listener": listener}); n != 1 {
		t.Errorf("downstream connections = %v; want the client's one:\n%s", n,
			m.Describe("meltemi_proxy_downstream_connections_total"))
	}
	for _, srv := range []*echoServer{p.v1, p.v2} {
		if n := m.Sum("meltemi_proxy_upstream_connects_total", map[string]string{"address": srv.addr}); n != 1 {
			t.Errorf("upstream connects to %s = %v; want 1:\n%s", srv.addr, n,
				m.Describe("meltemi_proxy_upstream_connects_total"))
		}
	}
}

// TestStreamNoRoute: an INIT no route matches is refused with the proxy's INIT reply, which trpc-go's
// NewStream returns as a framework error with the RouteNotFound code; the client connection still works.
func TestStreamNoRoute(t *testing.T) {
	t.Parallel()
	p := startPeers(t)
	px := p.startProxy(t, proxy.Route{Name: "say", Match: exact("func", funcSay), Cluster: to(p.v1)})
	addr := px.Addr(listener)
	sc := newStreamClient()

	_, err := sc.chat(streamCtx(t), addr)
	var e *errs.Error
	if !errors.As(err, &e) {
		t.Fatalf("opening a stream with no route returned %v (%T); want an *errs.Error", err, err)
	}
	want := meltemitrpc.ErrorRet(codec.RouteNotFound)
	if int32(errs.Code(err)) != want || !strings.Contains(e.Msg, "no route") {
		t.Fatalf("client reports type %d code %d message %q; want code %d and a message saying there is no route",
			e.Type, errs.Code(err), e.Msg, want)
	}
	t.Logf("trpc-go client reports: %v", err)
	if n := len(p.v1.failedChats()) + len(p.v2.failedChats()); n != 0 {
		t.Fatalf("a refused stream reached a server")
	}
	if _, err := say(testCtx(t), addr, "after the refused stream"); err != nil {
		t.Fatalf("unary call after the refused stream: %v", err)
	}
}

// TestStreamIdleTimeout: a stream on which nobody sends for the listener's StreamIdleTimeout is reset by the
// proxy: the client's pending receive fails with the reset's Timeout code and message, the stream is counted
// with the SI flag, and the connections stay usable for a new stream. (The proxy resets the server's side too,
// but a trpc-go v1.0.3 server never hands a client's RESET to its stream handler: server.service.Handle
// answers any decoded frame carrying an error itself. So the server side is not checked here.)
func TestStreamIdleTimeout(t *testing.T) {
	t.Parallel()
	p := startPeers(t)
	cfg := &proxy.Config{
		Listeners: []proxy.Listener{{
			Name:              listener,
			Address:           p.proxyHost + ":0",
			Codec:             proxy.CodecConfig{Name: meltemitrpc.Name},
			Routes:            proxy.RouteConfig{Name: "echo", Routes: []proxy.Route{{Name: "all", Cluster: to(p.v1)}}},
			StreamIdleTimeout: 300 * time.Millisecond,
		}},
		Clusters: []proxy.Cluster{cluster(p.v1)},
	}
	px := meshtest.StartProxy(t, cfg, meltemitrpc.Registration())

	addr, sc := px.Addr(listener), newStreamClient()
	s, err := sc.chat(streamCtx(t), addr)
	if err != nil {
		t.Fatalf("open the stream: %v", err)
	}
	if _, err := exchange(s, "before going idle"); err != nil {
		t.Fatal(err)
	}
	// Nothing more is sent: this receive ends when the proxy resets the idle stream (or at streamCtx's
	// deadline, which fails the test). trpc-go reports a reset as 351 "stream is already closed", caused by
	// the reset's own code and message.
	err = s.RecvMsg(&echopb.EchoReply{})
	e := rootCause(err)
	if e == nil {
		t.Fatalf("receive on the idle stream returned %v (%T); want the proxy's reset", err, err)
	}
	if want := meltemitrpc.ErrorRet(codec.Timeout); int32(e.Code) != want || !strings.Contains(e.Msg, "idle") {
		t.Fatalf("client reports %v; want a reset with code %d and a message saying the stream was idle", err, want)
	}
	t.Logf("trpc-go client reports: %v", err)
	px.WaitMetric("istio_requests_total", map[string]string{"response_flags": "SI"}, "1",
		func(v float64) bool { return v == 1 })

	// A new stream works, on the same client and upstream connections.
	s, err = sc.chat(streamCtx(t), addr)
	if err != nil {
		t.Fatalf("open a stream after the reset: %v", err)
	}
	if _, err := exchange(s, "after the reset"); err != nil {
		t.Fatal(err)
	}
	if err := closeChat(s); err != nil {
		t.Fatal(err)
	}
	m := px.Metrics()
	if n := m.Sum("meltemi_proxy_upstream_connects_total", map[string]string{"address": p.v1.addr}); n != 1 {
		t.Errorf("upstream connects to %s = %v; want 1:\n%s", p.v1.addr, n,
			m.Describe("meltemi_proxy_upstream_connects_total"))
	}
}

// rootCause is the innermost *errs.Error of err's chain: trpc-go wraps a stream's reset in an error of its own.
func rootCause(err error) *errs.Error {
	var root *errs.Error
	for e := (*errs.Error)(nil); errors.As(err, &e); err = e.Unwrap() {
		root = e
	}
	return root
}
