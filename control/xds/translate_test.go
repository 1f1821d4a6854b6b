package xds_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	mppv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/v1alpha"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source/file"
	"github.com/meltemi-mesh/meltemi/control/translate"
	"github.com/meltemi-mesh/meltemi/control/xds"
)

const dubboService = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: demo
  namespace: shop
spec:
  hosts:
  - demo.shop.svc.cluster.local
  addresses:
  - 127.0.0.50
  ports:
  - number: 20880
    name: tcp-metaprotocol-dubbo
    protocol: TCP
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports:
      tcp-metaprotocol-dubbo: 20881
`

// TestRealTranslator serves what the translator makes of manifests read by the file source, as the
// controller does in local mode, and pushes an added endpoint.
func TestRealTranslator(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "demo.yaml")
	src := file.New(dir, file.Options{Model: model.Options{
		Codecs: model.Codecs{"dubbo": "aeraki.meta_protocol.codec.dubbo"}, Local: true}})
	scan := func(manifest string) *model.Snapshot {
		t.Helper()
		if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		u, err := src.Scan()
		if err != nil {
			t.Fatal(err)
		}
		if model.HasErrors(u.Problems) {
			t.Fatalf("manifest problems: %v", u.Problems)
		}
		return u.Snapshot
	}

	h := start(t, xds.Options{Translate: translate.Translate})
	h.srv.Update(scan(dubboService))
	p := connectADS(t, h.addr, proxyNode(t, "local-proxy", "local"))
	p.routeNames = metaRDSNames
	got := p.bootstrap()
	want := map[string][]string{
		resource.ListenerType: {"127.0.0.50_20880"},
		resource.RouteType:    {"demo.shop.svc.cluster.local_20880"},
		resource.ClusterType:  {"outbound|20880||demo.shop.svc.cluster.local"},
		resource.EndpointType: {"outbound|20880||demo.shop.svc.cluster.local"},
	}
	for typeURL, names := range want {
		if g := resourceNames(t, got[typeURL]); !slices.Equal(g, names) {
			t.Errorf("%s: %v, want %v", typeURL, g, names)
		}
	}

	next := scan(dubboService + `  - address: 127.0.0.2
    ports:
      tcp-metaprotocol-dubbo: 20881
`)
	h.srv.Update(next)
	eds := p.expect(resource.EndpointType)
	if n := countEndpoints(t, eds); n != 2 {
		t.Errorf("%d endpoints after adding one, want 2", n)
	}
	p.ack(eds, want[resource.EndpointType]...)
	h.waitConverged(t, next.Version, "local-proxy")
}

// metaRDSNames reads the route configuration each listener's MetaProtocolProxy names, as a proxy does.
func metaRDSNames(t *testing.T, r *discovery.DiscoveryResponse) []string {
	t.Helper()
	var names []string
	for _, a := range r.GetResources() {
		l := &listenerv3.Listener{}
		if err := a.UnmarshalTo(l); err != nil {
			t.Fatal(err)
		}
		mpp := &mppv1alpha.MetaProtocolProxy{}
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(mpp); err != nil {
			t.Fatal(err)
		}
		names = append(names, mpp.GetRds().GetRouteConfigName())
	}
	return names
}

func countEndpoints(t *testing.T, r *discovery.DiscoveryResponse) int {
	t.Helper()
	return len(endpointHosts(t, r))
}
