// Package thrift is the codec of Apache Thrift RPC: the binary (strict and old) and compact protocols over the
// framed, unframed (buffered) and THeader transports, including CloudWeGo Kitex's TTHeader variant.
//
// The codec works out the transport and protocol of each connection from its first bytes. Decoding reads the
// transport header and the message header (name, type, seqid) and forwards the body as bytes; unframed messages
// are skipped value by value to find where they end. THeader key/values are decoded when a route first asks
// for one, and Encode rewrites them; no other transport carries metadata.
package thrift

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/meltemi-mesh/meltemi/codec"
)

// Thrift message types.
const (
	typeCall      = 1
	typeReply     = 2
	typeException = 3
	typeOneway    = 4
)

// TApplicationException types, as Apache Thrift numbers them.
const (
	ExceptionUnknown               = 0  // ExceptionUnknown is an unspecified failure
	ExceptionUnknownMethod         = 1  // ExceptionUnknownMethod is a method the server does not serve
	ExceptionInvalidMessageType    = 2  // ExceptionInvalidMessageType is a message of an unexpected type
	ExceptionWrongMethodName       = 3  // ExceptionWrongMethodName is a reply for another method
	ExceptionBadSequenceID         = 4  // ExceptionBadSequenceID is a reply with an unexpected seqid
	ExceptionMissingResult         = 5  // ExceptionMissingResult is a reply without a result
	ExceptionInternalError         = 6  // ExceptionInternalError is a failure of the server
	ExceptionProtocolError         = 7  // ExceptionProtocolError is a message the server could not read
	ExceptionInvalidTransform      = 8  // ExceptionInvalidTransform is an unsupported THeader transform
	ExceptionInvalidProtocol       = 9  // ExceptionInvalidProtocol is an unsupported THeader protocol
	ExceptionUnsupportedClientType = 10 // ExceptionUnsupportedClientType is an unsupported transport
)

// Metadata keys the codec sets eagerly. THeader key/values keep their own names.
const (
	// KeyMethod is the method name; for a multiplexed call ("Service:method") the part after the colon.
	KeyMethod = "method"
	// KeyService is the service name of a multiplexed call, the part before the colon; absent otherwise.
	KeyService = "service"
	// KeyMethodFull is the message name exactly as on the wire ("Service:method" when multiplexed).
	KeyMethodFull = "thrift.method_full"
)

// Protocol markers: the bytes that start a message.
const (
	binaryVersion1   = 0x80010000
	binaryVersionHi  = 0x8001
	compactID        = 0x82
	compactVersion   = 1
	compactVersionMk = 0x1f
)

// THeader magics, in the 16 bits after the LENGTH: Apache's THeader and Kitex's TTHeader.
const (
	magicTHeader  = 0x0fff
	magicTTHeader = 0x1000
)

// Transports, in the low bits of Private[privState].
const (
	trUnframed = 1 + iota
	trFramed
	trTHeader  // Apache THeader: varint protocol id, transforms and key/values
	trTTHeader // Kitex TTHeader: the same framing with uint8 ids and uint16 lengths
	trMask     = 7
)

// Protocols, in bits 3-4 of Private[privState].
const (
	protoBinary    = 1 // strict: the version word 0x8001 comes first
	protoBinaryOld = 2 // the old form: the name comes first
	protoCompact   = 3
	protoShift     = 3
	protoMask      = 3 << protoShift
	flagsShift     = 16 // THeader flags, echoed in replies
	// stInnerFrame marks a TTHeader frame whose message has a framed length of its own after the header, as
	// Kitex's TTHeaderFramed transport writes it; replies carry one too.
	stInnerFrame = 1 << 5
)

// The codec's bookkeeping in Message.Private.
const (
	privState   = 0 // transport | protocol<<3 | THeader flags<<16
	privSeqID   = 1 // offset in Frame of the message's seqid
	privPayload = 2 // offset in Frame of the message (after the frame length or THeader header)
	privInfo    = 3 // THeader: offset in Frame of the first info block; 0 for other transports
)

// maxErrorDetail bounds the detail an error reply carries, so a reply stays far below any frame limit.
const maxErrorDetail = 64 << 10

// maxSeqIDVarint is the longest varint a seqid (an int32, written as its uint32 bits) takes.
const maxSeqIDVarint = 5

