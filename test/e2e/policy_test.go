package e2e

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/test/e2e/dubbopeer"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// TestTrafficPolicy checks each traffic policy through `meltemi mesh`, configured only by manifests (Istio
// DestinationRules, Aeraki MetaRouters with Meltemi's route extensions), between real dubbo-go consumers and
// providers whose behaviour the test switches by calling them directly.
func TestTrafficPolicy(t *testing.T) {
	runWithBinary(t, []binaryTest{
		{"ConsistentHashPinsKeys", testConsistentHash},
		{"OutlierEjectionAndReturn", testOutlierEjection},
		{"KilledProviderUnderLoad", testKilledProvider},
		{"SlowProviderTimesOut", testTimeout},
		{"LocalRateLimitLetsNThrough", testLocalRateLimit},
		{"FaultInjection", testFaults},
		{"Mirror", testMirror},
		{"ConcurrencyLimitPerMethod", testConcurrencyLimit},
	})
}

// policyMesh is the greet service (providers v1 and v2) behind `meltemi mesh`, with a DestinationRule traffic
// policy and MetaRouter routes of the test's choosing, and a consumer of it.
type policyMesh struct {
	g      *greetService
	mesh   meshtest.Admin
	c      *dubbopeer.Consumer
	v1, v2 *dubbopeer.Consumer // the providers themselves, for their controls
	ctx    context.Context
}

func startPolicyMesh(t *testing.T, bin, trafficPolicy, router string) *policyMesh {
	t.Helper()
	block := meshtest.NewNet()
	g := newGreetService(t, block, 1)
	svc := g.service()
	svc.TrafficPolicy = trafficPolicy
	dir := t.TempDir()
	meshtest.WriteAtomically(t, dir, "greet.yaml", svc.YAML(t))
	if router != "" {
		meshtest.WriteAtomically(t, dir, "router.yaml", router)
	}
	pm := &policyMesh{g: g, ctx: meshCtx(t)}
	pm.mesh = meshtest.StartMesh(t, bin, dir, block.Host(100))
	pm.c = dubbopeer.NewConsumer(t, g.addr(0))
	pm.v1, pm.v2 = dubbopeer.NewConsumer(t, g.v1.Addr), dubbopeer.NewConsumer(t, g.v2.Addr)
	return pm
}

// control sets a provider's behaviour.
func (pm *policyMesh) control(t *testing.T, provider *dubbopeer.Consumer, mode string) {
	t.Helper()
	if err := provider.Control(pm.ctx, mode); err != nil {
		t.Fatalf("control %s: %v", mode, err)
	}
}

func (pm *policyMesh) calls(t *testing.T, provider *dubbopeer.Consumer, method string) int {
	t.Helper()
	n, err := provider.Calls(pm.ctx, method)
	if err != nil {
		t.Fatalf("calls: %v", err)
	}
	return n
}

func testConsistentHash(t *testing.T, bin string) {
	pm := startPolicyMesh(t, bin, "    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n", "")
	owner := map[string]string{}
	for round := range 5 {
		for u := range 20 {
			user := fmt.Sprint("user-", u)
			v, err := hello(dubbopeer.WithAttachments(pm.ctx, map[string]string{"x-user": user}), pm.c, user)
			if err != nil {
				t.Fatalf("%s: %v", user, err)
			}
			if round == 0 {
				owner[user] = v
			} else if owner[user] != v {
				t.Fatalf("%s was answered by %s, then by %s", user, owner[user], v)
			}
		}
	}
	used := map[string]int{}
	for _, v := range owner {
		used[v]++
	}
	if len(used) != 2 {
		t.Fatalf("20 users all went to %v: the key does not spread", used)
	}
}

