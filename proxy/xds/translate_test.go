package xds_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpoptionsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	tcpoptionsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/tcp/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	routev1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/config/route/v1alpha"
	localratelimitv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/local_ratelimit/v1alpha"
	routerv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/router/v1alpha"
	mppv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/v1alpha"
	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/proxy/xds"
)

const (
	dubboCodec = "aeraki.meta_protocol.codec.dubbo"
	demoHost   = "demo.shop.svc.cluster.local"
	demoV1     = "outbound|20880|v1|" + demoHost
	demoV2     = "outbound|20880|v2|" + demoHost
	demoAll    = "outbound|20880||" + demoHost
)

// typedStruct wraps m the way an Aeraki control plane does: its JSON with proto field names in a Struct, in
// a udpa (or xds) TypedStruct.
func typedStruct(t *testing.T, m proto.Message, udpa bool) *anypb.Any {
	t.Helper()
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	value := &structpb.Struct{}
	if err := protojson.Unmarshal(js, value); err != nil {
		t.Fatal(err)
	}
	url := "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName())
	if udpa {
		return mustAny(t, &udpatypev1.TypedStruct{TypeUrl: url, Value: value})
	}
	return mustAny(t, &xdstypev3.TypedStruct{TypeUrl: url, Value: value})
}

func structOf(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tokenBucket() *typev3.TokenBucket {
	return &typev3.TokenBucket{MaxTokens: 5, TokensPerFill: wrapperspb.UInt32(5), FillInterval: durationpb.New(time.Minute)}
}

// inlineListener is a listener as our controller may send it: the plain MetaProtocolProxy message, the codec
// in protocol.codec with a config, filters around the router, routes inline in Aeraki's native form, and
// Istio's observability filter beside it.
func inlineListener(t *testing.T) *listenerv3.Listener {
	m := &mppv1alpha.MetaProtocolProxy{
		StatPrefix: "inbound|20880||",
		RouteSpecifier: &mppv1alpha.MetaProtocolProxy_RouteConfig{RouteConfig: &routev1alpha.RouteConfiguration{
			Name: "inbound|20880||",
			Routes: []*routev1alpha.Route{
				{
					Name: "v1",
					Match: &routev1alpha.RouteMatch{Metadata: []*routev3.HeaderMatcher{
						{Name: "interface", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "org.example.Demo"}},
						{Name: "method", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}},
						{Name: "user", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
							StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "bot-"}}}},
					}},
					Route: &routev1alpha.RouteAction{
						ClusterSpecifier: &routev1alpha.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
							Clusters: []*routev3.WeightedCluster_ClusterWeight{
								{Name: demoV1, Weight: wrapperspb.UInt32(20)},
								{Name: demoV2, Weight: wrapperspb.UInt32(80)},
							},
						}},
						HashPolicy: []string{"user-id"},
						RequestMirrorPolicies: []*routev1alpha.RouteAction_RequestMirrorPolicy{{Cluster: demoV2,
							RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
								Numerator: 500000, Denominator: typev3.FractionalPercent_MILLION}}}},
					},
					RequestMutation:  []*routev1alpha.KeyValue{{Key: "foo", Value: "bar"}},
					ResponseMutation: []*routev1alpha.KeyValue{{Key: "served-by", Value: "meltemi"}},
				},
				{Name: "default", Route: &routev1alpha.RouteAction{
					ClusterSpecifier: &routev1alpha.RouteAction_Cluster{Cluster: demoAll}}},
			},
		}},
		MetaProtocolFilters: []*mppv1alpha.MetaProtocolFilter{
			{Name: "aeraki.meta_protocol.filters.local_ratelimit", Config: mustAny(t, &localratelimitv1alpha.LocalRateLimit{
				StatPrefix: "demo", TokenBucket: tokenBucket()})},
			{Name: xds.RouterFilter, Config: mustAny(t, &routerv1alpha.Router{})},
		},
		Tracing:     &mppv1alpha.Tracing{Verbose: true},
		IdleTimeout: durationpb.New(90 * time.Second),
		Protocol: &mppv1alpha.ApplicationProtocol{Name: "dubbo", Multiplexing: true, Codec: &mppv1alpha.Codec{
			Name: dubboCodec, Config: mustAny(t, structOf(t, map[string]any{"maxBodySize": 1048576})),
		}},
	}
	return listenerWith("inbound_20880", "0.0.0.0", 20880,
		&listenerv3.Filter{Name: "istio.metadata_exchange", ConfigType: &listenerv3.Filter_TypedConfig{
			TypedConfig: mustAny(t, structOf(t, map[string]any{"protocol": "istio-peer-exchange"}))}},
		mppFilter(t, m))
}

