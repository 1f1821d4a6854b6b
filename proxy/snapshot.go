package proxy

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
)

// snapshot is a Config compiled for serving: codecs and filters built, routes and regexes compiled, clusters
// resolved. It is immutable once built, and a request uses the snapshot it started with from start to end.
type snapshot struct {
	cfg       *Config
	listeners map[string]*listenerRuntime
	clusters  map[string]*cluster
}

type listenerRuntime struct {
	name          string
	statPrefix    string
	address       string
	protocol      string
	codecName     string
	factory       codec.Factory
	props         codec.Properties
	filters       []filter.Filter
	filterConfigs []FilterConfig // what filters were built from, to keep unchanged ones across updates
	respFilters   []filter.ResponseFilter
	routes        []*route
	idleTimeout   time.Duration
	// streamIdleTimeout resets idle streams.
	streamIdleTimeout time.Duration
	// noDestination labels requests that never reached a cluster.
	noDestination *peerLabels
	localReplies  []prometheus.Counter // by codec.ErrorKind
	decodeErrors  prometheus.Counter
	active        prometheus.Gauge
}

type route struct {
	name        string
	matchers    []matcher
	clusterName string
	cluster     *cluster // nil when the route names a cluster that does not exist
	weighted    []weightedTarget
	totalWeight uint32
	hashKeys    []string
	reqMutation *codec.Mutation
	resMutation *codec.Mutation
}

type weightedTarget struct {
	name    string
	cluster *cluster
	upTo    uint32 // cumulative weight
}

type matcher struct {
	key    string
	kind   MatchKind
	value  string
	re     *regexp.Regexp
	invert bool
}

// matches applies Envoy's header-matcher rules to a metadata key: a missing key matches nothing, inverted or
// not, except an inverted presence check (which asks for absence).
func (m *matcher) matches(md *codec.Metadata) bool {
	v, ok := md.Get(m.key)
	if !ok {
		return m.kind == MatchPresent && m.invert
	}
	var hit bool
	switch m.kind {
	case MatchPresent:
		hit = true
	case MatchExact:
		hit = v == m.value
	case MatchPrefix:
		hit = strings.HasPrefix(v, m.value)
	case MatchRegex:
		hit = m.re.MatchString(v)
	}
	return hit != m.invert
}

// match returns the first route whose matchers all hold.
func (lr *listenerRuntime) match(md *codec.Metadata) *route {
next:
	for _, r := range lr.routes {
		for i := range r.matchers {
			if !r.matchers[i].matches(md) {
				continue next
			}
		}
		return r
	}
	return nil
}

// target picks the route's cluster; ok is false when the cluster named does not exist.
func (r *route) target() (c *cluster, name string) {
	if len(r.weighted) == 0 {
		return r.cluster, r.clusterName
	}
	n := rand.Uint32N(r.totalWeight)
	for i := range r.weighted {
		if n < r.weighted[i].upTo {
			return r.weighted[i].cluster, r.weighted[i].name
		}
	}
	last := &r.weighted[len(r.weighted)-1]
	return last.cluster, last.name
}

type cluster struct {
	name             string
	service          Service
	lb               LBPolicy
	connectTimeout   time.Duration
	idleTimeout      time.Duration
	connsPerEndpoint int
	endpoints        []*endpointRef
	uniformWeights   bool
	totalWeight      uint32
	rr               atomic.Uint32
	// noEndpoint labels requests to this cluster that found no endpoint.
	noEndpoint *peerLabels
}

// endpointRef is a cluster's view of an endpoint: its labels for metrics, and the shared host that holds the
// connections to it.
type endpointRef struct {
	address string
	weight  uint32
	upTo    uint32
	peer    *peerLabels
	host    atomic.Pointer[host] // the host last used, for the codec it was used with
}

// pick chooses an endpoint by the cluster's policy, or nil if it has none.
func (c *cluster) pick() *endpointRef {
	n := len(c.endpoints)
	switch {
	case n == 0:
		return nil
	case n == 1:
		return c.endpoints[0]
	}
	switch c.lb {
	case Random:
		return c.weightedRandom()
	case LeastRequest:
		// Power of two choices, as Envoy does: two random endpoints, the one with fewer requests in flight.
		a, b := c.weightedRandom(), c.weightedRandom()
		if load(b) < load(a) {
			return b
		}
		return a
	default:
		if !c.uniformWeights {
			return c.weightedRandom()
		}
		return c.endpoints[int(c.rr.Add(1)-1)%n]
	}
}

func load(e *endpointRef) int64 {
	if h := e.host.Load(); h != nil {
		return h.active.Load()
	}
	return 0
}

func (c *cluster) weightedRandom() *endpointRef {
	if c.uniformWeights {
		return c.endpoints[rand.IntN(len(c.endpoints))]
	}
	n := rand.Uint32N(c.totalWeight)
	for _, e := range c.endpoints {
		if n < e.upTo {
			return e
		}
	}
	return c.endpoints[len(c.endpoints)-1]
}

