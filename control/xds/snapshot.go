package xds

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"maps"
	"math"
	"slices"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/meltemi-mesh/meltemi/control/translate"
)

// servedTypes are the resource types a translation produces, in the order responses should go out
// (clusters before their endpoints, listeners before their routes).
var servedTypes = [...]string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}

// typeIndex returns the position of a type URL in servedTypes, -1 for a type the controller does not serve.
func typeIndex(typeURL string) int {
	for i, t := range servedTypes {
		if t == typeURL {
			return i
		}
	}
	return -1
}

// typeSet is one type's resources as served.
type typeSet struct {
	// version is the hash of the sorted (name, content hash) pairs.
	version string
	items   map[string]types.ResourceWithTTL
	plain   map[string]types.Resource
	// versions are the per-resource versions delta xDS compares: go-control-plane's hash of the encoding,
	// which is what it sends with each resource too.
	versions map[string]string
	// sums are the content hashes, by name.
	sums map[string][sha256.Size]byte
}

// snapshot is one proxy's resources in the form go-control-plane's cache serves. Versions are hashes of the
// content, so equal content has equal versions: a translation that changed nothing pushes nothing, even
// across a controller restart. It is immutable once built and shared by every node that translates alike.
type snapshot struct {
	sets [len(servedTypes)]typeSet
}

var _ cachev3.ResourceSnapshot = (*snapshot)(nil)