// Codec reads and writes the Thrift messages of one connection. It is not safe for concurrent use, except
// for SetID, HeartbeatReply and ErrorReply, which touch only their message.
type Codec struct {
	maxFrame int

	// transport is what the connection's last frame used; it lets Decode size a framed frame from its first
	// four bytes once the connection is known to be framed.
	transport int

	names  codec.Interner // method and service names
	keys   codec.Interner // THeader keys
	values codec.Interner // short THeader values

	written []bool // which Mutation.Set entries Encode has written
	keyBuf  []byte // names of Kitex integer keys
}

// loader is the Codec seen as the codec.Loader of its messages' THeader key/values; a conversion, not an
// allocation.
type loader Codec

var (
	_ codec.Codec  = (*Codec)(nil)
	_ codec.Loader = (*loader)(nil)
)

// msgHead is what the message header says.
type msgHead struct {
	proto  int
	typ    byte
	name   []byte
	seqID  uint32
	seqOff int // offset of the seqid
	body   int // offset of the struct that follows the header
}

// Decode decodes the first message in buf into msg.
func (c *Codec) Decode(buf []byte, msg *codec.Message) (int, error) {
	if len(buf) == 0 {
		return 0, codec.ErrIncomplete
	}
	switch b0 := buf[0]; {
	case b0 == 0x80 || b0 == compactID:
		return c.decodeUnframed(buf, msg)
	case b0 >= 0x40:
		// Neither a message nor a frame length a Thrift peer may send (THeader's limit is 0x3fffffff).
		return 0, codec.Errorf(false, "thrift: first bytes % x start neither a message nor a frame", buf[:min(len(buf), 4)])
	}
	if len(buf) < 4 {
		return 0, codec.ErrIncomplete
	}
	length := int(binary.BigEndian.Uint32(buf))
	framed := c.transport >= trFramed
	if len(buf) > 4 {
		// A frame's payload starts with 0x00 (old binary), 0x0f or 0x10 (THeader), 0x80 or 0x82; a method name,
		// which is what follows the name length of an unframed old-binary message, starts with none of them: it
		// is text, and 0x80-0xbf cannot start UTF-8.
		b4 := buf[4]
		framed = b4 < 0x20 || b4 >= 0x80 && b4 < 0xc0
	}
	if length > c.maxFrame {
		if framed {
			return 0, c.overLimit(buf, msg, length)
		}
		return 0, codec.Errorf(false, "thrift: message name length %d exceeds limit %d", length, c.maxFrame)
	}
	if len(buf) == 4 {
		if framed && length > 0 {
			return 4 + length, codec.ErrIncomplete
		}
		return 0, codec.ErrIncomplete
	}
	if !framed {
		return c.decodeUnframed(buf, msg)
	}
	if length == 0 {
		return 0, codec.Errorf(false, "thrift: empty frame")
	}
	n := 4 + length
	if len(buf) < n {
		c.transport = trFramed
		return n, codec.ErrIncomplete
	}
	frame := buf[:n:n]
	if err := c.decodeFrame(frame, msg, true); err != nil {
		return 0, err
	}
	msg.Frame = frame
	return n, nil
}

// overLimit refuses a frame longer than the limit. When the bytes at hand hold the header of a call, msg is
// filled in so that the proxy can answer it before the connection closes.
func (c *Codec) overLimit(buf []byte, msg *codec.Message, length int) error {
	err := c.decodeFrame(buf[:min(len(buf), 4+length)], msg, false)
	canReply := err == nil && msg.Type == codec.Request
	if !canReply {
		msg.Reset()
	}
	return codec.Errorf(canReply, "thrift: frame length %d exceeds limit %d", length, c.maxFrame)
}

