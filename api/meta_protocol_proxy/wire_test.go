// Package metaprotocolproxy_test proves that Meltemi's MetaProtocol messages are wire-identical to
// Aeraki's: every field sits at Aeraki's number with Aeraki's wire type, the type URLs are Aeraki's,
// and what an Aeraki control plane sends (binary or TypedStruct JSON) decodes with nothing unknown.
//
// The expected numbers below are written from Aeraki's published API, not read back from our
// generated code, so a renumbered field in a .proto file fails here.
package metaprotocolproxy_test

import (
	"fmt"
	"slices"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	routev1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/config/route/v1alpha"
	istiostatsv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/istio_stats/v1alpha"
	localratelimitv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/local_ratelimit/v1alpha"
	metadataexchangev1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/metadata_exchange/v1alpha"
	ratelimitv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/ratelimit/v1alpha"
	routerv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/router/v1alpha"
	metaprotocolproxyv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/v1alpha"
)

// field is what a message must hold at one field number: the wire type and, for our own nested
// messages, the fields inside. Envoy's and protobuf's own messages are checked at the top only.
type field struct {
	typ protowire.Type
	sub shape
}

// shape maps each field number a fully populated message carries to what it must hold there.
type shape map[protowire.Number]field

var (
	bytesField   = field{typ: protowire.BytesType}
	varintField  = field{typ: protowire.VarintType}
	doubleField  = field{typ: protowire.Fixed64Type}
	stringField  = bytesField
	messageField = bytesField
)

func nested(s shape) field { return field{typ: protowire.BytesType, sub: s} }

// Aeraki's shapes, from its API: message by message, field number by field number.
var (
	anyShape      = shape{1: stringField, 2: bytesField}
	keyValueShape = shape{1: stringField, 2: stringField}
	codecShape    = shape{1: stringField, 2: nested(anyShape)}

	routeMatchShape = shape{1: messageField} // metadata: repeated Envoy HeaderMatcher

	mirrorPolicyShape = shape{1: stringField, 2: messageField}

	routeActionClusterShape = shape{
		1:  stringField,               // cluster
		10: stringField,               // hash_policy (repeated string)
		11: nested(mirrorPolicyShape), // request_mirror_policies
	}
	routeActionWeightedShape = shape{
		2:  messageField, // weighted_clusters: Envoy WeightedCluster
		10: stringField,
		11: nested(mirrorPolicyShape),
	}
	routeShape = shape{
		1:  stringField,
		2:  nested(routeMatchShape),
		3:  nested(routeActionClusterShape),
		19: nested(keyValueShape),
		20: nested(keyValueShape),
	}
	routeConfigurationShape = shape{1: stringField, 2: nested(routeShape)}

	tracingShape = shape{
		3: nested(shape{1: doubleField}), // client_sampling: Envoy Percent{value double}
		4: nested(shape{1: doubleField}), // random_sampling
		5: nested(shape{1: doubleField}), // overall_sampling
		6: varintField,                   // verbose
		7: nested(shape{1: varintField}), // max_tag_length: UInt32Value
		9: messageField,                  // provider: Envoy Tracing.Http
	}
	metaProtocolProxyRdsShape = shape{
		1:  stringField,                                        // stat_prefix
		2:  stringField,                                        // application_protocol (deprecated)
		3:  nested(shape{1: messageField, 2: stringField}),     // rds{config_source, route_config_name}
		5:  nested(codecShape),                                 // codec (deprecated)
		6:  nested(shape{1: stringField, 2: nested(anyShape)}), // meta_protocol_filters
		7:  nested(tracingShape),
		8:  messageField,                                                         // access_log: Envoy AccessLog
		11: nested(shape{1: varintField, 2: varintField}),                        // idle_timeout: Duration
		12: nested(shape{1: stringField, 2: nested(codecShape), 3: varintField}), // protocol
	}

	localRateLimitShape = shape{
		1: stringField,
		2: messageField, // Envoy TokenBucket
		3: nested(shape{1: nested(routeMatchShape), 2: messageField}),
	}
	rateLimitShape = shape{
		1: nested(routeMatchShape),
		2: stringField,
		3: nested(shape{1: varintField, 2: varintField}), // timeout: Duration
		4: varintField,
		5: messageField, // Envoy RateLimitServiceConfig
		6: nested(shape{1: stringField, 2: stringField}),
	}
)

