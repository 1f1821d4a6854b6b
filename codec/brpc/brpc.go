// Package brpc is the codec of bRPC's baidu_std protocol: a 12-byte header ("PRPC", body_size, meta_size), a
// protobuf RpcMeta, then the payload and the attachment.
//
// Decoding reads the header and walks the RpcMeta with protowire instead of unmarshalling it; the payload and
// the attachment travel as bytes and are never looked at. The user_fields map is decoded only when a route
// asks for a key that is not there yet. Encoding rewrites user_fields alone and copies every other byte.
package brpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meltemi-mesh/meltemi/codec"
)

// Frame layout.
const (
	headerLen = 12
	magic     = "PRPC"
)

// Field numbers of brpc's baidu_rpc_meta.proto (RpcMeta and the messages inside it).
const (
	metaRequest        = 1
	metaResponse       = 2
	metaCompressType   = 3
	metaCorrelationID  = 4
	metaChunkInfo      = 6
	metaStreamSettings = 8
	metaUserFields     = 9

	requestServiceName = 1
	requestMethodName  = 2

	responseErrorCode = 1
	responseErrorText = 2

	chunkStreamID = 1

	entryKey   = 1
	entryValue = 2
)

// Error codes from brpc's errno.proto that error replies carry.
const (
	CodeNoService = 1001 // CodeNoService is ENOSERVICE: no such service
	CodeRequest   = 1003 // CodeRequest is EREQUEST: a request the server cannot read
	CodeAuth      = 1004 // CodeAuth is ERPCAUTH: authentication failed
	CodeTimedOut  = 1008 // CodeTimedOut is ERPCTIMEDOUT: the call timed out
	CodeInternal  = 2001 // CodeInternal is EINTERNAL: a failure inside the server
	CodeResponse  = 2002 // CodeResponse is ERESPONSE: a response the server could not write
	CodeLimit     = 2004 // CodeLimit is ELIMIT: the server reached a limit on its resources
)

// Metadata keys the codec sets while decoding. Entries of user_fields keep their own names.
const (
	// KeyService is RpcRequestMeta.service_name, the full name of the protobuf service ("example.EchoService").
	KeyService = "service"
	// KeyMethod is RpcRequestMeta.method_name ("Echo").
	KeyMethod = "method"
	// KeyCmd is the routing key Aeraki names for bRPC: "service/method" ("example.EchoService/Echo").
	KeyCmd = "cmd"
)

// The codec's bookkeeping in Message.Private.
const (
	privIDOff = 0 // offset in Frame of the correlation_id varint (after its tag); 0 when the meta has none
	privIDLen = 1 // length of that varint in bytes
)

// reservedIDLen is the width a correlation_id is given when SetID has to grow the frame anyway: five bytes
// hold any id the proxy assigns (below 2^31), so later rewrites of the same frame (a retry) are in place.
const reservedIDLen = 5

// maxReplyMeta bounds the meta of an over-limit frame that the codec waits for to learn whom to answer.
const maxReplyMeta = 64 << 10

// maxErrorDetail bounds the detail an error reply carries.
const maxErrorDetail = 64 << 10

// maxUserFields bounds the user_fields entries read into metadata: keeping the last of duplicate keys costs a
// scan of the entries read so far, which a peer could otherwise make quadratic.
const maxUserFields = 1024

// maxInternedValue is the longest user_fields value interned. Short values (an env, a tenant) repeat on every
// request; long ones (trace contexts) rarely do and would only fill the interner.
const maxInternedValue = 64

// Codec reads and writes the baidu_std frames of one connection. It is not safe for concurrent use, except
// for SetID, HeartbeatReply and ErrorReply, which use nothing but their arguments.
type Codec struct {
	maxBody  uint32
	upstream bool // frames that could be either a request or a response are responses

	names  codec.Interner // service and method names, and cmd
	keys   codec.Interner // user_fields keys
	values codec.Interner // short user_fields values
	cmd    []byte
}

// loader is the Codec seen as the codec.Loader of its messages' user_fields; a conversion, not an allocation.
type loader Codec

var (
	_ codec.Codec  = (*Codec)(nil)
	_ codec.Loader = (*loader)(nil)
)

