package model

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1"

	"github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
)

// Options are the facts about the binary and the mode that Build needs besides the objects.
type Options struct {
	// Codecs are the codecs built into the binary, by application protocol. ApplicationProtocol
	// objects add to them.
	Codecs Codecs
	// Local builds for local mode, where the proxy binds each service's addresses on this machine:
	// addresses outside 127.0.0.0/8 are skipped with a warning, and a meta-protocol service left
	// without an address gets one from VIPRange.
	Local bool
}

// Snapshot is one immutable version of the mesh config with the facts derived from it. Nothing
// reachable from it may be modified.
type Snapshot struct {
	// Version increases with every snapshot a source publishes with different content.
	Version uint64
	// Hash is Objects' content hash (Objects.Hash): equal hashes mean equal config.
	Hash string
	// Objects are the objects the snapshot was built from, each kind in file order.
	Objects Objects
	// Codecs are the built-in codecs and those ApplicationProtocols declare, by application protocol.
	Codecs Codecs
	// Services are the services served, one per ServiceEntry host, sorted by host.
	Services []*Service
	// Listeners are the address:port pairs a proxy binds for meta-protocol ports, sorted.
	Listeners []Listener
	// Problems are those found relating objects to each other (a source adds those of single objects).
	Problems []Problem

	byHost map[string]*Service
}

// Service is one host of a ServiceEntry with everything the translator needs about it.
type Service struct {
	// Host is the service's name, as routes and cluster names use it.
	Host string
	// Entry is the ServiceEntry the host comes from.
	Entry *ServiceEntry
	// Resolution is STATIC, DNS or DNS_ROUND_ROBIN (NONE is not served).
	Resolution networking.ServiceEntry_Resolution
	// Addresses are the IP addresses the service is reached at, in the order written; in local mode
	// only loopback ones, or one allocated from VIPRange.
	Addresses []Address
	// Ports are the ServiceEntry's ports, in the order written, except those whose protocol is in error.
	Ports []*Port
	// DestinationRule is the rule for this host, nil when none.
	DestinationRule *DestinationRule
	// LoadBalancer is the rule's top-level load balancing, port-level settings aside (LoadBalancerFor has
	// them); the zero value means the proxy's default.
	LoadBalancer LoadBalancer
	// Subsets are the rule's subsets, in the order written.
	Subsets []*Subset
	// Router is the MetaRouter of this host, nil when none.
	Router *MetaRouter
	// RateLimitService is the service the Router's globalRateLimit asks; nil when there is none, or when its
	// rateLimitService names no service port of the mesh (a problem says so, and the limit is not served).
	RateLimitService *RateLimitService
}

// RateLimitService is the service port a globalRateLimit's rateLimitService names: a gRPC port of a
// ServiceEntry, not a meta-protocol one.
type RateLimitService struct {
	// Cluster is the name as written, Istio's outbound|PORT|SUBSET|HOST.
	Cluster string
	Service *Service
	Port    *Port
	// Subset is the DestinationRule subset the name selects; nil for the whole service.
	Subset *Subset
}

// Address is one address of a service.
type Address struct {
	IP netip.Addr
	// Allocated is true for an address taken from VIPRange because the ServiceEntry gave none.
	Allocated bool
	// Recorded is true for an allocated address read from the ServiceEntry's status.addresses
	// (StatusAddresses) rather than chosen by this Build.
	Recorded bool
}

// Port is one port of a service and its endpoints.
type Port struct {
	// Number is the port clients dial.
	Number uint32
	// Name is the port's name, as written.
	Name string
	// Protocol is the ServiceEntry port's protocol field, as written.
	Protocol string
	// TargetPort is the endpoints' default port; 0 when not set.
	TargetPort uint32
	// PortProtocol says whether this is a meta-protocol port, for which application protocol and codec.
	PortProtocol
	// Endpoints serve the port, each with its own port number resolved.
	Endpoints []Endpoint
}