// Fully populated messages: every field of Aeraki's messages is set, nested ones too.

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatalf("anypb.New(%T): %v", m, err)
	}
	return a
}

func fullRouteMatch() *routev1alpha.RouteMatch {
	return &routev1alpha.RouteMatch{Metadata: []*routev3.HeaderMatcher{
		{Name: "interface", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "org.example.Demo"}},
		}},
		{Name: "method", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}},
	}}
}

func fullMirrorPolicy() *routev1alpha.RouteAction_RequestMirrorPolicy {
	return &routev1alpha.RouteAction_RequestMirrorPolicy{
		Cluster: "outbound|20880|v2|org.example.demo",
		RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
			Numerator: 500000, Denominator: typev3.FractionalPercent_MILLION,
		}},
	}
}

func fullRoute() *routev1alpha.Route {
	return &routev1alpha.Route{
		Name:  "v1",
		Match: fullRouteMatch(),
		Route: &routev1alpha.RouteAction{
			ClusterSpecifier:      &routev1alpha.RouteAction_Cluster{Cluster: "outbound|20880|v1|org.example.demo"},
			HashPolicy:            []string{"user-id"},
			RequestMirrorPolicies: []*routev1alpha.RouteAction_RequestMirrorPolicy{fullMirrorPolicy()},
		},
		RequestMutation:  []*routev1alpha.KeyValue{{Key: "foo", Value: "bar"}},
		ResponseMutation: []*routev1alpha.KeyValue{{Key: "baz", Value: "qux"}},
	}
}

func fullRouteConfiguration() *routev1alpha.RouteConfiguration {
	return &routev1alpha.RouteConfiguration{Name: "org.example.demo_20880", Routes: []*routev1alpha.Route{fullRoute()}}
}

func fullCodec(t *testing.T) *metaprotocolproxyv1alpha.Codec {
	// The codec's config is opaque to the proxy framework; any non-empty message will do.
	config, err := structpb.NewStruct(map[string]any{"max_frame_size": 8388608})
	if err != nil {
		t.Fatal(err)
	}
	return &metaprotocolproxyv1alpha.Codec{Name: "aeraki.meta_protocol.codec.dubbo", Config: mustAny(t, config)}
}

func fullMetaProtocolProxy(t *testing.T) *metaprotocolproxyv1alpha.MetaProtocolProxy {
	return &metaprotocolproxyv1alpha.MetaProtocolProxy{
		StatPrefix:          "outbound|20880||org.example.demo",
		ApplicationProtocol: "dubbo",
		RouteSpecifier: &metaprotocolproxyv1alpha.MetaProtocolProxy_Rds{Rds: &metaprotocolproxyv1alpha.Rds{
			ConfigSource: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion:    corev3.ApiVersion_V3,
			},
			RouteConfigName: "org.example.demo_20880",
		}},
		Codec: fullCodec(t),
		MetaProtocolFilters: []*metaprotocolproxyv1alpha.MetaProtocolFilter{
			// A non-empty config, so that the Any's value field is on the wire too (the router's
			// empty config would leave it out).
			{Name: "aeraki.meta_protocol.filters.istio_stats", Config: mustAny(t, &istiostatsv1alpha.IstioStats{DestinationService: "org.example.demo"})},
		},
		Tracing: &metaprotocolproxyv1alpha.Tracing{
			ClientSampling:  &typev3.Percent{Value: 100},
			RandomSampling:  &typev3.Percent{Value: 50},
			OverallSampling: &typev3.Percent{Value: 25},
			Verbose:         true,
			MaxTagLength:    wrapperspb.UInt32(128),
			Provider:        &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry"},
		},
		AccessLog:   []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.file"}},
		IdleTimeout: &durationpb.Duration{Seconds: 3600, Nanos: 500},
		Protocol: &metaprotocolproxyv1alpha.ApplicationProtocol{
			Name: "dubbo", Codec: fullCodec(t), Multiplexing: true,
		},
	}
}

func fullTokenBucket() *typev3.TokenBucket {
	return &typev3.TokenBucket{MaxTokens: 5, TokensPerFill: wrapperspb.UInt32(5), FillInterval: durationpb.New(60e9)}
}

func fullLocalRateLimit() *localratelimitv1alpha.LocalRateLimit {
	return &localratelimitv1alpha.LocalRateLimit{
		StatPrefix:  "local_ratelimit",
		TokenBucket: fullTokenBucket(),
		Conditions: []*localratelimitv1alpha.LocalRateLimitCondition{
			{Match: fullRouteMatch(), TokenBucket: fullTokenBucket()},
		},
	}
}

