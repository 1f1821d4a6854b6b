package proxy

import (
	"log/slog"
	"math"
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/codec"
)

func metadata(kv ...string) *codec.Metadata {
	md := &codec.Metadata{}
	for i := 0; i < len(kv); i += 2 {
		md.Set(kv[i], kv[i+1])
	}
	return md
}

func TestRouteMatch(t *testing.T) {
	clusters := map[string]*cluster{"a": {name: "a"}, "b": {name: "b"}, "c": {name: "c"}, "d": {name: "d"}}
	routes := []Route{
		{Name: "exact", Match: []MetadataMatcher{{Key: "method", Kind: MatchExact, Value: "sayHello"}}, Cluster: "a"},
		{Name: "prefix", Match: []MetadataMatcher{{Key: "method", Kind: MatchPrefix, Value: "get"}}, Cluster: "b"},
		{Name: "regex+attachment", Match: []MetadataMatcher{
			{Key: "method", Kind: MatchRegex, Value: "list[A-Z][a-z]+"},
			{Key: "tenant", Kind: MatchPresent},
		}, Cluster: "c"},
		{Name: "not-internal", Match: []MetadataMatcher{{Key: "internal", Kind: MatchPresent, Invert: true}}, Cluster: "d"},
		{Name: "not-get-method", Match: []MetadataMatcher{{Key: "method", Kind: MatchPrefix, Value: "x", Invert: true}}, Cluster: "d"},
	}
	lr := &listenerRuntime{}
	for i := range routes {
		r, err := buildRoute(&routes[i], clusters, nil)
		if err != nil {
			t.Fatal(err)
		}
		lr.routes = append(lr.routes, r)
	}
	tests := []struct {
		md   *codec.Metadata
		want string // route name, "" for none
	}{
		{metadata("method", "sayHello"), "exact"},
		{metadata("method", "sayHelloAgain"), "not-internal"},
		{metadata("method", "getUser"), "prefix"},
		{metadata("method", "listUsers", "tenant", "x"), "regex+attachment"},
		{metadata("method", "listUsers"), "not-internal"},
		{metadata("method", "xlistUsers", "tenant", "x"), "not-internal"}, // regex matches the whole value
		{metadata("method", "other", "internal", "1"), "not-get-method"},
		// As in Envoy, an inverted condition on a missing key does not match (only "absent" does).
		{metadata("internal", "1"), ""},
	}
	for _, tt := range tests {
		r := lr.match(tt.md)
		got := ""
		if r != nil {
			got = r.name
		}
		if got != tt.want {
			t.Errorf("metadata %v: matched %q, want %q", tt.md, got, tt.want)
		}
	}
}

func TestBuildRouteErrors(t *testing.T) {
	tests := []struct {
		route Route
		want  string
	}{
		{Route{Cluster: "a", Match: []MetadataMatcher{{Key: "m", Kind: MatchRegex, Value: "("}}}, "match[0].value: bad regex"},
		{Route{Cluster: "a", Match: []MetadataMatcher{{Key: "m", Kind: "glob"}}}, `match[0].kind: unknown match kind "glob"`},
		{Route{Cluster: "a", Match: []MetadataMatcher{{Kind: MatchExact}}}, "match[0].key: required"},
		{Route{}, "cluster: a route needs a cluster or weightedClusters"},
		{Route{WeightedClusters: []WeightedCluster{{Name: "a"}}}, "weightedClusters: weights add up to zero"},
	}
	for _, tt := range tests {
		_, err := buildRoute(&tt.route, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("buildRoute(%+v) = %v, want error containing %q", tt.route, err, tt.want)
		}
	}
}

func TestWeightedTarget(t *testing.T) {
	clusters := map[string]*cluster{"v1": {name: "v1"}, "v2": {name: "v2"}}
	r, err := buildRoute(&Route{WeightedClusters: []WeightedCluster{{Name: "v1", Weight: 20}, {Name: "v2", Weight: 80},
		{Name: "never", Weight: 0}}}, clusters, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	hits := map[string]int{}
	for range n {
		_, name := r.target()
		hits[name]++
	}
	// 5 standard deviations of a binomial(n, 0.2): fails for a 25/75 split, not by chance.
	sigma := math.Sqrt(n * 0.2 * 0.8)
	if d := math.Abs(float64(hits["v1"]) - 0.2*n); d > 5*sigma {
		t.Errorf("v1 got %d of %d, want %d ± %.0f", hits["v1"], n, int(0.2*n), 5*sigma)
	}
	if hits["never"] != 0 {
		t.Errorf("a zero-weight cluster got %d requests", hits["never"])
	}
}

func TestClusterPick(t *testing.T) {
	mk := func(lb LBPolicy, weights ...uint32) *cluster {
		cc := &Cluster{Name: "c", LB: lb}
		for i, w := range weights {
			cc.Endpoints = append(cc.Endpoints, Endpoint{Address: "127.0.0.1:" + string(rune('1'+i)) + "000", Weight: w})
		}
		c, err := testProxy(t).buildCluster(&Node{}, cc, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	t.Run("round robin cycles", func(t *testing.T) {
		c := mk(RoundRobin, 1, 1, 1)
		for i := range 9 {
			if got, want := c.pick(0, false), c.endpoints[i%3]; got != want {
				t.Fatalf("pick %d = %s, want %s", i, got.address, want.address)
			}
		}
	})
	t.Run("weights bias the choice", func(t *testing.T) {
		for _, lb := range []LBPolicy{RoundRobin, Random, LeastRequest} {
			c := mk(lb, 1, 9)
			hits := map[string]int{}
			for range 10000 {
				hits[c.pick(0, false).address]++
			}
			if hits[c.endpoints[1].address] < 8000 {
				t.Errorf("%s: weight 9 of 10 got %d of 10000", lb, hits[c.endpoints[1].address])
			}
		}
	})
	t.Run("subset keeps labelled endpoints", func(t *testing.T) {
		c, err := testProxy(t).buildCluster(&Node{}, &Cluster{Name: "c", Subset: map[string]string{"version": "v2"}, Endpoints: []Endpoint{
			{Address: "127.0.0.1:1", Labels: map[string]string{"version": "v1"}},
			{Address: "127.0.0.1:2", Labels: map[string]string{"version": "v2", "app": "x"}},
		}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.endpoints) != 1 || c.endpoints[0].address != "127.0.0.1:2" {
			t.Fatalf("subset endpoints = %v", c.endpoints)
		}
	})
	t.Run("empty cluster", func(t *testing.T) {
		if e := mk(RoundRobin).pick(0, false); e != nil {
			t.Fatalf("pick on empty cluster = %v", e)
		}
	})
}

// testProxy is a proxy with no codecs and no config, for building clusters.
func testProxy(t testing.TB) *Proxy {
	t.Helper()
	codecs, err := codec.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{Codecs: codecs, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
