package model

import (
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	dubbov1alpha1 "github.com/meltemi-mesh/meltemi/api/dubbo/v1alpha1"
	"github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	redisv1alpha1 "github.com/meltemi-mesh/meltemi/api/redis/v1alpha1"
)

// Validate checks one object on its own, as an admission webhook would: what it means together with
// other objects (unknown protocols, clashing addresses, missing hosts) is Build's business. An object
// with an error must not be served; a source keeps its last good version instead.
func Validate(obj Object) []Problem {
	r := &reporter{meta: obj.Metadata()}
	switch v := obj.(type) {
	case *ServiceEntry:
		validateServiceEntry(v.Spec, r)
	case *DestinationRule:
		validateDestinationRule(v.Spec, r)
	case *WorkloadEntry:
		validateWorkloadEntry(v.Spec, r)
	case *MetaRouter:
		validateMetaRouter(v.Spec, r)
	case *ApplicationProtocol:
		validateApplicationProtocol(v.Spec, r)
	case *RedisService:
		validateRedisService(v.Spec, r)
	case *RedisDestination:
		validateRedisDestination(v.Spec, r)
	case *DubboAuthorizationPolicy:
		validateDubboAuthorizationPolicy(v.Spec, r)
	}
	return r.out
}

func validateServiceEntry(se *networking.ServiceEntry, r *reporter) {
	if len(se.GetHosts()) == 0 {
		r.errorf("spec.hosts", "at least one host is required")
	}
	seen := map[string]bool{}
	for i, h := range se.GetHosts() {
		f := fmt.Sprintf("spec.hosts[%d]", i)
		switch {
		case h == "":
			r.errorf(f, "host must not be empty")
		case seen[h]:
			r.errorf(f, "host %q is listed twice", h)
		}
		seen[h] = true
	}
	for i, a := range se.GetAddresses() {
		if _, err := netip.ParseAddr(a); err != nil {
			if _, err := netip.ParsePrefix(a); err != nil {
				r.errorf(fmt.Sprintf("spec.addresses[%d]", i), "%q is neither an IP address nor a CIDR block", a)
			}
		}
	}
	names, numbers := map[string]bool{}, map[uint32]bool{}
	for i, p := range se.GetPorts() {
		f := fmt.Sprintf("spec.ports[%d]", i)
		if p.GetNumber() == 0 || p.GetNumber() > 65535 {
			r.errorf(f+".number", "port number %d is not in 1-65535", p.GetNumber())
		} else if numbers[p.GetNumber()] {
			r.errorf(f+".number", "port %d is listed twice", p.GetNumber())
		}
		numbers[p.GetNumber()] = true
		if p.GetName() == "" {
			r.errorf(f+".name", "port name is required")
		} else if names[p.GetName()] {
			r.errorf(f+".name", "port name %q is used twice", p.GetName())
		}
		names[p.GetName()] = true
		if p.GetTargetPort() > 65535 {
			r.errorf(f+".targetPort", "target port %d is not in 1-65535", p.GetTargetPort())
		}
	}
	checkExportTo(se.GetExportTo(), true, r)
	res := se.GetResolution()
	if len(se.GetEndpoints()) > 0 && se.GetWorkloadSelector() != nil {
		r.errorf("spec.workloadSelector", "endpoints and workloadSelector are mutually exclusive")
	}
	if res == networking.ServiceEntry_NONE && len(se.GetEndpoints()) > 0 {
		r.errorf("spec.endpoints", "endpoints need resolution STATIC or DNS; resolution is NONE")
	}
	for i, ep := range se.GetEndpoints() {
		f := fmt.Sprintf("spec.endpoints[%d]", i)
		validateWorkload(ep, f, r)
		if _, err := netip.ParseAddr(ep.GetAddress()); err != nil && res == networking.ServiceEntry_STATIC &&
			ep.GetAddress() != "" && !strings.HasPrefix(ep.GetAddress(), "unix://") {
			r.errorf(f+".address", "%q is not an IP address, as resolution STATIC requires", ep.GetAddress())
		}
		for _, name := range slices.Sorted(maps.Keys(ep.GetPorts())) {
			if !names[name] {
				r.warnf(f+".ports."+name, "the ServiceEntry has no port named %q; ignored", name)
			}
		}
	}
}

