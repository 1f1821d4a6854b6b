package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/test/e2e/dubbopeer"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// versionOf returns the version label that starts a provider's answer ("v1:hello x" is "v1").
func versionOf(answer string) string {
	v, _, _ := strings.Cut(answer, ":")
	return v
}

// methodIs matches the Dubbo method name.
func methodIs(kind proxy.MatchKind, value string) proxy.MetadataMatcher {
	return proxy.MetadataMatcher{Key: "method", Kind: kind, Value: value}
}

// TestDubboCallsThroughProxy sends calls of every shape through a catch-all route and checks the answers
// arrive intact.
func TestDubboCallsThroughProxy(t *testing.T) {
	t.Parallel()
	v1 := dubbopeer.StartProvider(t, "v1")
	cl := greetCluster("", endpointOf(v1))
	px := startProxy(t, &proxy.Config{
		Listeners: []proxy.Listener{dubboListener(inbound, toCluster(cl.Name))},
		Clusters:  []proxy.Cluster{cl},
	})
	c := dubbopeer.NewConsumer(t, px.Addr(inbound))
	ctx := ctxTimeout(t)

	big := strings.Repeat("0123456789abcdef", 4096) // 64 KiB
	// Hessian counts string lengths in UTF-16 units: a character outside the BMP is two of them.
	unicode := "héllo wörld ☃ 𝄞 " + strings.Repeat("𝄞", 300)
	tests := []struct {
		name string
		call func() (string, error)
		want string
	}{
		{"sayHello", func() (string, error) { return c.SayHello(ctx, "meltemi") }, "v1:hello meltemi"},
		{"echo empty", func() (string, error) { return c.Echo(ctx, "") }, ""},
		{"echo unicode", func() (string, error) { return c.Echo(ctx, unicode) }, unicode},
		{"echo 64 KiB", func() (string, error) { return c.Echo(ctx, big) }, big},
		{"join three arguments", func() (string, error) { return c.Join(ctx, "a", -7, "z") }, "v1:a--7-z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.call()
			if err != nil {
				t.Fatalf("call failed: %v", err)
			}
			if got != tt.want {
				t.Fatalf("answer = %q (%d bytes); want %q (%d bytes)", clip(got), len(got), clip(tt.want),
					len(tt.want))
			}
		})
	}
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// TestDubboRouting routes by method (exact, prefix, regex), by an attachment, by interface with an inverted
// match, and checks that a request no route matches gets a "service not found" error reply.
func TestDubboRouting(t *testing.T) {
	t.Parallel()
	v1, v2 := dubbopeer.StartProvider(t, "v1"), dubbopeer.StartProvider(t, "v2")
	c1, c2 := greetCluster("v1", endpointOf(v1)), greetCluster("v2", endpointOf(v2))
	routes := []proxy.Route{
		{Name: "canary", Cluster: c2.Name,
			Match: []proxy.MetadataMatcher{{Key: "x-canary", Kind: proxy.MatchExact, Value: "yes"}}},
		{Name: "other-interfaces", Cluster: c2.Name,
			Match: []proxy.MetadataMatcher{{Key: "interface", Kind: proxy.MatchExact, Value: dubbopeer.Interface,
				Invert: true}}},
		// Regexes match the whole value, so this one never matches "inspect".
		{Name: "unanchored", Cluster: c2.Name, Match: []proxy.MetadataMatcher{methodIs(proxy.MatchRegex, "nspec")}},
		{Name: "hello", Cluster: c1.Name, Match: []proxy.MetadataMatcher{methodIs(proxy.MatchExact, "sayHello")}},
		{Name: "join", Cluster: c2.Name, Match: []proxy.MetadataMatcher{methodIs(proxy.MatchPrefix, "jo")}},
		{Name: "inspect", Cluster: c1.Name, Match: []proxy.MetadataMatcher{methodIs(proxy.MatchRegex, "insp[a-z]+")}},
	}
	px := startProxy(t, &proxy.Config{
		Listeners: []proxy.Listener{dubboListener(inbound, routes...)},
		Clusters:  []proxy.Cluster{c1, c2},
	})
	c := dubbopeer.NewConsumer(t, px.Addr(inbound))
	ctx := ctxTimeout(t)
	canary := func(v string) context.Context {
		return dubbopeer.WithAttachments(ctx, map[string]string{"x-canary": v})
	}

	tests := []struct {
		name string
		call func() (string, error)
		want string // version label
	}{
		{"method exact", func() (string, error) { return c.SayHello(ctx, "a") }, "v1"},
		{"attachment match", func() (string, error) { return c.SayHello(canary("yes"), "b") }, "v2"},
		{"attachment mismatch", func() (string, error) { return c.SayHello(canary("no"), "c") }, "v1"},
		{"method prefix", func() (string, error) { return c.Join(ctx, "x", 1, "y") }, "v2"},
		{"method regex", func() (string, error) {
			r, err := c.Inspect(ctx, "d")
			return r.Version + ":", err
		}, "v1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.call()
			if err != nil {
				t.Fatalf("call failed: %v", err)
			}
			if v := versionOf(got); v != tt.want {
				t.Fatalf("answered by %q (%q); want %q", v, got, tt.want)
			}
		})
	}

	t.Run("no route, real consumer", func(t *testing.T) {
		start := time.Now()
		got, err := c.Echo(ctx, "nowhere")
		if err == nil {
			t.Fatalf("echo matched no route but answered %q", got)
		}
		// An error reply, not a timeout of the consumer.
		if d := time.Since(start); d > dubbopeer.RequestTimeout/2 {
			t.Fatalf("error came after %v (a timeout?): %v", d, err)
		}
		t.Logf("consumer reports: %v", err)
	})
	t.Run("no route, raw frame", func(t *testing.T) {
		rc := dubbopeer.DialRaw(t, px.Addr(inbound))
		rc.Write(dubbopeer.RequestFrame(41, true, dubbopeer.MethodEcho, []any{"nowhere"}, nil))
		f := rc.ReadFrame()
		if f.ID != 41 || f.Flag != dubbopeer.FlagResponse || f.Status != dubbopeer.StatusServiceNotFound {
			t.Fatalf("reply = %v; want a response with id 41 and status %d", f, dubbopeer.StatusServiceNotFound)
		}
		if _, err := f.Value(); err == nil {
			t.Fatalf("reply %v carries no error message", f)
		}
		// The connection stays usable after a local reply.
		rc.Write(dubbopeer.RequestFrame(42, true, dubbopeer.MethodSayHello, []any{"again"}, nil))
		if f := rc.ReadFrame(); f.ID != 42 || f.Status != dubbopeer.StatusOK {
			t.Fatalf("next reply = %v; want id 42 status 20", f)
		}
	})
}

