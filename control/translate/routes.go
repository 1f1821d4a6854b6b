package translate

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	meltemiroutev1alpha1 "github.com/meltemi-mesh/meltemi/api/meltemi/route/v1alpha1"
	"github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/control/model"
)

// routeConfiguration builds the MetaRDS route configuration of a service port in Aeraki's carrier form: an
// Envoy RouteConfiguration with one virtual host, "dummy", for every domain, whose HTTP routes are the
// meta routes in order. Request metadata matchers ride as header matchers and mutations as headers to add;
// the path matcher is a formality ("/") that Aeraki's data plane ignores.
func routeConfiguration(s *model.Snapshot, svc *model.Service, port *model.Port) (*routev3.RouteConfiguration, error) {
	var routes []*routev3.Route
	// A MetaRouter may hold only rate limits; Aeraki then serves the default route, and so does this.
	if svc.Router == nil || len(svc.Router.Spec.Routes) == 0 {
		routes = []*routev3.Route{defaultRoute(svc, port)}
	} else {
		for i := range svc.Router.Spec.Routes {
			mr := &svc.Router.Spec.Routes[i]
			r, err := metaRoute(s, mr, port.Number)
			if err != nil {
				return nil, fmt.Errorf("%s: spec.routes[%d] %q: %w", svc.Router.Key(), i, mr.Name, err)
			}
			routes = append(routes, r)
		}
	}
	return &routev3.RouteConfiguration{
		Name: RouteConfigName(svc.Host, port.Number),
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    VirtualHostName,
			Domains: []string{"*"},
			Routes:  routes,
		}},
	}, nil
}

// defaultRoute sends every request to the whole service, hashing on the DestinationRule's key if it has
// one, as Aeraki does without a MetaRouter.
func defaultRoute(svc *model.Service, port *model.Port) *routev3.Route {
	action := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: ClusterName(port.Number, "", svc.Host)},
		HashPolicy:       hashPolicy([]string{svc.LoadBalancerFor(port.Number, "").HashKey}),
		RetryPolicy:      DefaultRetryPolicy(),
	}
	return &routev3.Route{
		Name:   DefaultRouteName,
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: action},
	}
}

// metaRoute translates one MetaRoute. Destinations without a port take the listener's, as in Aeraki.
func metaRoute(s *model.Snapshot, mr *v1alpha1.MetaRoute, port uint32) (*routev3.Route, error) {
	headers, err := headerMatchers(mr.Match)
	if err != nil {
		return nil, fmt.Errorf("match: %w", err)
	}
	action := &routev3.RouteAction{}
	var hashKeys []string
	switch len(mr.Route) {
	case 0:
		return nil, errors.New("route: no destination")
	case 1:
		d := &mr.Route[0].Destination
		action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: destinationCluster(d, port)}
		hashKeys = append(hashKeys, hashKey(s, d, port))
	default:
		// No total_weight: Envoy deprecated it in favour of the sum, and Aeraki's data plane and Meltemi's
		// proxy both take the sum.
		wc := &routev3.WeightedCluster{}
		for i := range mr.Route {
			d := &mr.Route[i].Destination
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{
				Name:   destinationCluster(d, port),
				Weight: wrapperspb.UInt32(mr.Route[i].Weight),
			})
			hashKeys = append(hashKeys, hashKey(s, d, port))
		}
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	action.HashPolicy = hashPolicy(hashKeys)
	if mr.Mirror != nil {
		action.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{
			Cluster:         destinationCluster(mr.Mirror, port),
			RuntimeFraction: mirrorFraction(mr.MirrorPercentage),
		}}
	}
	if mr.Timeout != nil {
		action.Timeout = durationpb.New(mr.Timeout.Duration)
	}
	if action.RetryPolicy, err = retryPolicy(mr.Retries); err != nil {
		return nil, fmt.Errorf("retries: %w", err)
	}
	perFilter, err := perFilterConfig(mr)
	if err != nil {
		return nil, err
	}
	return &routev3.Route{
		Name: mr.Name,
		Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Headers:       headers,
		},
		Action:               &routev3.Route_Route{Route: action},
		RequestHeadersToAdd:  headersToAdd(mr.RequestMutation),
		ResponseHeadersToAdd: headersToAdd(mr.ResponseMutation),
		TypedPerFilterConfig: perFilter,
	}, nil
}

