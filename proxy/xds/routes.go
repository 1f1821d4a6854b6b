package xds

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	meltemiroutev1alpha1 "github.com/meltemi-mesh/meltemi/api/meltemi/route/v1alpha1"
	routev1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/config/route/v1alpha"
	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/proxy"
)

// translateRouteConfiguration converts MetaRDS: an Envoy RouteConfiguration used as Aeraki's carrier, with
// one virtual host whose HTTP routes are the meta routes (headers are metadata matchers, headers to add are
// mutations).
func translateRouteConfiguration(rc *routev3.RouteConfiguration, n *notes) (proxy.RouteConfig, error) {
	out, err := carrierRoutes(rc, n)
	if err != nil {
		return proxy.RouteConfig{}, fmt.Errorf("route configuration %q: %w", rc.GetName(), err)
	}
	return out, nil
}

func carrierRoutes(rc *routev3.RouteConfiguration, n *notes) (proxy.RouteConfig, error) {
	out := proxy.RouteConfig{Name: rc.GetName()}
	if rc.GetName() == "" {
		return out, errors.New("name: required")
	}
	if rc.GetVhds() != nil {
		return out, errors.New("vhds: not supported; MetaRDS carries its virtual host inline")
	}
	vhs := rc.GetVirtualHosts()
	switch len(vhs) {
	case 0:
		return out, nil
	case 1:
	default:
		return out, fmt.Errorf("virtual_hosts: %d virtual hosts; MetaRDS carries exactly one", len(vhs))
	}
	if err := outerFilterConfigs(rc.GetTypedPerFilterConfig(), "typed_per_filter_config", rc.GetName(), n); err != nil {
		return out, err
	}
	vh := vhs[0]
	if err := outerFilterConfigs(vh.GetTypedPerFilterConfig(), "virtual_hosts[0].typed_per_filter_config", rc.GetName(), n); err != nil {
		return out, err
	}
	if vh.GetHedgePolicy() != nil {
		n.addf("route configuration %q: virtual_hosts[0].hedge_policy left out: the proxy does not hedge", rc.GetName())
	}
	for i, r := range vh.GetRoutes() {
		route, err := carrierRoute(r, vh.GetRetryPolicy(), rc.GetName(), n)
		if err != nil {
			return out, fmt.Errorf("virtual_hosts[0].routes[%d] %q: %w", i, r.GetName(), err)
		}
		out.Routes = append(out.Routes, route)
	}
	return out, nil
}

// outerFilterConfigs checks per-filter configs above the routes, where the carrier puts none: the proxy reads
// faults and concurrency limits per route only, so one of those here is refused rather than left to apply to
// no route; others are left out.
func outerFilterConfigs(m map[string]*anypb.Any, field, rcName string, n *notes) error {
	for _, name := range slices.Sorted(maps.Keys(m)) {
		switch name {
		case FaultFilter, ConcurrencyLimitFilter:
			return fmt.Errorf("%s[%q]: not supported here; set it per route", field, name)
		}
		n.addf("route configuration %q: %s[%q] left out", rcName, field, name)
	}
	return nil
}