// newSnapshot indexes, hashes and encodes the resources of one translation. Resources equal to those of
// prev (the snapshot the proxies of this identity have; nil for none) keep prev's encoding.
func newSnapshot(r *translate.Resources, prev *snapshot) (*snapshot, error) {
	if r == nil {
		r = &translate.Resources{}
	}
	// In the order of servedTypes.
	lists := [len(servedTypes)]resourceList{named(r.Clusters), endpoints(r.Endpoints), named(r.Listeners), named(r.Routes)}
	s := &snapshot{}
	for i, l := range lists {
		var p *typeSet
		if prev != nil {
			p = &prev.sets[i]
		}
		if err := s.sets[i].fill(servedTypes[i], l, p); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// resourceList is one type's resources and their names, in the translator's order.
type resourceList struct {
	names []string
	msgs  []proto.Message
}

// named lists resources named by their name field.
func named[M interface {
	proto.Message
	GetName() string
}](list []M) resourceList {
	l := resourceList{names: make([]string, len(list)), msgs: make([]proto.Message, len(list))}
	for i, m := range list {
		l.names[i], l.msgs[i] = m.GetName(), m
	}
	return l
}

// endpoints lists load assignments, which are named by their cluster.
func endpoints(list []*endpointv3.ClusterLoadAssignment) resourceList {
	l := resourceList{names: make([]string, len(list)), msgs: make([]proto.Message, len(list))}
	for i, m := range list {
		l.names[i], l.msgs[i] = m.GetClusterName(), m
	}
	return l
}

// fill indexes one type's resources, encodes them and computes their versions.
func (t *typeSet) fill(typeURL string, l resourceList, prev *typeSet) error {
	n := len(l.msgs)
	t.items = make(map[string]types.ResourceWithTTL, n)
	t.plain = make(map[string]types.Resource, n)
	t.versions = make(map[string]string, n)
	t.sums = make(map[string][sha256.Size]byte, n)
	h := newContentHasher()
	for i, m := range l.msgs {
		name := l.names[i]
		if name == "" {
			return fmt.Errorf("%s: resource %d has no name", shortType(typeURL), i)
		}
		if _, dup := t.items[name]; dup {
			return fmt.Errorf("%s %q: two resources have this name", shortType(typeURL), name)
		}
		sum := h.sum(m)
		var res types.Resource
		var version string
		if ps, ok := prev.sum(name); ok && ps == sum {
			res, version = prev.plain[name], prev.versions[name]
		} else {
			b, err := cachev3.MarshalResource(m)
			if err != nil {
				return fmt.Errorf("%s %q: %w", shortType(typeURL), name, err)
			}
			res, version = encoded(b), cachev3.HashResource(b)
		}
		t.items[name] = types.ResourceWithTTL{Resource: res}
		t.plain[name] = res
		t.versions[name] = version
		t.sums[name] = sum
	}
	names := slices.Sorted(maps.Keys(t.sums))
	th := sha256.New()
	for _, name := range names {
		writeString(th, name)
		sum := t.sums[name]
		th.Write(sum[:])
	}
	t.version = hex.EncodeToString(th.Sum(nil)[:8])
	return nil
}

// sum returns the content hash of a resource of t; t may be nil.
func (t *typeSet) sum(name string) ([sha256.Size]byte, bool) {
	if t == nil {
		return [sha256.Size]byte{}, false
	}
	s, ok := t.sums[name]
	return s, ok
}

// encoded holds a resource's deterministic encoding as the unknown fields of an empty message, which
// encodes to exactly those bytes. go-control-plane marshals each resource again for every response, and
// with a thousand proxies sharing one config that was most of the controller's work; this way it is a
// copy. The cache needs nothing else of a resource: it names resources by our map keys and takes the
// type URL from the request.
func encoded(b []byte) types.Resource {
	m := &emptypb.Empty{}
	m.ProtoReflect().SetUnknown(b)
	return m
}

// GetVersion returns the version of a type's resources; "" for a type the controller does not serve.
func (s *snapshot) GetVersion(typeURL string) string {
	if i := typeIndex(typeURL); i >= 0 {
		return s.sets[i].version
	}
	return ""
}

// GetResourcesAndTTL returns a type's resources by name; the map must not be modified.
func (s *snapshot) GetResourcesAndTTL(typeURL string) map[string]types.ResourceWithTTL {
	if i := typeIndex(typeURL); i >= 0 {
		return s.sets[i].items
	}
	return nil
}

// GetResources returns a type's resources by name; the map must not be modified.
func (s *snapshot) GetResources(typeURL string) map[string]types.Resource {
	if i := typeIndex(typeURL); i >= 0 {
		return s.sets[i].plain
	}
	return nil
}

// ConstructVersionMap does nothing: the per-resource versions delta xDS needs are computed with the
// snapshot, which is what lets nodes share it without locks.
func (s *snapshot) ConstructVersionMap() error { return nil }

// GetVersionMap returns the version of each resource of a type, by name.
func (s *snapshot) GetVersionMap(typeURL string) map[string]string {
	if i := typeIndex(typeURL); i >= 0 {
		return s.sets[i].versions
	}
	return nil
}

// sameVersions reports whether two snapshots serve the same content.
func sameVersions(a, b *snapshot) bool {
	for i := range a.sets {
		if a.sets[i].version != b.sets[i].version {
			return false
		}
	}
	return true
}

// contentHasher hashes what a message means rather than how it was encoded. The bytes of a deterministic
// proto marshal would do for the message itself, but not for the google.protobuf.Any fields the translator
// fills with anypb.New, whose payload is marshalled with map entries in random order: two translations of
// the same config would then get different versions and every proxy would be sent its config again. So
// the hasher walks fields in declaration order, sorts map entries, and hashes an Any by its unpacked
// content when the type is known.
type contentHasher struct {
	h   hash.Hash
	buf [8]byte
}

func newContentHasher() *contentHasher { return &contentHasher{h: sha256.New()} }

// sum returns the hash of one message.
func (c *contentHasher) sum(m proto.Message) [sha256.Size]byte {
	c.h.Reset()
	c.message(m.ProtoReflect())
	var out [sha256.Size]byte
	c.h.Sum(out[:0])
	return out
}

const anyName protoreflect.FullName = "google.protobuf.Any"

func (c *contentHasher) message(m protoreflect.Message) {
	d := m.Descriptor()
	if d.FullName() == anyName && c.any(m) {
		return
	}
	fields := d.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		c.uint(uint64(fd.Number()))
		c.field(fd, m.Get(fd))
	}
	if u := m.GetUnknown(); len(u) > 0 {
		c.uint(math.MaxUint64)
		c.bytes(u)
	}
	// Field number 0 does not exist: it closes the message, so that nesting is unambiguous.
	c.uint(0)
}

// any hashes an Any by its type and unpacked content; false when the type is not linked in or the payload
// does not parse, in which case its raw fields are hashed instead.
func (c *contentHasher) any(m protoreflect.Message) bool {
	fields := m.Descriptor().Fields()
	url := m.Get(fields.ByNumber(1)).String()
	value := m.Get(fields.ByNumber(2)).Bytes()
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if err != nil {
		return false
	}
	inner := mt.New()
	if err := (proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(value, inner.Interface()); err != nil {
		return false
	}
	c.uint(math.MaxUint64 - 1)
	c.string(url)
	c.message(inner)
	return true
}

func (c *contentHasher) field(fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	switch {
	case fd.IsList():
		l := v.List()
		c.uint(uint64(l.Len()))
		for i := range l.Len() {
			c.single(fd, l.Get(i))
		}
	case fd.IsMap():
		c.mapEntries(fd, v.Map())
	default:
		c.single(fd, v)
	}
}

func (c *contentHasher) mapEntries(fd protoreflect.FieldDescriptor, mp protoreflect.Map) {
	type entry struct {
		key []byte
		val protoreflect.Value
	}
	entries := make([]entry, 0, mp.Len())
	mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		entries = append(entries, entry{mapKeyBytes(fd.MapKey().Kind(), k), v})
		return true
	})
	slices.SortFunc(entries, func(a, b entry) int { return slices.Compare(a.key, b.key) })
	c.uint(uint64(len(entries)))
	for _, e := range entries {
		c.bytes(e.key)
		c.single(fd.MapValue(), e.val)
	}
}

