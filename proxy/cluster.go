package proxy

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// cluster is a Config's cluster compiled for one snapshot. What must outlive the snapshot (circuit-breaker
// counts, endpoint health) is in its clusterState, which the next snapshot's cluster of the same name takes
// over.
type cluster struct {
	name             string
	service          Service
	lb               LBPolicy
	connectTimeout   time.Duration
	idleTimeout      time.Duration
	connsPerEndpoint int
	endpoints        []*endpointRef
	minRingSize      uint64
	maxRingSize      uint64
	maglevTableSize  uint64
	cb               CircuitBreaker
	maxRqPerConn     uint32
	outlier          *outlierSettings
	panicThreshold   float64
	state            *clusterState
	// countRequests says the cluster's requests in flight are counted: for a limit on them, or a retry budget.
	countRequests bool
	// noEndpoint labels requests to this cluster that found no endpoint.
	noEndpoint *peerLabels

	viewMu sync.Mutex
	cur    atomic.Pointer[lbView]
}

// endpointRef is a cluster's view of an endpoint: its labels for metrics, its health, and the shared host that
// holds the connections to it.
type endpointRef struct {
	address  string
	weight   uint32
	priority uint32
	peer     *peerLabels
	health   *hostHealth
	host     atomic.Pointer[host] // the host last used, for the codec it was used with
}

// outlierSettings are OutlierDetection with the defaults applied.
type outlierSettings struct {
	consecutive5xx, consecutiveGateway, consecutiveLocal uint32
	split                                                bool
	interval, base, maxEjection                          time.Duration
	maxPercent                                           uint32
}

func newOutlierSettings(o *OutlierDetection) *outlierSettings {
	if o == nil {
		return nil
	}
	base := cmp.Or(o.BaseEjectionTime, 30*time.Second)
	return &outlierSettings{
		consecutive5xx:     o.Consecutive5xx,
		consecutiveGateway: o.ConsecutiveGatewayFailure,
		consecutiveLocal:   o.ConsecutiveLocalOriginFailure,
		split:              o.SplitLocalOrigin,
		interval:           cmp.Or(o.Interval, 10*time.Second),
		base:               base,
		maxEjection:        max(base, cmp.Or(o.MaxEjectionTime, 300*time.Second)),
		maxPercent:         cmp.Or(o.MaxEjectionPercent, 10),
	}
}

// buildCluster compiles cc, taking over the state of prev (the cluster of the same name in the snapshot being
// replaced) when there is one.
func (p *Proxy) buildCluster(node *Node, cc *Cluster, prev *cluster) (*cluster, error) {
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
		minRingSize:      cc.MinRingSize,
		maxRingSize:      cc.MaxRingSize,
		maglevTableSize:  cc.MaglevTableSize,
		cb:               cc.CircuitBreaker,
		maxRqPerConn:     cc.MaxRequestsPerConnection,
		outlier:          newOutlierSettings(cc.Outlier),
		panicThreshold:   cc.PanicThreshold,
	}
	switch c.lb {
	case "":
		c.lb = RoundRobin
	case RoundRobin, Random, LeastRequest, RingHash, Maglev:
	default:
		return nil, fmt.Errorf("lb: unknown policy %q (ROUND_ROBIN, RANDOM, LEAST_REQUEST, RING_HASH, MAGLEV)", cc.LB)
	}
	switch {
	case c.minRingSize > defaultMaxRingSize:
		return nil, fmt.Errorf("minRingSize: %d is over the limit of %d", c.minRingSize, defaultMaxRingSize)
	case c.maxRingSize > defaultMaxRingSize:
		return nil, fmt.Errorf("maxRingSize: %d is over the limit of %d", c.maxRingSize, defaultMaxRingSize)
	case c.minRingSize > 0 && c.maxRingSize > 0 && c.minRingSize > c.maxRingSize:
		return nil, fmt.Errorf("minRingSize: %d is larger than maxRingSize %d", c.minRingSize, c.maxRingSize)
	case c.maglevTableSize != 0 && !isPrime(c.maglevTableSize):
		return nil, fmt.Errorf("maglevTableSize: %d is not a prime", c.maglevTableSize)
	case c.maglevTableSize > 5000011:
		return nil, fmt.Errorf("maglevTableSize: %d is over the limit of 5000011", c.maglevTableSize)
	case c.panicThreshold < 0 || c.panicThreshold > 100:
		return nil, fmt.Errorf("panicThreshold: %v is not a percentage", c.panicThreshold)
	case cc.Outlier != nil && cc.Outlier.MaxEjectionPercent > 100:
		return nil, fmt.Errorf("outlier.maxEjectionPercent: %d is over 100", cc.Outlier.MaxEjectionPercent)
	case cc.CircuitBreaker.RetryBudgetPercent < 0 || cc.CircuitBreaker.RetryBudgetPercent > 100:
		return nil, fmt.Errorf("circuitBreaker.retryBudgetPercent: %v is not a percentage",
			cc.CircuitBreaker.RetryBudgetPercent)
	}
	// A limit nobody could reach (Istio writes 2^32-1 for "none") is no limit: counting against it would only
	// make every request touch the shared counters.
	for _, n := range []*uint32{&c.cb.MaxConnections, &c.cb.MaxPendingRequests, &c.cb.MaxRequests, &c.cb.MaxRetries} {
		if *n >= 1<<31 {
			*n = 0
		}
	}
	c.countRequests = c.cb.MaxRequests > 0 || c.cb.RetryBudgetPercent > 0
	if c.connectTimeout <= 0 {
		c.connectTimeout = 10 * time.Second
	}
	if c.connsPerEndpoint <= 0 {
		c.connsPerEndpoint = DefaultConnectionsPerEndpoint
	}
	if prev != nil {
		c.state = prev.state
	} else {
		c.state = p.newClusterState(cc.Name)
	}
	addrs := map[string]bool{}
	for i := range cc.Endpoints {
		ep := &cc.Endpoints[i]
		if _, _, err := net.SplitHostPort(ep.Address); err != nil {
			return nil, fmt.Errorf("endpoints[%d].address: %w", i, err)
		}
		if !subsetOf(cc.Subset, ep.Labels) {
			continue
		}
		if addrs[ep.Address] {
			return nil, fmt.Errorf("endpoints[%d].address: %s is listed twice", i, ep.Address)
		}
		addrs[ep.Address] = true
		c.endpoints = append(c.endpoints, &endpointRef{address: ep.Address, weight: cmp.Or(ep.Weight, 1),
			priority: ep.Priority, peer: newPeerLabels(node, &c.service, ep), health: c.state.healthOf(ep.Address)})
	}
	c.noEndpoint = newPeerLabels(node, &c.service, nil)
	c.cur.Store(c.buildView(c.state.gen.Load()))
	return c, nil
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
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