// validateWorkload checks what inline endpoints and WorkloadEntries share.
func validateWorkload(we *networking.WorkloadEntry, field string, r *reporter) {
	if we.GetAddress() == "" {
		r.errorf(field+".address", "address is required")
	}
	for _, name := range slices.Sorted(maps.Keys(we.GetPorts())) {
		if port := we.GetPorts()[name]; port == 0 || port > 65535 {
			r.errorf(field+".ports."+name, "port %d is not in 1-65535", port)
		}
	}
}

func validateWorkloadEntry(we *networking.WorkloadEntry, r *reporter) {
	validateWorkload(we, "spec", r)
}

func validateDestinationRule(dr *networking.DestinationRule, r *reporter) {
	if dr.GetHost() == "" {
		r.errorf("spec.host", "host is required")
	}
	checkTrafficPolicy(dr.GetTrafficPolicy(), "spec.trafficPolicy", r)
	checkExportTo(dr.GetExportTo(), false, r)
	seen := map[string]bool{}
	for i, s := range dr.GetSubsets() {
		f := fmt.Sprintf("spec.subsets[%d]", i)
		switch {
		case s.GetName() == "":
			r.errorf(f+".name", "subset name is required")
		case seen[s.GetName()]:
			r.errorf(f+".name", "subset %q is defined twice", s.GetName())
		}
		seen[s.GetName()] = true
		checkTrafficPolicy(s.GetTrafficPolicy(), f+".trafficPolicy", r)
	}
}

// checkTrafficPolicy checks what a meta-protocol proxy reads of a traffic policy and warns about what it
// does not, which is ignored.
func checkTrafficPolicy(tp *networking.TrafficPolicy, field string, r *reporter) {
	if tp == nil {
		return
	}
	checkLoadBalancer(tp.GetLoadBalancer(), field+".loadBalancer", r)
	checkConnectionPool(tp.GetConnectionPool(), field+".connectionPool", r)
	checkOutlierDetection(tp.GetOutlierDetection(), field+".outlierDetection", r)
	if rb := tp.GetRetryBudget(); rb != nil {
		f := field + ".retryBudget"
		if p := rb.GetPercent(); p != nil && (p.GetValue() < 0 || p.GetValue() > 100) {
			r.errorf(f+".percent", "%v is not a percentage in 0-100", p.GetValue())
		}
		if rb.GetBudgetInterval() != nil {
			checkProtoDuration(rb.GetBudgetInterval(), f+".budgetInterval", r)
			r.warnf(f+".budgetInterval", "not used: the proxy's budget counts the requests in flight")
		}
	}
	if tp.GetTls() != nil {
		r.warnf(field+".tls", "not used yet: meta-protocol proxies speak plaintext upstream")
	}
	if tp.GetTunnel() != nil {
		r.warnf(field+".tunnel", "not used for meta-protocol services")
	}
	if tp.GetProxyProtocol() != nil {
		r.warnf(field+".proxyProtocol", "not used for meta-protocol services")
	}
	ports := map[uint32]bool{}
	for i, pl := range tp.GetPortLevelSettings() {
		f := fmt.Sprintf("%s.portLevelSettings[%d]", field, i)
		switch n := pl.GetPort().GetNumber(); {
		case n == 0 || n > 65535:
			r.errorf(f+".port.number", "port number %d is not in 1-65535", n)
		case ports[n]:
			r.errorf(f+".port.number", "port %d has settings already", n)
		}
		ports[pl.GetPort().GetNumber()] = true
		checkLoadBalancer(pl.GetLoadBalancer(), f+".loadBalancer", r)
		checkConnectionPool(pl.GetConnectionPool(), f+".connectionPool", r)
		checkOutlierDetection(pl.GetOutlierDetection(), f+".outlierDetection", r)
		if pl.GetTls() != nil {
			r.warnf(f+".tls", "not used yet: meta-protocol proxies speak plaintext upstream")
		}
	}
}

