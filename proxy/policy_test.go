package proxy_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/proxy"
)

// pserver is a Dubbo provider stand-in whose behaviour tests choose per request (by method name) or for the
// whole server (mode): answer, answer with a failure status, answer late, never answer, or reset the
// connection.
type pserver struct {
	name     string
	ln       net.Listener
	mode     atomic.Pointer[string] // overrides the method when set
	requests atomic.Int64
	accepted atomic.Int64
	byMethod sync.Map // method -> *atomic.Int64
}

func startPServer(t *testing.T, name string) *pserver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &pserver{name: name, ln: ln}
	var conns sync.WaitGroup
	t.Cleanup(func() { ln.Close(); conns.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			conns.Add(1)
			go func() {
				defer conns.Done()
				s.serve(c)
			}()
			go func() { <-tDone(t); c.Close() }()
		}
	}()
	return s
}

// tDone is closed when the test ends.
func tDone(t *testing.T) <-chan struct{} {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	return done
}

func (s *pserver) addr() string { return s.ln.Addr().String() }

func (s *pserver) setMode(m string) { s.mode.Store(&m) }

func (s *pserver) count(method string) int64 {
	if n, ok := s.byMethod.Load(method); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

func (s *pserver) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	var wmu sync.Mutex
	write := func(b []byte) {
		wmu.Lock()
		defer wmu.Unlock()
		c.Write(b)
	}
	for {
		var hdr [16]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[12:]))
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		s.requests.Add(1)
		method := methodOf(body)
		n, _ := s.byMethod.LoadOrStore(method, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		if hdr[2]&0x40 == 0 {
			continue // oneway
		}
		if m := s.mode.Load(); m != nil && *m != "" {
			method = *m
		}
		id := binary.BigEndian.Uint64(hdr[4:])
		ok := frame(0x02, 20, id, hessianStringBytes([]byte{0x91}, s.name, ":", []byte(method)))
		switch {
		case method == "hold":
		case method == "reset":
			return
		case method == "fail":
			write(frame(0x02, 80, id, hessianString(nil, "provider failed")))
		case strings.HasPrefix(method, "slow"):
			var ms int
			fmt.Sscanf(method, "slow%d", &ms)
			time.AfterFunc(time.Duration(ms)*time.Millisecond, func() { write(ok) })
		default:
			write(ok)
		}
	}
}

// methodOf reads the method of a request built by request: the fourth string of the body.
func methodOf(body []byte) string {
	var s string
	for range 4 {
		n := int(body[0])
		s, body = string(body[1:1+n]), body[1+n:]
	}
	return s
}

// client is a connection to the proxy that sends requests and reads their replies by id.
type client struct {
	t      *testing.T
	conn   net.Conn
	mu     sync.Mutex
	next   uint64
	waits  map[uint64]chan reply
	closed chan struct{}
}

func (h *harness) client() *client {
	c := &client{t: h.t, conn: h.dial(), waits: map[uint64]chan reply{}, closed: make(chan struct{})}
	go c.readLoop()
	return c
}

