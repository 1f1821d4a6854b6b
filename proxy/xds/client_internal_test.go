package xds

import (
	"errors"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	routev1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/config/route/v1alpha"
	mppv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/v1alpha"
	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/proxy"
)

// These tests drive the client's state machine directly, one response at a time, against a fake proxy.

type fakeProxy struct {
	err     error
	updates []*proxy.Config
}

func (f *fakeProxy) Update(cfg *proxy.Config) error {
	if f.err != nil {
		return f.err
	}
	f.updates = append(f.updates, cfg)
	return nil
}

func newTestClient(t *testing.T, p ConfigUpdater) *Client {
	t.Helper()
	reg, err := codec.NewRegistry(dubbo.Registration())
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Address: "127.0.0.1:1", Node: Node{ID: "n", Mode: ModeLocal}, Codecs: reg, Proxy: p,
		Backoff: Backoff{Initial: time.Second, Max: 4 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func anyOf(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func response(t *testing.T, url, version, nonce string, resources ...proto.Message) *discoveryv3.DiscoveryResponse {
	resp := &discoveryv3.DiscoveryResponse{TypeUrl: url, VersionInfo: version, Nonce: nonce}
	for _, r := range resources {
		resp.Resources = append(resp.Resources, anyOf(t, r))
	}
	return resp
}

func addr(port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// inlineListener has its routes inline, so it waits for nothing.
func inlineListener(t *testing.T, name string) *listenerv3.Listener {
	m := &mppv1alpha.MetaProtocolProxy{
		Protocol: &mppv1alpha.ApplicationProtocol{Codec: &mppv1alpha.Codec{Name: dubbo.Name}},
		RouteSpecifier: &mppv1alpha.MetaProtocolProxy_RouteConfig{RouteConfig: &routev1alpha.RouteConfiguration{
			Name: name, Routes: []*routev1alpha.Route{{Name: "all", Route: &routev1alpha.RouteAction{
				ClusterSpecifier: &routev1alpha.RouteAction_Cluster{Cluster: "c"}}}},
		}},
	}
	return &listenerv3.Listener{Name: name, Address: addr(0), FilterChains: []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{{Name: FilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, m)}}},
	}}}
}

func rdsListener(t *testing.T, name, route string) *listenerv3.Listener {
	l := inlineListener(t, name)
	m := &mppv1alpha.MetaProtocolProxy{
		Protocol:       &mppv1alpha.ApplicationProtocol{Codec: &mppv1alpha.Codec{Name: dubbo.Name}},
		RouteSpecifier: &mppv1alpha.MetaProtocolProxy_Rds{Rds: &mppv1alpha.Rds{RouteConfigName: route}},
	}
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, m)}
	return l
}

func staticCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: name, LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr(20880)}},
		}}}}}}
}

// take returns and clears the requests the client queued.
func take(c *Client) []*discoveryv3.DiscoveryRequest {
	out := c.outbox
	c.outbox = nil
	return out
}

func TestFirstConfigRefusedByTheProxy(t *testing.T) {
	p := &fakeProxy{err: errors.New("listener \"l\": address in use")}
	c := newTestClient(t, p)
	c.startStream()
	take(c)
	now := time.Now()

	c.handle(response(t, ClusterType, "1", "a", staticCluster("c")), now)
	if reqs := take(c); len(reqs) != 0 {
		t.Fatalf("CDS answered before the first config: %v", reqs)
	}
	c.handle(response(t, ListenerType, "1", "b", inlineListener(t, "l")), now)
	reqs := take(c)
	if len(reqs) != 2 {
		t.Fatalf("requests %v, want a NACK for CDS and LDS each", reqs)
	}
	for _, r := range reqs {
		if r.GetErrorDetail() == nil || !strings.Contains(r.GetErrorDetail().GetMessage(), "address in use") ||
			r.GetVersionInfo() != "" {
			t.Errorf("request %v, want a NACK with the proxy's reason and no accepted version", r)
		}
	}

	// The controller sends the same version again: the NACK waits for the backoff.
	c.handle(response(t, ListenerType, "1", "c", inlineListener(t, "l")), now)
	if reqs := take(c); len(reqs) != 0 {
		t.Fatalf("repeated rejection answered at once: %v", reqs)
	}
	wake, ok := c.nextWake(now)
	if !ok || wake.Sub(now) < 500*time.Millisecond || wake.Sub(now) > time.Second {
		t.Fatalf("next wake in %v (%v), want the first backoff step", wake.Sub(now), ok)
	}
	c.onTimer(wake)
	if reqs := take(c); len(reqs) != 1 || reqs[0].GetResponseNonce() != "c" || reqs[0].GetErrorDetail() == nil {
		t.Fatalf("requests %v, want the delayed NACK of nonce c", reqs)
	}

	// Once the proxy takes it, the response is ACKed; so is the CDS response the controller sends again.
	p.err = nil
	c.handle(response(t, ListenerType, "2", "d", inlineListener(t, "l")), now)
	reqs = take(c)
	if len(p.updates) != 1 || len(reqs) != 1 || reqs[0].GetErrorDetail() != nil || reqs[0].GetVersionInfo() != "2" {
		t.Fatalf("updates %d, requests %v; want one update and the LDS ACK", len(p.updates), reqs)
	}
	c.handle(response(t, ClusterType, "1", "e", staticCluster("c")), now)
	reqs = take(c)
	if len(p.updates) != 1 || len(reqs) != 1 || reqs[0].GetErrorDetail() != nil || reqs[0].GetVersionInfo() != "1" {
		t.Fatalf("updates %d, requests %v; want no new update (nothing changed) and the CDS ACK", len(p.updates), reqs)
	}
}

// TestListenerKeepsPreviousVersion: a listener whose new route configuration has not arrived keeps serving
// its previous version, and the new one is asked for.
func TestListenerKeepsPreviousVersion(t *testing.T) {
	p := &fakeProxy{}
	c := newTestClient(t, p)
	c.startStream()
	take(c)
	now := time.Now()
	c.handle(response(t, ClusterType, "1", "a", staticCluster("c")), now)
	c.handle(response(t, ListenerType, "1", "b", inlineListener(t, "l")), now)
	if len(p.updates) != 1 {
		t.Fatalf("%d updates, want 1", len(p.updates))
	}
	take(c)

	c.handle(response(t, ListenerType, "2", "c", rdsListener(t, "l", "r2"), inlineListener(t, "l2")), now)
	last := p.updates[len(p.updates)-1]
	if len(last.Listeners) != 2 || last.Listeners[0].Routes.Name != "l" {
		t.Fatalf("listeners %+v, want l at its previous version and l2", last.Listeners)
	}
	reqs := take(c)
	if len(reqs) != 2 || reqs[0].GetTypeUrl() != ListenerType || reqs[0].GetVersionInfo() != "2" ||
		reqs[1].GetTypeUrl() != RouteType || len(reqs[1].GetResourceNames()) != 1 || reqs[1].GetResourceNames()[0] != "r2" {
		t.Fatalf("requests %v, want the LDS ACK and an RDS subscription to r2", reqs)
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	for attempt, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		want *= time.Millisecond
		for range 20 {
			if d := b.delay(attempt); d < want/2 || d > want {
				t.Fatalf("delay(%d) = %v, want within [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
}
