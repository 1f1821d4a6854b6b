package brpcinterop

import (
	"net"
	"testing"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/brpc"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/codec/sniff"
	"github.com/meltemi-mesh/meltemi/codec/thrift"
	"github.com/meltemi-mesh/meltemi/codec/trpc"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/test/interop/brpc/echopb"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// TestSniffingListener: a listener that speaks Dubbo, Thrift, bRPC and tRPC on one port, choosing each
// connection's protocol from its first bytes, serves real pbrpc clients as a bRPC listener would: routing on
// bRPC metadata, the protocol's own error for no route, and a connection that starts with bytes of no
// protocol closed without an answer.
func TestSniffingListener(t *testing.T) {
	t.Parallel()
	block := meshtest.NewNet()
	b := &bench{v1: startEchoServer(t, block.Host(2), "v1"), v2: startEchoServer(t, block.Host(3), "v2"),
		host: block.Host(1)}
	cfg := b.config(
		proxy.Route{Name: "upper", Match: []proxy.MetadataMatcher{match(brpc.KeyMethod, "Upper")}, Cluster: clusterV2},
		proxy.Route{Name: "echo", Match: []proxy.MetadataMatcher{match(brpc.KeyMethod, "Echo")}, Cluster: clusterV1},
	)
	cfg.Listeners[0].Codec = proxy.CodecConfig{Name: sniff.Name}
	all := []codec.Registration{dubbo.Registration(), thrift.Registration(), brpc.Registration(), trpc.Registration()}
	b.proxy = meshtest.StartProxy(t, cfg, append(all, sniff.Registration(all...))...)
	b.addr = b.proxy.Addr(listenerName)

	c := dialEcho(t, b.addr)
	for _, tc := range []struct{ method, version string }{{"Echo", "v1"}, {"Upper", "v2"}} {
		out, _, err := c.call(echoService, tc.method, &echopb.EchoRequest{Message: "sniffed"}, callOptions{})
		if err != nil {
			t.Fatalf("%s: %v", tc.method, err)
		}
		if out.GetVersion() != tc.version || out.GetMethod() != tc.method {
			t.Errorf("%s answered by %s for %s; want %s", tc.method, out.GetVersion(), out.GetMethod(), tc.version)
		}
	}
	if _, _, err := c.call(echoService, "Missing", &echopb.EchoRequest{Message: "x"}, callOptions{}); err == nil {
		t.Error("a call with no route succeeded")
	}
	b.proxy.WaitMetric("istio_requests_total", map[string]string{"request_protocol": brpc.Protocol,
		"response_flags": "NR"}, "1", func(v float64) bool { return v == 1 })

	// An HTTP request on the same port is no protocol of the listener's: the connection closes unanswered.
	conn, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Read(make([]byte, 64)); err == nil {
		t.Errorf("the proxy answered %d bytes to HTTP", n)
	}
	b.proxy.WaitMetric("meltemi_proxy_decode_errors_total", nil, "1", func(v float64) bool { return v == 1 })
}
