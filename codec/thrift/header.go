package thrift

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/meltemi-mesh/meltemi/codec"
)

// THeader layout: LENGTH (4), magic (2), flags (2), seqid (4), header size in 4-byte words (2), then the
// header proper and the payload.
const (
	headerFixedLen = 14
	// maxHeaderSize caps the variable header, as Envoy and Kitex do.
	maxHeaderSize = 64 << 10
)

// Info block ids. Apache THeader defines only KEYVALUE and stops reading at any other id; Kitex's TTHeader
// adds integer key/values and an ACL token, and pads with zero bytes between blocks.
const (
	infoPadding   = 0
	infoKeyValue  = 1
	infoIntKeyVal = 0x10
	infoACLToken  = 0x11
)

// Payload protocol ids in the header. THeader's 1 (JSON) and Kitex's protobuf ids are not Thrift messages the
// codec can read.
const (
	headerProtoBin = 0
	headerProtoCmp = 2
)

// maxInternedValue is the longest key/value value interned. Short values (service names, environments)
// repeat on every request; long ones (trace contexts) rarely do and would only fill the interner.
const maxInternedValue = 64

// KitexKeyPrefix starts the metadata keys of Kitex TTHeader integer key/values, e.g. "kitex.from_service".
const KitexKeyPrefix = "kitex."

// kitexIntKeys names Kitex's integer keys (its transmeta constants, in order), so routes can match them.
var kitexIntKeys = [...]string{
	"kitex.mesh_version", "kitex.transport_type", "kitex.log_id", "kitex.from_service", "kitex.from_cluster",
	"kitex.from_idc", "kitex.to_service", "kitex.to_cluster", "kitex.to_idc", "kitex.to_method", "kitex.env",
	"kitex.dest_address", "kitex.rpc_timeout", "kitex.read_timeout", "kitex.ring_hash_key", "kitex.ddp_tag",
	"kitex.with_mesh_header", "kitex.connect_timeout", "kitex.span_context", "kitex.short_connection",
	"kitex.from_method", "kitex.stress_tag", "kitex.msg_type", "kitex.http_content_type",
	"kitex.raw_ring_hash_key", "kitex.lb_type",
}

// parseTHeader validates the header of a THeader or TTHeader frame. It returns where the payload starts,
// where the info blocks start, whether they hold any key/values, the payload's protocol and the flags.
func parseTHeader(frame []byte, kitex bool) (payload, info int, entries bool, proto, flags int, err error) {
	if len(frame) < headerFixedLen {
		return 0, 0, false, 0, 0, codec.Errorf(false, "thrift: THeader frame of %d bytes is shorter than its fixed header", len(frame)-4)
	}
	flags = int(binary.BigEndian.Uint16(frame[6:]))
	size := int(binary.BigEndian.Uint16(frame[12:])) * 4
	if size > maxHeaderSize {
		return 0, 0, false, 0, 0, codec.Errorf(false, "thrift: THeader header size %d exceeds limit %d", size, maxHeaderSize)
	}
	payload = headerFixedLen + size
	if payload > len(frame) {
		return 0, 0, false, 0, 0, codec.Errorf(false, "thrift: THeader header of %d bytes runs past the end of the %d-byte frame", size, len(frame)-4)
	}
	hdr := frame[:payload]
	p := headerFixedLen
	var pid, count uint64
	if pid, p, err = headerInt(hdr, p, kitex); err != nil {
		return 0, 0, false, 0, 0, err
	}
	switch pid {
	case headerProtoBin:
		proto = protoBinary
	case headerProtoCmp:
		proto = protoCompact
	case 1:
		if !kitex {
			return 0, 0, false, 0, 0, codec.Errorf(false, "thrift: THeader protocol 1 (JSON) is not supported")
		}
		fallthrough
	default:
		return 0, 0, false, 0, 0, codec.Errorf(false, "thrift: THeader protocol id %d is not a Thrift binary or compact payload", pid)
	}
	if count, p, err = headerInt(hdr, p, kitex); err != nil {
		return 0, 0, false, 0, 0, err
	}
	if count > uint64(size) {
		return 0, 0, false, 0, 0, codec.Errorf(false, "thrift: THeader transform count %d exceeds the header", count)
	}
	for range count {
		var id uint64
		if id, p, err = headerInt(hdr, p, kitex); err != nil {
			return 0, 0, false, 0, 0, err
		}
		if id != 0 {
			// The payload is transformed (compressed or signed): its message header cannot be read, nor its
			// seqid rewritten in place.
			return 0, 0, false, 0, 0, codec.Errorf(false, "thrift: THeader transform %d (%s) is not supported", id, transformName(id))
		}
	}
	it := infoIter{f: frame, p: p, end: payload, kitex: kitex}
	for {
		var e infoEntry
		if err := it.next(&e); err != nil {
			return 0, 0, false, 0, 0, codec.Errorf(false, "%v", err)
		}
		if e.kind == entryEnd {
			break
		}
		if e.kind == entryKV || e.kind == entryBlock && e.intKV {
			entries = true
		}
	}
	return payload, p, entries, proto, flags, nil
}