// TestDubboVersionSubsets sends to clusters that both list every endpoint and keep one version by subset.
func TestDubboVersionSubsets(t *testing.T) {
	t.Parallel()
	v1, v2 := dubbopeer.StartProvider(t, "v1"), dubbopeer.StartProvider(t, "v2")
	eps := []proxy.Endpoint{endpointOf(v1), endpointOf(v2)}
	c1, c2, all := greetCluster("v1", eps...), greetCluster("v2", eps...), greetCluster("", eps...)
	subsetIs := func(v string) []proxy.MetadataMatcher {
		return []proxy.MetadataMatcher{{Key: "x-subset", Kind: proxy.MatchExact, Value: v}}
	}
	px := startProxy(t, &proxy.Config{
		Listeners: []proxy.Listener{dubboListener(inbound,
			proxy.Route{Name: "v1", Match: subsetIs("v1"), Cluster: c1.Name},
			proxy.Route{Name: "v2", Match: subsetIs("v2"), Cluster: c2.Name},
			toCluster(all.Name))},
		Clusters: []proxy.Cluster{c1, c2, all},
	})
	c := dubbopeer.NewConsumer(t, px.Addr(inbound))
	ctx := ctxTimeout(t)

	for _, subset := range []string{"v1", "v2", ""} {
		name := subset
		if name == "" {
			name = "no subset"
		}
		t.Run(name, func(t *testing.T) {
			callCtx := ctx
			if subset != "" {
				callCtx = dubbopeer.WithAttachments(ctx, map[string]string{"x-subset": subset})
			}
			seen := map[string]int{}
			for i := range 20 {
				got, err := c.SayHello(callCtx, fmt.Sprint(i))
				if err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				seen[versionOf(got)]++
			}
			switch {
			case subset != "" && (len(seen) != 1 || seen[subset] != 20):
				t.Fatalf("answers by version = %v; want all 20 from %s", seen, subset)
			case subset == "" && (seen["v1"] == 0 || seen["v2"] == 0):
				t.Fatalf("answers by version = %v; want both versions from the cluster without subset", seen)
			}
		})
	}
}

