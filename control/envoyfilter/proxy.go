package envoyfilter

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	routev1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/config/route/v1alpha"
	istiostatsv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/istio_stats/v1alpha"
	localratelimitv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/local_ratelimit/v1alpha"
	ratelimitv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/ratelimit/v1alpha"
	mppv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/v1alpha"
	"github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/translate"
)

// Names of the MetaProtocol filters Aeraki puts in every chain, besides the router and the rate limits.
const (
	// MetadataExchangeFilter exchanges the peers' workload metadata, for Istio's metrics labels.
	MetadataExchangeFilter = "aeraki.meta_protocol.filters.metadata_exchange"
	// IstioStatsFilter records Istio's standard request metrics.
	IstioStatsFilter = "aeraki.meta_protocol.filters.istio_stats"
)

// fileAccessLog is the name Envoy registers its file access logger under.
const fileAccessLog = "envoy.access_loggers.file"

// outboundProxy is the client side's filter: routes over RDS from Meltemi's controller, under the name
// Meltemi's controller serves them by ({host}_{port}); Aeraki's filters, without rate limits (which
// Aeraki applies on the server side only).
func (g *generator) outboundProxy(svc *model.Service, p *model.Port) (*structpb.Struct, error) {
	mpp := &mppv1alpha.MetaProtocolProxy{
		StatPrefix: translate.ClusterName(p.Number, "", svc.Host),
		RouteSpecifier: &mppv1alpha.MetaProtocolProxy_Rds{Rds: &mppv1alpha.Rds{
			ConfigSource:    g.xdsSource(),
			RouteConfigName: translate.RouteConfigName(svc.Host, p.Number),
		}},
	}
	filters, err := commonFilters(svc.Host)
	if err != nil {
		return nil, err
	}
	mpp.MetaProtocolFilters = filters
	return g.value(mpp, p)
}

// inboundProxy is the server side's filter: one inline route to the inbound cluster (the workload
// itself), after the MetaRouter's local and global rate limits.
func (g *generator) inboundProxy(svc *model.Service, p *model.Port) (*structpb.Struct, error) {
	cluster := InboundCluster(inboundPort(p))
	mpp := &mppv1alpha.MetaProtocolProxy{
		StatPrefix: cluster,
		RouteSpecifier: &mppv1alpha.MetaProtocolProxy_RouteConfig{RouteConfig: &routev1alpha.RouteConfiguration{
			Name: cluster,
			Routes: []*routev1alpha.Route{{Route: &routev1alpha.RouteAction{
				ClusterSpecifier: &routev1alpha.RouteAction_Cluster{Cluster: cluster},
			}}}},
		},
	}
	var filters []*mppv1alpha.MetaProtocolFilter
	if mr := svc.Router; mr != nil {
		if l := mr.Spec.LocalRateLimit; l != nil && (l.TokenBucket != nil || len(l.Conditions) > 0) {
			f, err := localRateLimitFilter(svc.Host, l)
			if err != nil {
				return nil, fmt.Errorf("%s: spec.localRateLimit: %w", mr.Key(), err)
			}
			filters = append(filters, f)
		}
		// The model leaves RateLimitService nil, and says why, when the name matches no service port.
		if gl := mr.Spec.GlobalRateLimit; gl != nil && svc.RateLimitService != nil {
			f, err := globalRateLimitFilter(gl)
			if err != nil {
				return nil, fmt.Errorf("%s: spec.globalRateLimit: %w", mr.Key(), err)
			}
			filters = append(filters, f)
		}
	}
	common, err := commonFilters(svc.Host)
	if err != nil {
		return nil, err
	}
	mpp.MetaProtocolFilters = append(filters, common...)
	return g.value(mpp, p)
}

// value completes a filter config with what both sides share and wraps it as Aeraki does: the
// filter's name and a TypedStruct holding the config in protobuf JSON. The deprecated
// application_protocol and codec are the only protocol fields set, as Aeraki sets them: a data plane that
// does not know the newer protocol field would refuse the whole config.
func (g *generator) value(mpp *mppv1alpha.MetaProtocolProxy, p *model.Port) (*structpb.Struct, error) {
	mpp.ApplicationProtocol = p.App
	mpp.Codec = &mppv1alpha.Codec{Name: p.Codec}
	if a := g.opts.AccessLog; a != nil {
		al, err := accessLog(a)
		if err != nil {
			return nil, err
		}
		mpp.AccessLog = []*accesslogv3.AccessLog{al}
	}
	if t := g.opts.Tracing; t != nil {
		mpp.Tracing = &mppv1alpha.Tracing{
			ClientSampling:  &typev3.Percent{Value: 100},
			RandomSampling:  &typev3.Percent{Value: t.Sampling},
			OverallSampling: &typev3.Percent{Value: 100},
		}
	}
	config, err := toStruct(mpp)
	if err != nil {
		return nil, err
	}
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		"name": structpb.NewStringValue(translate.MetaProtocolProxyFilter),
		"typed_config": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"@type":    structpb.NewStringValue(TypedStructType),
			"type_url": structpb.NewStringValue(MetaProtocolProxyType),
			"value":    structpb.NewStructValue(config),
		}}),
	}}, nil
}

