package meshtest

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/proxy"
)

// Proxy is a proxy built in-process from its public API, closed when the test ends.
type Proxy struct {
	*proxy.Proxy
	t testing.TB
}

// StartProxy builds a proxy with the given codecs and gives it cfg. Its logs go to the test's log.
func StartProxy(t testing.TB, cfg *proxy.Config, codecs ...codec.Registration) *Proxy {
	t.Helper()
	reg, err := codec.NewRegistry(codecs...)
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
	return &Proxy{Proxy: p, t: t}
}

// Addr returns the bound address of a listener.
func (p *Proxy) Addr(listener string) string {
	p.t.Helper()
	a := p.ListenerAddr(listener)
	if a == nil {
		p.t.Fatalf("listener %q is not bound", listener)
	}
	return a.String()
}

// Apply swaps in cfg; the test fails if the proxy refuses it.
func (p *Proxy) Apply(cfg *proxy.Config) {
	p.t.Helper()
	if err := p.Update(cfg); err != nil {
		p.t.Fatalf("proxy.Update: %v", err)
	}
}

// Metrics scrapes the admin handler's /metrics.
func (p *Proxy) Metrics() Metrics {
	p.t.Helper()
	rec := httptest.NewRecorder()
	p.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		p.t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	m, err := parseMetrics(rec.Body)
	if err != nil {
		p.t.Fatalf("parse /metrics: %v", err)
	}
	return m
}

// WaitMetric waits until the summed metric satisfies cond. The proxy records stats off the response path, so
// they may trail the replies a little.
func (p *Proxy) WaitMetric(name string, want map[string]string, what string, cond func(float64) bool) float64 {
	p.t.Helper()
	return waitMetric(p.t, "proxy", 10*time.Second, p.Metrics, name, want, what, cond)
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
