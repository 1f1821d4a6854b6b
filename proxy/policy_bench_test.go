package proxy

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// The cost of each traffic policy on the request path, apart from the sockets that dominate a round trip
// (BenchmarkProxyRoundTrip measures those). All must be 0 allocs/op.

func benchCluster(b *testing.B, lb LBPolicy, n int) *cluster {
	b.Helper()
	cc := &Cluster{Name: "c", LB: lb}
	for i := range n {
		cc.Endpoints = append(cc.Endpoints, Endpoint{Address: fmt.Sprintf("127.0.0.%d:20880", i+1)})
	}
	c, err := testProxy(b).buildCluster(&Node{}, cc, nil)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkPick is choosing an endpoint among 16 by each policy; the hashing policies with the request's
// hash already computed (BenchmarkRequestHash is that).
func BenchmarkPick(b *testing.B) {
	for _, lb := range []LBPolicy{RoundRobin, Random, LeastRequest, RingHash, Maglev} {
		b.Run(string(lb), func(b *testing.B) {
			c := benchCluster(b, lb, 16)
			b.ReportAllocs()
			var h uint64
			for b.Loop() {
				h += 0x9e3779b97f4a7c15
				if c.pick(h, true) == nil {
					b.Fatal("no endpoint")
				}
			}
		})
	}
}

// BenchmarkRequestHash is hashing one metadata value for consistent hashing.
func BenchmarkRequestHash(b *testing.B) {
	md := metadata("interface", "org.apache.dubbo.samples.GreetService", "method", "sayHello", "user", "u-1234567")
	keys := []string{"user"}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := requestHash(md, keys); !ok {
			b.Fatal("not hashed")
		}
	}
}

// BenchmarkConcurrencyLimit is counting a request in and out of a route's limit, whole or per method.
func BenchmarkConcurrencyLimit(b *testing.B) {
	md := metadata("method", "sayHello")
	for _, perKey := range []string{"", "method"} {
		b.Run("perKey="+perKey, func(b *testing.B) {
			cl := &concurrencyLimit{cfg: ConcurrencyLimit{MaxRequests: 1 << 30, PerKey: perKey},
				byKey: map[string]*atomic.Int64{}}
			b.ReportAllocs()
			for b.Loop() {
				n, ok := cl.acquire(md)
				if !ok {
					b.Fatal("refused")
				}
				n.Add(-1)
			}
		})
	}
}

// BenchmarkFaultRoll is deciding whether a request is delayed or aborted, at 1%.
func BenchmarkFaultRoll(b *testing.B) {
	b.ReportAllocs()
	hits := 0
	for b.Loop() {
		if hit(10_000) {
			hits++
		}
	}
	_ = hits
}

// BenchmarkOutlierReport is recording a successful reply against an endpoint's health.
func BenchmarkOutlierReport(b *testing.B) {
	c := benchCluster(b, RoundRobin, 2)
	set := newOutlierSettings(&OutlierDetection{Consecutive5xx: 5})
	h := c.endpoints[0].health
	b.ReportAllocs()
	for b.Loop() {
		c.state.report(h, outcomeSuccess, set)
	}
}

// BenchmarkCallTimer is what a request pays for its route's timeout: a long one (Envoy's default of 15 s) is
// swept by its connection and costs no timer; a short one arms the call's timer and stops it when the reply
// comes.
func BenchmarkCallTimer(b *testing.B) {
	for _, timeout := range []time.Duration{15 * time.Second, 500 * time.Millisecond} {
		b.Run(timeout.String(), func(b *testing.B) {
			r := &route{timeout: timeout}
			c := &call{r: r, timed: true}
			c.timer = time.AfterFunc(time.Hour, c.onTimer)
			c.timer.Stop()
			b.ReportAllocs()
			for b.Loop() {
				now := time.Now()
				c.deadline = now.Add(r.timeout)
				c.mu.Lock()
				c.arm(now)
				c.mu.Unlock()
				c.mu.Lock()
				if c.armed && !c.timer.Stop() {
					b.Fatal("timer fired")
				}
				c.armed = false
				c.mu.Unlock()
			}
		})
	}
}
