package translate

import (
	"net/netip"
	"strconv"
)

// Names Aeraki's data plane looks resources and extensions up by; they must be spelled exactly so.
const (
	// MetaProtocolProxyFilter is the network filter name Aeraki gives the MetaProtocol proxy.
	MetaProtocolProxyFilter = "envoy.filters.network.meta_protocol_proxy"
	// RouterFilter is the MetaProtocol router, the last filter of every chain.
	RouterFilter = "aeraki.meta_protocol.filters.router"
	// LocalRateLimitFilter is the MetaProtocol local rate limit filter.
	LocalRateLimitFilter = "aeraki.meta_protocol.filters.local_ratelimit"
	// DefaultRouteName names the one route of a service that has no MetaRouter, as in Aeraki.
	DefaultRouteName = "default"
	// VirtualHostName is the one virtual host of a MetaRDS carrier, as Aeraki names it.
	VirtualHostName = "dummy"
)

// ListenerName names the listener bound at addr: "{address}_{port}", the form Istio gives its listeners.
func ListenerName(addr netip.AddrPort) string {
	return addr.Addr().String() + "_" + strconv.FormatUint(uint64(addr.Port()), 10)
}

// RouteConfigName names the MetaRDS route configuration of a service port: "{host}_{port}", as in Aeraki.
func RouteConfigName(host string, port uint32) string {
	return host + "_" + strconv.FormatUint(uint64(port), 10)
}

// ClusterName names an outbound cluster the way Istio does: "outbound|{port}|{subset}|{host}".
func ClusterName(port uint32, subset, host string) string {
	return "outbound|" + strconv.FormatUint(uint64(port), 10) + "|" + subset + "|" + host
}
