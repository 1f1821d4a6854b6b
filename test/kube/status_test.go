package kubeinterop

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meltemi-mesh/meltemi/control/source"
	"github.com/meltemi-mesh/meltemi/control/status"
	"github.com/meltemi-mesh/meltemi/control/xds"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/test/kube/kubetest"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// statusPlane is a replica as `meltemi controller --kube` runs one, without leader election: a kube
// source feeding an xDS server, the replica's report, and the status writer.
type statusPlane struct {
	*updates
	Addr string
	xds  *xds.Server
	reg  *prometheus.Registry
}

func startStatusPlane(t testing.TB, c *kubetest.Cluster, host string) *statusPlane {
	t.Helper()
	c.Namespace(t, "meltemi-system")
	srv, err := xds.New(xds.Options{Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	metrics, err := status.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	const set, interval = "meltemi-test", time.Second
	reporter, err := status.NewReporter(c.Config, srv, status.ReporterOptions{Namespace: "meltemi-system", Set: set,
		Identity: "replica-a", Interval: interval, Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	latest := &source.Latest{}
	writer, err := status.NewWriter(c.Config, status.WriterOptions{Updates: latest, Namespace: "meltemi-system", Set: set,
		ReportInterval: interval, Metrics: metrics, Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 3)
	go func() { done <- srv.Serve(ctx, lis) }()
	go func() { done <- reporter.Run(ctx) }()
	go func() { done <- writer.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for range 3 {
			if err := <-done; err != nil {
				t.Errorf("status plane: %v", err)
			}
		}
	})
	rec := runSource(t, c.Config, nil, func(u source.Update) {
		reporter.Record(u.Snapshot)
		latest.Publish(u)
		srv.Update(u.Snapshot)
	})
	return &statusPlane{updates: rec, Addr: lis.Addr().String(), xds: srv, reg: reg}
}

// objectStatus is what a cluster object's status says.
type objectStatus struct {
	generation, observed int64
	resourceVersion      string
	conditions           []metav1.Condition
}

func (s objectStatus) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "generation %d, observed %d:", s.generation, s.observed)
	for _, c := range s.conditions {
		fmt.Fprintf(&b, " %s=%s/%s (%d) %q;", c.Type, c.Status, c.Reason, c.ObservedGeneration, c.Message)
	}
	return b.String()
}

func readStatus(t testing.TB, c *kubetest.Cluster, gvk schema.GroupVersionKind, namespace, name string) objectStatus {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	c.Get(t, withKey(u, namespace, name))
	var st struct {
		ObservedGeneration int64              `json:"observedGeneration"`
		Conditions         []metav1.Condition `json:"conditions"`
	}
	if m, ok := u.Object["status"].(map[string]any); ok {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &st); err != nil {
			t.Fatalf("status of %s %s/%s: %v", gvk.Kind, namespace, name, err)
		}
	}
	return objectStatus{generation: u.GetGeneration(), observed: st.ObservedGeneration, resourceVersion: u.GetResourceVersion(),
		conditions: st.Conditions}
}

// want is what a condition must say: status and reason exactly, and a message containing message.
type want struct{ status, reason, message string }

// waitConditions waits until an object's status describes its current generation with the Accepted
// and Programmed conditions wanted, and returns it.
func waitConditions(t testing.TB, c *kubetest.Cluster, gvk schema.GroupVersionKind, namespace, name string, accepted, programmed want) objectStatus {
	t.Helper()
	var st objectStatus
	matches := func(typ string, w want) bool {
		c := meta.FindStatusCondition(st.conditions, typ)
		return c != nil && string(c.Status) == w.status && c.Reason == w.reason && strings.Contains(c.Message, w.message) &&
			c.ObservedGeneration == st.generation
	}
	deadline := time.Now().Add(waitLimit)
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		st = readStatus(t, c, gvk, namespace, name)
		if st.observed == st.generation && matches("Accepted", accepted) && matches("Programmed", programmed) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s/%s: want Accepted %v and Programmed %v; status is %s", gvk.Kind, namespace, name, accepted, programmed, st)
		}
		time.Sleep(delay)
	}
}

var (
	accepted      = want{"True", "Accepted", "valid, and in effect"}
	programmed    = want{"True", "Programmed", "sent to and acknowledged by every connected proxy"}
	noProxies     = want{"False", "NoProxies", "no proxy is connected"}
	redisServiceG = schema.GroupVersionKind{Group: "redis.aeraki.io", Version: "v1alpha1", Kind: "RedisService"}
	appProtocolG  = schema.GroupVersionKind{Group: "metaprotocol.aeraki.io", Version: "v1alpha1", Kind: "ApplicationProtocol"}
)

