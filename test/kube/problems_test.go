package kubeinterop

import (
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/test/kube/kubetest"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// The objects below pass the API server's schemas, so the cluster holds them, but the model rejects
// them (or part of them): each must be reported by kind, namespace/name and field, and skipped, while
// the good objects beside them serve.
const goodService = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: good}
spec:
  hosts: [good.checks.example]
  addresses: [127.0.4.1]
  ports: [{number: 20880, name: tcp-dubbo}]
  resolution: STATIC
  endpoints: [{address: 10.4.0.1, labels: {version: v1}}, {address: 10.4.0.2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: good}
spec:
  host: good.checks.example
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
`

func goodRouter(method, subset string) string {
	return `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: good}
spec:
  hosts: [good.checks.example]
  routes: [{name: r, match: {attributes: {method: {regex: '` + method + `'}}},
            route: [{destination: {host: good.checks.example, subset: ` + subset + `}}]}]
`
}

const badObjects = `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: no-destination}
spec:
  hosts: [good.checks.example]
  routes: [{name: r, route: []}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: unknown-protocol}
spec:
  hosts: [unknown.checks.example]
  addresses: [127.0.4.2]
  ports: [{number: 7000, name: tcp-metaprotocol-nosuch}, {number: 20880, name: tcp-dubbo}]
  resolution: STATIC
  endpoints: [{address: 10.4.1.1}]
---
apiVersion: v1
kind: Service
metadata: {name: svc}
spec:
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: tcp-metaprotocol-nosuch, port: 7000}
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: ApplicationProtocol
metadata: {name: dashed}
spec: {protocol: video-packet, codec: aeraki.meta_protocol.codec.dubbo}
`

// TestBadObjectsAreReportedAndSkipped also follows an object that turns bad: it keeps its last good
// version, with a warning, until it is fixed.
func TestBadObjectsAreReportedAndSkipped(t *testing.T) {
	c := kubetest.Start(t)
	c.Apply(t, "checks", goodService+"---"+goodRouter("^say.*", "v1"))
	c.Apply(t, "checks", badObjects)
	cp := startControlPlane(t, c.Config, meshtest.NewNet().Host(1))
	px := connectProxy(t, cp.Addr)

	wantProblems := []string{
		`kube:MetaRouter checks/no-destination: spec.routes[0].route: at least one destination is required`,
		`kube:ServiceEntry checks/unknown-protocol: spec.ports[0]: application protocol "nosuch" has no codec`,
		`kube:Service checks/svc: spec.ports[1]: application protocol "nosuch" has no codec`,
		`kube:ApplicationProtocol checks/dashed: spec.protocol: "video-packet" must not contain '-' or spaces`,
	}
	u := cp.wait(t, "every bad object reported", func(u source.Update) bool {
		for _, p := range wantProblems {
			if !hasProblem(u, p) {
				return false
			}
		}
		return true
	})
	for _, p := range u.Problems {
		if p.Severity == model.SeverityError && !strings.HasPrefix(p.File, "kube:") {
			t.Errorf("problem %q does not name its cluster object", p)
		}
	}

	// The good objects serve, and so does the good port of the entry with a bad one.
	cfg := px.wait(t, "the good routes and the unknown-protocol entry's dubbo port", func(cfg *proxy.Config) bool {
		l := listenerOf(cfg, "good.checks.example_20880")
		return l != nil && len(l.Routes.Routes) == 1 && listenerOf(cfg, "unknown.checks.example_20880") != nil
	})
	if r := listenerOf(cfg, "good.checks.example_20880").Routes.Routes[0]; r.Cluster != "outbound|20880|v1|good.checks.example" {
		t.Errorf("route %+v, want the good MetaRouter's", r)
	}
	if l := listenerOf(cfg, "unknown.checks.example_7000"); l != nil {
		t.Errorf("the port with no codec is served: %+v", l)
	}

	t.Run("an object turned bad keeps its last good version", func(t *testing.T) {
		c.Apply(t, "checks", goodRouter("say((", "v2"))
		cp.wait(t, "the broken regex reported, and the last good version kept", func(u source.Update) bool {
			return hasProblem(u, `kube:MetaRouter checks/good: spec.routes[0].match.attributes.method.regex: not an RE2 expression`) &&
				hasProblem(u, `kube:MetaRouter checks/good: warning: serving its last good version until its errors are fixed`)
		})
		if r := listenerOf(px.current(), "good.checks.example_20880").Routes.Routes[0]; r.Cluster != "outbound|20880|v1|good.checks.example" {
			t.Errorf("route %+v, want the last good version's", r)
		}

		c.Apply(t, "checks", goodRouter("^hello$", "v2"))
		px.wait(t, "the fixed MetaRouter served", func(cfg *proxy.Config) bool {
			l := listenerOf(cfg, "good.checks.example_20880")
			return l != nil && len(l.Routes.Routes) == 1 && l.Routes.Routes[0].Cluster == "outbound|20880|v2|good.checks.example"
		})
		if u := cp.last(); hasProblem(u, "checks/good") {
			t.Errorf("the fixed MetaRouter is still reported:\n%s", strings.Join(problemsOf(u), "\n"))
		}
	})
}

// TestMissingCRDsAreReported: a cluster without the CRD of a kind the controller reads (here
// RedisService's) is served all the same, and a warning says what is not watched.
func TestMissingCRDsAreReported(t *testing.T) {
	c := kubetest.Start(t)
	c.DeleteCRD(t, "redisservices.redis.aeraki.io")
	c.Apply(t, "checks", goodService)
	u := runSource(t, c.Config, nil).wait(t, "the good service", func(u source.Update) bool {
		return u.Snapshot.Service("good.checks.example") != nil
	})
	want := "kube: warning: RedisService is not served by the cluster (redis.aeraki.io/v1alpha1): not watched; install its CRD and restart"
	if !hasProblem(u, want) {
		t.Errorf("problems lack %q:\n%s", want, strings.Join(problemsOf(u), "\n"))
	}
}
