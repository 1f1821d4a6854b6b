package xds_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/proxy/xds"
)

// These tests run the client against go-control-plane's own ADS server and snapshot cache over gRPC on
// loopback, driving a real proxy.Proxy with the Dubbo codec, and talk Dubbo to the proxy over real sockets.

const (
	nodeID      = "test-node"
	listenerKey = "dubbo_20880"
	routeName   = "demo_20880"
	clusterA    = "outbound|20880||a.shop.svc.cluster.local"
	clusterB    = "outbound|20880||b.shop.svc.cluster.local"
	waitLimit   = 10 * time.Second
)

// recorder keeps every request the control plane receives; tests wait on it.
type recorder struct {
	mu      sync.Mutex
	reqs    []*discoveryv3.DiscoveryRequest
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) add(req *discoveryv3.DiscoveryRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, proto.Clone(req).(*discoveryv3.DiscoveryRequest))
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

// waitFor returns the first request from index from on that satisfies match, failing the test after waitLimit.
func (r *recorder) waitFor(t *testing.T, from int, what string, match func(*discoveryv3.DiscoveryRequest) bool) *discoveryv3.DiscoveryRequest {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for i := from; ; {
		r.mu.Lock()
		for ; i < len(r.reqs); i++ {
			if match(r.reqs[i]) {
				req := r.reqs[i]
				r.mu.Unlock()
				return req
			}
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no %s after %v", what, waitLimit)
		}
	}
}

// waitACKs waits until every type has been acknowledged at version.
func (r *recorder) waitACKs(t *testing.T, from int, version string, typeURLs ...string) {
	t.Helper()
	for _, url := range typeURLs {
		r.waitFor(t, from, fmt.Sprintf("ACK of %s version %s", url, version), func(req *discoveryv3.DiscoveryRequest) bool {
			return req.GetTypeUrl() == url && req.GetVersionInfo() == version && req.GetResponseNonce() != "" &&
				req.GetErrorDetail() == nil
		})
	}
}

var allTypes = []string{xds.ClusterType, xds.EndpointType, xds.ListenerType, xds.RouteType}

// controlPlane is go-control-plane's ADS server on loopback.
type controlPlane struct {
	cache cachev3.SnapshotCache
	srv   *grpc.Server
	addr  string
	rec   *recorder
	done  chan struct{}
}

func startControlPlane(t *testing.T, addr string) *controlPlane {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil), srv: grpc.NewServer(),
		addr: ln.Addr().String(), rec: newRecorder(), done: make(chan struct{})}
	callbacks := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
		cp.rec.add(req)
		return nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(cp.srv, serverv3.NewServer(ctx, cp.cache, callbacks))
	go func() {
		defer close(cp.done)
		cp.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		cancel()
		cp.stop()
	})
	return cp
}

func (cp *controlPlane) stop() {
	cp.srv.Stop()
	<-cp.done
}

func (cp *controlPlane) set(t *testing.T, version string, res map[resource.Type][]types.Resource) {
	t.Helper()
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		t.Fatal(err)
	}
}

// demoResources is a listener on a loopback port the proxy picks, routing sayHello to the cluster named by
// route over RDS; cluster A takes its endpoint from EDS, cluster B has it inline.
func demoResources(t *testing.T, route *routeSpec, a, b *dubboServer) map[resource.Type][]types.Resource {
	l := listenerWith(listenerKey, "127.0.0.1", 0, mppFilter(t, rdsProxy(route.codec, routeName)))
	rc := carrier(routeName, metaRoute("say-hello", route.cluster, exactHeader("method", "sayHello"),
		regexHeader("interface", route.ifaceRegex)))
	return map[resource.Type][]types.Resource{
		resource.ListenerType: {l},
		resource.RouteType:    {rc},
		resource.ClusterType:  {edsCluster(clusterA), staticCluster(clusterB, b.hostPort())},
		resource.EndpointType: {loadAssignment(clusterA, a.hostPort())},
	}
}

type routeSpec struct {
	codec, cluster, ifaceRegex string
}

func goodRoute(cluster string) *routeSpec {
	return &routeSpec{codec: dubboCodec, cluster: cluster, ifaceRegex: `org\.example\..*`}
}

// harness is a proxy driven by an xDS client.
type harness struct {
	proxy   *proxy.Proxy
	metrics *prometheus.Registry
	client  *xds.Client
	stop    func()
}

