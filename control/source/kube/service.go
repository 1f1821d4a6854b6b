package kube

import (
	"cmp"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/meltemi-mesh/meltemi/control/model"
)

// KindService is the kind of the model objects made from Kubernetes Services: ServiceEntries, as
// far as the model is concerned, named after the Service they stand for.
const KindService model.Kind = "Service"

// Labels and annotations read from cluster objects, as Istio reads them.
const (
	// labelLocality on a pod overrides its node's topology labels: region.zone.subzone.
	labelLocality = "istio-locality"
	labelRegion   = "topology.kubernetes.io/region"
	labelZone     = "topology.kubernetes.io/zone"
	labelSubzone  = "topology.istio.io/subzone"
	// annotationExportTo on a Service is the exportTo of its ServiceEntry, comma-separated.
	annotationExportTo = "networking.istio.io/exportTo"
)

// serviceInputs are the cluster objects a Service's ServiceEntry is made from.
type serviceInputs struct {
	service *corev1.Service
	// slices are the EndpointSlices of the Service (label kubernetes.io/service-name).
	slices []*discoveryv1.EndpointSlice
	// pods and nodes are looked up by the endpoints' targetRef and node name; either may be missing.
	pods  map[string]*corev1.Pod // by namespace/name
	nodes map[string]map[string]string
}

// convertedService is a Service turned into what the model understands, and what was wrong with it.
type convertedService struct {
	entry    *model.ServiceEntry
	problems []model.Problem
	// ports maps the index of each port of the entry to that of the Service port it comes from, so
	// that problems the model finds name the Service's own fields (the entry's Meta.FieldOf).
	ports []int
}

// convertService makes the ServiceEntry-equivalent of a Service, as Istio's Kubernetes registry
// does: host name.namespace.svc.<domain>, the cluster IPs as addresses, its TCP ports (classified
// by the model from their names and appProtocols), resolution STATIC with the ready endpoints of
// its EndpointSlices (each with its pod's labels, locality and service account), or DNS for an
// ExternalName Service. A headless Service has no address, which local mode allocates.
func convertService(in serviceInputs, domain, source string) convertedService {
	svc := in.service
	key := model.Key{Kind: KindService, Namespace: svc.Namespace, Name: svc.Name}
	meta := model.Meta{
		Kind:        KindService,
		Namespace:   svc.Namespace,
		Name:        svc.Name,
		Labels:      svc.Labels,
		Annotations: svc.Annotations,
		Origin:      model.ClusterOrigin(source, key, svc.CreationTimestamp.Time),
	}
	out := convertedService{}
	warn := func(field, format string, args ...any) {
		out.problems = append(out.problems, model.Problem{Origin: meta.Origin, Key: key, Field: field,
			Message: fmt.Sprintf(format, args...), Severity: model.SeverityWarning})
	}
	spec := &networking.ServiceEntry{
		Hosts:      []string{fmt.Sprintf("%s.%s.svc.%s", svc.Name, svc.Namespace, domain)},
		Location:   networking.ServiceEntry_MESH_INTERNAL,
		Resolution: networking.ServiceEntry_STATIC,
		ExportTo:   exportTo(svc.Annotations[annotationExportTo]),
	}
	for i, p := range svc.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			// Meta-protocols run over TCP only; say so when the name or appProtocol asks for one.
			if looksMetaProtocol(p) {
				warn(fmt.Sprintf("spec.ports[%d].protocol", i), "a meta-protocol port must be TCP, not %s; not served", p.Protocol)
			}
			continue
		}
		sp := &networking.ServicePort{Number: uint32(p.Port), Name: p.Name, Protocol: ptrValue(p.AppProtocol)}
		if p.TargetPort.IntValue() > 0 {
			// A named targetPort is resolved per pod; the EndpointSlices carry the numbers.
			sp.TargetPort = uint32(p.TargetPort.IntValue())
		}
		spec.Ports = append(spec.Ports, sp)
		out.ports = append(out.ports, i)
	}
	switch {
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		spec.Resolution = networking.ServiceEntry_DNS
		spec.Location = networking.ServiceEntry_MESH_EXTERNAL
		if name := strings.TrimSuffix(svc.Spec.ExternalName, "."); name != "" {
			spec.Endpoints = []*networking.WorkloadEntry{{Address: name}}
		}
	default:
		for _, ip := range clusterIPs(svc) {
			spec.Addresses = append(spec.Addresses, ip)
		}
		spec.Endpoints = endpoints(in)
	}
	ports := out.ports
	meta.FieldOf = func(field string) string { return serviceField(field, ports) }
	out.entry = &model.ServiceEntry{Meta: meta, Spec: spec}
	return out
}

// clusterIPs returns the Service's cluster IPs; none for a headless Service.
func clusterIPs(svc *corev1.Service) []string {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []string
	for _, ip := range ips {
		if _, err := netip.ParseAddr(ip); err == nil {
			out = append(out, ip) // "None" (headless) is not an address
		}
	}
	return out
}