func carrierRoute(r *routev3.Route, vhRetry *routev3.RetryPolicy, rcName string, n *notes) (proxy.Route, error) {
	out := proxy.Route{Name: r.GetName()}
	if m := r.GetMatch(); m != nil {
		// The path specifier (Aeraki writes prefix "/") means nothing to a meta protocol. The other match
		// fields would narrow the route in ways the proxy cannot check, so they are refused.
		switch {
		case m.GetRuntimeFraction() != nil:
			return out, errors.New("match.runtime_fraction: not supported")
		case len(m.GetQueryParameters()) > 0:
			return out, errors.New("match.query_parameters: not supported")
		case len(m.GetCookies()) > 0:
			return out, errors.New("match.cookies: not supported")
		case m.GetGrpc() != nil:
			return out, errors.New("match.grpc: not supported")
		case m.GetTlsContext() != nil:
			return out, errors.New("match.tls_context: not supported")
		case len(m.GetDynamicMetadata()) > 0:
			return out, errors.New("match.dynamic_metadata: not supported")
		case len(m.GetFilterState()) > 0:
			return out, errors.New("match.filter_state: not supported")
		}
		for i, h := range m.GetHeaders() {
			mm, err := metadataMatcher(h)
			if err != nil {
				return out, fmt.Errorf("match.headers[%d]: %w", i, err)
			}
			out.Match = append(out.Match, mm)
		}
	}
	action, ok := r.GetAction().(*routev3.Route_Route)
	if !ok || action.Route == nil {
		return out, fmt.Errorf("action: %s is not supported; a meta route needs route", actionName(r))
	}
	ra := action.Route
	switch cs := ra.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		out.Cluster = cs.Cluster
	case *routev3.RouteAction_WeightedClusters:
		wcs, err := weightedClusters(cs.WeightedClusters)
		if err != nil {
			return out, fmt.Errorf("route.weighted_clusters: %w", err)
		}
		out.WeightedClusters = wcs
	default:
		return out, errors.New("route: cluster or weighted_clusters is required")
	}
	if ra.GetMetadataMatch() != nil {
		return out, errors.New("route.metadata_match: not supported; send a subset cluster")
	}
	for i, hp := range ra.GetHashPolicy() {
		h := hp.GetHeader()
		if h == nil || h.GetHeaderName() == "" {
			return out, fmt.Errorf("route.hash_policy[%d]: only header.header_name is supported", i)
		}
		out.HashPolicy = append(out.HashPolicy, h.GetHeaderName())
	}
	where := fmt.Sprintf("route configuration %q: route %q", rcName, r.GetName())
	var err error
	for i, mp := range ra.GetRequestMirrorPolicies() {
		m, err := mirror(mp)
		if err != nil {
			return out, fmt.Errorf("route.request_mirror_policies[%d]: %w", i, err)
		}
		out.Mirrors = append(out.Mirrors, m)
	}
	// Envoy's default route timeout; 0 turns it off.
	out.Timeout = DefaultRouteTimeout
	if d := ra.GetTimeout(); d != nil {
		if out.Timeout, err = duration(d); err != nil {
			return out, fmt.Errorf("route.timeout: %w", err)
		}
	}
	if ra.GetIdleTimeout() != nil {
		n.addf("%s: route.idle_timeout left out: meta-protocol requests have no stream to be idle", where)
	}
	if ra.GetMaxStreamDuration() != nil || ra.GetMaxGrpcTimeout() != nil || ra.GetGrpcTimeoutOffset() != nil {
		n.addf("%s: route.max_stream_duration and gRPC timeouts left out; route.timeout bounds requests", where)
	}
	// A route's own retry policy replaces the virtual host's whole, as in Envoy.
	rp, field := ra.GetRetryPolicy(), "route.retry_policy"
	if rp == nil {
		rp, field = vhRetry, "virtual host retry_policy"
	}
	if rp != nil {
		if out.Retry, err = retryPolicy(rp, where+": "+field, n); err != nil {
			return out, fmt.Errorf("%s: %w", field, err)
		}
	}
	if ra.GetHedgePolicy() != nil {
		n.addf("%s: route.hedge_policy left out: the proxy does not hedge", where)
	}
	if err := routeFilterConfigs(r.GetTypedPerFilterConfig(), &out, where, n); err != nil {
		return out, err
	}
	if len(r.GetRequestHeadersToRemove()) > 0 || len(r.GetResponseHeadersToRemove()) > 0 {
		return out, errors.New("request_headers_to_remove / response_headers_to_remove: not supported")
	}
	if out.RequestMutation, err = headerMutation(r.GetRequestHeadersToAdd()); err != nil {
		return out, fmt.Errorf("request_headers_to_add%w", err)
	}
	if out.ResponseMutation, err = headerMutation(r.GetResponseHeadersToAdd()); err != nil {
		return out, fmt.Errorf("response_headers_to_add%w", err)
	}
	return out, nil
}

func actionName(r *routev3.Route) string {
	switch r.GetAction().(type) {
	case *routev3.Route_Redirect:
		return "redirect"
	case *routev3.Route_DirectResponse:
		return "direct_response"
	case *routev3.Route_FilterAction:
		return "filter_action"
	case *routev3.Route_NonForwardingAction:
		return "non_forwarding_action"
	case nil:
		return "no action"
	}
	return fmt.Sprintf("%T", r.GetAction())
}

