package xds_test

import (
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	ringhashv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	httpoptionsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	meltemiroutev1alpha1 "github.com/meltemi-mesh/meltemi/api/meltemi/route/v1alpha1"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/proxy/xds"
)

// translateRoute translates one carrier route named "r" to cluster "c", changed by mutate, and returns the
// proxy's route and the notes.
func translateRoute(t *testing.T, mutate func(*routev3.RouteConfiguration, *routev3.Route)) (proxy.Route, []string, error) {
	t.Helper()
	r := metaRoute("r", "c")
	rc := carrier("rc", r)
	mutate(rc, r)
	res := xds.Resources{
		Listeners: map[string]*listenerv3.Listener{"l": listenerWith("l", "127.0.0.1", 1, mppFilter(t, rdsProxy(dubboCodec, "rc")))},
		Routes:    map[string]*routev3.RouteConfiguration{"rc": rc},
		Clusters:  map[string]*clusterv3.Cluster{"c": staticCluster("c", hostPort{"127.0.0.1", 2})},
	}
	tr, err := xds.Translate(res, codecs(t))
	if err != nil {
		return proxy.Route{}, nil, err
	}
	return tr.Config.Listeners[0].Routes.Routes[0], tr.Notes, nil
}

func action(r *routev3.Route) *routev3.RouteAction { return r.GetRoute() }

func fraction(n uint32, d typev3.FractionalPercent_DenominatorType) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: d}
}

func faultConfig(t *testing.T, hf *faultv3.HTTPFault) map[string]*anypb.Any {
	return map[string]*anypb.Any{xds.FaultFilter: mustAny(t, hf)}
}

func httpAbort(status uint32, pct *typev3.FractionalPercent) *faultv3.HTTPFault {
	return &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: status},
		Percentage: pct}}
}

func fixedDelay(d time.Duration, pct *typev3.FractionalPercent) *commonfaultv3.FaultDelay {
	return &commonfaultv3.FaultDelay{FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d)},
		Percentage: pct}
}

