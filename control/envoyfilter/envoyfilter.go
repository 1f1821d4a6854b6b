// Package envoyfilter generates the Istio EnvoyFilters with which Aeraki's control plane programs Istio's
// Envoy sidecars for meta-protocol services, so that a cluster running Aeraki's Envoy-based data plane can
// take its configuration from Meltemi instead.
//
// For each meta-protocol port of a ServiceEntry, Aeraki writes one EnvoyFilter per address of the entry
// that replaces the tcp_proxy of the outbound listener {address}_{port} with the
// envoy.filters.network.meta_protocol_proxy network filter (routes over RDS from its own xDS server), and
// one that does the same on the virtualInbound listener's filter chain for the port, for the workloads the
// entry selects (routes inline, to the inbound cluster, after the MetaRouter's rate limits). Generate
// writes the same objects, with the same names, from a model snapshot, pointing RDS at Meltemi's
// controller; Meltemi's controller serves the routes in Aeraki's MetaRDS carrier form
// (docs/metards-carrier.md). Generation is pure: no I/O, no clock.
package envoyfilter

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	clientv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/translate"
)

// Names Aeraki's EnvoyFilters use; Envoy and Istio look them up as spelled here.
const (
	// TCPProxyFilter is the network filter the generated patches replace.
	TCPProxyFilter = "envoy.filters.network.tcp_proxy"
	// InboundListener is the listener through which Istio's sidecars receive all inbound traffic.
	InboundListener = "virtualInbound"
	// TypedStructType is the type URL of the wrapper that carries the filter config as JSON, so that Istio
	// need not know the MetaProtocolProxy message.
	TypedStructType = "type.googleapis.com/udpa.type.v1.TypedStruct"
	// MetaProtocolProxyType is the type URL of the filter config the TypedStruct carries.
	MetaProtocolProxyType = "type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy"
)

// Defaults of Options.
const (
	// DefaultXDSCluster names the cluster, defined in the sidecars' bootstrap, that reaches Meltemi's
	// controller.
	DefaultXDSCluster = "meltemi-xds"
	// DefaultRootNamespace is Istio's config root namespace, where an EnvoyFilter applies to every workload.
	DefaultRootNamespace = "istio-system"
)

// ManagedByLabel marks the EnvoyFilters Meltemi generates, so that a controller can find and prune them.
const ManagedByLabel = "app.kubernetes.io/managed-by"

// ManagedBy is ManagedByLabel's value.
const ManagedBy = "meltemi"

// Options say where the generated EnvoyFilters point their proxies and where they are put.
type Options struct {
	// XDSCluster is the name of the Envoy cluster, defined in the sidecars' bootstrap, that reaches
	// Meltemi's controller: the outbound filters fetch their routes (MetaRDS) from it. Aeraki's is
	// "aeraki-xds". Empty means DefaultXDSCluster.
	XDSCluster string `json:"xdsCluster,omitempty"`
	// RootNamespace is Istio's config root namespace, where the filters go unless NamespaceScoped is set
	// or the service's MetaRouter exports to namespaces ("*" in exportTo means this one). Empty means
	// DefaultRootNamespace.
	RootNamespace string `json:"rootNamespace,omitempty"`
	// NamespaceScoped puts each service's filters in its ServiceEntry's namespace, so that they apply to
	// that namespace's workloads only (Aeraki's --enable-envoy-filter-namespace-scope).
	NamespaceScoped bool `json:"namespaceScoped,omitempty"`
	// AccessLog, when set, gives every filter an access log (Istio's meshConfig.accessLogFile).
	AccessLog *AccessLog `json:"accessLog,omitempty"`
	// Tracing, when set, turns tracing on in every filter (Istio's meshConfig.enableTracing).
	Tracing *Tracing `json:"tracing,omitempty"`
}

// AccessLog is the access log every filter writes, as Istio's mesh config describes it.
type AccessLog struct {
	// Path is the file written, e.g. /dev/stdout (meshConfig.accessLogFile).
	Path string `json:"path"`
	// Encoding is TEXT or JSON (meshConfig.accessLogEncoding); empty means TEXT.
	Encoding string `json:"encoding,omitempty"`
	// Format replaces the default format (meshConfig.accessLogFormat): a format string for TEXT, a JSON
	// object of fields for JSON.
	Format string `json:"format,omitempty"`
}

// Tracing is the tracing every filter does, as Istio's mesh config describes it.
type Tracing struct {
	// Sampling is the percentage of requests traced at random (meshConfig.defaultConfig.tracing.sampling).
	Sampling float64 `json:"sampling"`
}

