package model_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/control/model"
)

func TestVIPAllocationIsStable(t *testing.T) {
	const host = "org.apache.dubbo.samples.basic.api.demoservice"
	vipOf := func(files ...string) netip.Addr {
		t.Helper()
		snap := mustBuild(t, localOpts, files...)
		svc := snap.Service(host)
		if svc == nil || len(svc.Addresses) != 1 || !svc.Addresses[0].Allocated {
			t.Fatalf("service %s: want one allocated address, got %+v", host, svc)
		}
		return svc.Addresses[0].IP
	}
	alone := vipOf(serviceEntry("demo", host, ""))
	if !model.VIPRange.Contains(alone) {
		t.Fatalf("VIP %s is outside %s", alone, model.VIPRange)
	}
	if again := vipOf(serviceEntry("demo", host, "")); again != alone {
		t.Errorf("second run: VIP %s, want %s", again, alone)
	}

	// Unrelated services, some allocated, some with their own addresses, in files before and after.
	var before, after []string
	for i := range 40 {
		before = append(before, serviceEntry(fmt.Sprintf("a%d", i), fmt.Sprintf("a%d.example", i), ""))
		after = append(after, serviceEntry(fmt.Sprintf("z%d", i), fmt.Sprintf("z%d.example", i),
			fmt.Sprintf("  addresses: [127.0.%d.1]\n", i)))
	}
	files := append(append(before, serviceEntry("demo", host, "")), after...)
	if crowded := vipOf(files...); crowded != alone {
		t.Errorf("with unrelated services: VIP %s, want %s", crowded, alone)
	}
	// Renaming the ServiceEntry or moving it to another file does not move the VIP: it belongs to the host.
	if moved := vipOf(serviceEntry("renamed", host, "")); moved != alone {
		t.Errorf("renamed ServiceEntry: VIP %s, want %s", moved, alone)
	}
}

func TestVIPsAreDistinctAndListened(t *testing.T) {
	var files []string
	for i := range 200 {
		files = append(files, serviceEntry(fmt.Sprintf("s%d", i), fmt.Sprintf("s%d.example", i), ""))
	}
	snap := mustBuild(t, localOpts, files...)
	seen := map[netip.Addr]string{}
	for _, svc := range snap.Services {
		ip := svc.Addresses[0].IP
		if other, dup := seen[ip]; dup {
			t.Errorf("%s and %s share %s", other, svc.Host, ip)
		}
		seen[ip] = svc.Host
	}
	if len(snap.Listeners) != 200 {
		t.Errorf("%d listeners, want 200", len(snap.Listeners))
	}
	for _, l := range snap.Listeners {
		if l.Address.Addr() != l.Service.Addresses[0].IP || l.Address.Port() != 20880 {
			t.Errorf("listener %s does not match service %s", l.Address, l.Service.Host)
		}
	}
}

func TestAddresses(t *testing.T) {
	tests := []struct {
		name      string
		opts      model.Options
		addresses string
		want      []string // addresses of the service; "+" marks an allocated one
		warnings  []string // fields warned about
	}{
		{"loopback kept", localOpts, "[127.0.0.5, 127.1.2.3]", []string{"127.0.0.5", "127.1.2.3"}, nil},
		{"single-address CIDR is an address", localOpts, "[127.0.0.5/32]", []string{"127.0.0.5"}, nil},
		{"others skipped with a warning", localOpts, "[10.0.0.1, 127.0.0.5, 192.168.0.0/24]",
			[]string{"127.0.0.5"}, []string{"spec.addresses[0]", "spec.addresses[2]"}},
		{"none left: allocated", localOpts, "[10.0.0.1]", []string{"+"}, []string{"spec.addresses[0]"}},
		{"not local: kept as written", model.Options{Codecs: dubboOnly}, "[10.0.0.1, 127.0.0.5]",
			[]string{"10.0.0.1", "127.0.0.5"}, nil},
		{"not local: no allocation", model.Options{Codecs: dubboOnly}, "[]", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, problems := build(t, tt.opts, serviceEntry("demo", "demo.example", "  addresses: "+tt.addresses+"\n"))
			var got []string
			for _, a := range snap.Service("demo.example").Addresses {
				if a.Allocated {
					got = append(got, "+")
				} else {
					got = append(got, a.IP.String())
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("addresses %v, want %v", got, tt.want)
			}
			for _, f := range tt.warnings {
				wantProblem(t, problems, model.SeverityWarning, f, "cannot bind; skipped")
			}
			wantCount(t, problems, 0, len(tt.warnings))
		})
	}
}