// TestRoutePolicy reads timeouts, retries, mirrors, faults and concurrency limits from the carrier with Envoy's
// defaults, and notes what is left out.
func TestRoutePolicy(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*testing.T, *routev3.RouteConfiguration, *routev3.Route)
		want   proxy.Route // Name and Cluster are filled in
		note   string      // a note that must be among the notes
	}{
		{name: "no timeout: Envoy's 15s",
			mutate: func(*testing.T, *routev3.RouteConfiguration, *routev3.Route) {},
			want:   proxy.Route{Timeout: 15 * time.Second}},
		{name: "timeout 0: none",
			mutate: func(_ *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
				action(r).Timeout = durationpb.New(0)
			},
			want: proxy.Route{}},
		{name: "timeout and a full retry policy",
			mutate: func(_ *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
				action(r).Timeout = durationpb.New(2 * time.Second)
				action(r).RetryPolicy = &routev3.RetryPolicy{
					RetryOn:              "connect-failure, reset,timeout,retriable-status-codes,failed",
					NumRetries:           wrapperspb.UInt32(3),
					PerTryTimeout:        durationpb.New(500 * time.Millisecond),
					RetriableStatusCodes: []uint32{80, math.MaxUint32},
					RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(10 * time.Millisecond),
						MaxInterval: durationpb.New(time.Second)},
				}
			},
			want: proxy.Route{Timeout: 2 * time.Second, Retry: &proxy.RetryPolicy{
				RetryOn: []proxy.RetryOn{proxy.RetryConnectFailure, proxy.RetryReset, proxy.RetryTimeout,
					proxy.RetryRetriableStatusCodes, proxy.RetryFailed},
				NumRetries: 3, PerTryTimeout: 500 * time.Millisecond, RetriableStatusCodes: []int32{80, -1},
				BackOffBase: 10 * time.Millisecond, BackOffMax: time.Second,
			}}},
		{name: "num_retries absent: 1; aliases expanded once",
			mutate: func(_ *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
				action(r).RetryPolicy = &routev3.RetryPolicy{RetryOn: "gateway-error,5xx,reset-before-request"}
			},
			want: proxy.Route{Timeout: 15 * time.Second, Retry: &proxy.RetryPolicy{NumRetries: 1,
				RetryOn: []proxy.RetryOn{proxy.RetryConnectFailure, proxy.RetryReset, proxy.RetryTimeout, proxy.RetryFailed}}}},
		{name: "Istio's default policy: HTTP-only conditions noted, statuses without codes dropped",
			mutate: func(t *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
				action(r).RetryPolicy = &routev3.RetryPolicy{
					RetryOn:                       "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
					NumRetries:                    wrapperspb.UInt32(2),
					RetryHostPredicate:            []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts"}},
					HostSelectionRetryMaxAttempts: 5,
				}
			},
			want: proxy.Route{Timeout: 15 * time.Second, Retry: &proxy.RetryPolicy{NumRetries: 2,
				RetryOn: []proxy.RetryOn{proxy.RetryConnectFailure}}},
			note: `route configuration "rc": route "r": route.retry_policy: retry_on "refused-stream" left out`},
		{name: "statuses without their condition are dropped",
			mutate: func(_ *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
				action(r).RetryPolicy = &routev3.RetryPolicy{RetryOn: "reset", RetriableStatusCodes: []uint32{80}}
			},
			want: proxy.Route{Timeout: 15 * time.Second, Retry: &proxy.RetryPolicy{NumRetries: 1,
				RetryOn: []proxy.RetryOn{proxy.RetryReset}}}},
		{name: "num_retries 0: no retries",
			mutate: func(_ *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
				action(r).RetryPolicy = &routev3.RetryPolicy{RetryOn: "reset", NumRetries: wrapperspb.UInt32(0)}
			},
			want: proxy.Route{Timeout: 15 * time.Second}},
		{name: "the virtual host's retry policy for a route without one",
			mutate: func(_ *testing.T, rc *routev3.RouteConfiguration, _ *routev3.Route) {
				rc.VirtualHosts[0].RetryPolicy = &routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: wrapperspb.UInt32(4)}
			},
			want: proxy.Route{Timeout: 15 * time.Second, Retry: &proxy.RetryPolicy{NumRetries: 4,
				RetryOn: []proxy.RetryOn{proxy.RetryConnectFailure}}}},
		{name: "a route's own retry policy replaces the virtual host's",
			mutate: func(_ *testing.T, rc *routev3.RouteConfiguration, r *routev3.Route) {
				rc.VirtualHosts[0].RetryPolicy = &routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: wrapperspb.UInt32(4)}
				action(r).RetryPolicy = &routev3.RetryPolicy{RetryOn: "reset"}
			},
			want: proxy.Route{Timeout: 15 * time.Second, Retry: &proxy.RetryPolicy{NumRetries: 1,
				RetryOn: []proxy.RetryOn{proxy.RetryReset}}}},
		{name: "mirrors in every denominator",
			mutate: func(_ *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
				action(r).RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{
					{Cluster: "m1"},
					{Cluster: "m2", RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: fraction(5, typev3.FractionalPercent_HUNDRED)}},
					{Cluster: "m3", RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: fraction(5, typev3.FractionalPercent_TEN_THOUSAND)}},
					{Cluster: "m4", RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: fraction(5, typev3.FractionalPercent_MILLION),
						RuntimeKey: "mirror.m4"}},
					{Cluster: "m5", RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: fraction(250, typev3.FractionalPercent_HUNDRED)}},
				}
			},
			want: proxy.Route{Timeout: 15 * time.Second, Mirrors: []proxy.Mirror{{Cluster: "m1", PerMillion: 1000000},
				{Cluster: "m2", PerMillion: 50000}, {Cluster: "m3", PerMillion: 500}, {Cluster: "m4", PerMillion: 5},
				{Cluster: "m5", PerMillion: 1000000}}}},
		{name: "fault: delay and abort",
			mutate: func(t *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
				hf := httpAbort(503, fraction(5, typev3.FractionalPercent_HUNDRED))
				hf.Delay = fixedDelay(100*time.Millisecond, fraction(100000, typev3.FractionalPercent_MILLION))
				r.TypedPerFilterConfig = faultConfig(t, hf)
			},
			want: proxy.Route{Timeout: 15 * time.Second, Fault: &proxy.Fault{Delay: 100 * time.Millisecond, DelayPerMillion: 100000,
				Abort: "no_healthy_upstream", AbortPerMillion: 50000}}},
		{name: "fault: a delay without a percentage delays nothing, as in Envoy",
			mutate: func(t *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
				r.TypedPerFilterConfig = faultConfig(t, &faultv3.HTTPFault{Delay: fixedDelay(time.Second, nil)})
			},
			want: proxy.Route{Timeout: 15 * time.Second, Fault: &proxy.Fault{Delay: time.Second}}},
		{name: "fault in Envoy's FilterConfig wrapper",
			mutate: func(t *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
				r.TypedPerFilterConfig = map[string]*anypb.Any{xds.FaultFilter: mustAny(t, &routev3.FilterConfig{
					Config: mustAny(t, httpAbort(401, fraction(1, typev3.FractionalPercent_HUNDRED))), IsOptional: true})}
			},
			want: proxy.Route{Timeout: 15 * time.Second, Fault: &proxy.Fault{Abort: "unauthorized", AbortPerMillion: 10000}}},
		{name: "fault disabled for the route",
			mutate: func(t *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
				r.TypedPerFilterConfig = map[string]*anypb.Any{xds.FaultFilter: mustAny(t, &routev3.FilterConfig{Disabled: true})}
			},
			want: proxy.Route{Timeout: 15 * time.Second}},
		{name: "concurrency limit per key, and an unknown filter noted",
			mutate: func(t *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
				r.TypedPerFilterConfig = map[string]*anypb.Any{
					xds.ConcurrencyLimitFilter: mustAny(t, &meltemiroutev1alpha1.ConcurrencyLimit{MaxRequests: 100, PerMetadataKey: "method"}),
					"envoy.filters.http.cors":  mustAny(t, &routev3.FilterConfig{}),
				}
			},
			want: proxy.Route{Timeout: 15 * time.Second, ConcurrencyLimit: &proxy.ConcurrencyLimit{MaxRequests: 100, PerKey: "method"}},
			note: `route configuration "rc": route "r": typed_per_filter_config["envoy.filters.http.cors"] left out`},
		{name: "idle timeout noted",
			mutate: func(_ *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
				action(r).IdleTimeout = durationpb.New(time.Minute)
			},
			want: proxy.Route{Timeout: 15 * time.Second},
			note: `route.idle_timeout left out`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, notes, err := translateRoute(t, func(rc *routev3.RouteConfiguration, r *routev3.Route) { tt.mutate(t, rc, r) })
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			want.Name, want.Cluster = "r", "c"
			if !reflect.DeepEqual(got, want) {
				t.Errorf("route:\n got %s\nwant %s", dump(got), dump(want))
			}
			if tt.note != "" && !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, tt.note) }) {
				t.Errorf("no note %q in\n%s", tt.note, strings.Join(notes, "\n"))
			}
		})
	}
}