// xdsSource is the gRPC config source of Meltemi's controller, reached through the bootstrap cluster:
// Istio's sidecars keep their one ADS stream for istiod.
func (g *generator) xdsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType:             corev3.ApiConfigSource_GRPC,
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: g.opts.XDSCluster},
			}}},
		}},
	}
}

// commonFilters end every chain, as in Aeraki: metadata exchange and Istio's stats (for Istio's metrics,
// which Aeraki's data plane records in these filters), then the router. Aeraki gives the first and
// the last no config.
func commonFilters(host string) ([]*mppv1alpha.MetaProtocolFilter, error) {
	stats, err := anypb.New(&istiostatsv1alpha.IstioStats{DestinationService: host})
	if err != nil {
		return nil, err
	}
	return []*mppv1alpha.MetaProtocolFilter{
		{Name: MetadataExchangeFilter},
		{Name: IstioStatsFilter, Config: stats},
		{Name: translate.RouterFilter},
	}, nil
}

// localRateLimitFilter translates a MetaRouter's localRateLimit as Meltemi's translator does; the stats
// are prefixed with the host, as in Aeraki.
func localRateLimitFilter(host string, l *v1alpha1.LocalRateLimit) (*mppv1alpha.MetaProtocolFilter, error) {
	lrl := &localratelimitv1alpha.LocalRateLimit{StatPrefix: host}
	if l.TokenBucket != nil {
		lrl.TokenBucket = tokenBucket(l.TokenBucket)
	}
	for i := range l.Conditions {
		c := &l.Conditions[i]
		match, err := headerMatchers(&c.Match)
		if err != nil {
			return nil, fmt.Errorf("conditions[%d].match: %w", i, err)
		}
		lrl.Conditions = append(lrl.Conditions, &localratelimitv1alpha.LocalRateLimitCondition{
			Match:       &routev1alpha.RouteMatch{Metadata: match},
			TokenBucket: tokenBucket(&c.TokenBucket),
		})
	}
	config, err := anypb.New(lrl)
	if err != nil {
		return nil, err
	}
	return &mppv1alpha.MetaProtocolFilter{Name: translate.LocalRateLimitFilter, Config: config}, nil
}

// globalRateLimitFilter translates a MetaRouter's globalRateLimit. The rate limit service is the Istio
// cluster the MetaRouter names, which every sidecar has.
func globalRateLimitFilter(gl *v1alpha1.GlobalRateLimit) (*mppv1alpha.MetaProtocolFilter, error) {
	match, err := headerMatchers(&gl.Match)
	if err != nil {
		return nil, fmt.Errorf("match: %w", err)
	}
	rl := &ratelimitv1alpha.RateLimit{
		Match:           &routev1alpha.RouteMatch{Metadata: match},
		Domain:          gl.Domain,
		FailureModeDeny: gl.DenyOnFail,
		RateLimitService: &ratelimitconfv3.RateLimitServiceConfig{
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: gl.RateLimitService},
			}},
			// Aeraki leaves it AUTO, which Envoy has deprecated for V3, the only version there is.
			TransportApiVersion: corev3.ApiVersion_V3,
		},
	}
	if gl.RequestTimeout != nil {
		rl.Timeout = durationpb.New(gl.RequestTimeout.Duration)
	}
	for _, d := range gl.Descriptors {
		rl.Descriptors = append(rl.Descriptors, &ratelimitv1alpha.Descriptor{Property: d.Property, DescriptorKey: d.DescriptorKey})
	}
	config, err := anypb.New(rl)
	if err != nil {
		return nil, err
	}
	return &mppv1alpha.MetaProtocolFilter{Name: translate.GlobalRateLimitFilter, Config: config}, nil
}

func tokenBucket(tb *v1alpha1.TokenBucket) *typev3.TokenBucket {
	out := &typev3.TokenBucket{MaxTokens: tb.MaxTokens, FillInterval: durationpb.New(tb.FillInterval.Duration)}
	// Absent means one token per fill; Envoy refuses 0, which Aeraki leaves out too.
	if tb.TokensPerFill != nil && *tb.TokensPerFill != 0 {
		out.TokensPerFill = wrapperspb.UInt32(*tb.TokensPerFill)
	}
	return out
}

