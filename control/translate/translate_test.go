package translate_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	localratelimitv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/local_ratelimit/v1alpha"
	ratelimitv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/ratelimit/v1alpha"
	routerv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/router/v1alpha"
	mppv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/v1alpha"
	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/brpc"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/codec/sniff"
	"github.com/meltemi-mesh/meltemi/codec/thrift"
	"github.com/meltemi-mesh/meltemi/codec/trpc"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source/file"
	"github.com/meltemi-mesh/meltemi/control/translate"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

// cases are the folders under testdata: manifests in, one golden file per resource type out.
var cases = []struct {
	name  string
	about string
	// locality is the proxy's, for cases about locality failover.
	locality string
}{
	{"aeraki-example", "Aeraki's example MetaRouter: weights, mirror, mutation, hash key, rate limit (docs/metards-carrier.md)", ""},
	{"default-route", "no MetaRouter: one route named default; an allocated address", ""},
	{"method-match", "method exact, prefix, regex, and regex \"*\" / \"\" as presence", ""},
	{"attachment-match", "attributes on attachments, several per route, a route without a match", ""},
	{"weighted-subsets", "20/80 across subsets; subset clusters hold their endpoints only; endpoint weight", ""},
	{"mirror", "mirror with a percentage, and without one (all requests)", ""},
	{"mutation", "request and response mutations as headers to add", ""},
	{"consistent-hash", "hash keys from DestinationRules (top level and subset), ring hash, maglev, connect timeouts", ""},
	{"custom-protocol", "an ApplicationProtocol with its own codec; by port name and by port protocol", ""},
	{"shared-address", "two hosts on one ServiceEntry sharing two addresses", ""},
	{"local-ratelimit", "a MetaRouter with a local rate limit only: the filter before the router, the default route", ""},
	{"global-ratelimit", "local and global rate limits, and the rate limit service's gRPC cluster (HTTP/2) sent beside the services'", ""},
	{"multiple-services", "several services: localities, weights, DNS, a workload selector, a cross-service route", ""},
	{"several-protocols", "Thrift, bRPC (port named brpc: not a meta-protocol port), tRPC by port protocol, auto", ""},
	{"timeout-retry", "route timeouts (set, 0s, default) and retries (statuses, aliases, connect-failure only, off, default)", ""},
	{"fault", "delay and abort with and without percentages, every error kind as its HTTP status", ""},
	{"concurrency-limit", "a concurrency limit per route and per metadata key, in meltemi.route.v1alpha1", ""},
	{"circuit-breaker", "connection pools as thresholds, retry budget, HTTP protocol options, port-level and subset overrides, Istio's defaults", ""},
	{"outlier-detection", "outlier detection with Istio's enforcement, local-origin split and panic threshold, per subset", ""},
	{"locality-failover", "endpoint priorities by the proxy's locality with outlier detection, a failover rule, turned off", "eu-west/zone-a/sub-1"},
}

// nodeFor is the node a case is translated for: a local proxy, in the case's locality if it has one.
func nodeFor(name string) translate.Node {
	n := local()
	for _, tc := range cases {
		if tc.name == name {
			n.Locality = tc.locality
		}
	}
	return n
}

// goldenFiles are the files each case compares, one per resource type.
var goldenFiles = []string{"listeners.golden.json", "routes.golden.json", "clusters.golden.json", "endpoints.golden.json"}

func local() translate.Node { return translate.Node{ID: "local", Mode: translate.Local} }

