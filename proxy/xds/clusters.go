package xds

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/big"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	ringhashv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	httpoptionsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	tcpoptionsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/tcp/v3"

	"github.com/meltemi-mesh/meltemi/proxy"
)

// maxConnectionsPerEndpoint caps the pool size taken from a circuit breaker: the proxy dials up to that many
// connections per endpoint as load comes, and a limit written as "practically unlimited" must not mean that.
const maxConnectionsPerEndpoint = 1024

// translateCluster converts a cluster; endpoints come inline (STATIC, STRICT_DNS, LOGICAL_DNS) or over EDS.
func translateCluster(c *clusterv3.Cluster, n *notes) (*clusterPart, error) {
	part, err := clusterBody(c, n)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
	}
	return part, nil
}

func clusterBody(c *clusterv3.Cluster, n *notes) (*clusterPart, error) {
	if c.GetName() == "" {
		return nil, errors.New("name: required")
	}
	part := &clusterPart{cfg: proxy.Cluster{Name: c.GetName(), Service: serviceOf(c)}}
	discovery := clusterv3.Cluster_STATIC // Envoy's default when the field is absent
	switch t := c.GetClusterDiscoveryType().(type) {
	case *clusterv3.Cluster_Type:
		discovery = t.Type
	case *clusterv3.Cluster_ClusterType:
		return nil, fmt.Errorf("cluster_type: custom cluster %q is not supported", t.ClusterType.GetName())
	}
	switch discovery {
	case clusterv3.Cluster_EDS:
		part.eds = c.GetEdsClusterConfig().GetServiceName()
		if part.eds == "" {
			part.eds = c.GetName()
		}
	case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		// The proxy dials host:port, so DNS names resolve when connecting: both DNS types behave like
		// LOGICAL_DNS.
		if la := c.GetLoadAssignment(); la != nil {
			eps, err := loadAssignmentEndpoints(la)
			if err != nil {
				return nil, fmt.Errorf("load_assignment: %w", err)
			}
			part.cfg.Endpoints = eps
		}
	default:
		return nil, fmt.Errorf("type: %s is not supported (EDS, STATIC, STRICT_DNS, LOGICAL_DNS)", discovery)
	}

	if err := loadBalancing(c, &part.cfg, n); err != nil {
		return nil, err
	}
	var err error

	if d := c.GetConnectTimeout(); d != nil {
		if part.cfg.ConnectTimeout, err = duration(d); err != nil {
			return nil, fmt.Errorf("connect_timeout: %w", err)
		}
	}
	if part.cfg.IdleTimeout, part.cfg.MaxRequestsPerConnection, err = httpOptions(c); err != nil {
		return nil, err
	}
	if part.cfg.CircuitBreaker, err = circuitBreaker(c, n); err != nil {
		return nil, fmt.Errorf("circuit_breakers: %w", err)
	}
	if part.cfg.Outlier, err = outlierDetection(c, n); err != nil {
		return nil, fmt.Errorf("outlier_detection: %w", err)
	}
	if part.cfg.PanicThreshold, err = panicThreshold(c); err != nil {
		return nil, err
	}
	for i, t := range c.GetCircuitBreakers().GetPerHostThresholds() {
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT || t.GetMaxConnections() == nil {
			continue
		}
		// Per-host max_connections is the one circuit breaker that speaks of connections to one endpoint: it
		// sizes the proxy's multiplexed pool.
		v := t.GetMaxConnections().GetValue()
		if v == 0 {
			return nil, fmt.Errorf("circuit_breakers.per_host_thresholds[%d].max_connections: must be at least 1", i)
		}
		if v > maxConnectionsPerEndpoint {
			n.addf("cluster %q: per-host max_connections %d capped at %d connections per endpoint", c.GetName(), v,
				maxConnectionsPerEndpoint)
			v = maxConnectionsPerEndpoint
		}
		part.cfg.ConnectionsPerEndpoint = int(v)
	}
	if ts := c.GetTransportSocket(); ts != nil {
		return nil, fmt.Errorf("transport_socket: %s is not supported yet (the proxy speaks plaintext upstream)", ts.GetName())
	}
	if len(c.GetTransportSocketMatches()) > 0 {
		// Istio's clusters offer mTLS to endpoints that accept it and plaintext otherwise; plaintext is what
		// the proxy speaks until it has mTLS.
		n.addf("cluster %q: transport_socket_matches left out; the proxy speaks plaintext upstream", c.GetName())
	}
	return part, nil
}