func startProxy(t *testing.T, addr string) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := proxy.New(proxy.Options{Codecs: codecs(t), Logger: log, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	c, err := xds.New(xds.Options{
		Address: addr,
		Node: xds.Node{ID: nodeID, Cluster: "demo.shop", Mode: xds.ModeSidecar, Namespace: "shop",
			WorkloadName: "demo-v1", Labels: map[string]string{"app": "demo", "version": "v1"},
			Locality: "eu-west/zone-a"},
		Codecs:              codecs(t),
		Proxy:               p,
		Logger:              log,
		Metrics:             reg,
		Backoff:             xds.Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		InitialFetchTimeout: waitLimit,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	h := &harness{proxy: p, metrics: reg, client: c}
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			p.Close()
		})
	}
	t.Cleanup(h.stop)
	return h
}

// testWriter sends logs to the test's log, shown when it fails.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// metric returns the value of a counter or gauge with no labels, or the sum over its labels.
func (h *harness) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := h.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// waitMetric polls a metric until it satisfies ok.
func (h *harness) waitMetric(t *testing.T, name string, ok func(float64) bool) {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !ok(h.metric(t, name)) {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("metric %s stuck at %v", name, h.metric(t, name))
		}
	}
}

// dial connects to the proxy's listener.
func (h *harness) dial(t *testing.T) *dubboConn {
	t.Helper()
	addr := h.proxy.ListenerAddr(listenerKey)
	if addr == nil {
		t.Fatalf("listener %q not bound", listenerKey)
	}
	conn, err := net.DialTimeout("tcp", addr.String(), waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &dubboConn{t: t, conn: conn}
}

// Dubbo on the wire: a 16-byte header (magic DA BB, flag, status, 8-byte id, 4-byte body length) and a body.

type frame struct {
	flag, status byte
	id           uint64
	body         []byte
}

func (f frame) bytes() []byte {
	b := []byte{0xda, 0xbb, f.flag, f.status}
	b = binary.BigEndian.AppendUint64(b, f.id)
	b = binary.BigEndian.AppendUint32(b, uint32(len(f.body)))
	return append(b, f.body...)
}

func readFrame(r io.Reader) (frame, error) {
	var h [16]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return frame{}, err
	}
	if h[0] != 0xda || h[1] != 0xbb {
		return frame{}, fmt.Errorf("bad magic % x", h[:2])
	}
	f := frame{flag: h[2], status: h[3], id: binary.BigEndian.Uint64(h[4:12]),
		body: make([]byte, binary.BigEndian.Uint32(h[12:16]))}
	_, err := io.ReadFull(r, f.body)
	return f, err
}

// hessianString encodes a short string (under 32 bytes), which is all these tests send.
func hessianString(b []byte, s string) []byte { return append(append(b, byte(len(s))), s...) }

// request is a two-way Hessian 2 request calling method on iface.
func request(id uint64, iface, method string) frame {
	var body []byte
	for _, s := range []string{"2.0.2", iface, "", method, "Ljava/lang/String;", "world"} {
		body = hessianString(body, s)
	}
	body = append(body, 'H', 'Z') // no attachments
	return frame{flag: 0xc2, id: id, body: body}
}

type dubboConn struct {
	t    *testing.T
	conn net.Conn
}

func (c *dubboConn) roundTrip(f frame) frame {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(waitLimit))
	if _, err := c.conn.Write(f.bytes()); err != nil {
		c.t.Fatalf("write: %v", err)
	}
	reply, err := readFrame(c.conn)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	if reply.id != f.id {
		c.t.Fatalf("reply id %d, want %d", reply.id, f.id)
	}
	return reply
}

// heartbeat sends DA BB E2 00 + id + 00 00 00 01 + 'N' and checks the proxy's own answer.
func (c *dubboConn) heartbeat(id uint64) {
	c.t.Helper()
	reply := c.roundTrip(frame{flag: 0xe2, id: id, body: []byte{'N'}})
	if reply.flag != 0x22 || reply.status != 20 {
		c.t.Fatalf("heartbeat reply flag %#x status %d, want 0x22 and 20", reply.flag, reply.status)
	}
}

