package proxy_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/proxy"
)

// These tests drive the proxy over real sockets with hand-built Dubbo frames, against a small Dubbo server
// written here whose behaviour each test chooses. The end-to-end tests in test/e2e do the same with real
// dubbo-go providers and consumers.

// hessianString appends a Hessian 2 string (ASCII only, which is all these tests send).
func hessianString(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, byte(n))
	case n < 1024:
		b = append(b, 0x30+byte(n>>8), byte(n))
	default:
		for len(s) > 0xffff {
			b = append(b, 'R', 0xff, 0xff)
			b = append(b, s[:0xffff]...)
			s = s[0xffff:]
		}
		return append(append(b, 'S', byte(len(s)>>8), byte(len(s))), s...)
	}
	return append(b, s...)
}

// request builds a two-way Dubbo request frame calling method on iface with one string argument.
func request(id uint64, iface, method, arg string, attachments ...string) []byte {
	body := hessianString(nil, "2.0.2")
	body = hessianString(body, iface)
	body = hessianString(body, "")
	body = hessianString(body, method)
	body = hessianString(body, "Ljava/lang/String;")
	body = hessianString(body, arg)
	body = append(body, 'H')
	for i := 0; i+1 < len(attachments); i += 2 {
		body = hessianString(hessianString(body, attachments[i]), attachments[i+1])
	}
	body = append(body, 'Z')
	return frame(0xc2, 0, id, body)
}

func frame(flag, status byte, id uint64, body []byte) []byte {
	f := []byte{0xda, 0xbb, flag, status}
	f = binary.BigEndian.AppendUint64(f, id)
	f = binary.BigEndian.AppendUint32(f, uint32(len(body)))
	return append(f, body...)
}

type reply struct {
	flag, status byte
	id           uint64
	body         []byte
}

func readFrame(r io.Reader) (reply, error) {
	var h [16]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return reply{}, err
	}
	if h[0] != 0xda || h[1] != 0xbb {
		return reply{}, fmt.Errorf("bad magic % x", h[:2])
	}
	body := make([]byte, binary.BigEndian.Uint32(h[12:]))
	if _, err := io.ReadFull(r, body); err != nil {
		return reply{}, err
	}
	return reply{flag: h[2], status: h[3], id: binary.BigEndian.Uint64(h[4:]), body: body}, nil
}

// server is a Dubbo provider stand-in: it answers each request with a response whose value is its own name
// followed by the request's argument, from one goroutine per connection.
type server struct {
	name     string
	ln       net.Listener
	accepted atomic.Int64
	closed   atomic.Int64
	requests atomic.Int64
	// hold, when set, makes the server read requests and never answer.
	hold bool

	mu    sync.Mutex
	conns []net.Conn
}

func startServer(t *testing.T, addr, name string) *server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{name: name, ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			go s.serve(c)
		}
	}()
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

// openConns counts the accepted connections the client has not closed yet.
func (s *server) openConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns) - int(s.closed.Load())
}

