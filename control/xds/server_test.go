package xds_test

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/translate"
	"github.com/meltemi-mesh/meltemi/control/xds"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestServesEachModeItsOwnConfig(t *testing.T) {
	h := start(t, xds.Options{})
	h.srv.Update(modelSnapshot(1, "a"))
	tests := []struct {
		name, id, mode string
		want           string
	}{
		{"MODE local", "local-1", "local", "svc-local"},
		{"MODE sidecar", "sidecar-1", "sidecar", "svc-sidecar"},
		{"no MODE means local", "plain-1", "", "svc-local"},
		{"an Istio router id without MODE is a gateway", "router~10.0.0.9~gw-1.shop~shop.svc.cluster.local", "", "svc-gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := connectADS(t, h.addr, proxyNode(t, tt.id, tt.mode)).bootstrap()
			for typeURL, r := range got {
				if names := resourceNames(t, r); len(names) != 1 || names[0] != tt.want {
					t.Errorf("%s: got %v, want [%s]", typeURL, names, tt.want)
				}
			}
		})
	}
	if got := h.metric(t, "meltemi_controller_config_version"); got != 1 {
		t.Errorf("config version = %v, want 1", got)
	}
}

func TestProxyConnectedBeforeTheFirstModelWaitsForIt(t *testing.T) {
	h := start(t, xds.Options{})
	p := connectADS(t, h.addr, proxyNode(t, "early", "local"))
	p.subscribe(resource.ClusterType)
	// The server has the node once it counts it; only then is the model's arrival a push to it.
	eventually(t, "proxy counted as connected", func() bool {
		return h.metric(t, "meltemi_controller_connected_proxies") == 1
	})
	h.srv.Update(modelSnapshot(1, "a"))
	r := p.expect(resource.ClusterType)
	if names := resourceNames(t, r); len(names) != 1 || names[0] != "svc-local" {
		t.Errorf("clusters = %v", names)
	}
	p.ack(r)
	h.waitConverged(t, 1, "early")
}

func TestChangeReachesEveryProxyAndOnlyWhatChanged(t *testing.T) {
	h := start(t, xds.Options{})
	var translations atomic.Int32
	xds.OnTranslate(h.srv, func() { translations.Add(1) })
	h.srv.Update(modelSnapshot(1, "a"))

	ids := []string{"p1", "p2", "p3"}
	proxies := make([]*sotwStream, len(ids))
	first := map[string]*discovery.DiscoveryResponse{}
	for i, id := range ids {
		proxies[i] = connectADS(t, h.addr, proxyNode(t, id, "sidecar"))
		first = proxies[i].bootstrap()
	}
	if n := translations.Load(); n != 1 {
		t.Errorf("%d translations for three proxies of one identity, want 1", n)
	}
	if got := h.metric(t, "meltemi_controller_connected_proxies"); got != 3 {
		t.Errorf("connected proxies = %v, want 3", got)
	}

	h.srv.Update(modelSnapshot(2, "b"))
	if n := translations.Load(); n != 2 {
		t.Errorf("%d translations after one change, want 2", n)
	}
	for _, p := range proxies {
		// Clusters and listeners did not change: only endpoints and routes are pushed.
		got := p.expectAll(resource.EndpointType, resource.RouteType)
		eds := got[resource.EndpointType]
		if eds.GetVersionInfo() == first[resource.EndpointType].GetVersionInfo() {
			t.Errorf("endpoints pushed with their old version %s", eds.GetVersionInfo())
		}
		p.ack(eds, "svc-sidecar")
		p.ack(got[resource.RouteType], "svc-sidecar")
	}
	h.waitConverged(t, 2, ids...)
	if got := h.metric(t, "meltemi_controller_convergence_seconds"); got != 3 {
		t.Errorf("convergence observations = %v, want 3", got)
	}
	status := h.srv.Proxies()
	if len(status) != 3 {
		t.Fatalf("%d proxies known, want 3", len(status))
	}
	for i, p := range status {
		if p.ID != ids[i] || p.Node.Mode != "sidecar" || p.Streams != 1 || p.ModelVersion != 2 || !p.Synced ||
			p.Versions[resource.EndpointType] == first[resource.EndpointType].GetVersionInfo() {
			t.Errorf("status %+v", p)
		}
	}
	for _, p := range proxies {
		select {
		case r := <-p.resps:
			t.Errorf("unexpected response of %s", r.GetTypeUrl())
		default:
		}
	}
}