// decodeFrame decodes the framed or THeader message frame, which starts with its LENGTH. With complete false
// the frame may be cut short, and only the header must be there.
func (c *Codec) decodeFrame(frame []byte, msg *codec.Message, complete bool) error {
	if len(frame) < 6 {
		return codec.Errorf(false, "thrift: frame of %d bytes is too short", len(frame)-4)
	}
	tr, payload, info, flags := trFramed, 4, 0, 0
	var err error
	switch binary.BigEndian.Uint16(frame[4:]) {
	case magicTHeader:
		tr = trTHeader
	case magicTTHeader:
		tr = trTTHeader
	}
	var hdrProto int
	entries := false
	if tr != trFramed {
		if payload, info, entries, hdrProto, flags, err = parseTHeader(frame, tr == trTTHeader); err != nil {
			return err
		}
	}
	c.transport = tr
	msgStart, inner := payload, 0
	if tr == trTTHeader && len(frame) >= payload+5 &&
		int(binary.BigEndian.Uint32(frame[payload:])) == len(frame)-payload-4 &&
		(frame[payload+4] == binaryVersion1>>24 || frame[payload+4] == compactID) {
		// Kitex TTHeaderFramed: the message keeps its own frame length inside the TTHeader frame.
		msgStart, inner = payload+4, stInnerFrame
	}
	h, err := parseMessage(frame, msgStart)
	if err != nil {
		if err == errShort {
			return codec.Errorf(false, "thrift: message header runs past the end of the %d-byte frame", len(frame)-4)
		}
		return codec.Errorf(false, "%v", err)
	}
	if hdrProto == protoCompact && h.proto != protoCompact || hdrProto == protoBinary && h.proto == protoCompact {
		return codec.Errorf(false, "thrift: THeader says protocol %s but the message is %s", protoName(hdrProto), protoName(h.proto))
	}
	msg.Private[privState] = tr | h.proto<<protoShift | inner | flags<<flagsShift
	msg.Private[privSeqID] = h.seqOff
	msg.Private[privPayload] = payload
	msg.Private[privInfo] = info
	if err := c.fill(msg, &h, frame); err != nil {
		return err
	}
	if entries && complete {
		msg.Metadata.Defer((*loader)(c), msg)
	}
	return nil
}

// decodeUnframed decodes a message with no frame around it: its end is found by skipping its struct.
func (c *Codec) decodeUnframed(buf []byte, msg *codec.Message) (int, error) {
	c.transport = trUnframed
	limited := buf[:min(len(buf), c.maxFrame)]
	h, err := parseMessage(limited, 0)
	if err == errShort {
		if len(buf) > c.maxFrame {
			return 0, codec.Errorf(false, "thrift: unframed message header longer than limit %d", c.maxFrame)
		}
		return 0, codec.ErrIncomplete
	}
	if err != nil {
		return 0, codec.Errorf(false, "%v", err)
	}
	var end int
	if h.proto == protoCompact {
		end, err = skipCompactStruct(limited, h.body, 0)
	} else {
		end, err = skipBinaryStruct(limited, h.body, 0)
	}
	switch {
	case err == errShort && len(buf) > c.maxFrame:
		msg.Private[privState] = trUnframed | h.proto<<protoShift
		fillErr := c.fill(msg, &h, nil)
		canReply := fillErr == nil && msg.Type == codec.Request
		if !canReply {
			msg.Reset()
		}
		return 0, codec.Errorf(canReply, "thrift: unframed message longer than limit %d", c.maxFrame)
	case err == errShort:
		return 0, codec.ErrIncomplete
	case err != nil:
		return 0, codec.Errorf(false, "thrift: message %q seqid %d: %v", h.name, int32(h.seqID), err)
	}
	frame := buf[:end:end]
	msg.Private[privState] = trUnframed | h.proto<<protoShift
	msg.Private[privSeqID] = h.seqOff
	if err := c.fill(msg, &h, frame); err != nil {
		return 0, err
	}
	msg.Frame = frame
	return end, nil
}

// fill sets msg's type, id, status and names from the message header. frame, when not nil, holds the body
// too, for the reply's outcome.
func (c *Codec) fill(msg *codec.Message, h *msgHead, frame []byte) error {
	msg.ID = uint64(h.seqID)
	switch h.typ {
	case typeCall:
		msg.Type = codec.Request
	case typeOneway:
		msg.Type = codec.Oneway
	case typeReply:
		msg.Type = codec.Response
		if frame != nil {
			msg.Failed = replyFailed(frame, h)
		}
	case typeException:
		msg.Type = codec.Error
		msg.Failed = true
		if frame != nil {
			msg.Status = exceptionType(frame, h)
		}
	default:
		return codec.Errorf(false, "thrift: message %q seqid %d has unknown type %d", h.name, int32(h.seqID), h.typ)
	}
	full := c.names.String(h.name)
	method := full
	if i := bytes.IndexByte(h.name, ':'); i >= 0 {
		msg.Metadata.Add(KeyService, c.names.String(h.name[:i]))
		method = c.names.String(h.name[i+1:])
	}
	// method is always there, even empty, so that ErrorReply's lookup never runs the lazy loader.
	msg.Metadata.Add(KeyMethod, method)
	msg.Metadata.Add(KeyMethodFull, full)
	return nil
}