func TestAddressClash(t *testing.T) {
	snap, problems := build(t, localOpts,
		serviceEntry("first", "first.example", "  addresses: [127.0.0.10]\n"),
		serviceEntry("second", "second.example", "  addresses: [127.0.0.11, 127.0.0.10]\n"))
	p := wantProblem(t, problems, model.SeverityError, "spec.addresses[1]", `127.0.0.10:20880 is already served by host "first.example"`)
	if p.Name != "second" || p.File != "file2.yaml" {
		t.Errorf("clash reported on %s in %s, want the second ServiceEntry", p.Key, p.File)
	}
	wantCount(t, problems, 1, 0)
	owners := map[string]string{}
	for _, l := range snap.Listeners {
		owners[l.Address.String()] = l.Service.Host
	}
	want := map[string]string{"127.0.0.10:20880": "first.example", "127.0.0.11:20880": "second.example"}
	if !reflect.DeepEqual(owners, want) {
		t.Errorf("listeners %v, want %v", owners, want)
	}

	// Hosts of one ServiceEntry share its addresses: the first host's routes serve them, as in Aeraki.
	snap = mustBuild(t, localOpts, serviceEntry("both", "a.example, b.example", "  addresses: [127.0.0.10]\n"))
	if len(snap.Listeners) != 1 || snap.Listeners[0].Service.Host != "a.example" {
		t.Errorf("listeners %+v, want one for a.example", snap.Listeners)
	}

	// One address on different ports is no clash.
	other := strings.Replace(serviceEntry("other", "other.example", "  addresses: [127.0.0.10]\n"),
		"number: 20880", "number: 20990", 1)
	mustBuild(t, localOpts, serviceEntry("first", "first.example", "  addresses: [127.0.0.10]\n"), other)
}

func TestEndpointPortResolution(t *testing.T) {
	snap := mustBuild(t, localOpts, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: demo}
spec:
  hosts: [demo.example]
  ports:
  - {number: 20880, name: tcp-dubbo, targetPort: 20990}
  - {number: 20881, name: tcp-dubbo-b}
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {tcp-dubbo: 30000, tcp-dubbo-b: 30001}}
  - {address: 127.0.0.2}
`)
	svc := snap.Service("demo.example")
	got := map[uint32][]string{}
	for _, p := range svc.Ports {
		for _, ep := range p.Endpoints {
			got[p.Number] = append(got[p.Number], fmt.Sprintf("%s:%d", ep.Address, ep.Port))
		}
	}
	want := map[uint32][]string{
		20880: {"127.0.0.1:30000", "127.0.0.2:20990"}, // ports[name], else targetPort
		20881: {"127.0.0.1:30001", "127.0.0.2:20881"}, // ports[name], else number
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints %v, want %v", got, want)
	}
}

func TestResolution(t *testing.T) {
	seWith := func(resolution, endpoints string) string {
		return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: demo}
spec:
  hosts: [demo.example]
  ports: [{number: 20880, name: tcp-dubbo}]
  resolution: %s
%s`, resolution, endpoints)
	}
	tests := []struct {
		name      string
		manifest  string
		endpoints []string // nil: the service is not served
		problem   string   // field of the one expected problem
		severity  model.Severity
	}{
		{name: "STATIC", manifest: seWith("STATIC", "  endpoints: [{address: 127.0.0.7}]"),
			endpoints: []string{"127.0.0.7:20880"}},
		{name: "DNS with names", manifest: seWith("DNS", "  endpoints: [{address: dubbo.internal}, {address: 127.0.0.7}]"),
			endpoints: []string{"dubbo.internal:20880", "127.0.0.7:20880"}},
		{name: "DNS_ROUND_ROBIN", manifest: seWith("DNS_ROUND_ROBIN", "  endpoints: [{address: dubbo.internal}]"),
			endpoints: []string{"dubbo.internal:20880"}},
		{name: "DNS without endpoints resolves the host", manifest: seWith("DNS", ""),
			endpoints: []string{"demo.example:20880"}},
		{name: "NONE is skipped with a warning", manifest: seWith("NONE", ""),
			problem: "spec.resolution", severity: model.SeverityWarning},
		{name: "STATIC needs IPs", manifest: seWith("STATIC", "  endpoints: [{address: dubbo.internal}]"),
			problem: "spec.endpoints[0].address", severity: model.SeverityError},
		{name: "STATIC without endpoints serves nothing", manifest: seWith("STATIC", ""),
			endpoints: []string{}, problem: "spec.ports[0]", severity: model.SeverityWarning},
		{name: "unix sockets are not served", manifest: seWith("STATIC", "  endpoints: [{address: 'unix:///run/dubbo.sock'}, {address: 127.0.0.7}]"),
			endpoints: []string{"127.0.0.7:20880"}, problem: "spec.endpoints[0].address", severity: model.SeverityWarning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, problems := build(t, localOpts, tt.manifest)
			svc := snap.Service("demo.example")
			switch {
			case tt.endpoints == nil && svc != nil:
				t.Errorf("service served, want it skipped")
			case tt.endpoints != nil && svc == nil:
				t.Fatalf("service not served:\n%s", listProblems(problems))
			case svc != nil:
				got := []string{}
				for _, ep := range svc.Ports[0].Endpoints {
					got = append(got, fmt.Sprintf("%s:%d", ep.Address, ep.Port))
				}
				if !reflect.DeepEqual(got, tt.endpoints) {
					t.Errorf("endpoints %v, want %v", got, tt.endpoints)
				}
			}
			if tt.problem == "" {
				wantCount(t, problems, 0, 0)
				return
			}
			wantProblem(t, problems, tt.severity, tt.problem, "")
			if len(problems) != 1 {
				t.Errorf("want one problem, got:\n%s", listProblems(problems))
			}
		})
	}
}