// TestFaultStatuses maps every abort status back to the error kind the controller wrote it for.
func TestFaultStatuses(t *testing.T) {
	for status, kind := range map[uint32]string{404: "route_not_found", 503: "no_healthy_upstream", 502: "bad_response",
		500: "unspecified", 429: "over_limit", 504: "timeout", 401: "unauthorized", 403: "unauthorized",
		400: "bad_request", 418: "unspecified"} {
		got, _, err := translateRoute(t, func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.TypedPerFilterConfig = faultConfig(t, httpAbort(status, fraction(100, typev3.FractionalPercent_HUNDRED)))
		})
		if err != nil {
			t.Fatal(err)
		}
		if got.Fault == nil || got.Fault.Abort != kind || got.Fault.AbortPerMillion != 1000000 {
			t.Errorf("status %d: fault %+v, want %s for every request", status, got.Fault, kind)
		}
	}
}

func TestRoutePolicyErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*testing.T, *routev3.RouteConfiguration, *routev3.Route)
		want   string
	}{
		{"negative timeout", func(_ *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
			action(r).Timeout = durationpb.New(-time.Second)
		}, `route configuration "rc": virtual_hosts[0].routes[0] "r": route.timeout: negative duration`},
		{"unknown retry condition", func(_ *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
			action(r).RetryPolicy = &routev3.RetryPolicy{RetryOn: "reset,sometimes"}
		}, `route.retry_policy: retry_on: unknown condition "sometimes"`},
		{"bad per-try timeout", func(_ *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
			action(r).RetryPolicy = &routev3.RetryPolicy{RetryOn: "reset", PerTryTimeout: &durationpb.Duration{Nanos: -5, Seconds: 1}}
		}, `route.retry_policy: per_try_timeout:`},
		{"back-off without a base", func(_ *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
			action(r).RetryPolicy = &routev3.RetryPolicy{RetryOn: "reset", RetryBackOff: &routev3.RetryPolicy_RetryBackOff{}}
		}, `route.retry_policy: retry_back_off.base_interval:`},
		{"retries narrowed by request headers", func(_ *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
			action(r).RetryPolicy = &routev3.RetryPolicy{RetryOn: "reset",
				RetriableRequestHeaders: []*routev3.HeaderMatcher{exactHeader("idempotent", "yes")}}
		}, `route.retry_policy: retriable_request_headers: not supported`},
		{"virtual host retry policy", func(_ *testing.T, rc *routev3.RouteConfiguration, _ *routev3.Route) {
			rc.VirtualHosts[0].RetryPolicy = &routev3.RetryPolicy{RetryOn: "bogus"}
		}, `virtual host retry_policy: retry_on: unknown condition "bogus"`},
		{"mirror by header", func(_ *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
			action(r).RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{ClusterHeader: "x-mirror"}}
		}, `route.request_mirror_policies[0]: cluster_header: not supported`},
		{"mirror without a cluster", func(_ *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
			action(r).RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{}}
		}, `route.request_mirror_policies[0]: cluster: required`},
		{"fault of another type", func(t *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
			r.TypedPerFilterConfig = map[string]*anypb.Any{xds.FaultFilter: mustAny(t, &meltemiroutev1alpha1.ConcurrencyLimit{})}
		}, `typed_per_filter_config["envoy.filters.http.fault"]: type type.googleapis.com/meltemi.route.v1alpha1.ConcurrencyLimit, want envoy.extensions.filters.http.fault.v3.HTTPFault`},
		{"fault that does not decode", func(_ *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
			r.TypedPerFilterConfig = map[string]*anypb.Any{xds.FaultFilter: {
				TypeUrl: "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault", Value: []byte{0xff}}}
		}, `typed_per_filter_config["envoy.filters.http.fault"]: envoy.extensions.filters.http.fault.v3.HTTPFault:`},
		{"gRPC abort", func(t *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
			r.TypedPerFilterConfig = faultConfig(t, &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
				ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14}}})
		}, `typed_per_filter_config["envoy.filters.http.fault"]: abort: only http_status is supported`},
		{"delay from a header", func(t *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
			r.TypedPerFilterConfig = faultConfig(t, &faultv3.HTTPFault{Delay: &commonfaultv3.FaultDelay{
				FaultDelaySecifier: &commonfaultv3.FaultDelay_HeaderDelay_{HeaderDelay: &commonfaultv3.FaultDelay_HeaderDelay{}}}})
		}, `delay: only fixed_delay is supported`},
		{"zero delay", func(t *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
			r.TypedPerFilterConfig = faultConfig(t, &faultv3.HTTPFault{Delay: fixedDelay(0, nil)})
		}, `delay.fixed_delay: must be a duration above 0`},
		{"fault on some headers", func(t *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
			hf := httpAbort(503, nil)
			hf.Headers = []*routev3.HeaderMatcher{exactHeader("x", "y")}
			r.TypedPerFilterConfig = faultConfig(t, hf)
		}, `headers: not supported`},
		{"fault percentage of an unknown denominator", func(t *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
			r.TypedPerFilterConfig = faultConfig(t, httpAbort(503, fraction(1, 7)))
		}, `abort.percentage: denominator: unknown 7`},
		{"concurrency limit of 0", func(t *testing.T, _ *routev3.RouteConfiguration, r *routev3.Route) {
			r.TypedPerFilterConfig = map[string]*anypb.Any{xds.ConcurrencyLimitFilter: mustAny(t, &meltemiroutev1alpha1.ConcurrencyLimit{})}
		}, `typed_per_filter_config["meltemi.concurrency_limit"]: max_requests: must be at least 1`},
		{"fault on the virtual host", func(t *testing.T, rc *routev3.RouteConfiguration, _ *routev3.Route) {
			rc.VirtualHosts[0].TypedPerFilterConfig = faultConfig(t, httpAbort(503, nil))
		}, `route configuration "rc": virtual_hosts[0].typed_per_filter_config["envoy.filters.http.fault"]: not supported here; set it per route`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := translateRoute(t, func(rc *routev3.RouteConfiguration, r *routev3.Route) { tt.mutate(t, rc, r) })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v\nwant it to contain %s", err, tt.want)
			}
		})
	}
}