// Endpoint is one instance of a service on one port.
type Endpoint struct {
	// Address is an IP address, or under DNS resolution a name to resolve.
	Address string
	// Port is the endpoint's port: its ports[<port name>], else the service port's targetPort, else its number.
	Port uint32
	// Labels are the endpoint's labels, which subsets select on.
	Labels map[string]string
	// Weight is the endpoint's load balancing weight; 0 when not set.
	Weight uint32
	// Locality, Network and ServiceAccount are as written in the endpoint.
	Locality, Network, ServiceAccount string
	// WorkloadEntry is the WorkloadEntry the endpoint comes from; nil for an endpoint the ServiceEntry lists.
	WorkloadEntry *WorkloadEntry
}

// Subset is a named subset of a service's endpoints, from its DestinationRule.
type Subset struct {
	Name string
	// Labels select the endpoints; all must match.
	Labels map[string]string
	// LoadBalancer is the subset's own load balancing, else the rule's top-level one, port-level settings
	// aside.
	LoadBalancer LoadBalancer
}

// LBPolicy is a load balancing algorithm; empty means the proxy's default.
type LBPolicy string

// The load balancing algorithms a meta-protocol proxy offers.
const (
	LBDefault      LBPolicy = ""
	LBRoundRobin   LBPolicy = "ROUND_ROBIN"
	LBLeastRequest LBPolicy = "LEAST_REQUEST"
	LBRandom       LBPolicy = "RANDOM"
	LBRingHash     LBPolicy = "RING_HASH"
	LBMaglev       LBPolicy = "MAGLEV"
)

// LoadBalancer is how requests are spread over endpoints.
type LoadBalancer struct {
	Policy LBPolicy
	// HashKey is the request metadata key hashed by RING_HASH and MAGLEV (a DestinationRule's
	// consistentHash.httpHeaderName, as Aeraki reads it).
	HashKey string
	// MinimumRingSize is RING_HASH's ring size; 0 for the proxy's default.
	MinimumRingSize uint64
	// MaglevTableSize is MAGLEV's table size; 0 for the proxy's default.
	MaglevTableSize uint64
}

// Listener is one address:port a proxy binds for a meta-protocol port. When several hosts of one
// ServiceEntry share it, it belongs to the first, whose routes it serves, as in Aeraki.
type Listener struct {
	Address netip.AddrPort
	Service *Service
	Port    *Port
}

// Service returns the service of a host, nil when none is served.
func (s *Snapshot) Service(host string) *Service { return s.byHost[host] }

// MetaProtocolServices returns the services with at least one meta-protocol port, sorted by host.
func (s *Snapshot) MetaProtocolServices() []*Service {
	var out []*Service
	for _, svc := range s.Services {
		if svc.HasMetaProtocol() {
			out = append(out, svc)
		}
	}
	return out
}

// HasMetaProtocol reports whether the service has a meta-protocol port.
func (s *Service) HasMetaProtocol() bool {
	return slices.ContainsFunc(s.Ports, func(p *Port) bool { return p.MetaProtocol() })
}

// Port returns the port with a number, nil when none.
func (s *Service) Port(number uint32) *Port {
	for _, p := range s.Ports {
		if p.Number == number {
			return p
		}
	}
	return nil
}

// Subset returns the subset with a name, nil when none.
func (s *Service) Subset(name string) *Subset {
	for _, ss := range s.Subsets {
		if ss.Name == name {
			return ss
		}
	}
	return nil
}

// EndpointsFor returns the endpoints whose labels include all of labels (a subset's); all of them
// when labels is empty.
func (p *Port) EndpointsFor(labels map[string]string) []Endpoint {
	if len(labels) == 0 {
		return p.Endpoints
	}
	var out []Endpoint
	for _, ep := range p.Endpoints {
		if labelsMatch(labels, ep.Labels) {
			out = append(out, ep)
		}
	}
	return out
}

func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Build derives a snapshot from a set of objects that each passed Validate. It never fails: what
// cannot be served is left out and reported in Snapshot.Problems. It does no I/O and reads no clock,
// so equal inputs give equal snapshots.
func Build(version uint64, in Objects, opts Options) *Snapshot {
	b := &builder{
		opts: opts,
		snap: &Snapshot{Version: version, Objects: in.sorted(), byHost: map[string]*Service{}},
	}
	b.snap.Hash = b.snap.Objects.hashSorted()
	b.codecs()
	b.services()
	b.destinationRules()
	b.routers()
	b.listeners()
	slices.SortFunc(b.snap.Services, func(x, y *Service) int { return cmp.Compare(x.Host, y.Host) })
	SortProblems(b.snap.Problems)
	return b.snap
}