// TestDubboWeightedSplit checks a 20/80 split over many calls against a binomial bound.
func TestDubboWeightedSplit(t *testing.T) {
	t.Parallel()
	v1, v2 := dubbopeer.StartProvider(t, "v1"), dubbopeer.StartProvider(t, "v2")
	c1, c2 := greetCluster("v1", endpointOf(v1)), greetCluster("v2", endpointOf(v2))
	px := startProxy(t, &proxy.Config{
		Listeners: []proxy.Listener{dubboListener(inbound, proxy.Route{Name: "split",
			WeightedClusters: []proxy.WeightedCluster{{Name: c1.Name, Weight: 20}, {Name: c2.Name, Weight: 80}}})},
		Clusters: []proxy.Cluster{c1, c2},
	})
	c := dubbopeer.NewConsumer(t, px.Addr(inbound))
	ctx := ctxTimeout(t)

	const n, p = 2000, 0.2
	// 4.5 standard deviations: a correct split falls outside about once in 150,000 runs, while a 30/70 split
	// (mean 600, 11 deviations away) always fails.
	sigma := math.Sqrt(n * p * (1 - p))
	lo, hi := int(math.Ceil(n*p-4.5*sigma)), int(math.Floor(n*p+4.5*sigma))

	var v1Count, v2Count, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	const workers = 16
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				got, err := c.SayHello(ctx, fmt.Sprint(i))
				switch {
				case err != nil:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				case versionOf(got) == "v1":
					v1Count.Add(1)
				case versionOf(got) == "v2":
					v2Count.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d calls failed, first: %v", failed.Load(), n, firstErr.Load())
	}
	got := int(v1Count.Load())
	t.Logf("v1 %d, v2 %d of %d (v1 must be within [%d, %d])", got, v2Count.Load(), n, lo, hi)
	if got+int(v2Count.Load()) != n || got < lo || got > hi {
		t.Fatalf("v1 answered %d and v2 %d of %d calls; want v1 within [%d, %d] for a 20/80 split", got,
			v2Count.Load(), n, lo, hi)
	}
}

// TestDubboRequestMutation checks that attachments a route sets arrive at the provider, overriding the
// consumer's, next to the consumer's own.
func TestDubboRequestMutation(t *testing.T) {
	t.Parallel()
	v1 := dubbopeer.StartProvider(t, "v1")
	cl := greetCluster("v1", endpointOf(v1))
	route := toCluster(cl.Name)
	route.RequestMutation = []codec.KeyValue{{Key: "x-meltemi-mutated", Value: "yes"},
		{Key: "x-override", Value: "from-proxy"}}
	px := startProxy(t, &proxy.Config{
		Listeners: []proxy.Listener{dubboListener(inbound, route)},
		Clusters:  []proxy.Cluster{cl},
	})
	c := dubbopeer.NewConsumer(t, px.Addr(inbound))
	ctx := ctxTimeout(t)

	// The argument before the attachments has characters outside the BMP, so a codec that rewrites the map
	// must skip it by UTF-16 units.
	tag := "tag-☃-𝄞-" + strings.Repeat("𝄞x", 500)
	tests := []struct {
		name        string
		attachments map[string]string
		want        map[string]string
	}{
		{"no consumer attachments", nil,
			map[string]string{"x-meltemi-mutated": "yes", "x-override": "from-proxy"}},
		{"consumer attachments kept and overridden",
			map[string]string{"x-override": "from-consumer", "x-keep": "kept"},
			map[string]string{"x-meltemi-mutated": "yes", "x-override": "from-proxy", "x-keep": "kept"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			callCtx := ctx
			if tt.attachments != nil {
				callCtx = dubbopeer.WithAttachments(ctx, tt.attachments)
			}
			r, err := c.Inspect(callCtx, tag)
			if err != nil {
				t.Fatalf("inspect: %v", err)
			}
			if r.Tag != tag {
				t.Fatalf("provider got argument %q; want %q", clip(r.Tag), clip(tag))
			}
			for k, v := range tt.want {
				if r.Attachments[k] != v {
					t.Errorf("attachment %q = %q; want %q (provider saw %v)", k, r.Attachments[k], v, r.Attachments)
				}
			}
		})
	}
}