func TestUpdateWithUnchangedContentPushesNothing(t *testing.T) {
	h := start(t, xds.Options{})
	h.srv.Update(modelSnapshot(1, "a"))
	p := connectADS(t, h.addr, proxyNode(t, "p1", "local"))
	first := p.bootstrap()
	pushes := h.metric(t, "meltemi_controller_pushes_total")

	// A new model version whose translation is the same: versions are content hashes, so nothing is set.
	h.srv.Update(modelSnapshot(2, "a"))
	if got := h.metric(t, "meltemi_controller_pushes_total"); got != pushes {
		t.Errorf("pushes went from %v to %v for unchanged content", pushes, got)
	}
	// Had version 2 sent anything, it would come before what version 3 changed.
	h.srv.Update(modelSnapshot(3, "c"))
	got := p.expectAll(resource.EndpointType, resource.RouteType)
	eds := got[resource.EndpointType]
	if eds.GetVersionInfo() == first[resource.EndpointType].GetVersionInfo() {
		t.Fatalf("endpoints resent with version %s", eds.GetVersionInfo())
	}
	if hosts := endpointHosts(t, eds); len(hosts) != 1 || hosts[0] != "c" {
		t.Errorf("endpoints of model %v, want those of model c", hosts)
	}
	p.ack(eds, "svc-local")
	p.ack(got[resource.RouteType], "svc-local")
	h.waitConverged(t, 3, "p1")
	if got := h.metric(t, "meltemi_controller_pushes_total"); got != pushes+1 {
		t.Errorf("pushes = %v, want %v", got, pushes+1)
	}
}

func endpointHosts(t *testing.T, r *discovery.DiscoveryResponse) []string {
	t.Helper()
	var hosts []string
	for _, a := range r.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range m.(*endpointv3.ClusterLoadAssignment).GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				hosts = append(hosts, e.GetEndpoint().GetHostname())
			}
		}
	}
	return hosts
}

func TestNACKIsCountedAndLoggedWithItsReason(t *testing.T) {
	h := start(t, xds.Options{})
	h.srv.Update(modelSnapshot(1, "a"))
	p := connectADS(t, h.addr, proxyNode(t, "picky", "local"))
	p.subscribe(resource.ClusterType)
	p.ack(p.expect(resource.ClusterType))
	p.subscribe(resource.EndpointType, "svc-local")
	eds := p.expect(resource.EndpointType)

	const reason = "cluster svc-local: endpoint 127.0.0.1:20880: no codec"
	for range 2 {
		p.request(resource.EndpointType, "", eds.GetNonce(), []string{"svc-local"}, reason)
		// The cache answers a NACK with the config it has, so the response proves the NACK was seen.
		eds = p.expect(resource.EndpointType)
	}
	if got := h.metric(t, "meltemi_controller_nacks_total", "type", "eds"); got != 2 {
		t.Errorf("eds NACKs = %v, want 2", got)
	}
	lines := h.logs.lines("rejected", "node=picky", "type="+resource.EndpointType, reason, "level=INFO")
	if len(lines) != 1 {
		t.Errorf("want one Info line naming the node, type and reason of a NACK repeated twice; log:\n%s",
			strings.Join(h.logs.lines(""), "\n"))
	}
	if !strings.Contains(lines[0], "version="+eds.GetVersionInfo()) {
		t.Errorf("the log line does not name the rejected version %s: %s", eds.GetVersionInfo(), lines[0])
	}
	// Accepting it at last is an ordinary ACK.
	p.ack(eds, "svc-local")
	p.subscribe(resource.ListenerType)
	p.ack(p.expect(resource.ListenerType))
}