func checkConnectionPool(cp *networking.ConnectionPoolSettings, field string, r *reporter) {
	if tcp := cp.GetTcp(); tcp != nil {
		f := field + ".tcp"
		if tcp.GetMaxConnections() < 0 {
			r.errorf(f+".maxConnections", "must not be negative")
		}
		checkProtoDuration(tcp.GetConnectTimeout(), f+".connectTimeout", r)
		checkProtoDuration(tcp.GetIdleTimeout(), f+".idleTimeout", r)
		if tcp.GetTcpKeepalive() != nil {
			r.warnf(f+".tcpKeepalive", "not used yet by meta-protocol proxies")
		}
		if tcp.GetMaxConnectionDuration() != nil {
			r.warnf(f+".maxConnectionDuration", "not used yet by meta-protocol proxies")
		}
	}
	if h := cp.GetHttp(); h != nil {
		f := field + ".http"
		for name, v := range map[string]int32{"http1MaxPendingRequests": h.GetHttp1MaxPendingRequests(),
			"http2MaxRequests": h.GetHttp2MaxRequests(), "maxRequestsPerConnection": h.GetMaxRequestsPerConnection(),
			"maxRetries": h.GetMaxRetries()} {
			if v < 0 {
				r.errorf(f+"."+name, "must not be negative")
			}
		}
		checkProtoDuration(h.GetIdleTimeout(), f+".idleTimeout", r)
		if h.GetH2UpgradePolicy() != networking.ConnectionPoolSettings_HTTPSettings_DEFAULT {
			r.warnf(f+".h2UpgradePolicy", "not used for meta-protocol services")
		}
		if h.GetUseClientProtocol() {
			r.warnf(f+".useClientProtocol", "not used for meta-protocol services")
		}
		if h.GetMaxConcurrentStreams() != 0 {
			r.warnf(f+".maxConcurrentStreams", "not used for meta-protocol services; http2MaxRequests caps requests in flight")
		}
		if h.GetHttp2KeepAlive() != nil {
			r.warnf(f+".http2KeepAlive", "not used for meta-protocol services")
		}
	}
}

func checkOutlierDetection(od *networking.OutlierDetection, field string, r *reporter) {
	if od == nil {
		return
	}
	if od.GetConsecutiveErrors() != 0 {
		r.warnf(field+".consecutiveErrors", "deprecated and ignored, as by Istio; use consecutive5xxErrors or consecutiveGatewayErrors")
	}
	if od.GetConsecutiveLocalOriginFailures() != nil && !od.GetSplitExternalLocalOriginErrors() {
		r.warnf(field+".consecutiveLocalOriginFailures", "ignored unless splitExternalLocalOriginErrors is true")
	}
	for _, d := range []struct {
		name string
		v    *durationpb.Duration
	}{{"interval", od.GetInterval()}, {"baseEjectionTime", od.GetBaseEjectionTime()}} {
		if d.v == nil {
			continue
		}
		checkProtoDuration(d.v, field+"."+d.name, r)
		if d.v.AsDuration() < time.Millisecond {
			r.errorf(field+"."+d.name, "must be at least 1ms")
		}
	}
	if p := od.GetMaxEjectionPercent(); p < 0 || p > 100 {
		r.errorf(field+".maxEjectionPercent", "%d is not a percentage in 0-100", p)
	}
	if p := od.GetMinHealthPercent(); p < 0 || p > 100 {
		r.errorf(field+".minHealthPercent", "%d is not a percentage in 0-100", p)
	}
	if len(od.GetOutlierDetectionHttpErrorCodes()) > 0 {
		r.warnf(field+".outlierDetectionHttpErrorCodes", "not used for meta-protocol services: a failure is what the protocol marks as one")
	}
}

