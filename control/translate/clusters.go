package translate

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpoptionsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1"

	"github.com/meltemi-mesh/meltemi/control/model"
)

// DefaultConnectTimeout bounds dialling an endpoint when the DestinationRule sets no
// connectionPool.tcp.connectTimeout; Istio's default.
const DefaultConnectTimeout = 10 * time.Second

// serviceClusters builds, for each meta-protocol port of a service, the cluster of the whole service and one
// per subset of its DestinationRule, each with its load assignment. A subset's cluster holds only the
// endpoints its labels select, as Istio sends them, so the data plane needs no subset load balancer.
func serviceClusters(svc *model.Service, node Node) ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment, error) {
	var clusters []*clusterv3.Cluster
	var assignments []*endpointv3.ClusterLoadAssignment
	add := func(subset string, p *model.Port, eps []model.Endpoint) error {
		c, la, err := cluster(svc, p, subset, eps, node)
		if err != nil {
			return fmt.Errorf("cluster %s: %w", ClusterName(p.Number, subset, svc.Host), err)
		}
		clusters = append(clusters, c)
		if la != nil {
			assignments = append(assignments, la)
		}
		return nil
	}
	for _, p := range svc.Ports {
		if !p.MetaProtocol() {
			continue
		}
		if err := add("", p, p.Endpoints); err != nil {
			return nil, nil, err
		}
		for _, ss := range svc.Subsets {
			if err := add(ss.Name, p, p.EndpointsFor(ss.Labels)); err != nil {
				return nil, nil, err
			}
		}
	}
	return clusters, assignments, nil
}

// cluster builds one cluster from the DestinationRule's traffic policy for its port and subset, merged as
// Istio merges it. Endpoints of a STATIC service come over EDS, as Istio sends them, and the load assignment
// is returned beside the cluster. Endpoints of a DNS service are names, which EDS cannot carry: as in Istio,
// the cluster resolves them itself (STRICT_DNS, or LOGICAL_DNS for DNS_ROUND_ROBIN, which Envoy allows with
// one endpoint only) and holds them inline, and no load assignment is returned.
func cluster(svc *model.Service, port *model.Port, subset string, eps []model.Endpoint,
	node Node) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	name := ClusterName(port.Number, subset, svc.Host)
	tp := svc.TrafficPolicy(port.Number, subset)
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(connectTimeout(tp)),
		Metadata:       clusterMetadata(svc),
	}
	setLoadBalancer(c, svc.LoadBalancerFor(port.Number, subset))
	if err := setConnectionPool(c, tp.GetConnectionPool(), tp.GetRetryBudget()); err != nil {
		return nil, nil, err
	}
	setOutlierDetection(c, tp.GetOutlierDetection())
	la := &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: localityEndpoints(eps)}
	// Failing over to other localities needs outlier detection: without it no endpoint is ever taken out,
	// and a proxy would never leave its first priority. Istio's rule, and Envoy's.
	if tp.GetOutlierDetection() != nil {
		applyLocalityFailover(la, node.Locality, tp.GetLoadBalancer().GetLocalityLbSetting())
	}
	switch svc.Resolution {
	case networking.ServiceEntry_DNS, networking.ServiceEntry_DNS_ROUND_ROBIN:
		discovery := clusterv3.Cluster_STRICT_DNS
		if svc.Resolution == networking.ServiceEntry_DNS_ROUND_ROBIN && len(eps) == 1 {
			discovery = clusterv3.Cluster_LOGICAL_DNS
		}
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: discovery}
		c.LoadAssignment = la
		return c, nil, nil
	default:
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name}
		return c, la, nil
	}
}

func setLoadBalancer(c *clusterv3.Cluster, lb model.LoadBalancer) {
	switch lb.Policy {
	case model.LBLeastRequest:
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	case model.LBRandom:
		c.LbPolicy = clusterv3.Cluster_RANDOM
	case model.LBRingHash:
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		if lb.MinimumRingSize > 0 {
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				MinimumRingSize: wrapperspb.UInt64(lb.MinimumRingSize),
			}}
		}
	case model.LBMaglev:
		c.LbPolicy = clusterv3.Cluster_MAGLEV
		if lb.MaglevTableSize > 0 {
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{
				TableSize: wrapperspb.UInt64(lb.MaglevTableSize),
			}}
		}
	default:
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	}
}

// connectTimeout reads connectionPool.tcp.connectTimeout of the merged policy, else takes the default.
func connectTimeout(tp *networking.TrafficPolicy) time.Duration {
	if d := tp.GetConnectionPool().GetTcp().GetConnectTimeout(); d != nil && d.AsDuration() > 0 {
		return d.AsDuration()
	}
	return DefaultConnectTimeout
}

