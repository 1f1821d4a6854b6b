package e2e

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/test/e2e/dubbopeer"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// greetService is the greet service as the manifests describe it: a ServiceEntry on addresses of the test's
// own, with two endpoints labelled v1 and v2 (real providers), and a DestinationRule with those subsets.
type greetService struct {
	host  string
	addrs []string // the ServiceEntry's addresses, each bound by the proxy in local mode
	port  int
	v1    *dubbopeer.Provider
	v2    *dubbopeer.Provider
}

// newGreetService starts the two providers and picks the service's addresses in net (127.20.N.1, .2, ...)
// and one port free on them.
func newGreetService(t *testing.T, block meshtest.Net, addresses int) *greetService {
	t.Helper()
	g := &greetService{host: greetHost}
	for i := range addresses {
		g.addrs = append(g.addrs, block.Host(1+i))
	}
	g.port = meshtest.FreePort(t, g.addrs[0])
	g.v1, g.v2 = dubbopeer.StartProvider(t, "v1"), dubbopeer.StartProvider(t, "v2")
	return g
}

// addr is the i-th address a consumer dials.
func (g *greetService) addr(i int) string {
	return net.JoinHostPort(g.addrs[i], strconv.Itoa(g.port))
}

// service is the greet service as a ServiceEntry and DestinationRule describe it.
func (g *greetService) service() meshtest.Service {
	return meshtest.Service{Name: "greet", Host: g.host, Addresses: g.addrs, Port: g.port, Protocol: "dubbo",
		Endpoints: []meshtest.Endpoint{{Addr: g.v1.Addr, Version: g.v1.Version}, {Addr: g.v2.Addr, Version: g.v2.Version}}}
}

// yaml is the ServiceEntry and DestinationRule.
func (g *greetService) yaml(t testing.TB) string {
	t.Helper()
	return g.service().YAML(t)
}

// router is a MetaRouter for the service with the given routes, YAML list items indented by two spaces.
func (g *greetService) router(routes string) string { return g.service().Router(routes) }

// allTo is a MetaRouter sending every request to one subset, with an attachment naming the config so a
// provider can tell which one routed a call.
func (g *greetService) allTo(subset, configName string) string {
	return g.router(fmt.Sprintf(`  - name: all-to-%s
    route:
    - destination:
        host: %s
        subset: %s
    requestMutation:
    - key: x-meltemi-config
      value: %q
`, subset, g.host, subset, configName))
}

// manifestDir writes the service's manifests and a MetaRouter into a new folder and returns it.
func (g *greetService) manifestDir(t *testing.T, router string) string {
	t.Helper()
	dir := t.TempDir()
	meshtest.WriteAtomically(t, dir, "greet.yaml", g.yaml(t))
	meshtest.WriteAtomically(t, dir, "router.yaml", router)
	return dir
}

// The mesh tests run the meltemi binary the way users do: built from the product's own module, started as
// child processes, configured only by manifests in a folder, observed only through the admin endpoints and
// real Dubbo peers.

// splitMesh is a controller and a local-mode proxy in processes of their own.
type splitMesh struct {
	t                    *testing.T
	bin, dir             string
	xdsAddr, ctrlAddr    string
	controller, proxyAdm meshtest.Admin
}

// startSplitMesh starts `meltemi controller` on dir and `meltemi proxy --mode local` dialling it, and waits
// until both are ready.
func startSplitMesh(t *testing.T, bin, dir, host string) *splitMesh {
	t.Helper()
	m := &splitMesh{t: t, bin: bin, dir: dir, xdsAddr: meshtest.FreeAddr(t, host), ctrlAddr: meshtest.FreeAddr(t, host)}
	m.startController()
	proxyAddr := meshtest.FreeAddr(t, host)
	p := meshtest.Start(t, bin, "proxy", append([]string{"proxy", "--xds", m.xdsAddr, "--mode", "local",
		"--node", "local~e2e-" + host, "--admin", proxyAddr}, meshtest.LogFlags...)...)
	m.proxyAdm = meshtest.Admin{Addr: proxyAddr, Proc: p}
	d := m.proxyAdm.WaitReady(t, 30*time.Second)
	t.Logf("meltemi proxy ready in %v", d.Round(time.Millisecond))
	return m
}

// startController starts the controller on the mesh's addresses (again, after a kill) and waits until it
// serves.
func (m *splitMesh) startController() {
	m.t.Helper()
	p := meshtest.Start(m.t, m.bin, "controller", append([]string{"controller", "-f", m.dir, "--xds", m.xdsAddr,
		"--admin", m.ctrlAddr}, meshtest.LogFlags...)...)
	m.controller = meshtest.Admin{Addr: m.ctrlAddr, Proc: p}
	m.controller.WaitReady(m.t, 30*time.Second)
}