// headerInt reads a protocol id, transform count or transform id: a varint in THeader, a byte in TTHeader.
func headerInt(hdr []byte, p int, kitex bool) (uint64, int, error) {
	if kitex {
		if p >= len(hdr) {
			return 0, 0, codec.Errorf(false, "thrift: TTHeader header ends before its protocol and transforms")
		}
		return uint64(hdr[p]), p + 1, nil
	}
	v, next, err := uvarint(hdr, p)
	if err == errShort {
		return 0, 0, codec.Errorf(false, "thrift: THeader header ends before its protocol and transforms")
	}
	if err != nil {
		return 0, 0, codec.Errorf(false, "%v", err)
	}
	return v, next, nil
}

func transformName(id uint64) string {
	switch id {
	case 1:
		return "zlib"
	case 2:
		return "hmac"
	case 3:
		return "snappy"
	}
	return "unknown"
}

// Kinds of info entries.
const (
	entryEnd   = iota
	entryKV    // one string key/value pair
	entryBlock // a whole block that is not string key/values: Kitex integer key/values or ACL token
	entryTail  // bytes from an info id the codec does not know to the end of the header, kept as they are
)

// infoEntry is one step of an infoIter.
type infoEntry struct {
	kind       int
	key, value []byte
	start, end int  // the entry's bytes in the frame (entryBlock, entryTail)
	intKV      bool // entryBlock: Kitex integer key/values
}

// infoIter walks the info blocks of a THeader header without allocating.
type infoIter struct {
	f      []byte // the frame
	p, end int    // position; end of the header
	kitex  bool
	left   int // pairs left in the current KEYVALUE block
}

var errInfoShort = errors.New("thrift: THeader info blocks run past the end of the header")

// next reads the next entry into e.
func (it *infoIter) next(e *infoEntry) error {
	for it.left == 0 {
		if it.p >= it.end {
			e.kind = entryEnd
			return nil
		}
		start := it.p
		id, err := it.int(true)
		if err != nil {
			return err
		}
		switch {
		case id == infoKeyValue:
			n, err := it.int(false)
			if err != nil {
				return err
			}
			if n > uint64(it.end-it.p) {
				// Every pair takes at least two bytes.
				return fmt.Errorf("thrift: THeader key/value count %d exceeds the header", n)
			}
			it.left = int(n)
		case it.kitex && id == infoPadding:
		case it.kitex && id == infoIntKeyVal:
			n, err := it.int(false)
			if err != nil {
				return err
			}
			for range n {
				if it.end-it.p < 2 {
					return errInfoShort
				}
				it.p += 2
				if _, err := it.bytes(); err != nil {
					return err
				}
			}
			*e = infoEntry{kind: entryBlock, start: start, end: it.p, intKV: true}
			return nil
		case it.kitex && id == infoACLToken:
			if _, err := it.bytes(); err != nil {
				return err
			}
			*e = infoEntry{kind: entryBlock, start: start, end: it.p}
			return nil
		default:
			// Apache readers stop at the first id that is not KEYVALUE (padding included); what follows is
			// kept as it is, unless it is only padding.
			it.p = it.end
			for _, b := range it.f[start:it.end] {
				if b != 0 {
					*e = infoEntry{kind: entryTail, start: start, end: it.end}
					return nil
				}
			}
		}
	}
	key, err := it.bytes()
	if err != nil {
		return err
	}
	value, err := it.bytes()
	if err != nil {
		return err
	}
	it.left--
	*e = infoEntry{kind: entryKV, key: key, value: value}
	return nil
}