// aerakiListener is an outbound listener the way Aeraki writes it: a udpa TypedStruct, the deprecated codec
// field alone, routes over RDS from a separate config source.
func aerakiListener(t *testing.T) *listenerv3.Listener {
	m := &mppv1alpha.MetaProtocolProxy{
		StatPrefix:          demoAll,
		ApplicationProtocol: "dubbo",
		RouteSpecifier: &mppv1alpha.MetaProtocolProxy_Rds{Rds: &mppv1alpha.Rds{
			ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{
				ApiConfigSource: &corev3.ApiConfigSource{ApiType: corev3.ApiConfigSource_GRPC,
					GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
						EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "aeraki-xds"}}}}}},
				ResourceApiVersion: corev3.ApiVersion_V3},
			RouteConfigName: demoHost + "_20880",
		}},
		Codec:               &mppv1alpha.Codec{Name: dubboCodec},
		MetaProtocolFilters: []*mppv1alpha.MetaProtocolFilter{{Name: xds.RouterFilter}},
	}
	return &listenerv3.Listener{
		Name:    "10.0.0.7_20880",
		Address: socket("10.0.0.7", 20880),
		FilterChains: []*listenerv3.FilterChain{
			{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy"}}}, // Istio's passthrough, no MetaProtocolProxy
			{Filters: []*listenerv3.Filter{{Name: xds.FilterName,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: typedStruct(t, m, true)}}}},
		},
	}
}

// xdsTypedStructListener is the newer xds.type.v3.TypedStruct wrapping, with protocol.codec.
func xdsTypedStructListener(t *testing.T) *listenerv3.Listener {
	m := rdsProxy(dubboCodec, "gateway_20881")
	m.StatPrefix = "gateway"
	return listenerWith("gateway_20881", "127.0.0.1", 20881, &listenerv3.Filter{Name: xds.FilterName,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: typedStruct(t, m, false)}})
}

// aerakiRoutes is MetaRDS with every matcher form Aeraki and Envoy write.
func aerakiRoutes() *routev3.RouteConfiguration {
	v1 := metaRoute("v1", "",
		&routev3.HeaderMatcher{Name: "method", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "sayHello"}},
		&routev3.HeaderMatcher{Name: "interface", HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "org.apache"}},
		&routev3.HeaderMatcher{Name: "version", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{
			SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "v[0-9]+"}}},
		&routev3.HeaderMatcher{Name: "trace", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}},
		&routev3.HeaderMatcher{Name: "debug", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}},
		&routev3.HeaderMatcher{Name: "zone"},
		&routev3.HeaderMatcher{Name: "region", HeaderMatchSpecifier: &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: "-1"}},
		&routev3.HeaderMatcher{Name: "tag", HeaderMatchSpecifier: &routev3.HeaderMatcher_ContainsMatch{ContainsMatch: "a.b"}},
	)
	v1.GetRoute().ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
		Clusters: []*routev3.WeightedCluster_ClusterWeight{
			{Name: demoV1, Weight: wrapperspb.UInt32(20)},
			{Name: demoV2, Weight: wrapperspb.UInt32(80)},
		}}}
	v1.GetRoute().HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
		Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "user-id"}}}}
	v1.GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: demoV2}}
	v1.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "foo", Value: "bar"}}}
	v1.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "served-by", RawValue: []byte("meltemi")}}}

	v2 := metaRoute("v2", demoV2,
		&routev3.HeaderMatcher{Name: "method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "SayBye"}, IgnoreCase: true}}},
		&routev3.HeaderMatcher{Name: "interface", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
				SafeRegex: &matcherv3.RegexMatcher{Regex: ".*Internal"}}}}},
		&routev3.HeaderMatcher{Name: "lang", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "GO"}, IgnoreCase: true}}},
		&routev3.HeaderMatcher{Name: "group", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "x"}}}},
	)
	return carrier(demoHost+"_20880", v1, v2, metaRoute("default", demoAll))
}