func codecRegistry(t *testing.T) *codec.Registry {
	t.Helper()
	builtins := []codec.Registration{dubbo.Registration(), thrift.Registration(), brpc.Registration(), trpc.Registration()}
	reg, err := codec.NewRegistry(append(builtins, sniff.Registration(builtins...))...)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// load reads a case's manifests with the file source, as the controller does in local mode, and fails on any
// error-level problem (a typo in a manifest would otherwise pass unnoticed as a missing resource).
func load(t *testing.T, name string) *model.Snapshot {
	t.Helper()
	reg := codecRegistry(t)
	codecs := model.Codecs{}
	for _, n := range reg.Names() {
		r, _ := reg.Lookup(n)
		codecs[strings.ToLower(r.Protocol)] = r.Name
	}
	u, err := file.New(filepath.Join("testdata", name), file.Options{Model: model.Options{Codecs: codecs, Local: true}}).Scan()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range u.Problems {
		if p.Severity == model.SeverityError {
			t.Errorf("manifest problem: %s", p)
		} else {
			t.Logf("manifest warning: %s", p)
		}
	}
	return u.Snapshot
}

func translateCase(t *testing.T, name string) *translate.Resources {
	t.Helper()
	res, err := translate.Translate(load(t, name), nodeFor(name))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestGolden(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := translateCase(t, tc.name)
			got := goldenJSON(t, res)
			for i, f := range goldenFiles {
				path := filepath.Join("testdata", tc.name, f)
				if *update {
					if err := os.WriteFile(path, got[i], 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test ./control/translate/ -update to create it)", err)
				}
				if !bytes.Equal(got[i], want) {
					t.Errorf("%s differs from the output (%s); run with -update and review the diff:\n%s",
						path, tc.about, firstDifference(want, got[i]))
				}
			}
		})
	}
}

// TestCasesListed keeps the table and the folders in step, so that no case is silently skipped.
func TestCasesListed(t *testing.T) {
	entries, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	var listed []string
	for _, tc := range cases {
		listed = append(listed, tc.name)
	}
	slices.Sort(listed)
	if !slices.Equal(dirs, listed) {
		t.Errorf("testdata folders %v, cases %v", dirs, listed)
	}
}

// goldenJSON renders each resource list as a JSON array of resources, each wrapped in an Any as a discovery
// response carries it, so every type URL shows. protojson varies its whitespace on purpose; re-indenting
// with encoding/json makes the text stable.
func goldenJSON(t *testing.T, res *translate.Resources) [][]byte {
	t.Helper()
	lists := [][]proto.Message{
		messages(res.Listeners), messages(res.Routes), messages(res.Clusters), messages(res.Endpoints),
	}
	out := make([][]byte, len(lists))
	for i, list := range lists {
		var buf bytes.Buffer
		buf.WriteByte('[')
		for j, m := range list {
			a, err := anypb.New(m)
			if err != nil {
				t.Fatal(err)
			}
			js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(a)
			if err != nil {
				t.Fatal(err)
			}
			if j > 0 {
				buf.WriteByte(',')
			}
			buf.Write(js)
		}
		buf.WriteByte(']')
		var indented bytes.Buffer
		if err := json.Indent(&indented, buf.Bytes(), "", "  "); err != nil {
			t.Fatal(err)
		}
		indented.WriteByte('\n')
		out[i] = indented.Bytes()
	}
	return out
}

func messages[M proto.Message](list []M) []proto.Message {
	out := make([]proto.Message, len(list))
	for i, m := range list {
		out[i] = m
	}
	return out
}

// firstDifference shows the first line that differs, with its neighbours.
func firstDifference(want, got []byte) string {
	w, g := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n  want: " + wl + "\n  got:  " + gl
		}
	}
	return "(same lines, different bytes)"
}

// TestDeterministic translates each case twice from two separate reads of the manifests, and many times
// concurrently from one snapshot (which must not be modified), and wants the same bytes every time.
func TestDeterministic(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			first := wire(t, translateCase(t, tc.name))
			if second := wire(t, translateCase(t, tc.name)); !bytes.Equal(first, second) {
				t.Fatal("two translations of the same manifests differ")
			}
			snap := load(t, tc.name)
			var wg sync.WaitGroup
			outs := make([][]byte, 4)
			for i := range outs {
				wg.Go(func() {
					res, err := translate.Translate(snap, nodeFor(tc.name))
					if err != nil {
						t.Error(err)
						return
					}
					outs[i] = wire(t, res)
				})
			}
			wg.Wait()
			for i, o := range outs {
				if !bytes.Equal(first, o) {
					t.Errorf("concurrent translation %d differs", i)
				}
			}
		})
	}
}

// wire is every resource in deterministic protobuf form, in order.
func wire(t *testing.T, res *translate.Resources) []byte {
	var buf bytes.Buffer
	for _, list := range [][]proto.Message{messages(res.Listeners), messages(res.Routes), messages(res.Clusters),
		messages(res.Endpoints)} {
		for _, m := range list {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
			if err != nil {
				t.Error(err)
			}
			buf.Write(b)
		}
	}
	return buf.Bytes()
}