func TestDeltaADS(t *testing.T) {
	h := start(t, xds.Options{})
	h.srv.Update(modelSnapshot(1, "a"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(dial(t, h.addr)).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recv := func(typeURL string) *discovery.DeltaDiscoveryResponse {
		t.Helper()
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetTypeUrl() != typeURL {
			t.Fatalf("got %s, want %s", r.GetTypeUrl(), typeURL)
		}
		return r
	}
	send := func(req *discovery.DeltaDiscoveryRequest) {
		t.Helper()
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}

	send(&discovery.DeltaDiscoveryRequest{Node: proxyNode(t, "delta-1", "gateway"), TypeUrl: resource.ClusterType})
	cds := recv(resource.ClusterType)
	if names := resourceNames(t, resourcesOf(cds)); len(names) != 1 || names[0] != "svc-gateway" {
		t.Fatalf("clusters = %v", names)
	}
	send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: cds.GetNonce()})
	send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{"svc-gateway"}})
	eds := recv(resource.EndpointType)
	firstVersion := eds.GetResources()[0].GetVersion()
	send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResponseNonce: eds.GetNonce()})

	h.srv.Update(modelSnapshot(2, "b"))
	eds = recv(resource.EndpointType)
	if len(eds.GetResources()) != 1 || eds.GetResources()[0].GetVersion() == firstVersion {
		t.Fatalf("delta after a change: %v", eds.GetResources())
	}
	send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResponseNonce: eds.GetNonce()})
	h.waitConverged(t, 2, "delta-1")

	h.srv.Update(modelSnapshot(3, "c"))
	eds = recv(resource.EndpointType)
	send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResponseNonce: eds.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: "no healthy endpoint"}})
	eventually(t, "delta NACK counted", func() bool {
		return h.metric(t, "meltemi_controller_nacks_total", "type", "eds") == 1
	})
	eventually(t, "delta NACK logged", func() bool {
		return len(h.logs.lines("node=delta-1", "no healthy endpoint", "version="+eds.GetSystemVersionInfo())) == 1
	})
}

// resourcesOf turns a delta response's resources into Anys, to be read as a state-of-the-world one's.
func resourcesOf(r *discovery.DeltaDiscoveryResponse) *discovery.DiscoveryResponse {
	out := &discovery.DiscoveryResponse{}
	for _, res := range r.GetResources() {
		out.Resources = append(out.Resources, res.GetResource())
	}
	return out
}

func TestSeparateListenerService(t *testing.T) {
	h := start(t, xds.Options{})
	h.srv.Update(modelSnapshot(1, "a"))
	client := listenerservice.NewListenerDiscoveryServiceClient(dial(t, h.addr))
	p := openSotw(t, proxyNode(t, "envoy-1", "sidecar"), func(ctx context.Context) (grpcStream, error) {
		return client.StreamListeners(ctx)
	})
	// A per-type stream may leave the type URL out.
	p.subscribe("")
	r := p.expect(resource.ListenerType)
	if names := resourceNames(t, r); len(names) != 1 || names[0] != "svc-sidecar" {
		t.Errorf("listeners = %v", names)
	}
	p.ack(r)
	if got := h.metric(t, "meltemi_controller_connected_proxies"); got != 1 {
		t.Errorf("connected = %v", got)
	}

	// A delta stream of the listener service may leave the type out too.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	delta, err := client.DeltaListeners(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := delta.Send(&discovery.DeltaDiscoveryRequest{Node: proxyNode(t, "envoy-2", "local")}); err != nil {
		t.Fatal(err)
	}
	dr, err := delta.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if names := resourceNames(t, resourcesOf(dr)); len(names) != 1 || names[0] != "svc-local" {
		t.Errorf("delta listeners = %v", names)
	}
	if err := delta.Send(&discovery.DeltaDiscoveryRequest{ResponseNonce: dr.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "delta listener ACK seen", func() bool {
		for _, p := range h.srv.Proxies() {
			if p.ID == "envoy-2" {
				return p.Synced
			}
		}
		return false
	})

	// A proxy that polls gets the same, without a stream.
	fetched, err := client.FetchListeners(context.Background(), &discovery.DiscoveryRequest{
		Node: proxyNode(t, "poller", "gateway")})
	if err != nil {
		t.Fatal(err)
	}
	if names := resourceNames(t, fetched); len(names) != 1 || names[0] != "svc-gateway" {
		t.Errorf("fetched listeners = %v", names)
	}
}