// HTTPProtocolOptionsKey is the typed_extension_protocol_options key, and type, under which Istio writes
// idle timeouts and requests per connection.
const HTTPProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// setConnectionPool writes a connection pool the way Istio's cluster builder does: every cluster has
// circuit-breaker thresholds of the default priority, MaxUint32 ("no limit": Envoy's own defaults of 1024
// connections and requests and 3 retries have proved too low) where the policy sets none; the retry budget
// among them; idle timeout (http's, else tcp's) and requests per connection in the HTTP protocol options.
func setConnectionPool(c *clusterv3.Cluster, cp *networking.ConnectionPoolSettings,
	budget *networking.TrafficPolicy_RetryBudget) error {
	limit := func(v int32) *wrapperspb.UInt32Value {
		if v > 0 {
			return wrapperspb.UInt32(uint32(v))
		}
		return wrapperspb.UInt32(math.MaxUint32)
	}
	t := &clusterv3.CircuitBreakers_Thresholds{
		MaxConnections:     limit(cp.GetTcp().GetMaxConnections()),
		MaxPendingRequests: limit(cp.GetHttp().GetHttp1MaxPendingRequests()),
		MaxRequests:        limit(cp.GetHttp().GetHttp2MaxRequests()),
		MaxRetries:         limit(cp.GetHttp().GetMaxRetries()),
		TrackRemaining:     true,
	}
	if budget != nil {
		t.RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetInterval: budget.GetBudgetInterval()}
		if p := budget.GetPercent(); p != nil {
			t.RetryBudget.BudgetPercent = &typev3.Percent{Value: p.GetValue()}
		}
		if n := budget.GetMinRetryConcurrency(); n > 0 {
			t.RetryBudget.MinRetryConcurrency = wrapperspb.UInt32(n)
		}
	}
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{t}}

	idle := cp.GetHttp().GetIdleTimeout()
	if idle == nil {
		idle = cp.GetTcp().GetIdleTimeout()
	}
	perConn := cp.GetHttp().GetMaxRequestsPerConnection()
	if idle == nil && perConn <= 0 {
		return nil
	}
	common := &corev3.HttpProtocolOptions{IdleTimeout: idle}
	if perConn > 0 {
		common.MaxRequestsPerConnection = wrapperspb.UInt32(uint32(perConn))
	}
	opts, err := typed(&httpoptionsv3.HttpProtocolOptions{
		CommonHttpProtocolOptions: common,
		// Envoy requires a protocol choice; HTTP/1.1 options are what Istio writes by default, and mean
		// nothing to a meta-protocol cluster.
		UpstreamProtocolOptions: &httpoptionsv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpoptionsv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpoptionsv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
					HttpProtocolOptions: &corev3.Http1ProtocolOptions{},
				},
			},
		},
	})
	if err != nil {
		return fmt.Errorf("typed_extension_protocol_options: %w", err)
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{HTTPProtocolOptionsKey: opts}
	return nil
}

// setOutlierDetection translates outlier detection as Istio does: the counts the rule gives, each enforced
// at 100% when above 0 (0 turns one off); success-rate detection off; local-origin failures counted apart
// only when asked; minHealthPercent as the panic threshold, which Istio always writes (0 by default, panic
// mode off).
func setOutlierDetection(c *clusterv3.Cluster, od *networking.OutlierDetection) {
	if od == nil {
		return
	}
	enforce := func(v uint32) *wrapperspb.UInt32Value {
		if v > 0 {
			return wrapperspb.UInt32(100)
		}
		return wrapperspb.UInt32(0)
	}
	out := &clusterv3.OutlierDetection{EnforcingSuccessRate: wrapperspb.UInt32(0)}
	if e := od.GetConsecutive_5XxErrors(); e != nil {
		out.Consecutive_5Xx = wrapperspb.UInt32(e.GetValue())
		out.EnforcingConsecutive_5Xx = enforce(e.GetValue())
	}
	if e := od.GetConsecutiveGatewayErrors(); e != nil {
		out.ConsecutiveGatewayFailure = wrapperspb.UInt32(e.GetValue())
		out.EnforcingConsecutiveGatewayFailure = enforce(e.GetValue())
	}
	out.Interval = od.GetInterval()
	out.BaseEjectionTime = od.GetBaseEjectionTime()
	if p := od.GetMaxEjectionPercent(); p > 0 {
		out.MaxEjectionPercent = wrapperspb.UInt32(uint32(p))
	}
	if od.GetSplitExternalLocalOriginErrors() {
		out.SplitExternalLocalOriginErrors = true
		if n := od.GetConsecutiveLocalOriginFailures().GetValue(); n > 0 {
			out.ConsecutiveLocalOriginFailure = wrapperspb.UInt32(n)
			out.EnforcingConsecutiveLocalOriginFailure = wrapperspb.UInt32(100)
		}
		out.EnforcingLocalOriginSuccessRate = wrapperspb.UInt32(0)
	}
	c.OutlierDetection = out
	if p := od.GetMinHealthPercent(); p >= 0 {
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: float64(p)}}
	}
}