// metaInfo is what Decode needs from an RpcMeta. The byte slices point into the frame.
type metaInfo struct {
	hasRequest, hasResponse bool
	service, method         []byte
	errorCode               int32
	errorText               bool // error_text is not empty
	id                      uint64
	idOff, idLen            int // where the correlation_id varint is, relative to the meta
	userFields              bool
	streaming               bool   // stream_settings is present: a streaming RPC
	chunkStream             uint64 // chunk_info.stream_id: a message split into several frames
}

// Decode decodes the first frame in buf into msg.
func (c *Codec) Decode(buf []byte, msg *codec.Message) (int, error) {
	return c.decode(buf, msg, c.upstream)
}

// decode is Decode with the type of frames that carry both a request and an empty response meta (or neither)
// given by bothIsResponse.
func (c *Codec) decode(buf []byte, msg *codec.Message, bothIsResponse bool) (int, error) {
	for i := 0; i < len(magic) && i < len(buf); i++ {
		if buf[i] != magic[i] {
			return 0, codec.Errorf(false, "brpc: bad magic %q, want %q", buf[:min(len(buf), len(magic))], magic)
		}
	}
	if len(buf) < headerLen {
		return 0, codec.ErrIncomplete
	}
	bodySize := binary.BigEndian.Uint32(buf[4:8])
	metaSize := binary.BigEndian.Uint32(buf[8:12])
	if metaSize > bodySize {
		return 0, codec.Errorf(false, "brpc: meta_size %d exceeds body_size %d", metaSize, bodySize)
	}
	if bodySize > c.maxBody {
		return c.overLimit(buf, msg, bodySize, metaSize)
	}
	n := headerLen + int(bodySize)
	if len(buf) < n {
		return n, codec.ErrIncomplete
	}
	frame := buf[:n:n]
	var mi metaInfo
	if err := parseMeta(frame[headerLen:headerLen+int(metaSize)], &mi); err != nil {
		return 0, codec.Errorf(false, "brpc: %v", err)
	}
	typ := classify(&mi, bothIsResponse)
	msg.Type, msg.ID, msg.Frame = typ, mi.id, frame
	if mi.idLen > 0 {
		msg.Private[privIDOff], msg.Private[privIDLen] = headerLen+mi.idOff, mi.idLen
	}
	if typ == codec.Response {
		msg.Status, msg.Failed = mi.errorCode, mi.errorCode != 0
	}
	// Both are legal baidu_std but need the proxy to keep several frames together on one upstream
	// connection, which it does not do; refusing the first frame lets the client hear why.
	if mi.streaming {
		return 0, codec.Errorf(typ == codec.Request, "brpc: %s %d opens a stream (stream_settings): streaming RPCs are not supported",
			typ, mi.id)
	}
	if mi.chunkStream != 0 {
		return 0, codec.Errorf(typ == codec.Request, "brpc: %s %d is one chunk of a message split into chunks (chunk_info stream %d): chunked messages are not supported",
			typ, mi.id, int64(mi.chunkStream))
	}

	if len(mi.service) > 0 {
		msg.Metadata.Add(KeyService, c.names.String(mi.service))
	}
	if len(mi.method) > 0 {
		msg.Metadata.Add(KeyMethod, c.names.String(mi.method))
	}
	if len(mi.service) > 0 && len(mi.method) > 0 {
		c.cmd = append(append(append(c.cmd[:0], mi.service...), '/'), mi.method...)
		msg.Metadata.Add(KeyCmd, c.names.String(c.cmd))
	}
	if mi.userFields {
		msg.Metadata.Defer((*loader)(c), msg)
	}
	return n, nil
}

// classify tells a request from a response. brpc itself goes by the side of the connection, not the meta;
// brpc's own frames carry exactly one of the two metas, but baidu-golang/pbrpc sends both in every frame (its
// servers answer with the request's meta, an empty response meta added), so a frame with both is a response
// only when its response meta says the call failed, and otherwise what the connection's side makes it.
func classify(mi *metaInfo, bothIsResponse bool) codec.MessageType {
	switch {
	case mi.hasResponse && (!mi.hasRequest || mi.errorCode != 0 || mi.errorText):
		return codec.Response
	case mi.hasRequest && !mi.hasResponse:
		return codec.Request
	case bothIsResponse:
		return codec.Response
	default:
		return codec.Request
	}
}