// TestDubboResponseMutation checks that attachments a route sets on responses reach a real consumer, which
// reads them from the response while the answer stays intact: added to the attachments a dubbo-go provider
// sends, and to a response that had none (a provider of Dubbo before 2.6.3); that routes without a mutation
// add nothing; and that a client whose requests carry a Dubbo version older than 2.0.2 gets the response as
// the provider wrote it, since it cannot read response attachments.
func TestDubboResponseMutation(t *testing.T) {
	t.Parallel()
	v1, legacy := dubbopeer.StartProvider(t, "v1"), dubbopeer.StartLegacyProvider(t)
	cl := greetCluster("v1", endpointOf(v1))
	legacyCluster := proxy.Cluster{Name: "outbound|20880|legacy|" + greetHost, Endpoints: []proxy.Endpoint{{Address: legacy.Addr}}}
	mutation := []codec.KeyValue{{Key: "x-served-by", Value: "meltemi"}, {Key: "x-route", Value: "mutated"}}
	toLegacy := proxy.Route{Name: "legacy", Cluster: legacyCluster.Name, ResponseMutation: mutation,
		Match: []proxy.MetadataMatcher{{Key: "x-legacy", Kind: proxy.MatchExact, Value: "yes"}}}
	toV1 := proxy.Route{Name: "mutated", Cluster: cl.Name, ResponseMutation: mutation,
		Match: []proxy.MetadataMatcher{{Key: "method", Kind: proxy.MatchRegex, Value: "sayHello|echo"}}}
	px := startProxy(t, &proxy.Config{
		Listeners: []proxy.Listener{dubboListener(inbound, toLegacy, toV1, toCluster(cl.Name))},
		Clusters:  []proxy.Cluster{cl, legacyCluster},
	})
	c := dubbopeer.NewConsumer(t, px.Addr(inbound))
	ctx := ctxTimeout(t)

	big := strings.Repeat("0123456789abcdef", 4096) // 64 KiB
	unicode := "héllo ☃ " + strings.Repeat("𝄞", 300)
	// A server puts the protocol version in every attachment map it writes; so does the proxy when it writes
	// the first.
	mutated := map[string]string{"x-served-by": "meltemi", "x-route": "mutated", "dubbo": "2.0.2"}
	tests := []struct {
		name string
		call func(ctx context.Context) (string, error)
		want string
		atts map[string]string // the response attachments the consumer reads; nil for none of the mutation's
	}{
		{"sayHello", func(ctx context.Context) (string, error) { return c.SayHello(ctx, "meltemi") }, "v1:hello meltemi", mutated},
		{"echo 64 KiB", func(ctx context.Context) (string, error) { return c.Echo(ctx, big) }, big, mutated},
		{"echo outside the BMP", func(ctx context.Context) (string, error) { return c.Echo(ctx, unicode) }, unicode, mutated},
		{"echo empty", func(ctx context.Context) (string, error) { return c.Echo(ctx, "") }, "", mutated},
		{"a provider that sends no attachments", func(ctx context.Context) (string, error) {
			ctx = dubbopeer.WithAttachments(ctx, map[string]string{"x-legacy": "yes"})
			return c.SayHello(ctx, "old")
		}, "legacy:hello old", mutated},
		{"a route without a mutation", func(ctx context.Context) (string, error) { return c.Join(ctx, "a", 1, "b") }, "v1:a-1-b", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			callCtx, resp := dubbopeer.WithResponseAttachments(ctx)
			got, err := tt.call(callCtx)
			if err != nil {
				t.Fatalf("call failed: %v", err)
			}
			if got != tt.want {
				t.Fatalf("answer = %q (%d bytes); want %q (%d bytes)", clip(got), len(got), clip(tt.want), len(tt.want))
			}
			atts := resp.Get()
			if atts == nil {
				t.Fatal("the consumer filter saw no response")
			}
			t.Logf("response attachments: %v", atts)
			for k, v := range tt.atts {
				if atts[k] != v {
					t.Errorf("response attachment %q = %q; want %q (consumer read %v)", k, atts[k], v, atts)
				}
			}
			if tt.atts == nil {
				if _, ok := atts["x-served-by"]; ok {
					t.Errorf("a route without a response mutation added attachments: %v", atts)
				}
			}
		})
	}

	// On the wire. The dubbo-go provider answers a client of protocol 2.0.2 with RESPONSE_VALUE_WITH_ATTACHMENTS
	// (the request's attachments, echoed), which the route edits, and one that sends an older version with
	// RESPONSE_VALUE, which stays as it is. The legacy provider always answers RESPONSE_VALUE, which becomes
	// RESPONSE_VALUE_WITH_ATTACHMENTS for a client of protocol 2.0.2.
	rc := dubbopeer.DialRaw(t, px.Addr(inbound))
	for i, tt := range []struct {
		provider string
		version  string
		wantType int32
		atts     map[string]string
	}{
		{"v1", "2.0.2", 4, mutated},
		{"v1", "2.5.3", 1, nil},
		{"legacy", "2.0.2", 4, mutated},
		{"legacy", "2.5.3", 1, nil},
	} {
		id := uint64(100 + i)
		var route map[string]string
		if tt.provider == "legacy" {
			route = map[string]string{"x-legacy": "yes"}
		}
		rc.Write(dubbopeer.RequestFrameVersion(tt.version, id, true, dubbopeer.MethodSayHello, []any{"raw"}, route))
		f := rc.ReadFrame()
		if f.ID != id || f.Status != dubbopeer.StatusOK {
			t.Fatalf("%s, dubbo %s: reply %v; want id %d status 20", tt.provider, tt.version, f, id)
		}
		typ, err := f.ResponseType()
		if err != nil || typ != tt.wantType {
			t.Errorf("%s, dubbo %s: response type %d (%v); want %d", tt.provider, tt.version, typ, err, tt.wantType)
		}
		if v, err := f.Value(); err != nil || v != tt.provider+":hello raw" {
			t.Errorf("%s, dubbo %s: value %v (%v); want the provider's answer", tt.provider, tt.version, v, err)
		}
		atts, err := f.Attachments()
		if err != nil || tt.atts == nil && atts != nil {
			t.Errorf("%s, dubbo %s: attachments %v (%v); want none", tt.provider, tt.version, atts, err)
		}
		for k, v := range tt.atts {
			if atts[k] != v {
				t.Errorf("%s, dubbo %s: response attachment %q = %q; want %q (reply carries %v)", tt.provider, tt.version, k,
					atts[k], v, atts)
			}
		}
	}
}