// loadBalancing reads the policy and its settings: lb_policy with ring_hash_lb_config or maglev_lb_config, or
// the first policy of load_balancing_policy the proxy knows (Envoy takes the first it knows too).
func loadBalancing(c *clusterv3.Cluster, out *proxy.Cluster, n *notes) error {
	if lbp := c.GetLoadBalancingPolicy(); lbp != nil {
		for i, p := range lbp.GetPolicies() {
			a := p.GetTypedExtensionConfig().GetTypedConfig()
			field := fmt.Sprintf("load_balancing_policy.policies[%d].typed_extension_config.typed_config", i)
			switch typeName(a.GetTypeUrl()) {
			case "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin":
				out.LB = proxy.RoundRobin
			case "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest":
				out.LB = proxy.LeastRequest
			case "envoy.extensions.load_balancing_policies.random.v3.Random":
				out.LB = proxy.Random
			case "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash":
				rh := &ringhashv3.RingHash{}
				if err := proto.Unmarshal(a.GetValue(), rh); err != nil {
					return fmt.Errorf("%s: %w", field, err)
				}
				if rh.GetHashFunction() == ringhashv3.RingHash_MURMUR_HASH_2 {
					n.addf("cluster %q: ring hash function MURMUR_HASH_2 left out; the proxy hashes with its own", c.GetName())
				}
				out.LB = proxy.RingHash
				if err := ringSizes(rh.GetMinimumRingSize(), rh.GetMaximumRingSize(), field, out); err != nil {
					return err
				}
			case "envoy.extensions.load_balancing_policies.maglev.v3.Maglev":
				mg := &maglevv3.Maglev{}
				if err := proto.Unmarshal(a.GetValue(), mg); err != nil {
					return fmt.Errorf("%s: %w", field, err)
				}
				out.LB = proxy.Maglev
				if err := maglevSize(mg.GetTableSize(), field+".table_size", out); err != nil {
					return err
				}
			default:
				continue
			}
			return nil
		}
		return errors.New("load_balancing_policy: no policy the proxy supports (round_robin, least_request, random, ring_hash, maglev)")
	}
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		out.LB = proxy.RoundRobin
	case clusterv3.Cluster_LEAST_REQUEST:
		out.LB = proxy.LeastRequest
	case clusterv3.Cluster_RANDOM:
		out.LB = proxy.Random
	case clusterv3.Cluster_RING_HASH:
		out.LB = proxy.RingHash
		rh := c.GetRingHashLbConfig()
		if rh.GetHashFunction() == clusterv3.Cluster_RingHashLbConfig_MURMUR_HASH_2 {
			n.addf("cluster %q: ring hash function MURMUR_HASH_2 left out; the proxy hashes with its own", c.GetName())
		}
		return ringSizes(rh.GetMinimumRingSize(), rh.GetMaximumRingSize(), "ring_hash_lb_config", out)
	case clusterv3.Cluster_MAGLEV:
		out.LB = proxy.Maglev
		return maglevSize(c.GetMaglevLbConfig().GetTableSize(), "maglev_lb_config.table_size", out)
	default:
		return fmt.Errorf("lb_policy: %s is not supported", c.GetLbPolicy())
	}
	return nil
}

// maxRingSize is Envoy's bound on both ring sizes.
const maxRingSize = 8 << 20

// ringSizes reads a ring's bounds; absent ones are left zero, which is Envoy's defaults (1024 and 8M).
func ringSizes(minSize, maxSize *wrapperspb.UInt64Value, field string, out *proxy.Cluster) error {
	lo, hi := minSize.GetValue(), maxSize.GetValue()
	effectiveMin := uint64(1024)
	if minSize != nil {
		effectiveMin = lo
	}
	switch {
	case lo > maxRingSize:
		return fmt.Errorf("%s.minimum_ring_size: %d is above %d", field, lo, maxRingSize)
	case hi > maxRingSize:
		return fmt.Errorf("%s.maximum_ring_size: %d is above %d", field, hi, maxRingSize)
	case maxSize != nil && hi < effectiveMin:
		return fmt.Errorf("%s.maximum_ring_size: %d is below the minimum ring size %d", field, hi, effectiveMin)
	}
	out.MinRingSize, out.MaxRingSize = lo, hi
	return nil
}

