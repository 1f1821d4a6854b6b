package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// MetaRouter is the traffic policy of one MetaProtocol service: routes, mirroring, metadata
// mutation and rate limits. It lives in one namespace but applies mesh-wide, as in Aeraki.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories={aeraki-io,metaprotocol-aeraki-io}
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Host",type=string,JSONPath=".spec.hosts[0]"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type MetaRouter struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the policy.
	Spec MetaRouterSpec `json:"spec"`
	// Status is what the controller reports about this object.
	// +optional
	Status Status `json:"status,omitzero"`
}

// MetaRouterSpec is the policy of a MetaRouter.
type MetaRouterSpec struct {
	// Hosts holds the fully qualified host of the service the policy applies to. Aeraki accepts
	// exactly one host, and so does Meltemi.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=1
	Hosts []string `json:"hosts,omitempty"`
	// Gateways are the gateways the policy applies to, as namespace/name.
	// +optional
	Gateways []string `json:"gateways,omitempty"`
	// Routes are tried in order; the first whose match succeeds takes the request.
	// +optional
	Routes []MetaRoute `json:"routes,omitempty"`
	// LocalRateLimit limits requests with token buckets kept in each proxy.
	// +optional
	LocalRateLimit *LocalRateLimit `json:"localRateLimit,omitempty"`
	// GlobalRateLimit limits requests by asking an Envoy rate limit service.
	// +optional
	GlobalRateLimit *GlobalRateLimit `json:"globalRateLimit,omitempty"`
	// ExportTo lists the namespaces that see this policy, as in Istio ("." is the object's own
	// namespace, "*" all namespaces); empty means all.
	// +optional
	ExportTo []string `json:"exportTo,omitempty"`
}

// MetaRoute sends the requests its match selects to weighted destinations.
type MetaRoute struct {
	// Name of the route, shown in stats and logs.
	// +optional
	Name string `json:"name,omitempty"`
	// Match selects requests by their metadata; absent, the route takes every request.
	// +optional
	Match *MetaRouteMatch `json:"match,omitempty"`
	// Route lists the destinations and their weights.
	// +optional
	Route []MetaRouteDestination `json:"route,omitempty"`
	// Mirror receives a copy of the selected requests; its answers are dropped.
	// +optional
	Mirror *Destination `json:"mirror,omitempty"`
	// MirrorPercentage is the share of requests mirrored; all of them when absent.
	// +optional
	MirrorPercentage *Percent `json:"mirrorPercentage,omitempty"`
	// RequestMutation sets metadata on each request; what a key means is up to the codec.
	// +optional
	RequestMutation []KeyValue `json:"requestMutation,omitempty"`
	// ResponseMutation sets metadata on each response; what a key means is up to the codec.
	// +optional
	ResponseMutation []KeyValue `json:"responseMutation,omitempty"`
	// Timeout bounds a request from its arrival to its reply, retries included, e.g. "2s"; "0s"
	// means no limit. Absent, the proxy's default applies (15s, as in Envoy). A request that runs
	// out is answered with the protocol's timeout error. (Meltemi's addition; Aeraki has none.)
	// +optional
	Timeout *Duration `json:"timeout,omitempty"`
	// Retries says which failed requests are tried again. Absent, a request whose connection
	// could not be established is retried twice (the one failure that is safe to retry for any
	// method); "attempts: 0" turns retries off. (Meltemi's addition.)
	// +optional
	Retries *RetryPolicy `json:"retries,omitempty"`
	// Fault delays or aborts a share of the route's requests, to test how clients cope.
	// (Meltemi's addition.)
	// +optional
	Fault *FaultInjection `json:"fault,omitempty"`
	// ConcurrencyLimit caps the route's requests in flight; a request over the cap is answered
	// with the protocol's over-limit error. (Meltemi's addition.)
	// +optional
	ConcurrencyLimit *ConcurrencyLimit `json:"concurrencyLimit,omitempty"`
}

