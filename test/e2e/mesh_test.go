package e2e

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/test/e2e/dubbopeer"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// TestMesh runs the meltemi binary as users do: `meltemi mesh -f DIR`, or `meltemi controller` and
// `meltemi proxy` as processes of their own, configured only by manifests written into a folder, between
// real dubbo-go consumers and providers. The binary is built once for all the subtests, which run in
// parallel, each on loopback addresses of its own.
func TestMesh(t *testing.T) {
	runWithBinary(t, []binaryTest{
		{"RoutingByManifest", testMeshRouting},
		{"ChangeIsLive", testMeshChangeIsLive},
		{"RouteChurnUnderLoad", testMeshRouteChurn},
		{"ControllerLoss", testMeshControllerLoss},
		{"NACK", testMeshNACK},
		{"TrafficPolicyByManifest", testMeshTrafficPolicy},
		{"LocalityFailover", testMeshLocality},
	})
}

// binaryTest is a subtest that runs the meltemi binary.
type binaryTest struct {
	name string
	run  func(t *testing.T, bin string)
}

// runWithBinary builds the binary once and runs the subtests in parallel with it.
func runWithBinary(t *testing.T, tests []binaryTest) {
	t.Parallel()
	bin := meshtest.Build(t, t.TempDir())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, bin)
		})
	}
}

// meshCtx bounds the calls of a mesh test; each call has its own shorter timeout as well.
func meshCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// hello calls sayHello and returns the version that answered; an answer to another call's name is an error.
func hello(ctx context.Context, c *dubbopeer.Consumer, name string) (string, error) {
	got, err := c.SayHello(ctx, name)
	if err != nil {
		return "", err
	}
	v := versionOf(got)
	if got != v+":hello "+name {
		return "", fmt.Errorf("sayHello(%q) answered %q, which is not its answer", name, got)
	}
	return v, nil
}

// waitForTarget calls until an answer comes from version want, then makes a few more calls that must all
// come from want too: once a change is live it stays live. Before that, answers must come from version
// from. It returns how long after since the first answer from want came.
func waitForTarget(t *testing.T, ctx context.Context, c *dubbopeer.Consumer, since time.Time, from, want string,
	timeout time.Duration) time.Duration {
	t.Helper()
	// Calls go out every 2 ms: fine enough to measure a change in milliseconds, and no busy loop stealing
	// the processor from the mesh being measured.
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := since.Add(timeout)
	for i := 0; ; i++ {
		v, err := hello(ctx, c, fmt.Sprint("switch-", i))
		now := time.Now()
		if err != nil {
			t.Fatalf("call %d while waiting for %s: %v", i, want, err)
		}
		if v == want {
			took := now.Sub(since)
			for j := range 10 {
				if v, err := hello(ctx, c, fmt.Sprint("after-switch-", j)); err != nil || v != want {
					t.Fatalf("call %d after the switch to %s was answered by %q (%v): the change did not stay",
						j, want, v, err)
				}
			}
			return took
		}
		if v != from {
			t.Fatalf("call %d answered by %q while switching from %s to %s", i, v, from, want)
		}
		if now.After(deadline) {
			t.Fatalf("calls still answered by %s %v after the change; want %s", from, timeout, want)
		}
		<-tick.C
	}
}

// traffic is callers calling sayHello in the background, each checking it got its own answer.
type traffic struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
	mu         sync.Mutex
	byVersion  map[string]int
	stop       chan struct{}
	wg         sync.WaitGroup
}