type builder struct {
	opts Options
	snap *Snapshot
	// entryServices are the services of each ServiceEntry in file order, hosts in the order written:
	// the order that decides which of two claims on an address wins.
	entryServices [][]*Service
}

func (b *builder) report(meta *Meta) *reporter { return &reporter{meta: meta} }

func (b *builder) keep(r *reporter) { b.snap.Problems = append(b.snap.Problems, r.out...) }

func (b *builder) codecs() {
	codecs := Codecs{}
	for app, codec := range b.opts.Codecs {
		codecs[strings.ToLower(app)] = codec
	}
	builtinNames := map[string]bool{}
	for _, codec := range b.opts.Codecs {
		builtinNames[codec] = true
	}
	declaredBy := map[string]*ApplicationProtocol{}
	for _, ap := range b.snap.Objects.ApplicationProtocols {
		r := b.report(&ap.Meta)
		app := strings.ToLower(ap.Spec.Protocol)
		if first, dup := declaredBy[app]; dup {
			if first.Spec.Codec != ap.Spec.Codec {
				r.warnf("spec.protocol", "protocol %q is already declared by %s (%s) with codec %q; ignored",
					ap.Spec.Protocol, first.Key(), first.Origin, first.Spec.Codec)
				r.because(ReasonConflicted)
			}
			b.keep(r)
			continue
		}
		declaredBy[app] = ap
		codecs[app] = ap.Spec.Codec
		if b.opts.Codecs != nil && !builtinNames[ap.Spec.Codec] {
			r.warnf("spec.codec", "codec %q is not built into this binary; its proxies cannot serve %s", ap.Spec.Codec, app)
		}
		b.keep(r)
	}
	b.snap.Codecs = codecs
}

// entryPort is a ServiceEntry port with its classification, shared by the entry's hosts.
type entryPort struct {
	spec  *networking.ServicePort
	proto PortProtocol
}

func (b *builder) services() {
	for _, se := range b.snap.Objects.ServiceEntries {
		r := b.report(&se.Meta)
		b.entryServices = append(b.entryServices, b.serviceEntry(se, r))
		b.keep(r)
	}
	if b.opts.Local {
		b.allocate()
	}
}

func (b *builder) serviceEntry(se *ServiceEntry, r *reporter) []*Service {
	spec := se.Spec
	var ports []entryPort
	hasMeta := false
	for i, p := range spec.GetPorts() {
		pp, err := ClassifyPort(p.GetName(), p.GetProtocol(), b.snap.Codecs)
		if err != nil {
			r.errorf(fmt.Sprintf("spec.ports[%d]", i), "%v; port not served", err)
			continue
		}
		if pp.Rule == RulePortName && p.GetProtocol() != "" {
			if other, err := appFromAppProtocol(p.GetProtocol(), b.snap.Codecs); err == nil && other != "" && other != pp.App {
				r.warnf(fmt.Sprintf("spec.ports[%d].protocol", i), "protocol %q disagrees with the port name, "+
					"which wins: the port speaks %s", p.GetProtocol(), pp.App)
			}
		}
		hasMeta = hasMeta || pp.MetaProtocol()
		ports = append(ports, entryPort{spec: p, proto: pp})
	}
	if spec.GetResolution() == networking.ServiceEntry_NONE {
		if hasMeta {
			r.warnf("spec.resolution", "resolution NONE is not served for meta-protocol ports; use STATIC or DNS")
		}
		return nil
	}
	addrs := b.entryAddresses(se, hasMeta, r)
	workloads := b.workloads(se, hasMeta, r)
	var services []*Service
	for i, host := range spec.GetHosts() {
		field := fmt.Sprintf("spec.hosts[%d]", i)
		if strings.Contains(host, "*") {
			if hasMeta {
				r.warnf(field, "wildcard host %q is not served for meta-protocol ports", host)
			}
			continue
		}
		if other := b.snap.byHost[host]; other != nil {
			r.errorf(field, "host %q is already defined by %s (%s); ignored", host, other.Entry.Key(), other.Entry.Origin)
			r.because(ReasonConflicted)
			continue
		}
		svc := &Service{Host: host, Entry: se, Resolution: spec.GetResolution(), Addresses: addrs}
		for _, ep := range ports {
			svc.Ports = append(svc.Ports, b.port(se, host, ep, workloads))
		}
		b.snap.byHost[host] = svc
		b.snap.Services = append(b.snap.Services, svc)
		services = append(services, svc)
	}
	if len(services) > 0 {
		for _, p := range services[0].Ports {
			if p.MetaProtocol() && len(p.Endpoints) == 0 {
				r.warnf(fmt.Sprintf("spec.ports[%d]", portIndex(spec, p.Number)),
					"port %d has no endpoints: its requests will fail with no healthy upstream", p.Number)
			}
		}
	}
	return services
}