// Type URLs exactly as Envoy and Aeraki's data plane look them up.
const (
	listenerType       = "type.googleapis.com/envoy.config.listener.v3.Listener"
	routeType          = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	clusterType        = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	endpointType       = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	metaProtocolType   = "type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy"
	routerType         = "type.googleapis.com/aeraki.meta_protocol_proxy.filters.router.v1alpha.Router"
	localRateLimitType = "type.googleapis.com/aeraki.meta_protocol_proxy.filters.local_ratelimit.v1alpha.LocalRateLimit"
	rateLimitType      = "type.googleapis.com/aeraki.meta_protocol_proxy.filters.ratelimit.v1alpha.RateLimit"
	httpFaultType      = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
	concurrencyType    = "type.googleapis.com/meltemi.route.v1alpha1.ConcurrencyLimit"
	httpOptionsType    = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// TestTypeURLs checks that every resource and every Any inside one has the exact type URL a data plane
// expects, decodes with the Go types registered for it, and that extensions carry the config their name
// calls for.
func TestTypeURLs(t *testing.T) {
	known := map[string]bool{metaProtocolType: true, routerType: true, localRateLimitType: true, rateLimitType: true,
		httpFaultType: true, concurrencyType: true, httpOptionsType: true}
	seen := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := translateCase(t, tc.name)
			for _, r := range []struct {
				url  string
				list []proto.Message
			}{
				{listenerType, messages(res.Listeners)},
				{routeType, messages(res.Routes)},
				{clusterType, messages(res.Clusters)},
				{endpointType, messages(res.Endpoints)},
			} {
				for _, m := range r.list {
					a, err := anypb.New(m)
					if err != nil {
						t.Fatal(err)
					}
					if a.GetTypeUrl() != r.url {
						t.Errorf("resource type URL %s, want %s", a.GetTypeUrl(), r.url)
					}
					walkAnys(t, m.ProtoReflect(), func(a *anypb.Any, inner proto.Message) {
						seen[a.GetTypeUrl()] = true
						if !known[a.GetTypeUrl()] {
							t.Errorf("unexpected Any type URL %q", a.GetTypeUrl())
						}
					})
				}
			}
			for _, l := range res.Listeners {
				for _, fc := range l.GetFilterChains() {
					for _, f := range fc.GetFilters() {
						if f.GetName() != "envoy.filters.network.meta_protocol_proxy" ||
							f.GetTypedConfig().GetTypeUrl() != metaProtocolType {
							t.Errorf("listener %s: filter %q with %s", l.GetName(), f.GetName(), f.GetTypedConfig().GetTypeUrl())
						}
						mpp := &mppv1alpha.MetaProtocolProxy{}
						if err := f.GetTypedConfig().UnmarshalTo(mpp); err != nil {
							t.Fatal(err)
						}
						checkFilters(t, l.GetName(), mpp.GetMetaProtocolFilters())
					}
				}
			}
		})
	}
	for url := range known {
		if !seen[url] {
			t.Errorf("no case produces %s", url)
		}
	}
}

func checkFilters(t *testing.T, listener string, filters []*mppv1alpha.MetaProtocolFilter) {
	t.Helper()
	want := map[string]proto.Message{
		"aeraki.meta_protocol.filters.router":          &routerv1alpha.Router{},
		"aeraki.meta_protocol.filters.local_ratelimit": &localratelimitv1alpha.LocalRateLimit{},
		"aeraki.meta_protocol.filters.ratelimit":       &ratelimitv1alpha.RateLimit{},
	}
	if len(filters) == 0 || filters[len(filters)-1].GetName() != "aeraki.meta_protocol.filters.router" {
		t.Errorf("listener %s: the router is not the last filter", listener)
	}
	for _, f := range filters {
		m, ok := want[f.GetName()]
		if !ok {
			t.Errorf("listener %s: unexpected filter %q", listener, f.GetName())
			continue
		}
		if err := f.GetConfig().UnmarshalTo(m); err != nil {
			t.Errorf("listener %s: filter %q: %v", listener, f.GetName(), err)
		}
	}
}