// serve answers a connection's requests, reusing its buffers so that benchmarks count the proxy's allocations,
// not the server's.
func (s *server) serve(c net.Conn) {
	defer s.closed.Add(1)
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	var hdr [16]byte
	var body, out []byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[12:]))
		if cap(body) < n {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		s.requests.Add(1)
		if s.hold || hdr[2]&0x40 == 0 {
			continue
		}
		arg := lastString(body)
		out = append(out[:0], 0xda, 0xbb, 0x02, 20)
		out = append(out, hdr[4:12]...) // the request's id
		out = append(out, 0, 0, 0, 0)   // body length, set below
		out = append(out, 0x91)         // RESPONSE_VALUE
		out = hessianStringBytes(out, s.name, ":", arg)
		binary.BigEndian.PutUint32(out[12:], uint32(len(out)-16))
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// hessianStringBytes appends the concatenation of parts as one short Hessian 2 string (under 1024 bytes).
func hessianStringBytes(b []byte, name, sep string, arg []byte) []byte {
	n := len(name) + len(sep) + len(arg)
	if n < 32 {
		b = append(b, byte(n))
	} else {
		b = append(b, 0x30+byte(n>>8), byte(n))
	}
	return append(append(append(b, name...), sep...), arg...)
}

// lastString finds the argument in a request body built by request: the string before the attachment map.
func lastString(body []byte) []byte {
	for i := len(body) - 1; i >= 0; i-- {
		if body[i] != 'H' {
			continue
		}
		for j := 0; j < i; j++ {
			if n := int(body[j]); n < 32 && j+1+n == i {
				return body[j+1 : i]
			}
			if n := int(body[j]); j+1 < i && n >= 0x30 && n <= 0x33 && j+2+(n-0x30)<<8+int(body[j+1]) == i {
				return body[j+2 : i]
			}
		}
	}
	return nil
}

func valueOf(t *testing.T, r reply) string {
	t.Helper()
	if len(r.body) < 2 || r.body[0] != 0x91 {
		t.Fatalf("response body % x is not a RESPONSE_VALUE", r.body)
	}
	if r.body[1] < 32 {
		return string(r.body[2:])
	}
	return string(r.body[3:])
}

type harness struct {
	t       *testing.T
	p       *proxy.Proxy
	metrics *prometheus.Registry
	addr    string
}

func newProxy(t *testing.T, cfg *proxy.Config) *harness {
	t.Helper()
	return newMarkedProxy(t, 0, cfg)
}

// newMarkedProxy is newProxy with Options.Mark.
func newMarkedProxy(t *testing.T, mark uint32, cfg *proxy.Config) *harness {
	t.Helper()
	codecs, err := codec.NewRegistry(dubbo.Registration())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	p, err := proxy.New(proxy.Options{Codecs: codecs, Metrics: reg, Mark: mark,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.Update(cfg); err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, p: p, metrics: reg, addr: p.ListenerAddr(cfg.Listeners[0].Name).String()}
}

func (h *harness) dial() net.Conn {
	h.t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

// counter sums the samples of a counter or gauge whose labels include want.
func (h *harness) counter(name string, want map[string]string) float64 {
	h.t.Helper()
	families, err := h.metrics.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			sum += value(m)
		}
	}
	return sum
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func listener(routes ...proxy.Route) proxy.Listener {
	return proxy.Listener{Name: "dubbo", Address: "127.0.0.1:0", Codec: proxy.CodecConfig{Name: dubbo.Name},
		Routes: proxy.RouteConfig{Name: "r", Routes: routes}}
}

func clusterOf(name string, addrs ...string) proxy.Cluster {
	c := proxy.Cluster{Name: name, Service: proxy.Service{Host: "greet.test", Name: "greet", Namespace: "default"}}
	for _, a := range addrs {
		c.Endpoints = append(c.Endpoints, proxy.Endpoint{Address: a})
	}
	return c
}

// oneConnection makes a cluster's endpoints share one upstream connection each.
func oneConnection(c proxy.Cluster) proxy.Cluster {
	c.ConnectionsPerEndpoint = 1
	return c
}

// TestMultiplexesPipelinedRequests: the requests of several client connections, with the same ids, share one
// upstream connection and each gets its own answer.
func TestMultiplexesPipelinedRequests(t *testing.T) {
	up := startServer(t, "127.0.0.1:0", "up")
	h := newProxy(t, &proxy.Config{
		Listeners: []proxy.Listener{listener(proxy.Route{Cluster: "c"})},
		Clusters:  []proxy.Cluster{oneConnection(clusterOf("c", up.addr()))},
	})
	const conns, perConn = 4, 200
	var wg sync.WaitGroup
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := h.dial()
			go func() {
				for i := range perConn {
					// Every connection uses the same ids: the proxy must keep them apart upstream.
					conn.Write(request(uint64(i+1), "greet", "sayHello", fmt.Sprintf("c%d-%d", c, i)))
				}
			}()
			br := bufio.NewReader(conn)
			seen := map[uint64]bool{}
			for range perConn {
				r, err := readFrame(br)
				if err != nil {
					t.Error(err)
					return
				}
				if want := fmt.Sprintf("up:c%d-%d", c, r.id-1); valueOf(t, r) != want {
					t.Errorf("reply to id %d = %q, want %q", r.id, valueOf(t, r), want)
				}
				if seen[r.id] {
					t.Errorf("id %d answered twice", r.id)
				}
				seen[r.id] = true
			}
		}()
	}
	wg.Wait()
	waitFor(t, "stats of every request", func() bool {
		return h.counter("istio_requests_total", nil) == conns*perConn
	})
	if n := up.accepted.Load(); n != 1 {
		t.Errorf("upstream accepted %d connections for %d downstream ones, want 1", n, conns)
	}
	if got := h.counter("istio_requests_total", map[string]string{"response_code": "20",
		"request_protocol": "dubbo", "destination_service": "greet.test", "response_flags": "-"}); got != conns*perConn {
		t.Errorf("istio_requests_total = %v, want %d", got, conns*perConn)
	}
}

