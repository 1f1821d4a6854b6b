package envoyfilter_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	networkingv1 "istio.io/api/networking/v1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	clientv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	"sigs.k8s.io/yaml"

	localratelimitv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/local_ratelimit/v1alpha"
	ratelimitv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/ratelimit/v1alpha"
	mppv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/v1alpha"
	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/brpc"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/codec/sniff"
	"github.com/meltemi-mesh/meltemi/codec/thrift"
	"github.com/meltemi-mesh/meltemi/codec/trpc"
	"github.com/meltemi-mesh/meltemi/control/envoyfilter"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source/file"
	"github.com/meltemi-mesh/meltemi/control/translate"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

// cases are the folders under testdata: manifests in, options.json (optional) for the generator, and out
// envoyfilters.yaml.golden and problems.golden.txt (what was left out, and why).
var cases = []struct {
	name  string
	about string
}{
	{"aeraki-example", "Aeraki's Dubbo example: outbound per address, inbound with the local rate limit"},
	{"rate-limits", "local rate limit with conditions and the global rate limit, on the inbound side only"},
	{"several-ports", "two hosts, two addresses and a CIDR block, ports by name, native name and protocol, targetPort, key:value annotation"},
	{"export-to", "exportTo namespaces, namespaceScoped, the app annotation, an ApplicationProtocol"},
	{"mesh-config", "access log, tracing, Aeraki's cluster name, another root namespace"},
	{"left-out", "no address, no selector, the sniffing codec, a bad annotation"},
}

func codecs(t *testing.T) model.Codecs {
	t.Helper()
	builtins := []codec.Registration{dubbo.Registration(), thrift.Registration(), brpc.Registration(), trpc.Registration()}
	reg, err := codec.NewRegistry(append(builtins, sniff.Registration(builtins...))...)
	if err != nil {
		t.Fatal(err)
	}
	out := model.Codecs{}
	for _, n := range reg.Names() {
		r, _ := reg.Lookup(n)
		out[strings.ToLower(r.Protocol)] = r.Name
	}
	return out
}

// load reads a case's manifests as a cluster's controller sees them (addresses as written, none
// allocated), failing on any error-level problem of the manifests themselves.
func load(t *testing.T, name string) (*model.Snapshot, envoyfilter.Options) {
	t.Helper()
	dir := filepath.Join("testdata", name)
	u, err := file.New(dir, file.Options{Model: model.Options{Codecs: codecs(t)}}).Scan()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range u.Problems {
		if p.Severity == model.SeverityError || p.Kind == "EnvoyFilter" {
			t.Errorf("manifest problem: %s", p)
		}
	}
	var opts envoyfilter.Options
	b, err := os.ReadFile(filepath.Join(dir, "options.json"))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		t.Fatal(err)
	default:
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&opts); err != nil {
			t.Fatalf("options.json: %v", err)
		}
	}
	return u.Snapshot, opts
}

func generate(t *testing.T, name string) ([]*clientv1alpha3.EnvoyFilter, []model.Problem) {
	t.Helper()
	snap, opts := load(t, name)
	filters, problems, err := envoyfilter.Generate(snap, opts)
	if err != nil {
		t.Fatal(err)
	}
	return filters, problems
}

func problemLines(problems []model.Problem) []byte {
	var b bytes.Buffer
	for _, p := range problems {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func TestGolden(t *testing.T) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			filters, problems := generate(t, c.name)
			out, err := envoyfilter.MarshalYAML(filters)
			if err != nil {
				t.Fatal(err)
			}
			compareGolden(t, filepath.Join("testdata", c.name, "envoyfilters.yaml.golden"), out)
			compareGolden(t, filepath.Join("testdata", c.name, "problems.golden.txt"), problemLines(problems))
		})
	}
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./control/envoyfilter -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output; got:\n%s", path, got)
	}
}

// TestCasesListed keeps the table and the folders in step, so that no case is silently skipped.
func TestCasesListed(t *testing.T) {
	entries, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	var dirs, listed []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	for _, c := range cases {
		listed = append(listed, c.name)
	}
	slices.Sort(listed)
	if !slices.Equal(dirs, listed) {
		t.Errorf("testdata folders %v, cases listed %v", dirs, listed)
	}
}