// workload is one endpoint of a ServiceEntry before its port is resolved: listed in the entry, or
// a WorkloadEntry its workloadSelector selects.
type workload struct {
	spec *networking.WorkloadEntry
	from *WorkloadEntry
}

// workloads returns the entry's endpoints, then the WorkloadEntries of its namespace that its
// workloadSelector selects, in file order, leaving out those a proxy cannot dial (with a warning when
// a meta-protocol port would have used them).
func (b *builder) workloads(se *ServiceEntry, hasMeta bool, r *reporter) []workload {
	static := se.Spec.GetResolution() == networking.ServiceEntry_STATIC
	usable := func(we *networking.WorkloadEntry, r *reporter, field string) bool {
		addr := we.GetAddress()
		_, err := netip.ParseAddr(addr)
		switch {
		case strings.HasPrefix(addr, "unix://"):
			if hasMeta {
				r.warnf(field, "unix domain socket endpoint %q is not served", addr)
			}
			return false
		case err != nil && static:
			if hasMeta {
				r.warnf(field, "%q is not an IP address, as resolution STATIC of %s requires; skipped", addr, se.Key())
			}
			return false
		}
		return true
	}
	var out []workload
	for i, we := range se.Spec.GetEndpoints() {
		if usable(we, r, fmt.Sprintf("spec.endpoints[%d].address", i)) {
			out = append(out, workload{spec: we})
		}
	}
	sel := se.Spec.GetWorkloadSelector()
	if sel == nil {
		return out
	}
	for _, we := range b.snap.Objects.WorkloadEntries {
		if we.Namespace != se.Namespace || !labelsMatch(sel.GetLabels(), we.Spec.GetLabels()) {
			continue
		}
		wr := b.report(&we.Meta)
		if usable(we.Spec, wr, "spec.address") {
			out = append(out, workload{spec: we.Spec, from: we})
		}
		b.keep(wr)
	}
	return out
}

func (b *builder) port(se *ServiceEntry, host string, ep entryPort, workloads []workload) *Port {
	p := &Port{
		Number:       ep.spec.GetNumber(),
		Name:         ep.spec.GetName(),
		Protocol:     ep.spec.GetProtocol(),
		TargetPort:   ep.spec.GetTargetPort(),
		PortProtocol: ep.proto,
	}
	defaultPort := cmp.Or(p.TargetPort, p.Number)
	for _, w := range workloads {
		p.Endpoints = append(p.Endpoints, Endpoint{
			Address:        w.spec.GetAddress(),
			Port:           cmp.Or(w.spec.GetPorts()[p.Name], defaultPort),
			Labels:         w.spec.GetLabels(),
			Weight:         w.spec.GetWeight(),
			Locality:       w.spec.GetLocality(),
			Network:        w.spec.GetNetwork(),
			ServiceAccount: w.spec.GetServiceAccount(),
			WorkloadEntry:  w.from,
		})
	}
	if se.Spec.GetResolution() != networking.ServiceEntry_STATIC && len(se.Spec.GetEndpoints()) == 0 &&
		se.Spec.GetWorkloadSelector() == nil {
		// Istio resolves the host itself when a DNS ServiceEntry lists no endpoints.
		p.Endpoints = append(p.Endpoints, Endpoint{Address: host, Port: defaultPort})
	}
	return p
}

func portIndex(spec *networking.ServiceEntry, number uint32) int {
	return slices.IndexFunc(spec.GetPorts(), func(p *networking.ServicePort) bool { return p.GetNumber() == number })
}