func checkProtoDuration(d *durationpb.Duration, field string, r *reporter) {
	if d == nil {
		return
	}
	if err := d.CheckValid(); err != nil {
		r.errorf(field, "not a valid duration: %v", err)
	} else if d.AsDuration() < 0 {
		r.errorf(field, "must not be negative")
	}
}

// checkLoadBalancer warns about settings a meta-protocol proxy cannot honour, which are ignored.
func checkLoadBalancer(lb *networking.LoadBalancerSettings, field string, r *reporter) {
	if lb == nil {
		return
	}
	if lb.GetSimple() == networking.LoadBalancerSettings_PASSTHROUGH {
		r.warnf(field+".simple", "PASSTHROUGH is not supported for meta-protocol services; round robin is used")
	}
	ch := lb.GetConsistentHash()
	if ch != nil && ch.GetHttpHeaderName() == "" {
		r.warnf(field+".consistentHash", "only httpHeaderName (read as a request metadata key) is supported; "+
			"consistent hashing is not used")
	}
	if mg := ch.GetMaglev(); mg != nil && mg.GetTableSize() != 0 && !isPrime(mg.GetTableSize()) {
		r.errorf(field+".consistentHash.maglev.tableSize", "%d is not a prime number, as maglev requires", mg.GetTableSize())
	}
	if ll := lb.GetLocalityLbSetting(); ll != nil {
		f := field + ".localityLbSetting"
		if len(ll.GetDistribute()) > 0 {
			r.warnf(f+".distribute", "not supported for meta-protocol services; locality failover is used")
		}
		if len(ll.GetFailoverPriority()) > 0 {
			r.warnf(f+".failoverPriority", "not supported for meta-protocol services; locality failover is used")
		}
		for i, fo := range ll.GetFailover() {
			if fo.GetFrom() == "" || fo.GetTo() == "" {
				r.errorf(fmt.Sprintf("%s.failover[%d]", f, i), "from and to are both required")
			} else if fo.GetFrom() == fo.GetTo() {
				r.errorf(fmt.Sprintf("%s.failover[%d]", f, i), "from and to are the same region %q", fo.GetFrom())
			}
		}
	}
	if lb.GetZoneAwareLbSetting() != nil {
		r.warnf(field+".zoneAwareLbSetting", "not supported for meta-protocol services")
	}
	if lb.GetWarmupDurationSecs() != nil {
		r.warnf(field+".warmupDurationSecs", "not supported for meta-protocol services")
	}
	if lb.GetWarmup() != nil {
		r.warnf(field+".warmup", "not supported for meta-protocol services")
	}
}

// isPrime reports whether n is prime, by trial division: maglev tables are at most a few million entries.
func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