// walkAnys calls fn for every Any reachable from m, each decoded with the global registry, and descends
// into what it holds.
func walkAnys(t *testing.T, m protoreflect.Message, fn func(*anypb.Any, proto.Message)) {
	t.Helper()
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			t.Errorf("Any %s: %v", a.GetTypeUrl(), err)
			return
		}
		if _, err := protoregistry.GlobalTypes.FindMessageByURL(a.GetTypeUrl()); err != nil {
			t.Errorf("Any %s: %v", a.GetTypeUrl(), err)
		}
		fn(a, inner)
		walkAnys(t, inner.ProtoReflect(), fn)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				walkAnys(t, l.Get(i).Message(), fn)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				walkAnys(t, mv.Message(), fn)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			walkAnys(t, v.Message(), fn)
		}
		return true
	})
}

// TestEnvoyValidation runs Envoy's own field constraints (the validate rules of its .proto files) on every
// resource: what Envoy would refuse, Aeraki's data plane refuses too.
func TestEnvoyValidation(t *testing.T) {
	type validator interface{ ValidateAll() error }
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := translateCase(t, tc.name)
			var all []validator
			for _, l := range res.Listeners {
				all = append(all, l)
			}
			for _, r := range res.Routes {
				all = append(all, r)
			}
			for _, c := range res.Clusters {
				all = append(all, c)
			}
			for _, e := range res.Endpoints {
				all = append(all, e)
			}
			for _, v := range all {
				if err := v.ValidateAll(); err != nil {
					t.Errorf("%T: %v", v, err)
				}
				// Envoy validates the typed configs inside as well, once it has decoded them.
				walkAnys(t, v.(proto.Message).ProtoReflect(), func(a *anypb.Any, inner proto.Message) {
					if iv, ok := inner.(validator); ok {
						if err := iv.ValidateAll(); err != nil {
							t.Errorf("%T in %T: %v", inner, v, err)
						}
					}
				})
			}
		})
	}
}

// TestReferences checks that the resources hang together: every route configuration a listener names
// exists, every cluster a route names exists (destinations here all name known hosts), and every EDS
// cluster has its load assignment.
func TestReferences(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := translateCase(t, tc.name)
			routes := map[string]*routev3.RouteConfiguration{}
			for _, r := range res.Routes {
				routes[r.GetName()] = r
			}
			clusters := map[string]*clusterv3.Cluster{}
			for _, c := range res.Clusters {
				clusters[c.GetName()] = c
			}
			assignments := map[string]*endpointv3.ClusterLoadAssignment{}
			for _, e := range res.Endpoints {
				assignments[e.GetClusterName()] = e
			}
			used := map[string]bool{}
			for _, l := range res.Listeners {
				name := rdsName(t, l)
				if routes[name] == nil {
					t.Errorf("listener %s names route configuration %q, which is missing", l.GetName(), name)
				}
				used[name] = true
			}
			for name, rc := range routes {
				if !used[name] {
					t.Errorf("route configuration %q is named by no listener", name)
				}
				for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
					names := []string{r.GetRoute().GetCluster()}
					for _, w := range r.GetRoute().GetWeightedClusters().GetClusters() {
						names = append(names, w.GetName())
					}
					for _, m := range r.GetRoute().GetRequestMirrorPolicies() {
						names = append(names, m.GetCluster())
					}
					for _, n := range names {
						if n != "" && clusters[n] == nil {
							t.Errorf("route %q names cluster %q, which is missing", r.GetName(), n)
						}
					}
				}
			}
			for name, c := range clusters {
				eds := c.GetType() == clusterv3.Cluster_EDS
				if eds && (assignments[name] == nil || c.GetEdsClusterConfig().GetServiceName() != name) {
					t.Errorf("EDS cluster %q has no load assignment of its name", name)
				}
				if !eds && (assignments[name] != nil || c.GetLoadAssignment() == nil) {
					t.Errorf("%s cluster %q should carry its endpoints inline only", c.GetType(), name)
				}
			}
			for name := range assignments {
				if clusters[name] == nil {
					t.Errorf("load assignment %q has no cluster", name)
				}
			}
		})
	}
}

func rdsName(t *testing.T, l *listenerv3.Listener) string {
	t.Helper()
	mpp := &mppv1alpha.MetaProtocolProxy{}
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(mpp); err != nil {
		t.Fatal(err)
	}
	return mpp.GetRds().GetRouteConfigName()
}

