package xds

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus series.
type metrics struct {
	pushes          prometheus.Counter
	pushDuration    prometheus.Histogram
	connected       prometheus.Gauge
	nacks           *prometheus.CounterVec
	convergence     prometheus.Histogram
	configVersion   prometheus.Gauge
	translateErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meltemi_controller_pushes_total",
			Help: "Snapshots set for proxies whose config changed.",
		}),
		pushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meltemi_controller_push_duration_seconds",
			Help: "Time to translate and set the config of every connected proxy after a model change, or of one proxy when it connects.",
			// From one cached translation for a connecting proxy to a thousand distinct ones.
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meltemi_controller_connected_proxies",
			Help: "Proxies with at least one open xDS stream.",
		}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_controller_nacks_total",
			Help: "Responses proxies rejected (requests carrying error_detail), by xDS type.",
		}, []string{"type"}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meltemi_controller_convergence_seconds",
			Help: "Time from a model change to a proxy's ACK of every type of the config made from it.",
			// The target is one second for a thousand proxies; Istio users report several.
			Buckets: []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}),
		configVersion: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meltemi_controller_config_version",
			Help: "Version of the model snapshot being served.",
		}),
		translateErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meltemi_controller_translate_errors_total",
			Help: "Translations that failed; the proxies concerned keep their last config.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.pushes, m.pushDuration, m.connected, m.nacks, m.convergence,
		m.configVersion, m.translateErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("xds: metrics: %w", err)
		}
	}
	return m, nil
}