func validateMetaRouter(spec *v1alpha1.MetaRouterSpec, r *reporter) {
	if len(spec.Hosts) != 1 {
		r.errorf("spec.hosts", "exactly one host is required, found %d", len(spec.Hosts))
	} else if spec.Hosts[0] == "" {
		r.errorf("spec.hosts[0]", "host must not be empty")
	}
	if len(spec.Routes) == 0 && spec.LocalRateLimit == nil && spec.GlobalRateLimit == nil {
		r.errorf("spec", "at least one of routes, localRateLimit and globalRateLimit is required")
	}
	checkExportTo(spec.ExportTo, false, r)
	for i, route := range spec.Routes {
		f := fmt.Sprintf("spec.routes[%d]", i)
		if route.Match != nil {
			checkMatch(route.Match, f+".match", r)
		}
		if len(route.Route) == 0 {
			r.errorf(f+".route", "at least one destination is required")
		}
		var total uint64
		for j, d := range route.Route {
			checkDestination(&d.Destination, fmt.Sprintf("%s.route[%d].destination", f, j), r)
			total += uint64(d.Weight)
		}
		if len(route.Route) > 1 && total == 0 {
			r.errorf(f+".route", "weights are all zero")
		}
		if route.Mirror != nil {
			checkDestination(route.Mirror, f+".mirror", r)
		}
		if p := route.MirrorPercentage; p != nil && (p.Value < 0 || p.Value > 100) {
			r.errorf(f+".mirrorPercentage.value", "%v is not a percentage in 0-100", p.Value)
		}
		for j, kv := range route.RequestMutation {
			if kv.Key == "" {
				r.errorf(fmt.Sprintf("%s.requestMutation[%d].key", f, j), "key is required")
			}
		}
		for j, kv := range route.ResponseMutation {
			if kv.Key == "" {
				r.errorf(fmt.Sprintf("%s.responseMutation[%d].key", f, j), "key is required")
			}
		}
		checkRoutePolicy(&route, f, r)
	}
	if l := spec.LocalRateLimit; l != nil {
		if l.TokenBucket == nil && len(l.Conditions) == 0 {
			r.warnf("spec.localRateLimit", "neither tokenBucket nor conditions: nothing is limited")
		}
		if l.TokenBucket != nil {
			checkTokenBucket(l.TokenBucket, "spec.localRateLimit.tokenBucket", r)
		}
		for i := range l.Conditions {
			f := fmt.Sprintf("spec.localRateLimit.conditions[%d]", i)
			checkMatch(&l.Conditions[i].Match, f+".match", r)
			checkTokenBucket(&l.Conditions[i].TokenBucket, f+".tokenBucket", r)
		}
	}
	if g := spec.GlobalRateLimit; g != nil {
		const f = "spec.globalRateLimit"
		checkMatch(&g.Match, f+".match", r)
		if g.Domain == "" {
			r.errorf(f+".domain", "domain is required")
		}
		if g.RateLimitService == "" {
			r.errorf(f+".rateLimitService", "the rate limit service's cluster name is required")
		}
		if g.RequestTimeout != nil && g.RequestTimeout.Duration < 0 {
			r.errorf(f+".requestTimeout", "must not be negative")
		}
		if len(g.Descriptors) == 0 {
			r.errorf(f+".descriptors", "at least one descriptor is required")
		}
		for i, d := range g.Descriptors {
			if d.Property == "" {
				r.errorf(fmt.Sprintf("%s.descriptors[%d].property", f, i), "property is required")
			}
			if d.DescriptorKey == "" {
				r.errorf(fmt.Sprintf("%s.descriptors[%d].descriptorKey", f, i), "descriptorKey is required")
			}
		}
	}
}

// checkExportTo applies Istio's rules to an exportTo list: each entry is "." (the object's own
// namespace), "*" (every namespace) or a namespace name, and for a ServiceEntry also "~" (no
// namespace); none twice ("." and the own namespace count as one); "*" and "~" only alone.
func checkExportTo(exportTo []string, serviceEntry bool, r *reporter) {
	seen := map[string]bool{}
	for i, e := range exportTo {
		f := fmt.Sprintf("spec.exportTo[%d]", i)
		ns := e
		if e == "." {
			ns = r.meta.Namespace
		}
		switch {
		case seen[ns] && ns != e:
			r.errorf(f, "\".\" is namespace %q, which is listed already", ns)
		case seen[ns]:
			r.errorf(f, "%q is listed twice", e)
		case e == "*", e == ".", e == "~" && serviceEntry:
		case e == "~":
			r.errorf(f, "\"~\" (no namespace) is for ServiceEntries only")
		default:
			if errs := validation.IsDNS1123Label(e); len(errs) > 0 {
				r.errorf(f, "%q is neither \".\", \"*\" nor a namespace name: %s", e, strings.Join(errs, "; "))
			}
		}
		seen[ns] = true
	}
	if len(exportTo) > 1 {
		if seen["*"] {
			r.errorf("spec.exportTo", "\"*\" exports to every namespace and cannot be listed with other entries")
		}
		if seen["~"] && serviceEntry {
			r.errorf("spec.exportTo", "\"~\" exports to no namespace and cannot be listed with other entries")
		}
	}
}