func TestModes(t *testing.T) {
	snap := load(t, "default-route")
	for _, tc := range []struct {
		mode    translate.Mode
		wantErr string
	}{
		{translate.Local, ""},
		{translate.Sidecar, "not supported yet"},
		{translate.Gateway, "not supported yet"},
		{"", "mode is required"},
		{"ingress", "unknown mode"},
	} {
		res, err := translate.Translate(snap, translate.Node{ID: "n", Mode: tc.mode})
		switch {
		case tc.wantErr == "" && (err != nil || len(res.Listeners) != 1):
			t.Errorf("mode %q: %v, %v", tc.mode, res, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("mode %q: error %v, want one saying %q", tc.mode, err, tc.wantErr)
		}
	}
	if _, err := translate.Translate(nil, local()); err == nil {
		t.Error("no error for a nil snapshot")
	}
}

func TestNames(t *testing.T) {
	if got := translate.ClusterName(20880, "v1", "demo.ns.svc.cluster.local"); got != "outbound|20880|v1|demo.ns.svc.cluster.local" {
		t.Errorf("ClusterName = %q", got)
	}
	if got := translate.ClusterName(20880, "", "demo"); got != "outbound|20880||demo" {
		t.Errorf("ClusterName = %q", got)
	}
	if got := translate.RouteConfigName("demo", 20880); got != "demo_20880" {
		t.Errorf("RouteConfigName = %q", got)
	}
	if got := translate.ListenerName(netip.MustParseAddrPort("127.0.0.1:20880")); got != "127.0.0.1_20880" {
		t.Errorf("ListenerName = %q", got)
	}
	if got := translate.ListenerName(netip.MustParseAddrPort("[::1]:20880")); got != "::1_20880" {
		t.Errorf("ListenerName = %q", got)
	}
}

// TestCarrierDoc keeps the example of the carrier documentation true: its two JSON blocks are the route
// configuration and the MetaProtocolProxy config the translator produces for the aeraki-example case.
func TestCarrierDoc(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "metards-carrier.md"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []any
	for _, part := range strings.Split(string(doc), "```json\n")[1:] {
		var v any
		if err := json.Unmarshal([]byte(part[:strings.Index(part, "```")]), &v); err != nil {
			t.Fatalf("JSON block %d: %v", len(blocks), err)
		}
		blocks = append(blocks, v)
	}
	if len(blocks) != 2 {
		t.Fatalf("%d JSON blocks, want 2 (the route configuration, then the MetaProtocolProxy)", len(blocks))
	}
	golden := goldenJSON(t, translateCase(t, "aeraki-example"))
	var routes, listeners []any
	if err := json.Unmarshal(golden[1], &routes); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(golden[0], &listeners); err != nil {
		t.Fatal(err)
	}
	mpp := listeners[0].(map[string]any)["filter_chains"].([]any)[0].(map[string]any)["filters"].([]any)[0].(map[string]any)["typed_config"]
	if !reflect.DeepEqual(blocks[0], routes[0]) {
		t.Error("the route configuration in docs/metards-carrier.md is not the translator's; update the doc")
	}
	if !reflect.DeepEqual(blocks[1], mpp) {
		t.Error("the MetaProtocolProxy in docs/metards-carrier.md is not the translator's; update the doc")
	}
}

// TestFaultStatuses keeps the three lists in step: the error kinds a MetaRoute may abort with, the statuses
// the carrier writes for them, and the codec's own error kinds, which the proxy reads the statuses back as.
func TestFaultStatuses(t *testing.T) {
	statuses := map[uint32]string{}
	for _, kind := range model.FaultErrorKinds {
		status, ok := translate.FaultHTTPStatus[kind]
		if !ok {
			t.Errorf("error kind %q has no status", kind)
		}
		if other, dup := statuses[status]; dup {
			t.Errorf("%q and %q share status %d, so the proxy cannot tell them apart", kind, other, status)
		}
		statuses[status] = kind
		if _, ok := codec.ParseErrorKind(kind); !ok {
			t.Errorf("error kind %q is not a codec.ErrorKind", kind)
		}
	}
	if len(translate.FaultHTTPStatus) != len(model.FaultErrorKinds) {
		t.Errorf("%d statuses for %d error kinds", len(translate.FaultHTTPStatus), len(model.FaultErrorKinds))
	}
}