// entryAddresses returns the addresses an entry's services are served on. CIDR blocks and, in local
// mode, addresses a local proxy cannot bind are left out, with a warning when a meta-protocol port
// would have used them.
func (b *builder) entryAddresses(se *ServiceEntry, hasMeta bool, r *reporter) []Address {
	var out []Address
	for i, s := range se.Spec.GetAddresses() {
		field := fmt.Sprintf("spec.addresses[%d]", i)
		ip, err := netip.ParseAddr(s)
		if err != nil {
			prefix, perr := netip.ParsePrefix(s)
			if perr != nil || !prefix.IsSingleIP() {
				if hasMeta && b.opts.Local {
					r.warnf(field, "%s is a CIDR block, which a local proxy cannot bind; skipped", s)
				}
				continue
			}
			ip = prefix.Addr()
		}
		if b.opts.Local && !ip.IsLoopback() {
			if hasMeta {
				r.warnf(field, "%s is outside 127.0.0.0/8, which a local proxy cannot bind; skipped", s)
			}
			continue
		}
		out = append(out, Address{IP: ip.Unmap()})
	}
	return out
}

// allocate gives an address from VIPRange to each meta-protocol service left without one.
func (b *builder) allocate() {
	taken := map[netip.Addr]bool{}
	for _, se := range b.snap.Objects.ServiceEntries {
		for _, s := range se.Spec.GetAddresses() {
			if ip, err := netip.ParseAddr(s); err == nil {
				taken[ip.Unmap()] = true
			} else if prefix, err := netip.ParsePrefix(s); err == nil {
				// Leave whole blocks alone, as far as they overlap the range.
				if prefix.Overlaps(VIPRange) && prefix.Bits() >= VIPRange.Bits() {
					for a := prefix.Masked().Addr(); prefix.Contains(a); a = a.Next() {
						taken[a] = true
					}
				}
			}
		}
	}
	// Addresses recorded in a ServiceEntry's status come first, in file order, so that a host keeps
	// the address every controller serves it on; the other hosts are given one.
	var hosts []string
	for _, svc := range b.snap.Services {
		if len(svc.Addresses) > 0 || !svc.HasMetaProtocol() {
			continue
		}
		if ip, ok := recordedVIP(svc, taken); ok {
			taken[ip] = true
			svc.Addresses = []Address{{IP: ip, Allocated: true, Recorded: true}}
			continue
		}
		hosts = append(hosts, svc.Host)
	}
	vips, full := allocateVIPs(hosts, taken)
	for _, svc := range b.snap.Services {
		if ip, ok := vips[svc.Host]; ok {
			svc.Addresses = []Address{{IP: ip, Allocated: true}}
		}
	}
	for _, host := range full {
		svc := b.snap.byHost[host]
		r := b.report(&svc.Entry.Meta)
		r.errorf("spec.addresses", "no free address left in %s for host %q; give it one", VIPRange, host)
		b.keep(r)
	}
}

// recordedVIP returns the address of VIPRange recorded for the service's host in its entry's status,
// unless another service has it already. Addresses of other ranges (Istio's own allocations, which a
// local proxy cannot bind) are not used.
func recordedVIP(svc *Service, taken map[netip.Addr]bool) (netip.Addr, bool) {
	for _, a := range svc.Entry.StatusAddresses {
		if a.Host == svc.Host && VIPRange.Contains(a.IP) && !taken[a.IP] {
			return a.IP, true
		}
	}
	return netip.Addr{}, false
}

func (b *builder) destinationRules() {
	for _, dr := range b.snap.Objects.DestinationRules {
		r := b.report(&dr.Meta)
		host := dr.Spec.GetHost()
		svc := b.snap.byHost[host]
		switch {
		case svc == nil:
			r.warnf("spec.host", "no ServiceEntry defines host %q; the rule applies to nothing", host)
			r.because(ReasonNoHost)
		case svc.DestinationRule != nil:
			first := svc.DestinationRule
			r.warnf("spec.host", "host %q already has %s (%s), which wins; ignored", host, first.Key(), first.Origin)
			r.because(ReasonConflicted)
		default:
			svc.DestinationRule = dr
			svc.LoadBalancer = svc.LoadBalancerFor(0, "")
			for i, s := range dr.Spec.GetSubsets() {
				svc.Subsets = append(svc.Subsets, &Subset{Name: s.GetName(), Labels: s.GetLabels(),
					LoadBalancer: svc.LoadBalancerFor(0, s.GetName())})
				if svc.HasMetaProtocol() && !subsetSelectsAny(svc, s.GetLabels()) {
					r.warnf(fmt.Sprintf("spec.subsets[%d].labels", i), "subset %q selects no endpoint of %s", s.GetName(), host)
				}
			}
		}
		b.keep(r)
	}
}

