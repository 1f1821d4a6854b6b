// Package trpc is the codec of the tRPC protocol (trpc-group): a 16-byte fixed header, then for a unary call a
// protobuf RequestProtocol or ResponseProtocol header, the body and an optional attachment; for a stream, the
// stream frame's protobuf meta or data.
//
// Decoding reads the fixed header and, with protowire and without allocating, the protocol header or stream
// meta: ids, call type, status, and the caller, callee and func names routes match on. The trans_info map is
// decoded only when a route asks for a key that is not there yet. Bodies and attachments are never read.
package trpc

import (
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meltemi-mesh/meltemi/codec"
)

// Fixed header layout (trpc.proto: TrpcMagic, TrpcDataFrameType, TrpcStreamFrameType).
const (
	headerLen = 16
	magicHigh = 0x09
	magicLow  = 0x30

	frameUnary  = 0
	frameStream = 1

	streamFrameInit     = 1
	streamFrameData     = 2
	streamFrameFeedback = 3
	streamFrameClose    = 4

	// maxProtoHeader is the largest protocol header the uint16 header size can describe.
	maxProtoHeader = 1<<16 - 1
	// maxTotal is the largest total size the uint32 field can describe.
	maxTotal = 1<<32 - 1
)

// Field numbers of RequestProtocol.
const (
	reqCallType        = 2
	reqRequestID       = 3
	reqCaller          = 5
	reqCallee          = 6
	reqFunc            = 7
	reqMessageType     = 8
	reqTransInfo       = 9
	reqContentEncoding = 11
	reqAttachmentSize  = 12
)

// Field numbers of ResponseProtocol that differ from RequestProtocol's.
const (
	rspRet         = 4
	rspFuncRet     = 5
	rspErrorMsg    = 6
	rspMessageType = 7
	rspTransInfo   = 8
	rspContentType = 9
)

// Field numbers of the stream metas.
const (
	initRequestMeta  = 1 // TrpcStreamInitMeta.request_meta
	initResponseMeta = 2 // TrpcStreamInitMeta.response_meta

	initReqCaller    = 1 // TrpcStreamInitRequestMeta
	initReqCallee    = 2
	initReqFunc      = 3
	initReqTransInfo = 5

	initRspRet      = 1 // TrpcStreamInitResponseMeta
	initRspErrorMsg = 2

	closeType      = 1 // TrpcStreamCloseMeta
	closeRet       = 2
	closeMsg       = 3
	closeTransInfo = 5
	closeFuncRet   = 6

	mapKey   = 1 // a map entry
	mapValue = 2
)

// Enum values the codec acts on.
const (
	callOneway = 1 // TrpcCallType.TRPC_ONEWAY_CALL
	closeReset = 1 // TrpcStreamCloseType.TRPC_STREAM_RESET
)

// Metadata keys the codec sets eagerly. trans_info entries keep their own names.
const (
	// KeyCaller is the calling service, "trpc.app.server.service".
	KeyCaller = "caller"
	// KeyCallee is the called service, "trpc.app.server.service".
	KeyCallee = "callee"
	// KeyFunc is the called method, "/package.Service/Method".
	KeyFunc = "func"
)

// side says which peer's frames a codec reads.
type side uint8

const (
	// sideInfer, a zero Codec's, tells requests from responses by their protocol headers (see isRequest).
	sideInfer side = iota
	// sideDownstream is a client's connection: unary frames are requests.
	sideDownstream
	// sideUpstream is a server's connection: unary frames are responses.
	sideUpstream
)

// The codec's bookkeeping in Message.Private.
const (
	privState    = 0 // frame kind, protocol version, flags
	privIDOffset = 1 // offset in Frame of the request_id varint (unary frames; 0 when the header has none)
	privIDLens   = 2 // length of that varint, and of its tag shifted by 8
	privCallType = 3 // the call type of a unary frame
)

// Frame kinds, the low bits of Private[privState].
const (
	kindUnaryRequest = iota + 1
	kindUnaryResponse
	kindInitRequest
	kindInitResponse
	kindData
	kindFeedback
	kindClose

	kindMask = 0x0f
)

