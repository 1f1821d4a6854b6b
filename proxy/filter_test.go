package proxy_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
)

// denyFilter answers requests for one method itself.
type denyFilter struct{ method string }

func (f *denyFilter) OnRequest(ex filter.Exchange) filter.Status {
	if m, _ := ex.Request().Metadata.Get("method"); m == f.method {
		ex.Reply(codec.Unauthorized, "method "+m+" denied")
		return filter.Stop
	}
	return filter.Continue
}

// tagFilter sets a metadata key that routes can match on.
type tagFilter struct{ key, value string }

func (f *tagFilter) OnRequest(ex filter.Exchange) filter.Status {
	ex.Request().Metadata.Set(f.key, f.value)
	ex.Reroute()
	return filter.Continue
}

// holdFilter holds every request until the test releases it, resuming from another goroutine, the way a
// filter that calls a rate-limit service would.
type holdFilter struct{ held chan filter.Exchange }

func (f *holdFilter) OnRequest(ex filter.Exchange) filter.Status {
	f.held <- ex
	return filter.Stop
}

func TestFilterChain(t *testing.T) {
	up := startServer(t, "127.0.0.1:0", "up")
	hold := &holdFilter{held: make(chan filter.Exchange, 1)}
	filters, err := filter.NewRegistry(
		filter.Registration{Name: "test.deny", New: func(cfg json.RawMessage) (filter.Filter, error) {
			f := &denyFilter{}
			var c struct{ Method string }
			err := json.Unmarshal(cfg, &c)
			f.method = c.Method
			return f, err
		}},
		filter.Registration{Name: "test.tag", New: func(json.RawMessage) (filter.Filter, error) {
			return &tagFilter{key: "tier", value: "gold"}, nil
		}},
		filter.Registration{Name: "test.hold", New: func(json.RawMessage) (filter.Filter, error) { return hold, nil }},
	)
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
	l := listener(proxy.Route{Match: []proxy.MetadataMatcher{{Key: "tier", Kind: proxy.MatchExact, Value: "gold"}},
		Cluster: "c", RequestMutation: []codec.KeyValue{{Key: "routed", Value: "yes"}}})
	l.Filters = []proxy.FilterConfig{
		{Name: "test.deny", Config: json.RawMessage(`{"method": "secret"}`)},
		{Name: "test.tag"},
	}
	cfg := &proxy.Config{Listeners: []proxy.Listener{l}, Clusters: []proxy.Cluster{clusterOf("c", up.addr())}}
	if err := p.Update(cfg); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", p.ListenerAddr("dubbo").String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)

	// The tag filter's metadata makes the route match; the deny filter answers before it.
	conn.Write(request(1, "greet", "sayHello", "a"))
	conn.Write(request(2, "greet", "secret", "b"))
	for range 2 {
		r, err := readFrame(br)
		if err != nil {
			t.Fatal(err)
		}
		switch r.id {
		case 1:
			if r.status != 20 || valueOf(t, r) != "up:a" {
				t.Errorf("tagged request: status %d", r.status)
			}
		case 2:
			if r.status != dubbo.ErrorStatus(codec.Unauthorized) {
				t.Errorf("denied request: status %d", r.status)
			}
		}
	}
	if up.requests.Load() != 1 {
		t.Errorf("upstream saw %d requests, want 1 (the denied one must not reach it)", up.requests.Load())
	}

	// A filter that stops and resumes later: the request goes on after the read loop has moved on.
	l.Filters = append([]proxy.FilterConfig{{Name: "test.hold"}}, l.Filters...)
	if err := p.Update(&proxy.Config{Listeners: []proxy.Listener{l}, Clusters: cfg.Clusters}); err != nil {
		t.Fatal(err)
	}
	conn.Write(request(3, "greet", "sayHello", "held"))
	var ex filter.Exchange
	select {
	case ex = <-hold.held:
	case <-time.After(10 * time.Second):
		t.Fatal("request never reached the holding filter")
	}
	// The connection keeps serving while the request is held: a heartbeat is answered meanwhile.
	conn.Write(frame(0xe2, 0, 4, []byte{'N'}))
	if r, err := readFrame(br); err != nil || r.id != 4 {
		t.Fatalf("heartbeat while a request is held: %+v, %v", r, err)
	}
	go ex.Resume()
	r, err := readFrame(br)
	if err != nil || r.id != 3 || r.status != 20 || valueOf(t, r) != "up:held" {
		t.Fatalf("resumed request: %+v, %v", r, err)
	}
}

