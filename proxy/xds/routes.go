package xds

import (
	"errors"
	"fmt"
	"regexp"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

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
	for i, r := range vhs[0].GetRoutes() {
		route, err := carrierRoute(r, rc.GetName(), n)
		if err != nil {
			return out, fmt.Errorf("virtual_hosts[0].routes[%d] %q: %w", i, r.GetName(), err)
		}
		out.Routes = append(out.Routes, route)
	}
	return out, nil
}

func carrierRoute(r *routev3.Route, rcName string, n *notes) (proxy.Route, error) {
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
	if len(ra.GetRequestMirrorPolicies()) > 0 {
		n.addf("route configuration %q: route %q: request mirroring is not supported yet; left out", rcName, r.GetName())
	}
	if ra.GetTimeout() != nil || ra.GetRetryPolicy() != nil {
		n.addf("route configuration %q: route %q: timeout and retry_policy are not supported yet; left out", rcName, r.GetName())
	}
	if len(r.GetRequestHeadersToRemove()) > 0 || len(r.GetResponseHeadersToRemove()) > 0 {
		return out, errors.New("request_headers_to_remove / response_headers_to_remove: not supported")
	}
	var err error
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
func translateNativeRoutes(rc *routev1alpha.RouteConfiguration, listener string, n *notes) (proxy.RouteConfig, error) {
	out := proxy.RouteConfig{Name: rc.GetName()}
	for i, r := range rc.GetRoutes() {
		route, err := nativeRoute(r, listener, n)
		if err != nil {
			return out, fmt.Errorf("routes[%d] %q: %w", i, r.GetName(), err)
		}
		out.Routes = append(out.Routes, route)
	}
	return out, nil
}

func nativeRoute(r *routev1alpha.Route, listener string, n *notes) (proxy.Route, error) {
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
	if len(ra.GetRequestMirrorPolicies()) > 0 {
		n.addf("listener %q: route %q: request mirroring is not supported yet; left out", listener, r.GetName())
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