func (c *client) readLoop() {
	defer close(c.closed)
	for {
		r, err := readFrame(c.conn)
		if err != nil {
			return
		}
		c.mu.Lock()
		ch := c.waits[r.id]
		delete(c.waits, r.id)
		c.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// start sends a request and returns where its reply will arrive.
func (c *client) start(method string, attachments ...string) <-chan reply {
	c.mu.Lock()
	c.next++
	id := c.next
	ch := make(chan reply, 1)
	c.waits[id] = ch
	c.mu.Unlock()
	if _, err := c.conn.Write(request(id, "greet", method, "x", attachments...)); err != nil {
		c.t.Fatal(err)
	}
	return ch
}

// call sends a request and waits for its reply.
func (c *client) call(method string, attachments ...string) reply {
	c.t.Helper()
	select {
	case r := <-c.start(method, attachments...):
		return r
	case <-c.closed:
		c.t.Fatalf("connection closed waiting for the reply to %s", method)
	case <-time.After(10 * time.Second):
		c.t.Fatalf("no reply to %s", method)
	}
	return reply{}
}

// served returns the name of the server that answered r ("" for a local reply).
func served(r reply) string {
	if r.status != 20 || len(r.body) < 2 || r.body[0] != 0x91 {
		return ""
	}
	v := string(r.body[2:])
	name, _, _ := strings.Cut(v, ":")
	return name
}

func policyProxy(t *testing.T, route proxy.Route, clusters ...proxy.Cluster) *harness {
	t.Helper()
	if route.Cluster == "" && len(route.WeightedClusters) == 0 {
		route.Cluster = "c"
	}
	return newProxy(t, &proxy.Config{Listeners: []proxy.Listener{listener(route)}, Clusters: clusters})
}

// TestLongRouteTimeout: a timeout of a second or more is swept by its connection rather than timed by a timer
// of its own; it fires all the same, with the protocol's timeout error.
func TestLongRouteTimeout(t *testing.T) {
	up := startPServer(t, "up")
	h := policyProxy(t, proxy.Route{Timeout: 1100 * time.Millisecond}, clusterOf("c", up.addr()))
	c := h.client()
	start := time.Now()
	held := c.start("hold")
	if r := c.call("ok"); served(r) != "up" {
		t.Fatalf("a request beside the held one got %+v", r)
	}
	r := <-held
	if r.status != dubbo.StatusServerTimeout {
		t.Fatalf("status %d, want %d (timeout)", r.status, dubbo.StatusServerTimeout)
	}
	if waited := time.Since(start); waited < 1100*time.Millisecond {
		t.Fatalf("answered after %v, before the timeout", waited)
	}
	h.waitCounter("istio_requests_total", map[string]string{"response_flags": "UT"}, 1)
}

func TestRouteTimeout(t *testing.T) {
	up := startPServer(t, "up")
	h := policyProxy(t, proxy.Route{Timeout: 100 * time.Millisecond}, clusterOf("c", up.addr()))
	c := h.client()
	start := time.Now()
	r := c.call("hold")
	if r.status != dubbo.StatusServerTimeout {
		t.Fatalf("status %d, want %d (timeout)", r.status, dubbo.StatusServerTimeout)
	}
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Fatalf("answered after %v, before the 100ms timeout", waited)
	}
	h.waitCounter("istio_requests_total", map[string]string{"response_flags": "UT"}, 1)
	h.waitCounter("meltemi_proxy_upstream_timeouts_total", map[string]string{"cluster": "c"}, 1)
	// A reply that comes after its request timed out is dropped and counted, and the connection carries on.
	if r := c.call("slow300"); r.status != dubbo.StatusServerTimeout {
		t.Fatalf("slow reply: status %d, want a timeout", r.status)
	}
	waitFor(t, "the late reply to be counted", func() bool {
		return h.counter("meltemi_proxy_upstream_late_replies_total", nil) == 1
	})
	if r := c.call("ok"); served(r) != "up" {
		t.Fatalf("after a late reply, a request got %+v", r)
	}
	if n := up.accepted.Load(); n != 1 {
		t.Fatalf("the server saw %d connections, want the one", n)
	}
}

func TestPerTryTimeoutRetriesAnotherEndpoint(t *testing.T) {
	slow, fast := startPServer(t, "slow"), startPServer(t, "fast")
	slow.setMode("hold")
	// Three retries: on a loaded machine the fast endpoint may itself miss a try's time now and then.
	h := policyProxy(t, proxy.Route{Timeout: 10 * time.Second, Retry: &proxy.RetryPolicy{
		RetryOn: []proxy.RetryOn{proxy.RetryTimeout}, NumRetries: 3, PerTryTimeout: 200 * time.Millisecond}},
		clusterOf("c", slow.addr(), fast.addr()))
	c := h.client()
	for i := range 20 {
		if r := c.call("ok"); served(r) != "fast" {
			t.Fatalf("request %d: %+v, want fast's answer", i, r)
		}
	}
	if slow.requests.Load() == 0 {
		t.Fatal("round robin never tried the slow endpoint")
	}
	// Every try the slow endpoint held was retried (and a try of the fast one that missed its time, if any).
	waitFor(t, "the retries to be counted", func() bool {
		return h.counter("meltemi_proxy_upstream_retries_total", nil) >= float64(slow.requests.Load())
	})
}

// TestRetryConditions: each condition retries what it names and nothing else.
func TestRetryConditions(t *testing.T) {
	for _, tc := range []struct {
		name     string
		bad      string // the failing endpoint's behaviour
		on       []proxy.RetryOn
		statuses []int32
		want     bool // whether every request succeeds
		flag     string
	}{
		{"reset retried", "reset", []proxy.RetryOn{proxy.RetryReset}, nil, true, ""},
		{"reset not retried on connect-failure", "reset", []proxy.RetryOn{proxy.RetryConnectFailure}, nil, false, "UC"},
		{"status retried", "fail", []proxy.RetryOn{proxy.RetryRetriableStatusCodes}, []int32{80}, true, ""},
		{"other status not retried", "fail", []proxy.RetryOn{proxy.RetryRetriableStatusCodes}, []int32{100}, false, "-"},
		{"failed retried", "fail", []proxy.RetryOn{proxy.RetryFailed}, nil, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad, good := startPServer(t, "bad"), startPServer(t, "good")
			bad.setMode(tc.bad)
			h := policyProxy(t, proxy.Route{Retry: &proxy.RetryPolicy{RetryOn: tc.on, NumRetries: 1,
				RetriableStatusCodes: tc.statuses}}, clusterOf("c", bad.addr(), good.addr()))
			c := h.client()
			failed := 0
			for range 10 {
				if served(c.call("ok")) != "good" {
					failed++
				}
			}
			if tc.want && failed > 0 {
				t.Fatalf("%d of 10 requests failed", failed)
			}
			if !tc.want && failed == 0 {
				t.Fatal("every request succeeded: the failure was retried")
			}
			if tc.flag != "" && h.counter("istio_requests_total", map[string]string{"response_flags": tc.flag}) == 0 {
				t.Fatalf("no request recorded with flag %s", tc.flag)
			}
		})
	}
}