// TestDubboOneway checks that oneway requests reach the provider and that the proxy answers none of them.
func TestDubboOneway(t *testing.T) {
	t.Parallel()
	v1 := dubbopeer.StartProvider(t, "v1")
	cl := greetCluster("v1", endpointOf(v1))
	px := startProxy(t, &proxy.Config{
		Listeners: []proxy.Listener{dubboListener(inbound, toCluster(cl.Name))},
		Clusters:  []proxy.Cluster{cl},
	})
	c := dubbopeer.NewConsumer(t, px.Addr(inbound))
	ctx := ctxTimeout(t)
	notified := func(tag string) func() bool {
		return func() bool {
			n, err := c.Notified(ctx, tag)
			return err == nil && n == 1
		}
	}

	t.Run("real consumer", func(t *testing.T) {
		if err := c.Notify(ctx, "from-consumer"); err != nil {
			t.Fatalf("notify: %v", err)
		}
		dubbopeer.WaitFor(t, 10*time.Second, "the provider to receive notify(from-consumer)",
			notified("from-consumer"))
	})
	t.Run("nothing sent back", func(t *testing.T) {
		rc := dubbopeer.DialRaw(t, px.Addr(inbound))
		rc.Write(dubbopeer.RequestFrame(11, false, dubbopeer.MethodNotify, []any{"from-raw"}, nil))
		dubbopeer.WaitFor(t, 10*time.Second, "the provider to receive notify(from-raw)", notified("from-raw"))
		// The proxy handles a connection's frames in order: had it answered the oneway request, that answer
		// would come before the heartbeat's.
		rc.Write(dubbopeer.HeartbeatFrame(12))
		if f := rc.ReadFrame(); f.ID != 12 || f.Flag != dubbopeer.FlagHeartbeatResponse {
			t.Fatalf("first frame back = %v; want the heartbeat answer (id 12), nothing for the oneway request", f)
		}
	})
}

// TestDubboHeartbeat checks that the proxy answers heartbeats itself and forwards none.
func TestDubboHeartbeat(t *testing.T) {
	t.Parallel()
	v1 := dubbopeer.StartProvider(t, "v1")
	cl := greetCluster("v1", endpointOf(v1))
	px := startProxy(t, &proxy.Config{
		Listeners: []proxy.Listener{dubboListener(inbound, toCluster(cl.Name))},
		Clusters:  []proxy.Cluster{cl},
	})
	rc := dubbopeer.DialRaw(t, px.Addr(inbound))

	// Three heartbeats in one write, as a busy peer's writes coalesce.
	ids := []uint64{7, 1 << 40, 9}
	var batch []byte
	for _, id := range ids {
		batch = append(batch, dubbopeer.HeartbeatFrame(id)...)
	}
	rc.Write(batch)
	for _, id := range ids {
		f := rc.ReadFrame()
		if f.Flag != dubbopeer.FlagHeartbeatResponse || f.Status != dubbopeer.StatusOK || f.ID != id {
			t.Fatalf("heartbeat answer = %v; want flag %#x status %d id %d", f, dubbopeer.FlagHeartbeatResponse,
				dubbopeer.StatusOK, id)
		}
		if string(f.Body) != "N" {
			t.Errorf("heartbeat answer body = %q; want a Hessian null", f.Body)
		}
	}
	fams := px.Metrics()
	if n := fams.Sum("meltemi_proxy_upstream_connects_total", nil); n != 0 {
		t.Fatalf("heartbeats caused %v upstream connections; want none:\n%s", n,
			fams.Describe("meltemi_proxy_upstream_connects_total"))
	}
	if n := fams.Sum("istio_requests_total", nil); n != 0 {
		t.Fatalf("heartbeats counted as %v requests; want none:\n%s", n, fams.Describe("istio_requests_total"))
	}

	// The same connection then carries a call.
	rc.Write(dubbopeer.RequestFrame(10, true, dubbopeer.MethodSayHello, []any{"after heartbeats"}, nil))
	f := rc.ReadFrame()
	if v, err := f.Value(); f.ID != 10 || err != nil || v != "v1:hello after heartbeats" {
		t.Fatalf("reply = %v (value %v, %v); want id 10 answered by v1", f, v, err)
	}
}

