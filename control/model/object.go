package model

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"net/netip"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1"

	dubbov1alpha1 "github.com/meltemi-mesh/meltemi/api/dubbo/v1alpha1"
	"github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	redisv1alpha1 "github.com/meltemi-mesh/meltemi/api/redis/v1alpha1"
)

// Kind names a kind of object the model holds, as manifests spell it.
type Kind string

// The kinds the model holds.
const (
	KindServiceEntry        Kind = "ServiceEntry"
	KindDestinationRule     Kind = "DestinationRule"
	KindWorkloadEntry       Kind = "WorkloadEntry"
	KindMetaRouter          Kind = "MetaRouter"
	KindApplicationProtocol Kind = "ApplicationProtocol"
	// The Redis and Dubbo kinds are read and kept; what they do is still to come.
	KindRedisService             Kind = "RedisService"
	KindRedisDestination         Kind = "RedisDestination"
	KindDubboAuthorizationPolicy Kind = "DubboAuthorizationPolicy"
)

// DefaultNamespace is the namespace of an object whose manifest names none, as kubectl assumes.
const DefaultNamespace = "default"

// Origin says where an object was read from, for messages and for "first in file order" rules.
type Origin struct {
	// File is the path of the file, as the source was given it, or for an object another source read,
	// that source's name for it (a cluster object's is "kube:Kind namespace/name").
	File string
	// Document is the 1-based position of the object among the file's non-empty YAML documents; 0 when
	// not known.
	Document int
	// Line is the 1-based line of the file where the document starts; 0 when not known.
	Line int
	// Created is when a cluster object was created: among objects read from a cluster, creation
	// order is what file order is among files (the oldest comes first, as in Istio). Zero for
	// objects read from files, which therefore come before cluster objects.
	Created time.Time
	// Generation is a cluster object's metadata.generation: which version of its spec was read, so
	// that what is said about the object (status conditions) names the version it is about. Zero
	// for objects read from files.
	Generation int64
}

// Compare orders origins by creation, then by file, then by position in the file.
func (o Origin) Compare(p Origin) int {
	return cmp.Or(o.Created.Compare(p.Created), cmp.Compare(o.File, p.File), cmp.Compare(o.Document, p.Document))
}

// String is "file (document n)", or "name, created time" for a cluster object, or less when less
// is known.
func (o Origin) String() string {
	switch {
	case !o.Created.IsZero():
		return fmt.Sprintf("%s, created %s", o.File, o.Created.UTC().Format(time.RFC3339))
	case o.Document == 0:
		return o.File
	}
	return fmt.Sprintf("%s (document %d)", o.File, o.Document)
}

// ClusterOrigin is the origin of an object a source read from a cluster: it names the object (as
// "source:Kind namespace/name", e.g. "kube:MetaRouter default/x") and when it was created.
func ClusterOrigin(source string, key Key, created time.Time) Origin {
	return Origin{File: source + ":" + key.String(), Created: created}
}

// names reports whether the origin is the object with key k itself, as a cluster object's is.
func (o Origin) names(k Key) bool {
	return k.Name != "" && strings.HasSuffix(o.File, ":"+k.String())
}

// Key identifies an object: two objects with the same key are two versions of one object.
type Key struct {
	Kind      Kind
	Namespace string
	Name      string
}

// String is "Kind namespace/name".
func (k Key) String() string {
	return fmt.Sprintf("%s %s/%s", k.Kind, k.Namespace, k.Name)
}

// Compare orders keys by kind, namespace and name.
func (k Key) Compare(l Key) int {
	return cmp.Or(cmp.Compare(k.Kind, l.Kind), cmp.Compare(k.Namespace, l.Namespace), cmp.Compare(k.Name, l.Name))
}

// Meta is what every object carries besides its spec.
type Meta struct {
	Kind        Kind
	Namespace   string
	Name        string
	Labels      map[string]string
	Annotations map[string]string
	Origin      Origin
	// FieldOf is set on an object a source made from an object of another kind (a ServiceEntry from a
	// Kubernetes Service): it names the field of that object a field of this one comes from, so that
	// problems name what the user wrote. Nil for objects read as written.
	FieldOf func(field string) string
}

// Metadata returns m; through embedding it makes every object an Object.
func (m *Meta) Metadata() *Meta { return m }

