package model_test

import (
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/control/model"
)

// The Redis and Dubbo kinds as Aeraki's documentation writes them.
const (
	aerakiRedisService = `apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {name: redis-cluster, namespace: redis}
spec:
  host: [redis-cluster.redis.svc.cluster.local]
  settings: {opTimeout: 0.5s, readPolicy: PREFER_REPLICA, enableRedirection: true, maxUpstreamUnknownConnections: 50,
    auth: {plain: {password: testpassword}}}
  redis:
  - match: {key: {prefix: cluster}}
    route: {host: redis-cluster.redis.svc.cluster.local}
    mirror: [{route: {host: redis-single.redis.svc.cluster.local, port: 6379}, percentage: {value: 25}, excludeReadCommands: true}]
  - route: {host: redis-single.redis.svc.cluster.local}
  faults: [{type: ERROR, percentage: {value: 10}, delay: 2s, commands: [GET]}]
`
	aerakiRedisDestination = `apiVersion: redis.aeraki.io/v1alpha1
kind: RedisDestination
metadata: {name: redis-cluster, namespace: redis}
spec:
  host: redis-cluster.redis.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 5s, tcpKeepalive: {probes: 3, time: 7200s, interval: 75s}}
      redis: {mode: CLUSTER, auth: {secret: {name: redis-credential, passwordField: password}}, discoveryEndpoints: [redis-0:6379]}
`
	aerakiDubboPolicy = `apiVersion: dubbo.aeraki.io/v1alpha1
kind: DubboAuthorizationPolicy
metadata: {name: demo, namespace: istio-system}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/dubbo/sa/dubbo-consumer], notNamespaces: [dev]}}]
    to: [{operation: {interfaces: [org.apache.dubbo.samples.basic.api.DemoService], methods: [sayHello], notMethods: [sayBye]}}]
`
)

func decodeYAML(t *testing.T, origin model.Origin, manifest string) (model.Object, model.Key, []model.Problem) {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	return model.Decode(origin, js)
}

func TestDecodeRedisAndDubboKinds(t *testing.T) {
	origin := model.Origin{File: "aeraki.yaml", Document: 1}
	obj, _, problems := decodeYAML(t, origin, aerakiRedisService)
	rs, ok := obj.(*model.RedisService)
	if !ok || len(problems) > 0 {
		t.Fatalf("RedisService: got %T, problems:\n%s", obj, listProblems(problems))
	}
	if got := rs.Spec.Settings.OpTimeout.Duration; got != 500*time.Millisecond {
		t.Errorf("opTimeout %v, want 500ms", got)
	}
	if got := *rs.Spec.Settings.MaxUpstreamUnknownConnections; got != 50 {
		t.Errorf("maxUpstreamUnknownConnections %d, want 50", got)
	}
	if m := rs.Spec.Redis[0].Mirror[0]; m.Route.Port != 6379 || m.Percentage.Value != 25 || !m.ExcludeReadCommands {
		t.Errorf("mirror %+v", m)
	}

	obj, _, problems = decodeYAML(t, origin, aerakiRedisDestination)
	rd, ok := obj.(*model.RedisDestination)
	if !ok || len(problems) > 0 {
		t.Fatalf("RedisDestination: got %T, problems:\n%s", obj, listProblems(problems))
	}
	if pool := rd.Spec.TrafficPolicy.ConnectionPool; pool.Redis.Mode != "CLUSTER" || pool.Redis.Auth.Secret.Name != "redis-credential" ||
		pool.TCP.TCPKeepalive.Time.Duration != 2*time.Hour {
		t.Errorf("connection pool %+v", pool)
	}

	obj, _, problems = decodeYAML(t, origin, aerakiDubboPolicy)
	ap, ok := obj.(*model.DubboAuthorizationPolicy)
	if !ok || len(problems) > 0 {
		t.Fatalf("DubboAuthorizationPolicy: got %T, problems:\n%s", obj, listProblems(problems))
	}
	if r := ap.Spec.Rules[0]; r.From[0].Source.NotNamespaces[0] != "dev" || r.To[0].Operation.NotMethods[0] != "sayBye" {
		t.Errorf("rule %+v", r)
	}

	// The model keeps them, so a source's snapshot carries them and their changes change its hash.
	var objs model.Objects
	objs.Add(rs)
	objs.Add(rd)
	objs.Add(ap)
	snap := model.Build(1, objs, localOpts)
	if len(snap.Objects.RedisServices) != 1 || len(snap.Objects.RedisDestinations) != 1 || len(snap.Objects.DubboAuthorizations) != 1 ||
		snap.Objects.Len() != 3 || len(snap.Objects.All()) != 3 {
		t.Errorf("snapshot objects %+v", snap.Objects)
	}
	before := objs.Hash()
	edited, _, _ := decodeYAML(t, origin, strings.Replace(aerakiDubboPolicy, "action: ALLOW", "action: DENY", 1))
	objs.DubboAuthorizations[0] = edited.(*model.DubboAuthorizationPolicy)
	if objs.Hash() == before {
		t.Error("editing a DubboAuthorizationPolicy left the hash unchanged")
	}
}

func TestDecodeRedisAndDubboErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name, manifest, from, to string
		wantField, wantMsg       string
	}{
		{"unknown read policy", aerakiRedisService, "PREFER_REPLICA", "NEAREST",
			"spec.settings.readPolicy", `unknown value "NEAREST"; one of MASTER, PREFER_MASTER, REPLICA, PREFER_REPLICA, ANY`},
		{"route without host", aerakiRedisService, "route: {host: redis-single.redis.svc.cluster.local}", "route: {port: 6379}",
			"spec.redis[1].route.host", "host is required"},
		{"mirror percentage", aerakiRedisService, "value: 25", "value: 250", "spec.redis[0].mirror[0].percentage.value", "not a percentage"},
		{"unknown fault type", aerakiRedisService, "type: ERROR", "type: ABORT", "spec.faults[0].type", `unknown value "ABORT"`},
		{"misspelt settings field", aerakiRedisService, "enableRedirection", "enableRedirect", "spec.settings.enableRedirect", "unknown field"},
		{"no host", aerakiRedisService, "host: [redis-cluster.redis.svc.cluster.local]", "host: []", "spec.host", "at least one host"},
		{"two credentials", aerakiRedisDestination, "passwordField: password}", "passwordField: password}, plain: {password: x}",
			"spec.trafficPolicy.connectionPool.redis.auth", "exactly one of secret and plain"},
		{"unknown mode", aerakiRedisDestination, "mode: CLUSTER", "mode: SENTINEL",
			"spec.trafficPolicy.connectionPool.redis.mode", `unknown value "SENTINEL"; one of PROXY, CLUSTER`},
		{"negative timeout", aerakiRedisDestination, "connectTimeout: 5s", "connectTimeout: -5s",
			"spec.trafficPolicy.connectionPool.tcp.connectTimeout", "must not be negative"},
		{"unknown action", aerakiDubboPolicy, "action: ALLOW", "action: AUDIT", "spec.action", `unknown value "AUDIT"; one of ALLOW, DENY`},
		{"misspelt rule field", aerakiDubboPolicy, "notMethods", "notMethod", "spec.rules[0].to[0].operation.notMethod", "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			manifest := strings.Replace(tt.manifest, tt.from, tt.to, 1)
			if manifest == tt.manifest {
				t.Fatalf("%q not found in the manifest", tt.from)
			}
			obj, _, problems := decodeYAML(t, model.Origin{File: "aeraki.yaml", Document: 1}, manifest)
			if obj != nil {
				t.Errorf("bad manifest decoded to an object")
			}
			wantProblem(t, problems, model.SeverityError, tt.wantField, tt.wantMsg)
		})
	}
}

func TestClusterOrigin(t *testing.T) {
	older := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	key := model.Key{Kind: model.KindMetaRouter, Namespace: "default", Name: "x"}
	o := model.ClusterOrigin("kube", key, older)
	if o.File != "kube:MetaRouter default/x" || o.String() != "kube:MetaRouter default/x, created 2026-11-23T10:00:00Z" {
		t.Errorf("origin %q, shown as %q", o.File, o.String())
	}
	p := model.Problem{Origin: o, Key: key, Field: "spec.hosts", Message: "exactly one host is required, found 2"}
	if got, want := p.String(), "kube:MetaRouter default/x: spec.hosts: exactly one host is required, found 2"; got != want {
		t.Errorf("problem shown as\n%q, want\n%q", got, want)
	}
	// Creation orders cluster objects as file order orders files; files come first.
	newer := model.ClusterOrigin("kube", model.Key{Kind: model.KindMetaRouter, Namespace: "a", Name: "a"}, older.Add(time.Second))
	file := model.Origin{File: "z.yaml", Document: 9}
	if o.Compare(newer) >= 0 || newer.Compare(o) <= 0 || file.Compare(o) >= 0 {
		t.Errorf("order: older %d newer, file %d cluster", o.Compare(newer), file.Compare(o))
	}
}

func TestClusterObjectsCreatedFirstWin(t *testing.T) {
	decodeAt := func(name string, created time.Time) model.Object {
		key := model.Key{Kind: model.KindMetaRouter, Namespace: "demo", Name: name}
		obj, _, problems := decodeYAML(t, model.ClusterOrigin("kube", key, created), metaRouter(name, "demo.example"))
		if obj == nil {
			t.Fatalf("MetaRouter %s:\n%s", name, listProblems(problems))
		}
		return obj
	}
	objs, _ := load(t, serviceEntry("demo", "demo.example", ""))
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	// "a" sorts first by name, but "b" was created first.
	objs.Add(decodeAt("a", t0.Add(time.Minute)))
	objs.Add(decodeAt("b", t0))
	snap := model.Build(1, objs, localOpts)
	if r := snap.Service("demo.example").Router; r == nil || r.Name != "b" {
		t.Fatalf("router %v, want the older MetaRouter b", r)
	}
	p := wantProblem(t, snap.Problems, model.SeverityWarning, "spec.hosts[0]",
		"already routed by MetaRouter demo/b (kube:MetaRouter demo/b, created 2026-11-23T10:00:00Z), which came first")
	if got := p.String(); !strings.HasPrefix(got, "kube:MetaRouter demo/a: spec.hosts[0]: warning: ") {
		t.Errorf("problem shown as %q", got)
	}
}
