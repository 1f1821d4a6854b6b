package xds_test

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	networking "istio.io/api/networking/v1"

	mppv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/v1alpha"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/translate"
	"github.com/meltemi-mesh/meltemi/control/xds"
)

// TestPushLatency measures figure 6 of the benchmarks: the time from Update to the last proxy's ACK, and
// the controller's memory per connected proxy. It runs only when asked:
//
//	go test ./control/xds -run TestPushLatency -v -push-latency=1,100,1000
//
// The controller (this process) serves the real translator's output for a mesh of -push-services Dubbo
// services; the proxies run in a child process (this test binary again), so that the memory measured is
// the controller's alone. They are raw ADS clients that subscribe as a proxy does and ACK everything.
// Each update moves one endpoint of one service, so every proxy is sent the endpoints again.
var (
	pushLatency  = flag.String("push-latency", "", "run TestPushLatency for these numbers of proxies, e.g. 1,100,1000")
	pushUpdates  = flag.Int("push-updates", 30, "model updates TestPushLatency measures for each number of proxies")
	pushServices = flag.Int("push-services", 50, "services in the mesh TestPushLatency serves")
)

// proxiesEnv tells the child process to run simulated proxies: "address,count".
const proxiesEnv = "MELTEMI_XDS_BENCH_PROXIES"

func TestPushLatency(t *testing.T) {
	if *pushLatency == "" {
		t.Skip("a measurement: run with -push-latency=1,100,1000")
	}
	var counts []int
	for _, s := range strings.Split(*pushLatency, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			t.Fatalf("-push-latency: %q is not a number of proxies", s)
		}
		counts = append(counts, n)
	}
	var rows []string
	for _, n := range counts {
		rows = append(rows, measurePush(t, n))
	}
	fmt.Printf("\ncontrol plane, %d services (local mode, real translator), %d updates each moving one endpoint, GOMAXPROCS %d\n",
		*pushServices, *pushUpdates, runtime.GOMAXPROCS(0))
	fmt.Println("| proxies | Update() p50 | last ACK p50 | last ACK p99 | last ACK max | controller CPU / update | heap / proxy | stacks / proxy | goroutines / proxy |")
	fmt.Println("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rows {
		fmt.Println(r)
	}
}

// measurePush runs one controller with n proxies and returns its table row.
func measurePush(t *testing.T, n int) string {
	srv, err := xds.New(xds.Options{
		Translate: translate.Translate,
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	acks := &ackCollector{}
	xds.OnConverged(srv, acks.record)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()

	version := uint64(1)
	srv.Update(benchModel(t, version, *pushServices, 0))
	before := memory()

	child := exec.Command(os.Args[0], "-test.run=^TestPushLatencyProxies$")
	child.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d", proxiesEnv, lis.Addr(), n))
	child.Stdout, child.Stderr = os.Stderr, os.Stderr
	// The child runs until its stdin closes.
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		if err := child.Wait(); err != nil {
			t.Errorf("proxies: %v", err)
		}
	}()

	eventually(t, fmt.Sprintf("%d proxies connected", n), func() bool { return len(srv.Proxies()) == n })
	// A first change that every proxy ACKs proves that all of them have subscribed to everything.
	version++
	wait := acks.expect(version, n)
	srv.Update(benchModel(t, version, *pushServices, int(version)))
	waitAcks(t, wait, acks, n)
	after := memory()

	var pushes, lastAcks []time.Duration
	cpuBefore := cpuTime(t)
	for range *pushUpdates {
		version++
		wait := acks.expect(version, n)
		start := time.Now()
		srv.Update(benchModel(t, version, *pushServices, int(version)))
		pushes = append(pushes, time.Since(start))
		lastAcks = append(lastAcks, waitAcks(t, wait, acks, n))
	}
	cpu := time.Duration(-1)
	if cpuBefore >= 0 {
		cpu = (cpuTime(t) - cpuBefore) / time.Duration(*pushUpdates)
	}
	slices.Sort(pushes)
	slices.Sort(lastAcks)
	perProxy := func(b, a uint64) string {
		return fmt.Sprintf("%.1f KiB", (float64(a)-float64(b))/float64(n)/1024)
	}
	return fmt.Sprintf("| %d | %s | %s | %s | %s | %s | %s | %s | %.1f |", n,
		ms(percentile(pushes, 50)), ms(percentile(lastAcks, 50)), ms(percentile(lastAcks, 99)), ms(lastAcks[len(lastAcks)-1]),
		cpuPerUpdate(cpu),
		perProxy(before.heap, after.heap), perProxy(before.stacks, after.stacks),
		float64(after.goroutines-before.goroutines)/float64(n))
}

func cpuPerUpdate(d time.Duration) string {
	if d < 0 {
		return "n/a"
	}
	return ms(d)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)]
}

// usage is the controller's live memory.
type usage struct {
	heap, stacks uint64
	goroutines   int
}

// memory measures live memory after two collections, so that garbage left by setup is gone.
func memory() usage {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return usage{heap: m.HeapAlloc, stacks: m.StackInuse, goroutines: runtime.NumGoroutine()}
}

// ackCollector gathers the convergence of every proxy for one model version.
type ackCollector struct {
	mu      sync.Mutex
	version uint64
	want    int
	count   int
	last    time.Duration
	done    chan struct{}
}

// expect starts waiting for n proxies to ACK version; it must be called before the Update.
func (c *ackCollector) expect(version uint64, n int) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.version, c.want, c.count, c.last, c.done = version, n, 0, 0, make(chan struct{})
	return c.done
}