func subsetSelectsAny(svc *Service, labels map[string]string) bool {
	for _, p := range svc.Ports {
		if p.MetaProtocol() && len(p.EndpointsFor(labels)) > 0 {
			return true
		}
	}
	return false
}

// loadBalancer reads a DestinationRule's load balancer settings; the zero value when there are none.
// Settings a meta-protocol proxy cannot honour are dropped here and warned about by Validate.
func loadBalancer(lb *networking.LoadBalancerSettings) LoadBalancer {
	if ch := lb.GetConsistentHash(); ch != nil && ch.GetHttpHeaderName() != "" {
		key := ch.GetHttpHeaderName()
		switch {
		case ch.GetMaglev() != nil:
			return LoadBalancer{Policy: LBMaglev, HashKey: key, MaglevTableSize: ch.GetMaglev().GetTableSize()}
		case ch.GetRingHash() != nil:
			return LoadBalancer{Policy: LBRingHash, HashKey: key, MinimumRingSize: ch.GetRingHash().GetMinimumRingSize()}
		default:
			// With no algorithm named, Istio reads the deprecated minimumRingSize and writes Envoy's default
			// (1024) when it is unset; so does this.
			return LoadBalancer{Policy: LBRingHash, HashKey: key, MinimumRingSize: cmp.Or(ch.GetMinimumRingSize(), 1024)}
		}
	}
	switch lb.GetSimple() {
	case networking.LoadBalancerSettings_ROUND_ROBIN:
		return LoadBalancer{Policy: LBRoundRobin}
	case networking.LoadBalancerSettings_LEAST_REQUEST, networking.LoadBalancerSettings_LEAST_CONN:
		return LoadBalancer{Policy: LBLeastRequest}
	case networking.LoadBalancerSettings_RANDOM:
		return LoadBalancer{Policy: LBRandom}
	}
	return LoadBalancer{}
}

func (b *builder) routers() {
	for _, mr := range b.snap.Objects.MetaRouters {
		r := b.report(&mr.Meta)
		host := mr.Spec.Hosts[0]
		svc := b.snap.byHost[host]
		switch {
		case svc == nil:
			r.warnf("spec.hosts[0]", "no ServiceEntry defines host %q; the router applies to nothing", host)
			r.because(ReasonNoHost)
		case !svc.HasMetaProtocol():
			r.warnf("spec.hosts[0]", "host %q has no meta-protocol port; the router applies to nothing", host)
			r.because(ReasonNoHost)
		case svc.Router != nil:
			first := svc.Router
			r.warnf("spec.hosts[0]", "host %q is already routed by %s (%s), which came first; ignored", host, first.Key(), first.Origin)
			r.because(ReasonConflicted)
		default:
			svc.Router = mr
		}
		if g := mr.Spec.GlobalRateLimit; g != nil {
			rls := b.rateLimitService(r, g.RateLimitService)
			if svc != nil && svc.Router == mr {
				svc.RateLimitService = rls
			}
		}
		for i, route := range mr.Spec.Routes {
			for j, d := range route.Route {
				b.checkDestination(r, fmt.Sprintf("spec.routes[%d].route[%d].destination", i, j), d.Destination.Host,
					d.Destination.Subset, d.Destination.Port)
			}
			if m := route.Mirror; m != nil {
				b.checkDestination(r, fmt.Sprintf("spec.routes[%d].mirror", i), m.Host, m.Subset, m.Port)
			}
		}
		b.keep(r)
	}
}

