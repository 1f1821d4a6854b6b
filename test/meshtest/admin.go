package meshtest

import (
	"net/http"
	"testing"
	"time"
)

// adminHTTP talks to admin endpoints; the timeout keeps a hung process from hanging the test.
var adminHTTP = &http.Client{Timeout: 5 * time.Second}

// Admin is the admin endpoint of a meltemi process. Its methods take the test (or subtest) they fail.
type Admin struct {
	Addr string
	Proc *Process
}

// Status returns the HTTP status of GET path, or 0 if the request failed.
func (a Admin) Status(path string) int {
	resp, err := adminHTTP.Get("http://" + a.Addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// WaitReady waits until /ready answers 200 and returns how long that took; the test fails at once if the
// process exits meanwhile.
func (a Admin) WaitReady(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	Poll(t, timeout, a.Proc.name+" /ready to answer 200", func() bool {
		a.Proc.Alive(t)
		return a.Status("/ready") == http.StatusOK
	})
	return time.Since(start)
}

// Metrics scrapes /metrics and parses it.
func (a Admin) Metrics(t testing.TB) Metrics {
	t.Helper()
	resp, err := adminHTTP.Get("http://" + a.Addr + "/metrics")
	if err != nil {
		a.Proc.Alive(t)
		t.Fatalf("GET %s/metrics: %v", a.Addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics: %s", a.Addr, resp.Status)
	}
	m, err := parseMetrics(resp.Body)
	if err != nil {
		t.Fatalf("parse %s/metrics: %v", a.Addr, err)
	}
	return m
}

// Value sums a metric's series whose labels include want (0 for a family not there yet).
func (a Admin) Value(t testing.TB, name string, want map[string]string) float64 {
	t.Helper()
	return a.Metrics(t).Sum(name, want)
}

// WaitMetric waits until the summed metric satisfies cond and returns its value then.
func (a Admin) WaitMetric(t testing.TB, timeout time.Duration, name string, want map[string]string,
	what string, cond func(float64) bool) float64 {
	t.Helper()
	return waitMetric(t, a.Proc.name, timeout, func() Metrics { return a.Metrics(t) }, name, want, what, cond)
}

// waitMetric polls scrape until the summed metric satisfies cond. Polls stay frequent (every 10 ms at most),
// since some tests wait like this for every config change.
func waitMetric(t testing.TB, who string, timeout time.Duration, scrape func() Metrics, name string,
	want map[string]string, what string, cond func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for delay := time.Millisecond; ; delay = min(2*delay, 10*time.Millisecond) {
		m := scrape()
		if v := m.Sum(name, want); cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s%v did not become %s within %v; series:\n%s", who, name, want, what, timeout,
				m.Describe(name))
		}
		time.Sleep(delay)
	}
}

// LogFlags make meltemi processes say what they do at info level, which tests show on failure.
var LogFlags = []string{"--log-level", "info"}

// StartMesh runs `meltemi mesh` on the manifests in dir, with its xDS and admin addresses on host, and waits
// until it is ready.
func StartMesh(t testing.TB, bin, dir, host string) Admin {
	t.Helper()
	xdsAddr, adminAddr := FreeAddr(t, host), FreeAddr(t, host)
	p := Start(t, bin, "mesh", append([]string{"mesh", "-f", dir, "--xds", xdsAddr, "--admin", adminAddr},
		LogFlags...)...)
	a := Admin{Addr: adminAddr, Proc: p}
	d := a.WaitReady(t, 30*time.Second)
	t.Logf("meltemi mesh ready in %v", d.Round(time.Millisecond))
	return a
}
