package kubeinterop

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/test/kube/kubetest"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// Election timings short enough for a test; client-go's rules (lease > renew deadline > 1.2 × retry)
// hold.
const (
	testLease  = 3 * time.Second
	testRenew  = 2 * time.Second
	testRetry  = 500 * time.Millisecond
	testReport = time.Second
)

// replica is one `meltemi controller --kube` process.
type replica struct {
	name  string
	proc  *meshtest.Process
	admin meshtest.Admin
	xds   string
}

func startReplica(t testing.TB, bin, kubeconfig, host, name string, extra ...string) *replica {
	t.Helper()
	xdsAddr, adminAddr := meshtest.FreeAddr(t, host), meshtest.FreeAddr(t, host)
	args := append([]string{"controller", "--kube", "--kubeconfig", kubeconfig, "--namespace", "meltemi-system",
		"--xds", xdsAddr, "--admin", adminAddr,
		"--leader-election-lease-duration", testLease.String(), "--leader-election-renew-deadline", testRenew.String(),
		"--leader-election-retry-period", testRetry.String(), "--status-report-interval", testReport.String()},
		meshtest.LogFlags...)
	p := meshtest.Start(t, bin, name, append(args, extra...)...)
	r := &replica{name: name, proc: p, admin: meshtest.Admin{Addr: adminAddr, Proc: p}, xds: xdsAddr}
	r.admin.WaitReady(t, waitLimit)
	return r
}

// replicaDump is the replica's part of /config_dump.
type replicaDump struct {
	Identity string `json:"identity"`
	Leader   string `json:"leader"`
	Leading  bool   `json:"leading"`
}

// state reads the replica's /config_dump; ok is false when it does not answer.
func (r *replica) state() (replicaDump, bool) {
	resp, err := http.Get("http://" + r.admin.Addr + "/config_dump")
	if err != nil {
		return replicaDump{}, false
	}
	defer resp.Body.Close()
	var dump struct {
		Replica replicaDump `json:"replica"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		return replicaDump{}, false
	}
	return dump.Replica, true
}

func (r *replica) writes(t testing.TB) float64 {
	return r.admin.Value(t, "meltemi_controller_status_writes_total", nil)
}

// waitLeader waits until exactly one of replicas leads and holds the Lease, and returns it.
func waitLeader(t testing.TB, c *kubetest.Cluster, replicas ...*replica) *replica {
	t.Helper()
	var leader *replica
	meshtest.Poll(t, waitLimit, "one replica to lead and hold the Lease", func() bool {
		leader = nil
		for _, r := range replicas {
			st, ok := r.state()
			if !ok {
				return false
			}
			if st.Leading {
				if leader != nil {
					return false
				}
				leader = r
			}
		}
		if leader == nil {
			return false
		}
		st, _ := leader.state()
		return leaseHolder(t, c) == st.Identity
	})
	return leader
}

func leaseHolder(t testing.TB, c *kubetest.Cluster) string {
	var lease coordinationv1.Lease
	if err := c.Client.Get(context.Background(), types.NamespacedName{Namespace: "meltemi-system", Name: "meltemi-controller"}, &lease); err != nil {
		return ""
	}
	if lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *lease.Spec.HolderIdentity
}

var serviceEntryGVK = schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "ServiceEntry"}

// recorded returns the addresses a ServiceEntry's status records, by host.
func recorded(t testing.TB, c *kubetest.Cluster, name string) map[string]string {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(serviceEntryGVK)
	c.Get(t, withKey(u, "shop", name))
	addrs, _, _ := unstructured.NestedSlice(u.Object, "status", "addresses")
	out := map[string]string{}
	for _, a := range addrs {
		m, _ := a.(map[string]any)
		host, _ := m["host"].(string)
		value, _ := m["value"].(string)
		out[host] = value
	}
	return out
}

func waitRecorded(t testing.TB, c *kubetest.Cluster, name, host string) netip.Addr {
	t.Helper()
	var ip netip.Addr
	meshtest.Poll(t, waitLimit, "the address of "+host+" recorded in ServiceEntry shop/"+name, func() bool {
		a, err := netip.ParseAddr(recorded(t, c, name)[host])
		ip = a
		return err == nil && model.VIPRange.Contains(a)
	})
	return ip
}

func unaddressed(name, host string) string {
	return `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ` + name + `}
spec:
  hosts: [` + host + `]
  ports: [{number: 20880, name: tcp-dubbo}]
  resolution: STATIC
  endpoints: [{address: 10.7.0.1}]
`
}

func listensOn(cfg *proxy.Config, addr string) bool {
	return slices.ContainsFunc(cfg.Listeners, func(l proxy.Listener) bool { return l.Address == addr })
}

// TestHighAvailability runs two controllers against one API server, as two replicas of a
// Deployment: both serve xDS, only the leader writes status and records allocated addresses, and the
// conditions count the proxies of both. The leader stops; the other takes over within the lease
// duration, and the addresses stay where they were. A third replica takes over from one that crashes.
func TestHighAvailability(t *testing.T) {
	c := kubetest.Start(t)
	c.Namespace(t, "meltemi-system")
	bin := meshtest.Build(t, t.TempDir())
	host := meshtest.NewNet().Host(1)
	kubeconfig := c.KubeConfig(t)
	a := startReplica(t, bin, kubeconfig, host, "replica-a")
	b := startReplica(t, bin, kubeconfig, host, "replica-b")
	leader := waitLeader(t, c, a, b)
	follower := a
	if leader == a {
		follower = b
	}
	t.Logf("%s leads", leader.name)

	c.Apply(t, "shop", unaddressed("plain", "plain.shop.example")+`---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: plain}
