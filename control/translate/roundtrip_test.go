package translate_test

// The round trip crosses the line between control and proxy on purpose, in a test only: the two meet in
// xDS resources, and this proves that what the controller sends is what the proxy's client understands.

import (
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"math"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	httpoptionsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	meltemiroutev1alpha1 "github.com/meltemi-mesh/meltemi/api/meltemi/route/v1alpha1"
	mppv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/v1alpha"
	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/control/translate"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
	"github.com/meltemi-mesh/meltemi/proxy/filters/localratelimit"
	"github.com/meltemi-mesh/meltemi/proxy/filters/ratelimit"
	"github.com/meltemi-mesh/meltemi/proxy/xds"
)

// TestRoundTrip gives each case's resources to the proxy's xDS translation and checks that listeners,
// routes, clusters and endpoints come out as they went in.
func TestRoundTrip(t *testing.T) {
	// The custom protocol's codec is one a custom build would register; the xDS translation only looks its
	// name up, so a stub that cannot build anything stands in.
	stub := codec.Registration{Name: "acme.meta_protocol.codec.videopacket", Protocol: "videopacket",
		New: func(json.RawMessage) (codec.Factory, error) { return nil, errors.New("stub codec") }}
	reg := codecRegistry(t)
	if err := reg.Register(stub); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := translateCase(t, tc.name)
			in := xds.Resources{
				Listeners: byName(res.Listeners, (*listenerv3.Listener).GetName),
				Routes:    byName(res.Routes, (*routev3.RouteConfiguration).GetName),
				Clusters:  byName(res.Clusters, (*clusterv3.Cluster).GetName),
				Endpoints: byName(res.Endpoints, (*endpointv3.ClusterLoadAssignment).GetClusterName),
			}
			tr, err := xds.Translate(in, reg)
			if err != nil {
				t.Fatalf("the proxy's xDS translation refuses the resources: %v", err)
			}
			for _, n := range tr.Notes {
				t.Logf("proxy note: %s", n)
			}
			checkListeners(t, res, tr.Config)
			checkClusters(t, res, tr.Config)
			checkProxyAccepts(t, reg, stub.Name, tr.Config)
		})
	}
}

