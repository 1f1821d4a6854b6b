package validation_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/validation"
)

var opts = model.Options{Codecs: model.Codecs{"dubbo": "aeraki.meta_protocol.codec.dubbo"}, Local: true}

// cluster is what the controller serves when the requests below arrive: a Dubbo service routed by a
// MetaRouter, and an HTTP service.
const cluster = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: orders, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  hosts: [orders.shop.example]
  addresses: [127.0.0.10]
  ports: [{number: 20880, name: tcp-dubbo}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  hosts: [web.shop.example]
  ports: [{number: 80, name: http}]
  resolution: DNS
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: orders, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  hosts: [orders.shop.example]
  routes: [{name: all, route: [{destination: {host: orders.shop.example}}]}]
`

func snapshot(t *testing.T) *model.Snapshot {
	t.Helper()
	var objs model.Objects
	for i, doc := range strings.Split(cluster, "\n---\n") {
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		u := map[string]any{}
		if err := yaml.Unmarshal(js, &u); err != nil {
			t.Fatal(err)
		}
		md := u["metadata"].(map[string]any)
		key := model.Key{Kind: model.Kind(u["kind"].(string)), Namespace: md["namespace"].(string), Name: md["name"].(string)}
		created, _ := time.Parse(time.RFC3339, md["creationTimestamp"].(string))
		obj, _, problems := model.Decode(model.ClusterOrigin("kube", key, created.Add(time.Duration(i))), js)
		if obj == nil {
			t.Fatalf("document %d: %v", i+1, problems)
		}
		objs.Add(obj)
	}
	snap := model.Build(1, objs, opts)
	if len(snap.Problems) > 0 {
		t.Fatalf("cluster has problems: %v", snap.Problems)
	}
	return snap
}

func request(t testing.TB, op admissionv1.Operation, text string) admission.Request {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	var head struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   metav1.ObjectMeta `json:"metadata"`
	}
	if err := yaml.Unmarshal(js, &head); err != nil {
		t.Fatal(err)
	}
	group, version, _ := strings.Cut(head.APIVersion, "/")
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "uid",
		Kind:      metav1.GroupVersionKind{Group: group, Version: version, Kind: head.Kind},
		Namespace: "shop",
		Name:      head.Metadata.Name,
		Operation: op,
		Object:    runtime.RawExtension{Raw: js},
	}}
}

func router(name, spec string) string {
	return "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\nmetadata: {name: " + name + ", namespace: shop}\nspec:\n" + spec
}

const routeAll = "  routes: [{name: all, route: [{destination: {host: orders.shop.example}}]}]\n"

func TestHandle(t *testing.T) {
	tests := []struct {
		name     string
		op       admissionv1.Operation
		object   string
		denied   []string // lines of the message, in order
		fields   []string // the causes' fields
		warnings []string // substrings of the warnings, in order
	}{
		{name: "a good MetaRouter", op: admissionv1.Update,
			object: router("orders", "  hosts: [orders.shop.example]\n"+routeAll)},
		{name: "two hosts", op: admissionv1.Create,
			object: router("two", "  hosts: [orders.shop.example, other.shop.example]\n"+routeAll),
			denied: []string{"MetaRouter shop/two: spec.hosts: exactly one host is required, found 2"},
			fields: []string{"spec.hosts"}},
		{name: "nothing to do", op: admissionv1.Create,
			object: router("empty", "  hosts: [orders.shop.example]\n"),
			denied: []string{"MetaRouter shop/empty: spec: at least one of routes, localRateLimit and globalRateLimit is required"},
			fields: []string{"spec"}},
		{name: "every error, each by its field", op: admissionv1.Create,
			object: router("bad", "  hosts: [orders.shop.example]\n  exportTo: ['*', other]\n"+
				"  routes: [{name: all, route: [{destination: {host: orders.shop.example}}], mirror: {host: orders.shop.example},\n"+
				"            mirrorPercentage: {value: 150}, match: {attributes: {method: {regex: '('}}}}]\n"),
			denied: []string{
				"MetaRouter shop/bad: spec.exportTo: \"*\" exports to every namespace and cannot be listed with other entries",
				"MetaRouter shop/bad: spec.routes[0].match.attributes.method.regex: not an RE2 expression",
				"MetaRouter shop/bad: spec.routes[0].mirrorPercentage.value: 150 is not a percentage in 0-100",
			},
			fields: []string{"spec.exportTo", "spec.routes[0].match.attributes.method.regex", "spec.routes[0].mirrorPercentage.value"}},
		{name: "unknown field", op: admissionv1.Create,
			object: router("typo", "  hosts: [orders.shop.example]\n  rotues: []\n"+routeAll),
			denied: []string{`MetaRouter shop/typo: spec.rotues: unknown field`}, fields: []string{"spec.rotues"}},
		{name: "a warning of the object itself", op: admissionv1.Update,
			object:   router("orders", "  hosts: [orders.shop.example]\n  localRateLimit: {}\n"+routeAll),
			warnings: []string{"MetaRouter shop/orders: spec.localRateLimit: neither tokenBucket nor conditions: nothing is limited"}},
		{name: "warnings with an error", op: admissionv1.Create,
			object:   router("both", "  hosts: [orders.shop.example, x]\n  localRateLimit: {}\n"+routeAll),
			denied:   []string{"MetaRouter shop/both: spec.hosts: exactly one host is required, found 2"},
			fields:   []string{"spec.hosts"},
			warnings: []string{"spec.localRateLimit: neither tokenBucket nor conditions"}},
		{name: "a second router for a host", op: admissionv1.Create,
			object:   router("second", "  hosts: [orders.shop.example]\n"+routeAll),
			warnings: []string{`MetaRouter shop/second: spec.hosts[0]: host "orders.shop.example" is already routed by MetaRouter shop/orders`}},
		{name: "a host nobody serves", op: admissionv1.Create,
			object:   router("lost", "  hosts: [lost.shop.example]\n  routes: [{name: all, route: [{destination: {host: lost.shop.example}}]}]\n"),
			warnings: []string{`spec.hosts[0]: no ServiceEntry defines host "lost.shop.example"`, `spec.routes[0].route[0].destination.host: no ServiceEntry`}},
		{name: "a host without meta-protocol ports", op: admissionv1.Create,
			object:   router("web", "  hosts: [web.shop.example]\n  routes: [{name: all, route: [{destination: {host: web.shop.example}}]}]\n"),
			warnings: []string{`host "web.shop.example" has no meta-protocol port`}},
		{name: "deleting is always allowed", op: admissionv1.Delete,
			object: router("two", "  hosts: [a, b]\n")},
		{name: "a protocol name with a dash", op: admissionv1.Create,
			object: "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: ApplicationProtocol\nmetadata: {name: p, namespace: shop}\nspec: {protocol: my-rpc, codec: x}\n",
			denied: []string{`ApplicationProtocol shop/p: spec.protocol: "my-rpc" must not contain '-' or spaces`}, fields: []string{"spec.protocol"}},
		{name: "RedisService read policy", op: admissionv1.Create,
			object: "apiVersion: redis.aeraki.io/v1alpha1\nkind: RedisService\nmetadata: {name: r, namespace: shop}\nspec: {host: [redis.shop.example], settings: {readPolicy: SOMETIMES}}\n",
			denied: []string{`RedisService shop/r: spec.settings.readPolicy: unknown value "SOMETIMES"`}, fields: []string{"spec.settings.readPolicy"}},
		{name: "RedisDestination without a host", op: admissionv1.Create,
			object: "apiVersion: redis.aeraki.io/v1alpha1\nkind: RedisDestination\nmetadata: {name: r, namespace: shop}\nspec: {}\n",
			denied: []string{`RedisDestination shop/r: spec.host: host is required`}, fields: []string{"spec.host"}},
		{name: "DubboAuthorizationPolicy action", op: admissionv1.Create,
			object: "apiVersion: dubbo.aeraki.io/v1alpha1\nkind: DubboAuthorizationPolicy\nmetadata: {name: d, namespace: shop}\nspec: {action: MAYBE}\n",
			denied: []string{`DubboAuthorizationPolicy shop/d: spec.action: unknown value "MAYBE"`}, fields: []string{"spec.action"}},
		{name: "a ServiceEntry asking for a protocol nobody speaks is only warned about", op: admissionv1.Create,
			object: "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: rpc, namespace: shop}\n" +
				"spec: {hosts: [rpc.shop.example], addresses: [127.0.0.11], ports: [{number: 7000, name: tcp-metaprotocol-nosuch}], resolution: STATIC, endpoints: [{address: 10.0.0.2}]}\n",
			warnings: []string{`meltemi: ServiceEntry shop/rpc: spec.ports[0]: application protocol "nosuch" has no codec`}},
		{name: "a ServiceEntry without meta-protocol ports is not Meltemi's business", op: admissionv1.Create,
			object: "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: web2, namespace: shop}\n" +
				"spec: {hosts: [web2.shop.example], addresses: [10.9.9.9], ports: [{number: 80, name: http}], resolution: DNS}\n"},
		{name: "a DestinationRule of a meta-protocol service", op: admissionv1.Create,
			object: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: orders, namespace: shop}\n" +
				"spec: {host: orders.shop.example, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}, subsets: [{name: v9, labels: {version: v9}}]}\n",
			warnings: []string{"meltemi: DestinationRule shop/orders: spec.trafficPolicy.tls: not used yet", `subset "v9" selects no endpoint`}},
		{name: "a DestinationRule of another service", op: admissionv1.Create,
			object: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web, namespace: shop}\n" +
				"spec: {host: web.shop.example, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n"},
		{name: "other kinds pass", op: admissionv1.Create,
			object: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: shop}\n"},
	}
	snap := snapshot(t)
	h := &validation.Handler{Snapshot: func() *model.Snapshot { return snap }, Model: opts}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.Handle(context.Background(), request(t, tt.op, tt.object))
			if tt.denied == nil {
				if !resp.Allowed {
					t.Fatalf("denied: %v", resp.Result)
				}
			} else {
				if resp.Allowed {
					t.Fatal("allowed")
				}
				if resp.Result.Code != http.StatusUnprocessableEntity || resp.Result.Reason != metav1.StatusReasonInvalid {
					t.Errorf("code %d reason %s", resp.Result.Code, resp.Result.Reason)
				}
				lines := strings.Split(resp.Result.Message, "\n")
				if len(lines) != len(tt.denied) {
					t.Errorf("message:\n%s\nwant %d lines", resp.Result.Message, len(tt.denied))
				}
				for i, want := range tt.denied {
					if i < len(lines) && !strings.HasPrefix(lines[i], want) {
						t.Errorf("line %d: %q, want %q...", i+1, lines[i], want)
					}
				}
				var fields []string
				for _, c := range resp.Result.Details.Causes {
					fields = append(fields, c.Field)
				}
				if !slices.Equal(fields, tt.fields) {
					t.Errorf("causes %v, want %v", fields, tt.fields)
				}
			}
			if len(resp.Warnings) != len(tt.warnings) {
				t.Errorf("warnings %q, want %d", resp.Warnings, len(tt.warnings))
			}
			for i, want := range tt.warnings {
				if i < len(resp.Warnings) && !strings.Contains(resp.Warnings[i], want) {
					t.Errorf("warning %d: %q, want it to contain %q", i+1, resp.Warnings[i], want)
				}
			}
		})
	}
}

func TestNameAndNamespaceComeFromTheRequest(t *testing.T) {
	// With generateName, or without a namespace in the manifest, the object lacks what the request has.
	req := request(t, admissionv1.Create, "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\nmetadata: {generateName: r-}\n"+
		"spec:\n  hosts: [a, b]\n"+routeAll)
	req.Name = "r-x7k2p"
	resp := (&validation.Handler{}).Handle(context.Background(), req)
	if resp.Allowed || !strings.HasPrefix(resp.Result.Message, "MetaRouter shop/r-x7k2p: spec.hosts: ") {
		t.Errorf("got %+v", resp.Result)
	}
}

func TestWithoutSnapshotTheObjectAloneIsChecked(t *testing.T) {
	h := &validation.Handler{Snapshot: func() *model.Snapshot { return nil }, Model: opts}
	resp := h.Handle(context.Background(), request(t, admissionv1.Create, router("lost", "  hosts: [lost.example]\n"+routeAll)))
	if !resp.Allowed || len(resp.Warnings) != 0 {
		t.Errorf("allowed %v, warnings %q", resp.Allowed, resp.Warnings)
	}
}

func TestNotAnObject(t *testing.T) {
	req := request(t, admissionv1.Create, router("x", "  hosts: [a]\n"+routeAll))
	req.Object.Raw = []byte(`[1, 2]`)
	if resp := (&validation.Handler{}).Handle(context.Background(), req); resp.Allowed || resp.Result.Code != http.StatusBadRequest {
		t.Errorf("got %+v", resp.AdmissionResponse)
	}
}

// FuzzHandle feeds the handler objects of every kind it reads: whatever they hold, it answers, and a
// refusal always says why.
func FuzzHandle(f *testing.F) {
	for _, seed := range []string{
		router("a", "  hosts: [orders.shop.example]\n"+routeAll),
		router("b", "  hosts: [x, y]\n  exportTo: ['~', '.']\n  localRateLimit: {tokenBucket: {maxTokens: 0, fillInterval: 1m}}\n"),
		router("c", "  hosts: [orders.shop.example]\n  routes: [{route: [{destination: {host: a, port: {number: 70000}}, weight: 0}]}]\n"+
			"  globalRateLimit: {domain: d, rateLimitService: 'outbound|8081||rls.example', descriptors: [{property: method, descriptorKey: m}]}\n"),
		"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec: {hosts: [a], ports: [{number: 1, name: tcp-dubbo}]}\nstatus: {addresses: [{value: 127.240.0.1, host: a}]}\n",
		"apiVersion: redis.aeraki.io/v1alpha1\nkind: RedisService\nmetadata: {name: r}\nspec: {host: [a], redis: [{route: {host: b, port: 70000}}]}\n",
	} {
		req := request(f, admissionv1.Create, seed)
		f.Add(req.Kind.Group, req.Kind.Kind, req.Object.Raw)
	}
	snap := model.Build(1, model.Objects{}, opts)
	h := &validation.Handler{Snapshot: func() *model.Snapshot { return snap }, Model: opts}
	f.Fuzz(func(t *testing.T, group, kind string, raw []byte) {
		req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			Kind: metav1.GroupVersionKind{Group: group, Version: "v1alpha1", Kind: kind}, Namespace: "shop", Name: "n",
			Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
		}}
		resp := h.Handle(context.Background(), req)
		if !resp.Allowed && (resp.Result == nil || resp.Result.Message == "") {
			t.Fatalf("refused without a reason: %+v", resp.AdmissionResponse)
		}
	})
}
