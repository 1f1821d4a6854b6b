package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/test/e2e/dubbopeer"
)

// The service the test providers stand for, as a mesh would name it.
const (
	greetHost      = "greet.default.svc.cluster.local"
	greetName      = "greet"
	greetNamespace = "default"
	inbound        = "dubbo-in" // the listener's name, also its stat prefix
)

// greetCluster returns a cluster of the greet service. A non-empty subset keeps only the endpoints whose
// version label matches, the way Istio's DestinationRule subsets do.
func greetCluster(subset string, endpoints ...proxy.Endpoint) proxy.Cluster {
	c := proxy.Cluster{
		Name:      "outbound|20880|" + subset + "|" + greetHost,
		Service:   proxy.Service{Host: greetHost, Name: greetName, Namespace: greetNamespace},
		Endpoints: endpoints,
	}
	if subset != "" {
		c.Subset = map[string]string{"version": subset}
	}
	return c
}

// endpointOf describes a provider as an endpoint labelled with its version.
func endpointOf(p *dubbopeer.Provider) proxy.Endpoint {
	return proxy.Endpoint{Address: p.Addr, Labels: map[string]string{"app": greetName, "version": p.Version}}
}

// dubboListener returns a Dubbo listener on a loopback address of its own, port chosen by the kernel.
func dubboListener(name string, routes ...proxy.Route) proxy.Listener {
	return proxy.Listener{
		Name:    name,
		Address: dubbopeer.NextLoopback() + ":0",
		Codec:   proxy.CodecConfig{Name: dubbo.Name},
		Routes:  proxy.RouteConfig{Name: "greet", Routes: routes},
	}
}

// toCluster is a catch-all route to one cluster.
func toCluster(cluster string) proxy.Route { return proxy.Route{Name: "all", Cluster: cluster} }

// testProxy is a proxy built in-process from its public API, closed when the test ends.
type testProxy struct {
	*proxy.Proxy
	t testing.TB
}

// startProxy builds a proxy with the Dubbo codec and gives it cfg.
func startProxy(t testing.TB, cfg *proxy.Config) *testProxy {
	t.Helper()
	reg, err := codec.NewRegistry(dubbo.Registration())
	if err != nil {
		t.Fatalf("codec registry: %v", err)
	}
	logs := &testLog{t: t}
	// Cleanups run last-registered first: the log closes after the proxy has stopped.
	t.Cleanup(logs.close)
	p, err := proxy.New(proxy.Options{Codecs: reg,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.Update(cfg); err != nil {
		t.Fatalf("proxy.Update: %v", err)
	}
	return &testProxy{Proxy: p, t: t}
}

// testLog sends the proxy's logs to the test's log, shown when the test fails or runs verbosely, and drops
// what comes after the test ended (testing panics on that).
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log("proxy: " + strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) close() {
	l.mu.Lock()
	l.done = true
	l.mu.Unlock()
}

// addr returns the bound address of a listener.
func (p *testProxy) addr(listener string) string {
	p.t.Helper()
	a := p.ListenerAddr(listener)
	if a == nil {
		p.t.Fatalf("listener %q is not bound", listener)
	}
	return a.String()
}

// update swaps in cfg; the test fails if the proxy refuses it.
func (p *testProxy) update(cfg *proxy.Config) {
	p.t.Helper()
	if err := p.Update(cfg); err != nil {
		p.t.Fatalf("proxy.Update: %v", err)
	}
}

// metrics scrapes the admin handler's /metrics and parses the Prometheus text.
func (p *testProxy) metrics() map[string]*dto.MetricFamily {
	p.t.Helper()
	rec := httptest.NewRecorder()
	p.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		p.t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		p.t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// sum adds up the values (counters, gauges) or sample counts (histograms) of the series of a family whose
// labels include all of want. A family that does not exist sums to 0.
func sum(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var total float64
	for _, m := range series(families, name, want) {
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return total
}

// series returns the series of a family whose labels include all of want.
func series(families map[string]*dto.MetricFamily, name string, want map[string]string) []*dto.Metric {
	f := families[name]
	if f == nil {
		return nil
	}
	var out []*dto.Metric
	for _, m := range f.Metric {
		if hasLabels(m, want) {
			out = append(out, m)
		}
	}
	return out
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := labels(m)
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.Label {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// describe renders the series of a family for failure messages.
func describe(families map[string]*dto.MetricFamily, name string) string {
	f := families[name]
	if f == nil {
		return name + ": absent"
	}
	var b strings.Builder
	for _, m := range f.Metric {
		l, _ := json.Marshal(labels(m))
		fmt.Fprintf(&b, "%s%s %v\n", name, l, valueOf(m))
	}
	return b.String()
}

func valueOf(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// waitMetric waits until the summed metric satisfies cond; the proxy records stats off the response path, so
// they may trail the replies a little.
func (p *testProxy) waitMetric(name string, want map[string]string, what string, cond func(float64) bool) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		fams := p.metrics()
		if cond(sum(fams, name, want)) {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: %s%v never became %s; metrics:\n%s", what, name, want, what, describe(fams, name))
		}
		time.Sleep(delay)
	}
}

// ctxTimeout returns a context for one step of a test.
func ctxTimeout(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