func TestLocalReplies(t *testing.T) {
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	refused.Close() // nothing listens there any more: connections are refused
	h := newProxy(t, &proxy.Config{
		Listeners: []proxy.Listener{listener(
			proxy.Route{Name: "nocluster", Match: []proxy.MetadataMatcher{{Key: "method", Kind: proxy.MatchExact, Value: "a"}}, Cluster: "missing"},
			proxy.Route{Name: "empty", Match: []proxy.MetadataMatcher{{Key: "method", Kind: proxy.MatchExact, Value: "b"}}, Cluster: "empty"},
			proxy.Route{Name: "down", Match: []proxy.MetadataMatcher{{Key: "method", Kind: proxy.MatchExact, Value: "c"}}, Cluster: "down"},
		)},
		Clusters: []proxy.Cluster{clusterOf("empty"), clusterOf("down", refusedAddr)},
	})
	conn := h.dial()
	br := bufio.NewReader(conn)
	tests := []struct {
		method string
		status byte
		flag   string
	}{
		{"zzz", dubbo.StatusServiceNotFound, "NR"},
		{"a", dubbo.StatusServiceNotFound, "NC"},
		{"b", dubbo.ErrorStatus(codec.NoHealthyUpstream), "UH"},
		{"c", dubbo.ErrorStatus(codec.NoHealthyUpstream), "UF"},
	}
	for i, tt := range tests {
		conn.Write(request(uint64(100+i), "greet", tt.method, "x"))
		r, err := readFrame(br)
		if err != nil {
			t.Fatalf("method %s: %v", tt.method, err)
		}
		if r.id != uint64(100+i) || r.status != tt.status {
			t.Errorf("method %s: reply id %d status %d, want id %d status %d", tt.method, r.id, r.status, 100+i, tt.status)
		}
		// Stats are recorded after the reply is written, so they may trail it a little.
		waitFor(t, "a request flagged "+tt.flag, func() bool {
			return h.counter("istio_requests_total", map[string]string{"response_flags": tt.flag}) == 1
		})
	}
	// Heartbeats are answered by the proxy and never forwarded.
	conn.Write(frame(0xe2, 0, 7, []byte{'N'}))
	r, err := readFrame(br)
	if err != nil {
		t.Fatal(err)
	}
	if r.flag&0x20 == 0 || r.status != 20 || r.id != 7 {
		t.Errorf("heartbeat reply flag %#x status %d id %d", r.flag, r.status, r.id)
	}
}

func TestUpstreamLossFailsRequestsInFlight(t *testing.T) {
	up := startServer(t, "127.0.0.1:0", "up")
	up.hold = true
	h := newProxy(t, &proxy.Config{
		Listeners: []proxy.Listener{listener(proxy.Route{Cluster: "c"})},
		Clusters:  []proxy.Cluster{clusterOf("c", up.addr())},
	})
	conn := h.dial()
	for i := range 3 {
		conn.Write(request(uint64(i+1), "greet", "sayHello", "x"))
	}
	waitFor(t, "upstream to receive 3 requests", func() bool { return up.requests.Load() == 3 })
	up.ln.Close()
	up.closeAll()
	br := bufio.NewReader(conn)
	for range 3 {
		r, err := readFrame(br)
		if err != nil {
			t.Fatal(err)
		}
		if r.status != dubbo.ErrorStatus(codec.NoHealthyUpstream) {
			t.Errorf("reply to %d: status %d", r.id, r.status)
		}
	}
	waitFor(t, "3 requests flagged UC", func() bool {
		return h.counter("istio_requests_total", map[string]string{"response_flags": "UC"}) == 3
	})
}

// closeAll closes every connection the server accepted.
func (s *server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
}

