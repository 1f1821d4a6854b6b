package proxy

import (
	"encoding/json"
	"time"

	"github.com/meltemi-mesh/meltemi/codec"
)

// Config is the whole runtime configuration of a proxy: what the xDS resources (listeners with the
// MetaProtocolProxy filter, MetaRDS routes, clusters, endpoints) translate into. The proxy never changes a
// Config it was given.
type Config struct {
	// Version identifies this config in logs and dumps (the xDS version, say).
	Version string `json:"version,omitempty"`
	// Node describes the workload this proxy runs for; the source_* metric labels come from it.
	Node Node `json:"node"`
	// Listeners are the addresses the proxy serves, one MetaProtocolProxy each.
	Listeners []Listener `json:"listeners"`
	// Clusters are the upstream services routes send to.
	Clusters []Cluster `json:"clusters"`
}

// Node is the identity of the workload the proxy stands for.
type Node struct {
	ID                string `json:"id,omitempty"`
	Workload          string `json:"workload,omitempty"`
	Namespace         string `json:"namespace,omitempty"`
	App               string `json:"app,omitempty"`
	Version           string `json:"version,omitempty"`
	Principal         string `json:"principal,omitempty"`
	CanonicalService  string `json:"canonicalService,omitempty"`
	CanonicalRevision string `json:"canonicalRevision,omitempty"`
	// Reporter is the Istio reporter label: "source" for outbound traffic (the default), "destination" for
	// inbound.
	Reporter string `json:"reporter,omitempty"`
}

// Listener is an address served by one MetaProtocolProxy network filter.
type Listener struct {
	// Name is unique within a Config; a listener keeps its socket across updates while its name and address
	// stay the same.
	Name string `json:"name"`
	// Address is host:port.
	Address string `json:"address"`
	// StatPrefix names the listener in the proxy's own metrics (the listener name when empty).
	StatPrefix string `json:"statPrefix,omitempty"`
	// Codec is the wire protocol spoken on the listener.
	Codec CodecConfig `json:"codec"`
	// Filters run in order on each request before the router, which is always last.
	Filters []FilterConfig `json:"filters,omitempty"`
	// Routes is the route table (inline, or resolved from MetaRDS by the xDS client).
	Routes RouteConfig `json:"routes"`
	// IdleTimeout closes a downstream connection with no request in flight for this long (0: never).
	IdleTimeout time.Duration `json:"idleTimeout,omitempty"`
	// StreamIdleTimeout resets a stream on which neither peer sent a frame for this long (0:
	// DefaultStreamIdleTimeout).
	StreamIdleTimeout time.Duration `json:"streamIdleTimeout,omitempty"`
	// BindToPort false makes the listener virtual: it binds no socket and serves only the connections that a
	// capture listener hands it, those whose original destination is its Address (for an address 0.0.0.0,
	// any address on its port). Envoy's bind_to_port; nil means true.
	BindToPort *bool `json:"bindToPort,omitempty"`
	// OriginalDst makes the listener a capture listener (Envoy's use_original_dst), as a sidecar's outbound
	// and inbound ports are: it recovers the original destination of each connection that iptables redirected
	// to it and hands the connection to the virtual listener for that address. It has no codec, filters or
	// routes of its own.
	OriginalDst bool `json:"originalDst,omitempty"`
	// Passthrough, on a capture listener, relays a connection that no listener takes as plain TCP to its
	// original destination (Istio's PassthroughCluster); without it such connections are closed.
	Passthrough bool `json:"passthrough,omitempty"`
}

// CodecConfig names a registered codec and gives its config.
type CodecConfig struct {
	// Name is the codec's registered name, e.g. "aeraki.meta_protocol.codec.dubbo".
	Name string `json:"name"`
	// Config is the codec's own JSON config (empty for defaults).
	Config json.RawMessage `json:"config,omitempty"`
}

// FilterConfig names a registered filter and gives its config.
type FilterConfig struct {
	Name   string          `json:"name"`
	Config json.RawMessage `json:"config,omitempty"`
}

// RouteConfig is an ordered route table: the first route that matches a request wins.
type RouteConfig struct {
	Name   string  `json:"name"`
	Routes []Route `json:"routes"`
}

