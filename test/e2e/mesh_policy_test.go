package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/test/e2e/dubbopeer"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// policyService is the greet service with a third endpoint, version "dead", at a loopback port nothing
// listens on: a subset-less destination then includes an endpoint every connect to which fails.
func policyService(t *testing.T, g *greetService, block meshtest.Net) meshtest.Service {
	t.Helper()
	s := g.service()
	s.Endpoints = append(s.Endpoints, meshtest.Endpoint{Addr: meshtest.FreeAddr(t, block.Host(50)), Version: "dead"})
	return s
}

// testMeshTrafficPolicy writes Meltemi's MetaRoute additions into manifests and checks what real dubbo-go
// consumers get through `meltemi mesh`: an injected abort answered in Dubbo's own terms, the default retry of
// connect failures, and what happens with retries turned off.
func testMeshTrafficPolicy(t *testing.T, bin string) {
	block := meshtest.NewNet()
	g := newGreetService(t, block, 1)
	svc := policyService(t, g, block)
	route := func(name, value, extra string) string {
		return fmt.Sprintf("  - name: %s\n    match:\n      attributes:\n        x-policy:\n          exact: %s\n"+
			"    route:\n    - destination:\n        host: %s\n%s", name, value, g.host, extra)
	}
	routes := route("abort", "abort", "    fault:\n      abort:\n        errorKind: over_limit\n") +
		route("no-retries", "none", "    retries:\n      attempts: 0\n") +
		route("default-retries", "default", "")
	dir := t.TempDir()
	meshtest.WriteAtomically(t, dir, "greet.yaml", svc.YAML(t))
	meshtest.WriteAtomically(t, dir, "router.yaml", svc.Router(routes))
	mesh := meshtest.StartMesh(t, bin, dir, block.Host(100))
	c := dubbopeer.NewConsumer(t, g.addr(0))
	ctx := meshCtx(t)
	with := func(v string) map[string]string { return map[string]string{"x-policy": v} }

	t.Run("an injected abort is the protocol's own error", func(t *testing.T) {
		_, err := c.SayHello(dubbopeer.WithAttachments(ctx, with("abort")), "a")
		if err == nil || !strings.Contains(err.Error(), "over_limit") {
			t.Fatalf("error %v; want the proxy's over_limit reply", err)
		}
		mesh.WaitMetric(t, 10*time.Second, "istio_requests_total", map[string]string{"response_flags": "FI"},
			"the injected abort counted", func(v float64) bool { return v >= 1 })
	})

	// One endpoint of three refuses connections, and round robin sends it every third try.
	const calls = 30
	t.Run("connect failures are retried by default", func(t *testing.T) {
		for i := range calls {
			if _, err := hello(dubbopeer.WithAttachments(ctx, with("default")), c, fmt.Sprint("d", i)); err != nil {
				t.Fatalf("call %d failed: %v; want connect failures retried on another endpoint", i, err)
			}
		}
	})
	t.Run("attempts 0 turns retries off", func(t *testing.T) {
		failed := 0
		for i := range calls {
			if _, err := hello(dubbopeer.WithAttachments(ctx, with("none")), c, fmt.Sprint("n", i)); err != nil {
				failed++
			}
		}
		if failed == 0 {
			t.Fatalf("all %d calls succeeded; want those sent to the dead endpoint to fail", calls)
		}
		t.Logf("%d of %d calls failed without retries", failed, calls)
	})
}

// testMeshLocality runs `meltemi mesh --locality` beside endpoints in two localities: with outlier detection,
// every call goes to the endpoint in the proxy's own locality; the same endpoints without outlier detection
// share the calls.
func testMeshLocality(t *testing.T, bin string) {
	block := meshtest.NewNet()
	g := newGreetService(t, block, 1)
	local := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: greet
spec:
  hosts:
  - %[1]s
  addresses:
  - %[2]s
  ports:
  - number: %[3]d
    name: tcp-metaprotocol-dubbo
    protocol: TCP
  resolution: STATIC
  endpoints:
  - address: %[4]s
    ports: {tcp-metaprotocol-dubbo: %[5]s}
    labels: {app: greet, version: v1}
    locality: eu-west/zone-a
  - address: %[6]s
    ports: {tcp-metaprotocol-dubbo: %[7]s}
    labels: {app: greet, version: v2}
    locality: us-east/zone-b
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: greet
spec:
  host: %[1]s
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 5
`, g.host, g.addrs[0], g.port, hostOf(t, g.v1.Addr), portOf(t, g.v1.Addr), hostOf(t, g.v2.Addr), portOf(t, g.v2.Addr))
	dir := t.TempDir()
	meshtest.WriteAtomically(t, dir, "greet.yaml", local)
	xdsAddr, adminAddr := meshtest.FreeAddr(t, block.Host(100)), meshtest.FreeAddr(t, block.Host(100))
	p := meshtest.Start(t, bin, "mesh", append([]string{"mesh", "-f", dir, "--xds", xdsAddr, "--admin", adminAddr,
		"--locality", "eu-west/zone-a/rack-1"}, meshtest.LogFlags...)...)
	meshtest.Admin{Addr: adminAddr, Proc: p}.WaitReady(t, 30*time.Second)
	c := dubbopeer.NewConsumer(t, g.addr(0))
	ctx := meshCtx(t)

	count := func(prefix string) map[string]int {
		seen := map[string]int{}
		for i := range 20 {
			v, err := hello(ctx, c, fmt.Sprint(prefix, i))
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			seen[v]++
		}
		return seen
	}
	if seen := count("near"); seen["v1"] != 20 {
		t.Fatalf("answers by version %v; want every call to v1, in the proxy's region and zone", seen)
	}

	// Without outlier detection there is no failover, and so no priorities.
	meshtest.WriteAtomically(t, dir, "greet.yaml", strings.Replace(local,
		"  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: 5\n", "", 1))
	deadline := time.Now().Add(10 * time.Second)
	for {
		seen := count("any")
		if seen["v1"] > 0 && seen["v2"] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("answers by version %v 10s after outlier detection was removed; want both versions", seen)
		}
	}
}

func hostOf(t *testing.T, addr string) string {
	t.Helper()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return host
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