// TestAerakiStructure checks, for every generated filter, the shape Aeraki's data plane and Istio rely on:
// one REPLACE of tcp_proxy on the right listener, a TypedStruct whose value decodes strictly as
// Aeraki's MetaProtocolProxy (so no field unknown to its data plane slips in), Envoy's own validation of
// the Envoy messages inside it, RDS names matching those Meltemi's controller serves, and the chain
// ending with Aeraki's common filters.
func TestAerakiStructure(t *testing.T) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap, opts := load(t, c.name)
			filters, _, err := envoyfilter.Generate(snap, opts)
			if err != nil {
				t.Fatal(err)
			}
			cluster := opts.XDSCluster
			if cluster == "" {
				cluster = envoyfilter.DefaultXDSCluster
			}
			for _, ef := range filters {
				checkFilter(t, ef, cluster)
			}
		})
	}
}

func checkFilter(t *testing.T, ef *clientv1alpha3.EnvoyFilter, xdsCluster string) {
	t.Helper()
	name := ef.Namespace + "/" + ef.Name
	if ef.Labels[envoyfilter.ManagedByLabel] != envoyfilter.ManagedBy {
		t.Errorf("%s: labels %v", name, ef.Labels)
	}
	if len(ef.Spec.ConfigPatches) != 1 {
		t.Fatalf("%s: %d patches", name, len(ef.Spec.ConfigPatches))
	}
	cp := ef.Spec.ConfigPatches[0]
	l := cp.GetMatch().GetListener()
	if cp.ApplyTo != networkingv1alpha3.EnvoyFilter_NETWORK_FILTER || cp.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_REPLACE ||
		l.GetFilterChain().GetFilter().GetName() != envoyfilter.TCPProxyFilter || cp.GetMatch().GetContext() != networkingv1alpha3.EnvoyFilter_ANY {
		t.Errorf("%s: patch %v", name, cp)
	}
	inbound := strings.HasPrefix(ef.Name, "aeraki-inbound-")
	if inbound != (l.GetName() == envoyfilter.InboundListener) || inbound != (ef.Spec.WorkloadSelector != nil) ||
		inbound != (l.GetFilterChain().GetDestinationPort() != 0) {
		t.Errorf("%s: listener %q, selector %v, destination port %d", name, l.GetName(), ef.Spec.WorkloadSelector,
			l.GetFilterChain().GetDestinationPort())
	}
	v := cp.GetPatch().GetValue().GetFields()
	if v["name"].GetStringValue() != translate.MetaProtocolProxyFilter || len(v) != 2 {
		t.Errorf("%s: filter %v", name, v)
	}
	ts := v["typed_config"].GetStructValue().GetFields()
	if ts["@type"].GetStringValue() != envoyfilter.TypedStructType || ts["type_url"].GetStringValue() != envoyfilter.MetaProtocolProxyType || len(ts) != 3 {
		t.Errorf("%s: typed_config %v", name, ts)
	}
	raw, err := protojson.Marshal(ts["value"].GetStructValue())
	if err != nil {
		t.Fatal(err)
	}
	mpp := &mppv1alpha.MetaProtocolProxy{}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(raw, mpp); err != nil {
		t.Fatalf("%s: the value is not a MetaProtocolProxy: %v\n%s", name, err, raw)
	}
	if mpp.GetProtocol() != nil || mpp.GetApplicationProtocol() == "" || mpp.GetCodec().GetName() == "" {
		t.Errorf("%s: protocol fields %v / %q / %v", name, mpp.GetProtocol(), mpp.GetApplicationProtocol(), mpp.GetCodec())
	}
	for _, al := range mpp.GetAccessLog() {
		if err := al.ValidateAll(); err != nil {
			t.Errorf("%s: access log: %v", name, err)
		}
	}
	if inbound {
		rc := mpp.GetRouteConfig()
		want := envoyfilter.InboundCluster(l.GetFilterChain().GetDestinationPort())
		if mpp.GetStatPrefix() != want || rc.GetName() != want || len(rc.GetRoutes()) != 1 || rc.GetRoutes()[0].GetRoute().GetCluster() != want {
			t.Errorf("%s: inbound route %v, stat prefix %q", name, rc, mpp.GetStatPrefix())
		}
	} else {
		rds := mpp.GetRds()
		if err := rds.GetConfigSource().ValidateAll(); err != nil {
			t.Errorf("%s: config source: %v", name, err)
		}
		grpc := rds.GetConfigSource().GetApiConfigSource().GetGrpcServices()
		if len(grpc) != 1 || grpc[0].GetEnvoyGrpc().GetClusterName() != xdsCluster {
			t.Errorf("%s: config source %v", name, rds.GetConfigSource())
		}
		// The stat prefix is outbound|port||host and the route name host_port, both of the owning host.
		parts := strings.Split(mpp.GetStatPrefix(), "|")
		if len(parts) != 4 || rds.GetRouteConfigName() != parts[3]+"_"+parts[1] {
			t.Errorf("%s: route %q, stat prefix %q", name, rds.GetRouteConfigName(), mpp.GetStatPrefix())
		}
	}
	chain := mpp.GetMetaProtocolFilters()
	var names []string
	for _, f := range chain {
		names = append(names, f.GetName())
		if f.GetConfig() == nil {
			continue
		}
		m, err := f.GetConfig().UnmarshalNew()
		if err != nil {
			t.Errorf("%s: filter %s: %v", name, f.GetName(), err)
			continue
		}
		switch m := m.(type) {
		case *localratelimitv1alpha.LocalRateLimit:
			for _, c := range m.GetConditions() {
				for _, hm := range c.GetMatch().GetMetadata() {
					if err := hm.ValidateAll(); err != nil {
						t.Errorf("%s: local rate limit matcher: %v", name, err)
					}
				}
			}
		case *ratelimitv1alpha.RateLimit:
			if err := m.GetRateLimitService().ValidateAll(); err != nil {
				t.Errorf("%s: rate limit service: %v", name, err)
			}
		}
	}
	common := []string{envoyfilter.MetadataExchangeFilter, envoyfilter.IstioStatsFilter, translate.RouterFilter}
	if len(names) < 3 || !slices.Equal(names[len(names)-3:], common) || (!inbound && len(names) != 3) {
		t.Errorf("%s: filters %v", name, names)
	}
}