// startTraffic starts callersPer callers on each consumer (calls of one consumer share its one
// connection). With pace > 0 each caller waits that long between calls; without, it calls flat out.
func startTraffic(ctx context.Context, consumers []*dubbopeer.Consumer, callersPer int,
	pace time.Duration) *traffic {
	tr := &traffic{byVersion: map[string]int{}, stop: make(chan struct{})}
	for ci, c := range consumers {
		for k := range callersPer {
			tr.wg.Go(func() {
				var tick <-chan time.Time
				if pace > 0 {
					tk := time.NewTicker(pace)
					defer tk.Stop()
					tick = tk.C
				}
				for i := 0; ; i++ {
					select {
					case <-tr.stop:
						return
					default:
					}
					v, err := hello(ctx, c, fmt.Sprintf("caller-%d-%d-%d", ci, k, i))
					if err != nil {
						tr.failed.Add(1)
						tr.firstErr.CompareAndSwap(nil, fmt.Errorf("%s: %w", time.Now().Format("15:04:05.000"), err))
					} else {
						tr.ok.Add(1)
						tr.mu.Lock()
						tr.byVersion[v]++
						tr.mu.Unlock()
					}
					if tick != nil {
						select {
						case <-tr.stop:
							return
						case <-tick:
						}
					}
				}
			})
		}
	}
	return tr
}

// calls is how many calls completed, well or not.
func (tr *traffic) calls() int64 { return tr.ok.Load() + tr.failed.Load() }

// waitCalls waits until n more calls completed.
func (tr *traffic) waitCalls(t *testing.T, n int64, what string) {
	t.Helper()
	target := tr.calls() + n
	meshtest.Poll(t, 30*time.Second, fmt.Sprintf("%d calls %s", n, what), func() bool { return tr.calls() >= target })
}

// halt stops the callers and waits for them.
func (tr *traffic) halt() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	tr.wg.Wait()
}

// versions returns the answers so far by version.
func (tr *traffic) versions() map[string]int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := map[string]int{}
	for k, v := range tr.byVersion {
		out[k] = v
	}
	return out
}

// noFailures fails the test if any call failed.
func (tr *traffic) noFailures(t *testing.T, during string) {
	t.Helper()
	if n := tr.failed.Load(); n > 0 {
		t.Errorf("%d of %d calls failed %s, first: %v", n, tr.calls(), during, tr.firstErr.Load())
	}
}

// downstreamConnections is the number of connections the proxy accepted on all its listeners.
const downstreamConnections = "meltemi_proxy_downstream_connections_total"