// clusterState is what a cluster keeps across config updates: the counts its circuit breakers limit, the
// health of its endpoints, and its metrics.
type clusterState struct {
	name string
	p    *Proxy

	// gen moves whenever an endpoint is ejected or comes back, so that clusters rebuild their views.
	gen atomic.Uint64

	requests, pending, retries, connections atomic.Int64

	mu       sync.Mutex
	health   map[string]*hostHealth // by endpoint address
	ejected  int
	sweeper  chan struct{} // closed to stop the sweeper; nil when none runs
	interval time.Duration // the sweeper's

	overflow                                    [overflowKinds]prometheus.Counter
	timeouts, retried, retryOverflow, ejections prometheus.Counter
	ejectedHosts                                prometheus.Gauge
}

// hostHealth is an endpoint's standing in a cluster's outlier detection.
type hostHealth struct {
	address                         string
	ejected                         atomic.Bool
	consec5xx, consecGateway, local atomic.Uint32
	// Under the state's mu:
	until     time.Time
	ejections uint32
}

// Why a request overflowed a limit; the label of meltemi_proxy_upstream_overflow_total.
const (
	overflowRequests = iota
	overflowPending
	overflowConnections
	overflowKinds
)

var overflowNames = [overflowKinds]string{"max_requests", "max_pending_requests", "max_connections"}

func (p *Proxy) newClusterState(name string) *clusterState {
	m := p.metrics
	s := &clusterState{name: name, p: p, health: map[string]*hostHealth{},
		timeouts:      m.upstreamTimeouts.WithLabelValues(name),
		retried:       m.upstreamRetries.WithLabelValues(name),
		retryOverflow: m.upstreamRetryOverflow.WithLabelValues(name),
		ejections:     m.outlierEjections.WithLabelValues(name),
		ejectedHosts:  m.outlierEjected.WithLabelValues(name),
	}
	for k := range s.overflow {
		s.overflow[k] = m.upstreamOverflow.WithLabelValues(name, overflowNames[k])
	}
	return s
}

// healthOf returns the health of an endpoint, created healthy on first use.
func (s *clusterState) healthOf(address string) *hostHealth {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.health[address]
	if h == nil {
		h = &hostHealth{address: address}
		s.health[address] = h
	}
	return h
}

// serve makes c the cluster the state serves: its endpoints are the ones counted, its outlier settings the
// ones applied. It runs when a snapshot holding c is swapped in.
func (s *clusterState) serve(c *cluster) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := map[string]bool{}
	for _, e := range c.endpoints {
		keep[e.address] = true
	}
	for addr, h := range s.health {
		if !keep[addr] {
			if h.ejected.Load() {
				s.ejected--
			}
			delete(s.health, addr)
		}
	}
	if c.outlier == nil {
		// No more outlier detection: every endpoint is back.
		for _, h := range s.health {
			h.ejected.Store(false)
			h.ejections = 0
		}
		s.ejected = 0
		s.gen.Add(1)
		s.stopSweeper()
	} else if s.sweeper == nil || s.interval != c.outlier.interval {
		s.stopSweeper()
		s.sweeper, s.interval = make(chan struct{}), c.outlier.interval
		go s.sweep(s.sweeper, s.interval)
	}
	s.ejectedHosts.Set(float64(s.ejected))
}