func clusters(t *testing.T) map[string]*clusterv3.Cluster {
	v1 := edsCluster(demoV1)
	v1.EdsClusterConfig.ServiceName = "demo-v1-endpoints"
	v1.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	v1.ConnectTimeout = durationpb.New(2 * time.Second)
	v1.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		"envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions": mustAny(t, &tcpoptionsv3.TcpProtocolOptions{
			IdleTimeout: durationpb.New(time.Hour)}),
	}
	v1.CircuitBreakers = &clusterv3.CircuitBreakers{
		Thresholds:        []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(4294967295)}},
		PerHostThresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(4)}},
	}

	v2 := edsCluster(demoV2)
	v2.LbPolicy = clusterv3.Cluster_RING_HASH
	v2.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(t, &httpoptionsv3.HttpProtocolOptions{
			CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(5 * time.Minute)}}),
	}
	v2.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": structOf(t, map[string]any{
		"services": []any{map[string]any{"host": demoHost, "name": "demo-svc", "namespace": "shop"}},
	})}}

	all := staticCluster(demoAll, hostPort{"10.1.0.1", 20880}, hostPort{"10.1.0.2", 20880})
	all.LbPolicy = clusterv3.Cluster_RANDOM

	dns := staticCluster("outbound|20880||org.apache.dubbo.demo", hostPort{"provider.example.com", 20880})
	dns.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
	dns.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Minute)}

	return map[string]*clusterv3.Cluster{v1.Name: v1, v2.Name: v2, all.Name: all, dns.Name: dns}
}

func endpointsOf(t *testing.T) map[string]*endpointv3.ClusterLoadAssignment {
	lb := func(host string, weight uint32, health corev3.HealthStatus, md *corev3.Metadata) *endpointv3.LbEndpoint {
		e := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socket(host, 20880)}},
			HealthStatus:   health,
			Metadata:       md,
		}
		if weight > 0 {
			e.LoadBalancingWeight = wrapperspb.UInt32(weight)
		}
		return e
	}
	istio := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"envoy.lb": structOf(t, map[string]any{"version": "v1", "app": "demo", "replicas": 3}),
		"istio":    structOf(t, map[string]any{"workload": "demo-v1;shop;demo;v1;Kubernetes"}),
	}}
	v1 := &endpointv3.ClusterLoadAssignment{ClusterName: "demo-v1-endpoints", Endpoints: []*endpointv3.LocalityLbEndpoints{
		{Priority: 1, LbEndpoints: []*endpointv3.LbEndpoint{lb("10.2.0.9", 0, corev3.HealthStatus_HEALTHY, nil)}},
		{LbEndpoints: []*endpointv3.LbEndpoint{
			lb("10.2.0.1", 3, corev3.HealthStatus_HEALTHY, istio),
			lb("10.2.0.2", 0, corev3.HealthStatus_UNKNOWN, nil),
			lb("10.2.0.3", 0, corev3.HealthStatus_UNHEALTHY, nil),
			lb("10.2.0.4", 0, corev3.HealthStatus_DRAINING, nil),
			lb("fd00::5", 1, corev3.HealthStatus_DEGRADED, nil),
		}},
	}}
	// Every priority-0 endpoint is unhealthy here, so priority 1 serves.
	v2 := &endpointv3.ClusterLoadAssignment{ClusterName: demoV2, Endpoints: []*endpointv3.LocalityLbEndpoints{
		{LbEndpoints: []*endpointv3.LbEndpoint{lb("10.3.0.1", 0, corev3.HealthStatus_UNHEALTHY, nil)}},
		{Priority: 1, LbEndpoints: []*endpointv3.LbEndpoint{lb("10.3.0.2", 0, corev3.HealthStatus_HEALTHY, nil)}},
	}}
	return map[string]*endpointv3.ClusterLoadAssignment{v1.ClusterName: v1, v2.ClusterName: v2}
}