spec:
  hosts: [plain.shop.example]
  routes: [{name: all, route: [{destination: {host: plain.shop.example}}]}]
---
`+unaddressed("preset", "preset.shop.example"))
	// An address recorded by someone else (a previous controller, say) is the one served.
	preset := "127.240.250.250"
	se := &unstructured.Unstructured{}
	se.SetGroupVersionKind(serviceEntryGVK)
	withKey(se, "shop", "preset")
	if err := c.Client.Status().Patch(context.Background(), se, client.RawPatch(types.MergePatchType,
		[]byte(`{"status":{"addresses":[{"value":"`+preset+`","host":"preset.shop.example"}]}}`))); err != nil {
		t.Fatal(err)
	}
	plainVIP := waitRecorded(t, c, "plain", "plain.shop.example")
	t.Logf("plain.shop.example recorded at %s", plainVIP)

	// A proxy of the follower serves the addresses the leader recorded, and its ACK programs the router.
	px := connectProxy(t, follower.xds)
	px.wait(t, "the follower's proxy on the recorded addresses", func(cfg *proxy.Config) bool {
		return listensOn(cfg, plainVIP.String()+":20880") && listensOn(cfg, preset+":20880")
	})
	waitConditions(t, c, metaRouterGVK, "shop", "plain", accepted, programmed)
	if got := recorded(t, c, "preset"); got["preset.shop.example"] != preset {
		t.Errorf("the preset address was replaced: %v", got)
	}
	if w := follower.writes(t); w != 0 {
		t.Errorf("the follower wrote status %v times", w)
	}
	if w := leader.writes(t); w == 0 {
		t.Error("the leader wrote no status")
	}

	// The leader stops, as in a rolling update: it releases the Lease, and the other takes over at once.
	stopped := time.Now()
	leader.proc.Stop()
	meshtest.Poll(t, waitLimit, follower.name+" to take over", func() bool {
		st, _ := follower.state()
		return st.Leading
	})
	took := time.Since(stopped)
	t.Logf("%s took over %v after %s was stopped", follower.name, took.Round(time.Millisecond), leader.name)
	if took > testLease {
		t.Errorf("took over after %v, more than the lease duration %v", took, testLease)
	}
	c.Apply(t, "shop", unaddressed("later", "later.shop.example"))
	laterVIP := waitRecorded(t, c, "later", "later.shop.example")
	if got := recorded(t, c, "plain")["plain.shop.example"]; got != plainVIP.String() {
		t.Errorf("plain.shop.example moved from %s to %s", plainVIP, got)
	}
	px.wait(t, "the proxy on the old and the new address", func(cfg *proxy.Config) bool {
		return listensOn(cfg, plainVIP.String()+":20880") && listensOn(cfg, laterVIP.String()+":20880")
	})
	// The stopped replica's report went with it: the router stays programmed by the survivor's proxy.
	waitConditions(t, c, metaRouterGVK, "shop", "plain", accepted, programmed)

	// A third replica; the leader crashes. The Lease is not released: the third waits for it to expire.
	third := startReplica(t, bin, kubeconfig, host, "replica-c")
	crashed := follower
	crashedID, _ := crashed.state()
	crashedAt := time.Now()
	crashed.proc.Kill()
	meshtest.Poll(t, waitLimit, third.name+" to take over from a crashed leader", func() bool {
		st, _ := third.state()
		return st.Leading
	})
	took = time.Since(crashedAt)
	t.Logf("%s took over %v after %s crashed (lease duration %v)", third.name, took.Round(time.Millisecond), crashed.name, testLease)
	if limit := testLease + 2*testRetry + time.Second; took > limit {
		t.Errorf("took over after %v, more than the lease duration and two retries (%v)", took, limit)
	}
	// The crashed replica's report expires and is deleted; the addresses stay.
	meshtest.Poll(t, waitLimit, "the crashed replica's report to be deleted", func() bool {
		var cm corev1.ConfigMap
		err := c.Client.Get(context.Background(), types.NamespacedName{Namespace: "meltemi-system",
			Name: "meltemi-controller-report-" + crashedID.Identity}, &cm)
		return apierrors.IsNotFound(err)
	})
	for name, want := range map[string]string{"plain": plainVIP.String(), "later": laterVIP.String(), "preset": preset} {
		if got := recorded(t, c, name)[name+".shop.example"]; got != want {
			t.Errorf("%s.shop.example moved from %s to %s", name, want, got)
		}
	}
	if out := a.proc.Output() + b.proc.Output() + third.proc.Output(); strings.Contains(out, "level=ERROR") {
		t.Errorf("errors logged:\n%s", grepLines(out, "level=ERROR"))
	}
}

func grepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