// testMeshRouting checks routing set only by a MetaRouter: by method (exact, and regex that matches whole
// values), by an attachment the consumer sets, to subsets and to the whole service, a weighted split, a
// request mutation that reaches the provider, a response mutation that reaches the consumer, and the error a
// request no route matches gets.
func testMeshRouting(t *testing.T, bin string) {
	block := meshtest.NewNet()
	g := newGreetService(t, block, 1)
	to := func(subset string) string {
		if subset == "" {
			return fmt.Sprintf("    - destination:\n        host: %s\n", g.host)
		}
		return fmt.Sprintf("    - destination:\n        host: %s\n        subset: %s\n", g.host, subset)
	}
	match := func(key, kind, value string) string {
		return fmt.Sprintf("    match:\n      attributes:\n        %s:\n          %s: %q\n", key, kind, value)
	}
	routes := "  - name: canary\n" + match("x-canary", "exact", "yes") + "    route:\n" + to("v2") +
		"  - name: split\n" + match("x-split", "exact", "20-80") + "    route:\n" +
		to("v1") + "      weight: 20\n" + to("v2") + "      weight: 80\n" +
		"  - name: any-version\n" + match("x-any", "exact", "yes") + "    route:\n" + to("") +
		"  - name: hello\n" + match("method", "exact", "sayHello") + "    route:\n" + to("v1") +
		"    responseMutation:\n    - key: x-meltemi-route\n      value: hello\n" +
		"  - name: join\n" + match("method", "regex", "jo[a-z]+") + "    route:\n" + to("v2") +
		// A regex matches the whole value: this one never matches "inspect".
		"  - name: unanchored\n" + match("method", "regex", "nspec") + "    route:\n" + to("v2") +
		"  - name: inspect\n" + match("method", "exact", "inspect") + "    route:\n" + to("v1") +
		"    requestMutation:\n    - key: x-meltemi-mutated\n      value: \"yes\"\n" +
		"    - key: x-override\n      value: from-mesh\n"
	dir := g.manifestDir(t, g.router(routes))
	mesh := meshtest.StartMesh(t, bin, dir, block.Host(100))
	c := dubbopeer.NewConsumer(t, g.addr(0))
	ctx := meshCtx(t)
	with := func(k, v string) context.Context { return dubbopeer.WithAttachments(ctx, map[string]string{k: v}) }

	for _, tt := range []struct {
		name string
		call func() (string, error)
		want string
	}{
		{"method exact", func() (string, error) { return hello(ctx, c, "a") }, "v1"},
		{"attachment", func() (string, error) { return hello(with("x-canary", "yes"), c, "b") }, "v2"},
		{"attachment mismatch", func() (string, error) { return hello(with("x-canary", "no"), c, "c") }, "v1"},
		{"method regex", func() (string, error) {
			got, err := c.Join(ctx, "x", 1, "y")
			return versionOf(got), err
		}, "v2"},
		{"regex matches whole values", func() (string, error) {
			r, err := c.Inspect(ctx, "d")
			return r.Version, err
		}, "v1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.call()
			if err != nil || got != tt.want {
				t.Fatalf("answered by %q (%v); want %s", got, err, tt.want)
			}
		})
	}

	t.Run("subset-less destination reaches both versions", func(t *testing.T) {
		seen := map[string]int{}
		for i := range 20 {
			v, err := hello(with("x-any", "yes"), c, fmt.Sprint(i))
			if err != nil {
				t.Fatal(err)
			}
			seen[v]++
		}
		if seen["v1"] == 0 || seen["v2"] == 0 {
			t.Fatalf("answers by version = %v; want both", seen)
		}
	})

	t.Run("request mutation reaches the provider", func(t *testing.T) {
		r, err := c.Inspect(dubbopeer.WithAttachments(ctx, map[string]string{"x-override": "from-consumer",
			"x-keep": "kept"}), "mutated")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"x-meltemi-mutated": "yes", "x-override": "from-mesh", "x-keep": "kept"}
		for k, v := range want {
			if r.Attachments[k] != v {
				t.Errorf("attachment %q = %q; want %q (provider saw %v)", k, r.Attachments[k], v, r.Attachments)
			}
		}
	})

	t.Run("response mutation reaches the consumer", func(t *testing.T) {
		callCtx, resp := dubbopeer.WithResponseAttachments(ctx)
		if v, err := hello(callCtx, c, "answered"); err != nil || v != "v1" {
			t.Fatalf("answered by %q (%v); want v1", v, err)
		}
		if got := resp.Get()["x-meltemi-route"]; got != "hello" {
			t.Errorf("response attachment x-meltemi-route = %q; want hello (consumer read %v)", got, resp.Get())
		}
		// The join route has no response mutation.
		callCtx, resp = dubbopeer.WithResponseAttachments(ctx)
		if _, err := c.Join(callCtx, "x", 1, "y"); err != nil {
			t.Fatal(err)
		}
		if got, ok := resp.Get()["x-meltemi-route"]; ok {
			t.Errorf("a route without a response mutation: x-meltemi-route = %q", got)
		}
	})

	t.Run("no route", func(t *testing.T) {
		start := time.Now()
		if got, err := c.Echo(ctx, "nowhere"); err == nil {
			t.Fatalf("echo matched no route but answered %q", got)
		} else if d := time.Since(start); d > dubbopeer.RequestTimeout/2 {
			t.Fatalf("the error came after %v, a timeout rather than the proxy's reply: %v", d, err)
		}
		mesh.WaitMetric(t, 10*time.Second, "istio_requests_total", map[string]string{"response_flags": "NR"},
			"at least 1", func(v float64) bool { return v >= 1 })
	})

	t.Run("weighted split 20/80", func(t *testing.T) {
		const n, p, workers = 2000, 0.2, 16
		// 4.5 standard deviations: a correct split falls outside about once in 150,000 runs, while a 30/70
		// split (11 deviations away) always fails.
		sigma := math.Sqrt(n * p * (1 - p))
		lo, hi := int(math.Ceil(n*p-4.5*sigma)), int(math.Floor(n*p+4.5*sigma))
		splitCtx := with("x-split", "20-80")
		var v1, v2, failed atomic.Int64
		var firstErr atomic.Value
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := w; i < n; i += workers {
					v, err := hello(splitCtx, c, fmt.Sprint("split-", i))
					switch {
					case err != nil:
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
					case v == "v1":
						v1.Add(1)
					case v == "v2":
						v2.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if failed.Load() > 0 {
			t.Fatalf("%d of %d calls failed, first: %v", failed.Load(), n, firstErr.Load())
		}
		t.Logf("v1 %d, v2 %d of %d (v1 must be within [%d, %d])", v1.Load(), v2.Load(), n, lo, hi)
		if got := int(v1.Load()); got+int(v2.Load()) != n || got < lo || got > hi {
			t.Fatalf("v1 answered %d and v2 %d of %d calls; want v1 within [%d, %d]", got, v2.Load(), n, lo, hi)
		}
	})
}

// testMeshChangeIsLive edits the MetaRouter's target back and forth and measures how long each change takes
// to reach the calls: five times replaced by a rename, as editors and kubectl-style tools write, and once
// overwritten in place.
func testMeshChangeIsLive(t *testing.T, bin string) {
	block := meshtest.NewNet()
	g := newGreetService(t, block, 1)
	dir := g.manifestDir(t, g.allTo("v1", "initial"))
	mesh := meshtest.StartMesh(t, bin, dir, block.Host(100))
	c := dubbopeer.NewConsumer(t, g.addr(0))
	ctx := meshCtx(t)
	if v, err := hello(ctx, c, "first"); err != nil || v != "v1" {
		t.Fatalf("first call answered by %q (%v); want v1", v, err)
	}

	// The assertion's deadline is generous, for slow machines; the figures logged are the point.
	const deadline = 5 * time.Second
	from := "v1"
	var took []time.Duration
	for i, inPlace := range []bool{false, false, false, false, false, true} {
		to := map[string]string{"v1": "v2", "v2": "v1"}[from]
		how := "renamed over"
		start := time.Now()
		if inPlace {
			how = "written in place"
			meshtest.WriteInPlace(t, dir, "router.yaml", g.allTo(to, fmt.Sprint("change-", i)))
		} else {
			meshtest.WriteAtomically(t, dir, "router.yaml", g.allTo(to, fmt.Sprint("change-", i)))
		}
		d := waitForTarget(t, ctx, c, start, from, to, deadline)
		t.Logf("change %d (%s → %s, %s): live after %v", i+1, from, to, how, d.Round(100*time.Microsecond))
		took = append(took, d)
		from = to
	}
	slices.Sort(took)
	t.Logf("change to live: min %v, median %v, max %v over %d changes (the file source waits for 100 ms of quiet)",
		took[0].Round(100*time.Microsecond), took[len(took)/2].Round(100*time.Microsecond),
		took[len(took)-1].Round(100*time.Microsecond), len(took))
	// The controller's own view: from a model change to the proxy's ACK of all of it.
	for _, m := range mesh.Metrics(t).Series("meltemi_controller_convergence_seconds", nil) {
		if h := m.Histogram; h != nil && h.GetSampleCount() > 0 {
			n := h.GetSampleCount()
			t.Logf("controller: model change to proxy ACK, mean %v over %d pushes",
				time.Duration(h.GetSampleSum()/float64(n)*float64(time.Second)).Round(10*time.Microsecond), n)
		}
	}
}

// testMeshRouteChurn rewrites the MetaRouter 100 times while callers call flat out, each on the one
// connection of its consumer: no call fails, the proxy accepts no new connection, and the last config wins.
func testMeshRouteChurn(t *testing.T, bin string) {
	block := meshtest.NewNet()
	// Four service addresses give four consumer connections: a dubbo-go process keeps one per address.
	const connections, callersPer, rewrites = 4, 3, 100
	g := newGreetService(t, block, connections)
	dir := g.manifestDir(t, g.allTo("v1", "initial"))
	mesh := meshtest.StartMesh(t, bin, dir, block.Host(100))
	ctx := meshCtx(t)
	var consumers []*dubbopeer.Consumer
	for i := range connections {
		consumers = append(consumers, dubbopeer.NewConsumer(t, g.addr(i)))
	}
	mesh.WaitMetric(t, 10*time.Second, downstreamConnections, nil, fmt.Sprint(connections),
		func(v float64) bool { return v == connections })

	tr := startTraffic(ctx, consumers, callersPer, 0)
	defer tr.halt()
	tr.waitCalls(t, 100, "before the first rewrite")
	start := time.Now()
	last := ""
	for i := 1; i <= rewrites; i++ {
		target := "v2"
		if i%2 == 0 {
			target = "v1"
		}
		last = fmt.Sprint("rewrite-", i)
		applied := mesh.Value(t, "meltemi_xds_updates_applied_total", nil)
		meshtest.WriteAtomically(t, dir, "router.yaml", g.allTo(target, last))
		// Each rewrite waits until the proxy applied the one before, so every config serves calls.
		mesh.WaitMetric(t, 10*time.Second, "meltemi_xds_updates_applied_total", nil, "more than before",
			func(v float64) bool { return v > applied })
	}
	elapsed := time.Since(start)
	tr.waitCalls(t, 100, "after the last rewrite")
	tr.halt()

	t.Logf("%d rewrites applied in %v (%v each); %d calls, by version %v", rewrites,
		elapsed.Round(time.Millisecond), (elapsed / rewrites).Round(time.Millisecond), tr.calls(), tr.versions())
	tr.noFailures(t, "during the rewrites")
	if vs := tr.versions(); vs["v1"] == 0 || vs["v2"] == 0 {
		t.Errorf("answers by version = %v; want both targets to have served", vs)
	}
	fams := mesh.Metrics(t)
	if n := fams.Sum(downstreamConnections, nil); n != connections {
		t.Errorf("downstream connections accepted = %v; want %d, the consumers':\n%s", n, connections,
			fams.Describe(downstreamConnections))
	}
	// The last rewrite (an even one) sends to v1 and names itself to the provider.
	for i, c := range consumers {
		r, err := c.Inspect(ctx, fmt.Sprint("final-", i))
		if err != nil || r.Version != "v1" || r.Attachments["x-meltemi-config"] != last {
			t.Errorf("after the rewrites, consumer %d was answered by %q routed by config %q (%v); want v1 by %q",
				i, r.Version, r.Attachments["x-meltemi-config"], err, last)
		}
	}
}

// testMeshControllerLoss runs the controller and the proxy as separate processes, kills the controller: the
// proxy keeps serving its last config; then restarts the controller with a changed MetaRouter: the proxy
// reconnects and applies it.
func testMeshControllerLoss(t *testing.T, bin string) {
	block := meshtest.NewNet()
	g := newGreetService(t, block, 1)
	dir := g.manifestDir(t, g.allTo("v1", "before"))
	m := startSplitMesh(t, bin, dir, block.Host(100))
	ctx := meshCtx(t)
	c := dubbopeer.NewConsumer(t, g.addr(0))
	tr := startTraffic(ctx, []*dubbopeer.Consumer{c}, 2, 5*time.Millisecond)
	defer tr.halt()
	tr.waitCalls(t, 20, "before the controller dies")

	m.controller.Proc.Kill()
	killed := time.Now()
	m.proxyAdm.WaitMetric(t, 10*time.Second, "meltemi_xds_connected", nil, "0",
		func(v float64) bool { return v == 0 })
	t.Logf("the proxy saw the controller go after %v", time.Since(killed).Round(time.Millisecond))

	// Traffic goes on for a while with no controller: a fixed stretch of calls, not a wait for a condition.
	before := tr.ok.Load()
	window := time.NewTimer(2 * time.Second)
	<-window.C
	served := tr.ok.Load() - before
	if served < 50 || tr.failed.Load() > 0 {
		t.Fatalf("with the controller gone: %d calls served, %d failed (first: %v); want calls to go on",
			served, tr.failed.Load(), tr.firstErr.Load())
	}
	if vs := tr.versions(); vs["v2"] > 0 {
		t.Fatalf("answers by version = %v; want v1 only, the last config", vs)
	}
	if code := m.proxyAdm.Status("/ready"); code != http.StatusOK {
		t.Errorf("proxy /ready = %d with the controller gone; want 200, it serves its last config", code)
	}
	t.Logf("%d calls served in the 2 s without a controller", served)

	// The change is made while nobody watches the folder; the new controller reads it at start.
	meshtest.WriteAtomically(t, dir, "router.yaml", g.allTo("v2", "after"))
	restarted := time.Now()
	m.startController()
	// The proxy redials with a backoff that doubles up to 30 s; after a few seconds away it is still short.
	d := waitForTarget(t, ctx, c, restarted, "v1", "v2", 30*time.Second)
	t.Logf("calls switched to v2 %v after the controller was started again (%v after it was killed)",
		d.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	m.proxyAdm.WaitMetric(t, 10*time.Second, "meltemi_xds_connected", nil, "1",
		func(v float64) bool { return v == 1 })
	if n := m.proxyAdm.Value(t, "meltemi_xds_reconnects_total", nil); n < 1 {
		t.Errorf("meltemi_xds_reconnects_total = %v; want at least 1", n)
	}
	tr.waitCalls(t, 20, "after the switch")
	tr.halt()
	tr.noFailures(t, "across the controller's death and return")
	if n := m.proxyAdm.Value(t, downstreamConnections, nil); n != 1 {
		t.Errorf("downstream connections accepted = %v; want 1, the consumer's", n)
	}
	if r, err := c.Inspect(ctx, "final"); err != nil || r.Attachments["x-meltemi-config"] != "after" {
		t.Errorf("final call routed by config %q (%v); want %q", r.Attachments["x-meltemi-config"], err, "after")
	}
}

// nosuchCodec is a codec name the binary does not have: the controller serves a protocol declared with it
// (with a warning), the proxy cannot build its listener and rejects the config.
const nosuchCodec = "aeraki.meta_protocol.codec.nosuch"

// testMeshNACK gives the proxy a config it rejects while the controller accepts it: the proxy keeps serving
// its last config and counts the NACK, the controller logs the reason and counts it too; route changes of the
// good service keep going live, beside the rejected listener and after its manifest is removed.
func testMeshNACK(t *testing.T, bin string) {
	block := meshtest.NewNet()
	g := newGreetService(t, block, 1)
	dir := g.manifestDir(t, g.allTo("v1", "good"))
	customAddr := meshtest.FreeAddr(t, block.Host(9))
	customHost, customPort, _ := net.SplitHostPort(customAddr)
	custom := fmt.Sprintf(`apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: ApplicationProtocol
metadata:
  name: custom
spec:
  protocol: custom
  codec: %s
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: custom
spec:
  hosts:
  - custom.default.svc.cluster.local
  addresses:
  - %s
  ports:
  - number: %s
    name: tcp-metaprotocol-custom
    protocol: TCP
  resolution: STATIC
  endpoints:
  - address: %s
`, nosuchCodec, customHost, customPort, block.Host(10))

	m := startSplitMesh(t, bin, dir, block.Host(100))
	ctx := meshCtx(t)
	c := dubbopeer.NewConsumer(t, g.addr(0))
	tr := startTraffic(ctx, []*dubbopeer.Consumer{c}, 2, 5*time.Millisecond)
	defer tr.halt()
	tr.waitCalls(t, 20, "before the bad config")

	meshtest.WriteAtomically(t, dir, "custom.yaml", custom)
	t.Run("the controller accepts it", func(t *testing.T) {
		out, err := exec.Command(bin, "validate", "-f", dir).CombinedOutput()
		if err != nil || !strings.Contains(string(out), nosuchCodec) {
			t.Fatalf("meltemi validate = %v; want success with a warning about %s:\n%s", err, nosuchCodec, out)
		}
	})

	t.Run("the proxy rejects it and keeps serving", func(t *testing.T) {
		m.proxyAdm.WaitMetric(t, 10*time.Second, "meltemi_xds_nacks_total", nil, "more than 0",
			func(v float64) bool { return v > 0 })
		m.controller.WaitMetric(t, 10*time.Second, "meltemi_controller_nacks_total", nil, "more than 0",
			func(v float64) bool { return v > 0 })
		// The controller's log says which proxy rejected what, and why.
		meshtest.Poll(t, 10*time.Second, "the controller to log the NACK and its reason", func() bool {
			for _, line := range strings.Split(m.controller.Proc.Output(), "\n") {
				if strings.Contains(line, "rejected") && strings.Contains(line, nosuchCodec) {
					t.Logf("controller: %s", line)
					return true
				}
			}
			return false
		})
		tr.waitCalls(t, 50, "after the NACK")
		if vs := tr.versions(); vs["v2"] > 0 {
			t.Errorf("answers by version = %v; want v1 only", vs)
		}
		if code := m.proxyAdm.Status("/ready"); code != http.StatusOK {
			t.Errorf("proxy /ready = %d after a NACK; want 200, it serves its last config", code)
		}
		if conn, err := net.DialTimeout("tcp", customAddr, time.Second); err == nil {
			conn.Close()
			t.Errorf("something listens on %s, the address of the rejected listener", customAddr)
		}
		tr.noFailures(t, "around the rejected config")
	})

	// The rejected listener is another service's: the greet service's routes still follow its MetaRouter.
	// The proxy never asks for the route table of a listener it rejected, so a controller that waits for a
	// proxy to ask for every route table it has before answering would stop sending it routes at all.
	switchTarget := func(t *testing.T, name string, before func()) {
		t.Helper()
		from, err := hello(ctx, c, "current")
		if err != nil {
			t.Fatal(err)
		}
		to := map[string]string{"v1": "v2", "v2": "v1"}[from]
		if before != nil {
			before()
		}
		start := time.Now()
		meshtest.WriteAtomically(t, dir, "router.yaml", g.allTo(to, name))
		d := waitForTarget(t, ctx, c, start, from, to, 5*time.Second)
		t.Logf("%s → %s live after %v", from, to, d.Round(time.Millisecond))
	}
	t.Run("a change to the good service goes live beside the rejected one", func(t *testing.T) {
		switchTarget(t, "beside-rejected", nil)
	})
	t.Run("a change goes live once the bad manifest is removed", func(t *testing.T) {
		switchTarget(t, "fixed", func() {
			if err := os.Remove(filepath.Join(dir, "custom.yaml")); err != nil {
				t.Fatal(err)
			}
		})
	})

	tr.halt()
	tr.noFailures(t, "over the whole test")
	if n := m.proxyAdm.Value(t, downstreamConnections, nil); n != 1 {
		t.Errorf("downstream connections accepted = %v; want 1, the consumer's", n)
	}
}
