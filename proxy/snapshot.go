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
	// virtual listeners bind no socket; capture listeners hand their connections to virtual ones.
	virtual, capture, passthrough bool
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
	timeout     time.Duration
	retry       *retryPolicy
	mirrors     []mirror
	fault       *fault
	conc        *concurrencyLimit

	faultDelays, faultAborts prometheus.Counter
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

// build compiles cfg. Errors name the object and field at fault.
func (p *Proxy) build(cfg *Config) (*snapshot, error) {
	s := &snapshot{cfg: cfg, listeners: map[string]*listenerRuntime{}, clusters: map[string]*cluster{}}
	var errs []error
	prev := p.snap.Load()
	for i := range cfg.Clusters {
		c, err := p.buildCluster(&cfg.Node, &cfg.Clusters[i], prev.clusters[cfg.Clusters[i].Name])
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
		key := l.Address
		if lr.virtual {
			key = "virtual " + key // virtual listeners share no socket with bound ones, only among themselves
		}
		if other, dup := addrs[key]; dup && !strings.HasSuffix(l.Address, ":0") {
			errs = append(errs, fmt.Errorf("listeners[%d] %q: address: %s is taken by listener %q", i, l.Name,
				l.Address, other))
			continue
		}
		addrs[key] = l.Name
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
	virtual := l.BindToPort != nil && !*l.BindToPort
	if l.OriginalDst {
		switch {
		case virtual:
			return nil, errors.New("bindToPort: a capture listener (originalDst) must bind its port")
		case l.Codec.Name != "" || len(l.Filters) > 0 || len(l.Routes.Routes) > 0:
			return nil, errors.New("originalDst: a capture listener hands its connections on and has no codec, " +
				"filters or routes of its own")
		}
		return &listenerRuntime{name: l.Name, statPrefix: cmp.Or(l.StatPrefix, l.Name), address: l.Address,
			capture: true, passthrough: l.Passthrough}, nil
	}
	if l.Passthrough {
		return nil, errors.New("passthrough: only a capture listener (originalDst) relays connections")
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
		virtual:           virtual,
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
	var prevRoutes []*route
	if prev != nil {
		prevRoutes = prev.routes
	}
	for i := range l.Routes.Routes {
		r, err := buildRoute(&l.Routes.Routes[i], clusters, prevRoutes)
		if err != nil {
			return nil, fmt.Errorf("routes.routes[%d] %q: %w", i, l.Routes.Routes[i].Name, err)
		}
		lr.routes = append(lr.routes, r)
	}
	lr.noDestination = newPeerLabels(&cfg.Node, nil, nil)
	m := p.metrics
	for _, r := range lr.routes {
		r.faultDelays = m.faults.WithLabelValues(lr.statPrefix, "delay")
		r.faultAborts = m.faults.WithLabelValues(lr.statPrefix, "abort")
		for i := range r.mirrors {
			r.mirrors[i].sent = m.mirrorRequests.WithLabelValues(r.mirrors[i].name, "sent")
			r.mirrors[i].dropped = m.mirrorRequests.WithLabelValues(r.mirrors[i].name, "dropped")
		}
	}
	lr.localReplies = make([]prometheus.Counter, len(codec.ErrorKinds))
	for _, k := range codec.ErrorKinds {
		lr.localReplies[k] = m.localReplies.WithLabelValues(lr.statPrefix, k.String())
	}
	lr.decodeErrors = m.decodeErrors.WithLabelValues(lr.statPrefix, lr.protocol, "downstream")
	lr.active = m.activeRequests.WithLabelValues(lr.statPrefix)
	return lr, nil
}

// buildRoute compiles a route. A concurrency limit is taken over from the route of the same name in prev
// (the listener's routes being replaced) when it is unchanged, so that the requests in flight still count.
func buildRoute(rc *Route, clusters map[string]*cluster, prev []*route) (*route, error) {
	r := &route{name: rc.Name, clusterName: rc.Cluster, hashKeys: rc.HashPolicy, timeout: rc.Timeout}
	if rc.Timeout < 0 {
		return nil, errors.New("timeout: cannot be negative")
	}
	var err error
	if r.retry, err = buildRetry(rc.Retry); err != nil {
		return nil, fmt.Errorf("retry.%w", err)
	}
	if r.fault, err = buildFault(rc.Fault); err != nil {
		return nil, fmt.Errorf("fault.%w", err)
	}
	for i, m := range rc.Mirrors {
		switch {
		case m.Cluster == "":
			return nil, fmt.Errorf("mirrors[%d].cluster: required", i)
		case m.PerMillion > 1_000_000:
			return nil, fmt.Errorf("mirrors[%d].perMillion: %d is over a million", i, m.PerMillion)
		case m.PerMillion == 0:
			continue
		}
		r.mirrors = append(r.mirrors, mirror{name: m.Cluster, cluster: clusters[m.Cluster], perMillion: m.PerMillion})
	}
	if cl := rc.ConcurrencyLimit; cl != nil {
		if cl.MaxRequests == 0 {
			return nil, errors.New("concurrencyLimit.maxRequests: must be at least 1")
		}
		for _, pr := range prev {
			if pr.name == rc.Name && pr.conc != nil && pr.conc.cfg == *cl {
				r.conc = pr.conc
			}
		}
		if r.conc == nil {
			r.conc = &concurrencyLimit{cfg: *cl, byKey: map[string]*atomic.Int64{}}
		}
	}
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