// build compiles cfg. Errors name the object and field at fault.
func (p *Proxy) build(cfg *Config) (*snapshot, error) {
	s := &snapshot{cfg: cfg, listeners: map[string]*listenerRuntime{}, clusters: map[string]*cluster{}}
	var errs []error
	for i := range cfg.Clusters {
		c, err := buildCluster(&cfg.Node, &cfg.Clusters[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("clusters[%d] %q: %w", i, cfg.Clusters[i].Name, err))
			continue
		}
		if _, dup := s.clusters[c.name]; dup {
			errs = append(errs, fmt.Errorf("clusters[%d] %q: name: duplicate cluster", i, c.name))
			continue
		}
		s.clusters[c.name] = c
	}
	addrs := map[string]string{}
	for i := range cfg.Listeners {
		l := &cfg.Listeners[i]
		lr, err := p.buildListener(cfg, l, s.clusters)
		if err != nil {
			errs = append(errs, fmt.Errorf("listeners[%d] %q: %w", i, l.Name, err))
			continue
		}
		if _, dup := s.listeners[l.Name]; dup {
			errs = append(errs, fmt.Errorf("listeners[%d] %q: name: duplicate listener", i, l.Name))
			continue
		}
		if other, dup := addrs[l.Address]; dup && !strings.HasSuffix(l.Address, ":0") {
			errs = append(errs, fmt.Errorf("listeners[%d] %q: address: %s is taken by listener %q", i, l.Name,
				l.Address, other))
			continue
		}
		addrs[l.Address] = l.Name
		s.listeners[l.Name] = lr
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

func (p *Proxy) buildListener(cfg *Config, l *Listener, clusters map[string]*cluster) (*listenerRuntime, error) {
	if l.Name == "" {
		return nil, errors.New("name: required")
	}
	if _, _, err := net.SplitHostPort(l.Address); err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	reg, ok := p.opts.Codecs.Lookup(l.Codec.Name)
	if !ok {
		return nil, fmt.Errorf("codec.name: unknown codec %q (known: %s)", l.Codec.Name,
			strings.Join(p.opts.Codecs.Names(), ", "))
	}
	factory, err := reg.New(l.Codec.Config)
	if err != nil {
		return nil, fmt.Errorf("codec.config: %w", err)
	}
	lr := &listenerRuntime{
		name:              l.Name,
		statPrefix:        l.StatPrefix,
		address:           l.Address,
		protocol:          reg.Protocol,
		codecName:         reg.Name,
		factory:           factory,
		props:             factory.Properties(),
		idleTimeout:       l.IdleTimeout,
		streamIdleTimeout: cmp.Or(l.StreamIdleTimeout, DefaultStreamIdleTimeout),
	}
	if lr.statPrefix == "" {
		lr.statPrefix = l.Name
	}
	prev := p.snap.Load().listeners[l.Name]
	for i, fc := range l.Filters {
		if prev != nil && i < len(prev.filterConfigs) && prev.filterConfigs[i].Name == fc.Name &&
			bytes.Equal(prev.filterConfigs[i].Config, fc.Config) {
			// Unchanged: keep the instance, and with it whatever state it holds (rate-limit buckets), as
			// Envoy keeps a filter chain that an update does not touch.
			lr.filters = append(lr.filters, prev.filters[i])
			continue
		}
		freg, ok := p.opts.Filters.Lookup(fc.Name)
		if !ok {
			return nil, fmt.Errorf("filters[%d].name: unknown filter %q", i, fc.Name)
		}
		f, err := freg.New(fc.Config)
		if err != nil {
			return nil, fmt.Errorf("filters[%d] %q: config: %w", i, fc.Name, err)
		}
		if pv, ok := f.(filter.Provisioner); ok {
			if err := pv.Provision(p); err != nil {
				closeFilter(f)
				return nil, fmt.Errorf("filters[%d] %q: %w", i, fc.Name, err)
			}
		}
		lr.filters = append(lr.filters, f)
	}
	lr.filterConfigs = l.Filters
	for i := len(lr.filters) - 1; i >= 0; i-- {
		if rf, ok := lr.filters[i].(filter.ResponseFilter); ok {
			lr.respFilters = append(lr.respFilters, rf)
		}
	}
	for i := range l.Routes.Routes {
		r, err := buildRoute(&l.Routes.Routes[i], clusters)
		if err != nil {
			return nil, fmt.Errorf("routes.routes[%d] %q: %w", i, l.Routes.Routes[i].Name, err)
		}
		lr.routes = append(lr.routes, r)
	}
	lr.noDestination = newPeerLabels(&cfg.Node, nil, nil)
	m := p.metrics
	lr.localReplies = make([]prometheus.Counter, len(codec.ErrorKinds))
	for _, k := range codec.ErrorKinds {
		lr.localReplies[k] = m.localReplies.WithLabelValues(lr.statPrefix, k.String())
	}
	lr.decodeErrors = m.decodeErrors.WithLabelValues(lr.statPrefix, lr.protocol, "downstream")
	lr.active = m.activeRequests.WithLabelValues(lr.statPrefix)
	return lr, nil
}

func buildRoute(rc *Route, clusters map[string]*cluster) (*route, error) {
	r := &route{name: rc.Name, clusterName: rc.Cluster, hashKeys: rc.HashPolicy}
	for i, mc := range rc.Match {
		m := matcher{key: mc.Key, kind: mc.Kind, value: mc.Value, invert: mc.Invert}
		if mc.Key == "" {
			return nil, fmt.Errorf("match[%d].key: required", i)
		}
		switch mc.Kind {
		case MatchExact, MatchPrefix, MatchPresent:
		case MatchRegex:
			re, err := regexp.Compile("^(?:" + mc.Value + ")$")
			if err != nil {
				return nil, fmt.Errorf("match[%d].value: bad regex: %w", i, err)
			}
			m.re = re
		default:
			return nil, fmt.Errorf("match[%d].kind: unknown match kind %q (exact, prefix, regex, present)", i,
				mc.Kind)
		}
		r.matchers = append(r.matchers, m)
	}
	switch {
	case len(rc.WeightedClusters) > 0:
		if rc.Cluster != "" {
			return nil, errors.New("cluster: set both cluster and weightedClusters")
		}
		for i, wc := range rc.WeightedClusters {
			if wc.Name == "" {
				return nil, fmt.Errorf("weightedClusters[%d].name: required", i)
			}
			if wc.Weight == 0 {
				continue
			}
			r.totalWeight += wc.Weight
			r.weighted = append(r.weighted, weightedTarget{name: wc.Name, cluster: clusters[wc.Name],
				upTo: r.totalWeight})
		}
		if r.totalWeight == 0 {
			return nil, errors.New("weightedClusters: weights add up to zero")
		}
	case rc.Cluster != "":
		r.cluster = clusters[rc.Cluster]
	default:
		return nil, errors.New("cluster: a route needs a cluster or weightedClusters")
	}
	r.reqMutation = mutation(rc.RequestMutation)
	r.resMutation = mutation(rc.ResponseMutation)
	return r, nil
}

func mutation(kvs []codec.KeyValue) *codec.Mutation {
	if len(kvs) == 0 {
		return nil
	}
	return &codec.Mutation{Set: kvs}
}

func buildCluster(node *Node, cc *Cluster) (*cluster, error) {
	if cc.Name == "" {
		return nil, errors.New("name: required")
	}
	c := &cluster{
		name:             cc.Name,
		service:          cc.Service,
		lb:               cc.LB,
		connectTimeout:   cc.ConnectTimeout,
		idleTimeout:      cc.IdleTimeout,
		connsPerEndpoint: cc.ConnectionsPerEndpoint,
		uniformWeights:   true,
	}
	switch c.lb {
	case "":
		c.lb = RoundRobin
	case RoundRobin, Random, LeastRequest:
	default:
		return nil, fmt.Errorf("lb: unknown policy %q (ROUND_ROBIN, RANDOM, LEAST_REQUEST)", cc.LB)
	}
	if c.connectTimeout <= 0 {
		c.connectTimeout = 10 * time.Second
	}
	if c.connsPerEndpoint <= 0 {
		c.connsPerEndpoint = 1
	}
	var firstWeight uint32
	for i := range cc.Endpoints {
		ep := &cc.Endpoints[i]
		if _, _, err := net.SplitHostPort(ep.Address); err != nil {
			return nil, fmt.Errorf("endpoints[%d].address: %w", i, err)
		}
		if !subsetOf(cc.Subset, ep.Labels) {
			continue
		}
		w := ep.Weight
		if w == 0 {
			w = 1
		}
		if len(c.endpoints) == 0 {
			firstWeight = w
		} else if w != firstWeight {
			c.uniformWeights = false
		}
		c.totalWeight += w
		c.endpoints = append(c.endpoints, &endpointRef{address: ep.Address, weight: w, upTo: c.totalWeight,
			peer: newPeerLabels(node, &c.service, ep)})
	}
	c.noEndpoint = newPeerLabels(node, &c.service, nil)
	return c, nil
}

// subsetOf reports whether labels include every entry of subset.
func subsetOf(subset, labels map[string]string) bool {
	for k, v := range subset {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// addresses returns the endpoint addresses the snapshot sends to.
func (s *snapshot) addresses() map[string]bool {
	out := map[string]bool{}
	for _, c := range s.clusters {
		for _, e := range c.endpoints {
			out[e.address] = true
		}
	}
	return out
}

// filterSet returns every filter instance the snapshot's listeners run.
func (s *snapshot) filterSet() map[filter.Filter]bool {
	out := map[filter.Filter]bool{}
	for _, lr := range s.listeners {
		for _, f := range lr.filters {
			out[f] = true
		}
	}
	return out
}

// closeFilters closes the filters of old that cur does not run (all of them when cur is nil).
func closeFilters(old, cur *snapshot) {
	var keep map[filter.Filter]bool
	if cur != nil {
		keep = cur.filterSet()
	}
	for f := range old.filterSet() {
		if !keep[f] {
			closeFilter(f)
		}
	}
}

func closeFilter(f filter.Filter) {
	if c, ok := f.(io.Closer); ok {
		c.Close()
	}
}