// replyFailed reports whether a REPLY carries a declared exception: its result struct holds field 0 on success
// (or nothing, for a void method) and the exception's own field id otherwise. A body that cannot be read
// counts as a failure.
func replyFailed(frame []byte, h *msgHead) bool {
	p := h.body
	if p >= len(frame) {
		return true
	}
	ft := frame[p]
	if ft == tStop || h.proto == protoCompact && ft&0x0f == tStop {
		return false
	}
	if h.proto != protoCompact {
		if len(frame)-p < 3 {
			return true
		}
		return binary.BigEndian.Uint16(frame[p+1:]) != 0
	}
	if ft>>4 != 0 {
		// A short-form header: the id is a delta from 0, never 0 itself.
		return true
	}
	id, _, err := uvarint(frame, p+1)
	return err != nil || id != 0
}

// exceptionType reads field 2 (type) of the TApplicationException an EXCEPTION carries; 0 (UNKNOWN) when it
// is missing or unreadable.
func exceptionType(frame []byte, h *msgHead) int32 {
	p := h.body
	if h.proto != protoCompact {
		for p < len(frame) && frame[p] != tStop && len(frame)-p >= 3 {
			ft, id := frame[p], int16(binary.BigEndian.Uint16(frame[p+1:]))
			if id == 2 && ft == tI32 && len(frame)-p >= 7 {
				return int32(binary.BigEndian.Uint32(frame[p+3:]))
			}
			next, err := skipBinary(frame, p+3, ft, 1)
			if err != nil {
				return ExceptionUnknown
			}
			p = next
		}
		return ExceptionUnknown
	}
	last := int64(0)
	for p < len(frame) && frame[p]&0x0f != tStop {
		fh := frame[p]
		p++
		id := last + int64(fh>>4)
		if fh>>4 == 0 {
			zz, next, err := uvarint(frame, p)
			if err != nil {
				return ExceptionUnknown
			}
			id, p = unzigzag(zz), next
		}
		last = id
		ft := fh & 0x0f
		if ft == cBoolTrue || ft == cBoolFalse {
			continue
		}
		if id == 2 && ft == cI32 {
			zz, _, err := uvarint(frame, p)
			if err != nil {
				return ExceptionUnknown
			}
			return int32(unzigzag(zz))
		}
		next, err := skipCompact(frame, p, ft, 1)
		if err != nil {
			return ExceptionUnknown
		}
		p = next
	}
	return ExceptionUnknown
}

// unzigzag decodes a zig-zag varint's value.
func unzigzag(v uint64) int64 { return int64(v>>1) ^ -int64(v&1) }

// parseMessage reads the message header at p: binary strict, binary old or compact, told apart by the first
// byte.
func parseMessage(b []byte, p int) (msgHead, error) {
	var h msgHead
	if p >= len(b) {
		return h, errShort
	}
	switch b[p] {
	case 0x80:
		if len(b)-p < 4 {
			return h, errShort
		}
		v := binary.BigEndian.Uint32(b[p:])
		if v>>16 != binaryVersionHi {
			return h, fmt.Errorf("thrift: bad binary protocol version 0x%08x", v)
		}
		h.proto, h.typ = protoBinary, byte(v)
		n, q, err := binarySize(b, p+4)
		if err != nil {
			return h, err
		}
		if n > len(b)-q {
			return h, errShort
		}
		h.name = b[q : q+n]
		q += n
		if len(b)-q < 4 {
			return h, errShort
		}
		h.seqID, h.seqOff, h.body = binary.BigEndian.Uint32(b[q:]), q, q+4
		return h, nil
	case compactID:
		if len(b)-p < 2 {
			return h, errShort
		}
		tv := b[p+1]
		if tv&compactVersionMk != compactVersion {
			return h, fmt.Errorf("thrift: bad compact protocol version %d", tv&compactVersionMk)
		}
		h.proto, h.typ = protoCompact, tv>>5
		seq, q, err := uvarint(b, p+2)
		if err != nil {
			return h, err
		}
		if q-(p+2) > maxSeqIDVarint || seq > 1<<32-1 {
			return h, fmt.Errorf("thrift: compact seqid at offset %d does not fit an int32", p+2)
		}
		h.seqID, h.seqOff = uint32(seq), p+2
		n, q, err := compactSize(b, q)
		if err != nil {
			return h, err
		}
		if n > len(b)-q {
			return h, errShort
		}
		h.name, h.body = b[q:q+n], q+n
		return h, nil
	}
	if b[p]&0x80 != 0 {
		return h, fmt.Errorf("thrift: unknown protocol: message starts with 0x%02x", b[p])
	}
	// The old binary form: name length, name, type byte, seqid.
	n, q, err := binarySize(b, p)
	if err != nil {
		return h, err
	}
	if n > len(b)-q {
		return h, errShort
	}
	h.proto, h.name = protoBinaryOld, b[q:q+n]
	q += n
	if len(b)-q < 5 {
		return h, errShort
	}
	h.typ = b[q]
	h.seqID, h.seqOff, h.body = binary.BigEndian.Uint32(b[q+1:]), q+1, q+5
	return h, nil
}

