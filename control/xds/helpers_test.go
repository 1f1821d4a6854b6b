package xds_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/translate"
	"github.com/meltemi-mesh/meltemi/control/xds"
)

// waitLimit bounds every wait; generous, because the machine running the tests may be busy.
const waitLimit = 10 * time.Second

// fakeTranslate stands in for the translator: one resource of each type, named after the proxy's mode, so
// proxies of different modes get different config. Clusters and listeners never change; endpoints and
// routes carry the model's hash, so a model with another hash changes those two types only, and the
// model "broken" fails to translate.
func fakeTranslate(m *model.Snapshot, n translate.Node) (*translate.Resources, error) {
	if m.Hash == "broken" {
		return nil, errors.New("service a.b: no codec for port 20880")
	}
	name := "svc-" + string(n.Mode)
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	return &translate.Resources{
		Clusters: []*clusterv3.Cluster{{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads},
		}},
		Endpoints: []*endpointv3.ClusterLoadAssignment{{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address:  socketAddress("127.0.0.1", 20880),
					Hostname: m.Hash,
				}},
			}}}},
		}},
		Listeners: []*listenerv3.Listener{{Name: name, Address: socketAddress("127.240.0.1", 20880)}},
		Routes: []*routev3.RouteConfiguration{{
			Name:         name,
			VirtualHosts: []*routev3.VirtualHost{{Name: m.Hash, Domains: []string{"*"}}},
		}},
	}, nil
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// modelSnapshot is a model snapshot the fake translator reads: only the version and hash matter to it.
func modelSnapshot(version uint64, hash string) *model.Snapshot {
	return &model.Snapshot{Version: version, Hash: hash}
}

// proxyNode is an xDS node with Meltemi's metadata; mode "" leaves MODE out.
func proxyNode(t *testing.T, id, mode string) *corev3.Node {
	t.Helper()
	md := map[string]any{"NAMESPACE": "shop", "WORKLOAD_NAME": "demo", "LABELS": map[string]any{"app": "demo"}}
	if mode != "" {
		md["MODE"] = mode
	}
	st, err := structpb.NewStruct(md)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Node{Id: id, Metadata: st}
}

// convergence is one proxy's ACK of the whole config of a model version.
type convergence struct {
	node    string
	version uint64
}

// harness is a server serving on loopback, with its metrics, its log and its convergence events.
type harness struct {
	srv       *xds.Server
	addr      string
	reg       *prometheus.Registry
	logs      *logBuffer
	converged chan convergence
}

func start(t *testing.T, opts xds.Options) *harness {
	t.Helper()
	h := &harness{reg: prometheus.NewRegistry(), logs: &logBuffer{}, converged: make(chan convergence, 1000)}
	opts.Registry = h.reg
	opts.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if opts.Translate == nil {
		opts.Translate = fakeTranslate
	}
	srv, err := xds.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	xds.OnConverged(srv, func(id string, version uint64, _ time.Duration) {
		h.converged <- convergence{id, version}
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = lis.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Serve did not return within %v of its context ending", waitLimit)
		}
	})
	return h
}

// waitConverged waits for the convergence of each node named, for one model version.
func (h *harness) waitConverged(t *testing.T, version uint64, nodes ...string) {
	t.Helper()
	want := map[string]bool{}
	for _, n := range nodes {
		want[n] = true
	}
	timeout := time.After(waitLimit)
	for len(want) > 0 {
		select {
		case c := <-h.converged:
			if c.version == version {
				delete(want, c.node)
			}
		case <-timeout:
			t.Fatalf("no ACK of model version %d from %v within %v", version, want, waitLimit)
		}
	}
}

// metric returns the value of a counter or gauge, or the sample count of a histogram, whose labels
// include those given; 0 when there is none.
func (h *harness) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

// eventually waits for cond, checking it every few milliseconds, for things no event announces.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(waitLimit)
	for !cond() {
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatalf("%s: not within %v", what, waitLimit)
		}
	}
}