func checkDestination(d *v1alpha1.Destination, field string, r *reporter) {
	if d.Host == "" {
		r.errorf(field+".host", "host is required")
	}
	if d.Port != nil && (d.Port.Number == 0 || d.Port.Number > 65535) {
		r.errorf(field+".port.number", "port number %d is not in 1-65535", d.Port.Number)
	}
}

func checkMatch(m *v1alpha1.MetaRouteMatch, field string, r *reporter) {
	for _, key := range slices.Sorted(maps.Keys(m.Attributes)) {
		sm := m.Attributes[key]
		f := field + ".attributes." + key
		n := 0
		for _, set := range []bool{sm.Exact != nil, sm.Prefix != nil, sm.Regex != nil} {
			if set {
				n++
			}
		}
		switch {
		case n == 0:
			r.errorf(f, "one of exact, prefix and regex is required")
		case n > 1:
			r.errorf(f, "only one of exact, prefix and regex may be set")
		case sm.Regex != nil && *sm.Regex != "" && *sm.Regex != "*":
			// Aeraki reads "" and "*" as "present"; anything else is an RE2 expression.
			if _, err := regexp.Compile(*sm.Regex); err != nil {
				r.errorf(f+".regex", "not an RE2 expression: %v", err)
			}
		}
	}
}

func checkTokenBucket(tb *v1alpha1.TokenBucket, field string, r *reporter) {
	if tb.MaxTokens == 0 {
		r.errorf(field+".maxTokens", "must be greater than 0")
	}
	if tb.TokensPerFill != nil && *tb.TokensPerFill == 0 {
		r.errorf(field+".tokensPerFill", "must be greater than 0")
	}
	if tb.FillInterval.Duration <= 0 {
		r.errorf(field+".fillInterval", "must be greater than 0")
	}
}

func validateApplicationProtocol(spec *v1alpha1.ApplicationProtocolSpec, r *reporter) {
	switch {
	case spec.Protocol == "":
		r.errorf("spec.protocol", "protocol is required")
	case strings.ContainsAny(spec.Protocol, "- \t"):
		// Port names are split on '-' to find the protocol, so a name with one could never be used.
		r.errorf("spec.protocol", "%q must not contain '-' or spaces", spec.Protocol)
	}
	if spec.Codec == "" {
		r.errorf("spec.codec", "codec is required")
	}
}