func fullRateLimit() *ratelimitv1alpha.RateLimit {
	return &ratelimitv1alpha.RateLimit{
		Match:           fullRouteMatch(),
		Domain:          "production",
		Timeout:         &durationpb.Duration{Seconds: 1, Nanos: 5e8},
		FailureModeDeny: true,
		RateLimitService: &ratelimitv3.RateLimitServiceConfig{
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "outbound|8081||rate-limit.example"},
			}},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
		Descriptors: []*ratelimitv1alpha.Descriptor{{Property: "method", DescriptorKey: "method"}},
	}
}

// checkShape decodes b field by field and fails unless it holds exactly the fields of want, each
// with its wire type, recursing into our own nested messages.
func checkShape(t *testing.T, path string, b []byte, want shape) {
	t.Helper()
	seen := map[protowire.Number]bool{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("%s: bad tag: %v", path, protowire.ParseError(n))
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			t.Fatalf("%s: field %d: bad value: %v", path, num, protowire.ParseError(m))
		}
		value := b[:m]
		b = b[m:]

		at := fmt.Sprintf("%s.%d", path, num)
		f, ok := want[num]
		if !ok {
			t.Errorf("%s: field number %d is not in Aeraki's message", path, num)
			continue
		}
		if typ != f.typ {
			t.Errorf("%s: wire type %d, Aeraki's is %d", at, typ, f.typ)
			continue
		}
		seen[num] = true
		if f.sub != nil {
			inner, k := protowire.ConsumeBytes(value)
			if k < 0 {
				t.Fatalf("%s: bad length-delimited value", at)
			}
			checkShape(t, at, inner, f.sub)
		}
	}
	for num := range want {
		if !seen[num] {
			t.Errorf("%s: field %d missing from the encoding (test message not fully populated?)", path, num)
		}
	}
}

func TestWireShapeIsAeraki(t *testing.T) {
	weighted := fullRoute()
	weighted.Route.ClusterSpecifier = &routev1alpha.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
		Clusters: []*routev3.WeightedCluster_ClusterWeight{
			{Name: "outbound|20880|v1|org.example.demo", Weight: wrapperspb.UInt32(20)},
			{Name: "outbound|20880|v2|org.example.demo", Weight: wrapperspb.UInt32(80)},
		},
	}}
	inline := fullMetaProtocolProxy(t)
	inline.RouteSpecifier = &metaprotocolproxyv1alpha.MetaProtocolProxy_RouteConfig{RouteConfig: fullRouteConfiguration()}
	inlineShape := shape{}
	for k, v := range metaProtocolProxyRdsShape {
		inlineShape[k] = v
	}
	delete(inlineShape, 3)
	inlineShape[4] = nested(routeConfigurationShape)

	tests := []struct {
		name string
		msg  proto.Message
		want shape
	}{
		{"MetaProtocolProxy with rds", fullMetaProtocolProxy(t), metaProtocolProxyRdsShape},
		{"MetaProtocolProxy with route_config", inline, inlineShape},
		{"RouteConfiguration", fullRouteConfiguration(), routeConfigurationShape},
		{"Route", fullRoute(), routeShape},
		{"RouteMatch", fullRouteMatch(), routeMatchShape},
		{"RouteAction with cluster", fullRoute().Route, routeActionClusterShape},
		{"RouteAction with weighted_clusters", weighted.Route, routeActionWeightedShape},
		{"LocalRateLimit", fullLocalRateLimit(), localRateLimitShape},
		{"RateLimit", fullRateLimit(), rateLimitShape},
		{"IstioStats", &istiostatsv1alpha.IstioStats{DestinationService: "org.example.demo"}, shape{1: stringField}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			checkShape(t, string(tt.msg.ProtoReflect().Descriptor().Name()), b, tt.want)

			// And back: nothing lost, nothing left over as unknown fields.
			back := tt.msg.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(b, back); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(tt.msg, back) {
				t.Errorf("round trip changed the message:\n got %v\nwant %v", back, tt.msg)
			}
		})
	}
}

