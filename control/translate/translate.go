// Package translate turns a model snapshot into the xDS resources one proxy needs. It is pure: no I/O, no
// clocks, the same input always gives the same output.
//
// The resources are the ones Aeraki's control plane and Istio produce for a meta-protocol service, so that
// an Aeraki data plane can be driven by Meltemi and the other way round: Envoy v3 listeners carrying the
// MetaProtocolProxy network filter, MetaRDS route configurations (Envoy's RouteConfiguration used as Aeraki's
// carrier), Istio-named clusters and their load assignments.
package translate

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/meltemi-mesh/meltemi/control/model"
)

// Mode is how a proxy is deployed; it travels in the xDS node metadata as MODE.
type Mode string

// Proxy modes.
const (
	// Local binds every meta-protocol port on every service address (the one-machine mesh).
	Local Mode = "local"
	// Sidecar serves the workload it runs beside (outbound and inbound).
	Sidecar Mode = "sidecar"
	// Gateway serves the listeners of a gateway.
	Gateway Mode = "gateway"
)

// ErrModeNotSupported is returned for a proxy mode the translator cannot serve yet.
var ErrModeNotSupported = errors.New("proxy mode not supported yet")

// Node is the identity of a proxy as its xDS node tells it.
type Node struct {
	// ID is the xDS node id.
	ID string
	// Mode decides which resources the proxy gets.
	Mode Mode
	// Namespace is the workload's namespace (Istio's NAMESPACE node metadata); it will scope what a
	// sidecar sees.
	Namespace string
	// Workload is the workload's name (Istio's WORKLOAD_NAME).
	Workload string
	// Labels are the workload's labels (Istio's LABELS).
	Labels map[string]string
	// Locality is where the proxy runs, "region/zone/subzone" (the xDS node's locality): with outlier
	// detection, endpoints nearer to it come first. Empty when unknown, and then every endpoint is equal.
	Locality string
}

// Resources are the xDS resources of one proxy, each list sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Routes    []*routev3.RouteConfiguration
}

// Translate computes the resources node needs from s.
//
// Local mode is served in full. Sidecar and Gateway return ErrModeNotSupported rather than the local set:
// a sidecar given local-mode listeners would try to bind the services' own addresses in its pod, which is
// wrong in a way that fails late and confusingly; refusing says plainly what is missing.
func Translate(s *model.Snapshot, node Node) (*Resources, error) {
	if s == nil {
		return nil, errors.New("translate: no snapshot")
	}
	switch node.Mode {
	case Local:
		return translate(s, localScope(s), node)
	case Sidecar, Gateway:
		// TODO: sidecar (outbound listeners on the services' ports, captured rather than bound, plus an
		// inbound listener for the workload), scoped by sidecarScope; and gateway.
		return nil, fmt.Errorf("node %q: mode %q: %w", node.ID, node.Mode, ErrModeNotSupported)
	case "":
		return nil, fmt.Errorf("node %q: mode is required (local, sidecar or gateway)", node.ID)
	default:
		return nil, fmt.Errorf("node %q: unknown mode %q (local, sidecar or gateway)", node.ID, node.Mode)
	}
}

// scope is what one proxy is given: the listeners it binds (with the route configurations they name) and
// the services whose clusters it may send to. Every mode computes one; translation after that is shared.
type scope struct {
	listeners []model.Listener
	services  []*model.Service
}

// localScope is everything: a local proxy stands for every client on the machine, so it binds every
// meta-protocol address and may send to every meta-protocol service.
func localScope(s *model.Snapshot) scope {
	return scope{listeners: s.Listeners, services: s.MetaProtocolServices()}
}

// sidecarScope is the seam for sidecars: the services a workload in namespace may see (their ServiceEntry's
// exportTo, and the namespace's own), and the listeners of those. Not wired until sidecar mode is.
func sidecarScope(s *model.Snapshot, node Node) scope {
	var out scope
	visible := map[*model.Service]bool{}
	for _, svc := range s.MetaProtocolServices() {
		if exportedTo(svc.Entry, node.Namespace) {
			visible[svc] = true
			out.services = append(out.services, svc)
		}
	}
	for _, l := range s.Listeners {
		if visible[l.Service] {
			out.listeners = append(out.listeners, l)
		}
	}
	return out
}

// exportedTo applies Istio's exportTo to a ServiceEntry: empty or "*" is every namespace, "." its own.
func exportedTo(se *model.ServiceEntry, namespace string) bool {
	to := se.Spec.GetExportTo()
	if len(to) == 0 {
		return true
	}
	for _, ns := range to {
		if ns == "*" || ns == namespace || (ns == "." && se.Namespace == namespace) {
			return true
		}
	}
	return false
}

func translate(s *model.Snapshot, sc scope, node Node) (*Resources, error) {
	out := &Resources{}
	routeNames := map[string]bool{}
	for _, l := range sc.listeners {
		if l.Service == nil || l.Port == nil || !l.Port.MetaProtocol() {
			return nil, fmt.Errorf("listener %s: no meta-protocol service port", l.Address)
		}
		lis, err := listener(l)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", l.Address, err)
		}
		out.Listeners = append(out.Listeners, lis)
		// Listeners on several addresses of one service share its route configuration.
		name := RouteConfigName(l.Service.Host, l.Port.Number)
		if routeNames[name] {
			continue
		}
		routeNames[name] = true
		rc, err := routeConfiguration(s, l.Service, l.Port)
		if err != nil {
			return nil, fmt.Errorf("route configuration %s: %w", name, err)
		}
		out.Routes = append(out.Routes, rc)
	}
	for _, svc := range sc.services {
		cs, las, err := serviceClusters(svc, node)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", svc.Host, err)
		}
		out.Clusters = append(out.Clusters, cs...)
		out.Endpoints = append(out.Endpoints, las...)
	}
	cs, las, err := rateLimitClusters(sc.services, node)
	if err != nil {
		return nil, err
	}
	out.Clusters = append(out.Clusters, cs...)
	out.Endpoints = append(out.Endpoints, las...)
	slices.SortFunc(out.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(out.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(out.Clusters, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(out.Endpoints, func(a, b *endpointv3.ClusterLoadAssignment) int {
		return cmp.Compare(a.GetClusterName(), b.GetClusterName())
	})
	return out, nil
}