func weightedClusters(wc *routev3.WeightedCluster) ([]proxy.WeightedCluster, error) {
	var out []proxy.WeightedCluster
	for i, c := range wc.GetClusters() {
		switch {
		case c.GetClusterHeader() != "":
			return nil, fmt.Errorf("clusters[%d].cluster_header: not supported", i)
		case c.GetName() == "":
			return nil, fmt.Errorf("clusters[%d].name: required", i)
		case c.GetMetadataMatch() != nil:
			return nil, fmt.Errorf("clusters[%d].metadata_match: not supported; send a subset cluster", i)
		}
		out = append(out, proxy.WeightedCluster{Name: c.GetName(), Weight: c.GetWeight().GetValue()})
	}
	var total uint64
	for _, c := range out {
		total += uint64(c.Weight)
	}
	if total == 0 {
		return nil, errors.New("clusters: weights add up to zero")
	}
	return out, nil
}

func headerMutation(hs []*corev3.HeaderValueOption) ([]codec.KeyValue, error) {
	var out []codec.KeyValue
	for i, h := range hs {
		hv := h.GetHeader()
		if hv.GetKey() == "" {
			return nil, fmt.Errorf("[%d].header.key: required", i)
		}
		v := hv.GetValue()
		if len(hv.GetRawValue()) > 0 {
			v = string(hv.GetRawValue())
		}
		out = append(out, codec.KeyValue{Key: hv.GetKey(), Value: v})
	}
	return out, nil
}

// translateNativeRoutes converts Aeraki's own RouteConfiguration, as it sits inline in a MetaProtocolProxy.
func translateNativeRoutes(rc *routev1alpha.RouteConfiguration) (proxy.RouteConfig, error) {
	out := proxy.RouteConfig{Name: rc.GetName()}
	for i, r := range rc.GetRoutes() {
		route, err := nativeRoute(r)
		if err != nil {
			return out, fmt.Errorf("routes[%d] %q: %w", i, r.GetName(), err)
		}
		out.Routes = append(out.Routes, route)
	}
	return out, nil
}

func nativeRoute(r *routev1alpha.Route) (proxy.Route, error) {
	out := proxy.Route{Name: r.GetName()}
	for i, h := range r.GetMatch().GetMetadata() {
		mm, err := metadataMatcher(h)
		if err != nil {
			return out, fmt.Errorf("match.metadata[%d]: %w", i, err)
		}
		out.Match = append(out.Match, mm)
	}
	ra := r.GetRoute()
	switch cs := ra.GetClusterSpecifier().(type) {
	case *routev1alpha.RouteAction_Cluster:
		out.Cluster = cs.Cluster
	case *routev1alpha.RouteAction_WeightedClusters:
		wcs, err := weightedClusters(cs.WeightedClusters)
		if err != nil {
			return out, fmt.Errorf("route.weighted_clusters: %w", err)
		}
		out.WeightedClusters = wcs
	default:
		return out, errors.New("route: cluster or weighted_clusters is required")
	}
	out.HashPolicy = ra.GetHashPolicy()
	// Aeraki's native form has no timeout or retries: its routes wait as long as the connection lasts.
	for i, mp := range ra.GetRequestMirrorPolicies() {
		m, err := mirror(mp)
		if err != nil {
			return out, fmt.Errorf("route.request_mirror_policies[%d]: %w", i, err)
		}
		out.Mirrors = append(out.Mirrors, m)
	}
	for _, kv := range r.GetRequestMutation() {
		out.RequestMutation = append(out.RequestMutation, codec.KeyValue{Key: kv.GetKey(), Value: kv.GetValue()})
	}
	for _, kv := range r.GetResponseMutation() {
		out.ResponseMutation = append(out.ResponseMutation, codec.KeyValue{Key: kv.GetKey(), Value: kv.GetValue()})
	}
	return out, nil
}