func TestUpdateKeepsConnectionsAndSwitchesRoutes(t *testing.T) {
	v1 := startServer(t, "127.0.0.1:0", "v1")
	v2 := startServer(t, "127.0.0.1:0", "v2")
	cfg := func(target string) *proxy.Config {
		return &proxy.Config{
			Listeners: []proxy.Listener{listener(proxy.Route{Cluster: target})},
			Clusters:  []proxy.Cluster{clusterOf("v1", v1.addr()), clusterOf("v2", v2.addr())},
		}
	}
	h := newProxy(t, cfg("v1"))
	const callers, swaps = 8, 50
	stop := make(chan struct{})
	var failed, calls atomic.Int64
	var wg, started sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			conn := h.dial()
			br := bufio.NewReader(conn)
			for i := uint64(1); ; i++ {
				if i == 2 {
					started.Done()
				}
				select {
				case <-stop:
					return
				default:
				}
				if _, err := conn.Write(request(i, "greet", "sayHello", fmt.Sprint(c))); err != nil {
					failed.Add(1)
					return
				}
				r, err := readFrame(br)
				if err != nil || r.id != i || r.status != 20 {
					failed.Add(1)
					if i == 1 {
						started.Done()
					}
					return
				}
				calls.Add(1)
			}
		}()
	}
	started.Wait() // every caller has a connection and a call behind it
	for i := range swaps {
		target := []string{"v2", "v1"}[i%2]
		if err := h.p.Update(cfg(target)); err != nil {
			t.Fatal(err)
		}
		// Let some calls through on each config, so every swap happens under load.
		before := calls.Load()
		waitFor(t, "calls after a swap", func() bool { return calls.Load() >= before+callers })
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d callers failed during %d config swaps", failed.Load(), swaps)
	}
	if got := h.counter("meltemi_proxy_downstream_connections_total", nil); got != callers {
		t.Errorf("downstream connections = %v, want %d", got, callers)
	}
	// The last config sends to v1.
	conn := h.dial()
	conn.Write(request(1, "greet", "sayHello", "final"))
	r, err := readFrame(conn)
	if err != nil {
		t.Fatal(err)
	}
	if got := valueOf(t, r); got != "v1:final" {
		t.Errorf("after the swaps: %q, want v1:final", got)
	}
}

func TestBadFramesCloseOnlyTheirConnection(t *testing.T) {
	up := startServer(t, "127.0.0.1:0", "up")
	cfg := &proxy.Config{
		Listeners: []proxy.Listener{listener(proxy.Route{Cluster: "c"})},
		Clusters:  []proxy.Cluster{clusterOf("c", up.addr())},
	}
	cfg.Listeners[0].Codec.Config = []byte(`{"maxBodySize": 1024}`)
	h := newProxy(t, cfg)
	good := h.dial()
	goodReader := bufio.NewReader(good)
	call := func(id uint64) {
		t.Helper()
		good.Write(request(id, "greet", "sayHello", "ok"))
		r, err := readFrame(goodReader)
		if err != nil || r.status != 20 {
			t.Fatalf("good connection: reply %+v, %v", r, err)
		}
	}
	call(1)
	overLimit := frame(0xc2, 0, 42, make([]byte, 2048))
	claims4G := frame(0xc2, 0, 43, nil)
	binary.BigEndian.PutUint32(claims4G[12:], 0xffffffff)
	tests := []struct {
		name   string
		input  []byte
		status byte   // expected error reply status, 0 for none
		id     uint64 // of the error reply
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0, 0},
		{"wrong magic", append([]byte{0xca, 0xfe}, request(1, "greet", "x", "y")[2:]...), 0, 0},
		{"over limit", overLimit, dubbo.StatusBadRequest, 42},
		{"claims 4 GiB", claims4G, dubbo.StatusBadRequest, 43},
	}
	for i, tt := range tests {
		c := h.dial()
		c.Write(tt.input)
		r, err := readFrame(c)
		if tt.status != 0 {
			if err != nil || r.status != tt.status || r.id != tt.id {
				t.Errorf("%s: reply %+v, %v; want status %d for id %d", tt.name, r, err, tt.status, tt.id)
			}
			_, err = readFrame(c)
		}
		if !errors.Is(err, io.EOF) {
			t.Errorf("%s: connection not closed: %v", tt.name, err)
		}
		if got := h.counter("meltemi_proxy_decode_errors_total", nil); got != float64(i+1) {
			t.Errorf("%s: decode errors = %v, want %d", tt.name, got, i+1)
		}
		call(uint64(10 + i))
	}
	// A frame cut short by the client closing is not an error reply, and leaves others unharmed.
	c := h.dial()
	c.Write(request(9, "greet", "sayHello", "cut")[:20])
	c.Close()
	call(99)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// BenchmarkProxyRoundTrip measures one request at a time through the proxy: bare, and with the policies every
