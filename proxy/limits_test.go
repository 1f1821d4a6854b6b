package proxy_test

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/brpc"
	"github.com/meltemi-mesh/meltemi/codec/codectest"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/codec/thrift"
	"github.com/meltemi-mesh/meltemi/codec/trpc"
	"github.com/meltemi-mesh/meltemi/proxy"
)

// TestOverLimitRequestRefusedInItsProtocol: for every protocol, a two-way request larger than the listener's
// limit is answered with that protocol's error reply for a bad request, counted as a decode error, and its
// connection closed; the listener keeps serving.
func TestOverLimitRequestRefusedInItsProtocol(t *testing.T) {
	for _, tc := range []struct {
		preamble string
		reg      codec.Registration
		limit    string
	}{
		{"dubbo", dubbo.Registration(), `{"maxBodySize": 8}`},
		{"thrift-framed", thrift.Registration(), `{"maxFrameSize": 16}`},
		{"thrift-header", thrift.Registration(), `{"maxFrameSize": 16}`},
		{"brpc", brpc.Registration(), `{"maxBodySize": 8}`},
		{"trpc", trpc.Registration(), `{"maxFrameSize": 20}`},
	} {
		t.Run(tc.preamble, func(t *testing.T) {
			var frame []byte
			for _, p := range codectest.Preambles() {
				if p.Name == tc.preamble {
					frame = p.Frame
				}
			}
			codecs, err := codec.NewRegistry(tc.reg)
			if err != nil {
				t.Fatal(err)
			}
			metrics := prometheus.NewRegistry()
			p, err := proxy.New(proxy.Options{Codecs: codecs, Metrics: metrics, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			l := listener(proxy.Route{Name: "all", Cluster: "none"})
			l.Codec = proxy.CodecConfig{Name: tc.reg.Name, Config: json.RawMessage(tc.limit)}
			if err := p.Update(&proxy.Config{Listeners: []proxy.Listener{l}}); err != nil {
				t.Fatal(err)
			}
			h := &harness{t: t, p: p, metrics: metrics, addr: p.ListenerAddr(l.Name).String()}

			c := h.dial()
			if _, err := c.Write(frame); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			reply, err := io.ReadAll(c)
			if err != nil && !errors.Is(err, net.ErrClosed) {
				t.Fatalf("reading the reply: %v", err)
			}
			f, _ := tc.reg.New(nil)
			var msg codec.Message
			n, err := f.NewCodec(codec.Upstream).Decode(reply, &msg)
			if err != nil || n != len(reply) {
				t.Fatalf("the %d-byte reply (% x) does not decode as one frame: %d, %v", len(reply), reply, n, err)
			}
			if !msg.Failed || msg.ID != 1 {
				t.Fatalf("the reply decodes to %v id %d status %d failed %v; want a failure for request 1",
					msg.Type, msg.ID, msg.Status, msg.Failed)
			}
			if n := h.counter("meltemi_proxy_decode_errors_total", map[string]string{"side": "downstream"}); n != 1 {
				t.Errorf("decode errors %v; want 1", n)
			}
			// The listener still takes connections.
			h.dial().Close()
		})
	}
}