// RetryPolicy is how a route retries failed requests, in Istio's terms. Retrying on anything
// but connect-failure may send a request again that the server already acted on: asking for
// reset, timeout or statuses states that the route's methods are idempotent. Oneway requests are
// never retried.
type RetryPolicy struct {
	// Attempts is how many retries a request may take after its first try; 0 turns retries off.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Attempts uint32 `json:"attempts,omitempty"`
	// PerTryTimeout bounds each try, e.g. "500ms"; absent, a try may take what is left of the
	// route's timeout.
	// +optional
	PerTryTimeout *Duration `json:"perTryTimeout,omitempty"`
	// RetryOn lists, comma-separated, the failures retried: connect-failure (the request never
	// left the proxy), reset (the connection failed before the reply), timeout (a try ran out of
	// perTryTimeout), retriable-status-codes (a reply with one of retriableStatusCodes), failed
	// (any reply the protocol marks as failed), and Envoy's aliases 5xx (all but
	// retriable-status-codes) and gateway-error (connect-failure, reset, timeout). Absent:
	// connect-failure.
	// +kubebuilder:validation:Pattern=`^\s*(connect-failure|reset|timeout|retriable-status-codes|failed|5xx|gateway-error)\s*(,\s*(connect-failure|reset|timeout|retriable-status-codes|failed|5xx|gateway-error)\s*)*$`
	// +optional
	RetryOn string `json:"retryOn,omitempty"`
	// RetriableStatusCodes are the protocol's own statuses that retriable-status-codes retries
	// (Dubbo 80, bRPC 2001, tRPC 111, ...).
	// +optional
	RetriableStatusCodes []int32 `json:"retriableStatusCodes,omitempty"`
}