// TestYAMLReadsBack reads the YAML as Istio's types do (kubectl and the API server take the same JSON) and
// gets the generated objects back.
func TestYAMLReadsBack(t *testing.T) {
	for _, c := range cases {
		filters, _ := generate(t, c.name)
		out, err := envoyfilter.MarshalYAML(filters)
		if err != nil {
			t.Fatal(err)
		}
		docs := strings.Split(string(out), "\n---\n")
		if len(docs) != len(filters) && len(filters) > 0 {
			t.Fatalf("%s: %d documents for %d filters", c.name, len(docs), len(filters))
		}
		for i, doc := range docs {
			if len(filters) == 0 {
				break
			}
			var got clientv1alpha3.EnvoyFilter
			if err := yaml.UnmarshalStrict([]byte(doc), &got); err != nil {
				t.Fatalf("%s: document %d: %v", c.name, i, err)
			}
			want := filters[i]
			if got.Name != want.Name || got.Namespace != want.Namespace || got.Kind != "EnvoyFilter" ||
				got.APIVersion != "networking.istio.io/v1alpha3" || !proto.Equal(&got.Spec, &want.Spec) {
				t.Errorf("%s: document %d reads back as %s/%s %v", c.name, i, got.Namespace, got.Name, &got.Spec)
			}
		}
	}
}