// Route sends requests whose metadata matches to a cluster, or to one of several by weight.
type Route struct {
	Name string `json:"name,omitempty"`
	// Match lists conditions on the request's metadata; all must hold. An empty list matches everything.
	Match []MetadataMatcher `json:"match,omitempty"`
	// Cluster is the destination, unless WeightedClusters is set.
	Cluster string `json:"cluster,omitempty"`
	// WeightedClusters splits traffic by weight.
	WeightedClusters []WeightedCluster `json:"weightedClusters,omitempty"`
	// HashPolicy names the metadata keys a consistent-hash load balancer hashes.
	HashPolicy []string `json:"hashPolicy,omitempty"`
	// RequestMutation edits the request's metadata on the wire before it is sent upstream.
	RequestMutation []codec.KeyValue `json:"requestMutation,omitempty"`
	// ResponseMutation edits the response's metadata before it is sent back downstream.
	ResponseMutation []codec.KeyValue `json:"responseMutation,omitempty"`
	// Timeout bounds a request from its arrival to its reply, every retry included; 0 means no limit. A
	// request that runs out is answered with the protocol's timeout error (response flag UT). (Envoy's
	// default of 15 s for a route without one is applied by the xDS translation, not here.)
	Timeout time.Duration `json:"timeout,omitempty"`
	// Retry says which failed requests are tried again, and how often; nil means none.
	Retry *RetryPolicy `json:"retry,omitempty"`
	// Mirrors receive a copy of a share of the route's requests; their replies are dropped.
	Mirrors []Mirror `json:"mirrors,omitempty"`
	// Fault injects delays and aborts into a share of the route's requests.
	Fault *Fault `json:"fault,omitempty"`
	// ConcurrencyLimit caps the route's requests in flight.
	ConcurrencyLimit *ConcurrencyLimit `json:"concurrencyLimit,omitempty"`
}

// RetryOn is a condition under which a failed try is retried.
type RetryOn string

// Retry conditions. Only ConnectFailure is safe for any request, since the request never left the proxy;
// the others may repeat a request the server has already acted on, so a route should ask for them only for
// idempotent methods. Oneway requests are never retried.
const (
	// RetryConnectFailure retries a request whose upstream connection could not be established.
	RetryConnectFailure RetryOn = "connect-failure"
	// RetryReset retries a request whose upstream connection closed or failed before the reply came.
	RetryReset RetryOn = "reset"
	// RetryTimeout retries a try that ran out of its per-try timeout.
	RetryTimeout RetryOn = "timeout"
	// RetryRetriableStatusCodes retries a reply whose status is one of RetryPolicy.RetriableStatusCodes.
	RetryRetriableStatusCodes RetryOn = "retriable-status-codes"
	// RetryFailed retries any reply the codec marks as failed (a non-OK status, an exception).
	RetryFailed RetryOn = "failed"
)

// RetryPolicy is how a route retries, in Envoy's terms.
type RetryPolicy struct {
	// RetryOn lists the conditions retried.
	RetryOn []RetryOn `json:"retryOn"`
	// NumRetries is how many retries a request may take, after its first try.
	NumRetries uint32 `json:"numRetries"`
	// PerTryTimeout bounds each try; 0 means each try may take what is left of the route's Timeout.
	PerTryTimeout time.Duration `json:"perTryTimeout,omitempty"`
	// RetriableStatusCodes are the protocol statuses (Dubbo 80, bRPC 2001, ...) that retriable-status-codes
	// retries.
	RetriableStatusCodes []int32 `json:"retriableStatusCodes,omitempty"`
	// BackOffBase and BackOffMax shape the jittered exponential wait between tries (Envoy: 25 ms and 10 times
	// the base when zero).
	BackOffBase time.Duration `json:"backOffBase,omitempty"`
	BackOffMax  time.Duration `json:"backOffMax,omitempty"`
}

// Mirror sends a copy of a share of requests to another cluster, fire and forget.
type Mirror struct {
	// Cluster receives the copies.
	Cluster string `json:"cluster"`
	// PerMillion is the share of requests mirrored, in millionths (1000000: all).
	PerMillion uint32 `json:"perMillion"`
}

// Fault injects failures into a route's requests, to test how clients cope.
type Fault struct {
	// Delay holds a share of requests this long before they go on.
	Delay time.Duration `json:"delay,omitempty"`
	// DelayPerMillion is the share of requests delayed, in millionths.
	DelayPerMillion uint32 `json:"delayPerMillion,omitempty"`
	// Abort is the error a share of requests is answered with instead of being sent upstream (its
	// codec.ErrorKind name: "no_healthy_upstream", "over_limit", "timeout", "unauthorized", ...).
	Abort string `json:"abort,omitempty"`
	// AbortPerMillion is the share of requests aborted, in millionths.
	AbortPerMillion uint32 `json:"abortPerMillion,omitempty"`
}