func TestRetryOnConnectFailure(t *testing.T) {
	dead := startPServer(t, "dead")
	dead.ln.Close()
	good := startPServer(t, "good")
	route := proxy.Route{Retry: &proxy.RetryPolicy{RetryOn: []proxy.RetryOn{proxy.RetryConnectFailure}, NumRetries: 2}}
	h := policyProxy(t, route, clusterOf("c", dead.addr(), good.addr()))
	c := h.client()
	for i := range 10 {
		if r := c.call("ok"); served(r) != "good" {
			t.Fatalf("request %d: %+v", i, r)
		}
	}
	if n := h.counter("meltemi_proxy_upstream_connect_failures_total", nil); n == 0 {
		t.Fatal("the dead endpoint was never tried")
	}
}

func TestRetryLimitOverflows(t *testing.T) {
	bad := startPServer(t, "bad")
	bad.setMode("fail")
	cl := clusterOf("c", bad.addr())
	cl.CircuitBreaker.MaxRetries = 1
	h := policyProxy(t, proxy.Route{Retry: &proxy.RetryPolicy{RetryOn: []proxy.RetryOn{proxy.RetryFailed},
		NumRetries: 3, BackOffBase: 200 * time.Millisecond}}, cl)
	c := h.client()
	var replies []<-chan reply
	for range 4 {
		replies = append(replies, c.start("ok"))
	}
	for _, ch := range replies {
		<-ch
	}
	if n := h.counter("meltemi_proxy_upstream_retry_overflow_total", nil); n == 0 {
		t.Fatal("four failing requests with one retry allowed in flight never overflowed")
	}
}

func TestCircuitBreakerMaxRequests(t *testing.T) {
	up := startPServer(t, "up")
	cl := clusterOf("c", up.addr())
	cl.CircuitBreaker.MaxRequests = 2
	h := policyProxy(t, proxy.Route{}, cl)
	c := h.client()
	held := []<-chan reply{c.start("hold"), c.start("hold")}
	waitFor(t, "the held requests to arrive", func() bool { return up.requests.Load() == 2 })
	if r := c.call("ok"); r.status != dubbo.StatusThreadpoolExhausted {
		t.Fatalf("third request answered %+v, want over limit (%d)", r, dubbo.StatusThreadpoolExhausted)
	}
	h.waitCounter("istio_requests_total", map[string]string{"response_flags": "UO"}, 1)
	h.waitCounter("meltemi_proxy_upstream_overflow_total", map[string]string{"limit": "max_requests"}, 1)
	if len(held) != 2 {
		t.Fatal("lost a held request")
	}
}

func TestConcurrencyLimitPerMethod(t *testing.T) {
	up := startPServer(t, "up")
	h := policyProxy(t, proxy.Route{ConcurrencyLimit: &proxy.ConcurrencyLimit{MaxRequests: 1, PerKey: "method"}},
		clusterOf("c", up.addr()))
	c := h.client()
	c.start("hold")
	waitFor(t, "the held request to arrive", func() bool { return up.requests.Load() == 1 })
	if r := c.call("hold"); r.status != dubbo.StatusThreadpoolExhausted {
		t.Fatalf("a second request of the held method got %+v, want over limit", r)
	}
	if r := c.call("ok"); served(r) != "up" {
		t.Fatalf("another method was refused: %+v", r)
	}
	h.waitCounter("istio_requests_total", map[string]string{"response_flags": "UO"}, 1)
}