// int reads an info id (id true) or a count: varints in THeader; in TTHeader a byte and a uint16.
func (it *infoIter) int(id bool) (uint64, error) {
	if !it.kitex {
		v, next, err := uvarint(it.f[:it.end], it.p)
		if err == errShort {
			return 0, errInfoShort
		}
		if err != nil {
			return 0, err
		}
		if v > math.MaxInt32 {
			return 0, fmt.Errorf("thrift: THeader value %d at offset %d does not fit an int32", v, it.p)
		}
		it.p = next
		return v, nil
	}
	n := 2
	if id {
		n = 1
	}
	if it.end-it.p < n {
		return 0, errInfoShort
	}
	var v uint64
	if id {
		v = uint64(it.f[it.p])
	} else {
		v = uint64(binary.BigEndian.Uint16(it.f[it.p:]))
	}
	it.p += n
	return v, nil
}

// bytes reads a length-prefixed string: a varint length in THeader, a uint16 in TTHeader.
func (it *infoIter) bytes() ([]byte, error) {
	n, err := it.int(false)
	if err != nil {
		return nil, err
	}
	if n > uint64(it.end-it.p) {
		return nil, errInfoShort
	}
	s := it.f[it.p : it.p+int(n)]
	it.p += int(n)
	return s, nil
}

// LoadMetadata adds the THeader key/values of msg to its metadata, each under its own key; a key sent twice
// keeps its last value, as the Apache library's map does. Kitex integer key/values are added under
// KitexKeyPrefix. Keys decoded eagerly (method, service, thrift.method_full) keep their message values.
func (l *loader) LoadMetadata(msg *codec.Message) error {
	c := (*Codec)(l)
	f := msg.Frame
	info, payload := msg.Private[privInfo], msg.Private[privPayload]
	if info < headerFixedLen || info > payload || payload > len(f) {
		return errors.New("thrift: message does not hold the frame it was decoded from")
	}
	it := infoIter{f: f, p: info, end: payload, kitex: msg.Private[privState]&trMask == trTTHeader}
	for {
		var e infoEntry
		if err := it.next(&e); err != nil {
			return err
		}
		switch {
		case e.kind == entryEnd:
			return nil
		case e.kind == entryKV:
			if isEagerKey(e.key) {
				continue
			}
			msg.Metadata.Set(c.keys.String(e.key), c.value(e.value))
		case e.kind == entryBlock && e.intKV:
			if err := c.loadIntKeys(msg, f[e.start:e.end]); err != nil {
				return err
			}
		}
	}
}

