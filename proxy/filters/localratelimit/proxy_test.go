package localratelimit_test

import (
	"bufio"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
	"github.com/meltemi-mesh/meltemi/proxy/filters/localratelimit"
)

// The filter behind a real proxy, over real sockets: raw Dubbo frames in, an upstream that answers every
// request it gets.

// dubboRequest builds a two-way Hessian 2 Dubbo request frame calling method on iface, with no arguments.
func dubboRequest(id uint64, iface, method string) []byte {
	var body []byte
	for _, s := range []string{"2.0.2", iface, "", method, ""} { // version, path, service version, method, types
		body = append(append(body, byte(len(s))), s...) // Hessian short strings: under 32 bytes
	}
	body = append(body, 'H', 'Z') // empty attachments
	f := []byte{0xda, 0xbb, 0xc2, 0}
	f = binary.BigEndian.AppendUint64(f, id)
	f = binary.BigEndian.AppendUint32(f, uint32(len(body)))
	return append(f, body...)
}

type dubboFrame struct {
	status byte
	id     uint64
}

func readDubboFrame(r io.Reader) (dubboFrame, error) {
	var h [16]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return dubboFrame{}, err
	}
	if _, err := io.CopyN(io.Discard, r, int64(binary.BigEndian.Uint32(h[12:]))); err != nil {
		return dubboFrame{}, err
	}
	return dubboFrame{status: h[3], id: binary.BigEndian.Uint64(h[4:])}, nil
}

// upstream answers each Dubbo request with an OK response of no value, and counts requests.
type upstream struct {
	ln       net.Listener
	requests atomic.Int64
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	u := &upstream{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c)
		}
	}()
	return u
}

func (u *upstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	var h [16]byte
	for {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return
		}
		if _, err := io.CopyN(io.Discard, br, int64(binary.BigEndian.Uint32(h[12:]))); err != nil {
			return
		}
		u.requests.Add(1)
		resp := []byte{0xda, 0xbb, 0x02, 20}
		resp = append(resp, h[4:12]...)       // the request's id
		resp = append(resp, 0, 0, 0, 1, 0x92) // a one-byte body: RESPONSE_NULL_VALUE
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

func TestThroughProxy(t *testing.T) {
	up := startUpstream(t)
	codecs, err := codec.NewRegistry(dubbo.Registration())
	if err != nil {
		t.Fatal(err)
	}
	filters, err := filter.NewRegistry(localratelimit.Registration())
	if err != nil {
		t.Fatal(err)
	}
	metrics := prometheus.NewRegistry()
	p, err := proxy.New(proxy.Options{Codecs: codecs, Filters: filters, Metrics: metrics,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	cfg := &proxy.Config{
		Listeners: []proxy.Listener{{
			Name: "dubbo", Address: "127.0.0.1:0", Codec: proxy.CodecConfig{Name: dubbo.Name},
			Filters: []proxy.FilterConfig{{Name: localratelimit.Name,
				Config: []byte(`{"statPrefix":"greet","tokenBucket":{"maxTokens":3,"fillInterval":"3600s"}}`)}},
			Routes: proxy.RouteConfig{Name: "r", Routes: []proxy.Route{{Cluster: "c"}}},
		}},
		Clusters: []proxy.Cluster{{Name: "c", Endpoints: []proxy.Endpoint{{Address: up.ln.Addr().String()}}}},
	}
	if err := p.Update(cfg); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", p.ListenerAddr("dubbo").String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)

	overLimit := dubbo.ErrorStatus(codec.OverLimit)
	var ok, limited int
	for id := uint64(1); id <= 5; id++ {
		if _, err := conn.Write(dubboRequest(id, "greet", "sayHello")); err != nil {
			t.Fatal(err)
		}
		r, err := readDubboFrame(br)
		if err != nil {
			t.Fatalf("request %d: %v", id, err)
		}
		if r.id != id {
			t.Fatalf("reply to request %d carries id %d", id, r.id)
		}
		switch r.status {
		case 20:
			ok++
		case overLimit:
			limited++
		default:
			t.Errorf("request %d: status %d, want 20 or %d", id, r.status, overLimit)
		}
		// The bucket holds 3 and gains nothing for an hour: the first 3 pass, the rest are refused.
		if wantOK := id <= 3; (r.status == 20) != wantOK {
			t.Errorf("request %d: status %d; passed = %v, want %v", id, r.status, r.status == 20, wantOK)
		}
	}
	if ok != 3 || limited != 2 {
		t.Errorf("%d forwarded and %d refused, want 3 and 2", ok, limited)
	}
	if n := up.requests.Load(); n != 3 {
		t.Errorf("upstream got %d requests, want 3", n)
	}
	// The proxy counts a local reply after writing it; wait for the second one.
	waitFor(t, "2 over_limit local replies", func() bool {
		return counter(t, metrics, "meltemi_proxy_local_replies_total", map[string]string{"reason": "over_limit"}) == 2
	})
	waitFor(t, "2 requests flagged RL", func() bool {
		return counter(t, metrics, "istio_requests_total",
			map[string]string{"response_flags": "RL", "response_code": strconv.Itoa(int(overLimit))}) == 2
	})
}

// counter sums the samples of a counter whose labels include want.
func counter(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			found := 0
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
					found++
				}
			}
			if found == len(want) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// waitFor polls cond until it holds, failing the test after a generous deadline.
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