func (o Options) withDefaults() Options {
	o.XDSCluster = cmp.Or(o.XDSCluster, DefaultXDSCluster)
	o.RootNamespace = cmp.Or(o.RootNamespace, DefaultRootNamespace)
	return o
}

// Validate reports the first option that cannot be generated from, naming it.
func (o Options) Validate() error {
	o = o.withDefaults()
	if strings.ContainsAny(o.XDSCluster, " \t\n") {
		return fmt.Errorf("xdsCluster %q: a cluster name has no spaces", o.XDSCluster)
	}
	if errs := validation.IsDNS1123Label(o.RootNamespace); len(errs) > 0 {
		return fmt.Errorf("rootNamespace %q: %s", o.RootNamespace, strings.Join(errs, "; "))
	}
	if a := o.AccessLog; a != nil {
		if a.Path == "" {
			return errors.New("accessLog.path: a file is required")
		}
		if e := strings.ToUpper(a.Encoding); e != "" && e != "TEXT" && e != "JSON" {
			return fmt.Errorf("accessLog.encoding %q: TEXT or JSON", a.Encoding)
		}
		if _, err := accessLogFormat(a); err != nil {
			return fmt.Errorf("accessLog.format: %w", err)
		}
	}
	if t := o.Tracing; t != nil && (t.Sampling < 0 || t.Sampling > 100) {
		return fmt.Errorf("tracing.sampling %v: a percentage from 0 to 100", t.Sampling)
	}
	return nil
}

