package xds_test

import (
	"math"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	meltemiroutev1alpha1 "github.com/meltemi-mesh/meltemi/api/meltemi/route/v1alpha1"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/proxy/xds"
)

// FuzzTranslatePolicy feeds arbitrary route configurations and clusters (protobuf bytes, as a control plane
// sends them) to the translation: it must refuse or translate, never panic, and what it translates must keep
// the proxy's bounds (shares within a million, percentages within 100, no negative duration, no empty retry
// policy).
func FuzzTranslatePolicy(f *testing.F) {
	mustMarshal := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	anyOf := func(m proto.Message) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil {
			f.Fatal(err)
		}
		return a
	}
	r := metaRoute("r", "c")
	ra := r.GetRoute()
	ra.Timeout = durationpb.New(2 * time.Second)
	ra.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,retriable-status-codes", NumRetries: wrapperspb.UInt32(3),
		PerTryTimeout: durationpb.New(time.Second), RetriableStatusCodes: []uint32{80, math.MaxUint32}}
	ra.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "c",
		RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 50}}}}
	r.TypedPerFilterConfig = map[string]*anypb.Any{
		xds.FaultFilter: anyOf(&faultv3.HTTPFault{Delay: fixedDelay(time.Millisecond, fraction(5, typev3.FractionalPercent_HUNDRED)),
			Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 503}}}),
		xds.ConcurrencyLimitFilter: anyOf(&meltemiroutev1alpha1.ConcurrencyLimit{MaxRequests: 3, PerMetadataKey: "method"}),
	}
	c := staticCluster("c", hostPort{"127.0.0.1", 2})
	c.LbPolicy = clusterv3.Cluster_MAGLEV
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(math.MaxUint32), MaxRequests: wrapperspb.UInt32(10),
		RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 20}}}}}
	c.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(3),
		MaxEjectionPercent: wrapperspb.UInt32(0)}
	f.Add(mustMarshal(carrier("rc", r)), mustMarshal(c))
	f.Add(mustMarshal(carrier("rc", metaRoute("r", "c"))), mustMarshal(staticCluster("c")))
	f.Add([]byte{}, []byte{})

	reg := codecs(f)
	f.Fuzz(func(t *testing.T, routeBytes, clusterBytes []byte) {
		rc, cl := &routev3.RouteConfiguration{}, &clusterv3.Cluster{}
		if proto.Unmarshal(routeBytes, rc) != nil || proto.Unmarshal(clusterBytes, cl) != nil {
			return
		}
		rc.Name, cl.Name = "rc", "c"
		res := xds.Resources{
			Listeners: map[string]*listenerv3.Listener{"l": listenerWith("l", "127.0.0.1", 1, mppFilter(t, rdsProxy(dubboCodec, "rc")))},
			Routes:    map[string]*routev3.RouteConfiguration{"rc": rc},
			Clusters:  map[string]*clusterv3.Cluster{"c": cl},
		}
		tr, err := xds.Translate(res, reg)
		if err != nil {
			return
		}
		for _, l := range tr.Config.Listeners {
			for _, route := range l.Routes.Routes {
				checkRouteBounds(t, route)
			}
		}
		for _, c := range tr.Config.Clusters {
			checkClusterBounds(t, c)
		}
	})
}

func checkRouteBounds(t *testing.T, r proxy.Route) {
	t.Helper()
	if r.Timeout < 0 {
		t.Errorf("route %q: timeout %v", r.Name, r.Timeout)
	}
	if rp := r.Retry; rp != nil && (rp.NumRetries == 0 || len(rp.RetryOn) == 0 || rp.PerTryTimeout < 0 ||
		rp.BackOffBase < 0 || rp.BackOffMax < 0) {
		t.Errorf("route %q: retry policy %+v", r.Name, rp)
	}
	for _, m := range r.Mirrors {
		if m.PerMillion > 1_000_000 || m.Cluster == "" {
			t.Errorf("route %q: mirror %+v", r.Name, m)
		}
	}
	if f := r.Fault; f != nil && (f.Delay < 0 || f.DelayPerMillion > 1_000_000 || f.AbortPerMillion > 1_000_000) {
		t.Errorf("route %q: fault %+v", r.Name, f)
	}
	if cl := r.ConcurrencyLimit; cl != nil && cl.MaxRequests == 0 {
		t.Errorf("route %q: concurrency limit %+v", r.Name, cl)
	}
}

func checkClusterBounds(t *testing.T, c proxy.Cluster) {
	t.Helper()
	cb := c.CircuitBreaker
	if cb.RetryBudgetPercent < 0 || cb.RetryBudgetPercent > 100 || c.PanicThreshold < 0 || c.PanicThreshold > 100 {
		t.Errorf("cluster %q: circuit breaker %+v, panic threshold %v", c.Name, cb, c.PanicThreshold)
	}
	if o := c.Outlier; o != nil && (o.MaxEjectionPercent > 100 || o.Interval <= 0 || o.BaseEjectionTime <= 0 ||
		o.MaxEjectionTime <= 0) {
		t.Errorf("cluster %q: outlier detection %+v", c.Name, o)
	}
	if c.MinRingSize > 8<<20 || c.MaxRingSize > 8<<20 {
		t.Errorf("cluster %q: ring sizes %d..%d", c.Name, c.MinRingSize, c.MaxRingSize)
	}
}