// metadataMatcher converts an Envoy header matcher, whose name is the metadata key, in every form Aeraki
// writes: the deprecated exact_match / prefix_match / safe_regex_match, string_match, and present_match.
// Suffix and contains become whole-value regexes, which the proxy has.
func metadataMatcher(h *routev3.HeaderMatcher) (proxy.MetadataMatcher, error) {
	m := proxy.MetadataMatcher{Key: h.GetName(), Invert: h.GetInvertMatch()}
	if m.Key == "" {
		return m, errors.New("name: required")
	}
	if h.GetTreatMissingHeaderAsEmpty() {
		return m, errors.New("treat_missing_header_as_empty: not supported")
	}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		// No value form: the key must be present, as in Envoy.
		m.Kind = proxy.MatchPresent
	case *routev3.HeaderMatcher_PresentMatch:
		m.Kind = proxy.MatchPresent
		if !s.PresentMatch {
			m.Invert = !m.Invert
		}
	case *routev3.HeaderMatcher_ExactMatch:
		m.Kind, m.Value = proxy.MatchExact, s.ExactMatch
	case *routev3.HeaderMatcher_PrefixMatch:
		m.Kind, m.Value = proxy.MatchPrefix, s.PrefixMatch
	case *routev3.HeaderMatcher_SuffixMatch:
		m.Kind, m.Value = proxy.MatchRegex, "(?s).*"+regexp.QuoteMeta(s.SuffixMatch)
	case *routev3.HeaderMatcher_ContainsMatch:
		m.Kind, m.Value = proxy.MatchRegex, "(?s).*"+regexp.QuoteMeta(s.ContainsMatch)+".*"
	case *routev3.HeaderMatcher_SafeRegexMatch:
		m.Kind, m.Value = proxy.MatchRegex, s.SafeRegexMatch.GetRegex()
		if err := checkRegex(m.Value); err != nil {
			return m, fmt.Errorf("safe_regex_match: %w", err)
		}
	case *routev3.HeaderMatcher_StringMatch:
		kind, value, err := stringMatcher(s.StringMatch)
		if err != nil {
			return m, fmt.Errorf("string_match: %w", err)
		}
		m.Kind, m.Value = kind, value
	case *routev3.HeaderMatcher_RangeMatch:
		return m, errors.New("range_match: not supported")
	default:
		return m, fmt.Errorf("%T: not supported", s)
	}
	return m, nil
}

func stringMatcher(sm *matcherv3.StringMatcher) (proxy.MatchKind, string, error) {
	fold := sm.GetIgnoreCase()
	var kind proxy.MatchKind
	var value string
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		if !fold {
			return proxy.MatchExact, p.Exact, nil
		}
		kind, value = proxy.MatchRegex, "(?is)"+regexp.QuoteMeta(p.Exact)
	case *matcherv3.StringMatcher_Prefix:
		if !fold {
			return proxy.MatchPrefix, p.Prefix, nil
		}
		kind, value = proxy.MatchRegex, "(?is)"+regexp.QuoteMeta(p.Prefix)+".*"
	case *matcherv3.StringMatcher_Suffix:
		kind, value = proxy.MatchRegex, flags(fold)+".*"+regexp.QuoteMeta(p.Suffix)
	case *matcherv3.StringMatcher_Contains:
		kind, value = proxy.MatchRegex, flags(fold)+".*"+regexp.QuoteMeta(p.Contains)+".*"
	case *matcherv3.StringMatcher_SafeRegex:
		// Envoy ignores ignore_case for regexes; so does this.
		kind, value = proxy.MatchRegex, p.SafeRegex.GetRegex()
		if err := checkRegex(value); err != nil {
			return "", "", fmt.Errorf("safe_regex: %w", err)
		}
	case *matcherv3.StringMatcher_Custom:
		return "", "", errors.New("custom: not supported")
	default:
		return "", "", errors.New("a match pattern is required")
	}
	return kind, value, nil
}

func flags(fold bool) string {
	if fold {
		return "(?is)"
	}
	return "(?s)"
}

// checkRegex compiles a regex the way the proxy will (anchored to the whole value), so a bad one is refused
// with the resource that carries it named.
func checkRegex(re string) error {
	if _, err := regexp.Compile("^(?:" + re + ")$"); err != nil {
		return fmt.Errorf("bad regex %q: %w", re, err)
	}
	return nil
}

// DefaultRouteTimeout bounds a carrier route's requests when its RouteAction sets no timeout: Envoy's default.
const DefaultRouteTimeout = 15 * time.Second