// call sends sayHello and returns the name of the upstream that answered.
func (c *dubboConn) call(id uint64) string {
	c.t.Helper()
	reply := c.roundTrip(request(id, "org.example.Greeter", "sayHello"))
	if reply.flag != 0x02 || reply.status != 20 {
		c.t.Fatalf("reply flag %#x status %d body %q, want a response with status 20", reply.flag, reply.status, reply.body)
	}
	// The body is Hessian: 0x91 (a value follows) and the upstream's name as a short string.
	if len(reply.body) < 2 || reply.body[0] != 0x91 {
		c.t.Fatalf("reply body %q", reply.body)
	}
	return string(reply.body[2:])
}

// dubboServer is an upstream that answers every request with its name.
type dubboServer struct {
	name string
	ln   net.Listener
	wg   sync.WaitGroup
}

func startDubboServer(t *testing.T, name string) *dubboServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dubboServer{name: name, ln: ln}
	var mu sync.Mutex
	var conns []net.Conn
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(conn)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *dubboServer) serve(conn net.Conn) {
	defer conn.Close()
	for {
		f, err := readFrame(conn)
		if err != nil {
			return
		}
		if f.flag&0x80 == 0 || f.flag&0x40 == 0 {
			continue // a response or a oneway request: nothing to answer
		}
		reply := frame{flag: 0x02, status: 20, id: f.id, body: hessianString([]byte{0x91}, s.name)}
		if f.flag&0x20 != 0 {
			reply = frame{flag: 0x22, status: 20, id: f.id, body: []byte{'N'}}
		}
		if _, err := conn.Write(reply.bytes()); err != nil {
			return
		}
	}
}

func (s *dubboServer) hostPort() hostPort {
	a := s.ln.Addr().(*net.TCPAddr)
	return hostPort{a.IP.String(), uint32(a.Port)}
}

// TestClientServesSnapshot: the client subscribes, the proxy serves the listener, and every type is ACKed.
func TestClientServesSnapshot(t *testing.T) {
	a, b := startDubboServer(t, "A"), startDubboServer(t, "B")
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.set(t, "1", demoResources(t, goodRoute(clusterA), a, b))
	h := startProxy(t, cp.addr)

	cp.rec.waitACKs(t, 0, "1", allTypes...)
	first := cp.rec.waitFor(t, 0, "first request", func(*discoveryv3.DiscoveryRequest) bool { return true })
	node := first.GetNode()
	md := node.GetMetadata().GetFields()
	if node.GetId() != nodeID || node.GetCluster() != "demo.shop" || md[xds.MetadataMode].GetStringValue() != "sidecar" ||
		md[xds.MetadataNamespace].GetStringValue() != "shop" || md[xds.MetadataWorkloadName].GetStringValue() != "demo-v1" ||
		md[xds.MetadataLabels].GetStructValue().GetFields()["app"].GetStringValue() != "demo" ||
		node.GetLocality().GetRegion() != "eu-west" || node.GetLocality().GetZone() != "zone-a" {
		t.Errorf("node %v", node)
	}
	if first.GetTypeUrl() != xds.ClusterType {
		t.Errorf("first request for %s, want CDS first as Envoy does", first.GetTypeUrl())
	}
	eds := cp.rec.waitFor(t, 0, "EDS subscription", func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == xds.EndpointType
	})
	rds := cp.rec.waitFor(t, 0, "RDS subscription", func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == xds.RouteType
	})
	if got := eds.GetResourceNames(); len(got) != 1 || got[0] != clusterA {
		t.Errorf("EDS names %q, want [%s]", got, clusterA)
	}
	if got := rds.GetResourceNames(); len(got) != 1 || got[0] != routeName {
		t.Errorf("RDS names %q, want [%s]", got, routeName)
	}

	if !h.proxy.Ready() {
		t.Error("proxy not ready after the first config")
	}
	conn := h.dial(t)
	conn.heartbeat(7)
	if got := conn.call(8); got != "A" {
		t.Errorf("answered by %q, want A", got)
	}
	if h.metric(t, "meltemi_xds_connected") != 1 || h.metric(t, "meltemi_xds_updates_applied_total") < 1 {
		t.Errorf("connected %v, updates applied %v", h.metric(t, "meltemi_xds_connected"),
			h.metric(t, "meltemi_xds_updates_applied_total"))
	}
}

