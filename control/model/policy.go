package model

import (
	"fmt"
	"strings"
	"time"

	networking "istio.io/api/networking/v1"
)

// TrafficPolicy returns the DestinationRule's traffic policy for one port and subset ("" for the whole
// service), merged as Istio merges it for the cluster of that port and subset: the top level's
// portLevelSettings for the port replace the top level's connectionPool, loadBalancer, outlierDetection and
// tls; then each of those the subset sets (and its retryBudget, tunnel, proxyProtocol) replaces the merged
// one whole; then the subset's own portLevelSettings for the port. nil when the host has no rule or the
// rule no policy for it. The result shares its parts with the rule and must not be modified.
func (s *Service) TrafficPolicy(port uint32, subset string) *networking.TrafficPolicy {
	if s.DestinationRule == nil {
		return nil
	}
	dr := s.DestinationRule.Spec
	merged := withPortLevel(dr.GetTrafficPolicy(), port)
	if subset == "" {
		return merged
	}
	for _, ss := range dr.GetSubsets() {
		if ss.GetName() == subset {
			return mergePolicy(merged, withPortLevel(ss.GetTrafficPolicy(), port))
		}
	}
	return merged
}

// withPortLevel applies a policy's portLevelSettings for port over its top-level fields.
func withPortLevel(tp *networking.TrafficPolicy, port uint32) *networking.TrafficPolicy {
	if tp == nil {
		return nil
	}
	out := &networking.TrafficPolicy{
		LoadBalancer:     tp.GetLoadBalancer(),
		ConnectionPool:   tp.GetConnectionPool(),
		OutlierDetection: tp.GetOutlierDetection(),
		Tls:              tp.GetTls(),
		Tunnel:           tp.GetTunnel(),
		ProxyProtocol:    tp.GetProxyProtocol(),
		RetryBudget:      tp.GetRetryBudget(),
	}
	for _, pl := range tp.GetPortLevelSettings() {
		if pl.GetPort().GetNumber() != port || port == 0 {
			continue
		}
		if pl.GetLoadBalancer() != nil {
			out.LoadBalancer = pl.GetLoadBalancer()
		}
		if pl.GetConnectionPool() != nil {
			out.ConnectionPool = pl.GetConnectionPool()
		}
		if pl.GetOutlierDetection() != nil {
			out.OutlierDetection = pl.GetOutlierDetection()
		}
		if pl.GetTls() != nil {
			out.Tls = pl.GetTls()
		}
	}
	return out
}

// mergePolicy lays the fields sub sets over base, each replacing base's whole.
func mergePolicy(base, sub *networking.TrafficPolicy) *networking.TrafficPolicy {
	switch {
	case sub == nil:
		return base
	case base == nil:
		return sub
	}
	out := &networking.TrafficPolicy{
		LoadBalancer:     base.GetLoadBalancer(),
		ConnectionPool:   base.GetConnectionPool(),
		OutlierDetection: base.GetOutlierDetection(),
		Tls:              base.GetTls(),
		Tunnel:           base.GetTunnel(),
		ProxyProtocol:    base.GetProxyProtocol(),
		RetryBudget:      base.GetRetryBudget(),
	}
	if sub.GetLoadBalancer() != nil {
		out.LoadBalancer = sub.GetLoadBalancer()
	}
	if sub.GetConnectionPool() != nil {
		out.ConnectionPool = sub.GetConnectionPool()
	}
	if sub.GetOutlierDetection() != nil {
		out.OutlierDetection = sub.GetOutlierDetection()
	}
	if sub.GetTls() != nil {
		out.Tls = sub.GetTls()
	}
	if sub.GetTunnel() != nil {
		out.Tunnel = sub.GetTunnel()
	}
	if sub.GetProxyProtocol() != nil {
		out.ProxyProtocol = sub.GetProxyProtocol()
	}
	if sub.GetRetryBudget() != nil {
		out.RetryBudget = sub.GetRetryBudget()
	}
	return out
}

// LoadBalancerFor returns the load balancing of one port and subset ("" for the whole service), from the
// merged traffic policy.
func (s *Service) LoadBalancerFor(port uint32, subset string) LoadBalancer {
	return loadBalancer(s.TrafficPolicy(port, subset).GetLoadBalancer())
}

// Retry conditions a MetaRoute's retries.retryOn may name: the proxy's own, and Envoy's aliases for sets of
// them.
var (
	// RetryOnNames are the conditions the proxy retries on.
	RetryOnNames = []string{"connect-failure", "reset", "timeout", "retriable-status-codes", "failed"}
	// RetryOnAliases are Envoy's names for sets of RetryOnNames.
	RetryOnAliases = map[string][]string{
		"5xx":           {"connect-failure", "reset", "timeout", "failed"},
		"gateway-error": {"connect-failure", "reset", "timeout"},
	}
)

// DefaultRetryOn is what a route retries on when its retries set no retryOn: the one failure after which the
// request certainly never reached the server, so retrying is safe whatever the method does.
const DefaultRetryOn = "connect-failure"

// ParseRetryOn splits a comma-separated retryOn into its names, in the order written, each once, spaces
// around them trimmed; aliases stay as written. An empty string gives nothing.
func ParseRetryOn(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []string
	seen := map[string]bool{}
	for i, part := range strings.Split(s, ",") {
		name := strings.TrimSpace(part)
		switch {
		case name == "":
			return nil, fmt.Errorf("entry %d is empty", i+1)
		case !isRetryOnName(name):
			return nil, fmt.Errorf("%q is not a retry condition (%s, or %s)", name,
				strings.Join(RetryOnNames, ", "), "5xx, gateway-error")
		case seen[name]:
			continue
		}
		seen[name] = true
		out = append(out, name)
	}
	return out, nil
}

func isRetryOnName(name string) bool {
	if _, ok := RetryOnAliases[name]; ok {
		return true
	}
	for _, n := range RetryOnNames {
		if n == name {
			return true
		}
	}
	return false
}

// ExpandRetryOn replaces aliases by the names they stand for, each name once, in the order first met.
func ExpandRetryOn(names []string) []string {
	var out []string
	seen := map[string]bool{}
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, n := range names {
		if alias, ok := RetryOnAliases[n]; ok {
			for _, a := range alias {
				add(a)
			}
			continue
		}
		add(n)
	}
	return out
}

// FaultErrorKinds are the errors a MetaRoute's fault.abort.errorKind may name: the codec error kinds that
// have an HTTP status of their own in the carrier, so that they survive the trip to the proxy.
// cluster_not_found is not one: it shares 503 with no_healthy_upstream.
var FaultErrorKinds = []string{"route_not_found", "no_healthy_upstream", "bad_response", "unspecified",
	"over_limit", "timeout", "unauthorized", "bad_request"}

// DefaultRouteTimeout is what the proxy bounds a route's requests by when the route sets no timeout
// (Envoy's default); validation compares per-try timeouts against it.
const DefaultRouteTimeout = 15 * time.Second
