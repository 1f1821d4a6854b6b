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