// logBuffer collects log output from many goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the lines that contain every one of parts.
func (b *logBuffer) lines(parts ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, line := range strings.Split(b.buf.String(), "\n") {
		all := line != ""
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}

// dial connects to the server; the connection closes when the test ends.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// sotwStream is the client side of a state-of-the-world stream (ADS or one of the per-type services),
// driven by hand: every request and every answer is the test's.
type sotwStream struct {
	t        *testing.T
	node     *corev3.Node
	send     func(*discovery.DiscoveryRequest) error
	resps    chan *discovery.DiscoveryResponse
	recvErr  chan error
	nodeSent bool
	cancel   context.CancelFunc
	// routeNames reads the route configurations listeners name; nil means the fake translator's
	// convention, routes named as their listeners.
	routeNames func(*testing.T, *discovery.DiscoveryResponse) []string
}

// grpcStream is what the ADS, LDS, CDS, EDS and RDS client streams have in common.
type grpcStream interface {
	Send(*discovery.DiscoveryRequest) error
	Recv() (*discovery.DiscoveryResponse, error)
}

// openSotw opens a stream with open and reads its responses into a channel until the test ends.
func openSotw(t *testing.T, node *corev3.Node, open func(context.Context) (grpcStream, error)) *sotwStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := open(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s := &sotwStream{t: t, node: node, send: st.Send, resps: make(chan *discovery.DiscoveryResponse, 16),
		recvErr: make(chan error, 1), cancel: cancel}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			r, err := st.Recv()
			if err != nil {
				s.recvErr <- err
				return
			}
			select {
			case s.resps <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return s
}

// connectADS opens an ADS stream for node.
func connectADS(t *testing.T, addr string, node *corev3.Node) *sotwStream {
	t.Helper()
	client := discovery.NewAggregatedDiscoveryServiceClient(dial(t, addr))
	return openSotw(t, node, func(ctx context.Context) (grpcStream, error) {
		return client.StreamAggregatedResources(ctx)
	})
}

// request sends a request; the node goes on the first one only, as proxies do.
func (s *sotwStream) request(typeURL, version, nonce string, names []string, reason string) {
	s.t.Helper()
	req := &discovery.DiscoveryRequest{TypeUrl: typeURL, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names}
	if !s.nodeSent {
		req.Node, s.nodeSent = s.node, true
	}
	if reason != "" {
		req.ErrorDetail = &status.Status{Code: 3, Message: reason}
	}
	if err := s.send(req); err != nil {
		s.t.Fatalf("send %s: %v", typeURL, err)
	}
}

func (s *sotwStream) subscribe(typeURL string, names ...string) {
	s.request(typeURL, "", "", names, "")
}

// ack accepts a response, keeping the subscription to names.
func (s *sotwStream) ack(r *discovery.DiscoveryResponse, names ...string) {
	s.request(r.GetTypeUrl(), r.GetVersionInfo(), r.GetNonce(), names, "")
}

// expect returns the next response, which must be of typeURL.
func (s *sotwStream) expect(typeURL string) *discovery.DiscoveryResponse {
	s.t.Helper()
	select {
	case r := <-s.resps:
		if r.GetTypeUrl() != typeURL {
			s.t.Fatalf("got a response of %s, want %s", r.GetTypeUrl(), typeURL)
		}
		return r
	case err := <-s.recvErr:
		s.t.Fatalf("stream ended waiting for %s: %v", typeURL, err)
	case <-time.After(waitLimit):
		s.t.Fatalf("no response of %s within %v", typeURL, waitLimit)
	}
	return nil
}

// expectAll returns the next responses, one of each of typeURLs, in whatever order they come.
func (s *sotwStream) expectAll(typeURLs ...string) map[string]*discovery.DiscoveryResponse {
	s.t.Helper()
	want := map[string]bool{}
	for _, u := range typeURLs {
		want[u] = true
	}
	got := map[string]*discovery.DiscoveryResponse{}
	for len(got) < len(typeURLs) {
		select {
		case r := <-s.resps:
			if !want[r.GetTypeUrl()] || got[r.GetTypeUrl()] != nil {
				s.t.Fatalf("got a response of %s, want one of each of %v", r.GetTypeUrl(), typeURLs)
			}
			got[r.GetTypeUrl()] = r
		case err := <-s.recvErr:
			s.t.Fatalf("stream ended waiting for %v: %v", typeURLs, err)
		case <-time.After(waitLimit):
			s.t.Fatalf("no responses of %v within %v", typeURLs, waitLimit)
		}
	}
	return got
}

// bootstrap subscribes as a proxy does (clusters, their endpoints, listeners, the routes they name), ACKs
// each response and returns them by type.
func (s *sotwStream) bootstrap() map[string]*discovery.DiscoveryResponse {
	s.t.Helper()
	got := map[string]*discovery.DiscoveryResponse{}
	s.subscribe(resource.ClusterType)
	got[resource.ClusterType] = s.expect(resource.ClusterType)
	s.ack(got[resource.ClusterType])
	clusters := resourceNames(s.t, got[resource.ClusterType])
	s.subscribe(resource.EndpointType, clusters...)
	got[resource.EndpointType] = s.expect(resource.EndpointType)
	s.ack(got[resource.EndpointType], clusters...)
	s.subscribe(resource.ListenerType)
	got[resource.ListenerType] = s.expect(resource.ListenerType)
	s.ack(got[resource.ListenerType])
	routes := resourceNames(s.t, got[resource.ListenerType])
	if s.routeNames != nil {
		routes = s.routeNames(s.t, got[resource.ListenerType])
	}
	s.subscribe(resource.RouteType, routes...)
	got[resource.RouteType] = s.expect(resource.RouteType)
	s.ack(got[resource.RouteType], routes...)
	return got
}

// resourceNames returns the names of a response's resources, in order.
func resourceNames(t *testing.T, r interface{ GetResources() []*anypb.Any }) []string {
	t.Helper()
	var names []string
	for _, a := range r.GetResources() {
		names = append(names, anyName(t, a))
	}
	return names
}

func anyName(t *testing.T, a *anypb.Any) string {
	t.Helper()
	m, err := a.UnmarshalNew()
	if err != nil {
		t.Fatal(err)
	}
	switch m := m.(type) {
	case *clusterv3.Cluster:
		return m.GetName()
	case *endpointv3.ClusterLoadAssignment:
		return m.GetClusterName()
	case *listenerv3.Listener:
		return m.GetName()
	case *routev3.RouteConfiguration:
		return m.GetName()
	}
	t.Fatalf("unexpected resource %s", a.GetTypeUrl())
	return ""
}
