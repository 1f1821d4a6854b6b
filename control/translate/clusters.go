package translate

import (
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
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
func serviceClusters(svc *model.Service) ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment) {
	var clusters []*clusterv3.Cluster
	var assignments []*endpointv3.ClusterLoadAssignment
	add := func(c *clusterv3.Cluster, la *endpointv3.ClusterLoadAssignment) {
		clusters = append(clusters, c)
		if la != nil {
			assignments = append(assignments, la)
		}
	}
	for _, p := range svc.Ports {
		if !p.MetaProtocol() {
			continue
		}
		add(cluster(svc, ClusterName(p.Number, "", svc.Host), svc.LoadBalancer, connectTimeout(svc, ""), p.Endpoints))
		for _, ss := range svc.Subsets {
			add(cluster(svc, ClusterName(p.Number, ss.Name, svc.Host), ss.LoadBalancer, connectTimeout(svc, ss.Name),
				p.EndpointsFor(ss.Labels)))
		}
	}
	return clusters, assignments
}

// cluster builds one cluster. Endpoints of a STATIC service come over EDS, as Istio sends them, and the load
// assignment is returned beside the cluster. Endpoints of a DNS service are names, which EDS cannot carry:
// as in Istio, the cluster resolves them itself (STRICT_DNS, or LOGICAL_DNS for DNS_ROUND_ROBIN, which
// Envoy allows with one endpoint only) and holds them inline, and no load assignment is returned.
func cluster(svc *model.Service, name string, lb model.LoadBalancer, timeout time.Duration,
	eps []model.Endpoint) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment) {
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(timeout),
		Metadata:       clusterMetadata(svc),
	}
	setLoadBalancer(c, lb)
	la := &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: localityEndpoints(eps)}
	switch svc.Resolution {
	case networking.ServiceEntry_DNS, networking.ServiceEntry_DNS_ROUND_ROBIN:
		discovery := clusterv3.Cluster_STRICT_DNS
		if svc.Resolution == networking.ServiceEntry_DNS_ROUND_ROBIN && len(eps) == 1 {
			discovery = clusterv3.Cluster_LOGICAL_DNS
		}
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: discovery}
		c.LoadAssignment = la
		return c, nil
	default:
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name}
		return c, la
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

// connectTimeout reads connectionPool.tcp.connectTimeout from the subset's traffic policy, else from the
// rule's top level, else takes the default.
func connectTimeout(svc *model.Service, subset string) time.Duration {
	dr := svc.DestinationRule
	if dr == nil {
		return DefaultConnectTimeout
	}
	if subset != "" {
		for _, s := range dr.Spec.GetSubsets() {
			if s.GetName() == subset {
				if d := s.GetTrafficPolicy().GetConnectionPool().GetTcp().GetConnectTimeout(); d != nil && d.AsDuration() > 0 {
					return d.AsDuration()
				}
			}
		}
	}
	if d := dr.Spec.GetTrafficPolicy().GetConnectionPool().GetTcp().GetConnectTimeout(); d != nil && d.AsDuration() > 0 {
		return d.AsDuration()
	}
	return DefaultConnectTimeout
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