func TestWorkloadEntrySelection(t *testing.T) {
	workload := func(name, ns, address, labels string) string {
		return fmt.Sprintf(`apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: %s, namespace: %s}
spec:
  address: %s
  labels: %s
  ports: {tcp-dubbo: 30000}
  weight: 3
`, name, ns, address, labels)
	}
	se := `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: demo, namespace: demo}
spec:
  hosts: [demo.example]
  ports: [{number: 20880, name: tcp-dubbo, targetPort: 20990}, {number: 20881, name: tcp-dubbo-admin}]
  resolution: STATIC
  workloadSelector: {labels: {app: demo}}
`
	snap, problems := build(t, localOpts, se+"---\n"+
		workload("v1", "demo", "127.0.0.1", "{app: demo, version: v1}")+"---\n"+
		workload("v2", "demo", "127.0.0.2", "{app: demo, version: v2}")+"---\n"+
		workload("elsewhere", "other", "127.0.0.3", "{app: demo}")+"---\n"+
		workload("unrelated", "demo", "127.0.0.4", "{app: other}")+"---\n"+
		workload("byname", "demo", "dubbo.internal", "{app: demo}"))
	// STATIC needs IPs: the WorkloadEntry with a name is left out, and told why.
	if p := wantProblem(t, problems, model.SeverityWarning, "spec.address", "is not an IP address"); p.Name != "byname" {
		t.Errorf("warning on %v, want the WorkloadEntry byname", p.Key)
	}
	wantCount(t, problems, 0, 1)
	svc := snap.Service("demo.example")
	type ep struct {
		addr    string
		port    uint32
		version string
		from    string
		weight  uint32
	}
	var got []ep
	for _, p := range svc.Ports {
		for _, e := range p.Endpoints {
			got = append(got, ep{e.Address, e.Port, e.Labels["version"], e.WorkloadEntry.Name, e.Weight})
		}
	}
	want := []ep{
		{"127.0.0.1", 30000, "v1", "v1", 3}, {"127.0.0.2", 30000, "v2", "v2", 3}, // WorkloadEntry ports[name]
		{"127.0.0.1", 20881, "v1", "v1", 3}, {"127.0.0.2", 20881, "v2", "v2", 3}, // else the port number
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints\n got %+v\nwant %+v", got, want)
	}
}