// DefaultRetryPolicy is what a route without retries gets, in the spirit of Istio's default: two retries of a
// request whose connection could not be established. That failure is the one retry that is safe whatever the
// method does, since the request never left the proxy.
func DefaultRetryPolicy() *routev3.RetryPolicy {
	return &routev3.RetryPolicy{RetryOn: model.DefaultRetryOn, NumRetries: wrapperspb.UInt32(2)}
}

// retryPolicy writes a MetaRoute's retries in Envoy's fields: retry_on the conditions as written (Envoy
// reads the aliases 5xx and gateway-error too), connect-failure when none is given; num_retries; the per-try
// timeout; the protocol statuses as retriable_status_codes, each the two's complement of the status where it
// is negative, since Envoy's field is unsigned. No retries block: the default policy; attempts 0: none.
func retryPolicy(rp *v1alpha1.RetryPolicy) (*routev3.RetryPolicy, error) {
	if rp == nil {
		return DefaultRetryPolicy(), nil
	}
	if rp.Attempts == 0 {
		return nil, nil
	}
	names, err := model.ParseRetryOn(rp.RetryOn)
	if err != nil {
		return nil, fmt.Errorf("retryOn: %w", err)
	}
	if len(names) == 0 {
		names = []string{model.DefaultRetryOn}
	}
	out := &routev3.RetryPolicy{RetryOn: strings.Join(names, ","), NumRetries: wrapperspb.UInt32(rp.Attempts)}
	if rp.PerTryTimeout != nil {
		out.PerTryTimeout = durationpb.New(rp.PerTryTimeout.Duration)
	}
	for _, code := range rp.RetriableStatusCodes {
		out.RetriableStatusCodes = append(out.RetriableStatusCodes, uint32(code))
	}
	return out, nil
}

// Names under which a route's typed_per_filter_config carries what Envoy's route has no field for.
const (
	// FaultFilter carries fault injection as Envoy's HTTP fault filter config.
	FaultFilter = "envoy.filters.http.fault"
	// ConcurrencyLimitFilter carries Meltemi's meltemi.route.v1alpha1.ConcurrencyLimit.
	ConcurrencyLimitFilter = "meltemi.concurrency_limit"
)

// FaultHTTPStatus is the HTTP status that stands for each fault error kind in Envoy's fault config, the
// status an HTTP proxy would answer with for the same failure. The proxy maps it back.
var FaultHTTPStatus = map[string]uint32{
	"route_not_found":     404,
	"no_healthy_upstream": 503,
	"bad_response":        502,
	"unspecified":         500,
	"over_limit":          429,
	"timeout":             504,
	"unauthorized":        403,
	"bad_request":         400,
}

// perFilterConfig carries a MetaRoute's fault and concurrency limit; nil when it has neither.
func perFilterConfig(mr *v1alpha1.MetaRoute) (map[string]*anypb.Any, error) {
	out := map[string]*anypb.Any{}
	if f := mr.Fault; f != nil && (f.Delay != nil || f.Abort != nil) {
		hf := &faultv3.HTTPFault{}
		if d := f.Delay; d != nil {
			hf.Delay = &commonfaultv3.FaultDelay{
				FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d.FixedDelay.Duration)},
				Percentage:         faultFraction(d.Percentage),
			}
		}
		if a := f.Abort; a != nil {
			status, ok := FaultHTTPStatus[a.ErrorKind]
			if !ok {
				return nil, fmt.Errorf("fault.abort.errorKind: %q cannot be injected", a.ErrorKind)
			}
			hf.Abort = &faultv3.FaultAbort{
				ErrorType:  &faultv3.FaultAbort_HttpStatus{HttpStatus: status},
				Percentage: faultFraction(a.Percentage),
			}
		}
		a, err := typed(hf)
		if err != nil {
			return nil, fmt.Errorf("fault: %w", err)
		}
		out[FaultFilter] = a
	}
	if cl := mr.ConcurrencyLimit; cl != nil {
		a, err := typed(&meltemiroutev1alpha1.ConcurrencyLimit{MaxRequests: cl.MaxRequests, PerMetadataKey: cl.PerKey})
		if err != nil {
			return nil, fmt.Errorf("concurrencyLimit: %w", err)
		}
		out[ConcurrencyLimitFilter] = a
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// faultFraction is a fault's share of requests in millionths, all of them when no percentage is given
// (written out, since Envoy would read an absent one as none).
func faultFraction(p *v1alpha1.Percent) *typev3.FractionalPercent {
	percent := 100.0
	if p != nil {
		percent = p.Value
	}
	return &typev3.FractionalPercent{Numerator: uint32(math.Round(percent * 10000)), Denominator: typev3.FractionalPercent_MILLION}
}

func destinationCluster(d *v1alpha1.Destination, port uint32) string {
	if d.Port != nil && d.Port.Number != 0 {
		port = d.Port.Number
	}
	return ClusterName(port, d.Subset, d.Host)
}

// hashKey is the consistent-hash key of a destination: that of its host's rule for its port and subset, merged
// as Istio merges traffic policies. Each destination's own rule counts, as in Istio;
// Aeraki reads the rule of the routed host for every destination.
func hashKey(s *model.Snapshot, d *v1alpha1.Destination, port uint32) string {
	svc := s.Service(d.Host)
	if svc == nil || (d.Subset != "" && svc.Subset(d.Subset) == nil) {
		return ""
	}
	if d.Port != nil && d.Port.Number != 0 {
		port = d.Port.Number
	}
	return svc.LoadBalancerFor(port, d.Subset).HashKey
}

// hashPolicy lists each key once, in the order the destinations name them.
func hashPolicy(keys []string) []*routev3.RouteAction_HashPolicy {
	var out []*routev3.RouteAction_HashPolicy
	seen := map[string]bool{}
	for _, k := range keys {
		if k == "" || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: k},
		}})
	}
	return out
}

