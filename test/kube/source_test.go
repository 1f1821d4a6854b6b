package kubeinterop

import (
	"slices"
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/test/kube/kubetest"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// shop is a Dubbo service the way a cluster holds it: two pods on two nodes, a Service whose port
// name makes it a meta-protocol port, the EndpointSlice the endpoint controller would write (there
// is none in a test cluster), subsets by version and a MetaRouter.
const shop = `
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {topology.kubernetes.io/region: eu, topology.kubernetes.io/zone: eu-1a}}
---
apiVersion: v1
kind: Node
metadata: {name: node-b, labels: {topology.kubernetes.io/region: eu, topology.kubernetes.io/zone: eu-1b}}
---
apiVersion: v1
kind: Pod
metadata: {name: demo-v1, labels: {app: demo, version: v1}}
spec: {nodeName: node-a, serviceAccountName: demo, containers: [{name: app, image: demo}]}
---
apiVersion: v1
kind: Pod
metadata: {name: demo-v2, labels: {app: demo, version: v2}}
spec: {nodeName: node-b, serviceAccountName: demo, containers: [{name: app, image: demo}]}
---
apiVersion: v1
kind: Service
metadata: {name: demo}
spec:
  selector: {app: demo}
  ports: [{name: tcp-dubbo, port: 20880, targetPort: 20881}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: demo-1, labels: {kubernetes.io/service-name: demo}}
addressType: IPv4
ports: [{name: tcp-dubbo, port: 20881}]
endpoints:
- {addresses: [10.1.0.1], conditions: {ready: true}, nodeName: node-a, targetRef: {kind: Pod, name: demo-v1, namespace: shop}}
- {addresses: [10.1.0.2], conditions: {ready: true}, nodeName: node-b, targetRef: {kind: Pod, name: demo-v2, namespace: shop}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: demo}
spec:
  host: demo.shop.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: demo}
spec:
  hosts: [demo.shop.svc.cluster.local]
  routes:
  - {name: hello, match: {attributes: {method: {exact: sayHello}}}, route: [{destination: {host: demo.shop.svc.cluster.local, subset: v2}}]}
  - {name: rest, route: [{destination: {host: demo.shop.svc.cluster.local, subset: v1}}]}
`

const (
	demoHost   = "demo.shop.svc.cluster.local"
	demoRoutes = demoHost + "_20880"
	demoAll    = "outbound|20880||" + demoHost
	demoV1     = "outbound|20880|v1|" + demoHost
	demoV2     = "outbound|20880|v2|" + demoHost
)

func routeNames(l *proxy.Listener) []string {
	var out []string
	for _, r := range l.Routes.Routes {
		out = append(out, r.Name+"->"+r.Cluster)
	}
	return out
}

// TestClusterToProxy runs the kube source and the xDS server as the controller does, and a real
// xDS client of the proxy, and follows a Service from the cluster to the config the proxy applies:
// its endpoints with their pods' labels and nodes' localities, its subsets, its MetaRouter, and then
// an endpoint added, the MetaRouter edited (and, as the subtest that applied it ends, deleted) and
// the Service deleted.
func TestClusterToProxy(t *testing.T) {
	c := kubetest.Start(t)
	c.Apply(t, "shop", shop)
	host := meshtest.NewNet().Host(1)
	cp := startControlPlane(t, c.Config, host)
	px := connectProxy(t, cp.Addr)

	cfg := px.wait(t, "the demo service's listener, clusters and routes", func(cfg *proxy.Config) bool {
		l := listenerOf(cfg, demoRoutes)
		return l != nil && len(l.Routes.Routes) == 2 && len(endpointsOf(clusterOf(cfg, demoAll))) == 2 &&
			clusterOf(cfg, demoV2) != nil
	})
	l := listenerOf(cfg, demoRoutes)
	if l.Codec.Name != "aeraki.meta_protocol.codec.dubbo" || !strings.HasPrefix(l.Address, "127.240.") || !strings.HasSuffix(l.Address, ":20880") {
		t.Errorf("listener %s speaks %s; want dubbo on an address allocated in 127.240.0.0/16 (the ClusterIP is not local)",
			l.Address, l.Codec.Name)
	}
	if got, want := routeNames(l), []string{"hello->" + demoV2, "rest->" + demoV1}; !slices.Equal(got, want) {
		t.Errorf("routes %v, want %v", got, want)
	}
	// The API server copies a node's topology labels to the pods bound to it (PodTopologyLabels).
	wantAll := []string{
		"10.1.0.1:20881 map[app:demo topology.kubernetes.io/region:eu topology.kubernetes.io/zone:eu-1a version:v1]",
		"10.1.0.2:20881 map[app:demo topology.kubernetes.io/region:eu topology.kubernetes.io/zone:eu-1b version:v2]",
	}
	if got := endpointsOf(clusterOf(cfg, demoAll)); !slices.Equal(got, wantAll) {
		t.Errorf("endpoints of %s:\n got %q\nwant %q", demoAll, got, wantAll)
	}
	if got := endpointsOf(clusterOf(cfg, demoV2)); !slices.Equal(got, wantAll[1:]) {
		t.Errorf("endpoints of %s: got %q, want %q", demoV2, got, wantAll[1:])
	}
	if svc := clusterOf(cfg, demoAll).Service; svc.Host != demoHost || svc.Namespace != "shop" {
		t.Errorf("cluster service %+v", svc)
	}
	// The proxy's config has no localities (its xDS client does not read them yet): the model has them,
	// from the nodes, and the translation's golden files (parity_test.go) show them in xDS.
	var localities []string
	for _, ep := range cp.last().Snapshot.Service(demoHost).Ports[0].Endpoints {
		localities = append(localities, ep.Address+" "+ep.Locality+" "+ep.ServiceAccount)
	}
	if want := []string{"10.1.0.1 eu/eu-1a demo", "10.1.0.2 eu/eu-1b demo"}; !slices.Equal(localities, want) {
		t.Errorf("endpoint localities and service accounts %q, want %q", localities, want)
	}
	if u := cp.last(); model.HasErrors(u.Problems) {
		t.Errorf("problems:\n%s", strings.Join(problemsOf(u), "\n"))
	}

	t.Run("endpoint added", func(t *testing.T) {
		c.Apply(t, "shop", `
apiVersion: v1
kind: Pod
metadata: {name: demo-v1b, labels: {app: demo, version: v1}}
spec: {nodeName: node-a, serviceAccountName: demo, containers: [{name: app, image: demo}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: demo-2, labels: {kubernetes.io/service-name: demo}}
addressType: IPv4
ports: [{name: tcp-dubbo, port: 20881}]
endpoints:
- {addresses: [10.1.0.3], nodeName: node-a, targetRef: {kind: Pod, name: demo-v1b, namespace: shop}}
- {addresses: [10.1.0.4], conditions: {ready: false}, targetRef: {kind: Pod, name: demo-v1b, namespace: shop}}
`)
		cfg := px.wait(t, "a third endpoint in the v1 subset", func(cfg *proxy.Config) bool {
			return len(endpointsOf(clusterOf(cfg, demoV1))) == 2
		})
		want := []string{
			"10.1.0.1:20881 map[app:demo topology.kubernetes.io/region:eu topology.kubernetes.io/zone:eu-1a version:v1]",
			"10.1.0.3:20881 map[app:demo topology.kubernetes.io/region:eu topology.kubernetes.io/zone:eu-1a version:v1]",
		}
		if got := endpointsOf(clusterOf(cfg, demoV1)); !slices.Equal(got, want) {
			t.Errorf("v1 endpoints %q, want %q (the endpoint that is not ready left out)", got, want)
		}
	})

	t.Run("MetaRouter edited", func(t *testing.T) {
		c.Apply(t, "shop", `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: demo}
spec:
  hosts: [demo.shop.svc.cluster.local]
  routes:
  - {name: split, route: [{destination: {host: demo.shop.svc.cluster.local, subset: v1}, weight: 20},
                          {destination: {host: demo.shop.svc.cluster.local, subset: v2}, weight: 80}]}
`)
		cfg := px.wait(t, "the edited route", func(cfg *proxy.Config) bool {
			l := listenerOf(cfg, demoRoutes)
			return l != nil && len(l.Routes.Routes) == 1 && l.Routes.Routes[0].Name == "split"
		})
		r := listenerOf(cfg, demoRoutes).Routes.Routes[0]
		if len(r.WeightedClusters) != 2 || r.WeightedClusters[0] != (proxy.WeightedCluster{Name: demoV1, Weight: 20}) ||
			r.WeightedClusters[1] != (proxy.WeightedCluster{Name: demoV2, Weight: 80}) {
			t.Errorf("split %+v", r.WeightedClusters)
		}
	})

	t.Run("Service deleted", func(t *testing.T) {
		svc := kubetest.MustDecodeOne(t, `{apiVersion: v1, kind: Service, metadata: {name: demo, namespace: shop}}`)
		c.Delete(t, svc)
		px.wait(t, "the demo service gone", func(cfg *proxy.Config) bool {
			return listenerOf(cfg, demoRoutes) == nil && clusterOf(cfg, demoAll) == nil
		})
		cp.wait(t, "the DestinationRule left without its host warned about", func(u source.Update) bool {
			return hasProblem(u, `kube:DestinationRule shop/demo: spec.host: warning: no ServiceEntry defines host "demo.shop.svc.cluster.local"`)
		})
	})
}