// mapKeyBytes encodes a map key so that entries sort the same way every time.
func mapKeyBytes(kind protoreflect.Kind, k protoreflect.MapKey) []byte {
	switch kind {
	case protoreflect.StringKind:
		return []byte(k.String())
	case protoreflect.BoolKind:
		if k.Bool() {
			return []byte{1}
		}
		return []byte{0}
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		return binary.BigEndian.AppendUint64(nil, k.Uint())
	default:
		return binary.BigEndian.AppendUint64(nil, uint64(k.Int()))
	}
}

func (c *contentHasher) single(fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		if v.Bool() {
			c.uint(1)
		} else {
			c.uint(0)
		}
	case protoreflect.EnumKind:
		c.uint(uint64(v.Enum()))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		c.uint(uint64(v.Int()))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		c.uint(v.Uint())
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		c.uint(math.Float64bits(v.Float()))
	case protoreflect.StringKind:
		c.string(v.String())
	case protoreflect.BytesKind:
		c.bytes(v.Bytes())
	case protoreflect.MessageKind, protoreflect.GroupKind:
		c.message(v.Message())
	}
}

func (c *contentHasher) uint(u uint64) {
	binary.BigEndian.PutUint64(c.buf[:], u)
	c.h.Write(c.buf[:])
}

func (c *contentHasher) string(s string) {
	c.uint(uint64(len(s)))
	c.h.Write([]byte(s))
}

func (c *contentHasher) bytes(b []byte) {
	c.uint(uint64(len(b)))
	c.h.Write(b)
}

// writeString writes a length-prefixed string, so that concatenated names cannot be confused.
func writeString(h hash.Hash, s string) {
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(s))))
	h.Write([]byte(s))
}

// shortType names a type URL the way operators know it (lds, cds, eds, rds), and "other" for any other, so
// a metric label has a bounded set of values whatever a client sends.
func shortType(typeURL string) string {
	switch typeURL {
	case resource.ListenerType:
		return "lds"
	case resource.ClusterType:
		return "cds"
	case resource.EndpointType:
		return "eds"
	case resource.RouteType:
		return "rds"
	case resource.SecretType:
		return "sds"
	}
	return "other"
}