// translateCluster translates one static cluster "c", changed by mutate.
func translateCluster(t *testing.T, mutate func(*clusterv3.Cluster)) (proxy.Cluster, []string, error) {
	t.Helper()
	c := staticCluster("c", hostPort{"127.0.0.1", 2})
	mutate(c)
	tr, err := xds.Translate(xds.Resources{Clusters: map[string]*clusterv3.Cluster{"c": c}}, codecs(t))
	if err != nil {
		return proxy.Cluster{}, nil, err
	}
	return tr.Config.Clusters[0], tr.Notes, nil
}

// envoyOutlier is Envoy's outlier detection with nothing set, in the proxy's terms.
var envoyOutlier = proxy.OutlierDetection{Consecutive5xx: 5, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second,
	MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 10}

func TestClusterPolicy(t *testing.T) {
	withOutlier := func(o proxy.OutlierDetection) *proxy.OutlierDetection { return &o }
	tests := []struct {
		name   string
		mutate func(*testing.T, *clusterv3.Cluster)
		want   proxy.Cluster // Name, Service and Endpoints are filled in; LB defaults to round robin
		note   string
		// panicOff: the cluster sets a panic threshold of 0; others get Envoy's 50%.
		panicOff bool
	}{
		{name: "no circuit breakers: Envoy's defaults",
			mutate: func(*testing.T, *clusterv3.Cluster) {},
			want:   proxy.Cluster{CircuitBreaker: envoyDefaults}},
		{name: "Istio's thresholds: MaxUint32 is no limit; a budget replaces max_retries",
			mutate: func(_ *testing.T, c *clusterv3.Cluster) {
				c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{
					{MaxConnections: wrapperspb.UInt32(100), MaxPendingRequests: wrapperspb.UInt32(math.MaxUint32),
						MaxRequests: wrapperspb.UInt32(1000), MaxRetries: wrapperspb.UInt32(5), TrackRemaining: true,
						RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{}},
					{Priority: corev3.RoutingPriority_HIGH, MaxConnections: wrapperspb.UInt32(1)},
				}}
			},
			want: proxy.Cluster{CircuitBreaker: proxy.CircuitBreaker{MaxConnections: 100, MaxRequests: 1000,
				RetryBudgetPercent: 20, RetryBudgetMinConcurrency: 3}},
			note: `cluster "c": circuit_breakers.thresholds[1] of priority HIGH left out`},
		{name: "retry budget as written",
			mutate: func(_ *testing.T, c *clusterv3.Cluster) {
				c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{
					{RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 25},
						MinRetryConcurrency: wrapperspb.UInt32(4)}}}}
			},
			want: proxy.Cluster{CircuitBreaker: proxy.CircuitBreaker{MaxConnections: 1024, MaxPendingRequests: 1024,
				MaxRequests: 1024, RetryBudgetPercent: 25, RetryBudgetMinConcurrency: 4}}},
		{name: "requests per connection and idle timeout from Istio's HTTP options",
			mutate: func(t *testing.T, c *clusterv3.Cluster) {
				c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
					"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(t, &httpoptionsv3.HttpProtocolOptions{
						CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Hour),
							MaxRequestsPerConnection: wrapperspb.UInt32(50)}}),
				}
			},
			want: proxy.Cluster{CircuitBreaker: envoyDefaults, IdleTimeout: time.Hour, MaxRequestsPerConnection: 50}},
		{name: "requests per connection in the deprecated field",
			mutate: func(_ *testing.T, c *clusterv3.Cluster) {
				c.MaxRequestsPerConnection = wrapperspb.UInt32(7)
			},
			want: proxy.Cluster{CircuitBreaker: envoyDefaults, MaxRequestsPerConnection: 7}},
		{name: "outlier detection with nothing set: Envoy's defaults",
			mutate: func(_ *testing.T, c *clusterv3.Cluster) { c.OutlierDetection = &clusterv3.OutlierDetection{} },
			want:   proxy.Cluster{CircuitBreaker: envoyDefaults, Outlier: withOutlier(envoyOutlier)},
			note:   `cluster "c": outlier_detection success-rate and failure-percentage ejection left out`},
		{name: "outlier detection as Istio writes it",
			mutate: func(_ *testing.T, c *clusterv3.Cluster) {
				c.OutlierDetection = &clusterv3.OutlierDetection{
					Consecutive_5Xx: wrapperspb.UInt32(7), EnforcingConsecutive_5Xx: wrapperspb.UInt32(100),
					ConsecutiveGatewayFailure: wrapperspb.UInt32(3), EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100),
					SplitExternalLocalOriginErrors: true, ConsecutiveLocalOriginFailure: wrapperspb.UInt32(2),
					EnforcingConsecutiveLocalOriginFailure: wrapperspb.UInt32(100), EnforcingLocalOriginSuccessRate: wrapperspb.UInt32(0),
					EnforcingSuccessRate: wrapperspb.UInt32(0), Interval: durationpb.New(5 * time.Second),
					BaseEjectionTime: durationpb.New(time.Minute), MaxEjectionPercent: wrapperspb.UInt32(50),
				}
				c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{}}
			},
			want: proxy.Cluster{CircuitBreaker: envoyDefaults, Outlier: &proxy.OutlierDetection{Consecutive5xx: 7,
				ConsecutiveGatewayFailure: 3, SplitLocalOrigin: true, ConsecutiveLocalOriginFailure: 2, Interval: 5 * time.Second,
				BaseEjectionTime: time.Minute, MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 50}},
			panicOff: true},
		{name: "unenforced detectors are off; 0% ejection still ejects one; partial enforcement noted",
			mutate: func(_ *testing.T, c *clusterv3.Cluster) {
				c.OutlierDetection = &clusterv3.OutlierDetection{EnforcingConsecutive_5Xx: wrapperspb.UInt32(0),
					EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(50), EnforcingSuccessRate: wrapperspb.UInt32(0),
					MaxEjectionPercent: wrapperspb.UInt32(0)}
				c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{}}
			},
			want: proxy.Cluster{CircuitBreaker: envoyDefaults, Outlier: &proxy.OutlierDetection{ConsecutiveGatewayFailure: 5,
				Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second,
				MaxEjectionPercent: 1}},
			note:     `cluster "c": outlier_detection.enforcing_consecutive_gateway_failure 50% enforced always`,
			panicOff: true},
		{name: "panic threshold as written",
			mutate: func(_ *testing.T, c *clusterv3.Cluster) {
				c.OutlierDetection = &clusterv3.OutlierDetection{EnforcingSuccessRate: wrapperspb.UInt32(0)}
				c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 30}}
			},
			want: proxy.Cluster{CircuitBreaker: envoyDefaults, Outlier: withOutlier(envoyOutlier), PanicThreshold: 30}},
		{name: "ring hash with its sizes",
			mutate: func(_ *testing.T, c *clusterv3.Cluster) {
				c.LbPolicy = clusterv3.Cluster_RING_HASH
				c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
					MinimumRingSize: wrapperspb.UInt64(2048), MaximumRingSize: wrapperspb.UInt64(4096)}}
			},
			want: proxy.Cluster{LB: proxy.RingHash, MinRingSize: 2048, MaxRingSize: 4096, CircuitBreaker: envoyDefaults}},
		{name: "maglev with its table",
			mutate: func(_ *testing.T, c *clusterv3.Cluster) {
				c.LbPolicy = clusterv3.Cluster_MAGLEV
				c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{
					TableSize: wrapperspb.UInt64(65537)}}
			},
			want: proxy.Cluster{LB: proxy.Maglev, MaglevTableSize: 65537, CircuitBreaker: envoyDefaults}},
		{name: "typed ring hash policy after one the proxy does not know",
			mutate: func(t *testing.T, c *clusterv3.Cluster) {
				c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
					{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "x", TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/x.Unknown"}}},
					{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "rh", TypedConfig: mustAny(t, &ringhashv3.RingHash{
						MinimumRingSize: wrapperspb.UInt64(512), HashFunction: ringhashv3.RingHash_MURMUR_HASH_2})}},
				}}
			},
			want: proxy.Cluster{LB: proxy.RingHash, MinRingSize: 512, CircuitBreaker: envoyDefaults},
			note: `cluster "c": ring hash function MURMUR_HASH_2 left out`},
		{name: "typed maglev policy",
			mutate: func(t *testing.T, c *clusterv3.Cluster) {
				c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
					{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "mg", TypedConfig: mustAny(t, &maglevv3.Maglev{
						TableSize: wrapperspb.UInt64(251)})}},
				}}
			},
			want: proxy.Cluster{LB: proxy.Maglev, MaglevTableSize: 251, CircuitBreaker: envoyDefaults}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, notes, err := translateCluster(t, func(c *clusterv3.Cluster) { tt.mutate(t, c) })
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			want.Name, want.Endpoints, want.Service = "c", got.Endpoints, got.Service
			if want.LB == "" {
				want.LB = proxy.RoundRobin
			}
			if want.PanicThreshold == 0 && !tt.panicOff {
				want.PanicThreshold = 50
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("cluster:\n got %s\nwant %s", dump(got), dump(want))
			}
			if tt.note != "" && !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, tt.note) }) {
				t.Errorf("no note %q in\n%s", tt.note, strings.Join(notes, "\n"))
			}
		})
	}
}

func TestClusterPolicyErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*testing.T, *clusterv3.Cluster)
		want   string
	}{
		{"zero threshold", func(_ *testing.T, c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{
				{MaxRetries: wrapperspb.UInt32(0)}}}
		}, `cluster "c": circuit_breakers: thresholds[0].max_retries: 0 would refuse everything`},
		{"two default thresholds", func(_ *testing.T, c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{}, {}}}
		}, `circuit_breakers: thresholds[1]: a second set for priority DEFAULT`},
		{"budget over 100%", func(_ *testing.T, c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{
				{RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 101}}}}}
		}, `circuit_breakers: thresholds[0].retry_budget.budget_percent: 101 is not a percentage`},
		{"enforcement over 100%", func(_ *testing.T, c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{EnforcingConsecutive_5Xx: wrapperspb.UInt32(101)}
		}, `outlier_detection: enforcing_consecutive_5xx: 101 is not a percentage`},
		{"zero interval", func(_ *testing.T, c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{Interval: durationpb.New(0)}
		}, `outlier_detection: interval: must be a duration above 0`},
		{"ejection percent over 100", func(_ *testing.T, c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{MaxEjectionPercent: wrapperspb.UInt32(200)}
		}, `outlier_detection: max_ejection_percent: 200 is not a percentage`},
		{"maglev table not prime", func(_ *testing.T, c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_MAGLEV
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{
				TableSize: wrapperspb.UInt64(65536)}}
		}, `cluster "c": maglev_lb_config.table_size: 65536 is not a prime number`},
		{"ring too large", func(_ *testing.T, c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				MinimumRingSize: wrapperspb.UInt64(1 << 24)}}
		}, `ring_hash_lb_config.minimum_ring_size: 16777216 is above 8388608`},
		{"panic threshold over 100%", func(_ *testing.T, c *clusterv3.Cluster) {
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 150}}
		}, `cluster "c": common_lb_config.healthy_panic_threshold: 150 is not a percentage`},
		{"ring bounds reversed", func(_ *testing.T, c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				MaximumRingSize: wrapperspb.UInt64(100)}}
		}, `ring_hash_lb_config.maximum_ring_size: 100 is below the minimum ring size 1024`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := translateCluster(t, func(c *clusterv3.Cluster) { tt.mutate(t, c) })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v\nwant it to contain %s", err, tt.want)
			}
		})
	}
}