// TestDubboMultiplexing sends many concurrent calls over one consumer connection and checks each caller gets
// its own answer, over one upstream connection.
func TestDubboMultiplexing(t *testing.T) {
	t.Parallel()
	v1 := dubbopeer.StartProvider(t, "v1")
	cl := greetCluster("v1", endpointOf(v1))
	px := startProxy(t, &proxy.Config{
		Listeners: []proxy.Listener{dubboListener(inbound, toCluster(cl.Name))},
		Clusters:  []proxy.Cluster{cl},
	})
	c := dubbopeer.NewConsumer(t, px.Addr(inbound))
	ctx := ctxTimeout(t)

	const callers = 64
	var mu sync.Mutex
	remotes := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	start := make(chan struct{})
	for i := range callers {
		wg.Go(func() {
			<-start
			// Distinct tags of distinct lengths, so a mixed-up reply cannot pass for the right one.
			tag := fmt.Sprintf("caller-%02d-%s", i, strings.Repeat("x", i*37))
			r, err := c.Inspect(ctx, tag)
			switch {
			case err != nil:
				errs <- fmt.Errorf("caller %d: %v", i, err)
			case r.Tag != tag:
				errs <- fmt.Errorf("caller %d got the answer to %q", i, clip(r.Tag))
			default:
				mu.Lock()
				remotes[r.Remote]++
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if len(remotes) != 1 {
		t.Errorf("the provider saw calls on %d connections (%v); want them multiplexed on one", len(remotes),
			remotes)
	}
	fams := px.Metrics()
	if n := fams.Sum("meltemi_proxy_upstream_connects_total", map[string]string{"address": v1.Addr}); n != 1 {
		t.Errorf("upstream connects to %s = %v; want 1:\n%s", v1.Addr, n,
			fams.Describe("meltemi_proxy_upstream_connects_total"))
	}
	if n := fams.Sum("meltemi_proxy_downstream_connections_total", map[string]string{"listener": inbound}); n != 1 {
		t.Errorf("downstream connections = %v; want the consumer's one:\n%s", n,
			fams.Describe("meltemi_proxy_downstream_connections_total"))
	}
}

// TestDubboConfigSwapUnderLoad swaps the route target back and forth while callers keep calling: no call
// fails, no connection is replaced, and the last config wins.
func TestDubboConfigSwapUnderLoad(t *testing.T) {
	t.Parallel()
	v1, v2 := dubbopeer.StartProvider(t, "v1"), dubbopeer.StartProvider(t, "v2")
	c1, c2 := greetCluster("v1", endpointOf(v1)), greetCluster("v2", endpointOf(v2))
	listener := dubboListener(inbound)
	configFor := func(version int, target proxy.Cluster) *proxy.Config {
		l := listener // same name and address: the socket and its connections stay
		l.Routes = proxy.RouteConfig{Name: "greet", Routes: []proxy.Route{toCluster(target.Name)}}
		return &proxy.Config{Version: fmt.Sprint(version), Listeners: []proxy.Listener{l},
			Clusters: []proxy.Cluster{c1, c2}}
	}
	px := startProxy(t, configFor(0, c2))
	c := dubbopeer.NewConsumer(t, px.Addr(inbound))
	ctx := ctxTimeout(t)

	var done atomic.Bool
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var seenMu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := 0; !done.Load(); i++ {
				got, err := c.SayHello(ctx, fmt.Sprintf("%d-%d", w, i))
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ok.Add(1)
				seenMu.Lock()
				seen[versionOf(got)]++
				seenMu.Unlock()
			}
		})
	}

	const swaps = 50
	for i := range swaps {
		target := c1
		if i%2 == 1 {
			target = c2
		}
		// Let traffic flow between swaps, so each config serves calls.
		before := ok.Load() + failed.Load()
		dubbopeer.WaitFor(t, 10*time.Second, "calls to complete between swaps", func() bool {
			return ok.Load()+failed.Load() >= before+16
		})
		px.Apply(configFor(i+1, target))
	}
	before := ok.Load()
	dubbopeer.WaitFor(t, 10*time.Second, "calls after the last swap", func() bool { return ok.Load() >= before+16 })
	done.Store(true)
	wg.Wait()

	t.Logf("%d calls, answers by version %v", ok.Load(), seen)
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d calls failed during the swaps, first: %v", n, n+ok.Load(), firstErr.Load())
	}
	if seen["v1"] == 0 || seen["v2"] == 0 {
		t.Errorf("answers by version = %v; want both targets to have served", seen)
	}
	fams := px.Metrics()
	if n := fams.Sum("meltemi_proxy_downstream_connections_total", map[string]string{"listener": inbound}); n != 1 {
		t.Errorf("downstream connections accepted = %v; want 1, the consumer's:\n%s", n,
			fams.Describe("meltemi_proxy_downstream_connections_total"))
	}
	// The last swap (i = 49) targets v2.
	for i := range 20 {
		got, err := c.SayHello(ctx, fmt.Sprint("after-", i))
		if err != nil || versionOf(got) != "v2" {
			t.Fatalf("call %d after the last swap = %q, %v; want v2 to answer", i, got, err)
		}
	}
}