// Generate returns the EnvoyFilters for every meta-protocol port of the snapshot's ServiceEntries, sorted by
// namespace and name, and the problems that left something out (each naming its object and field). It
// returns an error only for invalid options.
func Generate(s *model.Snapshot, opts Options) ([]*clientv1alpha3.EnvoyFilter, []model.Problem, error) {
	if err := opts.Validate(); err != nil {
		return nil, nil, err
	}
	g := &generator{opts: opts.withDefaults(), snap: s, seen: map[string]bool{}}
	for _, se := range s.Objects.ServiceEntries {
		if err := g.serviceEntry(se); err != nil {
			return nil, nil, err
		}
	}
	slices.SortFunc(g.out, func(a, b *clientv1alpha3.EnvoyFilter) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	model.SortProblems(g.problems)
	return g.out, g.problems, nil
}

type generator struct {
	opts     Options
	snap     *model.Snapshot
	out      []*clientv1alpha3.EnvoyFilter
	seen     map[string]bool // namespace/name of every filter in out
	problems []model.Problem
}

// problem records what was left out of an object's filters. The field is the ServiceEntry's; for an entry a
// source made from another kind (a Kubernetes Service), the field of that kind the user wrote is named.
func (g *generator) problem(meta *model.Meta, field string, sev model.Severity, format string, args ...any) {
	if meta.FieldOf != nil {
		field = meta.FieldOf(field)
	}
	g.problems = append(g.problems, model.Problem{
		Origin: meta.Origin, Key: meta.Key(), Field: field, Severity: sev, Message: fmt.Sprintf(format, args...),
	})
}

// serviceEntry generates the filters of one ServiceEntry, named after its first host as in Aeraki: the
// first host owns the entry's listeners, and its routes are the ones served on them.
func (g *generator) serviceEntry(se *model.ServiceEntry) error {
	svc := g.owner(se)
	if svc == nil {
		return nil
	}
	var ports []*model.Port
	for _, p := range svc.Ports {
		if !p.MetaProtocol() {
			continue
		}
		if strings.HasPrefix(p.Codec, "meltemi.") {
			g.problem(&se.Meta, fmt.Sprintf("spec.ports[%d]", portIndex(se, p.Number)), model.SeverityWarning,
				"codec %q (protocol %s) exists only in Meltemi's proxy, not in Aeraki's data plane; "+
					"no EnvoyFilter for port %d", p.Codec, p.App, p.Number)
			continue
		}
		ports = append(ports, p)
	}
	if len(ports) == 0 {
		return nil
	}
	addrs := g.addresses(se, svc)
	selector := g.workloadSelector(se)
	namespaces := g.namespaces(se, svc)
	for _, p := range ports {
		outbound, err := g.outboundProxy(svc, p)
		if err != nil {
			return fmt.Errorf("%s port %d: %w", se.Key(), p.Number, err)
		}
		for _, a := range addrs {
			listener := translate.ListenerName(netip.AddrPortFrom(a, uint16(p.Number)))
			patch := replaceTCPProxy(&networkingv1alpha3.EnvoyFilter_ListenerMatch{
				Name: listener,
				FilterChain: &networkingv1alpha3.EnvoyFilter_ListenerMatch_FilterChainMatch{
					Filter: &networkingv1alpha3.EnvoyFilter_ListenerMatch_FilterMatch{Name: TCPProxyFilter},
				},
			}, outbound)
			g.add(se, namespaces, OutboundName(svc.Host, a, p.Number), nil, patch)
		}
		if selector == nil {
			continue
		}
		inbound, err := g.inboundProxy(svc, p)
		if err != nil {
			return fmt.Errorf("%s port %d: %w", se.Key(), p.Number, err)
		}
		patch := replaceTCPProxy(&networkingv1alpha3.EnvoyFilter_ListenerMatch{
			Name: InboundListener,
			FilterChain: &networkingv1alpha3.EnvoyFilter_ListenerMatch_FilterChainMatch{
				DestinationPort: inboundPort(p),
				Filter:          &networkingv1alpha3.EnvoyFilter_ListenerMatch_FilterMatch{Name: TCPProxyFilter},
			},
		}, inbound)
		g.add(se, namespaces, InboundName(svc.Host, p.Number), selector, patch)
	}
	return nil
}

// owner returns the service of the entry's first served host, nil when it serves none.
func (g *generator) owner(se *model.ServiceEntry) *model.Service {
	for _, host := range se.Spec.GetHosts() {
		if svc := g.snap.Service(host); svc != nil && svc.Entry == se {
			return svc
		}
	}
	return nil
}

// addresses are the entry's IP addresses: Istio names an outbound listener after the address clients
// dial, so an entry without one (whose address Istio allocates, or which it serves on 0.0.0.0) gets no
// outbound filter, in Aeraki as here; here the user is told.
func (g *generator) addresses(se *model.ServiceEntry, svc *model.Service) []netip.Addr {
	var out []netip.Addr
	for _, a := range svc.Addresses {
		if !a.Allocated {
			out = append(out, a.IP)
		}
	}
	for i, s := range se.Spec.GetAddresses() {
		if _, err := netip.ParseAddr(s); err == nil {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil && p.IsSingleIP() {
			continue
		}
		g.problem(&se.Meta, fmt.Sprintf("spec.addresses[%d]", i), model.SeverityWarning,
			"%s is not one IP address, and no outbound listener is named after it; no outbound EnvoyFilter for it", s)
	}
	if len(out) == 0 {
		g.problem(&se.Meta, "spec.addresses", model.SeverityWarning,
			"no address: Istio's outbound listener for it is not named after one, so no outbound EnvoyFilter is "+
				"generated (as in Aeraki); give it an address")
	}
	return out
}

// workloadSelector returns the labels of the workloads that serve the entry, whose sidecars get the inbound
// filter: spec.workloadSelector, else Aeraki's workloadSelector annotation ("value" for label app, or
// "key:value"). Nil when there are none: an inbound filter without a selector would replace the tcp_proxy
// of that port for every workload in its namespace.
func (g *generator) workloadSelector(se *model.ServiceEntry) map[string]string {
	if labels := se.Spec.GetWorkloadSelector().GetLabels(); len(labels) > 0 {
		return labels
	}
	const annotation = "workloadSelector"
	value := strings.Join(strings.Fields(se.Annotations[annotation]), "")
	field := "metadata.annotations." + annotation
	switch parts := strings.Split(value, ":"); {
	case value == "" && se.Kind != model.KindServiceEntry:
		// A Kubernetes Service's selector does not reach the model; Aeraki's annotation does.
		g.problem(&se.Meta, field, model.SeverityWarning,
			"no %s annotation (\"value\" for label app, or \"key:value\"): the servers' sidecars get no inbound "+
				"EnvoyFilter, so they keep tcp_proxy and the MetaRouter's rate limits do not apply", annotation)
	case value == "":
		g.problem(&se.Meta, "spec.workloadSelector", model.SeverityWarning,
			"no workloadSelector (nor a %s annotation): the servers' sidecars get no inbound EnvoyFilter, "+
				"so they keep tcp_proxy and the MetaRouter's rate limits do not apply", annotation)
	case len(parts) == 1:
		return map[string]string{"app": value}
	case len(parts) == 2 && parts[0] != "" && parts[1] != "":
		return map[string]string{parts[0]: parts[1]}
	default:
		g.problem(&se.Meta, field, model.SeverityError,
			"%q is neither a value of label app nor key:value; no inbound EnvoyFilter", se.Annotations[annotation])
	}
	return nil
}

// namespaces are where the entry's filters go: each namespace its MetaRouter exports to ("." its own, "*"
// the root namespace), else the entry's when namespace-scoped, else the root namespace.
func (g *generator) namespaces(se *model.ServiceEntry, svc *model.Service) []string {
	if mr := svc.Router; mr != nil && len(mr.Spec.ExportTo) > 0 {
		var out []string
		for _, ns := range mr.Spec.ExportTo {
			switch ns {
			case ".":
				ns = mr.Namespace
			case "*":
				ns = g.opts.RootNamespace
			}
			if !slices.Contains(out, ns) {
				out = append(out, ns)
			}
		}
		return out
	}
	if g.opts.NamespaceScoped {
		return []string{se.Namespace}
	}
	return []string{g.opts.RootNamespace}
}

// add appends one EnvoyFilter in each namespace. Two entries whose first hosts, addresses and ports agree
// would write one object twice; the first, in file order, keeps it.
// A selector limits the object to the workloads it selects; nil means all of the namespace's.
func (g *generator) add(se *model.ServiceEntry, namespaces []string, name string, selector map[string]string,
	patch *networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectPatch) {
	for _, ns := range namespaces {
		key := ns + "/" + name
		if g.seen[key] {
			g.problem(&se.Meta, "spec.hosts[0]", model.SeverityError,
				"EnvoyFilter %s is already generated for another ServiceEntry; not generated again", key)
			continue
		}
		g.seen[key] = true
		ef := &clientv1alpha3.EnvoyFilter{
			TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1alpha3", Kind: "EnvoyFilter"},
			ObjectMeta: metav1.ObjectMeta{
				Name:      name,
				Namespace: ns,
				Labels:    map[string]string{ManagedByLabel: ManagedBy},
			},
		}
		if selector != nil {
			ef.Spec.WorkloadSelector = &networkingv1alpha3.WorkloadSelector{Labels: maps.Clone(selector)}
		}
		ef.Spec.ConfigPatches = []*networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectPatch{
			proto.CloneOf(patch),
		}
		g.out = append(g.out, ef)
	}
}

// replaceTCPProxy is the one patch of every filter: the listener's tcp_proxy becomes the MetaProtocol
// proxy. The match names no context, as Aeraki's does: the listener names alone tell outbound from inbound.
func replaceTCPProxy(listener *networkingv1alpha3.EnvoyFilter_ListenerMatch,
	value *structpb.Struct) *networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectPatch {
	return &networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectPatch{
		ApplyTo: networkingv1alpha3.EnvoyFilter_NETWORK_FILTER,
		Match: &networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectMatch{
			ObjectTypes: &networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectMatch_Listener{Listener: listener},
		},
		Patch: &networkingv1alpha3.EnvoyFilter_Patch{
			Operation: networkingv1alpha3.EnvoyFilter_Patch_REPLACE,
			Value:     value,
		},
	}
}

// OutboundName names the EnvoyFilter of one address and port of a host, as Aeraki does, so that applying
// Meltemi's filters replaces Aeraki's in place.
func OutboundName(host string, addr netip.Addr, port uint32) string {
	return "aeraki-outbound-" + host + "-" + addr.String() + "-" + strconv.FormatUint(uint64(port), 10)
}

// InboundName names the inbound EnvoyFilter of one port of a host, as Aeraki does.
func InboundName(host string, port uint32) string {
	return "aeraki-inbound-" + host + "-" + strconv.FormatUint(uint64(port), 10)
}

// inboundPort is the port the workloads receive on, which Istio's inbound filter chains match: the
// port's targetPort, else its number. Aeraki always uses the number, which misses the chain when the two
// differ.
func inboundPort(p *model.Port) uint32 { return cmp.Or(p.TargetPort, p.Number) }

// InboundCluster names Istio's inbound cluster of a workload port: "inbound|{port}||".
func InboundCluster(port uint32) string {
	return "inbound|" + strconv.FormatUint(uint64(port), 10) + "||"
}

func portIndex(se *model.ServiceEntry, number uint32) int {
	for i, p := range se.Spec.GetPorts() {
		if p.GetNumber() == number {
			return i
		}
	}
	return 0
}