// maxMaglevTableSize is Envoy's bound on maglev's table.
const maxMaglevTableSize = 5000011

// maglevSize reads maglev's table size, a prime; absent, Envoy's 65537.
func maglevSize(size *wrapperspb.UInt64Value, field string, out *proxy.Cluster) error {
	if size == nil {
		return nil
	}
	switch v := size.GetValue(); {
	case v > maxMaglevTableSize:
		return fmt.Errorf("%s: %d is above %d", field, v, maxMaglevTableSize)
	case !new(big.Int).SetUint64(v).ProbablyPrime(0):
		// Baillie-PSW, which ProbablyPrime(0) runs, makes no mistake below 2^64.
		return fmt.Errorf("%s: %d is not a prime number", field, v)
	}
	out.MaglevTableSize = size.GetValue()
	return nil
}

// httpOptions reads the upstream idle timeout and requests per connection from wherever Envoy keeps them: the
// typed TCP or HTTP protocol options, or the deprecated cluster fields. The typed options win, as in Envoy.
func httpOptions(c *clusterv3.Cluster) (idle time.Duration, perConn uint32, err error) {
	var found *durationpb.Duration
	field := "common_http_protocol_options.idle_timeout"
	if d := c.GetCommonHttpProtocolOptions().GetIdleTimeout(); d != nil {
		found = d
	}
	// Deprecated, but other control planes still write it.
	perConn = c.GetMaxRequestsPerConnection().GetValue()
	if v := c.GetCommonHttpProtocolOptions().GetMaxRequestsPerConnection(); v != nil {
		perConn = v.GetValue()
	}
	for _, key := range slices.Sorted(maps.Keys(c.GetTypedExtensionProtocolOptions())) {
		a := c.GetTypedExtensionProtocolOptions()[key]
		switch typeName(a.GetTypeUrl()) {
		case "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions":
			o := &tcpoptionsv3.TcpProtocolOptions{}
			if err := proto.Unmarshal(a.GetValue(), o); err != nil {
				return 0, 0, fmt.Errorf("typed_extension_protocol_options[%q]: %w", key, err)
			}
			if o.GetIdleTimeout() != nil {
				found, field = o.GetIdleTimeout(), fmt.Sprintf("typed_extension_protocol_options[%q].idle_timeout", key)
			}
		case "envoy.extensions.upstreams.http.v3.HttpProtocolOptions":
			o := &httpoptionsv3.HttpProtocolOptions{}
			if err := proto.Unmarshal(a.GetValue(), o); err != nil {
				return 0, 0, fmt.Errorf("typed_extension_protocol_options[%q]: %w", key, err)
			}
			common := o.GetCommonHttpProtocolOptions()
			if d := common.GetIdleTimeout(); d != nil && found == nil {
				found = d
				field = fmt.Sprintf("typed_extension_protocol_options[%q].common_http_protocol_options.idle_timeout", key)
			}
			if v := common.GetMaxRequestsPerConnection(); v != nil {
				perConn = v.GetValue()
			}
		}
	}
	if found == nil {
		return 0, perConn, nil
	}
	d, err := duration(found)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", field, err)
	}
	return d, perConn, nil
}

// Envoy's circuit breaker defaults, for a cluster that sets no thresholds of the default priority, or leaves
// one out.
const (
	defaultMaxConnections     = 1024
	defaultMaxPendingRequests = 1024
	defaultMaxRequests        = 1024
	defaultMaxRetries         = 3
	// Envoy's retry budget defaults.
	defaultBudgetPercent        = 20
	defaultBudgetMinConcurrency = 3
)