// TestClientRejectsBadConfig: a config the proxy cannot use is NACKed with the reason, and the last good one
// keeps serving; a good one after it is applied.
func TestClientRejectsBadConfig(t *testing.T) {
	a, b := startDubboServer(t, "A"), startDubboServer(t, "B")
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.set(t, "1", demoResources(t, goodRoute(clusterA), a, b))
	h := startProxy(t, cp.addr)
	cp.rec.waitACKs(t, 0, "1", allTypes...)
	conn := h.dial(t)

	// Each bad snapshot keeps the route to A, so that only the bad resource differs from the good config.
	tests := []struct {
		name, version string
		route         *routeSpec
		typeURL       string
		reason        string
		lastAccepted  string // of the rejected type
	}{
		{
			name: "unknown codec", version: "2", typeURL: xds.ListenerType, lastAccepted: "1",
			route:  &routeSpec{codec: "aeraki.meta_protocol.codec.foo", cluster: clusterA, ifaceRegex: ".*"},
			reason: `listener "dubbo_20880": filter_chains[0].filters[0] meta_protocol_proxy: protocol.codec.name: codec "aeraki.meta_protocol.codec.foo" unknown`,
		},
		{
			name: "bad regex", version: "3", typeURL: xds.RouteType, lastAccepted: "2",
			route:  &routeSpec{codec: dubboCodec, cluster: clusterA, ifaceRegex: "org.(example"},
			reason: `route configuration "demo_20880": virtual_hosts[0].routes[0] "say-hello": match.headers[1]: safe_regex_match: bad regex`,
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mark := cp.rec.len()
			cp.set(t, tc.version, demoResources(t, tc.route, a, b))
			nack := cp.rec.waitFor(t, mark, "NACK", func(r *discoveryv3.DiscoveryRequest) bool {
				return r.GetTypeUrl() == tc.typeURL && r.GetErrorDetail() != nil
			})
			if msg := nack.GetErrorDetail().GetMessage(); !strings.Contains(msg, tc.reason) {
				t.Errorf("NACK reason %q\nwant it to contain %q", msg, tc.reason)
			}
			if nack.GetVersionInfo() != tc.lastAccepted {
				t.Errorf("NACK version_info %q, want the last accepted, %s", nack.GetVersionInfo(), tc.lastAccepted)
			}
			// The old config serves, on the connection opened before.
			conn.heartbeat(uint64(100 + i))
			if got := conn.call(uint64(200 + i)); got != "A" {
				t.Errorf("answered by %q, want A (the last good config)", got)
			}
		})
	}
	if h.metric(t, "meltemi_xds_nacks_total") < 2 {
		t.Errorf("nacks %v, want at least 2", h.metric(t, "meltemi_xds_nacks_total"))
	}

	// A good config after the bad ones is applied, although the controller kept sending the rejected one.
	mark := cp.rec.len()
	cp.set(t, "4", demoResources(t, goodRoute(clusterB), a, b))
	cp.rec.waitACKs(t, mark, "4", allTypes...)
	if got := conn.call(300); got != "B" {
		t.Errorf("answered by %q, want B", got)
	}
}

// TestClientRouteUpdateKeepsConnections: a new route is applied without closing a connected client.
func TestClientRouteUpdateKeepsConnections(t *testing.T) {
	a, b := startDubboServer(t, "A"), startDubboServer(t, "B")
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.set(t, "1", demoResources(t, goodRoute(clusterA), a, b))
	h := startProxy(t, cp.addr)
	cp.rec.waitACKs(t, 0, "1", allTypes...)

	conn := h.dial(t)
	if got := conn.call(1); got != "A" {
		t.Fatalf("answered by %q, want A", got)
	}
	mark := cp.rec.len()
	cp.set(t, "2", demoResources(t, goodRoute(clusterB), a, b))
	cp.rec.waitACKs(t, mark, "2", xds.RouteType)
	if got := conn.call(2); got != "B" {
		t.Errorf("answered by %q after the update, want B", got)
	}
	conn.heartbeat(3)
}

