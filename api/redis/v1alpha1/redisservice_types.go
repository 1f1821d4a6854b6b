package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	metaprotocol "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
)

// RedisService is the traffic policy of Redis hosts: which keys go to which Redis service, mirrors,
// fault injection and the proxy's settings.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories={aeraki-io,redis-aeraki-io},shortName=rsvc
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Hosts",type=string,JSONPath=".spec.host"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type RedisService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the policy.
	Spec RedisServiceSpec `json:"spec"`
	// Status is what the controller reports about this object.
	// +optional
	Status metaprotocol.Status `json:"status,omitzero"`
}

// RedisServiceSpec is the policy of a RedisService.
type RedisServiceSpec struct {
	// Host lists the hosts clients address (e.g. redis.default.svc.cluster.local).
	// +kubebuilder:validation:MinItems=1
	Host []string `json:"host"`
	// Settings tune the proxy for these hosts.
	// +optional
	Settings *RedisSettings `json:"settings,omitempty"`
	// Redis routes keys by prefix to Redis services; the longest matching prefix wins.
	// +optional
	Redis []RedisRoute `json:"redis,omitempty"`
	// Faults are injected into the commands they select.
	// +optional
	Faults []RedisFault `json:"faults,omitempty"`
}

// ReadPolicy says which servers of a Redis cluster serve reads.
// +kubebuilder:validation:Enum=MASTER;PREFER_MASTER;REPLICA;PREFER_REPLICA;ANY
type ReadPolicy string

// Read policies, with Aeraki's enum numbers in comments.
const (
	ReadMaster        ReadPolicy = "MASTER"         // 0, the default
	ReadPreferMaster  ReadPolicy = "PREFER_MASTER"  // 1
	ReadReplica       ReadPolicy = "REPLICA"        // 2
	ReadPreferReplica ReadPolicy = "PREFER_REPLICA" // 3
	ReadAny           ReadPolicy = "ANY"            // 4
)

// RedisSettings tune the Redis proxy, as Envoy's Redis proxy settings do.
type RedisSettings struct {
	// CaseInsensitive makes key prefix matching ignore case.
	// +optional
	CaseInsensitive bool `json:"caseInsensitive,omitempty"`
	// OpTimeout bounds each command, from when it is written upstream, e.g. "0.5s".
	// +optional
	OpTimeout *metaprotocol.Duration `json:"opTimeout,omitempty"`
	// EnableCommandStats counts each command per upstream cluster.
	// +optional
	EnableCommandStats bool `json:"enableCommandStats,omitempty"`
	// MaxBufferSizeBeforeFlush batches commands upstream until this many bytes are buffered; 0 sends
	// each at once.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxBufferSizeBeforeFlush uint32 `json:"maxBufferSizeBeforeFlush,omitempty"`
	// BufferFlushTimeout sends a batch this long after its first command at the latest (3ms by default).
	// +optional
	BufferFlushTimeout *metaprotocol.Duration `json:"bufferFlushTimeout,omitempty"`
	// MaxUpstreamUnknownConnections bounds the connections opened to servers named by redirections
	// (100 by default).
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxUpstreamUnknownConnections *uint32 `json:"maxUpstreamUnknownConnections,omitempty"`
	// EnableHashtagging hashes only the {tag} of a key, so keys sharing a tag go to one server.
	// +optional
	EnableHashtagging bool `json:"enableHashtagging,omitempty"`
	// EnableRedirection follows MOVED and ASK answers of a Redis cluster.
	// +optional
	EnableRedirection bool `json:"enableRedirection,omitempty"`
	// ReadPolicy says which servers serve reads; MASTER by default.
	// +optional
	ReadPolicy ReadPolicy `json:"readPolicy,omitempty"`
	// Auth is what clients must authenticate with to the proxy.
	// +optional
	Auth *Auth `json:"auth,omitempty"`
}

// RedisRoute sends the keys its match selects to one Redis service.
type RedisRoute struct {
	// Match selects keys; absent, the route is the catch-all.
	// +optional
	Match *RedisRouteMatch `json:"match,omitempty"`
	// Route is where the keys go.
	Route RedisDestinationRef `json:"route"`
	// Mirror copies the commands to other services; their answers are dropped.
	// +optional
	Mirror []RedisMirror `json:"mirror,omitempty"`
}

// RedisRouteMatch selects keys.
type RedisRouteMatch struct {
	// Key matches keys by prefix.
	// +optional
	Key *KeyMatch `json:"key,omitempty"`
}

// KeyMatch matches keys that start with Prefix.
type KeyMatch struct {
	// Prefix is what a key must start with; the longest matching prefix wins.
	Prefix string `json:"prefix"`
	// RemovePrefix strips the prefix from the key sent upstream.
	// +optional
	RemovePrefix bool `json:"removePrefix,omitempty"`
}

// RedisDestinationRef names a Redis service of the mesh.
type RedisDestinationRef struct {
	// Host is the service's name in the service registry.
	// +kubebuilder:validation:MinLength=1
	Host string `json:"host"`
	// Port picks one port of the service; needed only when it has several.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port uint32 `json:"port,omitempty"`
}

// RedisMirror copies a route's commands to another service.
type RedisMirror struct {
	// Route is the service the copies go to.
	Route RedisDestinationRef `json:"route"`
	// Percentage is the share of commands copied; all of them when absent.
	// +optional
	Percentage *Percent `json:"percentage,omitempty"`
	// ExcludeReadCommands copies only the commands that write.
	// +optional
	ExcludeReadCommands bool `json:"excludeReadCommands,omitempty"`
}

// Percent is a percentage from 0 to 100.
type Percent struct {
	// Value is the percentage.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	Value float64 `json:"value,omitempty"`
}

// FaultType is what a fault does to a command.
// +kubebuilder:validation:Enum=DELAY;ERROR
type FaultType string

// Fault types, with Aeraki's enum numbers in comments.
const (
	FaultDelay FaultType = "DELAY" // 0, the default
	FaultError FaultType = "ERROR" // 1
)

// RedisFault delays some commands, or fails them (after the delay, if one is set).
type RedisFault struct {
	// Type is DELAY (the default) or ERROR.
	// +optional
	Type FaultType `json:"type,omitempty"`
	// Percentage is the share of the selected commands the fault applies to.
	// +optional
	Percentage *Percent `json:"percentage,omitempty"`
	// Delay is how long each selected command waits, e.g. "2s".
	// +optional
	Delay *metaprotocol.Duration `json:"delay,omitempty"`
	// Commands restricts the fault to these commands (e.g. GET); all but AUTH and PING when empty.
	// +optional
	Commands []string `json:"commands,omitempty"`
}

// RedisServiceList is a list of RedisServices.
//
// +kubebuilder:object:root=true
type RedisServiceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the listed objects.
	Items []RedisService `json:"items"`
}
