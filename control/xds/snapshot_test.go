package xds

import (
	"fmt"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meltemi-mesh/meltemi/control/translate"
)

// resources builds a translation whose listener carries a typed config with a map, packed into an Any
// afresh each time, as a translator does.
func resources(t testing.TB, routeDomain string) *translate.Resources {
	t.Helper()
	fields := map[string]any{}
	for i := range 20 {
		fields[fmt.Sprintf("key%d", i)] = fmt.Sprintf("value%d", i)
	}
	st, err := structpb.NewStruct(fields)
	if err != nil {
		t.Fatal(err)
	}
	typed, err := anypb.New(st)
	if err != nil {
		t.Fatal(err)
	}
	return &translate.Resources{
		Clusters: []*clusterv3.Cluster{{Name: "b"}, {Name: "a", Metadata: &corev3.Metadata{
			FilterMetadata: map[string]*structpb.Struct{"istio": st}}}},
		Listeners: []*listenerv3.Listener{{Name: "l", FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{Name: "meta", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: typed}}},
		}}}},
		Routes: []*routev3.RouteConfiguration{{Name: "r", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{routeDomain}}}}},
	}
}

func TestVersionsFollowContent(t *testing.T) {
	first, err := newSnapshot(resources(t, "*"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Maps inside an Any are marshalled in random order: equal content must still get equal versions, and
	// resources equal to the previous snapshot's keep its encoding and so their delta versions.
	prev := first
	for range 20 {
		again, err := newSnapshot(resources(t, "*"), prev)
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := newSnapshot(resources(t, "*"), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, typ := range servedTypes {
			if again.GetVersion(typ) != first.GetVersion(typ) || fresh.GetVersion(typ) != first.GetVersion(typ) {
				t.Fatalf("%s: version %s then %s for equal content", shortType(typ), first.GetVersion(typ), fresh.GetVersion(typ))
			}
			for name, v := range first.GetVersionMap(typ) {
				if again.GetVersionMap(typ)[name] != v {
					t.Fatalf("%s %s: resource version changed for equal content", shortType(typ), name)
				}
			}
		}
		prev = again
	}
	changed, err := newSnapshot(resources(t, "example.com"), first)
	if err != nil {
		t.Fatal(err)
	}
	if changed.GetVersion(resource.RouteType) == first.GetVersion(resource.RouteType) {
		t.Error("route version unchanged when a route changed")
	}
	if changed.GetVersionMap(resource.RouteType)["r"] == first.GetVersionMap(resource.RouteType)["r"] {
		t.Error("route's delta version unchanged when it changed")
	}
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType} {
		if changed.GetVersion(typ) != first.GetVersion(typ) {
			t.Errorf("%s version changed when only a route did", shortType(typ))
		}
	}
	if changed.GetResources(resource.ListenerType)["l"] != first.GetResources(resource.ListenerType)["l"] {
		t.Error("an unchanged listener was encoded again")
	}
	if first.GetVersion(resource.EndpointType) == "" {
		t.Error("a type without resources has no version: a wildcard subscriber would never be answered")
	}
	if got := len(first.GetResources(resource.ClusterType)); got != 2 {
		t.Errorf("%d clusters, want 2", got)
	}
	if first.GetVersion(resource.SecretType) != "" || first.GetResources(resource.SecretType) != nil {
		t.Error("a type not served has a version or resources")
	}
}

func TestEncodingIsTheResourcesOwn(t *testing.T) {
	r := resources(t, "*")
	snap, err := newSnapshot(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	// What the cache puts on the wire for the stand-in must decode to the translator's message.
	wire, err := cachev3.MarshalResource(snap.GetResources(resource.ClusterType)["a"])
	if err != nil {
		t.Fatal(err)
	}
	got := &clusterv3.Cluster{}
	if err := proto.Unmarshal(wire, got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, r.Clusters[1]) {
		t.Errorf("decoded %v, want %v", got, r.Clusters[1])
	}
	if v := snap.GetVersionMap(resource.ClusterType)["a"]; v != cachev3.HashResource(wire) {
		t.Errorf("delta version %s is not the hash of what is sent", v)
	}
}

func TestSnapshotRejectsBadNames(t *testing.T) {
	tests := []struct {
		name string
		res  *translate.Resources
		want string
	}{
		{"duplicate", &translate.Resources{Clusters: []*clusterv3.Cluster{{Name: "a"}, {Name: "a"}}}, `cds "a": two resources have this name`},
		{"unnamed", &translate.Resources{Routes: []*routev3.RouteConfiguration{{}}}, "rds: resource 0 has no name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newSnapshot(tt.res, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func BenchmarkSnapshot(b *testing.B) {
	r := resources(b, "*")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := newSnapshot(r, nil); err != nil {
			b.Fatal(err)
		}
	}
}