// retire stops the state's work once no snapshot being served has its cluster.
func (s *clusterState) retire() {
	s.mu.Lock()
	s.stopSweeper()
	s.mu.Unlock()
	m := s.p.metrics
	for _, v := range []interface{ DeleteLabelValues(...string) bool }{m.upstreamTimeouts, m.upstreamRetries,
		m.upstreamRetryOverflow, m.outlierEjections, m.outlierEjected} {
		v.DeleteLabelValues(s.name)
	}
	for k := range overflowNames {
		m.upstreamOverflow.DeleteLabelValues(s.name, overflowNames[k])
	}
}

func (s *clusterState) stopSweeper() {
	if s.sweeper != nil {
		close(s.sweeper)
		s.sweeper = nil
	}
}

// sweep brings ejected endpoints back once their time is up, and lets the ejection count of endpoints that
// stayed healthy for an interval decay, as Envoy's outlier detector does at every interval.
func (s *clusterState) sweep(stop chan struct{}, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			s.mu.Lock()
			changed := false
			for _, h := range s.health {
				switch {
				case h.ejected.Load() && !now.Before(h.until):
					h.ejected.Store(false)
					s.ejected--
					changed = true
				case !h.ejected.Load() && h.ejections > 0:
					h.ejections--
				}
			}
			if changed {
				s.gen.Add(1)
				s.ejectedHosts.Set(float64(s.ejected))
			}
			s.mu.Unlock()
		}
	}
}

// outcome is how a try ended, as outlier detection counts it.
type outcome uint8

const (
	outcomeSuccess      outcome = iota
	outcomeFailedReply          // the server answered with a failure (the codec's Message.Failed)
	outcomeLocalFailure         // the proxy could not get an answer: connect failure, reset, timeout
)

// report records a try's outcome against an endpoint, ejecting it when it has failed too often in a row.
func (s *clusterState) report(h *hostHealth, o outcome, set *outlierSettings) {
	if set == nil {
		return
	}
	if o == outcomeSuccess {
		// Loads first: most requests succeed, and a store would make every one write the shared counters.
		if h.consec5xx.Load() != 0 {
			h.consec5xx.Store(0)
		}
		if h.consecGateway.Load() != 0 {
			h.consecGateway.Store(0)
		}
		if h.local.Load() != 0 {
			h.local.Store(0)
		}
		return
	}
	trip := false
	switch {
	case o == outcomeLocalFailure && set.split:
		trip = tripped(&h.local, set.consecutiveLocal)
	case o == outcomeLocalFailure:
		trip = tripped(&h.consec5xx, set.consecutive5xx)
		trip = tripped(&h.consecGateway, set.consecutiveGateway) || trip
	default:
		trip = tripped(&h.consec5xx, set.consecutive5xx)
		if set.split {
			break
		}
		// A reply, however failed, shows the endpoint reachable: the gateway count starts again.
		h.consecGateway.Store(0)
	}
	if trip {
		s.eject(h, set)
	}
}

func tripped(n *atomic.Uint32, threshold uint32) bool {
	return threshold > 0 && n.Add(1) >= threshold
}

// eject takes an endpoint out of load balancing for the base ejection time times the number of times it has
// been ejected, unless that would eject more than the maximum share of the cluster (one endpoint always may).
func (s *clusterState) eject(h *hostHealth, set *outlierSettings) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h.consec5xx.Store(0)
	h.consecGateway.Store(0)
	h.local.Store(0)
	if h.ejected.Load() || s.health[h.address] != h {
		return // already out, or no longer an endpoint of the cluster
	}
	if s.ejected > 0 && uint64(s.ejected+1)*100 > uint64(set.maxPercent)*uint64(len(s.health)) {
		return
	}
	h.ejections++
	h.until = time.Now().Add(min(set.base*time.Duration(h.ejections), set.maxEjection))
	h.ejected.Store(true)
	s.ejected++
	s.gen.Add(1)
	s.ejections.Inc()
	s.ejectedHosts.Set(float64(s.ejected))
	s.p.log.Info("endpoint ejected", "cluster", s.name, "address", h.address,
		"until", h.until.Format(time.RFC3339Nano), "ejections", h.ejections)
}

// admit counts a request in against the cluster's circuit breakers; over is true, with the limit it hit and
// a phrase for the reply, when it must be refused. h is the host it would go to.
func (c *cluster) admit(h *host) (limit int, detail string, over bool) {
	if c.countRequests {
		if n := c.state.requests.Add(1); c.cb.MaxRequests > 0 && n > int64(c.cb.MaxRequests) {
			c.state.requests.Add(-1)
			return overflowRequests, "maximum of requests in flight", true
		}
	}
	if c.cb.MaxPendingRequests > 0 && c.state.pending.Load() >= int64(c.cb.MaxPendingRequests) && !h.connected() {
		if c.countRequests {
			c.state.requests.Add(-1)
		}
		return overflowPending, "maximum of requests waiting for a connection", true
	}
	return 0, "", false
}