// endpoints returns the ready endpoints of the Service's EndpointSlices, each once (the first slice
// by name wins, should two list one address), sorted by address so that the order slices and
// endpoints arrive in changes nothing.
func endpoints(in serviceInputs) []*networking.WorkloadEntry {
	slices.SortFunc(in.slices, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
	seen := map[string]bool{}
	var out []*networking.WorkloadEntry
	for _, es := range in.slices {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN slices are deprecated and name no address a proxy can dial as such
		}
		ports := map[string]uint32{}
		for _, p := range es.Ports {
			if p.Port != nil && (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) {
				ports[ptrValue(p.Name)] = uint32(*p.Port)
			}
		}
		for _, ep := range es.Endpoints {
			// Ready unset means ready; terminating endpoints are not ready.
			if len(ep.Addresses) == 0 || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			addr := ep.Addresses[0] // the others are the same endpoint's, and consumers use the first
			if seen[addr] {
				continue
			}
			seen[addr] = true
			we := &networking.WorkloadEntry{Address: addr, Ports: ports}
			var pod *corev1.Pod
			if ref := ep.TargetRef; ref != nil && ref.Kind == "Pod" {
				pod = in.pods[cmp.Or(ref.Namespace, es.Namespace)+"/"+ref.Name]
			}
			nodeName := ptrValue(ep.NodeName)
			if pod != nil {
				we.Labels = pod.Labels
				we.ServiceAccount = pod.Spec.ServiceAccountName
				nodeName = cmp.Or(nodeName, pod.Spec.NodeName)
			}
			we.Locality = locality(pod, in.nodes[nodeName], ptrValue(ep.Zone))
			out = append(out, we)
		}
	}
	slices.SortStableFunc(out, func(a, b *networking.WorkloadEntry) int { return compareAddresses(a.Address, b.Address) })
	return out
}

func compareAddresses(a, b string) int {
	x, errx := netip.ParseAddr(a)
	y, erry := netip.ParseAddr(b)
	if errx != nil || erry != nil {
		return cmp.Compare(a, b)
	}
	return x.Compare(y)
}

// locality is Istio's "region/zone/subzone" for an endpoint: the pod's istio-locality label, else
// its node's topology labels, else the zone its EndpointSlice gives. Trailing empty parts are left
// out; empty when nothing is known.
func locality(pod *corev1.Pod, nodeLabels map[string]string, sliceZone string) string {
	if pod != nil {
		if l := pod.Labels[labelLocality]; l != "" {
			// Label values cannot hold '/', so Istio's label separates the parts with dots.
			return strings.TrimRight(strings.ReplaceAll(l, ".", "/"), "/")
		}
	}
	region, zone, subzone := nodeLabels[labelRegion], cmp.Or(nodeLabels[labelZone], sliceZone), nodeLabels[labelSubzone]
	return strings.TrimRight(region+"/"+zone+"/"+subzone, "/")
}

// exportTo reads the networking.istio.io/exportTo annotation: namespaces, "." or "*", comma-separated.
func exportTo(annotation string) []string {
	var out []string
	for ns := range strings.SplitSeq(annotation, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			out = append(out, ns)
		}
	}
	return out
}

// looksMetaProtocol reports whether a port's name or appProtocol asks for a meta-protocol, whatever
// codecs exist.
func looksMetaProtocol(p corev1.ServicePort) bool {
	name := strings.ToLower(p.Name)
	return strings.HasPrefix(name, "tcp-metaprotocol") || strings.HasPrefix(name, "tcp-dubbo") ||
		strings.HasPrefix(name, "tcp-thrift") || strings.HasPrefix(strings.ToLower(ptrValue(p.AppProtocol)), "metaprotocol-")
}

// entryField matches the fields of a ServiceEntry that the model names in its problems.
var entryField = regexp.MustCompile(`^spec\.(ports|addresses|hosts|endpoints)(\[(\d+)\])?(\.protocol)?`)

// serviceField renames a field of the ServiceEntry made from a Service to the Service's field it
// comes from: ports by their index in the Service (ports[i] is the index of the entry's port i), addresses
// as clusterIPs, the host as the name.
func serviceField(field string, ports []int) string {
	m := entryField.FindStringSubmatch(field)
	if m == nil {
		return field
	}
	rest := field[len(m[0]):]
	switch m[1] {
	case "ports":
		if m[3] == "" {
			return "spec.ports" + m[4] + rest
		}
		i, _ := strconv.Atoi(m[3])
		if i < len(ports) {
			i = ports[i]
		}
		suffix := m[4]
		if suffix == ".protocol" {
			suffix = ".appProtocol"
		}
		return fmt.Sprintf("spec.ports[%d]%s%s", i, suffix, rest)
	case "addresses":
		return "spec.clusterIPs" + m[2] + m[4] + rest
	case "hosts":
		return "metadata.name"
	default:
		// Endpoints come from EndpointSlices, which the message names by address.
		return "endpoints"
	}
}

func ptrValue[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