func TestDestinationRule(t *testing.T) {
	se := `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: demo}
spec:
  hosts: [demo.example]
  ports: [{number: 20880, name: tcp-dubbo}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, labels: {version: v1}}
  - {address: 127.0.0.2, labels: {version: v2}}
  - {address: 127.0.0.3, labels: {version: v3}}
`
	dr := `apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: demo}
spec:
  host: demo.example
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: interface, minimumRingSize: 1024}}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {simple: RANDOM}}
  - name: v3
    labels: {version: v3}
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: method, maglev: {tableSize: 65537}}}}
`
	snap := mustBuild(t, localOpts, se, dr)
	svc := snap.Service("demo.example")
	if svc.DestinationRule == nil || svc.DestinationRule.Name != "demo" {
		t.Fatalf("DestinationRule not attached")
	}
	wantTop := model.LoadBalancer{Policy: model.LBRingHash, HashKey: "interface", MinimumRingSize: 1024}
	if svc.LoadBalancer != wantTop {
		t.Errorf("top-level load balancer %+v, want %+v", svc.LoadBalancer, wantTop)
	}
	want := map[string]model.LoadBalancer{
		"v1": wantTop, // inherited
		"v2": {Policy: model.LBRandom},
		"v3": {Policy: model.LBMaglev, HashKey: "method", MaglevTableSize: 65537},
	}
	for name, lb := range want {
		s := svc.Subset(name)
		if s == nil {
			t.Errorf("no subset %s", name)
			continue
		}
		if s.LoadBalancer != lb {
			t.Errorf("subset %s load balancer %+v, want %+v", name, s.LoadBalancer, lb)
		}
		eps := svc.Ports[0].EndpointsFor(s.Labels)
		if len(eps) != 1 || eps[0].Labels["version"] != name {
			t.Errorf("subset %s selects %+v", name, eps)
		}
	}

	tests := []struct {
		name, rule, field, msg string
	}{
		{"hash keys other than a header are ignored", `
  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}`,
			"spec.trafficPolicy.loadBalancer.consistentHash", "only httpHeaderName"},
		{"PASSTHROUGH is ignored", `
  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}`,
			"spec.trafficPolicy.loadBalancer.simple", "PASSTHROUGH is not supported"},
		{"subset selecting nothing", `
  subsets: [{name: v9, labels: {version: v9}}]`,
			"spec.subsets[0].labels", `subset "v9" selects no endpoint`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rule := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: demo}\nspec:\n  host: demo.example" + tt.rule
			snap, problems := build(t, localOpts, se, rule)
			wantProblem(t, problems, model.SeverityWarning, tt.field, tt.msg)
			wantCount(t, problems, 0, 1)
			if lb := snap.Service("demo.example").LoadBalancer; lb != (model.LoadBalancer{}) {
				t.Errorf("load balancer %+v, want the default", lb)
			}
		})
	}

	t.Run("unknown host and duplicate rule", func(t *testing.T) {
		other := strings.Replace(dr, "name: demo}", "name: second}", 1)
		stray := strings.Replace(dr, "host: demo.example", "host: nowhere.example", 1)
		stray = strings.Replace(stray, "name: demo}", "name: stray}", 1)
		snap, problems := build(t, localOpts, se, dr, other, stray)
		wantProblem(t, problems, model.SeverityWarning, "spec.host", "already has DestinationRule default/demo")
		wantProblem(t, problems, model.SeverityWarning, "spec.host", `no ServiceEntry defines host "nowhere.example"`)
		wantCount(t, problems, 0, 2)
		if got := snap.Service("demo.example").DestinationRule.Name; got != "demo" {
			t.Errorf("rule %s attached, want the first, demo", got)
		}
	})
}

func TestMetaRouterPerHost(t *testing.T) {
	const host = "demo.example"
	// The first in file order wins: file1 before file2, and within a file the first document.
	snap, problems := build(t, localOpts,
		serviceEntry("demo", host, ""),
		metaRouter("first", host)+"---\n"+metaRouter("second", host),
		metaRouter("third", host))
	if r := snap.Service(host).Router; r == nil || r.Name != "first" {
		t.Fatalf("router %+v, want first", r)
	}
	for _, name := range []string{"second", "third"} {
		found := false
		for _, p := range problems {
			if p.Name == name && p.Severity == model.SeverityWarning && strings.Contains(p.Message, "already routed by MetaRouter demo/first") {
				found = true
			}
		}
		if !found {
			t.Errorf("no duplicate warning for %s:\n%s", name, listProblems(problems))
		}
	}
	wantCount(t, problems, 0, 2)

	t.Run("destinations that would fail", func(t *testing.T) {
		mr := metaRouter("demo", host) + "---\n" + `apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: stray, namespace: demo}
spec:
  hosts: [nowhere.example]
  routes:
  - route:
    - {destination: {host: demo.example, subset: v9}, weight: 1}
    - {destination: {host: gone.example}, weight: 1}
    - {destination: {host: demo.example, port: {number: 1234}}, weight: 1}
`
		_, problems := build(t, localOpts, serviceEntry("demo", host, ""), mr)
		wantProblem(t, problems, model.SeverityWarning, "spec.hosts[0]", `no ServiceEntry defines host "nowhere.example"`)
		wantProblem(t, problems, model.SeverityWarning, "spec.routes[0].route[0].destination.subset", `no subset "v9"`)
		wantProblem(t, problems, model.SeverityWarning, "spec.routes[0].route[1].destination.host", `"gone.example"`)
		wantProblem(t, problems, model.SeverityWarning, "spec.routes[0].route[2].destination.port.number", "no port 1234")
		wantCount(t, problems, 0, 4)
	})
}