// headerMatchers writes a match the way Meltemi's MetaRDS carrier does (docs/metards-carrier.md): one
// matcher per attribute, sorted by key, in the non-deprecated string_match forms; regex "*" or "" and an
// empty prefix mean the key only has to be present.
func headerMatchers(m *v1alpha1.MetaRouteMatch) ([]*routev3.HeaderMatcher, error) {
	if m == nil {
		return nil, nil
	}
	var out []*routev3.HeaderMatcher
	for _, key := range slices.Sorted(maps.Keys(m.Attributes)) {
		sm := m.Attributes[key]
		hm := &routev3.HeaderMatcher{Name: key}
		var pattern matcherv3.StringMatcher
		switch {
		case sm.Exact != nil:
			pattern.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: *sm.Exact}
		case sm.Prefix != nil && *sm.Prefix != "":
			pattern.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: *sm.Prefix}
		case sm.Regex != nil && *sm.Regex != "" && *sm.Regex != "*":
			pattern.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
				// Deprecated by Envoy, but required by the older Envoys Aeraki's data plane is built on.
				EngineType: &matcherv3.RegexMatcher_GoogleRe2{GoogleRe2: &matcherv3.RegexMatcher_GoogleRE2{}},
				Regex:      *sm.Regex,
			}}
		case sm.Prefix != nil, sm.Regex != nil:
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
			out = append(out, hm)
			continue
		default:
			return nil, fmt.Errorf("attributes.%s: none of exact, prefix and regex is set", key)
		}
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: &pattern}
		out = append(out, hm)
	}
	return out, nil
}

// Aeraki's access log formats, used when the mesh config gives none.
const defaultTextFormat = "[%START_TIME%] %REQ(X-META-PROTOCOL-APPLICATION-PROTOCOL)% %RESPONSE_CODE% " +
	"%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" " +
	"%BYTES_RECEIVED% %BYTES_SENT% %DURATION%  \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(X-REQUEST-ID)%\" " +
	"%UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% " +
	"%ROUTE_NAME%\n"

var defaultJSONFormat = map[string]string{
	"start_time":                        "%START_TIME%",
	"route_name":                        "%ROUTE_NAME%",
	"application_protocol":              "%REQ(X-META-PROTOCOL-APPLICATION-PROTOCOL)%",
	"response_code":                     "%RESPONSE_CODE%",
	"response_code_details":             "%RESPONSE_CODE_DETAILS%",
	"connection_termination_details":    "%CONNECTION_TERMINATION_DETAILS%",
	"bytes_received":                    "%BYTES_RECEIVED%",
	"bytes_sent":                        "%BYTES_SENT%",
	"duration":                          "%DURATION%",
	"request_id":                        "%REQ(X-REQUEST-ID)%",
	"upstream_cluster":                  "%UPSTREAM_CLUSTER%",
	"upstream_local_address":            "%UPSTREAM_LOCAL_ADDRESS%",
	"downstream_local_address":          "%DOWNSTREAM_LOCAL_ADDRESS%",
	"downstream_remote_address":         "%DOWNSTREAM_REMOTE_ADDRESS%",
	"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}

func accessLog(a *AccessLog) (*accesslogv3.AccessLog, error) {
	format, err := accessLogFormat(a)
	if err != nil {
		return nil, err
	}
	config, err := anypb.New(&filev3.FileAccessLog{
		Path:            a.Path,
		AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: format},
	})
	if err != nil {
		return nil, err
	}
	return &accesslogv3.AccessLog{Name: fileAccessLog, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: config}}, nil
}

func accessLogFormat(a *AccessLog) (*corev3.SubstitutionFormatString, error) {
	if strings.EqualFold(a.Encoding, "JSON") {
		fields := &structpb.Struct{}
		if a.Format == "" {
			for k, v := range defaultJSONFormat {
				if fields.Fields == nil {
					fields.Fields = map[string]*structpb.Value{}
				}
				fields.Fields[k] = structpb.NewStringValue(v)
			}
		} else if err := protojson.Unmarshal([]byte(a.Format), fields); err != nil {
			return nil, fmt.Errorf("a JSON encoding needs a JSON object of fields: %w", err)
		}
		return &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: fields}}, nil
	}
	text := defaultTextFormat
	if a.Format != "" {
		text = a.Format
	}
	return &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
		TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: text}},
	}}, nil
}

// toStruct is a message's protobuf JSON as a Struct: what a TypedStruct's value holds, and what Aeraki
// writes (protojson's field names, embedded Anys with their @type).
func toStruct(m proto.Message) (*structpb.Struct, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%T: %w", m, err)
	}
	out := &structpb.Struct{}
	if err := protojson.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("%T: %w", m, err)
	}
	if len(out.Fields) == 0 {
		return nil, errors.New("empty filter config")
	}
	return out, nil
}