func testOutlierEjection(t *testing.T, bin string) {
	pm := startPolicyMesh(t, bin, `    loadBalancer:
      simple: ROUND_ROBIN
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 100ms
      baseEjectionTime: 3s
      maxEjectionPercent: 50
`, "")
	pm.control(t, pm.v1, dubbopeer.BehaveFail)
	failures := 0
	for failures < 3 {
		if _, err := hello(pm.ctx, pm.c, "x"); err != nil {
			failures++
		}
	}
	pm.mesh.WaitMetric(t, 10*time.Second, "meltemi_proxy_outlier_ejections_total", nil, "one ejection",
		func(v float64) bool { return v == 1 })
	before := pm.calls(t, pm.v1, dubbopeer.MethodSayHello)
	for i := range 40 {
		if v, err := hello(pm.ctx, pm.c, fmt.Sprint("while-ejected-", i)); err != nil || v != "v2" {
			t.Fatalf("call %d while v1 is ejected: answered by %q (%v), want v2", i, v, err)
		}
	}
	if n := pm.calls(t, pm.v1, dubbopeer.MethodSayHello); n != before {
		t.Fatalf("the ejected provider got %d calls", n-before)
	}
	// Healthy again, it comes back once its ejection time is up.
	pm.control(t, pm.v1, dubbopeer.BehaveOK)
	meshtest.Poll(t, 20*time.Second, "v1 to answer again", func() bool {
		v, err := hello(pm.ctx, pm.c, "back")
		return err == nil && v == "v1"
	})
}

func testKilledProvider(t *testing.T, bin string) {
	pm := startPolicyMesh(t, bin, "", pmRouter(t, `  - name: idempotent
    route:
    - destination:
        host: HOST
    retries:
      attempts: 3
      retryOn: connect-failure,reset
`))
	consumers := []*dubbopeer.Consumer{pm.c, dubbopeer.NewConsumer(t, pm.g.addr(0))}
	tr := startTraffic(pm.ctx, consumers, 8, 0)
	defer tr.halt()
	tr.waitCalls(t, 500, "before the kill")
	pm.g.v1.Stop()
	tr.waitCalls(t, 2000, "after the kill")
	tr.halt()
	tr.noFailures(t, "while a provider was killed under load")
	pm.mesh.WaitMetric(t, 10*time.Second, "meltemi_proxy_upstream_retries_total", nil, "retries", func(v float64) bool {
		return v > 0
	})
	t.Logf("%d calls, by version %v", tr.calls(), tr.versions())
}

func testTimeout(t *testing.T, bin string) {
	pm := startPolicyMesh(t, bin, "", pmRouter(t, `  - name: bounded
    route:
    - destination:
        host: HOST
    timeout: 300ms
`))
	pm.control(t, pm.v1, dubbopeer.SlowFor(3*time.Second))
	pm.control(t, pm.v2, dubbopeer.SlowFor(3*time.Second))
	start := time.Now()
	_, err := pm.c.SayHello(pm.ctx, "slow")
	if err == nil {
		t.Fatal("a call to a provider slower than the route's timeout succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the error came after %v, not from the 300ms route timeout: %v", d, err)
	}
	t.Logf("consumer saw: %v", err)
	pm.mesh.WaitMetric(t, 10*time.Second, "istio_requests_total",
		map[string]string{"response_flags": "UT", "response_code": "31"}, "a timeout with Dubbo status 31",
		func(v float64) bool { return v == 1 })
}

func testLocalRateLimit(t *testing.T, bin string) {
	pm := startPolicyMesh(t, bin, "", pmRouter(t, `  - name: all
    route:
    - destination:
        host: HOST
`)+`  localRateLimit:
    tokenBucket:
      maxTokens: 7
      tokensPerFill: 7
      fillInterval: 1h
`)
	ok, limited := 0, 0
	for i := range 20 {
		if _, err := hello(pm.ctx, pm.c, fmt.Sprint(i)); err != nil {
			limited++
		} else {
			ok++
		}
	}
	if ok != 7 || limited != 13 {
		t.Fatalf("%d calls went through and %d were limited; want exactly 7 through", ok, limited)
	}
	pm.mesh.WaitMetric(t, 10*time.Second, "istio_requests_total",
		map[string]string{"response_flags": "RL", "response_code": "100"}, "13 limited with Dubbo status 100",
		func(v float64) bool { return v == 13 })
}