// checkRoutePolicy checks Meltemi's additions to a MetaRoute: timeout, retries, fault, concurrencyLimit.
func checkRoutePolicy(route *v1alpha1.MetaRoute, field string, r *reporter) {
	timeout := DefaultRouteTimeout
	if route.Timeout != nil {
		timeout = route.Timeout.Duration
		if timeout < 0 {
			r.errorf(field+".timeout", "must not be negative; 0s means no limit")
		}
	}
	if rp := route.Retries; rp != nil {
		f := field + ".retries"
		names, err := ParseRetryOn(rp.RetryOn)
		if err != nil {
			r.errorf(f+".retryOn", "%v", err)
		}
		if rp.Attempts == 0 {
			if rp.PerTryTimeout != nil || rp.RetryOn != "" || len(rp.RetriableStatusCodes) > 0 {
				r.warnf(f+".attempts", "0 turns retries off; perTryTimeout, retryOn and retriableStatusCodes have no effect")
			}
		} else {
			codes := slices.Contains(names, "retriable-status-codes")
			switch {
			case codes && len(rp.RetriableStatusCodes) == 0:
				r.warnf(f+".retriableStatusCodes", "retryOn names retriable-status-codes but no status is listed: no reply is retried for its status")
			case !codes && len(rp.RetriableStatusCodes) > 0:
				r.warnf(f+".retriableStatusCodes", "ignored: retryOn does not name retriable-status-codes")
			}
		}
		if pt := rp.PerTryTimeout; pt != nil {
			switch {
			case pt.Duration <= 0:
				r.errorf(f+".perTryTimeout", "must be greater than 0; leave it out for tries bounded by the route's timeout only")
			case timeout > 0 && pt.Duration > timeout:
				what := "the route's timeout"
				if route.Timeout == nil {
					what = "the default route timeout"
				}
				r.warnf(f+".perTryTimeout", "%v is longer than %s (%v), which ends the request first", pt.Duration, what, timeout)
			}
		}
	}
	if fi := route.Fault; fi != nil {
		f := field + ".fault"
		if fi.Delay == nil && fi.Abort == nil {
			r.warnf(f, "neither delay nor abort: nothing is injected")
		}
		if d := fi.Delay; d != nil {
			if d.FixedDelay.Duration <= 0 {
				r.errorf(f+".delay.fixedDelay", "must be greater than 0")
			}
			checkPercent(d.Percentage, f+".delay.percentage.value", r)
		}
		if a := fi.Abort; a != nil {
			switch {
			case a.ErrorKind == "":
				r.errorf(f+".abort.errorKind", "required: one of %s", strings.Join(FaultErrorKinds, ", "))
			case a.ErrorKind == "cluster_not_found":
				r.errorf(f+".abort.errorKind", "cluster_not_found cannot be injected (its carrier status is no_healthy_upstream's); use no_healthy_upstream")
			case !slices.Contains(FaultErrorKinds, a.ErrorKind):
				r.errorf(f+".abort.errorKind", "unknown error kind %q; one of %s", a.ErrorKind, strings.Join(FaultErrorKinds, ", "))
			}
			checkPercent(a.Percentage, f+".abort.percentage.value", r)
		}
	}
	if cl := route.ConcurrencyLimit; cl != nil && cl.MaxRequests == 0 {
		r.errorf(field+".concurrencyLimit.maxRequests", "must be at least 1")
	}
}

func checkPercent(p *v1alpha1.Percent, field string, r *reporter) {
	if p != nil && (p.Value < 0 || p.Value > 100) {
		r.errorf(field, "%v is not a percentage in 0-100", p.Value)
	}
}

// The Redis and Dubbo kinds are checked as their CRDs' schemas check them, so that a manifest read
// from a folder is held to what the API server would have accepted.

func validateRedisService(spec *redisv1alpha1.RedisServiceSpec, r *reporter) {
	if len(spec.Host) == 0 {
		r.errorf("spec.host", "at least one host is required")
	}
	for i, h := range spec.Host {
		if h == "" {
			r.errorf(fmt.Sprintf("spec.host[%d]", i), "host must not be empty")
		}
	}
	if st := spec.Settings; st != nil {
		checkEnum(string(st.ReadPolicy), "spec.settings.readPolicy", r, redisv1alpha1.ReadMaster,
			redisv1alpha1.ReadPreferMaster, redisv1alpha1.ReadReplica, redisv1alpha1.ReadPreferReplica, redisv1alpha1.ReadAny)
		checkDuration(st.OpTimeout, "spec.settings.opTimeout", r)
		checkDuration(st.BufferFlushTimeout, "spec.settings.bufferFlushTimeout", r)
		checkRedisAuth(st.Auth, "spec.settings.auth", r)
	}
	for i, route := range spec.Redis {
		f := fmt.Sprintf("spec.redis[%d]", i)
		checkRedisDestination(route.Route, f+".route", r)
		for j, m := range route.Mirror {
			mf := fmt.Sprintf("%s.mirror[%d]", f, j)
			checkRedisDestination(m.Route, mf+".route", r)
			checkRedisPercent(m.Percentage, mf+".percentage", r)
		}
	}
	for i, fault := range spec.Faults {
		f := fmt.Sprintf("spec.faults[%d]", i)
		checkEnum(string(fault.Type), f+".type", r, redisv1alpha1.FaultDelay, redisv1alpha1.FaultError)
		checkRedisPercent(fault.Percentage, f+".percentage", r)
		checkDuration(fault.Delay, f+".delay", r)
	}
}