// TestEndpointPriorities keeps every priority, each endpoint with its priority and locality, for failover.
func TestEndpointPriorities(t *testing.T) {
	lbe := func(host string) *endpointv3.LbEndpoint {
		return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: socket(host, 20880)}}}
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{
		{Locality: &corev3.Locality{Region: "eu", Zone: "a", SubZone: "1"}, LbEndpoints: []*endpointv3.LbEndpoint{lbe("10.0.0.1")}},
		{Locality: &corev3.Locality{Region: "eu", Zone: "b"}, Priority: 1, LbEndpoints: []*endpointv3.LbEndpoint{lbe("10.0.0.2")}},
		{Locality: &corev3.Locality{Region: "us"}, Priority: 2, LbEndpoints: []*endpointv3.LbEndpoint{lbe("10.0.0.3"), lbe("10.0.0.4")}},
		{Priority: 2, LbEndpoints: []*endpointv3.LbEndpoint{lbe("10.0.0.5")}},
	}}
	tr, err := xds.Translate(xds.Resources{Clusters: map[string]*clusterv3.Cluster{"c": edsCluster("c")},
		Endpoints: map[string]*endpointv3.ClusterLoadAssignment{"c": cla}}, codecs(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []proxy.Endpoint{
		{Address: "10.0.0.1:20880", Locality: "eu/a/1"},
		{Address: "10.0.0.2:20880", Locality: "eu/b", Priority: 1},
		{Address: "10.0.0.3:20880", Locality: "us", Priority: 2},
		{Address: "10.0.0.4:20880", Locality: "us", Priority: 2},
		{Address: "10.0.0.5:20880", Priority: 2},
	}
	if got := tr.Config.Clusters[0].Endpoints; !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints:\n got %s\nwant %s", dump(got), dump(want))
	}
}

