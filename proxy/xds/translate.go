// Package xds is the proxy's xDS client. It subscribes to a controller over ADS (state of the world),
// translates the Envoy v3 resources it receives (listeners carrying Aeraki's MetaProtocolProxy filter, MetaRDS
// routes, clusters, endpoints) into a proxy.Config, and hands that to the proxy. The translation functions are
// pure and usable on their own.
package xds

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	mppv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/v1alpha"
	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/proxy"

	// Filter configs arrive as Any values, inside TypedStruct JSON too; their types must be known to decode.
	_ "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/istio_stats/v1alpha"
	_ "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/local_ratelimit/v1alpha"
	_ "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/metadata_exchange/v1alpha"
	_ "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/ratelimit/v1alpha"
	_ "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/router/v1alpha"
)

const typePrefix = "type.googleapis.com/"

// Type URLs of the resources the client subscribes to.
const (
	ListenerType = typePrefix + "envoy.config.listener.v3.Listener"
	RouteType    = typePrefix + "envoy.config.route.v3.RouteConfiguration"
	ClusterType  = typePrefix + "envoy.config.cluster.v3.Cluster"
	EndpointType = typePrefix + "envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// FilterName is the network filter name Aeraki gives the MetaProtocol proxy.
const FilterName = "envoy.filters.network.meta_protocol_proxy"

// RouterFilter is the MetaProtocol router; it is implicit in the proxy, so translation drops it.
const RouterFilter = "aeraki.meta_protocol.filters.router"

// Fully qualified message names compared against type URLs (whatever their prefix).
const (
	metaProtocolProxyName = "aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy"
	udpaTypedStructName   = "udpa.type.v1.TypedStruct"
	xdsTypedStructName    = "xds.type.v3.TypedStruct"
	resourceWrapperName   = "envoy.service.discovery.v3.Resource"
)

// typeName returns the message name of a type URL: what follows its last slash.
func typeName(url string) string { return url[strings.LastIndexByte(url, '/')+1:] }

// Resources is a set of xDS resources, each map keyed by resource name.
type Resources struct {
	// Listeners are LDS resources; those without a MetaProtocolProxy filter are not served.
	Listeners map[string]*listenerv3.Listener
	// Routes are RDS resources: MetaRDS, Aeraki's carrier form.
	Routes map[string]*routev3.RouteConfiguration
	// Clusters are CDS resources.
	Clusters map[string]*clusterv3.Cluster
	// Endpoints are EDS resources, keyed by cluster_name.
	Endpoints map[string]*endpointv3.ClusterLoadAssignment
}

// Translation is the proxy config a set of resources becomes.
type Translation struct {
	// Config is what the proxy runs; its Node and Version are left for the caller.
	Config *proxy.Config
	// Notes name what the resources ask for that the proxy does not do yet and that translation left out
	// (mirroring, tracing, ring hash, ...), one sentence each.
	Notes []string
}

// Translate turns a complete set of resources into the proxy's config: every route configuration a listener
// names over RDS and every load assignment an EDS cluster names must be in res. Errors name the resource and
// the field at fault. A codec is known when codecs has it.
func Translate(res Resources, codecs *codec.Registry) (*Translation, error) {
	var n notes
	var errs []error
	st := newState()
	for _, name := range slices.Sorted(maps.Keys(res.Listeners)) {
		part, err := translateListener(res.Listeners[name], codecs, &n)
		if err != nil {
			errs = append(errs, err)
		} else if part != nil {
			st.listeners[name] = part
		}
	}
	for _, name := range slices.Sorted(maps.Keys(res.Routes)) {
		rc, err := translateRouteConfiguration(res.Routes[name], &n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st.routes[name] = rc
	}
	for _, name := range slices.Sorted(maps.Keys(res.Clusters)) {
		part, err := translateCluster(res.Clusters[name], &n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st.clusters[name] = part
	}
	for _, name := range slices.Sorted(maps.Keys(res.Endpoints)) {
		eps, err := translateLoadAssignment(res.Endpoints[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st.endpoints[name] = eps
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cfg, waiting := st.compose(nil)
	if len(waiting) > 0 {
		return nil, errors.New(strings.Join(waiting, "; "))
	}
	return &Translation{Config: cfg, Notes: n.texts()}, nil
}

// notes collects what translation leaves out.
type notes []note

// note is one thing left out; a quiet one is expected (a listener meant for another proxy) and worth a debug
// line only.
type note struct {
	text  string
	quiet bool
}

func (n *notes) addf(format string, args ...any) {
	*n = append(*n, note{text: fmt.Sprintf(format, args...)})
}

func (n *notes) quietf(format string, args ...any) {
	*n = append(*n, note{text: fmt.Sprintf(format, args...), quiet: true})
}

func (n notes) texts() []string {
	out := make([]string, len(n))
	for i, x := range n {
		out[i] = x.text
	}
	return out
}

// listenerPart is a translated listener; when its routes come over RDS, rds names them and cfg.Routes is
// filled in by compose.
type listenerPart struct {
	cfg proxy.Listener
	rds string
}

// clusterPart is a translated cluster; when its endpoints come over EDS, eds names the load assignment and
// cfg.Endpoints is filled in by compose.
type clusterPart struct {
	cfg proxy.Cluster
	eds string
}

// state is a set of translated resources, by resource name.
type state struct {
	listeners map[string]*listenerPart
	routes    map[string]proxy.RouteConfig
	clusters  map[string]*clusterPart
	endpoints map[string][]proxy.Endpoint
}

func newState() *state {
	return &state{listeners: map[string]*listenerPart{}, routes: map[string]proxy.RouteConfig{},
		clusters: map[string]*clusterPart{}, endpoints: map[string][]proxy.Endpoint{}}
}

// compose resolves RDS and EDS references into a config. A listener or cluster whose route configuration or
// load assignment has not arrived keeps its version in prev, if prev has it, and is left out otherwise;
// waiting says which, one sentence each.
func (s *state) compose(prev *proxy.Config) (cfg *proxy.Config, waiting []string) {
	cfg = &proxy.Config{}
	for _, name := range slices.Sorted(maps.Keys(s.listeners)) {
		part := s.listeners[name]
		l := part.cfg
		if part.rds != "" {
			rc, ok := s.routes[part.rds]
			if !ok {
				waiting = append(waiting, fmt.Sprintf("listener %q: route configuration %q not received", name, part.rds))
				if old := findListener(prev, name); old != nil {
					cfg.Listeners = append(cfg.Listeners, *old)
				}
				continue
			}
			l.Routes = rc
		}
		cfg.Listeners = append(cfg.Listeners, l)
	}
	for _, name := range slices.Sorted(maps.Keys(s.clusters)) {
		part := s.clusters[name]
		c := part.cfg
		if part.eds != "" {
			eps, ok := s.endpoints[part.eds]
			if !ok {
				waiting = append(waiting, fmt.Sprintf("cluster %q: load assignment %q not received", name, part.eds))
				if old := findCluster(prev, name); old != nil {
					cfg.Clusters = append(cfg.Clusters, *old)
				}
				continue
			}
			c.Endpoints = eps
		}
		cfg.Clusters = append(cfg.Clusters, c)
	}
	return cfg, waiting
}

// routeNames returns the route configurations the listeners take from RDS, sorted.
func (s *state) routeNames() []string {
	set := map[string]bool{}
	for _, l := range s.listeners {
		if l.rds != "" {
			set[l.rds] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// endpointNames returns the load assignments the clusters take from EDS, sorted.
func (s *state) endpointNames() []string {
	set := map[string]bool{}
	for _, c := range s.clusters {
		if c.eds != "" {
			set[c.eds] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

func findListener(cfg *proxy.Config, name string) *proxy.Listener {
	if cfg == nil {
		return nil
	}
	for i := range cfg.Listeners {
		if cfg.Listeners[i].Name == name {
			return &cfg.Listeners[i]
		}
	}
	return nil
}

func findCluster(cfg *proxy.Config, name string) *proxy.Cluster {
	if cfg == nil {
		return nil
	}
	for i := range cfg.Clusters {
		if cfg.Clusters[i].Name == name {
			return &cfg.Clusters[i]
		}
	}
	return nil
}

// translateListener translates a listener carrying the MetaProtocolProxy filter. It returns nil, and a note,
// for a listener the proxy does not serve (no MetaProtocolProxy filter, or not bound by the proxy).
func translateListener(l *listenerv3.Listener, codecs *codec.Registry, n *notes) (*listenerPart, error) {
	part, err := listenerBody(l, codecs, n)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
	}
	return part, nil
}

func listenerBody(l *listenerv3.Listener, codecs *codec.Registry, n *notes) (*listenerPart, error) {
	if l.GetName() == "" {
		return nil, errors.New("name: required")
	}
	type found struct {
		path string
		mpp  *mppv1alpha.MetaProtocolProxy
	}
	var hits []found
	var others []string // other network filters beside a MetaProtocolProxy
	var bare []string   // filter chains without one
	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(slices.Clip(chains), dc)
	}
	for i, fc := range chains {
		path := fmt.Sprintf("filter_chains[%d]", i)
		if i == len(l.GetFilterChains()) {
			path = "default_filter_chain"
		}
		var chainHits []found
		var chainOthers []string
		for j, f := range fc.GetFilters() {
			fpath := fmt.Sprintf("%s.filters[%d]", path, j)
			mpp, err := metaProtocolProxyOf(f)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", fpath, f.GetName(), err)
			}
			if mpp == nil {
				chainOthers = append(chainOthers, fmt.Sprintf("%s %s", fpath, f.GetName()))
				continue
			}
			chainHits = append(chainHits, found{path: fpath, mpp: mpp})
		}
		if len(chainHits) == 0 {
			bare = append(bare, path)
			continue
		}
		if fc.GetTransportSocket() != nil {
			return nil, fmt.Errorf("%s.transport_socket: %s is not supported yet (the proxy serves plaintext)",
				path, fc.GetTransportSocket().GetName())
		}
		hits = append(hits, chainHits...)
		others = append(others, chainOthers...)
	}
	if len(hits) == 0 {
		n.quietf("listener %q: no %s filter; not served", l.GetName(), FilterName)
		return nil, nil
	}
	if len(hits) > 1 {
		return nil, fmt.Errorf("%s: a second meta_protocol_proxy filter (after %s); the proxy serves one per listener",
			hits[1].path, hits[0].path)
	}
	for _, b := range bare {
		// Connections such a chain would take (Istio's passthrough, say) are served by the MetaProtocolProxy.
		n.addf("listener %q: %s has no meta_protocol_proxy filter; left out", l.GetName(), b)
	}
	for _, o := range others {
		// The MetaProtocolProxy is terminal; other network filters would run before it in Envoy. Observability
		// filters Istio adds can be left out safely; anything else (RBAC, rate limits) would change behaviour.
		if !harmlessNetworkFilter(o) {
			return nil, fmt.Errorf("%s: network filter not supported beside meta_protocol_proxy", o)
		}
		n.addf("listener %q: %s left out", l.GetName(), o)
	}
	if b := l.GetBindToPort(); b != nil && !b.GetValue() {
		n.addf("listener %q: bind_to_port is false; not served (no original-destination redirection yet)", l.GetName())
		return nil, nil
	}
	addr, err := socketAddress(l.GetAddress())
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	part, err := translateMetaProtocolProxy(hits[0].mpp, codecs, l.GetName(), n)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", hits[0].path, "meta_protocol_proxy", err)
	}
	part.cfg.Name = l.GetName()
	part.cfg.Address = addr
	return part, nil
}

// harmlessNetworkFilter reports whether a network filter only observes traffic (Istio's stats and metadata
// exchange), so that serving without it changes nothing a request sees. desc ends with the filter's name.
func harmlessNetworkFilter(desc string) bool {
	name := desc[strings.LastIndexByte(desc, ' ')+1:]
	switch name {
	case "istio.stats", "istio.metadata_exchange", "envoy.filters.network.metadata_exchange":
		return true
	}
	return false
}