// Key returns the object's identity.
func (m *Meta) Key() Key { return Key{Kind: m.Kind, Namespace: m.Namespace, Name: m.Name} }

// Object is any object the model holds.
type Object interface {
	// Metadata returns the object's identity and origin.
	Metadata() *Meta
}

// ServiceEntry is an Istio ServiceEntry: hosts, ports, addresses and endpoints of a service.
type ServiceEntry struct {
	Meta
	Spec *networking.ServiceEntry
	// StatusAddresses are the addresses a controller allocated to the entry's hosts and recorded in
	// its status.addresses, where Istio records the addresses it allocates: local mode serves a host
	// left without addresses on the one recorded for it, when there is one in VIPRange, so that every
	// controller reading the entry serves the same address.
	StatusAddresses []StatusAddress
}

// StatusAddress is one entry of a ServiceEntry's status.addresses.
type StatusAddress struct {
	Host string
	IP   netip.Addr
}

// DestinationRule is an Istio DestinationRule: subsets and load balancing of a host.
type DestinationRule struct {
	Meta
	Spec *networking.DestinationRule
}

// WorkloadEntry is an Istio WorkloadEntry: one endpoint that ServiceEntries select by labels.
type WorkloadEntry struct {
	Meta
	Spec *networking.WorkloadEntry
}

// MetaRouter is an Aeraki MetaRouter: the routes and rate limits of one meta-protocol host.
type MetaRouter struct {
	Meta
	Spec *v1alpha1.MetaRouterSpec
}

// ApplicationProtocol is an Aeraki ApplicationProtocol: a protocol name and the codec that speaks it.
type ApplicationProtocol struct {
	Meta
	Spec *v1alpha1.ApplicationProtocolSpec
}

// RedisService is an Aeraki RedisService: key routes, mirrors, faults and settings of Redis hosts.
type RedisService struct {
	Meta
	Spec *redisv1alpha1.RedisServiceSpec
}

// RedisDestination is an Aeraki RedisDestination: how proxies connect to the servers of a Redis host.
type RedisDestination struct {
	Meta
	Spec *redisv1alpha1.RedisDestinationSpec
}

// DubboAuthorizationPolicy is an Aeraki DubboAuthorizationPolicy: which callers may call which Dubbo
// interfaces and methods.
type DubboAuthorizationPolicy struct {
	Meta
	Spec *dubbov1alpha1.DubboAuthorizationPolicySpec
}

// Objects is a set of objects, the input of Build. Sources fill it; Build does not modify it.
type Objects struct {
	ServiceEntries       []*ServiceEntry
	DestinationRules     []*DestinationRule
	WorkloadEntries      []*WorkloadEntry
	MetaRouters          []*MetaRouter
	ApplicationProtocols []*ApplicationProtocol
	RedisServices        []*RedisService
	RedisDestinations    []*RedisDestination
	DubboAuthorizations  []*DubboAuthorizationPolicy
}

// Add appends obj to the list of its kind; objects of other types are ignored.
func (o *Objects) Add(obj Object) {
	switch v := obj.(type) {
	case *ServiceEntry:
		o.ServiceEntries = append(o.ServiceEntries, v)
	case *DestinationRule:
		o.DestinationRules = append(o.DestinationRules, v)
	case *WorkloadEntry:
		o.WorkloadEntries = append(o.WorkloadEntries, v)
	case *MetaRouter:
		o.MetaRouters = append(o.MetaRouters, v)
	case *ApplicationProtocol:
		o.ApplicationProtocols = append(o.ApplicationProtocols, v)
	case *RedisService:
		o.RedisServices = append(o.RedisServices, v)
	case *RedisDestination:
		o.RedisDestinations = append(o.RedisDestinations, v)
	case *DubboAuthorizationPolicy:
		o.DubboAuthorizations = append(o.DubboAuthorizations, v)
	}
}

// Len is the number of objects.
func (o *Objects) Len() int {
	return len(o.ServiceEntries) + len(o.DestinationRules) + len(o.WorkloadEntries) +
		len(o.MetaRouters) + len(o.ApplicationProtocols) + len(o.RedisServices) + len(o.RedisDestinations) +
		len(o.DubboAuthorizations)
}