// circuitBreaker reads the thresholds of the default priority with Envoy's defaults. MaxUint32, Istio's
// "unlimited", becomes no limit (0); a limit of 0, which would refuse every request, cannot be expressed and is
// refused. The high priority's thresholds are left out: the proxy gives every request the default priority.
func circuitBreaker(c *clusterv3.Cluster, n *notes) (proxy.CircuitBreaker, error) {
	out := proxy.CircuitBreaker{MaxConnections: defaultMaxConnections, MaxPendingRequests: defaultMaxPendingRequests,
		MaxRequests: defaultMaxRequests, MaxRetries: defaultMaxRetries}
	found := false
	for i, t := range c.GetCircuitBreakers().GetThresholds() {
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			n.addf("cluster %q: circuit_breakers.thresholds[%d] of priority %s left out: every request has the default priority",
				c.GetName(), i, t.GetPriority())
			continue
		}
		field := fmt.Sprintf("thresholds[%d]", i)
		if found {
			return out, fmt.Errorf("%s: a second set for priority DEFAULT", field)
		}
		found = true
		for _, l := range []struct {
			name string
			v    *wrapperspb.UInt32Value
			to   *uint32
		}{
			{"max_connections", t.GetMaxConnections(), &out.MaxConnections},
			{"max_pending_requests", t.GetMaxPendingRequests(), &out.MaxPendingRequests},
			{"max_requests", t.GetMaxRequests(), &out.MaxRequests},
			{"max_retries", t.GetMaxRetries(), &out.MaxRetries},
		} {
			switch {
			case l.v == nil:
			case l.v.GetValue() == 0:
				return out, fmt.Errorf("%s.%s: 0 would refuse everything; the proxy takes at least 1", field, l.name)
			case l.v.GetValue() == math.MaxUint32:
				*l.to = 0
			default:
				*l.to = l.v.GetValue()
			}
		}
		if rb := t.GetRetryBudget(); rb != nil {
			out.RetryBudgetPercent = defaultBudgetPercent
			if p := rb.GetBudgetPercent(); p != nil {
				if p.GetValue() < 0 || p.GetValue() > 100 {
					return out, fmt.Errorf("%s.retry_budget.budget_percent: %v is not a percentage in 0-100", field, p.GetValue())
				}
				out.RetryBudgetPercent = p.GetValue()
			}
			out.RetryBudgetMinConcurrency = defaultBudgetMinConcurrency
			if m := rb.GetMinRetryConcurrency(); m != nil {
				out.RetryBudgetMinConcurrency = m.GetValue()
			}
			if rb.GetBudgetInterval().AsDuration() > 0 {
				n.addf("cluster %q: circuit_breakers.%s.retry_budget.budget_interval left out: the budget counts requests in flight",
					c.GetName(), field)
			}
			// A budget replaces max_retries.
			out.MaxRetries = 0
		}
		if t.GetMaxConnectionPools() != nil {
			n.addf("cluster %q: circuit_breakers.%s.max_connection_pools left out", c.GetName(), field)
		}
	}
	return out, nil
}

// Envoy's outlier detection defaults: each count is 5, the 5xx and local-origin ones enforced at 100% and the
// gateway one at 0%.
const (
	defaultConsecutive           = 5
	defaultInterval              = 10 * time.Second
	defaultBaseEjectionTime      = 30 * time.Second
	defaultMaxEjectionTime       = 300 * time.Second
	defaultMaxEjectionPercent    = 10
	defaultEnforcing5xx          = 100
	defaultEnforcingGateway      = 0
	defaultEnforcingLocalOrigin  = 100
	defaultEnforcingSuccessRate  = 100
	defaultHealthyPanicThreshold = 50
)

