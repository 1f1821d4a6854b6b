package thriftinterop

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/codec"
	thriftcodec "github.com/meltemi-mesh/meltemi/codec/thrift"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// The service the test servers stand for, as a mesh would name it.
const (
	echoHost = "echo.interop.svc.cluster.local"
	echoPort = 9090
)

// The in-process proxy's listeners: each has a route table of its own.
const (
	// mainListener routes by method, by the multiplexed service and by a header key.
	mainListener = "thrift-main"
	// splitListener sends every call to v1 or v2, 20/80 by weight.
	splitListener = "thrift-split"
	// narrowListener routes only Calc:add, so that an Echo call finds no route.
	narrowListener = "thrift-narrow"
)

// The request mutation the canary route makes, which servers read back.
const (
	routedByKey   = "x-routed-by"
	routedByValue = "meltemi"
)

// subsetCluster is the cluster of one version of the echo service: both servers are its endpoints, and the
// subset keeps the one whose version label matches, as Istio's DestinationRule subsets do.
func subsetCluster(subset, v1, v2 string) proxy.Cluster {
	return proxy.Cluster{
		Name:    clusterName(subset),
		Service: proxy.Service{Host: echoHost, Name: "echo", Namespace: "interop"},
		Subset:  map[string]string{"version": subset},
		Endpoints: []proxy.Endpoint{
			{Address: v1, Labels: map[string]string{"app": "echo", "version": "v1"}},
			{Address: v2, Labels: map[string]string{"app": "echo", "version": "v2"}},
		},
	}
}

func clusterName(subset string) string {
	return fmt.Sprintf("outbound|%d|%s|%s", echoPort, subset, echoHost)
}

// exact is a condition that key equals value.
func exact(key, value string) proxy.MetadataMatcher {
	return proxy.MetadataMatcher{Key: key, Kind: proxy.MatchExact, Value: value}
}

// routingConfig is the in-process proxy's config for servers v1 and v2, with its listeners on host.
// headerKey and headerValue are the request header of the canary route (an Apache THeader key, or a Kitex
// RPC_TRANSIT_ key), and mutationKey the header the route sets.
func routingConfig(host, v1, v2, headerKey, headerValue, mutationKey string) *proxy.Config {
	listener := func(name string, routes ...proxy.Route) proxy.Listener {
		return proxy.Listener{
			Name:    name,
			Address: host + ":0",
			Codec:   proxy.CodecConfig{Name: thriftcodec.Name},
			Routes:  proxy.RouteConfig{Name: name, Routes: routes},
		}
	}
	return &proxy.Config{
		Listeners: []proxy.Listener{
			listener(mainListener,
				proxy.Route{Name: "canary", Match: []proxy.MetadataMatcher{exact(headerKey, headerValue)},
					Cluster:         clusterName("v2"),
					RequestMutation: []codec.KeyValue{{Key: mutationKey, Value: routedByValue}}},
				proxy.Route{Name: "fail", Match: []proxy.MetadataMatcher{exact("method", "fail")},
					Cluster: clusterName("v2")},
				proxy.Route{Name: "echo", Match: []proxy.MetadataMatcher{
					{Key: "method", Kind: proxy.MatchRegex, Value: "echo|header|notify"}},
					Cluster: clusterName("v1")},
			),
			listener(splitListener, proxy.Route{Name: "split",
				WeightedClusters: []proxy.WeightedCluster{{Name: clusterName("v1"), Weight: 20},
					{Name: clusterName("v2"), Weight: 80}}}),
			listener(narrowListener, proxy.Route{Name: "calc-add",
				Match:   []proxy.MetadataMatcher{exact("service", "Calc"), exact("method", "add")},
				Cluster: clusterName("v1")}),
		},
		Clusters: []proxy.Cluster{subsetCluster("v1", v1, v2), subsetCluster("v2", v1, v2)},
	}
}

// startRoutingProxy starts an in-process proxy with the Thrift codec and routingConfig.
func startRoutingProxy(t *testing.T, host, v1, v2, headerKey, headerValue, mutationKey string) *meshtest.Proxy {
	t.Helper()
	return meshtest.StartProxy(t, routingConfig(host, v1, v2, headerKey, headerValue, mutationKey),
		thriftcodec.Registration())
}

// testCtx bounds one test's calls; each peer also has its own socket or RPC timeout.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// checkSplit runs n calls of call from workers goroutines and checks that the share answered by v1 is p
// within 4.5 binomial standard deviations: a correct split falls outside about once in 150,000 runs, while a
// 30/70 split over 1000 calls (7.9 deviations away) always fails. call returns the version that answered.
func checkSplit(t *testing.T, n, workers int, p float64, call func(worker, i int) (string, error)) map[string]int {
	t.Helper()
	var mu sync.Mutex
	byVersion := map[string]int{}
	var firstErr error
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				v, err := call(w, i)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("call %d: %w", i, err)
				}
				byVersion[v]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("calls failed (answers by version %v), first: %v", byVersion, firstErr)
	}
	sigma := math.Sqrt(float64(n) * p * (1 - p))
	lo, hi := int(math.Ceil(float64(n)*p-4.5*sigma)), int(math.Floor(float64(n)*p+4.5*sigma))
	t.Logf("v1 %d, v2 %d of %d (v1 must be within [%d, %d])", byVersion["v1"], byVersion["v2"], n, lo, hi)
	if byVersion["v1"]+byVersion["v2"] != n || byVersion["v1"] < lo || byVersion["v1"] > hi {
		t.Fatalf("answers by version %v of %d calls; want v1 within [%d, %d] and the rest v2", byVersion, n, lo, hi)
	}
	return byVersion
}