func TestTranslate(t *testing.T) {
	gateway := xdsTypedStructListener(t)
	res := xds.Resources{
		Listeners: map[string]*listenerv3.Listener{},
		Routes: map[string]*routev3.RouteConfiguration{
			demoHost + "_20880": aerakiRoutes(),
			"gateway_20881":     carrier("gateway_20881", metaRoute("all", demoAll)),
		},
		Clusters:  clusters(t),
		Endpoints: endpointsOf(t),
	}
	for _, l := range []*listenerv3.Listener{inlineListener(t), aerakiListener(t), gateway} {
		res.Listeners[l.Name] = l
	}
	got, err := xds.Translate(res, codecs(t))
	if err != nil {
		t.Fatal(err)
	}

	aerakiRouteConfig := proxy.RouteConfig{Name: demoHost + "_20880", Routes: []proxy.Route{
		{
			Name: "v1",
			Match: []proxy.MetadataMatcher{
				{Key: "method", Kind: proxy.MatchExact, Value: "sayHello"},
				{Key: "interface", Kind: proxy.MatchPrefix, Value: "org.apache"},
				{Key: "version", Kind: proxy.MatchRegex, Value: "v[0-9]+"},
				{Key: "trace", Kind: proxy.MatchPresent},
				{Key: "debug", Kind: proxy.MatchPresent, Invert: true},
				{Key: "zone", Kind: proxy.MatchPresent},
				{Key: "region", Kind: proxy.MatchRegex, Value: `(?s).*-1`},
				{Key: "tag", Kind: proxy.MatchRegex, Value: `(?s).*a\.b.*`},
			},
			WeightedClusters: []proxy.WeightedCluster{{Name: demoV1, Weight: 20}, {Name: demoV2, Weight: 80}},
			HashPolicy:       []string{"user-id"},
			RequestMutation:  []codec.KeyValue{{Key: "foo", Value: "bar"}},
			ResponseMutation: []codec.KeyValue{{Key: "served-by", Value: "meltemi"}},
			Mirrors:          []proxy.Mirror{{Cluster: demoV2, PerMillion: 1000000}},
			Timeout:          15 * time.Second,
		},
		{
			Name:    "v2",
			Cluster: demoV2,
			Timeout: 15 * time.Second,
			Match: []proxy.MetadataMatcher{
				{Key: "method", Kind: proxy.MatchRegex, Value: "(?is)SayBye"},
				{Key: "interface", Kind: proxy.MatchRegex, Value: ".*Internal", Invert: true},
				{Key: "lang", Kind: proxy.MatchRegex, Value: "(?is).*GO"},
				{Key: "group", Kind: proxy.MatchRegex, Value: "(?s).*x.*"},
			},
		},
		{Name: "default", Cluster: demoAll, Timeout: 15 * time.Second},
	}}
	want := &proxy.Config{
		Listeners: []proxy.Listener{
			{
				Name: "10.0.0.7_20880", Address: "10.0.0.7:20880", StatPrefix: demoAll,
				Codec:  proxy.CodecConfig{Name: dubboCodec},
				Routes: aerakiRouteConfig,
			},
			{
				Name: "gateway_20881", Address: "127.0.0.1:20881", StatPrefix: "gateway",
				Codec: proxy.CodecConfig{Name: dubboCodec},
				Routes: proxy.RouteConfig{Name: "gateway_20881", Routes: []proxy.Route{
					{Name: "all", Cluster: demoAll, Timeout: 15 * time.Second}}},
			},
			{
				Name: "inbound_20880", Address: "0.0.0.0:20880", StatPrefix: "inbound|20880||",
				Codec: proxy.CodecConfig{Name: dubboCodec, Config: json.RawMessage(`{"maxBodySize":1048576}`)},
				Filters: []proxy.FilterConfig{{Name: "aeraki.meta_protocol.filters.local_ratelimit",
					Config: json.RawMessage(`{"statPrefix":"demo","tokenBucket":{"maxTokens":5,"tokensPerFill":5,"fillInterval":"60s"}}`)}},
				IdleTimeout: 90 * time.Second,
				Routes: proxy.RouteConfig{Name: "inbound|20880||", Routes: []proxy.Route{
					{
						Name: "v1",
						Match: []proxy.MetadataMatcher{
							{Key: "interface", Kind: proxy.MatchExact, Value: "org.example.Demo"},
							{Key: "method", Kind: proxy.MatchPresent},
							{Key: "user", Kind: proxy.MatchPrefix, Value: "bot-", Invert: true},
						},
						WeightedClusters: []proxy.WeightedCluster{{Name: demoV1, Weight: 20}, {Name: demoV2, Weight: 80}},
						HashPolicy:       []string{"user-id"},
						RequestMutation:  []codec.KeyValue{{Key: "foo", Value: "bar"}},
						ResponseMutation: []codec.KeyValue{{Key: "served-by", Value: "meltemi"}},
						Mirrors:          []proxy.Mirror{{Cluster: demoV2, PerMillion: 500000}},
					},
					{Name: "default", Cluster: demoAll},
				}},
			},
		},
		Clusters: []proxy.Cluster{
			{
				Name: demoV1, LB: proxy.LeastRequest, ConnectTimeout: 2 * time.Second, IdleTimeout: time.Hour,
				ConnectionsPerEndpoint: 4, PanicThreshold: 50,
				CircuitBreaker: proxy.CircuitBreaker{MaxPendingRequests: 1024, MaxRequests: 1024, MaxRetries: 3},
				Service:        proxy.Service{Host: demoHost, Name: "demo", Namespace: "shop"},
				Endpoints: []proxy.Endpoint{
					{Address: "10.2.0.9:20880", Priority: 1},
					{Address: "10.2.0.1:20880", Weight: 3, Labels: map[string]string{
						"version": "v1", "app": "demo", "workload": "demo-v1", "namespace": "shop",
						"service.istio.io/canonical-name": "demo", "service.istio.io/canonical-revision": "v1",
					}},
					{Address: "10.2.0.2:20880"},
					{Address: "[fd00::5]:20880", Weight: 1},
				},
			},
			{
				Name: demoV2, LB: proxy.RingHash, ConnectTimeout: time.Second, IdleTimeout: 5 * time.Minute,
				CircuitBreaker: envoyDefaults, PanicThreshold: 50,
				Service:   proxy.Service{Host: demoHost, Name: "demo-svc", Namespace: "shop"},
				Endpoints: []proxy.Endpoint{{Address: "10.3.0.2:20880", Priority: 1}},
			},
			{
				Name: "outbound|20880||demo.shop.svc.cluster.local", LB: proxy.Random, CircuitBreaker: envoyDefaults, PanicThreshold: 50,
				Service:   proxy.Service{Host: demoHost, Name: "demo", Namespace: "shop"},
				Endpoints: []proxy.Endpoint{{Address: "10.1.0.1:20880"}, {Address: "10.1.0.2:20880"}},
			},
			{
				Name: "outbound|20880||org.apache.dubbo.demo", LB: proxy.RoundRobin, IdleTimeout: time.Minute,
				CircuitBreaker: envoyDefaults, PanicThreshold: 50,
				Service:   proxy.Service{Host: "org.apache.dubbo.demo", Name: "org"},
				Endpoints: []proxy.Endpoint{{Address: "provider.example.com:20880"}},
			},
		},
	}

	if !reflect.DeepEqual(got.Config, want) {
		t.Errorf("config:\n got %s\nwant %s", dump(got.Config), dump(want))
	}

	wantNotes := []string{
		`listener "10.0.0.7_20880": filter_chains[0] has no meta_protocol_proxy filter; left out`,
		`listener "inbound_20880": filter_chains[0].filters[0] istio.metadata_exchange left out`,
		`listener "inbound_20880": meta_protocol_proxy tracing is not supported yet`,
	}
	for _, w := range wantNotes {
		if !slices.ContainsFunc(got.Notes, func(n string) bool { return strings.Contains(n, w) }) {
			t.Errorf("no note %q in\n%s", w, strings.Join(got.Notes, "\n"))
		}
	}
}