// loadIntKeys adds the entries of a Kitex integer key/value block: id 0x10, uint16 count, then a uint16 key
// and a uint16-length value each. parseTHeader has validated it; the bounds are checked again all the same, so
// that a frame changed since cannot make the loader panic.
func (c *Codec) loadIntKeys(msg *codec.Message, block []byte) error {
	if len(block) < 3 {
		return errInfoShort
	}
	n := int(binary.BigEndian.Uint16(block[1:]))
	p := 3
	for range n {
		if len(block)-p < 4 {
			return errInfoShort
		}
		id := binary.BigEndian.Uint16(block[p:])
		vl := int(binary.BigEndian.Uint16(block[p+2:]))
		if len(block)-p-4 < vl {
			return errInfoShort
		}
		value := block[p+4 : p+4+vl]
		p += 4 + vl
		var key string
		if int(id) < len(kitexIntKeys) {
			key = kitexIntKeys[id]
		} else {
			c.keyBuf = strconv.AppendUint(append(c.keyBuf[:0], KitexKeyPrefix...), uint64(id), 10)
			key = c.keys.String(c.keyBuf)
		}
		msg.Metadata.Set(key, c.value(value))
	}
	return nil
}

// value returns a key/value value as a string, interned when short.
func (c *Codec) value(v []byte) string {
	if len(v) <= maxInternedValue {
		return c.values.String(v)
	}
	return string(v)
}

func isEagerKey(k []byte) bool {
	switch string(k) {
	case KeyMethod, KeyService, KeyMethodFull:
		return true
	}
	return false
}

// Encode appends msg to dst with mutation applied to its THeader string key/values, and points msg.Frame at the
// copy. Keys are set first and removed second; untouched pairs, Kitex integer key/values and unknown info blocks
// keep their bytes, and the payload is copied as it is. The header size, its padding and the LENGTH are fixed.
// Only THeader frames carry key/values; any frame is copied unchanged by an empty mutation.
func (c *Codec) Encode(dst []byte, msg *codec.Message, mutation *codec.Mutation) ([]byte, error) {
	frame := msg.Frame
	if len(frame) == 0 {
		return dst, errors.New("thrift: encode: the message holds no frame")
	}
	if mutation.Empty() {
		out := append(dst, frame...)
		msg.Frame = out[len(dst):]
		return out, nil
	}
	tr := msg.Private[privState] & trMask
	switch tr {
	case trFramed:
		return dst, errors.New("thrift: framed transport cannot carry metadata")
	case trUnframed:
		return dst, errors.New("thrift: unframed transport cannot carry metadata")
	case trTHeader, trTTHeader:
	default:
		return dst, errors.New("thrift: encode: the message was not decoded by this codec")
	}
	kitex := tr == trTTHeader
	payload, info, _, _, _, err := parseTHeader(frame, kitex)
	if err != nil {
		return dst, fmt.Errorf("thrift: encode: %w", err)
	}
	start := len(dst)
	out := append(dst, frame[:info]...)

	_, count, err := c.rewriteKeyValues(nil, frame, info, payload, kitex, mutation, false)
	if err != nil {
		return dst, err
	}
	if count > 0 {
		if kitex {
			if count > math.MaxUint16 {
				return dst, fmt.Errorf("thrift: encode: %d key/values exceed TTHeader's limit of %d", count, math.MaxUint16)
			}
			out = binary.BigEndian.AppendUint16(append(out, infoKeyValue), uint16(count))
		} else {
			out = appendVarint(appendVarint(out, infoKeyValue), uint64(count))
		}
		if out, _, err = c.rewriteKeyValues(out, frame, info, payload, kitex, mutation, true); err != nil {
			return dst, err
		}
	}
	it := infoIter{f: frame, p: info, end: payload, kitex: kitex}
	for {
		var e infoEntry
		if err := it.next(&e); err != nil {
			return dst, fmt.Errorf("thrift: encode: %w", err)
		}
		if e.kind == entryEnd {
			break
		}
		if e.kind == entryBlock || e.kind == entryTail {
			out = append(out, frame[e.start:e.end]...)
		}
	}
	for (len(out)-start-headerFixedLen)%4 != 0 {
		out = append(out, 0)
	}
	size := len(out) - start - headerFixedLen
	if size > maxHeaderSize {
		return dst, fmt.Errorf("thrift: encode: THeader header size %d exceeds limit %d", size, maxHeaderSize)
	}
	binary.BigEndian.PutUint16(out[start+12:], uint16(size/4))
	out = append(out, frame[payload:]...)
	if length := len(out) - start - 4; length > c.maxFrame {
		return dst, fmt.Errorf("thrift: encode: frame length %d exceeds limit %d", length, c.maxFrame)
	}
	binary.BigEndian.PutUint32(out[start:], uint32(len(out)-start-4))
	// Decoding the new frame leaves msg consistent with it: offsets, and key/values loaded on demand.
	msg.Reset()
	if _, err := c.Decode(out[start:], msg); err != nil {
		return dst, fmt.Errorf("thrift: encode: re-encoded frame does not decode: %w", err)
	}
	return out, nil
}