func TestTranslationErrorKeepsTheLastConfig(t *testing.T) {
	h := start(t, xds.Options{})
	h.srv.Update(modelSnapshot(1, "a"))
	p := connectADS(t, h.addr, proxyNode(t, "p1", "local"))
	p.bootstrap()
	pushes := h.metric(t, "meltemi_controller_pushes_total")
	changes := h.srv.Changes()
	h.srv.Update(modelSnapshot(2, "broken"))
	select {
	case <-changes:
	default:
		t.Error("a failed translation is no change of the proxies' status")
	}
	if st := h.srv.Proxies(); len(st) != 1 || st[0].ModelVersion != 2 || !strings.Contains(st[0].Error, "no codec for port 20880") {
		t.Errorf("status after a failed translation %+v, want model version 2 and its error", st)
	}
	if got := h.metric(t, "meltemi_controller_translate_errors_total"); got != 1 {
		t.Errorf("translate errors = %v, want 1", got)
	}
	if got := h.metric(t, "meltemi_controller_pushes_total"); got != pushes {
		t.Errorf("pushes = %v after a failed translation, want %v", got, pushes)
	}
	if len(h.logs.lines("level=ERROR", "translation failed", "no codec for port 20880")) != 1 {
		t.Errorf("translation error not logged once:\n%s", strings.Join(h.logs.lines(""), "\n"))
	}
	h.srv.Update(modelSnapshot(3, "c"))
	got := p.expectAll(resource.EndpointType, resource.RouteType)
	p.ack(got[resource.EndpointType], "svc-local")
	p.ack(got[resource.RouteType], "svc-local")
	h.waitConverged(t, 3, "p1")
	if st := h.srv.Proxies(); st[0].Error != "" || !st[0].Synced {
		t.Errorf("status once fixed %+v", st[0])
	}
}

func TestChangesWakeUpOnEveryProxyEvent(t *testing.T) {
	h := start(t, xds.Options{})
	h.srv.Update(modelSnapshot(1, "a"))
	woken := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	before := h.srv.Changes()
	p := connectADS(t, h.addr, proxyNode(t, "p1", "local"))
	p.bootstrap()
	if !woken(before) {
		t.Error("a proxy that connected and took its config did not wake up Changes")
	}
	synced := h.srv.Changes()
	h.srv.Update(modelSnapshot(2, "b"))
	if !woken(synced) {
		t.Error("a push did not wake up Changes")
	}
	acked := h.srv.Changes()
	got := p.expectAll(resource.EndpointType, resource.RouteType)
	p.ack(got[resource.EndpointType], "svc-local")
	eventually(t, "an ACK to wake up Changes", func() bool { return woken(acked) })
	if woken(h.srv.Changes()) {
		t.Error("a fresh channel is closed already")
	}
}

