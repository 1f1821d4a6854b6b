package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/meltemi-mesh/meltemi/test/e2e/dubbopeer"
)

// The mesh tests run the meltemi binary the way users do: built from the product's own module, started as
// child processes, configured only by manifests in a folder, observed only through the admin endpoints and
// real Dubbo peers.

// productModule is the module the binary is built from.
const productModule = "github.com/meltemi-mesh/meltemi"

// buildMeltemi builds the binary into dir and returns its path. It is built inside the product's module
// rather than this one: that is the build users get, with the product's own dependency versions, and it
// leaves this module's go.mod alone (the binary needs modules the tests do not).
func buildMeltemi(t *testing.T, dir string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build meltemi: %v", err)
	}
	// The replace directive of this module says where the product's source is.
	out, err := exec.CommandContext(ctx, goTool, "list", "-m", "-f", "{{.Dir}}", productModule).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", productModule, err)
	}
	root := strings.TrimSpace(string(out))
	bin := filepath.Join(dir, "meltemi")
	start := time.Now()
	build := exec.CommandContext(ctx, goTool, "build", "-o", bin, "./cmd/meltemi")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/meltemi in %s: %v\n%s", root, err, out)
	}
	t.Logf("built meltemi in %v", time.Since(start).Round(time.Millisecond))
	return bin
}

// meshNets counts the /24 blocks of 127.20.0.0/16 handed to tests. It starts at an offset taken from the
// process id so that test runs side by side mostly use different blocks; ports are chosen by the kernel, so a
// shared block would still not clash.
var meshNets atomic.Uint32

func init() { meshNets.Store(uint32(os.Getpid()%50) * 5) }

// meshNet is a loopback block of a test's own: 127.20.N.0/24.
type meshNet struct{ n uint32 }

func newMeshNet() meshNet { return meshNet{n: (meshNets.Add(1) - 1) % 256} }

// host returns 127.20.N.i.
func (m meshNet) host(i int) string { return fmt.Sprintf("127.20.%d.%d", m.n, i) }

// freeAddr returns host:port with a port nobody listens on at host right now. The caller binds it a moment
// later; the host is the test's own, so nothing else competes for the port in between.
func freeAddr(t testing.TB, host string) string {
	t.Helper()
	return net.JoinHostPort(host, strconv.Itoa(freePort(t, host)))
}