// FaultInjection delays and aborts a share of a route's requests. A request may be both delayed
// and then aborted.
type FaultInjection struct {
	// Delay holds a share of requests before they go on.
	// +optional
	Delay *FaultDelay `json:"delay,omitempty"`
	// Abort answers a share of requests with an error instead of sending them upstream.
	// +optional
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay holds a share of requests for a fixed time.
type FaultDelay struct {
	// FixedDelay is how long a delayed request is held, e.g. "100ms".
	FixedDelay Duration `json:"fixedDelay"`
	// Percentage is the share of requests delayed; all of them when absent.
	// +optional
	Percentage *Percent `json:"percentage,omitempty"`
}

// FaultAbort answers a share of requests with one of the protocol's own error replies.
type FaultAbort struct {
	// ErrorKind is the error the client gets, in the protocol's own form (for Dubbo,
	// no_healthy_upstream is status 80).
	// +kubebuilder:validation:Enum=route_not_found;no_healthy_upstream;bad_response;unspecified;over_limit;timeout;unauthorized;bad_request
	ErrorKind string `json:"errorKind"`
	// Percentage is the share of requests aborted; all of them when absent.
	// +optional
	Percentage *Percent `json:"percentage,omitempty"`
}

// ConcurrencyLimit caps a route's requests in flight, as a whole or for each value of one
// metadata key.
type ConcurrencyLimit struct {
	// MaxRequests is the cap.
	// +kubebuilder:validation:Minimum=1
	MaxRequests uint32 `json:"maxRequests"`
	// PerKey, when set, caps the requests of each value of this metadata key apart (e.g. method:
	// each method may have maxRequests in flight).
	// +optional
	PerKey string `json:"perKey,omitempty"`
}

// MetaRouteMatch selects requests by the metadata the codec extracts (e.g. interface, method).
type MetaRouteMatch struct {
	// Attributes maps a metadata key to the condition its value must meet; all must hold.
	// +optional
	Attributes map[string]StringMatch `json:"attributes,omitempty"`
}

// StringMatch is a condition on one metadata value. At most one form is set; regex "*" only
// checks that the key is present.
//
// +kubebuilder:validation:MaxProperties=1
type StringMatch struct {
	// Exact matches the whole value.
	// +optional
	Exact *string `json:"exact,omitempty"`
	// Prefix matches the start of the value.
	// +optional
	Prefix *string `json:"prefix,omitempty"`
	// Regex is an RE2 expression that must match the whole value.
	// +optional
	Regex *string `json:"regex,omitempty"`
}

// MetaRouteDestination is one weighted destination of a route.
type MetaRouteDestination struct {
	// Destination is the service (and subset) the requests go to.
	Destination Destination `json:"destination"`
	// Weight is this destination's share of the route's requests, relative to the others'.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Weight uint32 `json:"weight,omitempty"`
}

// Destination names a service of the mesh, optionally a subset and port of it.
type Destination struct {
	// Host is the service's name in the service registry.
	Host string `json:"host"`
	// Subset is a subset named in the host's DestinationRule.
	// +optional
	Subset string `json:"subset,omitempty"`
	// Port picks one port of the service; needed only when it has several.
	// +optional
	Port *PortSelector `json:"port,omitempty"`
}

// PortSelector picks a port by number.
type PortSelector struct {
	// Number is the port number.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Number uint32 `json:"number,omitempty"`
}

// Percent is a percentage from 0 to 100.
type Percent struct {
	// Value is the percentage.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	Value float64 `json:"value,omitempty"`
}

// KeyValue is one metadata mutation.
type KeyValue struct {
	// Key is the metadata key.
	Key string `json:"key"`
	// Value is the value to set.
	Value string `json:"value"`
}

// LocalRateLimit limits requests with token buckets kept in each proxy. A request takes a token
// from the bucket of the first condition it matches, else from the top-level bucket; with
// neither, it passes.
type LocalRateLimit struct {
	// TokenBucket is the bucket for requests that match no condition.
	// +optional
	TokenBucket *TokenBucket `json:"tokenBucket,omitempty"`
	// Conditions give selected requests their own bucket, tried in order.
	// +optional
	Conditions []LocalRateLimitCondition `json:"conditions,omitempty"`
}

// TokenBucket holds up to MaxTokens tokens and gets TokensPerFill more every FillInterval.
type TokenBucket struct {
	// MaxTokens is the bucket's size, and how many tokens it starts with.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxTokens uint32 `json:"maxTokens,omitempty"`
	// TokensPerFill is how many tokens each fill adds; 1 when absent.
	// +kubebuilder:validation:Minimum=0
	// +optional
	// +nullable
	TokensPerFill *uint32 `json:"tokensPerFill,omitempty"`
	// FillInterval is the time between fills, e.g. "60s".
	FillInterval Duration `json:"fillInterval"`
}

// LocalRateLimitCondition gives the requests its match selects their own bucket.
type LocalRateLimitCondition struct {
	// Match selects the requests.
	Match MetaRouteMatch `json:"match"`
	// TokenBucket is their bucket.
	TokenBucket TokenBucket `json:"tokenBucket"`
}

// GlobalRateLimit asks an Envoy rate limit service about each request its match selects.
type GlobalRateLimit struct {
	// Match selects the requests that are checked.
	Match MetaRouteMatch `json:"match"`
	// Domain is the rate limit domain sent with each check.
	Domain string `json:"domain"`
	// RequestTimeout bounds the wait for the service's answer, e.g. "0.5s".
	// +optional
	RequestTimeout *Duration `json:"requestTimeout,omitempty"`
	// DenyOnFail refuses requests when the service cannot answer; they pass when false.
	// +optional
	DenyOnFail bool `json:"denyOnFail,omitempty"`
	// RateLimitService is the cluster name of the rate limit service,
	// e.g. outbound|8081||rate-limit-server.istio-system.svc.cluster.local.
	RateLimitService string `json:"rateLimitService"`
	// Descriptors turn request metadata into the descriptor entries sent with each check.
	// +kubebuilder:validation:MinItems=1
	Descriptors []GlobalRateLimitDescriptor `json:"descriptors"`
}

// GlobalRateLimitDescriptor makes one descriptor entry: key DescriptorKey, value the request's
// metadata value under Property.
type GlobalRateLimitDescriptor struct {
	// Property is the metadata key whose value becomes the entry's value.
	Property string `json:"property"`
	// DescriptorKey is the entry's key.
	DescriptorKey string `json:"descriptorKey"`
}

// MetaRouterList is a list of MetaRouters.
//
// +kubebuilder:object:root=true
type MetaRouterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the listed objects.
	Items []MetaRouter `json:"items"`
}
