package ratelimit

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meltemi-mesh/meltemi/proxy/filter"
)

// FuzzConfig feeds arbitrary configs to the decoder: it must refuse or build, never panic, and a filter it
// builds must provision and decide requests (the service is unreachable, so by its failure mode).
func FuzzConfig(f *testing.F) {
	for _, seed := range []string{
		``,
		`{}`,
		config(""),
		config(`"match":{"metadata":[{"name":"method","stringMatch":{"exact":"sayHello"}}]},"failureModeDeny":true`),
		config(`"match":{"metadata":[{"name":"n","rangeMatch":{"start":1,"end":9}}]},"timeout":"0.001s"`),
		`{"domain":"d","rate_limit_service":{"grpc_service":{"envoy_grpc":{"cluster_name":"c","authority":"a"}}},
			"descriptors":[{"property":"p","descriptor_key":"k"}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, cfg []byte) {
		fl, err := Registration().New(cfg)
		if err != nil {
			return
		}
		l := fl.(*limiter)
		if err := l.Provision(&host{metrics: prometheus.NewRegistry()}); err != nil {
			return
		}
		defer l.Close()
		for range 2 {
			ex := newExchange("method", "sayHello", "user", "ann", "n", "5")
			if l.OnRequest(ex) == filter.Stop { // held: wait for the decision
				<-ex.decided
			}
		}
	})
}
