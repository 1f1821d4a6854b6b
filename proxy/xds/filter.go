package xds

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	mppv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/v1alpha"
	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/proxy"
)

// metaProtocolProxyOf returns the MetaProtocolProxy config of a network filter, or nil when the filter is
// another one. The config is recognised by its type, plain or wrapped in a TypedStruct as Aeraki sends it.
func metaProtocolProxyOf(f *listenerv3.Filter) (*mppv1alpha.MetaProtocolProxy, error) {
	named := f.GetName() == FilterName
	switch ct := f.GetConfigType().(type) {
	case *listenerv3.Filter_TypedConfig:
		a := ct.TypedConfig
		switch typeName(a.GetTypeUrl()) {
		case metaProtocolProxyName:
			m := &mppv1alpha.MetaProtocolProxy{}
			if err := proto.Unmarshal(a.GetValue(), m); err != nil {
				return nil, fmt.Errorf("typed_config: %w", err)
			}
			return m, nil
		case udpaTypedStructName, xdsTypedStructName:
			inner, js, err := typedStructJSON(a)
			if err != nil {
				return nil, fmt.Errorf("typed_config: %w", err)
			}
			if typeName(inner) != metaProtocolProxyName {
				if named {
					return nil, fmt.Errorf("typed_config: TypedStruct of %s, want %s", inner, metaProtocolProxyName)
				}
				return nil, nil
			}
			m := &mppv1alpha.MetaProtocolProxy{}
			if err := protojson.Unmarshal(js, m); err != nil {
				return nil, fmt.Errorf("typed_config: TypedStruct value: %w", err)
			}
			return m, nil
		default:
			if named {
				return nil, fmt.Errorf("typed_config: type %s, want %s", a.GetTypeUrl(), metaProtocolProxyName)
			}
			return nil, nil
		}
	case *listenerv3.Filter_ConfigDiscovery:
		if named {
			return nil, errors.New("config_discovery: not supported; send typed_config")
		}
	default:
		if named {
			return nil, errors.New("typed_config: required")
		}
	}
	return nil, nil
}

// typedStructJSON returns the type URL a TypedStruct names and its value as JSON.
func typedStructJSON(a *anypb.Any) (typeURL string, js []byte, err error) {
	var value *structpb.Struct
	switch typeName(a.GetTypeUrl()) {
	case udpaTypedStructName:
		ts := &udpatypev1.TypedStruct{}
		if err := proto.Unmarshal(a.GetValue(), ts); err != nil {
			return "", nil, err
		}
		typeURL, value = ts.GetTypeUrl(), ts.GetValue()
	case xdsTypedStructName:
		ts := &xdstypev3.TypedStruct{}
		if err := proto.Unmarshal(a.GetValue(), ts); err != nil {
			return "", nil, err
		}
		typeURL, value = ts.GetTypeUrl(), ts.GetValue()
	default:
		return "", nil, fmt.Errorf("type %s is not a TypedStruct", a.GetTypeUrl())
	}
	if value == nil {
		value = &structpb.Struct{}
	}
	js, err = protojson.Marshal(value)
	return typeURL, js, err
}

// anyJSON converts a typed config to the protobuf JSON form codecs and filters decode, or nil for an empty
// config (which means defaults). A TypedStruct of a type the proxy does not know is passed on as its JSON.
func anyJSON(a *anypb.Any) (json.RawMessage, error) {
	if a == nil {
		return nil, nil
	}
	var msg proto.Message
	switch typeName(a.GetTypeUrl()) {
	case udpaTypedStructName, xdsTypedStructName:
		inner, js, err := typedStructJSON(a)
		if err != nil {
			return nil, err
		}
		mt, err := protoregistry.GlobalTypes.FindMessageByURL(inner)
		if err != nil {
			return compactJSON(js)
		}
		msg = mt.New().Interface()
		// Decoding through the type normalises field names and rejects fields the type does not have.
		if err := protojson.Unmarshal(js, msg); err != nil {
			return nil, fmt.Errorf("TypedStruct of %s: %w", inner, err)
		}
	default:
		var err error
		if msg, err = a.UnmarshalNew(); err != nil {
			return nil, fmt.Errorf("type %s: %w", a.GetTypeUrl(), err)
		}
	}
	js, err := protojson.Marshal(msg)
	if err != nil {
		return nil, err
	}
	return compactJSON(js)
}

