package xds

import (
	"reflect"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meltemi-mesh/meltemi/control/translate"
)

func TestParseNode(t *testing.T) {
	tests := []struct {
		name     string
		id       string
		md       map[string]any
		locality *corev3.Locality
		want     translate.Node
		wantErr  string
	}{
		{
			name: "all metadata",
			id:   "p1",
			md: map[string]any{"MODE": "sidecar", "NAMESPACE": "shop", "WORKLOAD_NAME": "demo-v1",
				"LABELS": map[string]any{"app": "demo", "version": "v1"}},
			want: translate.Node{ID: "p1", Mode: translate.Sidecar, Namespace: "shop", Workload: "demo-v1",
				Labels: map[string]string{"app": "demo", "version": "v1"}},
		},
		{name: "no metadata is local", id: "p1", want: translate.Node{ID: "p1", Mode: translate.Local}},
		{name: "locality", id: "p1", locality: &corev3.Locality{Region: "eu-west", Zone: "zone-a", SubZone: "rack-1"},
			want: translate.Node{ID: "p1", Mode: translate.Local, Locality: "eu-west/zone-a/rack-1"}},
		{name: "locality without a sub-zone", id: "p1", locality: &corev3.Locality{Region: "eu-west", Zone: "zone-a"},
			want: translate.Node{ID: "p1", Mode: translate.Local, Locality: "eu-west/zone-a"}},
		{name: "mode ignores case", id: "p1", md: map[string]any{"MODE": "Gateway"},
			want: translate.Node{ID: "p1", Mode: translate.Gateway}},
		{
			name: "Istio sidecar id fills mode and namespace",
			id:   "sidecar~10.1.2.3~demo-7d4f.shop~shop.svc.cluster.local",
			want: translate.Node{ID: "sidecar~10.1.2.3~demo-7d4f.shop~shop.svc.cluster.local", Mode: translate.Sidecar,
				Namespace: "shop"},
		},
		{
			name: "metadata wins over the Istio id",
			id:   "router~10.1.2.3~gw.istio-system~istio-system.svc.cluster.local",
			md:   map[string]any{"MODE": "local", "NAMESPACE": "edge"},
			want: translate.Node{ID: "router~10.1.2.3~gw.istio-system~istio-system.svc.cluster.local",
				Mode: translate.Local, Namespace: "edge"},
		},
		{name: "no id", wantErr: "node id: required"},
		{name: "unknown mode", id: "p1", md: map[string]any{"MODE": "mesh"},
			wantErr: `node "p1": metadata MODE: "mesh" is not one of local, sidecar, gateway`},
		{name: "mode not a string", id: "p1", md: map[string]any{"MODE": 3},
			wantErr: `node "p1": metadata MODE: a string is required`},
		{name: "labels not a map", id: "p1", md: map[string]any{"LABELS": "app=demo"},
			wantErr: `node "p1": metadata LABELS: a map of strings is required`},
		{name: "label not a string", id: "p1", md: map[string]any{"LABELS": map[string]any{"replicas": 3}},
			wantErr: `node "p1": metadata LABELS.replicas: a string is required`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &corev3.Node{Id: tt.id, Locality: tt.locality}
			if tt.md != nil {
				st, err := structpb.NewStruct(tt.md)
				if err != nil {
					t.Fatal(err)
				}
				n.Metadata = st
			}
			got, err := parseNode(n)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestShareKey(t *testing.T) {
	base := translate.Node{ID: "a", Mode: translate.Sidecar, Namespace: "shop", Labels: map[string]string{"app": "x", "v": "1"}}
	same := translate.Node{ID: "b", Mode: translate.Sidecar, Namespace: "shop", Labels: map[string]string{"v": "1", "app": "x"}}
	if shareKey(base) != shareKey(same) {
		t.Error("nodes differing only by id and label order have different keys")
	}
	for _, other := range []translate.Node{
		{Mode: translate.Gateway, Namespace: "shop", Labels: base.Labels},
		{Mode: translate.Sidecar, Namespace: "shopx", Labels: base.Labels},
		{Mode: translate.Sidecar, Namespace: "shop", Workload: "w", Labels: base.Labels},
		{Mode: translate.Sidecar, Namespace: "shop", Labels: map[string]string{"app": "x", "v": "2"}},
		// Fields run together must not be confused: namespace "shop" + workload "" vs "sho" + "p".
		{Mode: translate.Sidecar, Namespace: "sho", Workload: "p", Labels: base.Labels},
		// Endpoint priorities follow the locality, so it must split the translation.
		{Mode: translate.Sidecar, Namespace: "shop", Labels: base.Labels, Locality: "eu-west/zone-a"},
	} {
		if shareKey(other) == shareKey(base) {
			t.Errorf("%+v shares the key of %+v", other, base)
		}
	}
}