// route has when a controller configures it (Envoy's 15 s route timeout, Istio's default retry on connect
// failure), and with a per-try timeout and retries on reset that keep a copy of each request. 1 KB argument;
// allocations include the client's and the test server's.
func BenchmarkProxyRoundTrip(b *testing.B) {
	for _, bc := range []struct {
		name  string
		route func(*proxy.Route)
	}{
		{"bare", func(*proxy.Route) {}},
		{"default-policy", func(r *proxy.Route) {
			r.Timeout = 15 * time.Second
			r.Retry = &proxy.RetryPolicy{RetryOn: []proxy.RetryOn{proxy.RetryConnectFailure}, NumRetries: 2}
		}},
		{"retries", func(r *proxy.Route) {
			r.Timeout = 15 * time.Second
			r.Retry = &proxy.RetryPolicy{RetryOn: []proxy.RetryOn{proxy.RetryConnectFailure, proxy.RetryReset,
				proxy.RetryTimeout}, NumRetries: 2, PerTryTimeout: 5 * time.Second}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			route := proxy.Route{Match: []proxy.MetadataMatcher{{Key: "method", Kind: proxy.MatchExact, Value: "echo"}},
				Cluster: "c"}
			bc.route(&route)
			benchmarkRoundTrip(b, route)
		})
	}
}

func benchmarkRoundTrip(b *testing.B, route proxy.Route) {
	t := &testing.T{}
	up := startServer(t, "127.0.0.1:0", "up")
	codecs, _ := codec.NewRegistry(dubbo.Registration())
	p, err := proxy.New(proxy.Options{Codecs: codecs, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	if err := p.Update(&proxy.Config{
		Listeners: []proxy.Listener{listener(route)},
		Clusters:  []proxy.Cluster{clusterOf("c", up.addr())},
	}); err != nil {
		b.Fatal(err)
	}
	conn, err := net.Dial("tcp", p.ListenerAddr("dubbo").String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	req := request(1, "org.apache.dubbo.bench.EchoService", "echo", strings.Repeat("x", 1000), "path",
		"org.apache.dubbo.bench.EchoService", "timeout", "3000")
	resp := make([]byte, 64<<10)
	b.ReportAllocs()
	b.SetBytes(int64(len(req)))
	for b.Loop() {
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		got, err := io.ReadAtLeast(conn, resp, 16)
		if err != nil {
			b.Fatal(err)
		}
		if n := 16 + int(binary.BigEndian.Uint32(resp[12:])); got < n {
			if _, err := io.ReadFull(conn, resp[got:n]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkIdleConnection reports the memory an idle downstream connection holds once it has carried a
// request: goroutine stack, connection state and codec (the read buffer goes back to the pool when idle). The
// figure includes the client's side of each connection, in this process too, so it is an upper bound.
func BenchmarkIdleConnection(b *testing.B) {
	t := &testing.T{}
	up := startServer(t, "127.0.0.1:0", "up")
	codecs, _ := codec.NewRegistry(dubbo.Registration())
	p, err := proxy.New(proxy.Options{Codecs: codecs, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	if err := p.Update(&proxy.Config{Listeners: []proxy.Listener{listener(proxy.Route{Cluster: "c"})},
		Clusters: []proxy.Cluster{clusterOf("c", up.addr())}}); err != nil {
		b.Fatal(err)
	}
	addr := p.ListenerAddr("dubbo").String()
	req := request(1, "greet", "sayHello", "x")
	const conns = 1000
	var perConn float64
	for b.Loop() {
		before := inUse()
		open := make([]net.Conn, 0, conns)
		for range conns {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Write(req); err != nil {
				b.Fatal(err)
			}
			if _, err := readFrame(c); err != nil {
				b.Fatal(err)
			}
			open = append(open, c)
		}
		perConn = float64(inUse()-before) / conns
		for _, c := range open {
			c.Close()
		}
	}
	b.ReportMetric(perConn, "B/idle-conn")
}

// inUse is the memory the Go runtime holds for live objects and goroutine stacks, after a collection.
func inUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// TestClientConnectionsSpreadOverThePool: with the default pool, client connections use the endpoint's
// connections in turn, each its own, up to DefaultConnectionsPerEndpoint.
func TestClientConnectionsSpreadOverThePool(t *testing.T) {
	up := startServer(t, "127.0.0.1:0", "up")
	h := newProxy(t, &proxy.Config{
		Listeners: []proxy.Listener{listener(proxy.Route{Cluster: "c"})},
		Clusters:  []proxy.Cluster{clusterOf("c", up.addr())},
	})
	for i := range 2 * proxy.DefaultConnectionsPerEndpoint {
		c := h.dial()
		if _, err := c.Write(request(1, "greet", "sayHello", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		if r, err := readFrame(c); err != nil || valueOf(t, r) != fmt.Sprint("up:", i) {
			t.Fatalf("client %d: %+v (%v)", i, r, err)
		}
		if n, want := up.accepted.Load(), int64(min(i+1, proxy.DefaultConnectionsPerEndpoint)); n != want {
			t.Fatalf("after %d clients the upstream accepted %d connections, want %d", i+1, n, want)
		}
	}
}
