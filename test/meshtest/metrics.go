package meshtest

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics are parsed Prometheus families by name.
type Metrics map[string]*dto.MetricFamily

func parseMetrics(r io.Reader) (Metrics, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(r)
}

// Sum adds up the values (counters, gauges) or sample counts (histograms) of the series of family name whose
// labels include all of want. A family that does not exist sums to 0.
func (m Metrics) Sum(name string, want map[string]string) float64 {
	var total float64
	for _, s := range m.Series(name, want) {
		total += valueOf(s)
	}
	return total
}

// Series returns the series of family name whose labels include all of want.
func (m Metrics) Series(name string, want map[string]string) []*dto.Metric {
	f := m[name]
	if f == nil {
		return nil
	}
	var out []*dto.Metric
	for _, s := range f.Metric {
		if hasLabels(s, want) {
			out = append(out, s)
		}
	}
	return out
}

// Describe renders the series of family name for failure messages.
func (m Metrics) Describe(name string) string {
	f := m[name]
	if f == nil {
		return name + ": absent"
	}
	var b strings.Builder
	for _, s := range f.Metric {
		l, _ := json.Marshal(Labels(s))
		fmt.Fprintf(&b, "%s%s %v\n", name, l, valueOf(s))
	}
	return b.String()
}

// Labels returns a series' labels as a map.
func Labels(s *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range s.Label {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

func hasLabels(s *dto.Metric, want map[string]string) bool {
	got := Labels(s)
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func valueOf(s *dto.Metric) float64 {
	switch {
	case s.Counter != nil:
		return s.Counter.GetValue()
	case s.Gauge != nil:
		return s.Gauge.GetValue()
	case s.Histogram != nil:
		return float64(s.Histogram.GetSampleCount())
	}
	return 0
}