// Bits of Private[privState] above the kind.
const (
	stTransInfo    = 1 << 4 // the frame carries trans_info entries
	stCaller       = 1 << 5 // Decode set KeyCaller from the header
	stCallee       = 1 << 6 // Decode set KeyCallee from the header
	stFunc         = 1 << 7 // Decode set KeyFunc from the header
	stVersionShift = 8      // the fixed header's protocol version byte
)

// maxErrorDetail bounds the detail an error reply carries, so the reply's header stays far below the uint16
// header size.
const maxErrorDetail = 16 << 10

// maxInternedValue is the longest trans_info value interned. Short values (environments, dyeing keys) repeat
// on every request; long ones (trace contexts) rarely do and would only fill the interner.
const maxInternedValue = 64

// Codec reads and writes the tRPC frames of one connection. It is not safe for concurrent use, except for
// the methods the codec contract lets the proxy call from other goroutines.
type Codec struct {
	maxFrame int
	// side, set by NewCodec, settles headers that could be a request or a response.
	side side

	names  codec.Interner // caller, callee and func names
	keys   codec.Interner // trans_info keys
	values codec.Interner // short trans_info values

	meta  []byte // merged stream init request meta, while Encode rewrites it
	inner []byte // the rewritten request meta
}

// loader is the Codec seen as the codec.Loader of its messages' trans_info; a conversion, not an allocation.
type loader Codec

var (
	_ codec.Codec  = (*Codec)(nil)
	_ codec.Loader = (*loader)(nil)
)

// unaryHeader is what one pass over a RequestProtocol or ResponseProtocol collects, for both readings.
type unaryHeader struct {
	callType   uint32
	id         uint32
	idOff      int // offset of the request_id varint in the protocol header; valid when idLen > 0
	idLen      int
	idTagLen   int
	ret        int32 // field 4: the response's ret (a request's timeout)
	funcRet    int32 // field 5 as a varint: the response's func_ret
	attachment uint32
	caller     []byte // field 5 as bytes: the request's caller
	callee     []byte // field 6: the request's callee (a response's error_msg)
	fn         []byte // field 7 as bytes: the request's func
	reqTrans   bool   // field 9 as bytes: request trans_info
	rspTrans   bool   // field 8 as bytes: response trans_info
	// request and response say that a field was seen that only a RequestProtocol or only a
	// ResponseProtocol has with that wire type.
	request, response bool
}

// Decode decodes the first frame in buf into msg.
func (c *Codec) Decode(buf []byte, msg *codec.Message) (int, error) {
	return c.decode(buf, msg, 0)
}