// envoyDefaults are Envoy's circuit breakers, for a cluster that sets none.
var envoyDefaults = proxy.CircuitBreaker{MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1024, MaxRetries: 3}

func dump(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

func TestTranslateErrors(t *testing.T) {
	okRoutes := func() map[string]*routev3.RouteConfiguration {
		return map[string]*routev3.RouteConfiguration{"r": carrier("r", metaRoute("all", "c"))}
	}
	okClusters := func() map[string]*clusterv3.Cluster {
		return map[string]*clusterv3.Cluster{"c": staticCluster("c", hostPort{"127.0.0.1", 1})}
	}
	listener := func(t *testing.T, mutate func(*mppv1alpha.MetaProtocolProxy)) map[string]*listenerv3.Listener {
		m := rdsProxy(dubboCodec, "r")
		if mutate != nil {
			mutate(m)
		}
		return map[string]*listenerv3.Listener{"l": listenerWith("l", "127.0.0.1", 1, mppFilter(t, m))}
	}
	routeWith := func(mutate func(*routev3.Route)) map[string]*routev3.RouteConfiguration {
		r := metaRoute("v1", "c")
		mutate(r)
		return map[string]*routev3.RouteConfiguration{"r": carrier("r", r)}
	}
	tests := []struct {
		name string
		res  func(t *testing.T) xds.Resources
		want string
	}{
		{
			name: "unknown codec",
			res: func(t *testing.T) xds.Resources {
				return xds.Resources{Listeners: listener(t, func(m *mppv1alpha.MetaProtocolProxy) {
					m.Protocol.Codec.Name = "aeraki.meta_protocol.codec.foo"
				}), Routes: okRoutes(), Clusters: okClusters()}
			},
			want: `listener "l": filter_chains[0].filters[0] meta_protocol_proxy: protocol.codec.name: codec "aeraki.meta_protocol.codec.foo" unknown (known: aeraki.meta_protocol.codec.dubbo)`,
		},
		{
			name: "no codec",
			res: func(t *testing.T) xds.Resources {
				return xds.Resources{Listeners: listener(t, func(m *mppv1alpha.MetaProtocolProxy) { m.Protocol = nil }),
					Routes: okRoutes(), Clusters: okClusters()}
			},
			want: `protocol.codec.name: required (or the deprecated codec.name)`,
		},
		{
			name: "bad regex",
			res: func(t *testing.T) xds.Resources {
				return xds.Resources{Listeners: listener(t, nil), Clusters: okClusters(),
					Routes: map[string]*routev3.RouteConfiguration{"r": carrier("r", metaRoute("v1", "c", regexHeader("method", "say(")))}}
			},
			want: `route configuration "r": virtual_hosts[0].routes[0] "v1": match.headers[0]: safe_regex_match: bad regex "say("`,
		},
		{
			name: "bad regex in a string matcher",
			res: func(t *testing.T) xds.Resources {
				return xds.Resources{Listeners: listener(t, nil), Clusters: okClusters(), Routes: routeWith(func(r *routev3.Route) {
					r.Match.Headers = []*routev3.HeaderMatcher{{Name: "m", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
						StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
							SafeRegex: &matcherv3.RegexMatcher{Regex: "[z-a]"}}}}}}
				})}
			},
			want: `match.headers[0]: string_match: safe_regex: bad regex "[z-a]"`,
		},
		{
			name: "route configuration not received",
			res: func(t *testing.T) xds.Resources {
				return xds.Resources{Listeners: listener(t, nil), Clusters: okClusters()}
			},
			want: `listener "l": route configuration "r" not received`,
		},
		{
			name: "load assignment not received",
			res: func(t *testing.T) xds.Resources {
				return xds.Resources{Listeners: listener(t, nil), Routes: okRoutes(),
					Clusters: map[string]*clusterv3.Cluster{"c": edsCluster("c")}}
			},
			want: `cluster "c": load assignment "c" not received`,
		},
		{
			name: "range matcher",
			res: func(t *testing.T) xds.Resources {
				return xds.Resources{Listeners: listener(t, nil), Clusters: okClusters(), Routes: routeWith(func(r *routev3.Route) {
					r.Match.Headers = []*routev3.HeaderMatcher{{Name: "n", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{
						RangeMatch: &typev3.Int64Range{Start: 1, End: 2}}}}
				})}
			},
			want: `match.headers[0]: range_match: not supported`,
		},
		{
			name: "redirect",
			res: func(t *testing.T) xds.Resources {
				return xds.Resources{Listeners: listener(t, nil), Clusters: okClusters(), Routes: routeWith(func(r *routev3.Route) {
					r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{}}
				})}
			},
			want: `routes[0] "v1": action: redirect is not supported`,
		},
		{
			name: "runtime fraction",
			res: func(t *testing.T) xds.Resources {
				return xds.Resources{Listeners: listener(t, nil), Clusters: okClusters(), Routes: routeWith(func(r *routev3.Route) {
					r.Match.RuntimeFraction = &corev3.RuntimeFractionalPercent{}
				})}
			},
			want: `match.runtime_fraction: not supported`,
		},
		{
			name: "two virtual hosts",
			res: func(t *testing.T) xds.Resources {
				rc := carrier("r", metaRoute("all", "c"))
				rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: "other"})
				return xds.Resources{Listeners: listener(t, nil), Clusters: okClusters(),
					Routes: map[string]*routev3.RouteConfiguration{"r": rc}}
			},
			want: `route configuration "r": virtual_hosts: 2 virtual hosts; MetaRDS carries exactly one`,
		},
		{
			name: "filter after the router",
			res: func(t *testing.T) xds.Resources {
				return xds.Resources{Listeners: listener(t, func(m *mppv1alpha.MetaProtocolProxy) {
					m.MetaProtocolFilters = append(m.MetaProtocolFilters, &mppv1alpha.MetaProtocolFilter{Name: "late"})
				}), Routes: okRoutes(), Clusters: okClusters()}
			},
			want: `meta_protocol_filters[1] "late": comes after the router`,
		},
		{
			name: "filter config of an unknown type",
			res: func(t *testing.T) xds.Resources {
				return xds.Resources{Listeners: listener(t, func(m *mppv1alpha.MetaProtocolProxy) {
					m.MetaProtocolFilters = []*mppv1alpha.MetaProtocolFilter{{Name: "x",
						Config: &anypb.Any{TypeUrl: "type.googleapis.com/example.Unknown"}}}
				}), Routes: okRoutes(), Clusters: okClusters()}
			},
			want: `meta_protocol_filters[0] "x": config: type type.googleapis.com/example.Unknown`,
		},
		{
			name: "no route specifier",
			res: func(t *testing.T) xds.Resources {
				return xds.Resources{Listeners: listener(t, func(m *mppv1alpha.MetaProtocolProxy) { m.RouteSpecifier = nil }),
					Clusters: okClusters()}
			},
			want: `route_config or rds: one is required`,
		},
		{
			name: "filter named like the proxy with another config",
			res: func(t *testing.T) xds.Resources {
				f := &listenerv3.Filter{Name: xds.FilterName, ConfigType: &listenerv3.Filter_TypedConfig{
					TypedConfig: mustAny(t, structOf(t, map[string]any{}))}}
				return xds.Resources{Listeners: map[string]*listenerv3.Listener{"l": listenerWith("l", "127.0.0.1", 1, f)}}
			},
			want: `filter_chains[0].filters[0] envoy.filters.network.meta_protocol_proxy: typed_config: type type.googleapis.com/google.protobuf.Struct`,
		},
		{
			name: "RBAC beside the proxy",
			res: func(t *testing.T) xds.Resources {
				l := listener(t, nil)["l"]
				l.FilterChains[0].Filters = append([]*listenerv3.Filter{{Name: "envoy.filters.network.rbac"}},
					l.FilterChains[0].Filters...)
				return xds.Resources{Listeners: map[string]*listenerv3.Listener{"l": l}, Routes: okRoutes(), Clusters: okClusters()}
			},
			want: `filter_chains[0].filters[0] envoy.filters.network.rbac: network filter not supported beside meta_protocol_proxy`,
		},
		{
			name: "two proxies in one listener",
			res: func(t *testing.T) xds.Resources {
				l := listener(t, nil)["l"]
				l.FilterChains = append(l.FilterChains, l.FilterChains[0])
				return xds.Resources{Listeners: map[string]*listenerv3.Listener{"l": l}, Routes: okRoutes(), Clusters: okClusters()}
			},
			want: `filter_chains[1].filters[0]: a second meta_protocol_proxy filter`,
		},
		{
			name: "named port",
			res: func(t *testing.T) xds.Resources {
				l := listener(t, nil)["l"]
				l.Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_NamedPort{NamedPort: "dubbo"}
				return xds.Resources{Listeners: map[string]*listenerv3.Listener{"l": l}, Routes: okRoutes(), Clusters: okClusters()}
			},
			want: `listener "l": address: socket_address.named_port: not supported`,
		},
		{
			name: "original destination cluster",
			res: func(t *testing.T) xds.Resources {
				c := staticCluster("c")
				c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
				return xds.Resources{Clusters: map[string]*clusterv3.Cluster{"c": c}}
			},
			want: `cluster "c": type: ORIGINAL_DST is not supported`,
		},
		{
			name: "cluster provided load balancing",
			res: func(t *testing.T) xds.Resources {
				c := staticCluster("c")
				c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
				return xds.Resources{Clusters: map[string]*clusterv3.Cluster{"c": c}}
			},
			want: `cluster "c": lb_policy: CLUSTER_PROVIDED is not supported`,
		},
		{
			name: "upstream TLS",
			res: func(t *testing.T) xds.Resources {
				c := staticCluster("c")
				c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls"}
				return xds.Resources{Clusters: map[string]*clusterv3.Cluster{"c": c}}
			},
			want: `cluster "c": transport_socket: envoy.transport_sockets.tls is not supported yet`,
		},
		{
			name: "named endpoint",
			res: func(t *testing.T) xds.Resources {
				cla := loadAssignment("c")
				cla.Endpoints[0].LbEndpoints = []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_EndpointName{EndpointName: "x"}}}
				return xds.Resources{Clusters: map[string]*clusterv3.Cluster{"c": edsCluster("c")},
					Endpoints: map[string]*endpointv3.ClusterLoadAssignment{"c": cla}}
			},
			want: `load assignment "c": endpoints[0].lb_endpoints[0]: only endpoint is supported`,
		},
		{
			name: "UDP endpoint",
			res: func(t *testing.T) xds.Resources {
				cla := loadAssignment("c", hostPort{"10.0.0.1", 53})
				cla.Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetSocketAddress().Protocol = corev3.SocketAddress_UDP
				return xds.Resources{Clusters: map[string]*clusterv3.Cluster{"c": edsCluster("c")},
					Endpoints: map[string]*endpointv3.ClusterLoadAssignment{"c": cla}}
			},
			want: `endpoints[0].lb_endpoints[0].endpoint.address: socket_address.protocol: UDP is not supported`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := xds.Translate(tc.res(t), codecs(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to contain %s", err, tc.want)
			}
		})
	}
}

// TestTranslateSkips checks the listeners the proxy leaves to others: no MetaProtocolProxy filter, or not
// bound by the proxy.
func TestTranslateSkips(t *testing.T) {
	unbound := listenerWith("virtual", "0.0.0.0", 20880, mppFilter(t, rdsProxy(dubboCodec, "r")))
	unbound.BindToPort = wrapperspb.Bool(false)
	res := xds.Resources{Listeners: map[string]*listenerv3.Listener{
		"http":    listenerWith("http", "0.0.0.0", 8080, &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager"}),
		"virtual": unbound,
	}}
	got, err := xds.Translate(res, codecs(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Config.Listeners) != 0 {
		t.Errorf("listeners %s, want none", dump(got.Config.Listeners))
	}
	if len(got.Notes) != 2 {
		t.Errorf("notes %q, want one per listener", got.Notes)
	}
}