func TestApplicationProtocols(t *testing.T) {
	se := strings.Replace(serviceEntry("demo", "demo.example", ""), "ports: [{number: 20880, name: tcp-dubbo}]",
		"ports: [{number: 20880, name: tcp-dubbo}, {number: 9000, name: tcp-metaprotocol-brpc-main}]", 1)

	// Without a codec for brpc, only that port is left out.
	snap, problems := build(t, localOpts, se)
	wantProblem(t, problems, model.SeverityError, "spec.ports[1]", `"brpc" has no codec`)
	wantCount(t, problems, 1, 0)
	svc := snap.Service("demo.example")
	if len(svc.Ports) != 1 || svc.Ports[0].Number != 20880 {
		t.Errorf("ports %+v, want 20880 only", svc.Ports)
	}

	ap := func(name, codec string) string {
		return fmt.Sprintf(`apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: ApplicationProtocol
metadata: {name: %s, namespace: istio-system}
spec: {protocol: BRPC, codec: %s}
`, name, codec)
	}
	// An ApplicationProtocol makes it known; a codec the binary lacks is worth a warning.
	snap, problems = build(t, localOpts, se, ap("brpc", "aeraki.meta_protocol.codec.brpc")+"---\n"+ap("again", "other.codec"))
	wantProblem(t, problems, model.SeverityWarning, "spec.codec", "not built into this binary")
	wantProblem(t, problems, model.SeverityWarning, "spec.protocol", "already declared by ApplicationProtocol istio-system/brpc")
	wantCount(t, problems, 0, 2)
	p := snap.Service("demo.example").Port(9000)
	if p == nil || p.App != "brpc" || p.Codec != "aeraki.meta_protocol.codec.brpc" {
		t.Errorf("port 9000 = %+v, want brpc with the declared codec", p)
	}
	if snap.Codecs["brpc"] != "aeraki.meta_protocol.codec.brpc" || snap.Codecs["dubbo"] == "" {
		t.Errorf("codecs %v", snap.Codecs)
	}
}

func TestHostDefinedTwice(t *testing.T) {
	snap, problems := build(t, localOpts,
		serviceEntry("first", "demo.example", ""),
		serviceEntry("second", "other.example, demo.example", ""))
	p := wantProblem(t, problems, model.SeverityError, "spec.hosts[1]", "already defined by ServiceEntry demo/first")
	if p.Name != "second" {
		t.Errorf("reported on %s, want second", p.Key)
	}
	if snap.Service("demo.example").Entry.Name != "first" || snap.Service("other.example") == nil {
		t.Errorf("want demo.example from first, other.example from second")
	}
}

func TestHashAndVersion(t *testing.T) {
	a, b := serviceEntry("a", "a.example", ""), metaRouter("r", "a.example")
	objs1, _ := load(t, a, b)
	// The same objects added in another order.
	var objs2 model.Objects
	for _, o := range []model.Object{objs1.MetaRouters[0], objs1.ServiceEntries[0]} {
		objs2.Add(o)
	}
	if objs1.Hash() != objs2.Hash() {
		t.Errorf("same objects, different hashes")
	}
	changed, _ := load(t, strings.Replace(a, "127.0.0.1", "127.0.0.2", 1), b)
	if changed.Hash() == objs1.Hash() {
		t.Errorf("changed endpoint, same hash")
	}
	relabelled, _ := load(t, strings.Replace(a, "namespace: demo}", "namespace: demo, labels: {x: y}}", 1), b)
	if relabelled.Hash() == objs1.Hash() {
		t.Errorf("changed labels, same hash")
	}
	snap := model.Build(7, objs1, localOpts)
	if snap.Version != 7 || snap.Hash != objs1.Hash() {
		t.Errorf("version %d hash %s, want 7 and the objects' hash", snap.Version, snap.Hash)
	}
	if again := model.Build(8, objs2, localOpts); !reflect.DeepEqual(again.Listeners[0].Address, snap.Listeners[0].Address) {
		t.Errorf("equal inputs built different listeners")
	}
}