func testFaults(t *testing.T, bin string) {
	pm := startPolicyMesh(t, bin, "", pmRouter(t, `  - name: delayed
    match:
      attributes:
        x-fault:
          exact: delay
    route:
    - destination:
        host: HOST
    fault:
      delay:
        fixedDelay: 200ms
  - name: aborted
    route:
    - destination:
        host: HOST
    fault:
      abort:
        errorKind: unauthorized
        percentage:
          value: 30
`))
	start := time.Now()
	if _, err := hello(dubbopeer.WithAttachments(pm.ctx, map[string]string{"x-fault": "delay"}), pm.c, "d"); err != nil {
		t.Fatalf("delayed call: %v", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("a call with a 200ms delay fault took %v", d)
	}
	const n, p, workers = 1000, 0.3, 8
	var aborted, ok atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if _, err := hello(pm.ctx, pm.c, fmt.Sprint("f-", i)); err != nil {
					aborted.Add(1)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	sigma := math.Sqrt(n * p * (1 - p))
	t.Logf("%d of %d aborted (want %v ± %.0f)", aborted.Load(), n, n*p, 4.5*sigma)
	if got := float64(aborted.Load()); math.Abs(got-n*p) > 4.5*sigma {
		t.Fatalf("%v of %d calls aborted; want %v ± %.0f", got, n, n*p, 4.5*sigma)
	}
	pm.mesh.WaitMetric(t, 10*time.Second, "istio_requests_total", map[string]string{"response_flags": "FI"},
		"every abort recorded", func(v float64) bool { return v == float64(aborted.Load()) })
}

func testMirror(t *testing.T, bin string) {
	pm := startPolicyMesh(t, bin, "", pmRouter(t, `  - name: mirrored
    route:
    - destination:
        host: HOST
        subset: v1
    mirror:
      host: HOST
      subset: v2
    mirrorPercentage:
      value: 50
`))
	// A mirror that takes a second to answer must not slow the primary down.
	pm.control(t, pm.v2, dubbopeer.SlowFor(time.Second))
	const n = 400
	var slowest time.Duration
	for i := range n {
		start := time.Now()
		if v, err := hello(pm.ctx, pm.c, fmt.Sprint("m-", i)); err != nil || v != "v1" {
			t.Fatalf("call %d: answered by %q (%v), want v1", i, v, err)
		}
		slowest = max(slowest, time.Since(start))
	}
	if slowest >= time.Second {
		t.Fatalf("the slowest primary call took %v: it waited for the mirror", slowest)
	}
	sent := pm.mesh.WaitMetric(t, 10*time.Second, "meltemi_proxy_mirror_requests_total",
		map[string]string{"result": "sent"}, "mirrored copies", func(v float64) bool { return v > 0 })
	meshtest.Poll(t, 30*time.Second, "the mirrored copies to reach v2", func() bool {
		return float64(pm.calls(t, pm.v2, dubbopeer.MethodSayHello)) >= sent
	})
	sigma := math.Sqrt(n * 0.25)
	t.Logf("%v of %d mirrored (want %d ± %.0f); slowest primary call %v", sent, n, n/2, 4.5*sigma, slowest)
	if math.Abs(sent-n/2) > 4.5*sigma {
		t.Fatalf("%v of %d calls mirrored; want %d ± %.0f", sent, n, n/2, 4.5*sigma)
	}
}

func testConcurrencyLimit(t *testing.T, bin string) {
	pm := startPolicyMesh(t, bin, "", pmRouter(t, `  - name: capped
    route:
    - destination:
        host: HOST
    concurrencyLimit:
      maxRequests: 2
      perKey: method
`))
	pm.control(t, pm.v1, dubbopeer.SlowFor(2*time.Second))
	pm.control(t, pm.v2, dubbopeer.SlowFor(2*time.Second))
	var wg sync.WaitGroup
	var ok, limited atomic.Int64
	for i := range 5 {
		wg.Go(func() {
			if _, err := pm.c.SayHello(pm.ctx, fmt.Sprint("c-", i)); err != nil {
				limited.Add(1)
			} else {
				ok.Add(1)
			}
		})
	}
	// Another method has a cap of its own.
	if _, err := pm.c.Echo(pm.ctx, "other method"); err != nil {
		t.Fatalf("echo while sayHello is at its cap: %v", err)
	}
	wg.Wait()
	if ok.Load() != 2 || limited.Load() != 3 {
		t.Fatalf("%d calls went through and %d were refused; want 2 and 3", ok.Load(), limited.Load())
	}
	pm.mesh.WaitMetric(t, 10*time.Second, "istio_requests_total", map[string]string{"response_flags": "UO"},
		"3 refused", func(v float64) bool { return v == 3 })
}

// pmRouter is a MetaRouter for the greet service with routes in which HOST stands for its host.
func pmRouter(t *testing.T, routes string) string {
	t.Helper()
	return meshtest.Service{Name: "greet", Host: greetHost}.Router(strings.ReplaceAll(routes, "HOST", greetHost))
}