// TestDubboBadInput feeds malformed bytes to the proxy on raw connections: each closes only its own
// connection, counts as a decode error, and a real consumer on another connection never notices.
func TestDubboBadInput(t *testing.T) {
	t.Parallel()
	v1 := dubbopeer.StartProvider(t, "v1")
	cl := greetCluster("v1", endpointOf(v1))
	const limited, unlimited = "dubbo-limited", "dubbo-default-limit"
	small := dubboListener(limited, toCluster(cl.Name))
	small.Codec.Config = json.RawMessage(`{"maxBodySize": 1024}`)
	px := startProxy(t, &proxy.Config{
		Listeners: []proxy.Listener{small, dubboListener(unlimited, toCluster(cl.Name))},
		Clusters:  []proxy.Cluster{cl},
	})
	ctx := ctxTimeout(t)

	// A real consumer keeps calling through the limited listener the whole time.
	c := dubbopeer.NewConsumer(t, px.Addr(limited))
	var done atomic.Bool
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var bg sync.WaitGroup
	bg.Go(func() {
		for i := 0; !done.Load(); i++ {
			got, err := c.SayHello(ctx, fmt.Sprint(i))
			if err != nil || got != fmt.Sprintf("v1:hello %d", i) {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, fmt.Errorf("call %d = %q, %v", i, got, err))
				continue
			}
			ok.Add(1)
		}
	})
	defer func() {
		done.Store(true)
		bg.Wait()
	}()

	valid := dubbopeer.RequestFrame(1, true, dubbopeer.MethodSayHello, []any{"x"}, nil)
	wrongMagic := append([]byte(nil), valid...)
	wrongMagic[1] = 0xbc
	tests := []struct {
		name     string
		listener string
		send     []byte
		half     bool // close our side after sending
		// replyID is the id of the error reply expected before the close (0: none); replyOptional allows the
		// proxy to close without it.
		replyID       uint64
		replyOptional bool
		decodeError   bool
	}{
		{name: "garbage", listener: limited, send: []byte("GET / HTTP/1.1\r\nHost: meltemi\r\n\r\n"),
			decodeError: true},
		{name: "wrong magic", listener: limited, send: wrongMagic, decodeError: true},
		{name: "truncated frame then close", listener: limited, send: valid[:len(valid)/2], half: true},
		{name: "two-way request over the configured limit", listener: limited,
			send:    dubbopeer.Header(dubbopeer.FlagTwoWayRequest, 0, 99, 4096),
			replyID: 99, decodeError: true},
		{name: "oneway request over the configured limit", listener: limited,
			send: dubbopeer.Header(dubbopeer.FlagOnewayRequest, 0, 100, 4096), decodeError: true},
		{name: "body length 0xFFFFFFFF", listener: limited,
			send:    dubbopeer.Header(dubbopeer.FlagTwoWayRequest, 0, 101, 0xFFFFFFFF),
			replyID: 101, replyOptional: true, decodeError: true},
		{name: "two-way request over the default 8 MiB limit", listener: unlimited,
			send:    dubbopeer.Header(dubbopeer.FlagTwoWayRequest, 0, 102, 8<<20+1),
			replyID: 102, decodeError: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errsBefore := px.Metrics().Sum("meltemi_proxy_decode_errors_total",
				map[string]string{"listener": tt.listener})
			rc := dubbopeer.DialRaw(t, px.Addr(tt.listener))
			rc.Write(tt.send)
			if tt.half {
				rc.CloseWrite()
			}
			frames := rc.WaitClosed(10 * time.Second)
			switch {
			case tt.replyID == 0 && len(frames) > 0:
				t.Errorf("got %v before the close; want no reply", frames)
			case tt.replyID != 0 && len(frames) == 0 && !tt.replyOptional:
				t.Errorf("connection closed without the error reply for id %d", tt.replyID)
			case len(frames) > 1:
				t.Errorf("got %d frames before the close (%v); want at most one error reply", len(frames), frames)
			case len(frames) == 1:
				f := frames[0]
				if f.ID != tt.replyID || f.Flag != dubbopeer.FlagResponse || f.Status != dubbopeer.StatusBadRequest {
					t.Errorf("reply = %v; want a response with id %d and status %d", f, tt.replyID,
						dubbopeer.StatusBadRequest)
				}
			}
			if tt.decodeError {
				px.WaitMetric("meltemi_proxy_decode_errors_total", map[string]string{"listener": tt.listener},
					"one more than before", func(v float64) bool { return v >= errsBefore+1 })
			}
		})
	}

	// Every raw connection is gone; the consumer's is the only one left open.
	px.WaitMetric("meltemi_proxy_downstream_connections_active", map[string]string{"listener": limited},
		"1 (the consumer's)", func(v float64) bool { return v == 1 })
	before := ok.Load()
	dubbopeer.WaitFor(t, 10*time.Second, "the consumer to keep completing calls", func() bool {
		return ok.Load() > before+10
	})
	done.Store(true)
	bg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d consumer calls failed while raw connections misbehaved, first: %v", n, firstErr.Load())
	}
}