func TestTypeURLsAreAeraki(t *testing.T) {
	tests := []struct {
		msg  proto.Message
		want string
	}{
		{&metaprotocolproxyv1alpha.MetaProtocolProxy{}, "type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy"},
		{&routev1alpha.RouteConfiguration{}, "type.googleapis.com/aeraki.meta_protocol_proxy.config.route.v1alpha.RouteConfiguration"},
		{&routerv1alpha.Router{}, "type.googleapis.com/aeraki.meta_protocol_proxy.filters.router.v1alpha.Router"},
		{&localratelimitv1alpha.LocalRateLimit{}, "type.googleapis.com/aeraki.meta_protocol_proxy.filters.local_ratelimit.v1alpha.LocalRateLimit"},
		{&ratelimitv1alpha.RateLimit{}, "type.googleapis.com/aeraki.meta_protocol_proxy.filters.ratelimit.v1alpha.RateLimit"},
		{&istiostatsv1alpha.IstioStats{}, "type.googleapis.com/aeraki.meta_protocol_proxy.filters.istio_stats.v1alpha.IstioStats"},
		{&metadataexchangev1alpha.MetadataExchange{}, "type.googleapis.com/aeraki.meta_protocol_proxy.filters.metadata_exchange.v1alpha.MetadataExchange"},
	}
	for _, tt := range tests {
		a, err := anypb.New(tt.msg)
		if err != nil {
			t.Fatalf("anypb.New(%T): %v", tt.msg, err)
		}
		if a.GetTypeUrl() != tt.want {
			t.Errorf("%T: type URL %q, want %q", tt.msg, a.GetTypeUrl(), tt.want)
		}
	}
}

// noUnknownFields fails if m or any message inside it kept bytes it could not place in a field,
// which is what a renumbered or retyped field would leave behind.
func noUnknownFields(t *testing.T, path string, m protoreflect.Message) {
	t.Helper()
	if u := m.GetUnknown(); len(u) > 0 {
		t.Errorf("%s: %d bytes of unknown fields", path, len(u))
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		at := path + "." + string(fd.Name())
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					noUnknownFields(t, at, mv.Message())
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := 0; i < v.List().Len(); i++ {
					noUnknownFields(t, fmt.Sprintf("%s[%d]", at, i), v.List().Get(i).Message())
				}
			}
		case fd.Message() != nil:
			noUnknownFields(t, at, v.Message())
		}
		return true
	})
}

// TestDecodesAerakiBytes builds a MetaProtocolProxy byte by byte at Aeraki's field numbers, the
// way an Aeraki control plane's encoder lays it out, and checks that every value lands in the
// field of the same meaning, the deprecated ones included.
func TestDecodesAerakiBytes(t *testing.T) {
	str := func(b []byte, num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
	}
	msg := func(b []byte, num protowire.Number, inner []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), inner)
	}
	varint := func(b []byte, num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
	}

	var b []byte
	b = str(b, 1, "outbound|20880||org.example.demo")
	b = str(b, 2, "dubbo")
	b = msg(b, 3, str(nil, 2, "org.example.demo_20880"))
	b = msg(b, 5, str(nil, 1, "aeraki.meta_protocol.codec.dubbo"))
	b = msg(b, 6, str(nil, 1, "aeraki.meta_protocol.filters.router"))
	b = msg(b, 7, msg(nil, 3, protowire.AppendFixed64(protowire.AppendTag(nil, 1, protowire.Fixed64Type), 0x4059000000000000))) // 100.0
	b = msg(b, 11, varint(nil, 1, 60))
	b = msg(b, 12, varint(str(str(nil, 1, "dubbo"), 2, ""), 3, 1))

	got := &metaprotocolproxyv1alpha.MetaProtocolProxy{}
	if err := proto.Unmarshal(b, got); err != nil {
		t.Fatal(err)
	}
	noUnknownFields(t, "MetaProtocolProxy", got.ProtoReflect())
	checks := []struct {
		field     string
		got, want any
	}{
		{"stat_prefix", got.GetStatPrefix(), "outbound|20880||org.example.demo"},
		{"application_protocol", got.GetApplicationProtocol(), "dubbo"},
		{"rds.route_config_name", got.GetRds().GetRouteConfigName(), "org.example.demo_20880"},
		{"codec.name", got.GetCodec().GetName(), "aeraki.meta_protocol.codec.dubbo"},
		{"meta_protocol_filters", len(got.GetMetaProtocolFilters()), 1},
		{"tracing.client_sampling", got.GetTracing().GetClientSampling().GetValue(), 100.0},
		{"idle_timeout", got.GetIdleTimeout().GetSeconds(), int64(60)},
		{"protocol.name", got.GetProtocol().GetName(), "dubbo"},
		{"protocol.multiplexing", got.GetProtocol().GetMultiplexing(), true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.field, c.got, c.want)
		}
	}
}