func checkRedisDestination(d redisv1alpha1.RedisDestinationRef, field string, r *reporter) {
	if d.Host == "" {
		r.errorf(field+".host", "host is required")
	}
	if d.Port > 65535 {
		r.errorf(field+".port", "port %d is not in 0-65535", d.Port)
	}
}

func checkRedisPercent(p *redisv1alpha1.Percent, field string, r *reporter) {
	if p != nil && (p.Value < 0 || p.Value > 100) {
		r.errorf(field+".value", "%v is not a percentage in 0-100", p.Value)
	}
}

func checkRedisAuth(a *redisv1alpha1.Auth, field string, r *reporter) {
	switch {
	case a == nil:
	case (a.Secret == nil) == (a.Plain == nil):
		r.errorf(field, "exactly one of secret and plain is required")
	case a.Secret != nil && a.Secret.Name == "":
		r.errorf(field+".secret.name", "the Secret's name is required")
	case a.Plain != nil && a.Plain.Password == "":
		r.errorf(field+".plain.password", "password is required")
	}
}

func validateRedisDestination(spec *redisv1alpha1.RedisDestinationSpec, r *reporter) {
	if spec.Host == "" {
		r.errorf("spec.host", "host is required")
	}
	pool := spec.TrafficPolicy
	if pool == nil || pool.ConnectionPool == nil {
		return
	}
	const f = "spec.trafficPolicy.connectionPool"
	if tcp := pool.ConnectionPool.TCP; tcp != nil {
		if tcp.MaxConnections < 0 {
			r.errorf(f+".tcp.maxConnections", "must not be negative")
		}
		checkDuration(tcp.ConnectTimeout, f+".tcp.connectTimeout", r)
		checkDuration(tcp.MaxConnectionDuration, f+".tcp.maxConnectionDuration", r)
		checkDuration(tcp.IdleTimeout, f+".tcp.idleTimeout", r)
		if ka := tcp.TCPKeepalive; ka != nil {
			checkDuration(ka.Time, f+".tcp.tcpKeepalive.time", r)
			checkDuration(ka.Interval, f+".tcp.tcpKeepalive.interval", r)
		}
	}
	if rs := pool.ConnectionPool.Redis; rs != nil {
		checkEnum(string(rs.Mode), f+".redis.mode", r, redisv1alpha1.ModeProxy, redisv1alpha1.ModeCluster)
		checkRedisAuth(rs.Auth, f+".redis.auth", r)
	}
}

func validateDubboAuthorizationPolicy(spec *dubbov1alpha1.DubboAuthorizationPolicySpec, r *reporter) {
	checkEnum(string(spec.Action), "spec.action", r, dubbov1alpha1.ActionAllow, dubbov1alpha1.ActionDeny)
}

// checkEnum reports a value that is none of the allowed ones; empty means the default and passes.
func checkEnum[T ~string](v, field string, r *reporter, allowed ...T) {
	if v == "" {
		return
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	if !slices.Contains(names, v) {
		r.errorf(field, "unknown value %q; one of %s", v, strings.Join(names, ", "))
	}
}

func checkDuration(d *v1alpha1.Duration, field string, r *reporter) {
	if d != nil && d.Duration < 0 {
		r.errorf(field, "must not be negative")
	}
}