func protoName(proto int) string {
	switch proto {
	case protoBinary:
		return "binary"
	case protoBinaryOld:
		return "binary (old form)"
	case protoCompact:
		return "compact"
	}
	return "unknown"
}

// SetID rewrites the seqid of msg in place: in the message and, for THeader, in the header too. A compact
// seqid is a varint: a shorter value is written in the same number of bytes with redundant continuation bytes,
// which every Thrift reader accepts; a longer one needs a bigger frame, so msg.Frame then points at a new copy
// with its length fixed.
func (c *Codec) SetID(msg *codec.Message, id uint64) {
	seq := uint32(id)
	msg.ID = uint64(seq)
	f := msg.Frame
	st, off := msg.Private[privState], msg.Private[privSeqID]
	tr := st & trMask
	if (tr == trTHeader || tr == trTTHeader) && len(f) >= 12 {
		binary.BigEndian.PutUint32(f[8:], seq)
	}
	if off <= 0 || off >= len(f) {
		return
	}
	if (st&protoMask)>>protoShift != protoCompact {
		if len(f)-off >= 4 {
			binary.BigEndian.PutUint32(f[off:], seq)
		}
		return
	}
	have := 0
	for have < maxSeqIDVarint && off+have < len(f) {
		have++
		if f[off+have-1] < 0x80 {
			break
		}
	}
	if have == 0 || f[off+have-1] >= 0x80 {
		return // not the frame this message was decoded from
	}
	want := varintLen(uint64(seq))
	if want <= have {
		putPaddedVarint(f[off:off+have], seq)
		return
	}
	grown := make([]byte, len(f)+want-have)
	copy(grown, f[:off])
	putPaddedVarint(grown[off:off+want], seq)
	copy(grown[off+want:], f[off+have:])
	if tr != trUnframed {
		binary.BigEndian.PutUint32(grown, uint32(len(grown)-4))
	}
	msg.Frame = grown
}

// varintLen is the number of bytes of v as a varint.
func varintLen(v uint64) int { return max(1, (bits.Len64(v)+6)/7) }

// putPaddedVarint writes v as a varint that fills dst exactly, which must be long enough.
func putPaddedVarint(dst []byte, v uint32) {
	last := len(dst) - 1
	for i := range last {
		dst[i] = byte(v&0x7f) | 0x80
		v >>= 7
	}
	dst[last] = byte(v)
}

// appendVarint appends v as a canonical varint.
func appendVarint(dst []byte, v uint64) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// HeartbeatReply appends nothing: Thrift has no heartbeat, and the codec never types a message Heartbeat.
func (c *Codec) HeartbeatReply(dst []byte, req *codec.Message) []byte { return dst }