// mirrorPolicy is what Envoy's and Aeraki's request mirror policies share.
type mirrorPolicy interface {
	GetCluster() string
	GetRuntimeFraction() *corev3.RuntimeFractionalPercent
}

// mirror reads a mirror policy: the cluster, and runtime_fraction's default value as the share mirrored (all
// requests without one, as in Envoy; there is no runtime to look runtime_key up in).
func mirror(mp mirrorPolicy) (proxy.Mirror, error) {
	m := proxy.Mirror{Cluster: mp.GetCluster(), PerMillion: million}
	if h, ok := mp.(interface{ GetClusterHeader() string }); ok && h.GetClusterHeader() != "" {
		return m, errors.New("cluster_header: not supported; name the cluster")
	}
	if m.Cluster == "" {
		return m, errors.New("cluster: required")
	}
	if rf := mp.GetRuntimeFraction(); rf != nil {
		var err error
		if m.PerMillion, err = perMillion(rf.GetDefaultValue()); err != nil {
			return m, fmt.Errorf("runtime_fraction.default_value: %w", err)
		}
	}
	return m, nil
}

const million = 1_000_000

// perMillion converts a fractional percent to millionths; one over its denominator counts as all. A nil one
// is none, as Envoy reads it.
func perMillion(fp *typev3.FractionalPercent) (uint32, error) {
	n := uint64(fp.GetNumerator())
	switch fp.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		n *= 10000
	case typev3.FractionalPercent_TEN_THOUSAND:
		n *= 100
	case typev3.FractionalPercent_MILLION:
	default:
		return 0, fmt.Errorf("denominator: unknown %v", fp.GetDenominator())
	}
	return uint32(min(n, million)), nil
}

// retryConditions maps Envoy's retry_on names to the proxy's conditions. Envoy's aliases stand for several;
// reset-before-request is a reset before the request was sent, which is what connect-failure means here.
var retryConditions = map[string][]proxy.RetryOn{
	"connect-failure":        {proxy.RetryConnectFailure},
	"reset":                  {proxy.RetryReset},
	"timeout":                {proxy.RetryTimeout},
	"retriable-status-codes": {proxy.RetryRetriableStatusCodes},
	"failed":                 {proxy.RetryFailed},
	"5xx":                    {proxy.RetryConnectFailure, proxy.RetryReset, proxy.RetryTimeout, proxy.RetryFailed},
	"gateway-error":          {proxy.RetryConnectFailure, proxy.RetryReset, proxy.RetryTimeout},
	"reset-before-request":   {proxy.RetryConnectFailure},
}

// httpOnlyRetryConditions are Envoy's conditions about HTTP/2 streams, HTTP headers and gRPC statuses, which
// no meta-protocol reply has; Istio's default policy names some of them.
var httpOnlyRetryConditions = map[string]bool{
	"refused-stream": true, "retriable-4xx": true, "envoy-ratelimited": true, "retriable-headers": true,
	"http3-post-connect-failure": true, "cancelled": true, "deadline-exceeded": true, "internal": true,
	"resource-exhausted": true, "unavailable": true,
}