// ConcurrencyLimit caps requests in flight; a request over the cap is answered with the protocol's over-limit
// error (response flag UO).
type ConcurrencyLimit struct {
	// MaxRequests is the cap.
	MaxRequests uint32 `json:"maxRequests"`
	// PerKey, when set, applies the cap to each value of this metadata key separately (per method, say), rather
	// than to the route as a whole.
	PerKey string `json:"perKey,omitempty"`
}

// WeightedCluster is one branch of a weighted split.
type WeightedCluster struct {
	Name   string `json:"name"`
	Weight uint32 `json:"weight"`
}

// MatchKind is how a MetadataMatcher compares a value.
type MatchKind string

// Match kinds.
const (
	MatchExact   MatchKind = "exact"
	MatchPrefix  MatchKind = "prefix"
	MatchRegex   MatchKind = "regex" // RE2, matching the whole value
	MatchPresent MatchKind = "present"
)

// MetadataMatcher is a condition on one metadata key.
type MetadataMatcher struct {
	Key   string    `json:"key"`
	Kind  MatchKind `json:"kind"`
	Value string    `json:"value,omitempty"`
	// Invert negates the condition.
	Invert bool `json:"invert,omitempty"`
}

// LBPolicy is how a cluster picks an endpoint.
type LBPolicy string

// Load-balancing policies.
const (
	RoundRobin   LBPolicy = "ROUND_ROBIN"
	Random       LBPolicy = "RANDOM"
	LeastRequest LBPolicy = "LEAST_REQUEST"
	// RingHash and Maglev hash the metadata keys of the route's HashPolicy, so that equal keys go to the same
	// endpoint; a request without them is balanced at random.
	RingHash LBPolicy = "RING_HASH"
	Maglev   LBPolicy = "MAGLEV"
)

// DefaultConnectionsPerEndpoint is the size of a multiplexing endpoint's connection pool when a cluster sets
// none: measured with the benchmark harness (bench/README.md), four connections carry as many requests as
// the floor's one per client connection at 4 × 16 and more at 16 × 64, where one shared connection halved the
// throughput.
const DefaultConnectionsPerEndpoint = 4

// Cluster is a set of upstream endpoints.
type Cluster struct {
	// Name follows Istio's form, outbound|port|subset|host.
	Name string `json:"name"`
	// Service is what the destination_service* metric labels show.
	Service Service `json:"service"`
	// LB is the load-balancing policy (ROUND_ROBIN when empty).
	LB LBPolicy `json:"lb,omitempty"`
	// ConnectTimeout bounds dialling an endpoint (10s when zero).
	ConnectTimeout time.Duration `json:"connectTimeout,omitempty"`
	// IdleTimeout closes an upstream connection with nothing in flight for this long (0: never).
	IdleTimeout time.Duration `json:"idleTimeout,omitempty"`
	// ConnectionsPerEndpoint is how many connections requests to one endpoint share, for multiplexing
	// protocols (DefaultConnectionsPerEndpoint when zero). Each client connection sends on one of them.
	ConnectionsPerEndpoint int `json:"connectionsPerEndpoint,omitempty"`
	// Subset, when set, keeps only the endpoints whose labels include all of these.
	Subset map[string]string `json:"subset,omitempty"`
	// Endpoints are the upstream addresses.
	Endpoints []Endpoint `json:"endpoints"`
	// MinRingSize and MaxRingSize bound the ring of RING_HASH (Envoy's defaults, 1024 and 8M entries, when
	// zero).
	MinRingSize uint64 `json:"minRingSize,omitempty"`
	MaxRingSize uint64 `json:"maxRingSize,omitempty"`
	// MaglevTableSize is the size of MAGLEV's table, a prime (65537 when zero).
	MaglevTableSize uint64 `json:"maglevTableSize,omitempty"`
	// CircuitBreaker caps what the cluster may have outstanding; zero values mean no cap.
	CircuitBreaker CircuitBreaker `json:"circuitBreaker,omitzero"`
	// MaxRequestsPerConnection retires an upstream connection after this many requests (0: never).
	MaxRequestsPerConnection uint32 `json:"maxRequestsPerConnection,omitempty"`
	// Outlier ejects endpoints that keep failing; nil means no outlier detection.
	Outlier *OutlierDetection `json:"outlier,omitempty"`
	// PanicThreshold is the share of a priority's endpoints, in percent, below which too few are left to take
	// its load: the priority then balances over all of its endpoints, ejected or not (Envoy's
	// healthy_panic_threshold; the xDS translation applies Envoy's default of 50). 0 disables panic.
	PanicThreshold float64 `json:"panicThreshold,omitempty"`
}

