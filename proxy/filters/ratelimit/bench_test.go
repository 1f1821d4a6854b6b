package ratelimit

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meltemi-mesh/meltemi/proxy/filter"
)

// BenchmarkOnRequest measures the two paths a request takes: one the match does not select (which must cost
// a few nanoseconds and nothing else), and one the rate limit service allows, through a real gRPC call to a
// service on loopback.
func BenchmarkOnRequest(b *testing.B) {
	const match = `"match":{"metadata":[{"name":"method","stringMatch":{"exact":"sayHello"}}]}`
	b.Run("not selected", func(b *testing.B) {
		h := &host{addr: "127.0.0.1:1", metrics: prometheus.NewRegistry()}
		l := newTestFilter(b, h, config(match))
		ex := newExchange("interface", "org.apache.dubbo.samples.basic.api.DemoService", "method", "sayBye",
			"user", "ann")
		b.ReportAllocs()
		for b.Loop() {
			if l.OnRequest(ex) != filter.Continue {
				b.Fatal("held a request the match does not select")
			}
		}
	})
	b.Run("allowed", func(b *testing.B) {
		svc := startService(b)
		h := &host{addr: svc.addr, metrics: prometheus.NewRegistry()}
		l := newTestFilter(b, h, config(match))
		ex := newExchange("interface", "org.apache.dubbo.samples.basic.api.DemoService", "method", "sayHello",
			"user", "ann")
		b.ReportAllocs()
		for b.Loop() {
			if l.OnRequest(ex) != filter.Stop {
				b.Fatal("a selected request was not held")
			}
			if d := <-ex.decided; d != "resume" {
				b.Fatalf("decided %q", d)
			}
		}
	})
}