// rateLimitService resolves a globalRateLimit's rateLimitService, Istio's cluster name of a service port of
// the mesh, and reports an error when it names none: the filter would then ask a cluster no proxy has.
func (b *builder) rateLimitService(r *reporter, cluster string) *RateLimitService {
	const field = "spec.globalRateLimit.rateLimitService"
	parts := strings.Split(cluster, "|")
	if len(parts) != 4 || parts[0] != "outbound" || parts[3] == "" {
		r.errorf(field, "%q is not a cluster name of the form outbound|PORT|SUBSET|HOST; the global rate limit is not served",
			cluster)
		return nil
	}
	number, err := strconv.ParseUint(parts[1], 10, 16)
	if err != nil || number == 0 {
		r.errorf(field, "%q: port %q is not a port number; the global rate limit is not served", cluster, parts[1])
		return nil
	}
	host := parts[3]
	svc := b.snap.byHost[host]
	if svc == nil {
		r.errorf(field, "%q: no ServiceEntry defines host %q; the global rate limit is not served", cluster, host)
		return nil
	}
	port := svc.Port(uint32(number))
	switch {
	case port == nil:
		r.errorf(field, "%q: host %q has no port %d; the global rate limit is not served", cluster, host, number)
		return nil
	case port.MetaProtocol():
		r.errorf(field, "%q: port %d of host %q is a meta-protocol port (%s), but a rate limit service speaks gRPC; "+
			"the global rate limit is not served", cluster, number, host, port.App)
		return nil
	}
	out := &RateLimitService{Cluster: cluster, Service: svc, Port: port}
	var labels map[string]string
	if name := parts[2]; name != "" {
		if out.Subset = svc.Subset(name); out.Subset == nil {
			r.errorf(field, "%q: host %q has no subset %q in a DestinationRule; the global rate limit is not served",
				cluster, host, name)
			return nil
		}
		labels = out.Subset.Labels
	}
	if len(port.EndpointsFor(labels)) == 0 {
		r.warnf(field, "%q has no endpoints: every check fails, and the failure mode (denyOnFail) decides", cluster)
	}
	return out
}

// checkDestination warns about a route destination that would fail every request it gets.
func (b *builder) checkDestination(r *reporter, field, host, subset string, port *v1alpha1.PortSelector) {
	svc := b.snap.byHost[host]
	if svc == nil {
		r.warnf(field+".host", "no ServiceEntry defines host %q", host)
		return
	}
	if subset != "" && svc.Subset(subset) == nil {
		r.warnf(field+".subset", "host %q has no subset %q in a DestinationRule", host, subset)
	}
	if port != nil && port.Number != 0 && svc.Port(port.Number) == nil {
		r.warnf(field+".port.number", "host %q has no port %d", host, port.Number)
	}
}

func (b *builder) listeners() {
	type claim struct {
		svc  *Service
		port *Port
	}
	claims := map[netip.AddrPort]claim{}
	for _, services := range b.entryServices {
		for _, svc := range services {
			r := b.report(&svc.Entry.Meta)
			for _, p := range svc.Ports {
				if !p.MetaProtocol() {
					continue
				}
				for _, a := range svc.Addresses {
					ap := netip.AddrPortFrom(a.IP, uint16(p.Number))
					first, taken := claims[ap]
					switch {
					case !taken:
						claims[ap] = claim{svc, p}
					case first.svc.Entry != svc.Entry:
						r.errorf(addressField(svc.Entry, a.IP), "%s is already served by host %q (%s, %s); not served for host %q",
							ap, first.svc.Host, first.svc.Entry.Key(), first.svc.Entry.Origin, svc.Host)
						r.because(ReasonConflicted)
					}
				}
			}
			b.keep(r)
		}
	}
	for _, ap := range slices.SortedFunc(maps.Keys(claims), func(x, y netip.AddrPort) int { return x.Compare(y) }) {
		c := claims[ap]
		b.snap.Listeners = append(b.snap.Listeners, Listener{Address: ap, Service: c.svc, Port: c.port})
	}
}

// addressField names the addresses entry that holds ip.
func addressField(se *ServiceEntry, ip netip.Addr) string {
	for i, s := range se.Spec.GetAddresses() {
		if a, err := netip.ParseAddr(s); err == nil && a.Unmap() == ip {
			return fmt.Sprintf("spec.addresses[%d]", i)
		}
		if p, err := netip.ParsePrefix(s); err == nil && p.IsSingleIP() && p.Addr().Unmap() == ip {
			return fmt.Sprintf("spec.addresses[%d]", i)
		}
	}
	return "spec.addresses"
}