// decode decodes a frame. kind, when not 0, is the frame's known kind (Encode decoding what it wrote), which
// is then not inferred.
func (c *Codec) decode(buf []byte, msg *codec.Message, kind int) (int, error) {
	if len(buf) > 0 && buf[0] != magicHigh || len(buf) > 1 && buf[1] != magicLow {
		var second byte
		if len(buf) > 1 {
			second = buf[1]
		}
		return 0, codec.Errorf(false, "trpc: bad magic 0x%02x%02x, want 0x0930", buf[0], second)
	}
	if len(buf) < headerLen {
		return 0, codec.ErrIncomplete
	}
	dataType, streamType := buf[2], buf[3]
	total := binary.BigEndian.Uint32(buf[4:8])
	hdrLen := int(binary.BigEndian.Uint16(buf[8:10]))
	fixedID := binary.BigEndian.Uint32(buf[10:14])
	version := buf[14]

	switch dataType {
	case frameUnary:
		if hdrLen == 0 {
			return 0, codec.Errorf(false, "trpc: unary frame %d has no protocol header", fixedID)
		}
		if uint64(headerLen+hdrLen) > uint64(total) {
			return 0, codec.Errorf(false, "trpc: frame %d: total size %d is smaller than the fixed and protocol headers (%d)",
				fixedID, total, headerLen+hdrLen)
		}
	case frameStream:
		if streamType < streamFrameInit || streamType > streamFrameClose {
			return 0, codec.Errorf(false, "trpc: stream %d: unknown stream frame type %d", fixedID, streamType)
		}
		if total < headerLen {
			return 0, codec.Errorf(false, "trpc: stream %d: total size %d is smaller than the fixed header", fixedID, total)
		}
	default:
		return 0, codec.Errorf(false, "trpc: frame %d: unknown data frame type %d", fixedID, dataType)
	}

	if uint64(total) > uint64(c.maxFrame) {
		return c.overLimit(buf, msg, total, hdrLen, dataType, version)
	}
	n := int(total)
	if len(buf) < n {
		return n, codec.ErrIncomplete
	}
	frame := buf[:n:n]
	msg.Frame = frame
	msg.Private[privState] = int(version) << stVersionShift
	var err error
	if dataType == frameUnary {
		err = c.decodeUnary(frame, hdrLen, msg, kind)
	} else {
		msg.ID = uint64(fixedID)
		err = c.decodeStream(frame, streamType, msg, kind)
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

// overLimit refuses a frame larger than the limit. A two-way request is answered first, so its client fails
// fast instead of waiting for its timeout; that needs the protocol header, which the codec waits for (it is at
// most 64 KiB) without asking the caller to buffer the whole frame.
func (c *Codec) overLimit(buf []byte, msg *codec.Message, total uint32, hdrLen int, dataType, version byte) (int, error) {
	if dataType == frameUnary {
		if len(buf) < headerLen+hdrLen {
			return 0, codec.ErrIncomplete
		}
		var h unaryHeader
		if err := parseUnary(buf[headerLen:headerLen+hdrLen], &h); err == nil && c.isRequest(&h) {
			c.fillUnary(msg, &h, kindUnaryRequest, version)
			canReply := msg.Type == codec.Request
			return 0, codec.Errorf(canReply, "trpc: request %d: frame size %d exceeds limit %d", h.id, total, c.maxFrame)
		}
	}
	return 0, codec.Errorf(false, "trpc: frame %d: size %d exceeds limit %d",
		binary.BigEndian.Uint32(buf[10:14]), total, c.maxFrame)
}

// decodeUnary reads the protocol header of a unary frame.
func (c *Codec) decodeUnary(frame []byte, hdrLen int, msg *codec.Message, kind int) error {
	var h unaryHeader
	if err := parseUnary(frame[headerLen:headerLen+hdrLen], &h); err != nil {
		return codec.Errorf(false, "trpc: frame %d: bad protocol header: %v", binary.BigEndian.Uint32(frame[10:14]), err)
	}
	if kind == 0 {
		kind = kindUnaryResponse
		if c.isRequest(&h) {
			kind = kindUnaryRequest
		}
	}
	version := frame[14]
	c.fillUnary(msg, &h, kind, version)
	// tRPC-Go reads the attachment as the last attachment_size bytes of the frame.
	if body := len(frame) - headerLen - hdrLen; uint64(h.attachment) > uint64(body) {
		return codec.Errorf(msg.Type == codec.Request, "trpc: %s %d: attachment size %d exceeds the %d bytes after the protocol header",
			msg.Type, h.id, h.attachment, body)
	}
	if kind == kindUnaryResponse {
		return nil
	}
	c.addNames(msg, h.caller, h.callee, h.fn)
	return nil
}

// addNames sets the eager keys from a request's header, and notes which it set.
func (c *Codec) addNames(msg *codec.Message, caller, callee, fn []byte) {
	if len(caller) > 0 {
		msg.Metadata.Add(KeyCaller, c.names.String(caller))
		msg.Private[privState] |= stCaller
	}
	if len(callee) > 0 {
		msg.Metadata.Add(KeyCallee, c.names.String(callee))
		msg.Private[privState] |= stCallee
	}
	if len(fn) > 0 {
		msg.Metadata.Add(KeyFunc, c.names.String(fn))
		msg.Private[privState] |= stFunc
	}
}

// fillUnary sets what a unary frame's header says about the message.
func (c *Codec) fillUnary(msg *codec.Message, h *unaryHeader, kind int, version byte) {
	st := kind | int(version)<<stVersionShift
	msg.ID = uint64(h.id)
	msg.Private[privCallType] = int(h.callType)
	if h.idLen > 0 {
		msg.Private[privIDOffset] = headerLen + h.idOff
		msg.Private[privIDLens] = h.idLen | h.idTagLen<<8
	}
	if kind == kindUnaryRequest {
		msg.Type = codec.Request
		if h.callType == callOneway {
			msg.Type = codec.Oneway
		}
		if h.reqTrans {
			st |= stTransInfo
		}
	} else {
		msg.Type = codec.Response
		// tRPC-Go's client reports ret as a framework error when it is set, and func_ret as a business error
		// otherwise; Status shows the code the client reports.
		msg.Status = h.ret
		if h.ret == 0 {
			msg.Status = h.funcRet
		}
		msg.Failed = h.ret != 0 || h.funcRet != 0
		if h.rspTrans {
			st |= stTransInfo
		}
	}
	msg.Private[privState] = st
	if st&stTransInfo != 0 {
		msg.Metadata.Defer((*loader)(c), msg)
	}
}

// isRequest decides whether a unary header is a RequestProtocol. The side NewCodec set wins. Otherwise a
// header is a request when it has a field that only a RequestProtocol has with that wire type (caller, func,
// message_type, trans_info, content_encoding) and none that only a ResponseProtocol has (func_ret,
// message_type, trans_info, content_type). A header that fits both, or neither, is a response: every real
// request names its func, while a successful response without metadata holds nothing but its request_id. The
// decision depends on the frame alone, so the same bytes decode the same on any codec of a side.
func (c *Codec) isRequest(h *unaryHeader) bool {
	switch c.side {
	case sideDownstream:
		return true
	case sideUpstream:
		return false
	}
	return h.request && !h.response
}

// parseUnary reads a RequestProtocol or ResponseProtocol in one pass, keeping both readings. A field whose
// wire type fits neither is an unknown field to either message, as protobuf treats it, and is skipped.
func parseUnary(b []byte, h *unaryHeader) error {
	for p := 0; p < len(b); {
		num, typ, tagLen := protowire.ConsumeTag(b[p:])
		if tagLen < 0 {
			return fieldError(p, protowire.ParseError(tagLen))
		}
		v := p + tagLen
		switch typ {
		case protowire.VarintType:
			x, n := protowire.ConsumeVarint(b[v:])
			if n < 0 {
				return fieldError(p, protowire.ParseError(n))
			}
			switch num {
			case reqCallType:
				h.callType = uint32(x)
			case reqRequestID:
				h.id, h.idOff, h.idLen, h.idTagLen = uint32(x), v, n, tagLen
			case rspRet:
				h.ret = int32(x)
			case rspFuncRet:
				h.funcRet = int32(x)
				h.response = true
			case rspMessageType, rspContentType:
				h.response = true
			case reqMessageType, reqContentEncoding:
				h.request = true
			case reqAttachmentSize:
				h.attachment = uint32(x)
			}
			p = v + n
		case protowire.BytesType:
			x, n := protowire.ConsumeBytes(b[v:])
			if n < 0 {
				return fieldError(p, protowire.ParseError(n))
			}
			switch num {
			case reqCaller:
				h.caller = x
				h.request = true
			case reqCallee: // or the response's error_msg
				h.callee = x
			case reqFunc:
				h.fn = x
				h.request = true
			case reqTransInfo:
				h.reqTrans = true
				h.request = true
			case rspTransInfo:
				h.rspTrans = true
				h.response = true
			}
			p = v + n
		default:
			n := protowire.ConsumeFieldValue(num, typ, b[v:])
			if n < 0 {
				return fieldError(p, protowire.ParseError(n))
			}
			p = v + n
		}
	}
	return nil
}

// fieldError says where a protobuf field could not be read.
func fieldError(off int, err error) error {
	return fmt.Errorf("field at offset %d: %w", off, err)
}

// decodeStream reads a stream frame: the meta of INIT and CLOSE frames; DATA and FEEDBACK are forwarded as
// they are.
func (c *Codec) decodeStream(frame []byte, streamType byte, msg *codec.Message, kind int) error {
	meta := frame[headerLen:]
	switch streamType {
	case streamFrameData:
		msg.Type = codec.StreamData
		msg.Private[privState] |= kindData
		return nil
	case streamFrameFeedback:
		msg.Type = codec.StreamFeedback
		msg.Private[privState] |= kindFeedback
		return nil
	case streamFrameClose:
		return c.decodeClose(meta, msg)
	}
	msg.Type = codec.StreamInit
	var in streamInit
	if err := parseInit(meta, &in); err != nil {
		return codec.Errorf(false, "trpc: stream %d: bad init meta: %v", msg.ID, err)
	}
	if kind == 0 {
		// A client's INIT carries request_meta and a server's response_meta (tRPC-Go always writes the one
		// it means, even empty); an INIT with neither is a server's on an upstream codec, else a client's.
		switch {
		case in.response:
			kind = kindInitResponse
		case in.request:
			kind = kindInitRequest
		case c.side == sideUpstream:
			kind = kindInitResponse
		default:
			kind = kindInitRequest
		}
	}
	if kind == kindInitResponse {
		msg.Private[privState] |= kindInitResponse
		msg.Status, msg.Failed = in.ret, in.ret != 0
		return nil
	}
	msg.Private[privState] |= kindInitRequest
	c.addNames(msg, in.caller, in.callee, in.fn)
	if in.trans {
		msg.Private[privState] |= stTransInfo
		msg.Metadata.Defer((*loader)(c), msg)
	}
	return nil
}

// streamInit is what an INIT meta says.
type streamInit struct {
	request, response  bool // request_meta, response_meta present
	caller, callee, fn []byte
	trans              bool
	ret                int32
}

// parseInit reads a TrpcStreamInitMeta. Repeated request_meta fields merge, as protobuf merges embedded
// messages: later scalars win and trans_info entries add up.
func parseInit(b []byte, in *streamInit) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case initRequestMeta:
			in.request = true
			return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if typ != protowire.BytesType {
					return nil
				}
				switch num {
				case initReqCaller:
					in.caller = v
				case initReqCallee:
					in.callee = v
				case initReqFunc:
					in.fn = v
				case initReqTransInfo:
					in.trans = true
				}
				return nil
			})
		case initResponseMeta:
			in.response = true
			return eachField(v, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
				if num == initRspRet && typ == protowire.VarintType {
					in.ret = int32(x)
				}
				return nil
			})
		}
		return nil
	})
}