func TestFaultAbortShare(t *testing.T) {
	up := startPServer(t, "up")
	h := policyProxy(t, proxy.Route{Fault: &proxy.Fault{Abort: "unauthorized", AbortPerMillion: 300_000}},
		clusterOf("c", up.addr()))
	c := h.client()
	const n = 2000
	aborted := 0
	for range n {
		r := c.call("ok")
		switch {
		case served(r) == "up":
		case r.status == 20:
			t.Fatalf("unexpected reply %+v", r)
		default:
			aborted++
		}
	}
	if sigma := math.Sqrt(n * 0.3 * 0.7); math.Abs(float64(aborted)-0.3*n) > 4.5*sigma {
		t.Fatalf("%d of %d aborted, want %v ± %.0f", aborted, n, 0.3*n, 4.5*sigma)
	}
	h.waitCounter("istio_requests_total", map[string]string{"response_flags": "FI"}, float64(aborted))
	if got := up.requests.Load(); got != int64(n-aborted) {
		t.Fatalf("the server saw %d requests, %d were not aborted", got, n-aborted)
	}
}

func TestFaultDelay(t *testing.T) {
	up := startPServer(t, "up")
	h := policyProxy(t, proxy.Route{Fault: &proxy.Fault{Delay: 80 * time.Millisecond, DelayPerMillion: 1_000_000}},
		clusterOf("c", up.addr()))
	c := h.client()
	start := time.Now()
	if r := c.call("ok"); served(r) != "up" {
		t.Fatalf("delayed request got %+v", r)
	}
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Fatalf("answered after %v, before the 80ms delay", d)
	}
	h.waitCounter("istio_requests_total", map[string]string{"response_flags": "DI"}, 1)
}

func TestMirror(t *testing.T) {
	primary, shadow := startPServer(t, "primary"), startPServer(t, "shadow")
	shadow.setMode("hold") // a mirror that never answers must not hold anything up
	h := policyProxy(t, proxy.Route{Cluster: "c", Mirrors: []proxy.Mirror{{Cluster: "m", PerMillion: 500_000}}},
		clusterOf("c", primary.addr()), clusterOf("m", shadow.addr()))
	c := h.client()
	const n = 1000
	for i := range n {
		if r := c.call("ok"); served(r) != "primary" {
			t.Fatalf("request %d: %+v", i, r)
		}
	}
	waitFor(t, "the mirrored copies to arrive", func() bool {
		return float64(shadow.requests.Load()) == h.counter("meltemi_proxy_mirror_requests_total",
			map[string]string{"result": "sent"})
	})
	got := float64(shadow.requests.Load())
	if sigma := math.Sqrt(n * 0.25); math.Abs(got-n/2) > 4.5*sigma {
		t.Fatalf("%v of %d mirrored, want %d ± %.0f", got, n, n/2, 4.5*sigma)
	}
	h.waitCounter("istio_requests_total", map[string]string{"destination_service_name": "greet"}, 1000)
}

func TestConsistentHashPinsKeys(t *testing.T) {
	for _, lb := range []proxy.LBPolicy{proxy.RingHash, proxy.Maglev} {
		t.Run(string(lb), func(t *testing.T) {
			var servers []*pserver
			var addrs []string
			for i := range 4 {
				s := startPServer(t, fmt.Sprint("s", i))
				servers = append(servers, s)
				addrs = append(addrs, s.addr())
			}
			cl := clusterOf("c", addrs...)
			cl.LB = lb
			h := policyProxy(t, proxy.Route{HashPolicy: []string{"user"}}, cl)
			c := h.client()
			owner := map[string]string{}
			for round := range 5 {
				for u := range 40 {
					user := fmt.Sprint("user-", u)
					got := served(c.call("ok", "user", user))
					if round == 0 {
						owner[user] = got
					} else if got != owner[user] {
						t.Fatalf("%s went to %s, then to %s", user, owner[user], got)
					}
				}
			}
			used := map[string]bool{}
			for _, s := range owner {
				used[s] = true
			}
			if len(used) < 3 {
				t.Fatalf("40 keys used only %d of 4 endpoints", len(used))
			}
		})
	}
}

