package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/bench/meshload"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// TestLoadThroughProxy runs the T1 topology of every protocol in-process: the load generator, the Meltemi
// proxy built from the config the proxy command gives it, with the protocol's codec, and the echo server. Every
// request must come back good: the proxy rewrites each id on the way up and restores it on the way down, and
// the load generator checks both the id and the echoed string.
func TestLoadThroughProxy(t *testing.T) {
	for _, p := range meshload.Protocols {
		t.Run(p.Name(), func(t *testing.T) {
			n := meshtest.NewNet()
			ln, err := net.Listen("tcp", n.Host(1)+":0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- meshload.Echo{Protocol: p}.Serve(ctx, ln) }()
			t.Cleanup(func() {
				cancel()
				if err := <-served; err != nil {
					t.Errorf("echo: %v", err)
				}
			})

			reg := codecs[p.Name()]
			px := meshtest.StartProxy(t, proxyConfig(reg, n.Host(2)+":0", ln.Addr().String(), 0), reg)
			meshtest.Poll(t, 10*time.Second, "proxy ready", px.Ready)
			for _, l := range []load{{1, 1}, {2, 8}} {
				res, err := meshload.Run(context.Background(), meshload.Config{
					Protocol: p, Target: px.Addr(listenerName), Conns: l.Conns, InFlight: l.InFlight, Size: 1024,
					Duration: time.Minute, Requests: 200,
				})
				if err != nil {
					t.Fatal(err)
				}
				if res.Errors() != 0 || res.Requests != 200 {
					t.Fatalf("%s: %d good of 200, errors %+v", l, res.Requests, res)
				}
			}
		})
	}
}