// decodeClose reads a CLOSE meta. TRPC_STREAM_CLOSE (0) ends one direction of the stream normally;
// TRPC_STREAM_RESET (1) aborts the whole stream, which tRPC-Go reports as an error, like a non-zero ret.
func (c *Codec) decodeClose(meta []byte, msg *codec.Message) error {
	var typ, ret, funcRet int32
	trans := false
	err := eachField(meta, func(num protowire.Number, wt protowire.Type, _ []byte, x uint64) error {
		switch {
		case wt == protowire.VarintType && num == closeType:
			typ = int32(x)
		case wt == protowire.VarintType && num == closeRet:
			ret = int32(x)
		case wt == protowire.VarintType && num == closeFuncRet:
			funcRet = int32(x)
		case wt == protowire.BytesType && num == closeTransInfo:
			trans = true
		}
		return nil
	})
	if err != nil {
		return codec.Errorf(false, "trpc: stream %d: bad close meta: %v", msg.ID, err)
	}
	msg.Type = codec.StreamCloseOneWay
	if typ == closeReset {
		msg.Type = codec.StreamCloseTwoWay
	}
	msg.Status = ret
	if ret == 0 {
		msg.Status = funcRet
	}
	msg.Failed = typ == closeReset || ret != 0 || funcRet != 0
	msg.Private[privState] |= kindClose
	if trans {
		msg.Private[privState] |= stTransInfo
		msg.Metadata.Defer((*loader)(c), msg)
	}
	return nil
}