// rewriteKeyValues applies mutation to the string key/values of the header, appending the resulting pairs to
// out when write is set, and returns how many pairs there are. A key that is set replaces its first
// occurrence and drops the others; a key that is removed drops all; set keys not in the header come last.
func (c *Codec) rewriteKeyValues(out, frame []byte, info, payload int, kitex bool, m *codec.Mutation, write bool) ([]byte, int, error) {
	c.written = c.written[:0]
	for range m.Set {
		c.written = append(c.written, false)
	}
	count := 0
	var err error
	it := infoIter{f: frame, p: info, end: payload, kitex: kitex}
	for {
		var e infoEntry
		if err := it.next(&e); err != nil {
			return out, 0, fmt.Errorf("thrift: encode: %w", err)
		}
		if e.kind == entryEnd {
			break
		}
		if e.kind != entryKV || removesBytes(m, e.key) {
			continue
		}
		i := lastSetBytes(m, e.key)
		switch {
		case i < 0:
			count++
			if write {
				out, err = appendPair(out, e.key, e.value, kitex)
			}
		case !c.written[i]:
			c.written[i] = true
			count++
			if write {
				out, err = appendPair(out, m.Set[i].Key, m.Set[i].Value, kitex)
			}
		}
		if err != nil {
			return out, 0, err
		}
	}
	for i, kv := range m.Set {
		if c.written[i] || lastSet(m, kv.Key) != i || removes(m, kv.Key) {
			continue
		}
		count++
		if write {
			if out, err = appendPair(out, kv.Key, kv.Value, kitex); err != nil {
				return out, 0, err
			}
		}
	}
	return out, count, nil
}

// appendPair appends a key/value pair: varint lengths in THeader, uint16 lengths in TTHeader.
func appendPair[S ~string | ~[]byte](out []byte, key, value S, kitex bool) ([]byte, error) {
	for _, s := range [2]S{key, value} {
		if kitex {
			if len(s) > math.MaxUint16 {
				return out, fmt.Errorf("thrift: encode: TTHeader string of %d bytes exceeds %d", len(s), math.MaxUint16)
			}
			out = binary.BigEndian.AppendUint16(out, uint16(len(s)))
		} else {
			out = appendVarint(out, uint64(len(s)))
		}
		out = append(out, s...)
	}
	return out, nil
}

// lastSet returns the index of the last Set entry for key, which is the one that wins, or -1.
func lastSet(m *codec.Mutation, key string) int {
	for i := len(m.Set) - 1; i >= 0; i-- {
		if m.Set[i].Key == key {
			return i
		}
	}
	return -1
}

// removes reports whether m removes key.
func removes(m *codec.Mutation, key string) bool {
	for _, k := range m.Remove {
		if k == key {
			return true
		}
	}
	return false
}

// lastSetBytes is lastSet for a key in the frame.
func lastSetBytes(m *codec.Mutation, key []byte) int {
	for i := len(m.Set) - 1; i >= 0; i-- {
		if m.Set[i].Key == string(key) {
			return i
		}
	}
	return -1
}

// removesBytes is removes for a key in the frame.
func removesBytes(m *codec.Mutation, key []byte) bool {
	for _, k := range m.Remove {
		if k == string(key) {
			return true
		}
	}
	return false
}