// retryPolicy reads an Envoy retry policy with Envoy's defaults (num_retries 1 when absent). nil when it
// retries nothing. Settings that only narrow which requests are retried are refused, since leaving them out
// would retry more; those that tune what the proxy does anyway are noted and left out.
func retryPolicy(rp *routev3.RetryPolicy, where string, n *notes) (*proxy.RetryPolicy, error) {
	out := &proxy.RetryPolicy{NumRetries: 1}
	if v := rp.GetNumRetries(); v != nil {
		out.NumRetries = v.GetValue()
	}
	seen := map[proxy.RetryOn]bool{}
	for _, part := range strings.Split(rp.GetRetryOn(), ",") {
		name := strings.TrimSpace(part)
		switch {
		case name == "":
		case httpOnlyRetryConditions[name]:
			n.addf("%s: retry_on %q left out: meta-protocol replies have no such condition", where, name)
		case retryConditions[name] == nil:
			return nil, fmt.Errorf("retry_on: unknown condition %q", name)
		default:
			for _, c := range retryConditions[name] {
				if !seen[c] {
					seen[c] = true
					out.RetryOn = append(out.RetryOn, c)
				}
			}
		}
	}
	var err error
	if d := rp.GetPerTryTimeout(); d != nil {
		if out.PerTryTimeout, err = duration(d); err != nil {
			return nil, fmt.Errorf("per_try_timeout: %w", err)
		}
	}
	for _, code := range rp.GetRetriableStatusCodes() {
		// Protocol statuses may be negative; the carrier writes those as their two's complement.
		out.RetriableStatusCodes = append(out.RetriableStatusCodes, int32(code))
	}
	if bo := rp.GetRetryBackOff(); bo != nil {
		if out.BackOffBase, err = duration(bo.GetBaseInterval()); err != nil {
			return nil, fmt.Errorf("retry_back_off.base_interval: %w", err)
		}
		if bo.GetMaxInterval() != nil {
			if out.BackOffMax, err = duration(bo.GetMaxInterval()); err != nil {
				return nil, fmt.Errorf("retry_back_off.max_interval: %w", err)
			}
		}
	}
	if len(rp.GetRetriableRequestHeaders()) > 0 {
		return nil, errors.New("retriable_request_headers: not supported (it limits retries to some requests)")
	}
	for _, f := range []struct {
		set  bool
		name string
	}{
		{rp.GetPerTryIdleTimeout() != nil, "per_try_idle_timeout"},
		{rp.GetRetryPriority() != nil, "retry_priority"},
		{len(rp.GetRetryHostPredicate()) > 0, "retry_host_predicate"},
		{len(rp.GetRetryOptionsPredicates()) > 0, "retry_options_predicates"},
		{rp.GetHostSelectionRetryMaxAttempts() != 0, "host_selection_retry_max_attempts"},
		{len(rp.GetRetriableHeaders()) > 0, "retriable_headers"},
		{rp.GetRateLimitedRetryBackOff() != nil, "rate_limited_retry_back_off"},
	} {
		if f.set {
			n.addf("%s: %s left out", where, f.name)
		}
	}
	if !slices.Contains(out.RetryOn, proxy.RetryRetriableStatusCodes) {
		out.RetriableStatusCodes = nil
	} else if len(out.RetriableStatusCodes) == 0 {
		// Nothing to match: drop the condition rather than hand the proxy an empty list.
		out.RetryOn = slices.DeleteFunc(out.RetryOn, func(c proxy.RetryOn) bool { return c == proxy.RetryRetriableStatusCodes })
	}
	if out.NumRetries == 0 || len(out.RetryOn) == 0 {
		return nil, nil
	}
	return out, nil
}

// Names under which a carrier route's typed_per_filter_config holds what Envoy's route has no field for.
const (
	// FaultFilter holds an envoy.extensions.filters.http.fault.v3.HTTPFault.
	FaultFilter = "envoy.filters.http.fault"
	// ConcurrencyLimitFilter holds a meltemi.route.v1alpha1.ConcurrencyLimit.
	ConcurrencyLimitFilter = "meltemi.concurrency_limit"
)

// routeFilterConfigs reads the fault and concurrency limit of a route; other names are left out, with a
// note. A config under a known name that does not decode is an error naming it.
func routeFilterConfigs(m map[string]*anypb.Any, out *proxy.Route, where string, n *notes) error {
	for _, name := range slices.Sorted(maps.Keys(m)) {
		field := fmt.Sprintf("typed_per_filter_config[%q]", name)
		switch name {
		case FaultFilter:
			hf := &faultv3.HTTPFault{}
			disabled, err := perFilterMessage(m[name], hf)
			if err != nil {
				return fmt.Errorf("%s: %w", field, err)
			}
			if disabled {
				continue
			}
			if out.Fault, err = fault(hf, where, n); err != nil {
				return fmt.Errorf("%s: %w", field, err)
			}
		case ConcurrencyLimitFilter:
			cl := &meltemiroutev1alpha1.ConcurrencyLimit{}
			disabled, err := perFilterMessage(m[name], cl)
			if err != nil {
				return fmt.Errorf("%s: %w", field, err)
			}
			if disabled {
				continue
			}
			if cl.GetMaxRequests() == 0 {
				return fmt.Errorf("%s: max_requests: must be at least 1", field)
			}
			out.ConcurrencyLimit = &proxy.ConcurrencyLimit{MaxRequests: cl.GetMaxRequests(), PerKey: cl.GetPerMetadataKey()}
		default:
			n.addf("%s: %s left out: not a filter of the proxy", where, field)
		}
	}
	return nil
}

