package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	metaprotocol "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
)

// RedisDestination is how proxies connect to the servers of a Redis host: connection limits,
// whether the servers form a Redis cluster, and the credentials they want.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories={aeraki-io,redis-aeraki-io},shortName=rd
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Host",type=string,JSONPath=".spec.host"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type RedisDestination struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the policy.
	Spec RedisDestinationSpec `json:"spec"`
	// Status is what the controller reports about this object.
	// +optional
	Status metaprotocol.Status `json:"status,omitzero"`
}

// RedisDestinationSpec is the policy of a RedisDestination.
type RedisDestinationSpec struct {
	// Host is the Redis service's name in the service registry.
	// +kubebuilder:validation:MinLength=1
	Host string `json:"host"`
	// TrafficPolicy is how proxies connect to it.
	// +optional
	TrafficPolicy *RedisTrafficPolicy `json:"trafficPolicy,omitempty"`
}

// RedisTrafficPolicy is how proxies connect to a Redis service.
type RedisTrafficPolicy struct {
	// ConnectionPool bounds and describes the connections to each server.
	// +optional
	ConnectionPool *RedisConnectionPool `json:"connectionPool,omitempty"`
}

// RedisConnectionPool are the settings of the connections to each server of a Redis service.
type RedisConnectionPool struct {
	// TCP are Istio's TCP connection settings.
	// +optional
	TCP *TCPSettings `json:"tcp,omitempty"`
	// Redis says how to speak to the servers.
	// +optional
	Redis *RedisUpstream `json:"redis,omitempty"`
}

// TCPSettings are the fields of Istio's ConnectionPoolSettings.TCPSettings, in its JSON form.
type TCPSettings struct {
	// MaxConnections bounds the connections to each server.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxConnections int32 `json:"maxConnections,omitempty"`
	// ConnectTimeout bounds connecting, e.g. "10s".
	// +optional
	ConnectTimeout *metaprotocol.Duration `json:"connectTimeout,omitempty"`
	// TCPKeepalive turns on keepalive probes.
	// +optional
	TCPKeepalive *TCPKeepalive `json:"tcpKeepalive,omitempty"`
	// MaxConnectionDuration closes connections older than this.
	// +optional
	MaxConnectionDuration *metaprotocol.Duration `json:"maxConnectionDuration,omitempty"`
	// IdleTimeout closes connections idle for this long.
	// +optional
	IdleTimeout *metaprotocol.Duration `json:"idleTimeout,omitempty"`
}

// TCPKeepalive are keepalive probe settings, as Istio's.
type TCPKeepalive struct {
	// Probes is how many unanswered probes drop the connection.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Probes uint32 `json:"probes,omitempty"`
	// Time is the idle time before the first probe.
	// +optional
	Time *metaprotocol.Duration `json:"time,omitempty"`
	// Interval is the time between probes.
	// +optional
	Interval *metaprotocol.Duration `json:"interval,omitempty"`
}

// RedisMode says whether the servers are independent (PROXY) or form a Redis cluster.
// +kubebuilder:validation:Enum=PROXY;CLUSTER
type RedisMode string

// Redis modes, with Aeraki's enum numbers in comments.
const (
	ModeProxy   RedisMode = "PROXY"   // 0, the default
	ModeCluster RedisMode = "CLUSTER" // 1
)

// RedisUpstream says how to speak to the servers of a Redis service.
type RedisUpstream struct {
	// Mode is PROXY (the default: keys are spread over the servers by the proxy) or CLUSTER (the
	// servers form a Redis cluster, whose slots the proxy discovers).
	// +optional
	Mode RedisMode `json:"mode,omitempty"`
	// Auth is what the servers want clients to authenticate with.
	// +optional
	Auth *Auth `json:"auth,omitempty"`
	// DiscoveryEndpoints are where CLUSTER mode asks for the cluster's slots, as host:port.
	// +optional
	DiscoveryEndpoints []string `json:"discoveryEndpoints,omitempty"`
}

// Auth is a Redis credential: in a Secret of the object's namespace, or written in place. Exactly
// one is set.
//
// +kubebuilder:validation:MinProperties=1
// +kubebuilder:validation:MaxProperties=1
type Auth struct {
	// Secret names a Secret holding the credential.
	// +optional
	Secret *SecretReference `json:"secret,omitempty"`
	// Plain is the credential itself.
	// +optional
	Plain *PlainAuth `json:"plain,omitempty"`
}

// SecretReference names a Secret and its keys.
type SecretReference struct {
	// Name is the Secret's name, in the object's namespace.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// PasswordField is the key of the password; "password" by default.
	// +optional
	PasswordField string `json:"passwordField,omitempty"`
	// UsernameField is the key of the user name; "username" by default.
	// +optional
	UsernameField string `json:"usernameField,omitempty"`
}

// PlainAuth is a credential written in place.
type PlainAuth struct {
	// Password is the password.
	// +kubebuilder:validation:MinLength=1
	Password string `json:"password"`
	// Username is the user name (Redis 6 ACLs); empty for the default user.
	// +optional
	Username string `json:"username,omitempty"`
}

// RedisDestinationList is a list of RedisDestinations.
//
// +kubebuilder:object:root=true
type RedisDestinationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the listed objects.
	Items []RedisDestination `json:"items"`
}