func freePort(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("find a free port on %s: %v", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// process is a meltemi command running as a child process. Its output is kept and shown when the test
// fails.
type process struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	out    *logBuffer
	exited chan struct{}
	err    error // how it ended, once exited is closed
}

// startProcess runs bin with args and stops it when the test ends.
func startProcess(t testing.TB, bin, name string, args ...string) *process {
	t.Helper()
	p := &process{t: t, name: name, out: &logBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// The child dies with the test binary even if the binary is killed before its cleanups run.
	p.cmd.SysProcAttr = childProcAttr()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s (%s) output:\n%s", name, strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// stop asks the process to end with SIGTERM, as a service manager does, and kills it if it does not within
// a few seconds.
func (p *process) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.t.Errorf("%s did not exit within 10s of SIGTERM; killing it", p.name)
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// kill ends the process at once with SIGKILL, as a crash or the OOM killer would, and waits until it is gone.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// alive fails the test with the process's output if it has ended.
func (p *process) alive(t testing.TB) {
	t.Helper()
	select {
	case <-p.exited:
		t.Fatalf("%s exited (%v); output:\n%s", p.name, p.err, p.out.String())
	default:
	}
}

// output returns everything the process wrote so far.
func (p *process) output() string { return p.out.String() }

// logBuffer keeps a process's output, up to a bound that the logs of these short tests never reach.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

const logBufferMax = 4 << 20

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() < logBufferMax {
		b.buf.Write(p)
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// adminHTTP talks to the admin endpoints; the timeout keeps a hung process from hanging the test.
var adminHTTP = &http.Client{Timeout: 5 * time.Second}

// admin is the admin endpoint of a meltemi process. Its methods take the test (or subtest) they fail.
type admin struct {
	addr string
	proc *process
}

// status returns the HTTP status of GET path, or 0 if the request failed.
func (a admin) status(path string) int {
	resp, err := adminHTTP.Get("http://" + a.addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitReady waits until /ready answers 200; the test fails at once if the process exits meanwhile.
func (a admin) waitReady(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	poll(t, timeout, a.proc.name+" /ready to answer 200", func() bool {
		a.proc.alive(t)
		return a.status("/ready") == http.StatusOK
	})
	return time.Since(start)
}

// metrics scrapes /metrics and parses it.
func (a admin) metrics(t testing.TB) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := adminHTTP.Get("http://" + a.addr + "/metrics")
	if err != nil {
		a.proc.alive(t)
		t.Fatalf("GET %s/metrics: %v", a.addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics: %s", a.addr, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s/metrics: %v", a.addr, err)
	}
	return families
}

// value sums a metric's series whose labels include want (0 for a family not there yet).
func (a admin) value(t testing.TB, name string, want map[string]string) float64 {
	t.Helper()
	return sum(a.metrics(t), name, want)
}

// waitMetric waits until the summed metric satisfies cond and returns its value then.
func (a admin) waitMetric(t testing.TB, timeout time.Duration, name string, want map[string]string,
	what string, cond func(float64) bool) float64 {
	t.Helper()
	var v float64
	var fams map[string]*dto.MetricFamily
	deadline := time.Now().Add(timeout)
	// Polls stay frequent (every 10 ms at most) because the churn test waits like this for every rewrite.
	for delay := time.Millisecond; ; delay = min(2*delay, 10*time.Millisecond) {
		fams = a.metrics(t)
		if v = sum(fams, name, want); cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s%v did not become %s within %v; series:\n%s", a.proc.name, name, want, what,
				timeout, describe(fams, name))
		}
		time.Sleep(delay)
	}
}

// poll checks cond until it holds, with short pauses, and fails the test if it does not within timeout.
func poll(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	dubbopeer.WaitFor(t, timeout, what, cond)
}

// writeAtomically replaces dir/name the way editors and kubectl-style tools do: the content goes to a
// temporary file in the same folder, renamed over the old one, so a reader never sees half a file. The
// temporary name starts with a dot, which the file source skips.
func writeAtomically(t testing.TB, dir, name, content string) {
	t.Helper()
	f, err := os.CreateTemp(dir, "."+name+"-*.tmp")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// writeInPlace overwrites dir/name in place: truncated, then written, as `echo > file` or an editor that
// keeps the inode does.
func writeInPlace(t testing.TB, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

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
func newGreetService(t *testing.T, block meshNet, addresses int) *greetService {
	t.Helper()
	g := &greetService{host: greetHost}
	for i := range addresses {
		g.addrs = append(g.addrs, block.host(1+i))
	}
	g.port = freePort(t, g.addrs[0])
	g.v1, g.v2 = dubbopeer.StartProvider(t, "v1"), dubbopeer.StartProvider(t, "v2")
	return g
}

// addr is the i-th address a consumer dials.
func (g *greetService) addr(i int) string {
	return net.JoinHostPort(g.addrs[i], strconv.Itoa(g.port))
}

// yaml is the ServiceEntry and DestinationRule.
func (g *greetService) yaml(t testing.TB) string {
	t.Helper()
	endpoint := func(p *dubbopeer.Provider) string {
		host, port, err := net.SplitHostPort(p.Addr)
		if err != nil {
			t.Fatalf("provider address %q: %v", p.Addr, err)
		}
		return fmt.Sprintf(`  - address: %s
    ports:
      tcp-metaprotocol-dubbo: %s
    labels:
      app: greet
      version: %s
`, host, port, p.Version)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: greet
spec:
  hosts:
  - %s
  addresses:
`, g.host)
	for _, a := range g.addrs {
		fmt.Fprintf(&b, "  - %s\n", a)
	}
	fmt.Fprintf(&b, `  ports:
  - number: %d
    name: tcp-metaprotocol-dubbo
    protocol: TCP
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints:
%s%s---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: greet
spec:
  host: %s
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
`, g.port, endpoint(g.v1), endpoint(g.v2), g.host)
	return b.String()
}

// router is a MetaRouter for the service with the given routes, YAML list items indented by two spaces.
func (g *greetService) router(routes string) string {
	return fmt.Sprintf(`apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata:
  name: greet
spec:
  hosts:
  - %s
  routes:
%s`, g.host, routes)
}

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
	writeAtomically(t, dir, "greet.yaml", g.yaml(t))
	writeAtomically(t, dir, "router.yaml", router)
	return dir
}

// logFlags make the processes say what they do at info level, which the tests read and show on failure.
var logFlags = []string{"--log-level", "info"}

// startMesh runs `meltemi mesh` on dir with its xDS and admin addresses on host and waits until it is ready.
func startMesh(t *testing.T, bin, dir, host string) admin {
	t.Helper()
	xdsAddr, adminAddr := freeAddr(t, host), freeAddr(t, host)
	p := startProcess(t, bin, "mesh", append([]string{"mesh", "-f", dir, "--xds", xdsAddr, "--admin", adminAddr},
		logFlags...)...)
	a := admin{addr: adminAddr, proc: p}
	d := a.waitReady(t, 30*time.Second)
	t.Logf("meltemi mesh ready in %v", d.Round(time.Millisecond))
	return a
}

// splitMesh is a controller and a local-mode proxy in processes of their own.
type splitMesh struct {
	t                    *testing.T
	bin, dir             string
	xdsAddr, ctrlAddr    string
	controller, proxyAdm admin
}

// startSplitMesh starts `meltemi controller` on dir and `meltemi proxy --mode local` dialling it, and waits
// until both are ready.
func startSplitMesh(t *testing.T, bin, dir, host string) *splitMesh {
	t.Helper()
	m := &splitMesh{t: t, bin: bin, dir: dir, xdsAddr: freeAddr(t, host), ctrlAddr: freeAddr(t, host)}
	m.startController()
	proxyAddr := freeAddr(t, host)
	p := startProcess(t, bin, "proxy", append([]string{"proxy", "--xds", m.xdsAddr, "--mode", "local",
		"--node", "local~e2e-" + host, "--admin", proxyAddr}, logFlags...)...)
	m.proxyAdm = admin{addr: proxyAddr, proc: p}
	d := m.proxyAdm.waitReady(t, 30*time.Second)
	t.Logf("meltemi proxy ready in %v", d.Round(time.Millisecond))
	return m
}

// startController starts the controller on the mesh's addresses (again, after a kill) and waits until it
// serves.
func (m *splitMesh) startController() {
	m.t.Helper()
	p := startProcess(m.t, m.bin, "controller", append([]string{"controller", "-f", m.dir, "--xds", m.xdsAddr,
		"--admin", m.ctrlAddr}, logFlags...)...)
	m.controller = admin{addr: m.ctrlAddr, proc: p}
	m.controller.waitReady(m.t, 30*time.Second)
}
