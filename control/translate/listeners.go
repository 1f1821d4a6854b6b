package translate

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	routev1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/config/route/v1alpha"
	localratelimitv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/local_ratelimit/v1alpha"
	routerv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/router/v1alpha"
	mppv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/v1alpha"
	"github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/control/model"
)

// multiplexing lists the application protocols known to carry a request id that replies echo, so that
// many requests may share one upstream connection. A protocol not listed (a private one, say) is
// reported as not multiplexing, the safe reading; the proxy itself asks the codec.
var multiplexing = map[string]bool{
	"dubbo": true,
	"brpc":  true,
	"trpc":  true,
}

// listener builds the listener of one address:port: one filter chain holding the MetaProtocolProxy, which
// takes its routes over RDS (the route configuration of the service that owns the address).
func listener(l model.Listener) (*listenerv3.Listener, error) {
	svc, port := l.Service, l.Port
	filters, err := metaProtocolFilters(svc)
	if err != nil {
		return nil, err
	}
	mpp := &mppv1alpha.MetaProtocolProxy{
		// Aeraki names the stats after the service's cluster.
		StatPrefix: ClusterName(port.Number, "", svc.Host),
		RouteSpecifier: &mppv1alpha.MetaProtocolProxy_Rds{Rds: &mppv1alpha.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: RouteConfigName(svc.Host, port.Number),
		}},
		MetaProtocolFilters: filters,
		Protocol: &mppv1alpha.ApplicationProtocol{
			Name:         port.App,
			Codec:        &mppv1alpha.Codec{Name: port.Codec},
			Multiplexing: multiplexing[port.App],
		},
	}
	// Aeraki's control plane still sends only the deprecated application_protocol and codec, and data
	// planes built before protocol existed read nothing else; both are kept, equal to protocol.
	mpp.ApplicationProtocol = port.App
	mpp.Codec = &mppv1alpha.Codec{Name: port.Codec}

	config, err := typed(mpp)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:    ListenerName(l.Address),
		Address: socketAddress(l.Address.Addr().String(), uint32(l.Address.Port())),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       MetaProtocolProxyFilter,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: config},
			}},
		}},
		// A local proxy stands for the clients: its listeners are the services as clients dial them.
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
	}, nil
}

// metaProtocolFilters is the service's filter chain: its MetaRouter's local rate limit, its global rate limit
// (ratelimit.go), then the router.
func metaProtocolFilters(svc *model.Service) ([]*mppv1alpha.MetaProtocolFilter, error) {
	var out []*mppv1alpha.MetaProtocolFilter
	if svc.Router != nil {
		if l := svc.Router.Spec.LocalRateLimit; l != nil && (l.TokenBucket != nil || len(l.Conditions) > 0) {
			lrl, err := localRateLimit(svc.Host, l)
			if err != nil {
				return nil, fmt.Errorf("local rate limit of %s: %w", svc.Router.Key(), err)
			}
			config, err := typed(lrl)
			if err != nil {
				return nil, err
			}
			out = append(out, &mppv1alpha.MetaProtocolFilter{Name: LocalRateLimitFilter, Config: config})
		}
	}
	if grl, err := globalRateLimitFilter(svc); err != nil {
		return nil, err
	} else if grl != nil {
		out = append(out, grl)
	}
	router, err := typed(&routerv1alpha.Router{})
	if err != nil {
		return nil, err
	}
	return append(out, &mppv1alpha.MetaProtocolFilter{Name: RouterFilter, Config: router}), nil
}

// localRateLimit translates a MetaRouter's localRateLimit; the stats are prefixed with the host, as Aeraki
// does.
func localRateLimit(host string, l *v1alpha1.LocalRateLimit) (*localratelimitv1alpha.LocalRateLimit, error) {
	out := &localratelimitv1alpha.LocalRateLimit{StatPrefix: host}
	if l.TokenBucket != nil {
		out.TokenBucket = tokenBucket(l.TokenBucket)
	}
	for i := range l.Conditions {
		c := &l.Conditions[i]
		match, err := headerMatchers(&c.Match)
		if err != nil {
			return nil, fmt.Errorf("conditions[%d].match: %w", i, err)
		}
		out.Conditions = append(out.Conditions, &localratelimitv1alpha.LocalRateLimitCondition{
			Match:       &routev1alpha.RouteMatch{Metadata: match},
			TokenBucket: tokenBucket(&c.TokenBucket),
		})
	}
	return out, nil
}

func tokenBucket(tb *v1alpha1.TokenBucket) *typev3.TokenBucket {
	out := &typev3.TokenBucket{MaxTokens: tb.MaxTokens, FillInterval: durationpb.New(tb.FillInterval.Duration)}
	// Absent means one token per fill, in Envoy as in the CRD.
	if tb.TokensPerFill != nil {
		out.TokensPerFill = wrapperspb.UInt32(*tb.TokensPerFill)
	}
	return out
}

// adsSource points at the stream the resource came on: Meltemi serves everything over one ADS stream.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

func socketAddress(address string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       address,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// typed wraps a message in an Any, marshalled deterministically so that equal configs are equal bytes
// (the xDS cache compares versions by content).
func typed(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("%T: %w", m, err)
	}
	return a, nil
}