func TestIdleTimeoutClosesQuietConnections(t *testing.T) {
	up := startServer(t, "127.0.0.1:0", "up")
	l := listener(proxy.Route{Cluster: "c"})
	l.IdleTimeout = 200 * time.Millisecond
	c := clusterOf("c", up.addr())
	c.IdleTimeout = 200 * time.Millisecond
	h := newProxy(t, &proxy.Config{Listeners: []proxy.Listener{l}, Clusters: []proxy.Cluster{c}})
	conn := h.dial()
	conn.Write(request(1, "greet", "sayHello", "x"))
	if _, err := readFrame(conn); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := readFrame(conn); err == nil {
		t.Fatal("read a frame nobody sent")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the proxy kept an idle connection open past its idle timeout")
	}
	waitFor(t, "the idle upstream connection to close", func() bool {
		return h.counter("meltemi_proxy_downstream_connections_active", nil) == 0 && up.openConns() == 0
	})
}

// TestUnchangedFiltersSurviveUpdates checks that an update keeps the filter instances whose config did not
// change (and so their state, such as rate-limit buckets), and rebuilds those whose config did.
func TestUnchangedFiltersSurviveUpdates(t *testing.T) {
	builds := map[string]int{}
	filters, err := filter.NewRegistry(filter.Registration{Name: "test.count",
		New: func(cfg json.RawMessage) (filter.Filter, error) {
			builds[string(cfg)]++
			return &tagFilter{key: "k", value: string(cfg)}, nil
		}})
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
	update := func(cfg, endpoint string) {
		t.Helper()
		l := listener(proxy.Route{Cluster: "c"})
		l.Filters = []proxy.FilterConfig{{Name: "test.count", Config: json.RawMessage(cfg)}}
		if err := p.Update(&proxy.Config{Listeners: []proxy.Listener{l},
			Clusters: []proxy.Cluster{clusterOf("c", endpoint)}}); err != nil {
			t.Fatal(err)
		}
	}
	update(`{"a":1}`, "127.0.0.1:1")
	update(`{"a":1}`, "127.0.0.1:2") // only an endpoint changed
	update(`{"a":2}`, "127.0.0.1:2")
	if builds[`{"a":1}`] != 1 || builds[`{"a":2}`] != 1 {
		t.Fatalf("filter builds = %v, want each config built once", builds)
	}
}

// asyncFilter decides every request from another goroutine, the way a filter waiting for a rate-limit
// service does. With early set it waits until that goroutine has decided before returning Stop, so the
// decision always comes before the proxy has copied the request out of the connection's buffer; without it
// the decision races with the return. Requests whose method is "deny" are answered, the rest resumed.
type asyncFilter struct{ early bool }

func (f *asyncFilter) OnRequest(ex filter.Exchange) filter.Status {
	deny := false
	if m, _ := ex.Request().Metadata.Get("method"); m == "deny" {
		deny = true
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if deny {
			ex.Reply(codec.OverLimit, "denied")
		} else {
			ex.Resume()
		}
	}()
	if f.early {
		<-done
	}
	return filter.Stop
}

// TestFilterDecidesFromAnotherGoroutine pipelines requests through a filter that resumes or answers each from
// another goroutine, before and after its OnRequest returns: every request must get its one answer.
func TestFilterDecidesFromAnotherGoroutine(t *testing.T) {
	for _, early := range []bool{true, false} {
		t.Run(fmt.Sprintf("early=%v", early), func(t *testing.T) {
			up := startServer(t, "127.0.0.1:0", "up")
			filters, err := filter.NewRegistry(filter.Registration{Name: "test.async",
				New: func(json.RawMessage) (filter.Filter, error) { return &asyncFilter{early: early}, nil }})
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
			l := listener(proxy.Route{Cluster: "c"})
			l.Filters = []proxy.FilterConfig{{Name: "test.async"}, {Name: "test.async"}}
			if err := p.Update(&proxy.Config{Listeners: []proxy.Listener{l},
				Clusters: []proxy.Cluster{clusterOf("c", up.addr())}}); err != nil {
				t.Fatal(err)
			}
			conn, err := net.Dial("tcp", p.ListenerAddr("dubbo").String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			const n = 200
			var batch []byte
			for id := uint64(1); id <= n; id++ {
				method := "sayHello"
				if id%3 == 0 {
					method = "deny"
				}
				batch = append(batch, request(id, "greet", method, fmt.Sprint(id))...)
			}
			if _, err := conn.Write(batch); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			seen := map[uint64]bool{}
			for range n {
				r, err := readFrame(br)
				if err != nil {
					t.Fatalf("after %d answers: %v", len(seen), err)
				}
				if seen[r.id] {
					t.Fatalf("request %d answered twice", r.id)
				}
				seen[r.id] = true
				want := byte(20)
				if r.id%3 == 0 {
					want = dubbo.ErrorStatus(codec.OverLimit)
				}
				if r.status != want {
					t.Errorf("request %d: status %d, want %d", r.id, r.status, want)
				}
			}
			if got := up.requests.Load(); got != n-n/3 {
				t.Errorf("upstream got %d requests, want %d", got, n-n/3)
			}
		})
	}
}