func builtinFilters(t *testing.T) *filter.Registry {
	t.Helper()
	reg, err := filter.NewRegistry(localratelimit.Registration(), ratelimit.Registration())
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// checkProxyAccepts gives the config to a real proxy, whose Update runs every check of the data plane
// (retry conditions, fault kinds, ring and table sizes, percentages, ...). Listeners move to ephemeral ports
// on 127.0.0.1, so that nothing binds the cases' addresses; those of the stub codec, which builds nothing, are
// left out.
func checkProxyAccepts(t *testing.T, reg *codec.Registry, stubCodec string, cfg *proxy.Config) {
	t.Helper()
	p, err := proxy.New(proxy.Options{Codecs: reg, Filters: builtinFilters(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	local := *cfg
	local.Listeners = nil
	for _, l := range cfg.Listeners {
		if l.Codec.Name == stubCodec {
			continue
		}
		l.Address = "127.0.0.1:0"
		local.Listeners = append(local.Listeners, l)
	}
	if err := p.Update(&local); err != nil {
		t.Errorf("the proxy refuses the config: %v", err)
	}
}

func byName[M any](list []M, name func(M) string) map[string]M {
	out := make(map[string]M, len(list))
	for _, m := range list {
		out[name(m)] = m
	}
	return out
}

func checkListeners(t *testing.T, res *translate.Resources, cfg *proxy.Config) {
	t.Helper()
	got := byName(cfg.Listeners, func(l proxy.Listener) string { return l.Name })
	if len(got) != len(res.Listeners) {
		t.Errorf("%d listeners in, %d out", len(res.Listeners), len(got))
	}
	routes := byName(res.Routes, (*routev3.RouteConfiguration).GetName)
	for _, l := range res.Listeners {
		pl, ok := got[l.GetName()]
		if !ok {
			t.Errorf("listener %s lost", l.GetName())
			continue
		}
		sa := l.GetAddress().GetSocketAddress()
		if want := net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))); pl.Address != want {
			t.Errorf("listener %s: address %s, want %s", l.GetName(), pl.Address, want)
		}
		mpp := &mppv1alpha.MetaProtocolProxy{}
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(mpp); err != nil {
			t.Fatal(err)
		}
		if pl.Codec.Name != mpp.GetProtocol().GetCodec().GetName() {
			t.Errorf("listener %s: codec %q, want %q", l.GetName(), pl.Codec.Name, mpp.GetProtocol().GetCodec().GetName())
		}
		var wantFilters []string
		for _, f := range mpp.GetMetaProtocolFilters() {
			if f.GetName() != translate.RouterFilter {
				wantFilters = append(wantFilters, f.GetName())
			}
		}
		var gotFilters []string
		for _, f := range pl.Filters {
			gotFilters = append(gotFilters, f.Name)
			if len(f.Config) == 0 {
				t.Errorf("listener %s: filter %s lost its config", l.GetName(), f.Name)
			}
			// The proxy's own filter must take the config as the xDS client hands it over.
			if reg, ok := builtinFilters(t).Lookup(f.Name); !ok {
				t.Errorf("listener %s: filter %s is not a built-in filter", l.GetName(), f.Name)
			} else if _, err := reg.New(f.Config); err != nil {
				t.Errorf("listener %s: filter %s refuses its config %s: %v", l.GetName(), f.Name, f.Config, err)
			}
		}
		if !slices.Equal(gotFilters, wantFilters) {
			t.Errorf("listener %s: filters %v, want %v", l.GetName(), gotFilters, wantFilters)
		}
		rc := routes[mpp.GetRds().GetRouteConfigName()]
		if pl.Routes.Name != rc.GetName() {
			t.Errorf("listener %s: routes %q, want %q", l.GetName(), pl.Routes.Name, rc.GetName())
		}
		checkRoutes(t, l.GetName(), rc, pl.Routes.Routes)
	}
}

// checkRoutes compares each carrier route with the proxy's route, reading the carrier independently of
// either translator.
func checkRoutes(t *testing.T, listener string, rc *routev3.RouteConfiguration, got []proxy.Route) {
	t.Helper()
	want := rc.GetVirtualHosts()[0].GetRoutes()
	if len(got) != len(want) {
		t.Fatalf("listener %s: %d routes, want %d", listener, len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		where := listener + " route " + w.GetName()
		if g.Name != w.GetName() || g.Cluster != w.GetRoute().GetCluster() {
			t.Errorf("%s: name %q cluster %q, want %q %q", where, g.Name, g.Cluster, w.GetName(), w.GetRoute().GetCluster())
		}
		var wantWeighted []proxy.WeightedCluster
		for _, c := range w.GetRoute().GetWeightedClusters().GetClusters() {
			wantWeighted = append(wantWeighted, proxy.WeightedCluster{Name: c.GetName(), Weight: c.GetWeight().GetValue()})
		}
		if !slices.Equal(g.WeightedClusters, wantWeighted) {
			t.Errorf("%s: weighted clusters %v, want %v", where, g.WeightedClusters, wantWeighted)
		}
		var wantHash []string
		for _, h := range w.GetRoute().GetHashPolicy() {
			wantHash = append(wantHash, h.GetHeader().GetHeaderName())
		}
		if !slices.Equal(g.HashPolicy, wantHash) {
			t.Errorf("%s: hash policy %v, want %v", where, g.HashPolicy, wantHash)
		}
		var wantMatch []proxy.MetadataMatcher
		for _, h := range w.GetMatch().GetHeaders() {
			m := proxy.MetadataMatcher{Key: h.GetName()}
			sm := h.GetStringMatch()
			switch {
			case h.GetPresentMatch():
				m.Kind = proxy.MatchPresent
			case sm.GetSafeRegex() != nil:
				m.Kind, m.Value = proxy.MatchRegex, sm.GetSafeRegex().GetRegex()
			case sm.GetPrefix() != "":
				m.Kind, m.Value = proxy.MatchPrefix, sm.GetPrefix()
			default:
				m.Kind, m.Value = proxy.MatchExact, sm.GetExact()
			}
			wantMatch = append(wantMatch, m)
		}
		if !slices.Equal(g.Match, wantMatch) {
			t.Errorf("%s: match %v, want %v", where, g.Match, wantMatch)
		}
		mutation := func(hs []*corev3.HeaderValueOption) []codec.KeyValue {
			var out []codec.KeyValue
			for _, h := range hs {
				out = append(out, codec.KeyValue{Key: h.GetHeader().GetKey(), Value: h.GetHeader().GetValue()})
			}
			return out
		}
		if !slices.Equal(g.RequestMutation, mutation(w.GetRequestHeadersToAdd())) ||
			!slices.Equal(g.ResponseMutation, mutation(w.GetResponseHeadersToAdd())) {
			t.Errorf("%s: mutations %v / %v", where, g.RequestMutation, g.ResponseMutation)
		}
		checkRoutePolicy(t, where, w, g)
	}
}

// retryNames are the conditions each retry_on name of the carrier stands for.
var retryNames = map[string][]proxy.RetryOn{
	"connect-failure": {proxy.RetryConnectFailure}, "reset": {proxy.RetryReset}, "timeout": {proxy.RetryTimeout},
	"retriable-status-codes": {proxy.RetryRetriableStatusCodes}, "failed": {proxy.RetryFailed},
	"5xx":           {proxy.RetryConnectFailure, proxy.RetryReset, proxy.RetryTimeout, proxy.RetryFailed},
	"gateway-error": {proxy.RetryConnectFailure, proxy.RetryReset, proxy.RetryTimeout},
}

// checkRoutePolicy compares timeout, retries, mirrors, fault and concurrency limit of a carrier route with the
// proxy's route.
func checkRoutePolicy(t *testing.T, where string, w *routev3.Route, g proxy.Route) {
	t.Helper()
	ra := w.GetRoute()
	wantTimeout := 15 * time.Second
	if ra.GetTimeout() != nil {
		wantTimeout = ra.GetTimeout().AsDuration()
	}
	if g.Timeout != wantTimeout {
		t.Errorf("%s: timeout %v, want %v", where, g.Timeout, wantTimeout)
	}

	var wantRetry *proxy.RetryPolicy
	if rp := ra.GetRetryPolicy(); rp != nil && rp.GetNumRetries().GetValue() > 0 {
		wantRetry = &proxy.RetryPolicy{NumRetries: rp.GetNumRetries().GetValue(), PerTryTimeout: rp.GetPerTryTimeout().AsDuration()}
		for _, name := range strings.Split(rp.GetRetryOn(), ",") {
			for _, c := range retryNames[name] {
				if !slices.Contains(wantRetry.RetryOn, c) {
					wantRetry.RetryOn = append(wantRetry.RetryOn, c)
				}
			}
		}
		for _, c := range rp.GetRetriableStatusCodes() {
			wantRetry.RetriableStatusCodes = append(wantRetry.RetriableStatusCodes, int32(c))
		}
	}
	if !reflect.DeepEqual(g.Retry, wantRetry) {
		t.Errorf("%s: retry %+v, want %+v", where, g.Retry, wantRetry)
	}

	var wantMirrors []proxy.Mirror
	for _, m := range ra.GetRequestMirrorPolicies() {
		wantMirrors = append(wantMirrors, proxy.Mirror{Cluster: m.GetCluster(), PerMillion: m.GetRuntimeFraction().GetDefaultValue().GetNumerator()})
	}
	if !slices.Equal(g.Mirrors, wantMirrors) {
		t.Errorf("%s: mirrors %v, want %v", where, g.Mirrors, wantMirrors)
	}

	var wantFault *proxy.Fault
	if a := w.GetTypedPerFilterConfig()[translate.FaultFilter]; a != nil {
		hf := &faultv3.HTTPFault{}
		if err := a.UnmarshalTo(hf); err != nil {
			t.Fatal(err)
		}
		wantFault = &proxy.Fault{Delay: hf.GetDelay().GetFixedDelay().AsDuration(), DelayPerMillion: hf.GetDelay().GetPercentage().GetNumerator(),
			AbortPerMillion: hf.GetAbort().GetPercentage().GetNumerator()}
		for kind, status := range translate.FaultHTTPStatus {
			if hf.GetAbort() != nil && hf.GetAbort().GetHttpStatus() == status {
				wantFault.Abort = kind
			}
		}
	}
	if !reflect.DeepEqual(g.Fault, wantFault) {
		t.Errorf("%s: fault %+v, want %+v", where, g.Fault, wantFault)
	}

	var wantLimit *proxy.ConcurrencyLimit
	if a := w.GetTypedPerFilterConfig()[translate.ConcurrencyLimitFilter]; a != nil {
		cl := &meltemiroutev1alpha1.ConcurrencyLimit{}
		if err := a.UnmarshalTo(cl); err != nil {
			t.Fatal(err)
		}
		wantLimit = &proxy.ConcurrencyLimit{MaxRequests: cl.GetMaxRequests(), PerKey: cl.GetPerMetadataKey()}
	}
	if !reflect.DeepEqual(g.ConcurrencyLimit, wantLimit) {
		t.Errorf("%s: concurrency limit %+v, want %+v", where, g.ConcurrencyLimit, wantLimit)
	}
}

func checkClusters(t *testing.T, res *translate.Resources, cfg *proxy.Config) {
	t.Helper()
	got := byName(cfg.Clusters, func(c proxy.Cluster) string { return c.Name })
	if len(got) != len(res.Clusters) {
		t.Errorf("%d clusters in, %d out", len(res.Clusters), len(got))
	}
	assignments := byName(res.Endpoints, (*endpointv3.ClusterLoadAssignment).GetClusterName)
	for _, c := range res.Clusters {
		pc, ok := got[c.GetName()]
		if !ok {
			t.Errorf("cluster %s lost", c.GetName())
			continue
		}
		wantLB := map[clusterv3.Cluster_LbPolicy]proxy.LBPolicy{
			clusterv3.Cluster_ROUND_ROBIN: proxy.RoundRobin, clusterv3.Cluster_LEAST_REQUEST: proxy.LeastRequest,
			clusterv3.Cluster_RANDOM: proxy.Random, clusterv3.Cluster_RING_HASH: proxy.RingHash,
			clusterv3.Cluster_MAGLEV: proxy.Maglev,
		}[c.GetLbPolicy()]
		if pc.LB != wantLB || pc.MinRingSize != c.GetRingHashLbConfig().GetMinimumRingSize().GetValue() ||
			pc.MaglevTableSize != c.GetMaglevLbConfig().GetTableSize().GetValue() {
			t.Errorf("cluster %s: lb %s (ring %d, table %d), want %s as in %v", c.GetName(), pc.LB, pc.MinRingSize,
				pc.MaglevTableSize, wantLB, c.GetLbConfig())
		}
		checkClusterPolicy(t, c, pc)
		if pc.ConnectTimeout != c.GetConnectTimeout().AsDuration() || pc.ConnectTimeout == 0 {
			t.Errorf("cluster %s: connect timeout %v, want %v", c.GetName(), pc.ConnectTimeout, c.GetConnectTimeout().AsDuration())
		}
		if pc.Service.Host == "" || pc.Service.Namespace == "" {
			t.Errorf("cluster %s: service %+v lacks its host or namespace", c.GetName(), pc.Service)
		}
		la := c.GetLoadAssignment()
		if c.GetType() == clusterv3.Cluster_EDS {
			la = assignments[c.GetName()]
		}
		var want []proxy.Endpoint
		for _, loc := range la.GetEndpoints() {
			for _, e := range loc.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				l := loc.GetLocality()
				ep := proxy.Endpoint{
					Address:  net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))),
					Weight:   e.GetLoadBalancingWeight().GetValue(),
					Priority: loc.GetPriority(),
					Locality: translate.LocalityString(l.GetRegion(), l.GetZone(), l.GetSubZone()),
				}
				if f := e.GetMetadata().GetFilterMetadata()["envoy.lb"].GetFields(); len(f) > 0 {
					ep.Labels = map[string]string{}
					for k, v := range f {
						ep.Labels[k] = v.GetStringValue()
					}
				}
				want = append(want, ep)
			}
		}
		if !slices.EqualFunc(pc.Endpoints, want, func(a, b proxy.Endpoint) bool {
			return a.Address == b.Address && a.Weight == b.Weight && maps.Equal(a.Labels, b.Labels) &&
				a.Priority == b.Priority && a.Locality == b.Locality
		}) {
			t.Errorf("cluster %s: endpoints %+v, want %+v", c.GetName(), pc.Endpoints, want)
		}
	}
}

