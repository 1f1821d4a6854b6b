package model_test

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/control/model"
)

func TestDecodeErrorsNameTheField(t *testing.T) {
	const se = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: demo, namespace: meta}
spec:
  hosts: [demo.example]
  ports: [{number: 20880, name: tcp-dubbo}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp-dubbo: 20881}}]
`
	const mr = `apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: route, namespace: meta}
spec:
  hosts: [demo.example]
  routes:
  - name: v1
    match: {attributes: {method: {exact: sayHello}}}
    route: [{destination: {host: demo.example, subset: v1}, weight: 20}]
  localRateLimit: {tokenBucket: {fillInterval: 60s, maxTokens: 5}}
`
	tests := []struct {
		name       string
		manifest   string
		from, to   string // replaced once in manifest
		wantKey    model.Key
		wantField  string
		wantMsg    string
		wantObject bool
	}{
		{name: "misspelt port field", manifest: se, from: "name: tcp-dubbo", to: "nmae: tcp-dubbo",
			wantField: "spec.ports[0].nmae", wantMsg: "unknown field"},
		{name: "unknown spec field", manifest: se, from: "resolution:", to: "resolutoin:",
			wantField: "spec.resolutoin", wantMsg: "unknown field"},
		{name: "unknown enum value", manifest: se, from: "STATIC", to: "STATICC",
			wantField: "spec.resolution", wantMsg: `unknown value "STATICC"; one of NONE, STATIC, DNS, DNS_ROUND_ROBIN`},
		{name: "unknown field in a map of messages' owner", manifest: se, from: "address: 127.0.0.1,", to: "adress: 127.0.0.1,",
			wantField: "spec.endpoints[0].adress", wantMsg: "unknown field"},
		{name: "snake_case proto names are accepted", manifest: se, from: "name: tcp-dubbo}", to: "name: tcp-dubbo, target_port: 1}",
			wantObject: true},
		{name: "wrong type", manifest: se, from: "number: 20880", to: "number: twenty",
			wantField: "spec.ports[0].number", wantMsg: "expected a number, got a string"},
		{name: "number out of range", manifest: se, from: "number: 20880", to: "number: -1",
			wantField: "spec", wantMsg: "invalid value for uint32 field number"},
		{name: "string where a list is due", manifest: se, from: "hosts: [demo.example]", to: "hosts: demo.example",
			wantField: "spec.hosts", wantMsg: "expected a list, got a string"},
		{name: "misspelt metadata field", manifest: se, from: "namespace: meta", to: "namespace: meta, labelz: {}",
			wantField: "metadata.labelz", wantMsg: "unknown field"},
		{name: "misspelt top-level field", manifest: se, from: "spec:", to: "sepc:",
			wantField: "sepc", wantMsg: "unknown field"},
		{name: "apiVersion from another API", manifest: se, from: "networking.istio.io/v1", to: "networking.istio.io/v2",
			wantField: "apiVersion", wantMsg: "use networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3"},
		{name: "missing name", manifest: se, from: "name: demo, ", to: "",
			wantKey: model.Key{Kind: model.KindServiceEntry, Namespace: "meta"}, wantField: "metadata.name", wantMsg: "name is required"},
		{name: "invalid port number", manifest: se, from: "number: 20880", to: "number: 70000",
			wantField: "spec.ports[0].number", wantMsg: "not in 1-65535"},
		{name: "MetaRouter misspelt route field", manifest: mr, from: "route: [", to: "xroute: [",
			wantKey:   model.Key{Kind: model.KindMetaRouter, Namespace: "meta", Name: "route"},
			wantField: "spec.routes[0].xroute", wantMsg: "unknown field"},
		{name: "MetaRouter misspelt match field", manifest: mr, from: "exact:", to: "exakt:",
			wantKey:   model.Key{Kind: model.KindMetaRouter, Namespace: "meta", Name: "route"},
			wantField: "spec.routes[0].match.attributes.method.exakt", wantMsg: "unknown field"},
		{name: "MetaRouter wrong type", manifest: mr, from: "weight: 20", to: "weight: lots",
			wantKey:   model.Key{Kind: model.KindMetaRouter, Namespace: "meta", Name: "route"},
			wantField: "spec.routes.route.weight", wantMsg: "expected uint32, got string"},
		{name: "MetaRouter bad duration", manifest: mr, from: "60s", to: "sixty",
			wantKey:   model.Key{Kind: model.KindMetaRouter, Namespace: "meta", Name: "route"},
			wantField: "spec.localRateLimit.tokenBucket.fillInterval", wantMsg: `"sixty" is not a duration`},
		{name: "MetaRouter bad route timeout", manifest: mr, from: "weight: 20}]", to: "weight: 20}]\n    timeout: 2 seconds",
			wantKey:   model.Key{Kind: model.KindMetaRouter, Namespace: "meta", Name: "route"},
			wantField: "spec.routes[0].timeout", wantMsg: `"2 seconds" is not a duration`},
		{name: "MetaRouter duration as a number", manifest: mr, from: "weight: 20}]", to: "weight: 20}]\n    retries: {attempts: 1, perTryTimeout: 5}",
			wantKey:   model.Key{Kind: model.KindMetaRouter, Namespace: "meta", Name: "route"},
			wantField: "spec.routes[0].retries.perTryTimeout", wantMsg: "expected a duration such as \"2s\", got a number"},
		{name: "MetaRouter with two hosts", manifest: mr, from: "hosts: [demo.example]", to: "hosts: [a.example, b.example]",
			wantKey:   model.Key{Kind: model.KindMetaRouter, Namespace: "meta", Name: "route"},
			wantField: "spec.hosts", wantMsg: "exactly one host is required, found 2"},
		{name: "MetaRouter bad regex", manifest: mr, from: "exact: sayHello", to: "regex: 'say(('",
			wantKey:   model.Key{Kind: model.KindMetaRouter, Namespace: "meta", Name: "route"},
			wantField: "spec.routes[0].match.attributes.method.regex", wantMsg: "not an RE2 expression"},
		{name: "MetaRouter zero tokens", manifest: mr, from: "maxTokens: 5", to: "maxTokens: 0",
			wantKey:   model.Key{Kind: model.KindMetaRouter, Namespace: "meta", Name: "route"},
			wantField: "spec.localRateLimit.tokenBucket.maxTokens", wantMsg: "greater than 0"},
		{name: "MetaRouter mirror percentage", manifest: mr, from: "weight: 20}]", to: "weight: 20}]\n    mirror: {host: demo.example}\n    mirrorPercentage: {value: 150}",
			wantKey:   model.Key{Kind: model.KindMetaRouter, Namespace: "meta", Name: "route"},
			wantField: "spec.routes[0].mirrorPercentage.value", wantMsg: "not a percentage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			manifest := strings.Replace(tt.manifest, tt.from, tt.to, 1)
			if manifest == tt.manifest {
				t.Fatalf("%q not found in the manifest", tt.from)
			}
			js, err := yaml.YAMLToJSON([]byte(manifest))
			if err != nil {
				t.Fatal(err)
			}
			origin := model.Origin{File: "services.yaml", Document: 2}
			obj, key, problems := model.Decode(origin, js)
			if tt.wantObject {
				if obj == nil || len(problems) > 0 {
					t.Fatalf("want a good object, got problems:\n%s", listProblems(problems))
				}
				return
			}
			if obj != nil {
				t.Errorf("bad manifest decoded to an object")
			}
			wantKey := tt.wantKey
			if wantKey == (model.Key{}) {
				wantKey = model.Key{Kind: model.KindServiceEntry, Namespace: "meta", Name: "demo"}
			}
			if key != wantKey {
				t.Errorf("key %v, want %v", key, wantKey)
			}
			p := wantProblem(t, problems, model.SeverityError, tt.wantField, tt.wantMsg)
			if p.File != "services.yaml" || p.Document != 2 || p.Key != wantKey {
				t.Errorf("problem located at %s %v %q, want services.yaml, document 2, %v", p.File, p.Document, p.Key, wantKey)
			}
		})
	}
}

func TestDecodeKinds(t *testing.T) {
	tests := []struct {
		name     string
		manifest string
		wantKind model.Kind
		warning  string
	}{
		{"ServiceEntry v1beta1", "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: x}\nspec: {hosts: [x.example]}", model.KindServiceEntry, ""},
		{"DestinationRule v1alpha3", "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: x}\nspec: {host: x.example}", model.KindDestinationRule, ""},
		{"WorkloadEntry v1", "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: x}\nspec: {address: 127.0.0.1}", model.KindWorkloadEntry, ""},
		{"ApplicationProtocol", "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: ApplicationProtocol\nmetadata: {name: x}\nspec: {protocol: brpc, codec: c}", model.KindApplicationProtocol, ""},
		{"other kinds are ignored", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {}", "", "kind Deployment (apps/v1) is not read by Meltemi; ignored"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, err := yaml.YAMLToJSON([]byte(tt.manifest))
			if err != nil {
				t.Fatal(err)
			}
			obj, key, problems := model.Decode(model.Origin{File: "f.yaml", Document: 1}, js)
			if tt.warning != "" {
				if obj != nil || key.Kind != "" {
					t.Errorf("ignored kind decoded as %v", key)
				}
				wantProblem(t, problems, model.SeverityWarning, "", tt.warning)
				return
			}
			if obj == nil || obj.Metadata().Kind != tt.wantKind || obj.Metadata().Namespace != model.DefaultNamespace {
				t.Fatalf("got %v %+v, want a %s in the default namespace:\n%s", key, obj, tt.wantKind, listProblems(problems))
			}
		})
	}
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		p    model.Problem
		want string
	}{
		{model.Problem{Origin: model.Origin{File: "a.yaml", Document: 2},
			Key: model.Key{Kind: model.KindServiceEntry, Namespace: "ns", Name: "svc"}, Field: "spec.ports[0].name", Message: "bad"},
			"a.yaml: ServiceEntry ns/svc: spec.ports[0].name: bad"},
		{model.Problem{Origin: model.Origin{File: "a.yaml", Document: 2},
			Key: model.Key{Kind: model.KindMetaRouter, Namespace: "ns", Name: "r"}, Field: "spec.hosts[0]", Message: "odd", Severity: model.SeverityWarning},
			"a.yaml: MetaRouter ns/r: spec.hosts[0]: warning: odd"},
		{model.Problem{Origin: model.Origin{File: "a.yaml", Document: 3}, Message: "invalid YAML"},
			"a.yaml: document 3: invalid YAML"},
		{model.Problem{Origin: model.Origin{File: "a.yaml", Document: 3}, Key: model.Key{Kind: model.KindServiceEntry, Namespace: "default"},
			Field: "metadata.name", Message: "name is required"},
			"a.yaml: ServiceEntry (document 3): metadata.name: name is required"},
		{model.Problem{Origin: model.Origin{File: "dir"}, Message: "cannot read"}, "dir: cannot read"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("got  %q\nwant %q", got, tt.want)
		}
	}
}