func TestTranslatorPanicIsAnError(t *testing.T) {
	h := start(t, xds.Options{Translate: func(*model.Snapshot, translate.Node) (*translate.Resources, error) {
		panic("unimplemented")
	}})
	h.srv.Update(modelSnapshot(1, "a"))
	p := connectADS(t, h.addr, proxyNode(t, "p1", "local"))
	p.subscribe(resource.ClusterType)
	eventually(t, "panic logged", func() bool {
		return len(h.logs.lines("level=ERROR", "translator panicked: unimplemented")) == 1
	})
	if got := h.metric(t, "meltemi_controller_translate_errors_total"); got != 1 {
		t.Errorf("translate errors = %v, want 1", got)
	}
}

func TestBadIdentityIsRefused(t *testing.T) {
	h := start(t, xds.Options{})
	h.srv.Update(modelSnapshot(1, "a"))
	p := connectADS(t, h.addr, proxyNode(t, "p1", "mesh"))
	p.subscribe(resource.ClusterType)
	select {
	case err := <-p.recvErr:
		if grpcstatus.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `MODE: "mesh" is not one of`) {
			t.Errorf("stream ended with %v", err)
		}
	case r := <-p.resps:
		t.Errorf("got a response of %s", r.GetTypeUrl())
	case <-time.After(waitLimit):
		t.Fatal("stream not refused")
	}
}

func TestForgetsProxiesAfterTheyLeave(t *testing.T) {
	h := start(t, xds.Options{ForgetAfter: 20 * time.Millisecond})
	h.srv.Update(modelSnapshot(1, "a"))
	ctx, cancel := context.WithCancel(context.Background())
	client := discovery.NewAggregatedDiscoveryServiceClient(dial(t, h.addr))
	p := openSotw(t, proxyNode(t, "leaver", "local"), func(context.Context) (grpcStream, error) {
		return client.StreamAggregatedResources(ctx)
	})
	p.subscribe(resource.ClusterType)
	p.ack(p.expect(resource.ClusterType))
	if n := len(h.srv.Proxies()); n != 1 {
		t.Fatalf("known nodes = %d, want 1", n)
	}
	cancel()
	eventually(t, "proxy forgotten", func() bool { return len(h.srv.Proxies()) == 0 })
	if got := h.metric(t, "meltemi_controller_connected_proxies"); got != 0 {
		t.Errorf("connected = %v, want 0", got)
	}
	// It comes back and gets its config again.
	q := connectADS(t, h.addr, proxyNode(t, "leaver", "local"))
	q.subscribe(resource.ClusterType)
	q.expect(resource.ClusterType)
}

func TestServeEndsStreamsWhenItsContextEnds(t *testing.T) {
	srv, err := xds.New(xds.Options{Translate: fakeTranslate})
	if err != nil {
		t.Fatal(err)
	}
	srv.Update(modelSnapshot(1, "a"))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	p := connectADS(t, lis.Addr().String(), proxyNode(t, "p1", "local"))
	p.bootstrap()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Serve did not return")
	}
	select {
	case <-p.recvErr:
	case <-time.After(waitLimit):
		t.Fatal("the proxy's stream did not end")
	}
}

func TestRunWithTheCallersGRPCServer(t *testing.T) {
	srv, err := xds.New(xds.Options{Translate: fakeTranslate})
	if err != nil {
		t.Fatal(err)
	}
	srv.Update(modelSnapshot(1, "a"))
	g := grpc.NewServer()
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()

	connectADS(t, lis.Addr().String(), proxyNode(t, "p1", "local")).bootstrap()
	cancel()
	if err := <-ran; err != nil {
		t.Errorf("Run: %v", err)
	}
	// Run ended the streams, so a graceful stop does not wait for the proxy to hang up.
	stopped := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(waitLimit):
		g.Stop()
		t.Fatal("GracefulStop waited for the proxy's stream")
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestMetricsRegisterOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := xds.New(xds.Options{Registry: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := xds.New(xds.Options{Registry: reg}); err == nil {
		t.Error("a second server registered the same metrics")
	}
}
