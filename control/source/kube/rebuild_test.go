package kube

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/api/scheme"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
)

// The tests against a real API server are in test/kube; these check what a rebuild makes of what
// the cache holds, with controller-runtime's fake client standing in for the cache.

var testKinds = watch{kinds: []schema.GroupVersionKind{
	{Group: "networking.istio.io", Version: "v1", Kind: "ServiceEntry"},
	{Group: "networking.istio.io", Version: "v1", Kind: "DestinationRule"},
	{Group: "metaprotocol.aeraki.io", Version: "v1alpha1", Kind: "MetaRouter"},
}}

func testSource(t *testing.T) *Source {
	t.Helper()
	s, err := New(&rest.Config{}, Options{Model: model.Options{
		Codecs: model.Codecs{"dubbo": "aeraki.meta_protocol.codec.dubbo"}, Local: true,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func object(t *testing.T, manifest string) client.Object {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		t.Fatal(err)
	}
	u.SetUID(types.UID("uid-" + u.GetKind() + "-" + u.GetName()))
	return u
}

func metaRouter(t *testing.T, regex string) client.Object {
	return object(t, `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: demo, namespace: shop}
spec:
  hosts: [demo.shop.svc.cluster.local]
  routes: [{name: r, match: {attributes: {method: {regex: '`+regex+`'}}}, route: [{destination: {host: demo.shop.svc.cluster.local}}]}]
`)
}

func demoService() []client.Object {
	svc := service(func(s *corev1.Service) {
		s.Spec.Ports = append([]corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}},
			corev1.ServicePort{Name: "tcp-dubbo", Port: 20880, Protocol: corev1.ProtocolTCP},
			corev1.ServicePort{Name: "tcp-metaprotocol-nosuch", Port: 7000, Protocol: corev1.ProtocolTCP})
	})
	es := slice("demo-a", map[string]int32{"tcp-dubbo": 20881}, podEndpoint("10.1.0.1", "v1", nil))
	return []client.Object{svc, es, pod("v1", "", "demo", map[string]string{"version": "v1"})}
}

func rebuildWith(t *testing.T, s *Source, objs ...client.Object) (source.Update, bool) {
	t.Helper()
	c := fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(objs...).Build()
	u, changed, err := s.rebuild(context.Background(), c, testKinds)
	if err != nil {
		t.Fatal(err)
	}
	return u, changed
}

func problemStrings(u source.Update) []string {
	var out []string
	for _, p := range u.Problems {
		out = append(out, p.String())
	}
	return out
}

func TestRebuild(t *testing.T) {
	s := testSource(t)
	u, changed := rebuildWith(t, s, append(demoService(), metaRouter(t, "^say"))...)
	if !changed || u.Snapshot.Version != 1 {
		t.Fatalf("first rebuild: changed %v, version %d", changed, u.Snapshot.Version)
	}
	svc := u.Snapshot.Service("demo.shop.svc.cluster.local")
	// The port with no codec is not served; the other is.
	if svc == nil || svc.Router == nil || len(svc.Ports) != 1 || len(svc.Ports[0].Endpoints) != 1 {
		t.Fatalf("service %+v", svc)
	}
	if ep := svc.Ports[0].Endpoints[0]; ep.Address != "10.1.0.1" || ep.Port != 20881 || ep.Labels["version"] != "v1" || ep.ServiceAccount != "demo" {
		t.Errorf("endpoint %+v", ep)
	}
	// The model's problems about the entry name the Service's fields: ports by the Service's index
	// (port 0 is UDP, not in the entry), the cluster IP local mode cannot bind.
	for _, want := range []string{
		`kube:Service shop/demo: spec.ports[2]: application protocol "nosuch" has no codec (known: dubbo)`,
		`kube:Service shop/demo: spec.clusterIPs[0]: warning: 10.0.0.7 is outside 127.0.0.0/8`,
	} {
		if !slices.ContainsFunc(problemStrings(u), func(p string) bool { return strings.HasPrefix(p, want) }) {
			t.Errorf("no problem %q among:\n%s", want, strings.Join(problemStrings(u), "\n"))
		}
	}

	// Nothing changed: no new snapshot, nothing to publish.
	if u2, changed := rebuildWith(t, s, append(demoService(), metaRouter(t, "^say"))...); changed || u2.Snapshot != u.Snapshot {
		t.Errorf("unchanged cluster: changed %v, version %d", changed, u2.Snapshot.Version)
	}

	// The MetaRouter turns bad: its last good version serves, and both facts are told.
	bad := metaRouter(t, "say((")
	bad.SetResourceVersion("2")
	u3, changed := rebuildWith(t, s, append(demoService(), bad)...)
	if !changed || u3.Snapshot != u.Snapshot {
		t.Errorf("turned bad: changed %v, snapshot version %d (the old snapshot must serve)", changed, u3.Snapshot.Version)
	}
	for _, want := range []string{
		"kube:MetaRouter shop/demo: spec.routes[0].match.attributes.method.regex: not an RE2 expression",
		"kube:MetaRouter shop/demo: warning: serving its last good version until its errors are fixed",
	} {
		if !slices.ContainsFunc(problemStrings(u3), func(p string) bool { return strings.HasPrefix(p, want) }) {
			t.Errorf("no problem %q among:\n%s", want, strings.Join(problemStrings(u3), "\n"))
		}
	}

	// Deleted, it goes, and the router with it.
	u4, changed := rebuildWith(t, s, demoService()...)
	if !changed || u4.Snapshot.Version != 2 || u4.Snapshot.Service("demo.shop.svc.cluster.local").Router != nil {
		t.Errorf("deleted: changed %v, version %d", changed, u4.Snapshot.Version)
	}
	if len(s.decoded) != 0 {
		t.Errorf("%d decoded objects kept after deletion", len(s.decoded))
	}
}

func TestOlderClusterObjectWins(t *testing.T) {
	s := testSource(t)
	first := object(t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: zz-first, namespace: shop, creationTimestamp: "2026-11-23T10:00:00Z"}
spec: {host: demo.shop.svc.cluster.local, subsets: [{name: v1, labels: {version: v1}}]}
`)
	second := object(t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: aa-second, namespace: shop, creationTimestamp: "2026-11-23T11:00:00Z"}
spec: {host: demo.shop.svc.cluster.local}
`)
	u, _ := rebuildWith(t, s, append(demoService(), first, second)...)
	if dr := u.Snapshot.Service("demo.shop.svc.cluster.local").DestinationRule; dr == nil || dr.Name != "zz-first" {
		t.Fatalf("rule %v, want the older zz-first", dr)
	}
	want := `kube:DestinationRule shop/aa-second: spec.host: warning: host "demo.shop.svc.cluster.local" already has ` +
		`DestinationRule shop/zz-first (kube:DestinationRule shop/zz-first, created 2026-11-23T10:00:00Z), which wins; ignored`
	if !slices.Contains(problemStrings(u), want) {
		t.Errorf("no problem %q among:\n%s", want, strings.Join(problemStrings(u), "\n"))
	}
}