// TestNativeRoutesHaveNoDefaultTimeout keeps Aeraki's semantics for its own route form: no timeout unless
// set, and none can be, with mirrors read as in the carrier.
func TestNativeRoutesHaveNoDefaultTimeout(t *testing.T) {
	tr, err := xds.Translate(xds.Resources{Listeners: map[string]*listenerv3.Listener{"inbound_20880": inlineListener(t)},
		Clusters: clusters(t), Endpoints: endpointsOf(t)}, codecs(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range tr.Config.Listeners[0].Routes.Routes {
		if r.Timeout != 0 || r.Retry != nil {
			t.Errorf("native route %q: timeout %v, retry %+v; want neither", r.Name, r.Timeout, r.Retry)
		}
	}
}

func TestParseLocality(t *testing.T) {
	for in, want := range map[string]*corev3.Locality{
		"":                 nil,
		"eu-west":          {Region: "eu-west"},
		"eu-west/zone-a":   {Region: "eu-west", Zone: "zone-a"},
		"eu-west/a/rack-1": {Region: "eu-west", Zone: "a", SubZone: "rack-1"},
		"eu//rack-1":       {Region: "eu", SubZone: "rack-1"},
	} {
		got, err := xds.ParseLocality(in)
		if err != nil || !proto.Equal(got, want) {
			t.Errorf("ParseLocality(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"a/b/c/d", "/zone-a"} {
		if _, err := xds.ParseLocality(bad); err == nil {
			t.Errorf("ParseLocality(%q): no error", bad)
		}
	}
}
