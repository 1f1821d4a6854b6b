package xds_test

import (
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	mppv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/v1alpha"
	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/proxy/xds"
)

// Builders of the resources tests send, in the shapes a controller (ours or Aeraki's) sends them.

func codecs(t testing.TB) *codec.Registry {
	t.Helper()
	reg, err := codec.NewRegistry(dubbo.Registration())
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func socket(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// listenerWith returns a listener at host:port whose one filter chain holds filters.
func listenerWith(name, host string, port uint32, filters ...*listenerv3.Filter) *listenerv3.Listener {
	return &listenerv3.Listener{Name: name, Address: socket(host, port),
		FilterChains: []*listenerv3.FilterChain{{Filters: filters}}}
}

func mppFilter(t testing.TB, m *mppv1alpha.MetaProtocolProxy) *listenerv3.Filter {
	return &listenerv3.Filter{Name: xds.FilterName,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, m)}}
}

// rdsProxy is a MetaProtocolProxy taking its routes from RDS, with the codec in protocol.codec.
func rdsProxy(codecName, routeName string) *mppv1alpha.MetaProtocolProxy {
	return &mppv1alpha.MetaProtocolProxy{
		StatPrefix: "test",
		RouteSpecifier: &mppv1alpha.MetaProtocolProxy_Rds{Rds: &mppv1alpha.Rds{
			ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{
				Ads: &corev3.AggregatedConfigSource{}}},
			RouteConfigName: routeName,
		}},
		MetaProtocolFilters: []*mppv1alpha.MetaProtocolFilter{{Name: xds.RouterFilter}},
		Protocol: &mppv1alpha.ApplicationProtocol{Name: "dubbo", Codec: &mppv1alpha.Codec{Name: codecName},
			Multiplexing: true},
	}
}

// carrier is MetaRDS the way Aeraki writes it: one virtual host "dummy" for every domain.
func carrier(name string, routes ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name: "dummy", Domains: []string{"*"}, Routes: routes,
	}}}
}

// metaRoute is one carrier route sending the requests whose headers match to cluster.
func metaRoute(name, cluster string, headers ...*routev3.HeaderMatcher) *routev3.Route {
	return &routev3.Route{
		Name: name,
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Headers: headers},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
		}},
	}
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}},
	}}
}

func regexHeader(name, re string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{
		SafeRegexMatch: &matcherv3.RegexMatcher{Regex: re},
	}}
}

func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}},
		ConnectTimeout: durationpb.New(time.Second),
	}
}

func staticCluster(name string, hostPorts ...hostPort) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment:       loadAssignment(name, hostPorts...),
	}
}

type hostPort struct {
	host string
	port uint32
}

func loadAssignment(name string, hostPorts ...hostPort) *endpointv3.ClusterLoadAssignment {
	var lbes []*endpointv3.LbEndpoint
	for _, hp := range hostPorts {
		lbes = append(lbes, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: socket(hp.host, hp.port)}}})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbes}}}
}
