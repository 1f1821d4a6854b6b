package xds

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
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

	lb, err := lbPolicy(c, n)
	if err != nil {
		return nil, err
	}
	part.cfg.LB = lb

	if d := c.GetConnectTimeout(); d != nil {
		if part.cfg.ConnectTimeout, err = duration(d); err != nil {
			return nil, fmt.Errorf("connect_timeout: %w", err)
		}
	}
	if part.cfg.IdleTimeout, err = idleTimeout(c); err != nil {
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

// lbPolicy maps Envoy's policy; ring hash and maglev fall back to round robin until the proxy has them.
func lbPolicy(c *clusterv3.Cluster, n *notes) (proxy.LBPolicy, error) {
	fallback := func(what string) proxy.LBPolicy {
		n.addf("cluster %q: %s is not supported yet; using ROUND_ROBIN", c.GetName(), what)
		return proxy.RoundRobin
	}
	if lbp := c.GetLoadBalancingPolicy(); lbp != nil {
		// Envoy takes the first policy it knows; so does this.
		for _, p := range lbp.GetPolicies() {
			switch typeName(p.GetTypedExtensionConfig().GetTypedConfig().GetTypeUrl()) {
			case "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin":
				return proxy.RoundRobin, nil
			case "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest":
				return proxy.LeastRequest, nil
			case "envoy.extensions.load_balancing_policies.random.v3.Random":
				return proxy.Random, nil
			case "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash":
				return fallback("load_balancing_policy ring_hash"), nil
			case "envoy.extensions.load_balancing_policies.maglev.v3.Maglev":
				return fallback("load_balancing_policy maglev"), nil
			}
		}
		return "", errors.New("load_balancing_policy: no policy the proxy supports (round_robin, least_request, random)")
	}
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		return proxy.RoundRobin, nil
	case clusterv3.Cluster_LEAST_REQUEST:
		return proxy.LeastRequest, nil
	case clusterv3.Cluster_RANDOM:
		return proxy.Random, nil
	case clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV:
		return fallback("lb_policy " + c.GetLbPolicy().String()), nil
	}
	return "", fmt.Errorf("lb_policy: %s is not supported", c.GetLbPolicy())
}

// idleTimeout reads the upstream idle timeout from wherever Envoy keeps it: the typed TCP or HTTP protocol
// options, or the deprecated common_http_protocol_options.
func idleTimeout(c *clusterv3.Cluster) (time.Duration, error) {
	var found *durationpb.Duration
	field := "common_http_protocol_options.idle_timeout"
	if d := c.GetCommonHttpProtocolOptions().GetIdleTimeout(); d != nil {
		found = d
	}
	for key, a := range c.GetTypedExtensionProtocolOptions() {
		switch typeName(a.GetTypeUrl()) {
		case "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions":
			o := &tcpoptionsv3.TcpProtocolOptions{}
			if err := proto.Unmarshal(a.GetValue(), o); err != nil {
				return 0, fmt.Errorf("typed_extension_protocol_options[%q]: %w", key, err)
			}
			if o.GetIdleTimeout() != nil {
				found, field = o.GetIdleTimeout(), fmt.Sprintf("typed_extension_protocol_options[%q].idle_timeout", key)
			}
		case "envoy.extensions.upstreams.http.v3.HttpProtocolOptions":
			o := &httpoptionsv3.HttpProtocolOptions{}
			if err := proto.Unmarshal(a.GetValue(), o); err != nil {
				return 0, fmt.Errorf("typed_extension_protocol_options[%q]: %w", key, err)
			}
			if d := o.GetCommonHttpProtocolOptions().GetIdleTimeout(); d != nil && found == nil {
				found = d
				field = fmt.Sprintf("typed_extension_protocol_options[%q].common_http_protocol_options.idle_timeout", key)
			}
		}
	}
	if found == nil {
		return 0, nil
	}
	d, err := duration(found)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	return d, nil
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

// loadAssignmentEndpoints takes the endpoints of the best priority that has a usable one: the proxy has no
// priority failover, and this is the set Envoy would send to while that priority is healthy. Unhealthy,
// draining and timed-out endpoints are left out.
func loadAssignmentEndpoints(cla *endpointv3.ClusterLoadAssignment) ([]proxy.Endpoint, error) {
	byPriority := map[uint32][]proxy.Endpoint{}
	for i, loc := range cla.GetEndpoints() {
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
			byPriority[loc.GetPriority()] = append(byPriority[loc.GetPriority()], proxy.Endpoint{
				Address: addr,
				Labels:  endpointLabels(lbe.GetMetadata()),
				Weight:  lbe.GetLoadBalancingWeight().GetValue(),
			})
		}
	}
	if len(byPriority) == 0 {
		return nil, nil
	}
	prios := make([]uint32, 0, len(byPriority))
	for p := range byPriority {
		prios = append(prios, p)
	}
	return byPriority[slices.Min(prios)], nil
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
