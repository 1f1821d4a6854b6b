package localratelimit

import (
	"testing"

	"github.com/meltemi-mesh/meltemi/proxy/filter"
)

// benchConfig has buckets too large to run dry during a benchmark, and one condition to test or pass over.
const benchConfig = `{"tokenBucket":{"maxTokens":4000000000,"tokensPerFill":4000000000,"fillInterval":"10s"},
	"conditions":[{"match":{"metadata":[{"name":"method","stringMatch":{"exact":"sayHello"}}]},
		"tokenBucket":{"maxTokens":4000000000,"tokensPerFill":4000000000,"fillInterval":"10s"}}]}`

func newBenchFilter(b *testing.B) filter.Filter {
	b.Helper()
	f, err := Registration().New([]byte(benchConfig)) // the real monotonic clock
	if err != nil {
		b.Fatal(err)
	}
	return f
}

// BenchmarkOnRequest measures the allowed path: match the condition, read the clock, take a token.
func BenchmarkOnRequest(b *testing.B) {
	for _, bc := range []struct{ name, method string }{
		{"condition", "sayHello"},
		{"global", "bye"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := newBenchFilter(b)
			ex := request("interface", "org.apache.dubbo.samples.basic.api.DemoService", "method", bc.method)
			b.ReportAllocs()
			for b.Loop() {
				if f.OnRequest(ex) != filter.Continue {
					b.Fatal("refused")
				}
			}
		})
	}
	b.Run("parallel", func(b *testing.B) {
		// Every goroutine takes from the same bucket: the cost of contention on its counter.
		f := newBenchFilter(b)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ex := request("method", "sayHello")
			for pb.Next() {
				if f.OnRequest(ex) != filter.Continue {
					b.Error("refused")
					return
				}
			}
		})
	})
}