func TestDiscoverReportsKindsNotServed(t *testing.T) {
	// A cluster that serves ServiceEntry in v1beta1 only, and none of Aeraki's kinds.
	mapper := restMapper(schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1beta1", Kind: "ServiceEntry"})
	w, err := discover(mapper)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(w.kinds, []schema.GroupVersionKind{{Group: "networking.istio.io", Version: "v1beta1", Kind: "ServiceEntry"}}) {
		t.Errorf("watched %v", w.kinds)
	}
	if len(w.problems) != len(customKinds)-1 {
		t.Errorf("%d problems for %d kinds not served", len(w.problems), len(customKinds)-1)
	}
	want := "kube: warning: MetaRouter is not served by the cluster (metaprotocol.aeraki.io/v1alpha1): not watched; install its CRD and restart"
	if !slices.ContainsFunc(w.problems, func(p model.Problem) bool { return p.String() == want }) {
		t.Errorf("no problem %q among %v", want, w.problems)
	}
}

// restMapper maps exactly the kinds given, as discovery of a cluster serving only those would.
func restMapper(gvks ...schema.GroupVersionKind) meta.RESTMapper {
	var versions []schema.GroupVersion
	for _, gvk := range gvks {
		versions = append(versions, gvk.GroupVersion())
	}
	m := meta.NewDefaultRESTMapper(versions)
	for _, gvk := range gvks {
		m.Add(gvk, meta.RESTScopeNamespace)
	}
	return m
}
