package proxy_test

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/codec/sniff"
	"github.com/meltemi-mesh/meltemi/codec/trpc"
	"github.com/meltemi-mesh/meltemi/proxy"
)

// TestSniffedProtocolsKeepTheirOwnUpstreams: on a listener that sniffs, clients of two protocols calling the
// same endpoint get upstream connections of their own protocol, never one shared by both.
func TestSniffedProtocolsKeepTheirOwnUpstreams(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	regs := []codec.Registration{dubbo.Registration(), trpc.Registration()}
	codecs, err := codec.NewRegistry(append(regs, sniff.Registration(regs...))...)
	if err != nil {
		t.Fatal(err)
	}
	metrics := prometheus.NewRegistry()
	p, err := proxy.New(proxy.Options{Codecs: codecs, Metrics: metrics, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	l := listener(proxy.Route{Name: "all", Cluster: "up"})
	l.Codec = proxy.CodecConfig{Name: sniff.Name}
	if err := p.Update(&proxy.Config{Listeners: []proxy.Listener{l}, Clusters: []proxy.Cluster{clusterOf("up", ln.Addr().String())}}); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, p: p, metrics: metrics, addr: p.ListenerAddr(l.Name).String()}

	// A Dubbo call and a tRPC stream, each from its own client, to the one endpoint: each reaches the server on
	// a connection of its own, starting with its own protocol's magic.
	next := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			t.Cleanup(func() { c.Close() })
			return c
		case <-time.After(10 * time.Second):
			t.Fatal("the proxy opened no upstream connection")
			return nil
		}
	}
	magic := func(c net.Conn) string {
		t.Helper()
		b := make([]byte, 2)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x", b)
	}
	h.dial().Write(request(1, "greet", "sayHello", "x"))
	if m := magic(next()); m != "dabb" {
		t.Fatalf("the Dubbo call's upstream connection starts with %s", m)
	}
	h.dial().Write(initRequest(1, "/echo.S/Chat"))
	if m := magic(next()); m != "0930" {
		t.Fatalf("the tRPC stream's upstream connection starts with %s", m)
	}
	if n := h.counter("meltemi_proxy_upstream_connects_total", nil); n != 2 {
		t.Errorf("%v upstream connections; want 2", n)
	}
}
