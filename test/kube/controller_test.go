package kubeinterop

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/control/source"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/test/kube/kubetest"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// catalog is a folder's service whose MetaRouter sends to a cluster's Service and subset.
const catalog = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: catalog}
spec:
  hosts: [catalog.files.example]
  addresses: [127.0.5.1]
  ports: [{number: 20880, name: tcp-dubbo}]
  resolution: STATIC
  endpoints: [{address: 10.5.0.1}]
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: catalog}
spec:
  hosts: [catalog.files.example]
  routes: [{name: to-cluster, route: [{destination: {host: demo.shop.svc.mesh.test, subset: v1}}]}]
`

// TestControllerCommand runs `meltemi controller --kube -f DIR` as users do, on a kubeconfig file, and
// a real xDS client of the proxy against it: the flags are wired, --cluster-domain names the hosts,
// the folder's objects and the cluster's are served together (one refers to the other), and /ready and
// /config_dump tell what is served and what is wrong.
func TestControllerCommand(t *testing.T) {
	c := kubetest.Start(t)
	bin := meshtest.Build(t, t.TempDir())
	host := meshtest.NewNet().Host(1)
	xdsAddr, adminAddr := meshtest.FreeAddr(t, host), meshtest.FreeAddr(t, host)
	c.Apply(t, "shop", strings.ReplaceAll(shop, "svc.cluster.local", "svc.mesh.test"))
	dir := t.TempDir()
	meshtest.WriteAtomically(t, dir, "catalog.yaml", catalog)
	p := meshtest.Start(t, bin, "controller", append([]string{"controller", "--kube", "--kubeconfig", c.KubeConfig(t),
		"--cluster-domain", "mesh.test", "-f", dir, "--xds", xdsAddr, "--admin", adminAddr}, meshtest.LogFlags...)...)
	admin := meshtest.Admin{Addr: adminAddr, Proc: p}
	took := admin.WaitReady(t, waitLimit)
	t.Logf("controller ready in %v", took.Round(time.Millisecond))

	px := connectProxy(t, xdsAddr)
	const routes = "demo.shop.svc.mesh.test_20880"
	cfg := px.wait(t, "the demo service under the cluster domain given", func(cfg *proxy.Config) bool {
		l := listenerOf(cfg, routes)
		return l != nil && len(l.Routes.Routes) == 2 && len(endpointsOf(clusterOf(cfg, "outbound|20880|v2|demo.shop.svc.mesh.test"))) == 1
	})
	if l := listenerOf(cfg, routes); l.Routes.Routes[0].Cluster != "outbound|20880|v2|demo.shop.svc.mesh.test" {
		t.Errorf("first route %+v", l.Routes.Routes[0])
	}
	cfg = px.wait(t, "the folder's service routed to the cluster's", func(cfg *proxy.Config) bool {
		l := listenerOf(cfg, "catalog.files.example_20880")
		return l != nil && len(l.Routes.Routes) == 1
	})
	if l := listenerOf(cfg, "catalog.files.example_20880"); l.Address != "127.0.5.1:20880" ||
		l.Routes.Routes[0].Cluster != "outbound|20880|v1|demo.shop.svc.mesh.test" {
		t.Errorf("catalog listener %s, routes %+v", l.Address, l.Routes.Routes)
	}

	resp, err := http.Get("http://" + adminAddr + "/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var dump struct {
		Services []struct{ Host string } `json:"services"`
		Problems []string                `json:"problems"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		t.Fatal(err)
	}
	if len(dump.Services) != 2 || dump.Services[0].Host != "catalog.files.example" || dump.Services[1].Host != "demo.shop.svc.mesh.test" {
		t.Errorf("/config_dump services %+v", dump.Services)
	}
	found := false
	for _, prob := range dump.Problems {
		found = found || strings.HasPrefix(prob, "kube:Service shop/demo: spec.clusterIPs[0]: warning: ")
		if strings.Contains(prob, "catalog") {
			t.Errorf("problem with the folder's objects: %s", prob)
		}
	}
	if !found {
		t.Errorf("/config_dump problems %q lack the ClusterIP a local proxy cannot bind", dump.Problems)
	}
}

