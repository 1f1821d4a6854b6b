package translate

import (
	"fmt"
	"slices"
	"testing"

	"github.com/meltemi-mesh/meltemi/control/model"
)

// TestSidecarScope pins the seam sidecar mode will use: a namespace sees the services exported to it and
// the listeners of those.
func TestSidecarScope(t *testing.T) {
	var objs model.Objects
	for i, se := range []struct {
		host, namespace, exportTo string
	}{
		{"own.x", "x", `["."]`},
		{"all.x", "x", `["*"]`},
		{"default.x", "x", `[]`},
		{"to-y.x", "x", `["y"]`},
	} {
		doc := fmt.Sprintf(`{"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
			"metadata": {"name": "se%d", "namespace": %q},
			"spec": {"hosts": [%q], "addresses": ["127.0.0.%d"], "exportTo": %s, "resolution": "STATIC",
				"ports": [{"number": 20880, "name": "tcp-metaprotocol-dubbo"}]}}`,
			i, se.namespace, se.host, 50+i, se.exportTo)
		obj, _, problems := model.Decode(model.Origin{File: "inline", Document: i + 1}, []byte(doc))
		if model.HasErrors(problems) {
			t.Fatal(problems)
		}
		objs.Add(obj)
	}
	snap := model.Build(1, objs, model.Options{Codecs: model.Codecs{"dubbo": "aeraki.meta_protocol.codec.dubbo"}, Local: true})
	for _, tc := range []struct {
		namespace string
		want      []string
	}{
		{"x", []string{"all.x", "default.x", "own.x"}},
		{"y", []string{"all.x", "default.x", "to-y.x"}},
		{"z", []string{"all.x", "default.x"}},
	} {
		sc := sidecarScope(snap, Node{ID: "s", Mode: Sidecar, Namespace: tc.namespace})
		var services, listeners []string
		for _, svc := range sc.services {
			services = append(services, svc.Host)
		}
		for _, l := range sc.listeners {
			listeners = append(listeners, l.Service.Host)
		}
		slices.Sort(listeners)
		if !slices.Equal(services, tc.want) || !slices.Equal(listeners, tc.want) {
			t.Errorf("namespace %s: services %v, listeners %v, want %v", tc.namespace, services, listeners, tc.want)
		}
	}
}
