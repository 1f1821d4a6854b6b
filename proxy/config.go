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
)

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
	// protocols (1 when zero).
	ConnectionsPerEndpoint int `json:"connectionsPerEndpoint,omitempty"`
	// Subset, when set, keeps only the endpoints whose labels include all of these.
	Subset map[string]string `json:"subset,omitempty"`
	// Endpoints are the upstream addresses.
	Endpoints []Endpoint `json:"endpoints"`
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
}