// CircuitBreaker is a cluster's limits, as Envoy's circuit breaker thresholds of the default priority. A request
// over a limit is answered with the protocol's over-limit error (response flag UO). Zero means no limit.
type CircuitBreaker struct {
	// MaxConnections caps the upstream connections of the cluster's endpoints together.
	MaxConnections uint32 `json:"maxConnections,omitempty"`
	// MaxPendingRequests caps the requests waiting for a connection to be established.
	MaxPendingRequests uint32 `json:"maxPendingRequests,omitempty"`
	// MaxRequests caps the requests in flight.
	MaxRequests uint32 `json:"maxRequests,omitempty"`
	// MaxRetries caps the retries in flight.
	MaxRetries uint32 `json:"maxRetries,omitempty"`
	// RetryBudgetPercent, when set, caps retries in flight to this share of the requests in flight, but lets
	// RetryBudgetMinConcurrency retries through whatever the share (Envoy's retry budget; its default
	// minimum is 3). A budget replaces MaxRetries.
	RetryBudgetPercent        float64 `json:"retryBudgetPercent,omitempty"`
	RetryBudgetMinConcurrency uint32  `json:"retryBudgetMinConcurrency,omitempty"`
}

// OutlierDetection ejects an endpoint from its cluster's load balancing after consecutive failures, for
// BaseEjectionTime times the number of times it has been ejected (up to MaxEjectionTime), as Envoy does.
// Failures are replies the codec marks failed (Dubbo status, Thrift exception, bRPC error code, ...) and the
// proxy's own failures to reach the endpoint (connect failure, reset, timeout).
type OutlierDetection struct {
	// Consecutive5xx ejects after this many consecutive failures of either kind (0: never; Envoy's "5xx").
	Consecutive5xx uint32 `json:"consecutive5xx,omitempty"`
	// ConsecutiveGatewayFailure ejects after this many consecutive failures to reach the endpoint (connect
	// failure, reset, timeout), whatever the replies in between (0: never; Istio's consecutiveGatewayErrors).
	ConsecutiveGatewayFailure uint32 `json:"consecutiveGatewayFailure,omitempty"`
	// SplitLocalOrigin counts the proxy's own failures (connect failure, reset, timeout) apart, against
	// ConsecutiveLocalOriginFailure, and only replies against Consecutive5xx.
	SplitLocalOrigin              bool   `json:"splitLocalOrigin,omitempty"`
	ConsecutiveLocalOriginFailure uint32 `json:"consecutiveLocalOriginFailure,omitempty"`
	// Interval is how often ejections are reconsidered (10 s when zero).
	Interval time.Duration `json:"interval,omitempty"`
	// BaseEjectionTime is the first ejection's length (30 s when zero).
	BaseEjectionTime time.Duration `json:"baseEjectionTime,omitempty"`
	// MaxEjectionTime caps an ejection's length (300 s when zero).
	MaxEjectionTime time.Duration `json:"maxEjectionTime,omitempty"`
	// MaxEjectionPercent caps the share of the cluster's endpoints ejected at once; at least one endpoint may
	// always be ejected (10 when zero, as in Envoy).
	MaxEjectionPercent uint32 `json:"maxEjectionPercent,omitempty"`
}

// Service identifies a cluster's service for metrics.
type Service struct {
	Host      string `json:"host,omitempty"`
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

// Endpoint is one upstream address.
type Endpoint struct {
	// Address is host:port.
	Address string `json:"address"`
	// Labels select subsets; app, version and the workload name also feed the destination_* metric labels.
	Labels map[string]string `json:"labels,omitempty"`
	// Weight biases weighted load balancing (1 when zero).
	Weight uint32 `json:"weight,omitempty"`
	// Locality is the endpoint's region/zone/subzone, as Istio writes it; empty when unknown.
	Locality string `json:"locality,omitempty"`
	// Priority orders endpoints for failover: requests go to priority 0 while enough of it is healthy, and
	// spill over to the next priorities as its endpoints are ejected (Envoy's priority levels, with its
	// overprovisioning factor of 1.4). Controllers set it per proxy from localities.
	Priority uint32 `json:"priority,omitempty"`
}