// eachField calls visit for every field of a protobuf message with its value: the payload of a bytes field,
// the number of a varint field. Groups and fixed-size fields are skipped.
func eachField(b []byte, visit func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for p := 0; p < len(b); {
		num, typ, tagLen := protowire.ConsumeTag(b[p:])
		if tagLen < 0 {
			return fieldError(p, protowire.ParseError(tagLen))
		}
		var (
			v []byte
			x uint64
			n int
		)
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b[p+tagLen:])
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b[p+tagLen:])
		default:
			n = protowire.ConsumeFieldValue(num, typ, b[p+tagLen:])
		}
		if n < 0 {
			return fieldError(p, protowire.ParseError(n))
		}
		if err := visit(num, typ, v, x); err != nil {
			return err
		}
		p += tagLen + n
	}
	return nil
}

// parseEntry reads a map<string, bytes> entry. Missing fields are empty, as in protobuf.
func parseEntry(b []byte) (key, value []byte, err error) {
	err = eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ == protowire.BytesType {
			switch num {
			case mapKey:
				key = v
			case mapValue:
				value = v
			}
		}
		return nil
	})
	return key, value, err
}

// transInfo calls visit for the trans_info entries of a decoded frame, in wire order.
func transInfo(msg *codec.Message, visit func(key, value []byte) error) error {
	frame := msg.Frame
	if len(frame) < headerLen {
		return errors.New("trpc: message does not hold the frame it was decoded from")
	}
	entries := func(b []byte, field protowire.Number) error {
		return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
			if num != field || typ != protowire.BytesType {
				return nil
			}
			k, val, err := parseEntry(v)
			if err != nil {
				return fmt.Errorf("trans_info entry: %w", err)
			}
			return visit(k, val)
		})
	}
	switch msg.Private[privState] & kindMask {
	case kindUnaryRequest, kindUnaryResponse:
		hdrLen := int(binary.BigEndian.Uint16(frame[8:10]))
		if headerLen+hdrLen > len(frame) {
			return errors.New("trpc: message does not hold the frame it was decoded from")
		}
		field := protowire.Number(reqTransInfo)
		if msg.Private[privState]&kindMask == kindUnaryResponse {
			field = rspTransInfo
		}
		return entries(frame[headerLen:headerLen+hdrLen], field)
	case kindInitRequest:
		return eachField(frame[headerLen:], func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
			if num != initRequestMeta || typ != protowire.BytesType {
				return nil
			}
			return entries(v, initReqTransInfo)
		})
	case kindClose:
		return entries(frame[headerLen:], closeTransInfo)
	}
	return nil
}

// LoadMetadata adds the trans_info entries of msg to its metadata, values as their raw bytes. A key that
// appears twice keeps its last value, as protobuf maps do. An entry named like an eager key (caller, callee,
// func) does not replace the header's value, which is what tRPC dispatches on.
func (l *loader) LoadMetadata(msg *codec.Message) error {
	c := (*Codec)(l)
	st := msg.Private[privState]
	if st&stTransInfo == 0 {
		return nil
	}
	err := transInfo(msg, func(key, value []byte) error {
		k := c.keys.String(key)
		if fromHeader(st, k) {
			return nil
		}
		v := ""
		if len(value) <= maxInternedValue {
			v = c.values.String(value)
		} else {
			v = string(value)
		}
		msg.Metadata.Set(k, v)
		return nil
	})
	if err != nil {
		return fmt.Errorf("trpc: %s %d: %w", msg.Type, msg.ID, err)
	}
	return nil
}

// fromHeader reports whether Decode set key from the header, according to the state bits st.
func fromHeader(st int, key string) bool {
	switch key {
	case KeyCaller:
		return st&stCaller != 0
	case KeyCallee:
		return st&stCallee != 0
	case KeyFunc:
		return st&stFunc != 0
	}
	return false
}
