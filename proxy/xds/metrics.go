package xds

import "github.com/prometheus/client_golang/prometheus"

// metrics are the client's Prometheus metrics.
type metrics struct {
	applied    prometheus.Counter
	nacks      *prometheus.CounterVec
	connected  prometheus.Gauge
	reconnects prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meltemi_xds_updates_applied_total",
			Help: "Configs built from xDS that the proxy accepted.",
		}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_xds_nacks_total",
			Help: "xDS responses rejected, by resource type (lds, rds, cds, eds).",
		}, []string{"type"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meltemi_xds_connected",
			Help: "1 while a stream to the controller is open, else 0.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meltemi_xds_reconnects_total",
			Help: "Attempts to open a new stream to the controller after one ended or failed.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.applied, m.nacks, m.connected, m.reconnects} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