// outlierDetection reads Envoy's outlier detection with Envoy's defaults into the proxy's, where a count of 0
// turns one detector off: a detector that is not enforced counts 0. Enforcement between 0% and 100% is
// enforced always, with a note. Success-rate and failure-percentage detection are left out, with a note.
func outlierDetection(c *clusterv3.Cluster, n *notes) (*proxy.OutlierDetection, error) {
	od := c.GetOutlierDetection()
	if od == nil {
		return nil, nil
	}
	var problems []error
	count := func(name string, v, enforcing *wrapperspb.UInt32Value, defEnforcing uint32) uint32 {
		e := defEnforcing
		if enforcing != nil {
			e = enforcing.GetValue()
		}
		switch {
		case e > 100:
			problems = append(problems, fmt.Errorf("enforcing_%s: %d is not a percentage in 0-100", name, e))
		case e == 0:
			return 0
		case e < 100:
			n.addf("cluster %q: outlier_detection.enforcing_%s %d%% enforced always", c.GetName(), name, e)
		}
		if v == nil {
			return defaultConsecutive
		}
		return v.GetValue()
	}
	out := &proxy.OutlierDetection{
		Consecutive5xx: count("consecutive_5xx", od.GetConsecutive_5Xx(), od.GetEnforcingConsecutive_5Xx(), defaultEnforcing5xx),
		ConsecutiveGatewayFailure: count("consecutive_gateway_failure", od.GetConsecutiveGatewayFailure(),
			od.GetEnforcingConsecutiveGatewayFailure(), defaultEnforcingGateway),
		SplitLocalOrigin:   od.GetSplitExternalLocalOriginErrors(),
		Interval:           defaultInterval,
		BaseEjectionTime:   defaultBaseEjectionTime,
		MaxEjectionTime:    defaultMaxEjectionTime,
		MaxEjectionPercent: defaultMaxEjectionPercent,
	}
	if out.SplitLocalOrigin {
		out.ConsecutiveLocalOriginFailure = count("consecutive_local_origin_failure", od.GetConsecutiveLocalOriginFailure(),
			od.GetEnforcingConsecutiveLocalOriginFailure(), defaultEnforcingLocalOrigin)
	}
	if err := errors.Join(problems...); err != nil {
		return nil, err
	}
	for _, d := range []struct {
		name string
		v    *durationpb.Duration
		to   *time.Duration
	}{
		{"interval", od.GetInterval(), &out.Interval},
		{"base_ejection_time", od.GetBaseEjectionTime(), &out.BaseEjectionTime},
		{"max_ejection_time", od.GetMaxEjectionTime(), &out.MaxEjectionTime},
	} {
		if d.v == nil {
			continue
		}
		v, err := duration(d.v)
		if err != nil || v == 0 {
			return nil, fmt.Errorf("%s: must be a duration above 0 (%v)", d.name, d.v)
		}
		*d.to = v
	}
	if p := od.GetMaxEjectionPercent(); p != nil {
		switch v := p.GetValue(); {
		case v > 100:
			return nil, fmt.Errorf("max_ejection_percent: %d is not a percentage in 0-100", v)
		case v == 0:
			// Envoy still ejects one endpoint at 0%; the proxy's 0 would mean its default 10%.
			out.MaxEjectionPercent = 1
		default:
			out.MaxEjectionPercent = v
		}
	}
	if od.GetMaxEjectionTimeJitter().AsDuration() > 0 {
		n.addf("cluster %q: outlier_detection.max_ejection_time_jitter left out", c.GetName())
	}
	enforced := func(v *wrapperspb.UInt32Value, def uint32) bool {
		if v == nil {
			return def > 0
		}
		return v.GetValue() > 0
	}
	if enforced(od.GetEnforcingSuccessRate(), defaultEnforcingSuccessRate) ||
		enforced(od.GetEnforcingFailurePercentage(), 0) ||
		(out.SplitLocalOrigin && enforced(od.GetEnforcingLocalOriginSuccessRate(), defaultEnforcingSuccessRate)) ||
		enforced(od.GetEnforcingFailurePercentageLocalOrigin(), 0) {
		n.addf("cluster %q: outlier_detection success-rate and failure-percentage ejection left out; consecutive failures eject",
			c.GetName())
	}
	if len(od.GetMonitors()) > 0 {
		n.addf("cluster %q: outlier_detection.monitors left out", c.GetName())
	}
	return out, nil
}

// panicThreshold reads common_lb_config.healthy_panic_threshold, Envoy's 50% when absent.
func panicThreshold(c *clusterv3.Cluster) (float64, error) {
	p := c.GetCommonLbConfig().GetHealthyPanicThreshold()
	if p == nil {
		return defaultHealthyPanicThreshold, nil
	}
	if v := p.GetValue(); v < 0 || v > 100 {
		return 0, fmt.Errorf("common_lb_config.healthy_panic_threshold: %v is not a percentage in 0-100", v)
	}
	return p.GetValue(), nil
}

func duration(d *durationpb.Duration) (time.Duration, error) {
	if err := d.CheckValid(); err != nil {
		return 0, err
	}
	if d.AsDuration() < 0 {
		return 0, fmt.Errorf("negative duration %v", d.AsDuration())
	}
	return d.AsDuration(), nil
}

// serviceOf names the cluster's service for the destination_service* metric labels: from Istio's cluster
// metadata when present, else from Istio's cluster name, outbound|port|subset|host.
func serviceOf(c *clusterv3.Cluster) proxy.Service {
	if svcs := c.GetMetadata().GetFilterMetadata()["istio"].GetFields()["services"].GetListValue().GetValues(); len(svcs) > 0 {
		f := svcs[0].GetStructValue().GetFields()
		if host := f["host"].GetStringValue(); host != "" {
			s := serviceOfHost(host)
			if name := f["name"].GetStringValue(); name != "" {
				s.Name = name
			}
			if ns := f["namespace"].GetStringValue(); ns != "" {
				s.Namespace = ns
			}
			return s
		}
	}
	parts := strings.Split(c.GetName(), "|")
	if len(parts) != 4 || parts[3] == "" {
		return proxy.Service{}
	}
	return serviceOfHost(parts[3])
}