// checkClusterPolicy compares circuit breakers, HTTP options and outlier detection of a cluster with the
// proxy's, reading the cluster as Istio's conventions have it: MaxUint32 is no limit, and each outlier count
// is enforced at 100% or not at all.
func checkClusterPolicy(t *testing.T, c *clusterv3.Cluster, pc proxy.Cluster) {
	t.Helper()
	th := c.GetCircuitBreakers().GetThresholds()
	if len(th) != 1 {
		t.Fatalf("cluster %s: %d threshold sets, want Istio's one", c.GetName(), len(th))
	}
	limit := func(v *wrapperspb.UInt32Value) uint32 {
		if v.GetValue() == math.MaxUint32 {
			return 0
		}
		return v.GetValue()
	}
	want := proxy.CircuitBreaker{MaxConnections: limit(th[0].GetMaxConnections()),
		MaxPendingRequests: limit(th[0].GetMaxPendingRequests()), MaxRequests: limit(th[0].GetMaxRequests()),
		MaxRetries: limit(th[0].GetMaxRetries())}
	if rb := th[0].GetRetryBudget(); rb != nil {
		want.MaxRetries = 0
		want.RetryBudgetPercent = rb.GetBudgetPercent().GetValue()
		want.RetryBudgetMinConcurrency = rb.GetMinRetryConcurrency().GetValue()
	}
	if pc.CircuitBreaker != want {
		t.Errorf("cluster %s: circuit breaker %+v, want %+v", c.GetName(), pc.CircuitBreaker, want)
	}

	var idle time.Duration
	var perConn uint32
	if a := c.GetTypedExtensionProtocolOptions()[translate.HTTPProtocolOptionsKey]; a != nil {
		o := &httpoptionsv3.HttpProtocolOptions{}
		if err := a.UnmarshalTo(o); err != nil {
			t.Fatal(err)
		}
		idle = o.GetCommonHttpProtocolOptions().GetIdleTimeout().AsDuration()
		perConn = o.GetCommonHttpProtocolOptions().GetMaxRequestsPerConnection().GetValue()
	}
	if pc.IdleTimeout != idle || pc.MaxRequestsPerConnection != perConn {
		t.Errorf("cluster %s: idle timeout %v, requests per connection %d, want %v and %d", c.GetName(),
			pc.IdleTimeout, pc.MaxRequestsPerConnection, idle, perConn)
	}

	wantPanic := 50.0
	if p := c.GetCommonLbConfig().GetHealthyPanicThreshold(); p != nil {
		wantPanic = p.GetValue()
	}
	if pc.PanicThreshold != wantPanic {
		t.Errorf("cluster %s: panic threshold %v, want %v", c.GetName(), pc.PanicThreshold, wantPanic)
	}

	od := c.GetOutlierDetection()
	if od == nil {
		if pc.Outlier != nil {
			t.Errorf("cluster %s: outlier detection %+v, want none", c.GetName(), pc.Outlier)
		}
		return
	}
	orDefault := func(v *wrapperspb.UInt32Value, enforcing *wrapperspb.UInt32Value, enforcedByDefault bool) uint32 {
		if (enforcing == nil && !enforcedByDefault) || (enforcing != nil && enforcing.GetValue() == 0) {
			return 0
		}
		if v == nil {
			return 5
		}
		return v.GetValue()
	}
	dur := func(d *durationpb.Duration, def time.Duration) time.Duration {
		if d == nil {
			return def
		}
		return d.AsDuration()
	}
	wantOD := &proxy.OutlierDetection{
		Consecutive5xx:            orDefault(od.GetConsecutive_5Xx(), od.GetEnforcingConsecutive_5Xx(), true),
		ConsecutiveGatewayFailure: orDefault(od.GetConsecutiveGatewayFailure(), od.GetEnforcingConsecutiveGatewayFailure(), false),
		SplitLocalOrigin:          od.GetSplitExternalLocalOriginErrors(),
		Interval:                  dur(od.GetInterval(), 10*time.Second),
		BaseEjectionTime:          dur(od.GetBaseEjectionTime(), 30*time.Second),
		MaxEjectionTime:           dur(od.GetMaxEjectionTime(), 300*time.Second),
		MaxEjectionPercent:        10,
	}
	if od.GetSplitExternalLocalOriginErrors() {
		wantOD.ConsecutiveLocalOriginFailure = orDefault(od.GetConsecutiveLocalOriginFailure(),
			od.GetEnforcingConsecutiveLocalOriginFailure(), true)
	}
	if p := od.GetMaxEjectionPercent(); p != nil {
		wantOD.MaxEjectionPercent = p.GetValue()
	}
	if !reflect.DeepEqual(pc.Outlier, wantOD) {
		t.Errorf("cluster %s: outlier detection %+v, want %+v", c.GetName(), pc.Outlier, wantOD)
	}
}