func TestOutlierEjectionAndReturn(t *testing.T) {
	bad, good := startPServer(t, "bad"), startPServer(t, "good")
	bad.setMode("fail")
	cl := clusterOf("c", bad.addr(), good.addr())
	cl.Outlier = &proxy.OutlierDetection{Consecutive5xx: 3, Interval: 20 * time.Millisecond,
		BaseEjectionTime: 300 * time.Millisecond, MaxEjectionPercent: 50}
	h := policyProxy(t, proxy.Route{}, cl)
	c := h.client()
	for bad.requests.Load() < 3 {
		c.call("ok")
	}
	h.waitCounter("meltemi_proxy_outlier_ejections_total", nil, 1)
	before := bad.requests.Load()
	for i := range 50 {
		if r := c.call("ok"); served(r) != "good" {
			t.Fatalf("request %d after the ejection: %+v", i, r)
		}
	}
	if bad.requests.Load() != before {
		t.Fatal("the ejected endpoint still got requests")
	}
	// It comes back once its ejection time is up; healthy now, it keeps its place.
	bad.setMode("")
	waitFor(t, "the ejected endpoint to come back", func() bool {
		return h.counter("meltemi_proxy_outlier_ejected_endpoints", nil) == 0
	})
	for range 10 {
		c.call("ok")
	}
	if bad.requests.Load() == before {
		t.Fatal("the endpoint never got requests again after its ejection ended")
	}
}

func TestPriorityFailover(t *testing.T) {
	local, remote := startPServer(t, "local"), startPServer(t, "remote")
	local.setMode("fail")
	cl := proxy.Cluster{Name: "c", Endpoints: []proxy.Endpoint{{Address: local.addr()},
		{Address: remote.addr(), Priority: 1}}, PanicThreshold: 50,
		Outlier: &proxy.OutlierDetection{Consecutive5xx: 2, Interval: time.Hour, BaseEjectionTime: time.Hour}}
	h := policyProxy(t, proxy.Route{}, cl)
	c := h.client()
	if r := c.call("ok"); r.status != 80 || remote.requests.Load() != 0 {
		t.Fatalf("priority 1 took traffic while priority 0 was healthy: %+v", r)
	}
	c.call("ok") // the second failure ejects it
	for i := range 20 {
		if r := c.call("ok"); served(r) != "remote" {
			t.Fatalf("request %d after priority 0 lost its endpoint: %+v", i, r)
		}
	}
}

func TestMaxRequestsPerConnection(t *testing.T) {
	up := startPServer(t, "up")
	cl := clusterOf("c", up.addr())
	cl.MaxRequestsPerConnection = 5
	h := policyProxy(t, proxy.Route{}, cl)
	c := h.client()
	for range 12 {
		if r := c.call("ok"); served(r) != "up" {
			t.Fatalf("got %+v", r)
		}
	}
	if n := up.accepted.Load(); n != 3 {
		t.Fatalf("12 requests, 5 per connection: %d upstream connections, want 3", n)
	}
}

// waitCounter waits for a metric to reach want: the proxy records a request after its reply is written.
func (h *harness) waitCounter(name string, labels map[string]string, want float64) {
	h.t.Helper()
	var got float64
	waitFor(h.t, fmt.Sprintf("%s%v to reach %v", name, labels, want), func() bool {
		got = h.counter(name, labels)
		return got == want
	})
}

// TestHalfClosedClientGetsEveryAnswer: a client that sends its requests and closes its sending side gets
// every answer before the proxy closes the connection, however the answers were batched.
func TestHalfClosedClientGetsEveryAnswer(t *testing.T) {
	up := startPServer(t, "up")
	h := policyProxy(t, proxy.Route{}, clusterOf("c", up.addr()))
	for round := range 5 {
		conn := h.dial()
		const n = 200
		var reqs []byte
		for i := range n {
			reqs = append(reqs, request(uint64(i+1), "greet", "ok", "x")...)
		}
		if _, err := conn.Write(reqs); err != nil {
			t.Fatal(err)
		}
		conn.(*net.TCPConn).CloseWrite()
		got := 0
		for {
			if _, err := readFrame(conn); err != nil {
				break
			}
			got++
		}
		if got != n {
			t.Fatalf("round %d: %d answers of %d before the connection closed", round, got, n)
		}
	}
}