// All returns every object, kinds in a fixed order, each kind in the order held.
func (o *Objects) All() []Object {
	all := make([]Object, 0, o.Len())
	for _, v := range o.ServiceEntries {
		all = append(all, v)
	}
	for _, v := range o.DestinationRules {
		all = append(all, v)
	}
	for _, v := range o.WorkloadEntries {
		all = append(all, v)
	}
	for _, v := range o.MetaRouters {
		all = append(all, v)
	}
	for _, v := range o.ApplicationProtocols {
		all = append(all, v)
	}
	for _, v := range o.RedisServices {
		all = append(all, v)
	}
	for _, v := range o.RedisDestinations {
		all = append(all, v)
	}
	for _, v := range o.DubboAuthorizations {
		all = append(all, v)
	}
	return all
}

// sorted returns a copy whose lists are in file order (then key order, for objects without origin),
// the order every "first one wins" rule and the content hash rely on.
func (o *Objects) sorted() Objects {
	return Objects{
		ServiceEntries:       sortedByOrigin(o.ServiceEntries),
		DestinationRules:     sortedByOrigin(o.DestinationRules),
		WorkloadEntries:      sortedByOrigin(o.WorkloadEntries),
		MetaRouters:          sortedByOrigin(o.MetaRouters),
		ApplicationProtocols: sortedByOrigin(o.ApplicationProtocols),
		RedisServices:        sortedByOrigin(o.RedisServices),
		RedisDestinations:    sortedByOrigin(o.RedisDestinations),
		DubboAuthorizations:  sortedByOrigin(o.DubboAuthorizations),
	}
}

func sortedByOrigin[T Object](in []T) []T {
	out := slices.Clone(in)
	slices.SortStableFunc(out, func(a, b T) int {
		ma, mb := a.Metadata(), b.Metadata()
		return cmp.Or(ma.Origin.Compare(mb.Origin), ma.Key().Compare(mb.Key()))
	})
	return out
}

// Hash returns a digest of the content: equal sets of objects, whatever order they were added in,
// have equal hashes, so a source can tell that a change (a file saved unchanged) changed nothing.
// Origins count, because file order decides which of two conflicting objects wins.
func (o *Objects) Hash() string {
	sorted := o.sorted()
	return sorted.hashSorted()
}

func (o *Objects) hashSorted() string {
	h := sha256.New()
	for _, obj := range o.All() {
		hashObject(h, obj)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func hashObject(h hash.Hash, obj Object) {
	m := obj.Metadata()
	writeField(h, []byte(m.Kind))
	writeField(h, []byte(m.Namespace))
	writeField(h, []byte(m.Name))
	writeField(h, []byte(m.Origin.File))
	writeField(h, binary.BigEndian.AppendUint64(nil, uint64(m.Origin.Document)))
	writeField(h, []byte(m.Origin.Created.UTC().Format(time.RFC3339Nano)))
	// A new generation is a new snapshot even when its spec reads the same, so that the proxies' ACK
	// of the snapshot can tell that they run that generation.
	writeField(h, binary.BigEndian.AppendUint64(nil, uint64(m.Origin.Generation)))
	writeField(h, mustJSON(m.Labels))
	writeField(h, mustJSON(m.Annotations))
	var spec []byte
	switch v := obj.(type) {
	case *ServiceEntry:
		spec = mustProto(v.Spec)
		for _, a := range v.StatusAddresses {
			spec = fmt.Appendf(spec, "\x00%s=%s", a.Host, a.IP)
		}
	case *DestinationRule:
		spec = mustProto(v.Spec)
	case *WorkloadEntry:
		spec = mustProto(v.Spec)
	case *MetaRouter:
		spec = mustJSON(v.Spec)
	case *ApplicationProtocol:
		spec = mustJSON(v.Spec)
	case *RedisService:
		spec = mustJSON(v.Spec)
	case *RedisDestination:
		spec = mustJSON(v.Spec)
	case *DubboAuthorizationPolicy:
		spec = mustJSON(v.Spec)
	}
	writeField(h, spec)
}

// writeField length-prefixes b so that no two different field sequences hash alike.
func writeField(h hash.Hash, b []byte) {
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b))))
	h.Write(b)
}

func mustJSON(v any) []byte {
	// Maps marshal with sorted keys, so the encoding is deterministic; these types always marshal.
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("model: hashing %T: %v", v, err))
	}
	return b
}

func mustProto(m proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("model: hashing %T: %v", m, err))
	}
	return b
}