// TestRBAC runs the source as a user holding only the ClusterRole of deploy/kubernetes: it must
// list and watch everything it reads. A user without it is refused, and the source says so.
func TestRBAC(t *testing.T) {
	c := kubetest.Start(t)
	rbac, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubernetes", "controller-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c.Apply(t, "", string(rbac))
	c.Apply(t, "", `
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: meltemi-controller-test}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: meltemi-controller}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: meltemi-rbac-test}]
`)
	c.Apply(t, "shop", shop)

	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	u := runSource(t, c.User(t, "meltemi-rbac-test"), logger)
	u.wait(t, "the demo service read with the controller's ClusterRole", func(u source.Update) bool {
		return u.Snapshot.Service(demoHost) != nil && len(u.Snapshot.Objects.MetaRouters) == 1
	})
	if strings.Contains(logs.String(), "cannot list or watch") {
		t.Errorf("the ClusterRole is not enough:\n%s", logs.String())
	}

	t.Run("without it", func(t *testing.T) {
		var logs syncBuffer
		denied := runSource(t, c.User(t, "meltemi-nobody"), slog.New(slog.NewTextHandler(&logs, nil)))
		meshtest.Poll(t, waitLimit, "the source to say it is forbidden", func() bool {
			return strings.Contains(logs.String(), "kube: cannot list or watch; retrying") && strings.Contains(logs.String(), "forbidden")
		})
		if n := denied.count(); n != 0 {
			t.Errorf("published %d updates without being able to list", n)
		}
	})
}

// syncBuffer is a log destination tests read while the source writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestControllerRBAC runs `meltemi controller --kube` with every singleton and the webhook server as
// the ServiceAccount of deploy/kubernetes/controller-rbac.yaml, holding nothing but its roles: it
// leads, reports, writes conditions, records addresses, keeps the webhook's Secret and patches the
// caBundle, and is never refused.
func TestControllerRBAC(t *testing.T) {
	c := kubetest.Start(t)
	rbac, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubernetes", "controller-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c.Apply(t, "", string(rbac))
	bin := meshtest.Build(t, t.TempDir())
	host := meshtest.NewNet().Host(1)
	webhookAddr := meshtest.FreeAddr(t, host)
	cfg := webhookManifest(t, "https://"+webhookAddr)
	if err := c.Client.Create(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Delete(t, cfg) })
	kubeconfig := c.UserKubeConfig(t, "system:serviceaccount:meltemi-system:meltemi-controller")
	r := startReplica(t, bin, kubeconfig, host, "controller", "--webhook-addr", webhookAddr, "--webhook-hosts", host)
	waitLeader(t, c, r)

	c.Apply(t, "shop", shop+"---\n"+unaddressed("plain", "plain.shop.example"))
	waitConditions(t, c, metaRouterGVK, "shop", "demo", accepted, noProxies)
	waitRecorded(t, c, "plain", "plain.shop.example")
	meshtest.Poll(t, waitLimit, "the webhook to refuse a bad MetaRouter", func() bool {
		u := kubetest.MustDecodeOne(t, "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"+
			"metadata: {name: bad, namespace: shop}\nspec: {hosts: [demo.shop.svc.cluster.local]}\n")
		err := c.Client.Create(t.Context(), u)
		if err == nil {
			c.Delete(t, u)
		}
		return err != nil && strings.Contains(err.Error(), "MetaRouter shop/bad: spec: at least one of routes")
	})
	// Config problems are warnings too; what goes wrong talking to the API server says it is retried.
	for _, bad := range []string{"forbidden", "retrying", "level=ERROR"} {
		if out := r.proc.Output(); strings.Contains(out, bad) {
			t.Errorf("%q in the controller's log:\n%s", bad, grepLines(out, bad))
		}
	}
}