// mirrorFraction is the share of requests mirrored, in millionths as Aeraki sends it: all of them when no
// percentage is given. Aeraki also reads an explicit 0 as 100; here 0 means none, as written.
func mirrorFraction(p *v1alpha1.Percent) *corev3.RuntimeFractionalPercent {
	percent := 100.0
	if p != nil {
		percent = p.Value
	}
	return &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
		// Rounded, not truncated: 0.29% is 2900 millionths, though 0.29*10000 is 2899.999...
		Numerator:   uint32(math.Round(percent * 10000)),
		Denominator: typev3.FractionalPercent_MILLION,
	}}
}

// headersToAdd carries a mutation: each key and value becomes a header to add, which Aeraki's data plane
// and Meltemi's proxy turn back into metadata to set.
func headersToAdd(kvs []v1alpha1.KeyValue) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, kv := range kvs {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: kv.Key, Value: kv.Value}})
	}
	return out
}

// headerMatchers turns a match into one header matcher per attribute, all of which must hold. Attributes
// are a map, so they are sorted by key for a stable output (Aeraki's order is random).
func headerMatchers(m *v1alpha1.MetaRouteMatch) ([]*routev3.HeaderMatcher, error) {
	if m == nil {
		return nil, nil
	}
	var out []*routev3.HeaderMatcher
	for _, key := range slices.Sorted(maps.Keys(m.Attributes)) {
		hm, err := headerMatcher(key, m.Attributes[key])
		if err != nil {
			return nil, fmt.Errorf("attributes.%s: %w", key, err)
		}
		out = append(out, hm)
	}
	return out, nil
}

// headerMatcher writes the non-deprecated string_match forms; regex "*" or "" means the key only has to be
// present (Aeraki's catch-all), and so does an empty prefix, which Envoy's validation refuses as a prefix.
func headerMatcher(key string, sm v1alpha1.StringMatch) (*routev3.HeaderMatcher, error) {
	hm := &routev3.HeaderMatcher{Name: key}
	pattern := &matcherv3.StringMatcher{}
	switch {
	case sm.Exact != nil:
		pattern.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: *sm.Exact}
	case sm.Prefix != nil && *sm.Prefix != "":
		pattern.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: *sm.Prefix}
	case sm.Regex != nil && *sm.Regex != "" && *sm.Regex != "*":
		pattern.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
			// Envoy has deprecated naming the engine, but data planes built on older Envoys require it.
			EngineType: &matcherv3.RegexMatcher_GoogleRe2{GoogleRe2: &matcherv3.RegexMatcher_GoogleRE2{}},
			Regex:      *sm.Regex,
		}}
	case sm.Prefix != nil, sm.Regex != nil:
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		return hm, nil
	default:
		return nil, errors.New("none of exact, prefix and regex is set")
	}
	hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: pattern}
	return hm, nil
}
