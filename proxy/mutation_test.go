package proxy_test

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
)

// seenFilter records what response filters see of one response metadata key.
type seenFilter struct {
	key  string
	seen chan string
}

func (f *seenFilter) OnRequest(filter.Exchange) filter.Status { return filter.Continue }

func (f *seenFilter) OnResponse(_ filter.Exchange, resp *codec.Message) {
	v, ok := resp.Metadata.Get(f.key)
	if !ok {
		v = "<absent>"
	}
	f.seen <- v
}

// TestResponseMutation checks that a route's response mutation reaches the client in the protocol's own
// metadata, that response filters see it, and that the codec is told which request a reply answers: a Dubbo
// client whose requests carry a protocol version older than 2.0.2 cannot read response attachments, so its
// replies go back as the server wrote them.
func TestResponseMutation(t *testing.T) {
	up := startServer(t, "127.0.0.1:0", "up")
	seen := &seenFilter{key: "x-served-by", seen: make(chan string, 1)}
	filters, err := filter.NewRegistry(filter.Registration{Name: "test.seen",
		New: func(json.RawMessage) (filter.Filter, error) { return seen, nil }})
	if err != nil {
		t.Fatal(err)
	}
	codecs, _ := codec.NewRegistry(dubbo.Registration())
	p, err := proxy.New(proxy.Options{Codecs: codecs, Filters: filters, Metrics: prometheus.NewRegistry(),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	l := listener(proxy.Route{Cluster: "c", ResponseMutation: []codec.KeyValue{{Key: "x-served-by", Value: "meltemi"}}})
	l.Filters = []proxy.FilterConfig{{Name: "test.seen"}}
	if err := p.Update(&proxy.Config{Listeners: []proxy.Listener{l}, Clusters: []proxy.Cluster{clusterOf("c", up.addr())}}); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", p.ListenerAddr("dubbo").String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)

	tests := []struct {
		name     string
		version  string // the Dubbo protocol version the request carries
		respType byte   // the Hessian int that starts the reply's body
		want     string // x-served-by as the client and the response filter read it
	}{
		{"current client", "2.0.2", 0x94, "meltemi"},    // RESPONSE_VALUE_WITH_ATTACHMENTS
		{"Dubbo 2.5 client", "2.5.3", 0x91, "<absent>"}, // RESPONSE_VALUE, as the server wrote it
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := uint64(10 + i)
			req := request(id, "greet", "sayHello", "a")
			// request writes "2.0.2" as the first string of the body: five bytes after a length byte.
			copy(req[16+1:], tt.version)
			conn.Write(req)
			r, err := readFrame(br)
			if err != nil {
				t.Fatal(err)
			}
			if r.id != id || r.status != 20 || len(r.body) == 0 || r.body[0] != tt.respType {
				t.Fatalf("reply id %d status %d body % x; want id %d, status 20, type %#x", r.id, r.status, r.body, id, tt.respType)
			}
			msg := &codec.Message{}
			f, err := dubbo.Registration().New(nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.NewCodec(codec.Downstream).Decode(frame(r.flag, r.status, r.id, r.body), msg); err != nil {
				t.Fatalf("the reply does not decode: %v", err)
			}
			got, ok := msg.Metadata.Get("x-served-by")
			if !ok {
				got = "<absent>"
			}
			if got != tt.want {
				t.Errorf("client reads x-served-by = %q (%v); want %q", got, msg.Metadata.Err(), tt.want)
			}
			if v := <-seen.seen; v != tt.want {
				t.Errorf("the response filter saw x-served-by = %q; want %q", v, tt.want)
			}
		})
	}
}