func TestGlobalRateLimitService(t *testing.T) {
	const host = "demo.example"
	rls := `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: rls, namespace: istio-system}
spec:
  hosts: [rate-limit-server.istio-system.svc.cluster.local]
  ports:
  - {number: 8081, name: grpc, protocol: GRPC}
  - {number: 9000, name: tcp-dubbo-admin}
  resolution: STATIC
  endpoints: [{address: 127.0.0.5, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: rls, namespace: istio-system}
spec:
  host: rate-limit-server.istio-system.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
`
	router := func(cluster string) string {
		return fmt.Sprintf(`apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: demo, namespace: demo}
spec:
  hosts: [%s]
  globalRateLimit:
    domain: production
    rateLimitService: %q
    descriptors: [{property: method, descriptorKey: method}]
`, host, cluster)
	}
	const field = "spec.globalRateLimit.rateLimitService"
	tests := []struct {
		name, cluster string
		sev           model.Severity // of the one problem; ignored when msg is empty
		msg           string
		subset        string
	}{
		{name: "whole service", cluster: "outbound|8081||rate-limit-server.istio-system.svc.cluster.local"},
		{name: "a subset", cluster: "outbound|8081|v1|rate-limit-server.istio-system.svc.cluster.local", subset: "v1"},
		{"a subset without endpoints", "outbound|8081|v2|rate-limit-server.istio-system.svc.cluster.local",
			model.SeverityWarning, "has no endpoints: every check fails", "v2"},
		{"not a cluster name", "rate-limit-server:8081", model.SeverityError,
			"not a cluster name of the form outbound|PORT|SUBSET|HOST", ""},
		{"inbound", "inbound|8081||", model.SeverityError, "not a cluster name of the form", ""},
		{"bad port", "outbound|grpc||rate-limit-server.istio-system.svc.cluster.local", model.SeverityError,
			`port "grpc" is not a port number`, ""},
		{"unknown host", "outbound|8081||nowhere.example", model.SeverityError,
			`no ServiceEntry defines host "nowhere.example"`, ""},
		{"unknown port", "outbound|8082||rate-limit-server.istio-system.svc.cluster.local", model.SeverityError,
			"has no port 8082", ""},
		{"a meta-protocol port", "outbound|9000||rate-limit-server.istio-system.svc.cluster.local",
			model.SeverityError, "is a meta-protocol port (dubbo), but a rate limit service speaks gRPC", ""},
		{"unknown subset", "outbound|8081|v9|rate-limit-server.istio-system.svc.cluster.local",
			model.SeverityError, `has no subset "v9"`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, problems := build(t, localOpts, serviceEntry("demo", host, ""), rls, router(tt.cluster))
			got := snap.Service(host).RateLimitService
			// Subset v2 selecting nothing is always warned about (the service has a meta-protocol port).
			switch {
			case tt.msg == "":
				wantCount(t, problems, 0, 1)
			case tt.sev == model.SeverityError:
				wantProblem(t, problems, tt.sev, field, tt.msg)
				wantCount(t, problems, 1, 1)
			default:
				wantProblem(t, problems, tt.sev, field, tt.msg)
				wantCount(t, problems, 0, 2)
			}
			if tt.msg != "" && tt.sev == model.SeverityError {
				if got != nil {
					t.Errorf("resolved to %+v despite the error", got)
				}
				return
			}
			if got == nil || got.Cluster != tt.cluster || got.Port.Number != 8081 ||
				got.Service.Host != "rate-limit-server.istio-system.svc.cluster.local" {
				t.Fatalf("resolved to %+v", got)
			}
			if (got.Subset == nil) != (tt.subset == "") || got.Subset != nil && got.Subset.Name != tt.subset {
				t.Errorf("subset %+v, want %q", got.Subset, tt.subset)
			}
		})
	}
}