// ErrorReply appends an EXCEPTION message answering req, in its transport and protocol, that carries a
// TApplicationException{1: message, 2: type}. A client's generated code raises it as the call's error. The
// method name is the bare one even for a multiplexed call, since that is what a multiplexing server replies
// with and what the client compares with.
func (c *Codec) ErrorReply(dst []byte, req *codec.Message, kind codec.ErrorKind, detail string) ([]byte, int32) {
	if req.Type != codec.Request {
		return dst, 0
	}
	typ := ExceptionTypeOf(kind)
	st := req.Private[privState]
	tr, proto, flags := st&trMask, (st&protoMask)>>protoShift, uint16(st>>flagsShift)
	if tr == 0 {
		tr, proto = trFramed, protoBinary
	}
	method, _ := req.Metadata.Get(KeyMethod)
	if len(detail) > maxErrorDetail {
		detail = detail[:maxErrorDetail]
	}
	start := len(dst)
	switch tr {
	case trFramed:
		dst = append(dst, 0, 0, 0, 0)
	case trTHeader, trTTHeader:
		magic := uint16(magicTHeader)
		if tr == trTTHeader {
			magic = magicTTHeader
		}
		dst = append(dst, 0, 0, 0, 0)
		dst = binary.BigEndian.AppendUint16(dst, magic)
		dst = binary.BigEndian.AppendUint16(dst, flags)
		dst = binary.BigEndian.AppendUint32(dst, uint32(req.ID))
		// One 4-byte word of header: the protocol id, no transforms, padding. It reads the same as varints
		// (THeader) and as uint8s (TTHeader).
		pid := byte(0)
		if proto == protoCompact {
			pid = 2
		}
		dst = append(dst, 0, 1, pid, 0, 0, 0)
	}
	inner := -1
	if tr == trTTHeader && st&stInnerFrame != 0 {
		inner = len(dst)
		dst = append(dst, 0, 0, 0, 0)
	}
	dst = appendMessageBegin(dst, proto, method, typeException, uint32(req.ID))
	prefix, sep := "meltemi: ", ": "
	if detail == "" {
		sep = ""
	}
	msgLen := len(prefix) + len(kind.String()) + len(sep) + len(detail)
	if proto == protoCompact {
		dst = append(dst, 0x10|cBinary)
		dst = appendVarint(dst, uint64(msgLen))
	} else {
		dst = append(dst, tString, 0, 1)
		dst = binary.BigEndian.AppendUint32(dst, uint32(msgLen))
	}
	dst = append(dst, prefix...)
	dst = append(dst, kind.String()...)
	dst = append(dst, sep...)
	dst = append(dst, detail...)
	if proto == protoCompact {
		dst = append(dst, 0x10|cI32)
		dst = appendVarint(dst, uint64(uint32(typ<<1)^uint32(typ>>31)))
	} else {
		dst = append(dst, tI32, 0, 2)
		dst = binary.BigEndian.AppendUint32(dst, uint32(typ))
	}
	dst = append(dst, tStop)
	if tr != trUnframed {
		binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	}
	if inner >= 0 {
		binary.BigEndian.PutUint32(dst[inner:], uint32(len(dst)-inner-4))
	}
	return dst, typ
}

// appendMessageBegin appends a message header in the given protocol.
func appendMessageBegin(dst []byte, proto int, name string, typ byte, seq uint32) []byte {
	switch proto {
	case protoCompact:
		dst = append(dst, compactID, typ<<5|compactVersion)
		dst = appendVarint(dst, uint64(seq))
		dst = appendVarint(dst, uint64(len(name)))
		return append(dst, name...)
	case protoBinaryOld:
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(name)))
		dst = append(dst, name...)
		dst = append(dst, typ)
		return binary.BigEndian.AppendUint32(dst, seq)
	}
	dst = binary.BigEndian.AppendUint32(dst, binaryVersion1|uint32(typ))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(name)))
	dst = append(dst, name...)
	return binary.BigEndian.AppendUint32(dst, seq)
}

// ExceptionTypeOf is the TApplicationException type an error reply of this kind carries. It follows Envoy's
// Thrift proxy: a missing route is an unknown method, which is what a server without the method answers;
// a request the proxy could not read is a protocol error; everything else is an internal error.
func ExceptionTypeOf(kind codec.ErrorKind) int32 {
	switch kind {
	case codec.RouteNotFound:
		return ExceptionUnknownMethod
	case codec.BadRequest:
		return ExceptionProtocolError
	default: // ClusterNotFound, NoHealthyUpstream, BadResponse, Unspecified, OverLimit, Timeout, Unauthorized
		return ExceptionInternalError
	}
}
