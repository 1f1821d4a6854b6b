package translate_test

// The round trip crosses the line between control and proxy on purpose, in a test only: the two meet in
// xDS resources, and this proves that what the controller sends is what the proxy's client understands.

import (
	"encoding/json"
	"errors"
	"maps"
	"net"
	"slices"
	"strconv"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	mppv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/v1alpha"
	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/control/translate"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
	"github.com/meltemi-mesh/meltemi/proxy/filters/localratelimit"
	"github.com/meltemi-mesh/meltemi/proxy/filters/ratelimit"
	"github.com/meltemi-mesh/meltemi/proxy/xds"
)

// TestRoundTrip gives each case's resources to the proxy's xDS translation and checks that listeners,
// routes, clusters and endpoints come out as they went in.
func TestRoundTrip(t *testing.T) {
	// The custom protocol's codec is one a custom build would register; the xDS translation only looks its
	// name up, so a stub that cannot build anything stands in.
	stub := codec.Registration{Name: "acme.meta_protocol.codec.videopacket", Protocol: "videopacket",
		New: func(json.RawMessage) (codec.Factory, error) { return nil, errors.New("stub codec") }}
	reg := codecRegistry(t)
	if err := reg.Register(stub); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := translateCase(t, tc.name)
			in := xds.Resources{
				Listeners: byName(res.Listeners, (*listenerv3.Listener).GetName),
				Routes:    byName(res.Routes, (*routev3.RouteConfiguration).GetName),
				Clusters:  byName(res.Clusters, (*clusterv3.Cluster).GetName),
				Endpoints: byName(res.Endpoints, (*endpointv3.ClusterLoadAssignment).GetClusterName),
			}
			tr, err := xds.Translate(in, reg)
			if err != nil {
				t.Fatalf("the proxy's xDS translation refuses the resources: %v", err)
			}
			for _, n := range tr.Notes {
				t.Logf("proxy note: %s", n)
			}
			checkListeners(t, res, tr.Config)
			checkClusters(t, res, tr.Config)
		})
	}
}

func builtinFilters(t *testing.T) *filter.Registry {
	t.Helper()
	reg, err := filter.NewRegistry(localratelimit.Registration(), ratelimit.Registration())
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func byName[M any](list []M, name func(M) string) map[string]M {
	out := make(map[string]M, len(list))
	for _, m := range list {
		out[name(m)] = m
	}
	return out
}

func checkListeners(t *testing.T, res *translate.Resources, cfg *proxy.Config) {
	t.Helper()
	got := byName(cfg.Listeners, func(l proxy.Listener) string { return l.Name })
	if len(got) != len(res.Listeners) {
		t.Errorf("%d listeners in, %d out", len(res.Listeners), len(got))
	}
	routes := byName(res.Routes, (*routev3.RouteConfiguration).GetName)
	for _, l := range res.Listeners {
		pl, ok := got[l.GetName()]
		if !ok {
			t.Errorf("listener %s lost", l.GetName())
			continue
		}
		sa := l.GetAddress().GetSocketAddress()
		if want := net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))); pl.Address != want {
			t.Errorf("listener %s: address %s, want %s", l.GetName(), pl.Address, want)
		}
		mpp := &mppv1alpha.MetaProtocolProxy{}
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(mpp); err != nil {
			t.Fatal(err)
		}
		if pl.Codec.Name != mpp.GetProtocol().GetCodec().GetName() {
			t.Errorf("listener %s: codec %q, want %q", l.GetName(), pl.Codec.Name, mpp.GetProtocol().GetCodec().GetName())
		}
		var wantFilters []string
		for _, f := range mpp.GetMetaProtocolFilters() {
			if f.GetName() != translate.RouterFilter {
				wantFilters = append(wantFilters, f.GetName())
			}
		}
		var gotFilters []string
		for _, f := range pl.Filters {
			gotFilters = append(gotFilters, f.Name)
			if len(f.Config) == 0 {
				t.Errorf("listener %s: filter %s lost its config", l.GetName(), f.Name)
			}
			// The proxy's own filter must take the config as the xDS client hands it over.
			if reg, ok := builtinFilters(t).Lookup(f.Name); !ok {
				t.Errorf("listener %s: filter %s is not a built-in filter", l.GetName(), f.Name)
			} else if _, err := reg.New(f.Config); err != nil {
				t.Errorf("listener %s: filter %s refuses its config %s: %v", l.GetName(), f.Name, f.Config, err)
			}
		}
		if !slices.Equal(gotFilters, wantFilters) {
			t.Errorf("listener %s: filters %v, want %v", l.GetName(), gotFilters, wantFilters)
		}
		rc := routes[mpp.GetRds().GetRouteConfigName()]
		if pl.Routes.Name != rc.GetName() {
			t.Errorf("listener %s: routes %q, want %q", l.GetName(), pl.Routes.Name, rc.GetName())
		}
		checkRoutes(t, l.GetName(), rc, pl.Routes.Routes)
	}
}