func TestDeterministic(t *testing.T) {
	for _, c := range cases {
		a, _ := generate(t, c.name)
		b, _ := generate(t, c.name)
		ya, err := envoyfilter.MarshalYAML(a)
		if err != nil {
			t.Fatal(err)
		}
		yb, err := envoyfilter.MarshalYAML(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ya, yb) {
			t.Errorf("%s: two generations differ", c.name)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	snap, _ := load(t, "aeraki-example")
	for _, c := range []struct {
		opts envoyfilter.Options
		want string // in the error; "" for valid options
	}{
		{envoyfilter.Options{}, ""},
		{envoyfilter.Options{XDSCluster: "aeraki-xds", RootNamespace: "istio-config"}, ""},
		{envoyfilter.Options{XDSCluster: "my cluster"}, "xdsCluster"},
		{envoyfilter.Options{RootNamespace: "Istio_System"}, "rootNamespace"},
		{envoyfilter.Options{AccessLog: &envoyfilter.AccessLog{}}, "accessLog.path"},
		{envoyfilter.Options{AccessLog: &envoyfilter.AccessLog{Path: "/dev/stdout", Encoding: "XML"}}, "accessLog.encoding"},
		{envoyfilter.Options{AccessLog: &envoyfilter.AccessLog{Path: "/dev/stdout", Encoding: "json", Format: "[%START_TIME%]"}}, "accessLog.format"},
		{envoyfilter.Options{AccessLog: &envoyfilter.AccessLog{Path: "/dev/stdout", Encoding: "json", Format: `{"t":"%START_TIME%"}`}}, ""},
		{envoyfilter.Options{Tracing: &envoyfilter.Tracing{Sampling: 101}}, "tracing.sampling"},
	} {
		_, _, err := envoyfilter.Generate(snap, c.opts)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c.opts, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: error %v, want one naming %s", c.opts, err, c.want)
		}
	}
}

// TestJSONAccessLog checks the JSON encoding, which no golden case shows: Aeraki's fields by default, the
// mesh config's own otherwise.
func TestJSONAccessLog(t *testing.T) {
	snap, _ := load(t, "aeraki-example")
	for _, c := range []struct {
		format string
		want   []string
	}{
		{"", []string{"start_time", "route_name", "application_protocol", "response_code", "upstream_cluster"}},
		{`{"when": "%START_TIME%", "what": "%ROUTE_NAME%"}`, []string{"when", "what"}},
	} {
		opts := envoyfilter.Options{AccessLog: &envoyfilter.AccessLog{Path: "/var/log/mesh.log", Encoding: "JSON", Format: c.format}}
		filters, _, err := envoyfilter.Generate(snap, opts)
		if err != nil {
			t.Fatal(err)
		}
		value := filters[0].Spec.ConfigPatches[0].GetPatch().GetValue().GetFields()["typed_config"].GetStructValue().GetFields()["value"]
		logs := value.GetStructValue().GetFields()["accessLog"].GetListValue().GetValues()
		if len(logs) != 1 {
			t.Fatalf("access logs %v", logs)
		}
		cfg := logs[0].GetStructValue().GetFields()["typedConfig"].GetStructValue().GetFields()
		fields := cfg["logFormat"].GetStructValue().GetFields()["jsonFormat"].GetStructValue().GetFields()
		if cfg["path"].GetStringValue() != "/var/log/mesh.log" {
			t.Errorf("path %v", cfg["path"])
		}
		for _, k := range c.want {
			if _, ok := fields[k]; !ok {
				t.Errorf("format %q: no field %q in %v", c.format, k, structpb.NewStructValue(&structpb.Struct{Fields: fields}))
			}
		}
		if c.format != "" && len(fields) != len(c.want) {
			t.Errorf("format %q: fields %v", c.format, fields)
		}
	}
}

// A Kubernetes Service reaches the model as a ServiceEntry of kind Service (control/source/kube): its cluster
// IP names the outbound listener, as Istio names it; its pods are selected only by Aeraki's annotation, and
// problems name the Service's own fields.
func TestKubernetesService(t *testing.T) {
	service := func(annotations map[string]string) *model.ServiceEntry {
		return &model.ServiceEntry{
			Meta: model.Meta{Kind: "Service", Namespace: "shop", Name: "demo", Annotations: annotations,
				FieldOf: func(f string) string { return strings.Replace(f, "spec.workloadSelector", "spec.selector", 1) }},
			Spec: &networkingv1.ServiceEntry{
				Hosts:      []string{"demo.shop.svc.cluster.local"},
				Addresses:  []string{"10.96.0.10"},
				Ports:      []*networkingv1.ServicePort{{Number: 20880, Name: "tcp-dubbo", TargetPort: 20881}},
				Resolution: networkingv1.ServiceEntry_STATIC,
				Endpoints:  []*networkingv1.WorkloadEntry{{Address: "10.244.0.5", Ports: map[string]uint32{"tcp-dubbo": 20881}}},
			},
		}
	}
	for _, c := range []struct {
		annotations map[string]string
		names       []string
		problems    []string
	}{
		{nil, []string{"aeraki-outbound-demo.shop.svc.cluster.local-10.96.0.10-20880"},
			[]string{"Service shop/demo: metadata.annotations.workloadSelector: warning: no workloadSelector annotation"}},
		{map[string]string{"workloadSelector": "app:demo"},
			[]string{"aeraki-inbound-demo.shop.svc.cluster.local-20880", "aeraki-outbound-demo.shop.svc.cluster.local-10.96.0.10-20880"}, nil},
	} {
		snap := model.Build(1, model.Objects{ServiceEntries: []*model.ServiceEntry{service(c.annotations)}},
			model.Options{Codecs: codecs(t)})
		filters, problems, err := envoyfilter.Generate(snap, envoyfilter.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, ef := range filters {
			names = append(names, ef.Name)
			checkFilter(t, ef, envoyfilter.DefaultXDSCluster)
		}
		if !slices.Equal(names, c.names) {
			t.Errorf("annotations %v: filters %v, want %v", c.annotations, names, c.names)
		}
		if len(problems) != len(c.problems) {
			t.Fatalf("annotations %v: problems %v", c.annotations, problems)
		}
		for i, p := range problems {
			if !strings.HasPrefix(p.String(), c.problems[i]) {
				t.Errorf("problem %q, want %q...", p, c.problems[i])
			}
		}
		if len(filters) == 2 {
			port := filters[0].Spec.ConfigPatches[0].GetMatch().GetListener().GetFilterChain().GetDestinationPort()
			if port != 20881 {
				t.Errorf("inbound destination port %d, want the target port 20881", port)
			}
		}
	}
}