func (c *ackCollector) record(_ string, version uint64, took time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if version != c.version {
		return
	}
	c.count++
	c.last = max(c.last, took)
	if c.count == c.want {
		close(c.done)
	}
}

// waitAcks waits for every proxy's ACK and returns the time from Update to the last one.
func waitAcks(t *testing.T, done <-chan struct{}, c *ackCollector, n int) time.Duration {
	t.Helper()
	select {
	case <-done:
	case <-time.After(time.Minute):
		c.mu.Lock()
		defer c.mu.Unlock()
		t.Fatalf("%d of %d proxies ACKed version %d within a minute", c.count, n, c.version)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// benchModel is a mesh of services Dubbo services, one address and three endpoints each, as local mode
// serves it; changed moves an endpoint of one service to another port.
func benchModel(t *testing.T, version uint64, services, changed int) *model.Snapshot {
	var objs model.Objects
	for i := range services {
		port := uint32(20881)
		if changed > 0 && i == changed%services {
			port = uint32(30000 + changed)
		}
		var endpoints []*networking.WorkloadEntry
		for j := range 3 {
			endpoints = append(endpoints, &networking.WorkloadEntry{
				Address: fmt.Sprintf("127.1.%d.%d", i%250, j+1),
				Ports:   map[string]uint32{"tcp-metaprotocol-dubbo": port},
			})
		}
		objs.Add(&model.ServiceEntry{
			Meta: model.Meta{Kind: model.KindServiceEntry, Namespace: "bench", Name: fmt.Sprintf("svc-%d", i),
				Origin: model.Origin{File: "bench.yaml", Document: i + 1}},
			Spec: &networking.ServiceEntry{
				Hosts:      []string{fmt.Sprintf("svc-%d.bench.svc.cluster.local", i)},
				Addresses:  []string{fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250)},
				Ports:      []*networking.ServicePort{{Number: 20880, Name: "tcp-metaprotocol-dubbo", Protocol: "TCP"}},
				Resolution: networking.ServiceEntry_STATIC,
				Endpoints:  endpoints,
			},
		})
	}
	snap := model.Build(version, objs, model.Options{Codecs: model.Codecs{"dubbo": "aeraki.meta_protocol.codec.dubbo"}, Local: true})
	if model.HasErrors(snap.Problems) {
		t.Fatalf("bench model: %v", snap.Problems)
	}
	return snap
}

// TestPushLatencyProxies is the child process of TestPushLatency: simulated proxies that run until stdin
// closes.
func TestPushLatencyProxies(t *testing.T) {
	spec := os.Getenv(proxiesEnv)
	if spec == "" {
		t.Skip("the proxies of TestPushLatency, run by it")
	}
	addr, count, _ := strings.Cut(spec, ",")
	n, err := strconv.Atoi(count)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// EOF or an error: either way the parent is done with us.
		_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		cancel()
	}()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := simulateProxy(ctx, addr, fmt.Sprintf("bench-%d", i)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// simulateProxy is one proxy: it subscribes to clusters and listeners, then to the endpoints of the EDS
// clusters and the route configurations the listeners name, and ACKs every response.
func simulateProxy(ctx context.Context, addr, id string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return ignoreEnd(ctx, err)
	}
	type sub struct {
		version, nonce string
		names          []string
	}
	subs := map[string]*sub{}
	for _, typ := range servedTypeURLs {
		subs[typ] = &sub{}
	}
	node := &corev3.Node{Id: id}
	for _, typ := range []string{resource.ClusterType, resource.ListenerType} {
		if err := st.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: typ}); err != nil {
			return ignoreEnd(ctx, err)
		}
		node = nil
	}
	for {
		r, err := st.Recv()
		if err != nil {
			return ignoreEnd(ctx, err)
		}
		s := subs[r.GetTypeUrl()]
		s.version, s.nonce = r.GetVersionInfo(), r.GetNonce()
		if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: s.version,
			ResponseNonce: s.nonce, ResourceNames: s.names}); err != nil {
			return ignoreEnd(ctx, err)
		}
		var dependent string
		var names []string
		switch r.GetTypeUrl() {
		case resource.ClusterType:
			dependent = resource.EndpointType
			names, err = edsClusters(r)
		case resource.ListenerType:
			dependent = resource.RouteType
			names, err = routeConfigs(r)
		default:
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
		if d := subs[dependent]; !slices.Equal(d.names, names) {
			d.names = names
			if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: dependent, VersionInfo: d.version,
				ResponseNonce: d.nonce, ResourceNames: names}); err != nil {
				return ignoreEnd(ctx, err)
			}
		}
	}
}

var servedTypeURLs = []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}

// ignoreEnd hides the error of a stream ended because the simulation is over.
func ignoreEnd(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, io.EOF) || errors.Is(err, fs.ErrClosed) {
		return nil
	}
	return err
}

func edsClusters(r *discovery.DiscoveryResponse) ([]string, error) {
	var names []string
	for _, a := range r.GetResources() {
		c := &clusterv3.Cluster{}
		if err := a.UnmarshalTo(c); err != nil {
			return nil, err
		}
		if c.GetType() == clusterv3.Cluster_EDS {
			names = append(names, c.GetName())
		}
	}
	slices.Sort(names)
	return names, nil
}

func routeConfigs(r *discovery.DiscoveryResponse) ([]string, error) {
	var names []string
	for _, a := range r.GetResources() {
		l := &listenerv3.Listener{}
		if err := a.UnmarshalTo(l); err != nil {
			return nil, err
		}
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				mpp := &mppv1alpha.MetaProtocolProxy{}
				if f.GetTypedConfig().UnmarshalTo(mpp) == nil {
					names = append(names, mpp.GetRds().GetRouteConfigName())
				}
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}