func demoRouter(regex string) string {
	return `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: demo}
spec:
  hosts: [demo.shop.svc.cluster.local]
  routes:
  - {name: hello, match: {attributes: {method: {regex: '` + regex + `'}}}, route: [{destination: {host: demo.shop.svc.cluster.local, subset: v2}}]}
  - {name: rest, route: [{destination: {host: demo.shop.svc.cluster.local, subset: v1}}]}
`
}

// TestStatusConditions follows the conditions of objects through what happens to them: accepted and
// waiting for a proxy, programmed once one acknowledges their config, invalid (with their last good
// version served) and fixed, conflicting with an older object, routing a host nobody serves; and
// nothing is written when nothing changes.
func TestStatusConditions(t *testing.T) {
	c := kubetest.Start(t)
	host := meshtest.NewNet().Host(1)
	sp := startStatusPlane(t, c, host)
	c.Apply(t, "shop", shop)
	first := waitConditions(t, c, metaRouterGVK, "shop", "demo", accepted, noProxies)
	t.Logf("demo: %s", first)

	px := connectProxy(t, sp.Addr)
	waitConditions(t, c, metaRouterGVK, "shop", "demo", accepted, programmed)
	px.wait(t, "the demo routes", func(cfg *proxy.Config) bool { return listenerOf(cfg, demoRoutes) != nil })

	// Broken: the last good version keeps serving, and both conditions say so.
	c.Apply(t, "shop", demoRouter("("))
	broken := waitConditions(t, c, metaRouterGVK, "shop", "demo",
		want{"False", "Invalid", "spec.routes[0].match.attributes.method.regex: not an RE2 expression"},
		want{"False", "Invalid", "is not served: see Accepted; its last good version, generation 1, is"})
	if broken.generation != 2 {
		t.Errorf("generation %d after one edit", broken.generation)
	}
	// Fixed: programmed again, at the new generation.
	c.Apply(t, "shop", demoRouter("^say"))
	waitConditions(t, c, metaRouterGVK, "shop", "demo", accepted, programmed)

	// A second router for the host: the older one wins, the newer one says why it does nothing.
	c.Apply(t, "shop", `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: second}
spec:
  hosts: [demo.shop.svc.cluster.local]
  routes: [{name: all, route: [{destination: {host: demo.shop.svc.cluster.local}}]}]
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: lost}
spec:
  hosts: [lost.shop.svc.cluster.local]
  routes: [{name: all, route: [{destination: {host: lost.shop.svc.cluster.local}}]}]
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: ApplicationProtocol
metadata: {name: dashed}
spec: {protocol: video-packet, codec: aeraki.meta_protocol.codec.dubbo}
---
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {name: cache}
spec: {host: [cache.shop.svc.cluster.local]}
`)
	waitConditions(t, c, metaRouterGVK, "shop", "second",
		want{"False", "Conflicted", `spec.hosts[0]: host "demo.shop.svc.cluster.local" is already routed by MetaRouter shop/demo`},
		want{"False", "Conflicted", "without effect"})
	waitConditions(t, c, metaRouterGVK, "shop", "lost",
		want{"False", "NoHost", `no ServiceEntry defines host "lost.shop.svc.cluster.local"`}, want{"False", "NoHost", ""})
	waitConditions(t, c, appProtocolG, "shop", "dashed",
		want{"False", "Invalid", `spec.protocol: "video-packet" must not contain '-' or spaces`}, want{"False", "Invalid", ""})
	waitConditions(t, c, redisServiceG, "shop", "cache", accepted, programmed)
	settled := waitConditions(t, c, metaRouterGVK, "shop", "demo", accepted, programmed)

	// A change that leaves every condition as it is (a new label on the Service: a new snapshot, which
	// the proxy is sent and ACKs) writes nothing. A new object, written once it is programmed, shows
	// that the writer has gone over every object since.
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "demo"}}
	if err := c.Client.Patch(context.Background(), svc, client.RawPatch(types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"tier":"backend"}}}`))); err != nil {
		t.Fatal(err)
	}
	c.Apply(t, "shop", `
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {name: marker}
spec: {host: [marker.shop.svc.cluster.local]}
`)
	waitConditions(t, c, redisServiceG, "shop", "marker", accepted, programmed)
	if now := readStatus(t, c, metaRouterGVK, "shop", "demo"); now.resourceVersion != settled.resourceVersion {
		t.Errorf("demo was written again with nothing new: %s", now)
	}
	if st := sp.xds.Proxies(); len(st) != 1 || !st[0].Synced {
		t.Errorf("proxy status %+v", st)
	}
	t.Logf("status writes in all: %v", writesOf(t, sp.reg))
}

// writesOf sums meltemi_controller_status_writes_total by kind and result.
func writesOf(t testing.TB, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "meltemi_controller_status_writes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var kind, result string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "kind":
					kind = l.GetValue()
				case "result":
					result = l.GetValue()
				}
			}
			out[kind+"/"+result] += m.GetCounter().GetValue()
		}
	}
	return out
}