// TestDubboMetrics checks the Istio request metrics after calls that succeed and calls no route matches.
func TestDubboMetrics(t *testing.T) {
	t.Parallel()
	v1 := dubbopeer.StartProvider(t, "v1")
	cl := greetCluster("v1", endpointOf(v1))
	px := startProxy(t, &proxy.Config{
		Node: proxy.Node{ID: "consumer-7f9c", Workload: "greet-consumer", Namespace: "shop", App: "greet-consumer",
			Version: "v7", Principal: "spiffe://cluster.local/ns/shop/sa/greet-consumer"},
		Listeners: []proxy.Listener{dubboListener(inbound, proxy.Route{Name: "hello", Cluster: cl.Name,
			Match: []proxy.MetadataMatcher{methodIs(proxy.MatchExact, "sayHello")}})},
		Clusters: []proxy.Cluster{cl},
	})
	rec := httptest.NewRecorder()
	px.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ready", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/ready = %d %q; want 200 once a config is accepted", rec.Code, rec.Body)
	}

	c := dubbopeer.NewConsumer(t, px.Addr(inbound))
	ctx := ctxTimeout(t)
	const okCalls, unrouted = 5, 2
	for i := range okCalls {
		if _, err := c.SayHello(ctx, fmt.Sprint(i)); err != nil {
			t.Fatalf("sayHello: %v", err)
		}
	}
	for range unrouted {
		if _, err := c.Echo(ctx, "nowhere"); err == nil {
			t.Fatal("echo matched no route but succeeded")
		}
	}

	success := map[string]string{"response_code": "20", "request_protocol": "dubbo"}
	noRoute := map[string]string{"response_flags": "NR", "request_protocol": "dubbo"}
	for _, name := range []string{"istio_requests_total", "istio_request_duration_milliseconds",
		"istio_request_bytes", "istio_response_bytes"} {
		px.WaitMetric(name, success, fmt.Sprint(okCalls), func(v float64) bool { return v == okCalls })
	}
	px.WaitMetric("istio_requests_total", noRoute, fmt.Sprint(unrouted), func(v float64) bool { return v == unrouted })

	fams := px.Metrics()
	istioLabels := []string{"reporter", "source_workload", "source_workload_namespace", "source_principal",
		"source_app", "source_version", "source_canonical_service", "source_canonical_revision",
		"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
		"destination_version", "destination_service", "destination_service_name",
		"destination_service_namespace", "destination_canonical_service", "destination_canonical_revision",
		"request_protocol", "response_code", "response_flags", "connection_security_policy"}
	wantOK := map[string]string{
		"reporter":                      "source",
		"source_workload":               "greet-consumer",
		"source_workload_namespace":     "shop",
		"source_principal":              "spiffe://cluster.local/ns/shop/sa/greet-consumer",
		"source_app":                    "greet-consumer",
		"source_version":                "v7",
		"destination_app":               greetName,
		"destination_version":           "v1",
		"destination_service":           greetHost,
		"destination_service_name":      greetName,
		"destination_service_namespace": greetNamespace,
		"request_protocol":              "dubbo",
		"response_code":                 "20",
		"response_flags":                "-",
	}
	for _, name := range []string{"istio_requests_total", "istio_request_duration_milliseconds",
		"istio_request_bytes", "istio_response_bytes"} {
		for _, m := range fams.Series(name, success) {
			got := meshtest.Labels(m)
			for _, l := range istioLabels {
				if got[l] == "" {
					t.Errorf("%s%v lacks label %q (Kiali drops such series)", name, got, l)
				}
			}
			if len(got) != len(istioLabels) {
				t.Errorf("%s has labels %v; want exactly Istio's %d", name, got, len(istioLabels))
			}
			for k, v := range wantOK {
				if got[k] != v {
					t.Errorf("%s label %s = %q; want %q", name, k, got[k], v)
				}
			}
		}
	}
	for _, m := range fams.Series("istio_requests_total", noRoute) {
		if got := meshtest.Labels(m); got["response_code"] != "60" {
			t.Errorf("no-route series %v: response_code = %q; want 60, the status of the error reply", got,
				got["response_code"])
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", fams.Describe("istio_requests_total"))
	}
}