// applyLocalityFailover gives each locality of a load assignment its priority for a proxy at proxyLocality,
// as Istio's EDS does per proxy: 0 for the proxy's own locality, 1 for its region and zone, 2 for its
// region, 3 for other regions (4 for those outside a failover rule's target for the proxy's region), then
// compacted so that the priorities in use run from 0 without gaps, as Envoy expects. A proxy that does not
// know its locality, or a rule that turns locality load balancing off, leaves every endpoint at priority 0.
func applyLocalityFailover(la *endpointv3.ClusterLoadAssignment, proxyLocality string,
	setting *networking.LocalityLoadBalancerSetting) {
	if proxyLocality == "" || (setting.GetEnabled() != nil && !setting.GetEnabled().GetValue()) {
		return
	}
	me := locality(proxyLocality)
	raw := make([]uint32, len(la.GetEndpoints()))
	used := map[uint32]bool{}
	for i, lle := range la.GetEndpoints() {
		l := lle.GetLocality()
		var p uint32
		switch {
		case me.GetRegion() != l.GetRegion():
			p = 3
			for _, fo := range setting.GetFailover() {
				if fo.GetFrom() == me.GetRegion() {
					if fo.GetTo() != l.GetRegion() {
						p = 4
					}
					break
				}
			}
		case me.GetZone() != l.GetZone():
			p = 2
		case me.GetSubZone() != l.GetSubZone():
			p = 1
		}
		raw[i] = p
		used[p] = true
	}
	compact := map[uint32]uint32{}
	for _, p := range slices.Sorted(maps.Keys(used)) {
		compact[p] = uint32(len(compact))
	}
	for i, lle := range la.GetEndpoints() {
		lle.Priority = compact[raw[i]]
	}
}

// clusterMetadata names the cluster's service the way Istio does (filter_metadata.istio.services), so that
// metrics can show its namespace: the host alone does not tell the namespace of a ServiceEntry.
func clusterMetadata(svc *model.Service) *corev3.Metadata {
	service := &structpb.Struct{Fields: map[string]*structpb.Value{
		"host":      structpb.NewStringValue(svc.Host),
		"namespace": structpb.NewStringValue(svc.Entry.Namespace),
	}}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"istio": {Fields: map[string]*structpb.Value{
			"services": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStructValue(service)}}),
		}},
	}}
}

// localityEndpoints groups endpoints by locality, localities in the order they first appear and endpoints in
// the order written.
func localityEndpoints(eps []model.Endpoint) []*endpointv3.LocalityLbEndpoints {
	var out []*endpointv3.LocalityLbEndpoints
	index := map[string]int{}
	for i := range eps {
		ep := &eps[i]
		at, ok := index[ep.Locality]
		if !ok {
			at = len(out)
			index[ep.Locality] = at
			out = append(out, &endpointv3.LocalityLbEndpoints{Locality: locality(ep.Locality)})
		}
		out[at].LbEndpoints = append(out[at].LbEndpoints, lbEndpoint(ep))
	}
	return out
}

// LocalityString writes a locality as Istio does, "region/zone/subzone", leaving out empty trailing parts.
func LocalityString(region, zone, subzone string) string {
	return strings.TrimRight(region+"/"+zone+"/"+subzone, "/")
}

// locality reads Istio's "region/zone/subzone"; nil when empty.
func locality(s string) *corev3.Locality {
	if s == "" {
		return nil
	}
	parts := strings.SplitN(s, "/", 3)
	l := &corev3.Locality{Region: parts[0]}
	if len(parts) > 1 {
		l.Zone = parts[1]
	}
	if len(parts) > 2 {
		l.SubZone = parts[2]
	}
	return l
}

// lbEndpoint carries the endpoint's labels as string fields of filter_metadata["envoy.lb"], Envoy's
// convention for subset load balancing, where the proxy reads them.
func lbEndpoint(ep *model.Endpoint) *endpointv3.LbEndpoint {
	out := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: socketAddress(ep.Address, ep.Port),
	}}}
	if ep.Weight > 0 {
		out.LoadBalancingWeight = wrapperspb.UInt32(ep.Weight)
	}
	if len(ep.Labels) > 0 {
		labels := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(ep.Labels))}
		for k, v := range ep.Labels {
			labels.Fields[k] = structpb.NewStringValue(v)
		}
		out.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.lb": labels}}
	}
	return out
}
