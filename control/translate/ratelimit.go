package translate

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	httpoptionsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	routev1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/config/route/v1alpha"
	ratelimitv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/ratelimit/v1alpha"
	mppv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/v1alpha"
	"github.com/meltemi-mesh/meltemi/control/model"
)

// GlobalRateLimitFilter is the MetaProtocol global rate limit filter, which asks an Envoy rate limit service.
const GlobalRateLimitFilter = "aeraki.meta_protocol.filters.ratelimit"

// globalRateLimitFilter is the filter a service's MetaRouter globalRateLimit becomes, or nil when it has
// none, or when its rateLimitService names no service of the mesh (the model reports that, and a filter
// asking a cluster no proxy has would only fail every check).
func globalRateLimitFilter(svc *model.Service) (*mppv1alpha.MetaProtocolFilter, error) {
	if svc.Router == nil || svc.Router.Spec.GlobalRateLimit == nil || svc.RateLimitService == nil {
		return nil, nil
	}
	g := svc.Router.Spec.GlobalRateLimit
	match, err := headerMatchers(&g.Match)
	if err != nil {
		return nil, fmt.Errorf("global rate limit of %s: match: %w", svc.Router.Key(), err)
	}
	rl := &ratelimitv1alpha.RateLimit{
		Domain:          g.Domain,
		FailureModeDeny: g.DenyOnFail,
		RateLimitService: &ratelimitconfv3.RateLimitServiceConfig{
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: svc.RateLimitService.Cluster},
			}},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
	}
	if len(match) > 0 {
		rl.Match = &routev1alpha.RouteMatch{Metadata: match}
	}
	if g.RequestTimeout != nil {
		rl.Timeout = durationpb.New(g.RequestTimeout.Duration)
	}
	for _, d := range g.Descriptors {
		rl.Descriptors = append(rl.Descriptors, &ratelimitv1alpha.Descriptor{Property: d.Property,
			DescriptorKey: d.DescriptorKey})
	}
	config, err := typed(rl)
	if err != nil {
		return nil, err
	}
	return &mppv1alpha.MetaProtocolFilter{Name: GlobalRateLimitFilter, Config: config}, nil
}

// rateLimitClusters builds the cluster of each rate limit service the services' global rate limits ask, once
// each, with its load assignment. They are gRPC clusters, which a meta-protocol service's clusters are not:
// HTTP/2 upstream, as Envoy needs to call a gRPC service, set the way Istio sets it for a gRPC port.
func rateLimitClusters(services []*model.Service, node Node) ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment, error) {
	var clusters []*clusterv3.Cluster
	var assignments []*endpointv3.ClusterLoadAssignment
	seen := map[string]bool{}
	for _, svc := range services {
		rls := svc.RateLimitService
		if rls == nil || seen[rls.Cluster] {
			continue
		}
		seen[rls.Cluster] = true
		subset, labels := "", map[string]string(nil)
		if rls.Subset != nil {
			subset, labels = rls.Subset.Name, rls.Subset.Labels
		}
		c, la, err := cluster(rls.Service, rls.Port, subset, rls.Port.EndpointsFor(labels), node)
		if err != nil {
			return nil, nil, fmt.Errorf("cluster %s: %w", rls.Cluster, err)
		}
		// The filter names the cluster as written; it keeps that name.
		c.Name = rls.Cluster
		if c.EdsClusterConfig != nil {
			c.EdsClusterConfig.ServiceName = rls.Cluster
		}
		if c.LoadAssignment != nil {
			c.LoadAssignment.ClusterName = rls.Cluster
		}
		if la != nil {
			la.ClusterName = rls.Cluster
		}
		// Keep what the DestinationRule put in the HTTP protocol options (idle timeout, requests per
		// connection), and speak HTTP/2.
		opts := &httpoptionsv3.HttpProtocolOptions{}
		if a := c.GetTypedExtensionProtocolOptions()[HTTPProtocolOptionsKey]; a != nil {
			if err := a.UnmarshalTo(opts); err != nil {
				return nil, nil, fmt.Errorf("cluster %s: %w", rls.Cluster, err)
			}
		}
		opts.UpstreamProtocolOptions = &httpoptionsv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpoptionsv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpoptionsv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		}
		a, err := typed(opts)
		if err != nil {
			return nil, nil, fmt.Errorf("cluster %s: %w", rls.Cluster, err)
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{HTTPProtocolOptionsKey: a}
		clusters = append(clusters, c)
		if la != nil {
			assignments = append(assignments, la)
		}
	}
	return clusters, assignments, nil
}