// overLimit refuses a frame whose body is too large. When it is a request whose meta is small and has
// arrived, msg gets its type and id so the proxy can answer before closing, and the client fails fast instead
// of waiting for its timeout.
func (c *Codec) overLimit(buf []byte, msg *codec.Message, bodySize, metaSize uint32) (int, error) {
	canReply := false
	if metaSize <= maxReplyMeta {
		end := headerLen + int(metaSize)
		if len(buf) < end {
			return 0, codec.ErrIncomplete
		}
		var mi metaInfo
		if parseMeta(buf[headerLen:end], &mi) == nil && classify(&mi, c.upstream) == codec.Request {
			msg.Type, msg.ID = codec.Request, mi.id
			canReply = true
		}
	}
	return 0, codec.Errorf(canReply, "brpc: body_size %d exceeds limit %d", bodySize, c.maxBody)
}

// parseMeta reads the fields of an RpcMeta that the codec needs. As in every protobuf parser, a field whose
// wire type is not the declared one is an unknown field, a scalar that occurs twice takes its last value, and
// a message that occurs twice is merged.
func parseMeta(meta []byte, mi *metaInfo) error {
	for p := 0; p < len(meta); {
		num, typ, n := protowire.ConsumeTag(meta[p:])
		if n < 0 {
			return fmt.Errorf("RpcMeta: bad tag at offset %d: %v", p, protowire.ParseError(n))
		}
		p += n
		v0 := p
		m := protowire.ConsumeFieldValue(num, typ, meta[p:])
		if m < 0 {
			return fmt.Errorf("RpcMeta: field %d at offset %d: %v", num, v0, protowire.ParseError(m))
		}
		p += m
		if typ == protowire.VarintType && num == metaCorrelationID {
			mi.id, _ = protowire.ConsumeVarint(meta[v0:p])
			mi.idOff, mi.idLen = v0, m
			continue
		}
		if typ != protowire.BytesType {
			continue
		}
		body, _ := protowire.ConsumeBytes(meta[v0:p])
		var err error
		switch num {
		case metaRequest:
			mi.hasRequest = true
			err = parseRequest(body, mi)
		case metaResponse:
			mi.hasResponse = true
			err = parseResponse(body, mi)
		case metaChunkInfo:
			err = parseChunkInfo(body, mi)
		case metaStreamSettings:
			mi.streaming = true
		case metaUserFields:
			mi.userFields = true
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// walkFields calls visit with the number, wire type and value of each field of a protobuf message.
func walkFields(b []byte, what string, visit func(num protowire.Number, typ protowire.Type, v []byte)) error {
	for p := 0; p < len(b); {
		num, typ, n := protowire.ConsumeTag(b[p:])
		if n < 0 {
			return fmt.Errorf("%s: bad tag at offset %d: %v", what, p, protowire.ParseError(n))
		}
		p += n
		m := protowire.ConsumeFieldValue(num, typ, b[p:])
		if m < 0 {
			return fmt.Errorf("%s: field %d at offset %d: %v", what, num, p, protowire.ParseError(m))
		}
		visit(num, typ, b[p:p+m])
		p += m
	}
	return nil
}

// parseRequest reads service_name and method_name. Field 7 is request_id, a string, in brpc; pbrpc sends its
// key/value extension under the same number. Neither is read, so any wire type is accepted there.
func parseRequest(b []byte, mi *metaInfo) error {
	return walkFields(b, "RpcRequestMeta", func(num protowire.Number, typ protowire.Type, v []byte) {
		if typ != protowire.BytesType {
			return
		}
		switch num {
		case requestServiceName:
			mi.service, _ = protowire.ConsumeBytes(v)
		case requestMethodName:
			mi.method, _ = protowire.ConsumeBytes(v)
		}
	})
}

// parseResponse reads error_code and whether error_text is set.
func parseResponse(b []byte, mi *metaInfo) error {
	return walkFields(b, "RpcResponseMeta", func(num protowire.Number, typ protowire.Type, v []byte) {
		switch {
		case num == responseErrorCode && typ == protowire.VarintType:
			code, _ := protowire.ConsumeVarint(v)
			mi.errorCode = int32(code) // an int32 field keeps the low 32 bits of its varint
		case num == responseErrorText && typ == protowire.BytesType:
			text, _ := protowire.ConsumeBytes(v)
			mi.errorText = len(text) > 0
		}
	})
}

// parseChunkInfo reads chunk_info.stream_id. pbrpc sends an empty chunk_info in ordinary frames; only a
// stream id marks a chunk.
func parseChunkInfo(b []byte, mi *metaInfo) error {
	return walkFields(b, "ChunkInfo", func(num protowire.Number, typ protowire.Type, v []byte) {
		if num == chunkStreamID && typ == protowire.VarintType {
			mi.chunkStream, _ = protowire.ConsumeVarint(v)
		}
	})
}

// parseEntry reads a user_fields map entry; a missing key or value is empty, as in protobuf.
func parseEntry(b []byte) (key, value []byte, err error) {
	err = walkFields(b, "user_fields entry", func(num protowire.Number, typ protowire.Type, v []byte) {
		if typ != protowire.BytesType {
			return
		}
		switch num {
		case entryKey:
			key, _ = protowire.ConsumeBytes(v)
		case entryValue:
			value, _ = protowire.ConsumeBytes(v)
		}
	})
	return key, value, err
}

// metaBounds checks that frame is one whole baidu_std frame and returns where its meta ends.
func metaBounds(frame []byte) (int, bool) {
	if len(frame) < headerLen || string(frame[:len(magic)]) != magic {
		return 0, false
	}
	bodySize := binary.BigEndian.Uint32(frame[4:8])
	metaSize := binary.BigEndian.Uint32(frame[8:12])
	if metaSize > bodySize || uint64(len(frame)) != headerLen+uint64(bodySize) {
		return 0, false
	}
	return headerLen + int(metaSize), true
}

// LoadMetadata adds the entries of user_fields to msg's metadata. When a key occurs twice the last entry wins,
// as in a protobuf map. Entries named like the keys set from the request meta (service, method, cmd) are left
// out, since the request meta is what brpc dispatches on, and so is the empty key, which no route can name.
func (l *loader) LoadMetadata(msg *codec.Message) error {
	c := (*Codec)(l)
	metaEnd, ok := metaBounds(msg.Frame)
	if !ok {
		return errors.New("brpc: message does not hold the frame it was decoded from")
	}
	var entryErr error
	entries := 0
	err := walkFields(msg.Frame[headerLen:metaEnd], "RpcMeta", func(num protowire.Number, typ protowire.Type, v []byte) {
		if num != metaUserFields || typ != protowire.BytesType || entryErr != nil {
			return
		}
		if entries++; entries > maxUserFields {
			entryErr = fmt.Errorf("more than %d entries", maxUserFields)
			return
		}
		b, _ := protowire.ConsumeBytes(v)
		key, value, err := parseEntry(b)
		if err != nil {
			entryErr = err
			return
		}
		switch string(key) {
		case "", KeyService, KeyMethod, KeyCmd:
			return
		}
		var val string
		if len(value) <= maxInternedValue {
			val = c.values.String(value)
		} else {
			val = string(value)
		}
		msg.Metadata.Set(c.keys.String(key), val)
	})
	if err == nil {
		err = entryErr
	}
	if err != nil {
		return fmt.Errorf("brpc: %s %d: user_fields: %w", msg.Type, msg.ID, err)
	}
	return nil
}

// SetID rewrites the correlation_id in msg's RpcMeta.
//
// A varint's length depends on its value, so an id cannot always take the place of another. SetID tries, in
// order:
//
//  1. In place, padded: protobuf parsers read varints padded with continuation bytes (0x81 0x80 0x00 is 1),
//     so an id whose varint is no longer than the one in the frame is written over it, padded to the same
//     length.
//  2. In place, compacted: brpc writes compress_type and error_code even when they are 0, and pbrpc sends an
//     empty response meta in its requests. Leaving out such fields, which say nothing a parser does not
//     assume, frees the bytes a longer varint needs; the meta is rewritten within its own bytes.
//  3. A copy: the frame is copied once into a new one whose varint is long enough (at least five bytes, so
//     that later rewrites fit), and msg.Frame points at the copy. Only this path allocates.
func (c *Codec) SetID(msg *codec.Message, id uint64) {
	msg.ID = id
	frame := msg.Frame
	metaEnd, ok := metaBounds(frame)
	if !ok {
		return
	}
	off, size := msg.Private[privIDOff], msg.Private[privIDLen]
	if !idAt(frame, metaEnd, off, size) {
		if off, size, ok = locateID(frame, metaEnd); !ok {
			return
		}
	}
	need := protowire.SizeVarint(id)
	if size > 0 && need <= size {
		putPaddedVarint(frame[off:off+size], id)
		msg.Private[privIDOff], msg.Private[privIDLen] = off, size
		return
	}
	if off, width, ok := compactMeta(frame, metaEnd, off, size, id, msg.Type == codec.Request); ok {
		msg.Private[privIDOff], msg.Private[privIDLen] = off, width
		return
	}
	width := max(need, reservedIDLen)
	grow := width - size
	if size == 0 {
		// No correlation_id: add one at the end of the meta, where field order does not matter.
		off, grow = metaEnd+1, width+1
	}
	bodySize := binary.BigEndian.Uint32(frame[4:8])
	if uint64(bodySize)+uint64(grow) > math.MaxUint32 {
		return
	}
	out := make([]byte, len(frame)+grow)
	rest := off + size // where the frame goes on after the old varint
	if size == 0 {
		copy(out, frame[:metaEnd])
		out[metaEnd] = byte(protowire.EncodeTag(metaCorrelationID, protowire.VarintType))
		rest = metaEnd
	} else {
		copy(out, frame[:off])
	}
	putPaddedVarint(out[off:off+width], id)
	copy(out[off+width:], frame[rest:])
	binary.BigEndian.PutUint32(out[4:8], bodySize+uint32(grow))
	binary.BigEndian.PutUint32(out[8:12], binary.BigEndian.Uint32(frame[8:12])+uint32(grow))
	msg.Frame = out
	msg.Private[privIDOff], msg.Private[privIDLen] = off, width
}

// maxCompactMeta bounds the metas compactMeta rewrites; it builds the new meta on the stack.
const maxCompactMeta = 512

// Kinds of fields compactMeta may shorten.
const (
	slackDrop          = 1 // compress_type 0, or an empty response meta in a request: left out
	slackEmptyResponse = 2 // a response meta holding only error_code 0: written as an empty response meta
)

// compactMeta writes id as the correlation_id of the meta of frame (whose varint is at off, size bytes long,
// or absent when size is 0), making room by leaving out fields that hold default values. It rewrites the meta
// within its own bytes and reports where the varint now is and how long it is; ok is false when the meta has
// too little to leave out. In a request, an empty response meta goes too: it is what pbrpc sends, and what
// makes its requests look like responses.
func compactMeta(frame []byte, metaEnd, off, size int, id uint64, request bool) (newOff, width int, ok bool) {
	meta := frame[headerLen:metaEnd]
	if len(meta) > maxCompactMeta {
		return 0, 0, false
	}
	need := protowire.SizeVarint(id)
	grow := need - size
	if size == 0 {
		grow = 1 + need // a tag byte too
	}
	// A field that occurs twice keeps its last value, and messages that occur twice are merged: leaving out a
	// 0 keeps the value 0 only if no other occurrence holds something else.
	zeros, ok := defaultsOnly(meta)
	if !ok {
		return 0, 0, false
	}
	// First pass: choose fields to shorten, in order, until they free enough bytes.
	type cut struct{ start, kind int }
	var cuts [8]cut
	ncuts, saved := 0, 0
	for p := 0; p < len(meta) && saved < grow && ncuts < len(cuts); {
		num, typ, n := protowire.ConsumeField(meta[p:])
		if n < 0 {
			return 0, 0, false
		}
		field := meta[p : p+n]
		kind, saving := slack(field, num, typ, request, zeros)
		if kind != 0 {
			cuts[ncuts] = cut{p, kind}
			ncuts++
			saved += saving
		}
		p += n
	}
	if saved < grow {
		return 0, 0, false
	}
	// The bytes freed beyond what the id needs pad its varint.
	width = size + saved
	if size == 0 {
		width = saved - 1
	}
	if width > binary.MaxVarintLen64 {
		return 0, 0, false
	}
	// Second pass: write the new meta.
	var scratch [maxCompactMeta]byte
	out := scratch[:0]
	idStart := off - headerLen // where the old varint is, relative to the meta
	next := 0
	for p := 0; p < len(meta); {
		_, _, n := protowire.ConsumeField(meta[p:])
		field := meta[p : p+n]
		switch {
		case next < ncuts && cuts[next].start == p:
			if cuts[next].kind == slackEmptyResponse {
				out = append(out, byte(protowire.EncodeTag(metaResponse, protowire.BytesType)), 0)
			}
			next++
		case size > 0 && p < idStart && idStart < p+n:
			tagLen := idStart - p
			out = append(out, field[:tagLen]...)
			newOff = headerLen + len(out)
			out = appendPaddedVarint(out, id, width)
		default:
			out = append(out, field...)
		}
		p += n
	}
	if size == 0 {
		out = append(out, byte(protowire.EncodeTag(metaCorrelationID, protowire.VarintType)))
		newOff = headerLen + len(out)
		out = appendPaddedVarint(out, id, width)
	}
	if len(out) != len(meta) {
		return 0, 0, false
	}
	copy(meta, out)
	return newOff, width, true
}

// Which fields hold nothing but zeros in every occurrence, for compactMeta.
const (
	zeroCompress  = 1 << iota // every compress_type is 0
	zeroErrorCode             // every error_code of every response meta is 0
)

// defaultsOnly reports which of compress_type and error_code are 0 wherever they occur in the meta.
func defaultsOnly(meta []byte) (zeros int, ok bool) {
	zeros = zeroCompress | zeroErrorCode
	err := walkFields(meta, "RpcMeta", func(num protowire.Number, typ protowire.Type, v []byte) {
		switch {
		case num == metaCompressType && typ == protowire.VarintType:
			if x, _ := protowire.ConsumeVarint(v); x != 0 {
				zeros &^= zeroCompress
			}
		case num == metaResponse && typ == protowire.BytesType:
			body, _ := protowire.ConsumeBytes(v)
			err := walkFields(body, "RpcResponseMeta", func(num protowire.Number, typ protowire.Type, v []byte) {
				if num == responseErrorCode && typ == protowire.VarintType {
					if x, _ := protowire.ConsumeVarint(v); x != 0 {
						zeros &^= zeroErrorCode
					}
				}
			})
			if err != nil {
				zeros &^= zeroErrorCode
			}
		}
	})
	return zeros, err == nil
}

// slack says whether a top-level field of the meta can be shortened without changing what it means to a
// protobuf parser, and by how many bytes; zeros is what defaultsOnly says of the whole meta.
func slack(field []byte, num protowire.Number, typ protowire.Type, request bool, zeros int) (kind, saving int) {
	_, _, tagLen := protowire.ConsumeTag(field)
	value := field[tagLen:]
	switch {
	case num == metaCompressType && typ == protowire.VarintType:
		if zeros&zeroCompress != 0 {
			return slackDrop, len(field)
		}
	case num == metaResponse && typ == protowire.BytesType:
		body, _ := protowire.ConsumeBytes(value)
		if zeros&zeroErrorCode == 0 || !zeroErrorCodes(body) {
			return 0, 0
		}
		if request {
			return slackDrop, len(field)
		}
		// A response keeps its (now empty) response meta: it is what makes it a response.
		if len(field) > 2 {
			return slackEmptyResponse, len(field) - 2
		}
	}
	return 0, 0
}

// zeroErrorCodes reports whether a response meta holds nothing but error_code fields that are 0.
func zeroErrorCodes(b []byte) bool {
	for p := 0; p < len(b); {
		num, typ, n := protowire.ConsumeField(b[p:])
		if n < 0 || num != responseErrorCode || typ != protowire.VarintType {
			return false
		}
		_, tagLen := protowire.ConsumeVarint(b[p:])
		if v, _ := protowire.ConsumeVarint(b[p+tagLen:]); v != 0 {
			return false
		}
		p += n
	}
	return true
}

// appendPaddedVarint appends v as a varint of exactly width bytes.
func appendPaddedVarint(b []byte, v uint64, width int) []byte {
	n := len(b)
	b = append(b, make([]byte, width)...)
	putPaddedVarint(b[n:], v)
	return b
}

// idAt reports whether Private still points at a correlation_id varint of frame: offsets come from Decode, but
// a Message may have been filled by other means.
func idAt(frame []byte, metaEnd, off, size int) bool {
	if off <= headerLen || size < 1 || size > binary.MaxVarintLen64 || off+size > metaEnd {
		return false
	}
	_, n := protowire.ConsumeVarint(frame[off:metaEnd])
	return n == size
}

// locateID finds the last correlation_id in the meta (the one parsers keep); size 0 when there is none.
func locateID(frame []byte, metaEnd int) (off, size int, ok bool) {
	var mi metaInfo
	if parseMeta(frame[headerLen:metaEnd], &mi) != nil {
		return 0, 0, false
	}
	if mi.idLen == 0 {
		return 0, 0, true
	}
	return headerLen + mi.idOff, mi.idLen, true
}

// putPaddedVarint writes v as a varint of exactly len(b) bytes, which must be at least its minimal length.
func putPaddedVarint(b []byte, v uint64) {
	last := len(b) - 1
	for i := range last {
		b[i] = byte(v) | 0x80
		v >>= 7
	}
	b[last] = byte(v)
}

// Encode appends msg to dst with its user_fields edited by mutation, and points msg.Frame at the copy. Every
// other field of the meta, the payload and the attachment are copied byte for byte, except that the
// correlation_id keeps its value in a varint padded to at least five bytes; entries of user_fields that the
// mutation does not name keep their place and bytes, set entries are appended to the meta, and the header's
// sizes are fixed. Requests and responses (brpc's response_user_fields) are edited alike. An empty mutation
// copies the frame as it is.
func (c *Codec) Encode(dst []byte, msg *codec.Message, mutation *codec.Mutation) ([]byte, error) {
	frame := msg.Frame
	metaEnd, ok := metaBounds(frame)
	if !ok {
		return dst, errors.New("brpc: encode: the message holds no frame")
	}
	if mutation.Empty() {
		out := append(dst, frame...)
		msg.Frame = out[len(dst):]
		return out, nil
	}
	idOff, idSize, ok := locateID(frame, metaEnd)
	if !ok {
		return dst, fmt.Errorf("brpc: encode: %s %d: the frame's RpcMeta does not parse", msg.Type, msg.ID)
	}
	start := len(dst)
	out := append(dst, frame[:headerLen]...)
	meta := frame[headerLen:metaEnd]
	for p := 0; p < len(meta); {
		num, typ, n := protowire.ConsumeField(meta[p:])
		if n < 0 {
			return dst, fmt.Errorf("brpc: encode: %s %d: RpcMeta at offset %d: %v", msg.Type, msg.ID, p, protowire.ParseError(n))
		}
		field := meta[p : p+n]
		fieldOff := headerLen + p
		p += n
		if idSize > 0 && fieldOff < idOff && idOff < fieldOff+n {
			// The proxy rewrites the id of a request right after editing it: a varint long enough for any
			// id it assigns lets SetID write in place.
			id, _ := protowire.ConsumeVarint(frame[idOff:metaEnd])
			out = append(out, frame[fieldOff:idOff]...)
			out = appendPaddedVarint(out, id, max(idSize, reservedIDLen))
			continue
		}
		if num == metaUserFields && typ == protowire.BytesType {
			// The value is the field's tail: a length and the entry.
			_, _, tagLen := protowire.ConsumeTag(field)
			entry, _ := protowire.ConsumeBytes(field[tagLen:])
			key, _, err := parseEntry(entry)
			if err != nil {
				return dst, fmt.Errorf("brpc: encode: %s %d: user_fields: %w", msg.Type, msg.ID, err)
			}
			if lastSet(mutation, key) >= 0 || removes(mutation, key) {
				continue
			}
		}
		out = append(out, field...)
	}
	for i, kv := range mutation.Set {
		if lastSetString(mutation, kv.Key) != i || removesString(mutation, kv.Key) {
			continue
		}
		out = appendEntry(out, kv.Key, kv.Value)
	}
	metaSize := len(out) - start - headerLen
	out = append(out, frame[metaEnd:]...)
	bodySize := len(out) - start - headerLen
	if bodySize > int(c.maxBody) {
		return dst, fmt.Errorf("brpc: encode: %s %d: body_size %d exceeds limit %d", msg.Type, msg.ID, bodySize, c.maxBody)
	}
	binary.BigEndian.PutUint32(out[start+4:], uint32(bodySize))
	binary.BigEndian.PutUint32(out[start+8:], uint32(metaSize))
	// Decoding the new frame leaves msg consistent with it: offsets, and user_fields loaded on demand. A
	// frame that is ambiguous on its own keeps the type it had.
	typ := msg.Type
	msg.Reset()
	if _, err := c.decode(out[start:], msg, typ == codec.Response); err != nil {
		return dst, fmt.Errorf("brpc: encode: re-encoded %s does not decode: %w", typ, err)
	}
	return out, nil
}

// appendEntry appends a user_fields entry.
func appendEntry(b []byte, key, value string) []byte {
	size := protowire.SizeTag(entryKey) + protowire.SizeBytes(len(key)) +
		protowire.SizeTag(entryValue) + protowire.SizeBytes(len(value))
	b = protowire.AppendTag(b, metaUserFields, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	b = protowire.AppendTag(b, entryKey, protowire.BytesType)
	b = protowire.AppendString(b, key)
	b = protowire.AppendTag(b, entryValue, protowire.BytesType)
	return protowire.AppendString(b, value)
}

// lastSet returns the index of the last Set entry for key, which is the one that wins, or -1.
func lastSet(m *codec.Mutation, key []byte) int {
	for i := len(m.Set) - 1; i >= 0; i-- {
		if m.Set[i].Key == string(key) {
			return i
		}
	}
	return -1
}

// removes reports whether m removes key.
func removes(m *codec.Mutation, key []byte) bool {
	for _, k := range m.Remove {
		if k == string(key) {
			return true
		}
	}
	return false
}

// lastSetString is lastSet for a string key.
func lastSetString(m *codec.Mutation, key string) int {
	for i := len(m.Set) - 1; i >= 0; i-- {
		if m.Set[i].Key == key {
			return i
		}
	}
	return -1
}

// removesString is removes for a string key.
func removesString(m *codec.Mutation, key string) bool {
	for _, k := range m.Remove {
		if k == key {
			return true
		}
	}
	return false
}

// HeartbeatReply appends nothing: baidu_std has no heartbeat.
func (c *Codec) HeartbeatReply(dst []byte, req *codec.Message) []byte { return dst }

// ErrorReply appends a response to req whose RpcResponseMeta carries a brpc error code and, as error_text,
// "meltemi: <kind>: <detail>". A brpc client fails the call with that code and text
// ("[E1001]meltemi: route_not_found: ..."). The reply has no payload and no attachment.
func (c *Codec) ErrorReply(dst []byte, req *codec.Message, kind codec.ErrorKind, detail string) ([]byte, int32) {
	if req.Type != codec.Request {
		return dst, 0
	}
	code := ErrorCode(kind)
	// The proxy prefixes its details with "meltemi: " already; the text names the proxy once.
	detail = strings.TrimPrefix(detail, "meltemi: ")
	if len(detail) > maxErrorDetail {
		cut := maxErrorDetail
		for cut > 0 && !utf8.RuneStart(detail[cut]) {
			cut--
		}
		detail = detail[:cut]
	}
	if !utf8.ValidString(detail) {
		// pbrpc's proto3 RpcMeta refuses a string field that is not UTF-8.
		detail = strings.ToValidUTF8(detail, "\uFFFD")
	}
	const prefix = "meltemi: "
	name := kind.String()
	textLen := len(prefix) + len(name)
	if detail != "" {
		textLen += len(": ") + len(detail)
	}
	respLen := protowire.SizeTag(responseErrorCode) + protowire.SizeVarint(uint64(code)) +
		protowire.SizeTag(responseErrorText) + protowire.SizeBytes(textLen)
	metaLen := protowire.SizeTag(metaResponse) + protowire.SizeBytes(respLen) +
		protowire.SizeTag(metaCorrelationID) + protowire.SizeVarint(req.ID)

	dst = append(dst, magic...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(metaLen))
	dst = binary.BigEndian.AppendUint32(dst, uint32(metaLen))
	dst = protowire.AppendTag(dst, metaResponse, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(respLen))
	dst = protowire.AppendTag(dst, responseErrorCode, protowire.VarintType)
	dst = protowire.AppendVarint(dst, uint64(code))
	dst = protowire.AppendTag(dst, responseErrorText, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(textLen))
	dst = append(dst, prefix...)
	dst = append(dst, name...)
	if detail != "" {
		dst = append(dst, ": "...)
		dst = append(dst, detail...)
	}
	dst = protowire.AppendTag(dst, metaCorrelationID, protowire.VarintType)
	dst = protowire.AppendVarint(dst, req.ID)
	return dst, code
}

// ErrorCode is the brpc error code an error reply of this kind carries.
func ErrorCode(kind codec.ErrorKind) int32 {
	switch kind {
	case codec.RouteNotFound, codec.ClusterNotFound:
		return CodeNoService
	case codec.BadResponse:
		return CodeResponse
	case codec.OverLimit:
		return CodeLimit
	case codec.Timeout:
		return CodeTimedOut
	case codec.Unauthorized:
		return CodeAuth
	case codec.BadRequest:
		return CodeRequest
	default: // NoHealthyUpstream, Unspecified
		return CodeInternal
	}
}