// compactJSON strips the whitespace protojson adds (which varies on purpose), so equal configs compare equal.
func compactJSON(js []byte) (json.RawMessage, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, js); err != nil {
		return nil, err
	}
	if buf.String() == "{}" {
		return nil, nil
	}
	return buf.Bytes(), nil
}

// translateMetaProtocolProxy translates the filter config of a listener; the caller sets name and address.
func translateMetaProtocolProxy(m *mppv1alpha.MetaProtocolProxy, codecs *codec.Registry, listener string,
	n *notes) (*listenerPart, error) {
	part := &listenerPart{cfg: proxy.Listener{StatPrefix: m.GetStatPrefix()}}

	// protocol.codec supersedes the deprecated codec field; Aeraki still sends the latter alone.
	c, path := m.GetProtocol().GetCodec(), "protocol.codec"
	if c == nil {
		c, path = m.GetCodec(), "codec"
	}
	if c.GetName() == "" {
		return nil, errors.New("protocol.codec.name: required (or the deprecated codec.name)")
	}
	if _, ok := codecs.Lookup(c.GetName()); !ok {
		return nil, fmt.Errorf("%s.name: codec %q unknown (known: %s)", path, c.GetName(),
			strings.Join(codecs.Names(), ", "))
	}
	codecConfig, err := anyJSON(c.GetConfig())
	if err != nil {
		return nil, fmt.Errorf("%s.config: %w", path, err)
	}
	part.cfg.Codec = proxy.CodecConfig{Name: c.GetName(), Config: codecConfig}

	router := -1
	for i, f := range m.GetMetaProtocolFilters() {
		switch {
		case f.GetName() == "":
			return nil, fmt.Errorf("meta_protocol_filters[%d].name: required", i)
		case router >= 0:
			// Aeraki's router ends the chain, so a filter after it never sees a request; say so rather than
			// run it.
			return nil, fmt.Errorf("meta_protocol_filters[%d] %q: comes after the router (meta_protocol_filters[%d]), so it would never run",
				i, f.GetName(), router)
		case f.GetName() == RouterFilter:
			router = i
			continue
		}
		js, err := anyJSON(f.GetConfig())
		if err != nil {
			return nil, fmt.Errorf("meta_protocol_filters[%d] %q: config: %w", i, f.GetName(), err)
		}
		part.cfg.Filters = append(part.cfg.Filters, proxy.FilterConfig{Name: f.GetName(), Config: js})
	}

	if d := m.GetIdleTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, fmt.Errorf("idle_timeout: invalid duration %v", d)
		}
		part.cfg.IdleTimeout = d.AsDuration()
	}
	if m.GetTracing() != nil {
		n.addf("listener %q: meta_protocol_proxy tracing is not supported yet; left out", listener)
	}
	if len(m.GetAccessLog()) > 0 {
		n.addf("listener %q: meta_protocol_proxy access_log is not supported yet; left out", listener)
	}

	switch rs := m.GetRouteSpecifier().(type) {
	case *mppv1alpha.MetaProtocolProxy_Rds:
		// Routes are asked for on the same ADS stream, whatever config_source says: Aeraki points it at
		// itself, and Meltemi's controller serves everything on one stream.
		if rs.Rds.GetRouteConfigName() == "" {
			return nil, errors.New("rds.route_config_name: required")
		}
		part.rds = rs.Rds.GetRouteConfigName()
	case *mppv1alpha.MetaProtocolProxy_RouteConfig:
		rc, err := translateNativeRoutes(rs.RouteConfig)
		if err != nil {
			return nil, fmt.Errorf("route_config: %w", err)
		}
		part.cfg.Routes = rc
	default:
		return nil, errors.New("route_config or rds: one is required")
	}
	return part, nil
}