// serviceOfHost splits a host the Kubernetes way: name.namespace.svc.<domain>. Other hosts keep only their first
// label as the name, since nothing says which namespace they belong to.
func serviceOfHost(host string) proxy.Service {
	labels := strings.Split(host, ".")
	s := proxy.Service{Host: host, Name: labels[0]}
	if len(labels) >= 3 && labels[2] == "svc" {
		s.Namespace = labels[1]
	}
	return s
}

// translateLoadAssignment converts an EDS load assignment.
func translateLoadAssignment(cla *endpointv3.ClusterLoadAssignment) ([]proxy.Endpoint, error) {
	eps, err := loadAssignmentEndpoints(cla)
	if err != nil {
		return nil, fmt.Errorf("load assignment %q: %w", cla.GetClusterName(), err)
	}
	return eps, nil
}

// loadAssignmentEndpoints takes the endpoints of every priority, each with its priority and locality, for the
// proxy's priority failover. Unhealthy, draining and timed-out endpoints are left out.
func loadAssignmentEndpoints(cla *endpointv3.ClusterLoadAssignment) ([]proxy.Endpoint, error) {
	var out []proxy.Endpoint
	for i, loc := range cla.GetEndpoints() {
		l := loc.GetLocality()
		locality := strings.TrimRight(l.GetRegion()+"/"+l.GetZone()+"/"+l.GetSubZone(), "/")
		for j, lbe := range loc.GetLbEndpoints() {
			path := fmt.Sprintf("endpoints[%d].lb_endpoints[%d]", i, j)
			ep, ok := lbe.GetHostIdentifier().(*endpointv3.LbEndpoint_Endpoint)
			if !ok {
				return nil, fmt.Errorf("%s: only endpoint is supported (no endpoint_name)", path)
			}
			addr, err := socketAddress(ep.Endpoint.GetAddress())
			if err != nil {
				return nil, fmt.Errorf("%s.endpoint.address: %w", path, err)
			}
			switch lbe.GetHealthStatus() {
			case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_DRAINING, corev3.HealthStatus_TIMEOUT:
				continue
			}
			out = append(out, proxy.Endpoint{
				Address:  addr,
				Labels:   endpointLabels(lbe.GetMetadata()),
				Weight:   lbe.GetLoadBalancingWeight().GetValue(),
				Locality: locality,
				Priority: loc.GetPriority(),
			})
		}
	}
	return out, nil
}

// endpointLabels reads the string fields of filter_metadata["envoy.lb"] (Envoy's subset convention) and
// Istio's workload string, "name;namespace;canonical-name;canonical-revision;cluster".
func endpointLabels(md *corev3.Metadata) map[string]string {
	labels := map[string]string{}
	for k, v := range md.GetFilterMetadata()["envoy.lb"].GetFields() {
		if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
			labels[k] = s.StringValue
		}
	}
	if w := md.GetFilterMetadata()["istio"].GetFields()["workload"].GetStringValue(); w != "" {
		parts := strings.Split(w, ";")
		for i, key := range []string{"workload", "namespace", "service.istio.io/canonical-name",
			"service.istio.io/canonical-revision"} {
			if i < len(parts) && parts[i] != "" {
				labels[key] = parts[i]
			}
		}
	}
	if len(labels) == 0 {
		return nil
	}
	return labels
}

// socketAddress returns host:port of a TCP socket address.
func socketAddress(a *corev3.Address) (string, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", errors.New("socket_address: required (pipes and internal addresses are not supported)")
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", fmt.Errorf("socket_address.protocol: %s is not supported", sa.GetProtocol())
	}
	if sa.GetAddress() == "" {
		return "", errors.New("socket_address.address: required")
	}
	port, ok := sa.GetPortSpecifier().(*corev3.SocketAddress_PortValue)
	if !ok {
		if sa.GetNamedPort() != "" {
			return "", errors.New("socket_address.named_port: not supported")
		}
		port = &corev3.SocketAddress_PortValue{}
	}
	if port.PortValue > 65535 {
		return "", fmt.Errorf("socket_address.port_value: %d is out of range", port.PortValue)
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(port.PortValue), 10)), nil
}