// checkRoutes compares each carrier route with the proxy's route, reading the carrier independently of
// either translator.
func checkRoutes(t *testing.T, listener string, rc *routev3.RouteConfiguration, got []proxy.Route) {
	t.Helper()
	want := rc.GetVirtualHosts()[0].GetRoutes()
	if len(got) != len(want) {
		t.Fatalf("listener %s: %d routes, want %d", listener, len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		where := listener + " route " + w.GetName()
		if g.Name != w.GetName() || g.Cluster != w.GetRoute().GetCluster() {
			t.Errorf("%s: name %q cluster %q, want %q %q", where, g.Name, g.Cluster, w.GetName(), w.GetRoute().GetCluster())
		}
		var wantWeighted []proxy.WeightedCluster
		for _, c := range w.GetRoute().GetWeightedClusters().GetClusters() {
			wantWeighted = append(wantWeighted, proxy.WeightedCluster{Name: c.GetName(), Weight: c.GetWeight().GetValue()})
		}
		if !slices.Equal(g.WeightedClusters, wantWeighted) {
			t.Errorf("%s: weighted clusters %v, want %v", where, g.WeightedClusters, wantWeighted)
		}
		var wantHash []string
		for _, h := range w.GetRoute().GetHashPolicy() {
			wantHash = append(wantHash, h.GetHeader().GetHeaderName())
		}
		if !slices.Equal(g.HashPolicy, wantHash) {
			t.Errorf("%s: hash policy %v, want %v", where, g.HashPolicy, wantHash)
		}
		var wantMatch []proxy.MetadataMatcher
		for _, h := range w.GetMatch().GetHeaders() {
			m := proxy.MetadataMatcher{Key: h.GetName()}
			sm := h.GetStringMatch()
			switch {
			case h.GetPresentMatch():
				m.Kind = proxy.MatchPresent
			case sm.GetSafeRegex() != nil:
				m.Kind, m.Value = proxy.MatchRegex, sm.GetSafeRegex().GetRegex()
			case sm.GetPrefix() != "":
				m.Kind, m.Value = proxy.MatchPrefix, sm.GetPrefix()
			default:
				m.Kind, m.Value = proxy.MatchExact, sm.GetExact()
			}
			wantMatch = append(wantMatch, m)
		}
		if !slices.Equal(g.Match, wantMatch) {
			t.Errorf("%s: match %v, want %v", where, g.Match, wantMatch)
		}
		mutation := func(hs []*corev3.HeaderValueOption) []codec.KeyValue {
			var out []codec.KeyValue
			for _, h := range hs {
				out = append(out, codec.KeyValue{Key: h.GetHeader().GetKey(), Value: h.GetHeader().GetValue()})
			}
			return out
		}
		if !slices.Equal(g.RequestMutation, mutation(w.GetRequestHeadersToAdd())) ||
			!slices.Equal(g.ResponseMutation, mutation(w.GetResponseHeadersToAdd())) {
			t.Errorf("%s: mutations %v / %v", where, g.RequestMutation, g.ResponseMutation)
		}
	}
}

func checkClusters(t *testing.T, res *translate.Resources, cfg *proxy.Config) {
	t.Helper()
	got := byName(cfg.Clusters, func(c proxy.Cluster) string { return c.Name })
	if len(got) != len(res.Clusters) {
		t.Errorf("%d clusters in, %d out", len(res.Clusters), len(got))
	}
	assignments := byName(res.Endpoints, (*endpointv3.ClusterLoadAssignment).GetClusterName)
	for _, c := range res.Clusters {
		pc, ok := got[c.GetName()]
		if !ok {
			t.Errorf("cluster %s lost", c.GetName())
			continue
		}
		// Ring hash and maglev fall back to round robin in the proxy until it has them.
		wantLB := map[clusterv3.Cluster_LbPolicy]proxy.LBPolicy{
			clusterv3.Cluster_ROUND_ROBIN: proxy.RoundRobin, clusterv3.Cluster_LEAST_REQUEST: proxy.LeastRequest,
			clusterv3.Cluster_RANDOM: proxy.Random, clusterv3.Cluster_RING_HASH: proxy.RoundRobin,
			clusterv3.Cluster_MAGLEV: proxy.RoundRobin,
		}[c.GetLbPolicy()]
		if pc.LB != wantLB {
			t.Errorf("cluster %s: lb %s, want %s", c.GetName(), pc.LB, wantLB)
		}
		if pc.ConnectTimeout != c.GetConnectTimeout().AsDuration() || pc.ConnectTimeout == 0 {
			t.Errorf("cluster %s: connect timeout %v, want %v", c.GetName(), pc.ConnectTimeout, c.GetConnectTimeout().AsDuration())
		}
		if pc.Service.Host == "" || pc.Service.Namespace == "" {
			t.Errorf("cluster %s: service %+v lacks its host or namespace", c.GetName(), pc.Service)
		}
		la := c.GetLoadAssignment()
		if c.GetType() == clusterv3.Cluster_EDS {
			la = assignments[c.GetName()]
		}
		var want []proxy.Endpoint
		for _, loc := range la.GetEndpoints() {
			for _, e := range loc.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				ep := proxy.Endpoint{
					Address: net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))),
					Weight:  e.GetLoadBalancingWeight().GetValue(),
				}
				if f := e.GetMetadata().GetFilterMetadata()["envoy.lb"].GetFields(); len(f) > 0 {
					ep.Labels = map[string]string{}
					for k, v := range f {
						ep.Labels[k] = v.GetStringValue()
					}
				}
				want = append(want, ep)
			}
		}
		if !slices.EqualFunc(pc.Endpoints, want, func(a, b proxy.Endpoint) bool {
			return a.Address == b.Address && a.Weight == b.Weight && maps.Equal(a.Labels, b.Labels)
		}) {
			t.Errorf("cluster %s: endpoints %+v, want %+v", c.GetName(), pc.Endpoints, want)
		}
	}
}