// TestClientReconnects: with the controller gone the proxy keeps serving; a new controller on the same
// address gets the node and the last accepted versions, and its config is applied.
func TestClientReconnects(t *testing.T) {
	a, b := startDubboServer(t, "A"), startDubboServer(t, "B")
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.set(t, "1", demoResources(t, goodRoute(clusterA), a, b))
	h := startProxy(t, cp.addr)
	cp.rec.waitACKs(t, 0, "1", allTypes...)
	conn := h.dial(t)

	cp.stop()
	h.waitMetric(t, "meltemi_xds_connected", func(v float64) bool { return v == 0 })
	h.waitMetric(t, "meltemi_xds_reconnects_total", func(v float64) bool { return v >= 2 })
	conn.heartbeat(1)
	if got := conn.call(2); got != "A" {
		t.Errorf("answered by %q with the controller away, want A", got)
	}
	fresh := h.dial(t)
	if got := fresh.call(3); got != "A" {
		t.Errorf("new connection answered by %q with the controller away, want A", got)
	}

	cp2 := startControlPlane(t, cp.addr)
	cp2.set(t, "2", demoResources(t, goodRoute(clusterB), a, b))
	first := cp2.rec.waitFor(t, 0, "first request", func(*discoveryv3.DiscoveryRequest) bool { return true })
	if first.GetNode().GetId() != nodeID {
		t.Errorf("first request after reconnecting has node %v", first.GetNode())
	}
	for _, url := range allTypes {
		req := cp2.rec.waitFor(t, 0, "resubscription to "+url, func(r *discoveryv3.DiscoveryRequest) bool {
			return r.GetTypeUrl() == url && r.GetResponseNonce() == ""
		})
		if req.GetVersionInfo() != "1" {
			t.Errorf("%s resubscribed with version %q, want the last accepted, 1", url, req.GetVersionInfo())
		}
	}
	cp2.rec.waitACKs(t, 0, "2", allTypes...)
	if got := conn.call(4); got != "B" {
		t.Errorf("answered by %q after resync, want B", got)
	}
	h.waitMetric(t, "meltemi_xds_connected", func(v float64) bool { return v == 1 })
}

// TestClientWaitsForRoutes: the first config waits for the route configuration its listener names, so the
// proxy is not ready with the listener missing.
func TestClientWaitsForRoutes(t *testing.T) {
	a, b := startDubboServer(t, "A"), startDubboServer(t, "B")
	cp := startControlPlane(t, "127.0.0.1:0")
	res := demoResources(t, goodRoute(clusterA), a, b)
	routes := res[resource.RouteType]
	res[resource.RouteType] = nil
	cp.set(t, "1", res)
	h := startProxy(t, cp.addr)

	// Everything but RDS arrives; nothing is answered or applied until the routes do.
	cp.rec.waitFor(t, 0, "RDS subscription", func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == xds.RouteType
	})
	if h.proxy.Ready() {
		t.Fatal("proxy ready before its listener's routes arrived")
	}
	res[resource.RouteType] = routes
	cp.set(t, "2", res)
	cp.rec.waitACKs(t, 0, "2", allTypes...)
	if !h.proxy.Ready() {
		t.Fatal("proxy not ready")
	}
	if got := h.dial(t).call(1); got != "A" {
		t.Errorf("answered by %q, want A", got)
	}
}

// TestClientStops: Run returns when its context ends and leaves no goroutine behind.
func TestClientStops(t *testing.T) {
	a, b := startDubboServer(t, "A"), startDubboServer(t, "B")
	ignore := goleak.IgnoreCurrent()
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.set(t, "1", demoResources(t, goodRoute(clusterA), a, b))
	h := startProxy(t, cp.addr)
	cp.rec.waitACKs(t, 0, "1", allTypes...)
	h.stop()
	cp.stop()
	if err := goleak.Find(ignore); err != nil {
		t.Error(err)
	}
}

// TestNewRejectsBadOptions: New names the option at fault.
func TestNewRejectsBadOptions(t *testing.T) {
	p, err := proxy.New(proxy.Options{Codecs: codecs(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	good := xds.Options{Address: "127.0.0.1:15010", Node: xds.Node{ID: "n", Mode: xds.ModeLocal}, Codecs: codecs(t), Proxy: p}
	for _, tc := range []struct {
		name   string
		mutate func(*xds.Options)
		want   string
	}{
		{"address", func(o *xds.Options) { o.Address = "localhost" }, "address"},
		{"node id", func(o *xds.Options) { o.Node.ID = "" }, "node id: required"},
		{"mode", func(o *xds.Options) { o.Node.Mode = "edge" }, `node mode: "edge"`},
		{"proxy", func(o *xds.Options) { o.Proxy = nil }, "codecs and proxy are required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.mutate(&o)
			if _, err := xds.New(o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to mention %q", err, tc.want)
			}
		})
	}
	if _, err := xds.New(good); err != nil {
		t.Errorf("good options: %v", err)
	}
}