// TestDecodesAerakiTypedStruct decodes the filter config the way an Aeraki control plane sends it:
// a udpa TypedStruct whose value is the message in protobuf JSON with proto field names.
func TestDecodesAerakiTypedStruct(t *testing.T) {
	const value = `{
		"stat_prefix": "outbound|20880||org.apache.dubbo.samples.basic.api.demoservice",
		"application_protocol": "dubbo",
		"rds": {
			"config_source": {
				"api_config_source": {
					"api_type": "GRPC",
					"grpc_services": [{"envoy_grpc": {"cluster_name": "aeraki-xds"}}],
					"transport_api_version": "V3"
				},
				"resource_api_version": "V3"
			},
			"route_config_name": "org.apache.dubbo.samples.basic.api.demoservice_20880"
		},
		"codec": {"name": "aeraki.meta_protocol.codec.dubbo"},
		"meta_protocol_filters": [{"name": "aeraki.meta_protocol.filters.router"}],
		"tracing": {
			"client_sampling": {"value": 100},
			"random_sampling": {"value": 100},
			"overall_sampling": {"value": 100}
		}
	}`
	// Go through structpb as a TypedStruct's value does.
	var st structpb.Struct
	if err := protojson.Unmarshal([]byte(value), &st); err != nil {
		t.Fatal(err)
	}
	js, err := protojson.Marshal(&st)
	if err != nil {
		t.Fatal(err)
	}
	got := &metaprotocolproxyv1alpha.MetaProtocolProxy{}
	if err := protojson.Unmarshal(js, got); err != nil {
		t.Fatalf("Aeraki's JSON does not decode: %v", err)
	}
	if got.GetRds().GetConfigSource().GetApiConfigSource().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "aeraki-xds" {
		t.Errorf("rds.config_source lost: %v", got.GetRds())
	}
	if got.GetApplicationProtocol() != "dubbo" || got.GetCodec().GetName() != "aeraki.meta_protocol.codec.dubbo" {
		t.Errorf("deprecated fields lost: application_protocol=%q codec=%v", got.GetApplicationProtocol(), got.GetCodec())
	}
	if got.GetTracing().GetOverallSampling().GetValue() != 100 {
		t.Errorf("tracing lost: %v", got.GetTracing())
	}
}

// TestDecodesAerakiHeaderMatchers checks the matcher forms Aeraki's control plane writes into
// RouteMatch.metadata: Envoy's deprecated exact_match / prefix_match / safe_regex_match, and
// present_match for "any value".
func TestDecodesAerakiHeaderMatchers(t *testing.T) {
	in := &routev1alpha.RouteMatch{Metadata: []*routev3.HeaderMatcher{
		{Name: "method", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "sayHello"}},
		{Name: "interface", HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "org.apache"}},
		{Name: "version", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "v[0-9]+"}}},
		{Name: "group", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}},
	}}
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	// Envoy's numbers for those forms: exact_match 4, safe_regex_match 11, present_match 7, prefix_match 9.
	var nums []protowire.Number
	for rest := b; len(rest) > 0; {
		_, _, n := protowire.ConsumeTag(rest)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		rest = rest[n:]
		inner, m := protowire.ConsumeBytes(rest)
		if m < 0 {
			t.Fatalf("bad matcher: %v", protowire.ParseError(m))
		}
		rest = rest[m:]
		for len(inner) > 0 {
			num, typ, k := protowire.ConsumeTag(inner)
			if k < 0 {
				t.Fatalf("bad tag: %v", protowire.ParseError(k))
			}
			inner = inner[k:]
			if k = protowire.ConsumeFieldValue(num, typ, inner); k < 0 {
				t.Fatalf("field %d: %v", num, protowire.ParseError(k))
			}
			inner = inner[k:]
			if num != 1 { // 1 is the name
				nums = append(nums, num)
			}
		}
	}
	if want := []protowire.Number{4, 9, 11, 7}; !slices.Equal(nums, want) {
		t.Errorf("matcher field numbers %v, want %v", nums, want)
	}
	out := &routev1alpha.RouteMatch{}
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, out) {
		t.Errorf("round trip changed the matchers:\n got %v\nwant %v", out, in)
	}
}