// perFilterMessage decodes a per-filter config into m, whether it comes plain or wrapped in Envoy's
// FilterConfig; disabled reports a FilterConfig that turns the filter off for the route.
func perFilterMessage(a *anypb.Any, m proto.Message) (disabled bool, err error) {
	want := string(m.ProtoReflect().Descriptor().FullName())
	if typeName(a.GetTypeUrl()) == filterConfigName {
		fc := &routev3.FilterConfig{}
		if err := proto.Unmarshal(a.GetValue(), fc); err != nil {
			return false, fmt.Errorf("FilterConfig: %w", err)
		}
		if fc.GetDisabled() {
			return true, nil
		}
		a = fc.GetConfig()
	}
	if got := typeName(a.GetTypeUrl()); got != want {
		return false, fmt.Errorf("type %s, want %s", a.GetTypeUrl(), want)
	}
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return false, fmt.Errorf("%s: %w", want, err)
	}
	return false, nil
}

const filterConfigName = "envoy.config.route.v3.FilterConfig"

// abortKinds maps an abort's HTTP status back to the error kind it stands for: the inverse of what the
// controller writes, with 401 read as unauthorized too and any other status as unspecified.
var abortKinds = map[uint32]codec.ErrorKind{
	404: codec.RouteNotFound,
	503: codec.NoHealthyUpstream,
	502: codec.BadResponse,
	500: codec.Unspecified,
	429: codec.OverLimit,
	504: codec.Timeout,
	401: codec.Unauthorized,
	403: codec.Unauthorized,
	400: codec.BadRequest,
}

// fault reads Envoy's HTTP fault config: a fixed delay and an abort by HTTP status, each with its share.
// What would widen or change the fault (header matching, other clusters' or nodes' faults, a response rate
// limit, gRPC or header-chosen aborts) is refused; max_active_faults is left out.
func fault(hf *faultv3.HTTPFault, where string, n *notes) (*proxy.Fault, error) {
	switch {
	case len(hf.GetHeaders()) > 0:
		return nil, errors.New("headers: not supported (match on metadata in the route instead)")
	case hf.GetUpstreamCluster() != "":
		return nil, errors.New("upstream_cluster: not supported")
	case len(hf.GetDownstreamNodes()) > 0:
		return nil, errors.New("downstream_nodes: not supported")
	case hf.GetResponseRateLimit() != nil:
		return nil, errors.New("response_rate_limit: not supported")
	}
	if hf.GetMaxActiveFaults() != nil {
		n.addf("%s: fault max_active_faults left out", where)
	}
	out := &proxy.Fault{}
	var err error
	if d := hf.GetDelay(); d != nil {
		fixed, ok := d.GetFaultDelaySecifier().(*commonfaultv3.FaultDelay_FixedDelay)
		if !ok {
			return nil, errors.New("delay: only fixed_delay is supported")
		}
		if out.Delay, err = duration(fixed.FixedDelay); err != nil || out.Delay == 0 {
			return nil, fmt.Errorf("delay.fixed_delay: must be a duration above 0 (%v)", fixed.FixedDelay)
		}
		if out.DelayPerMillion, err = perMillion(d.GetPercentage()); err != nil {
			return nil, fmt.Errorf("delay.percentage: %w", err)
		}
	}
	if a := hf.GetAbort(); a != nil {
		status, ok := a.GetErrorType().(*faultv3.FaultAbort_HttpStatus)
		if !ok {
			return nil, errors.New("abort: only http_status is supported")
		}
		kind, ok := abortKinds[status.HttpStatus]
		if !ok {
			kind = codec.Unspecified
		}
		out.Abort = kind.String()
		if out.AbortPerMillion, err = perMillion(a.GetPercentage()); err != nil {
			return nil, fmt.Errorf("abort.percentage: %w", err)
		}
	}
	if out.Delay == 0 && out.Abort == "" {
		return nil, nil
	}
	return out, nil
}
