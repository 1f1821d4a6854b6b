package trpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meltemi-mesh/meltemi/codec"
)

// Framework return codes (trpc.proto: TrpcRetCode) that error replies carry.
const (
	RetServerDecode    = 1   // RetServerDecode is a request the server could not decode
	RetServerNoService = 11  // RetServerNoService is a service the server does not have
	RetServerTimeout   = 21  // RetServerTimeout is a request that ran out of time in the server
	RetServerLimited   = 23  // RetServerLimited is a request refused by rate limiting
	RetServerAuth      = 41  // RetServerAuth is a request refused by authentication or authorization
	RetClientConnect   = 111 // RetClientConnect is a call that could not connect to any server
	RetClientDecode    = 122 // RetClientDecode is a response the caller could not decode
	RetUnknown         = 999 // RetUnknown is an unknown error
)

// SetID rewrites the request id of msg. A stream frame carries it once, in the fixed header. A unary frame
// carries it twice, in the fixed header and as the protocol header's request_id varint: both are rewritten,
// in place when the new id fits in the varint's bytes (padded with continuation bytes if it is shorter, which
// every protobuf parser accepts), else in a copy of the frame up to six bytes longer, with the header and
// total sizes fixed; msg.Frame then points at the copy and the borrowed frame is left as it was. That copy
// departs from the contract's "in place": see the README's design notes.
func (c *Codec) SetID(msg *codec.Message, id uint64) {
	msg.ID = id
	f := msg.Frame
	if len(f) < headerLen {
		return
	}
	id32 := uint32(id)
	if k := msg.Private[privState] & kindMask; k != kindUnaryRequest && k != kindUnaryResponse {
		binary.BigEndian.PutUint32(f[10:14], id32)
		return
	}
	hdrEnd := headerLen + int(binary.BigEndian.Uint16(f[8:10]))
	off, n, tagLen := msg.Private[privIDOffset], msg.Private[privIDLens]&0xff, msg.Private[privIDLens]>>8
	present := n > 0 && off-tagLen >= headerLen && off+n <= hdrEnd && hdrEnd <= len(f)
	switch {
	case present && protowire.SizeVarint(uint64(id32)) <= n:
		binary.BigEndian.PutUint32(f[10:14], id32)
		putPaddedVarint(f[off:off+n], uint64(id32))
		return
	case !present && (id32 == 0 || hdrEnd > len(f)):
		// An absent request_id is 0 already; a frame that does not match its header is not edited further.
		binary.BigEndian.PutUint32(f[10:14], id32)
		return
	}
	// The varint must grow (or the header has none): rebuild the frame around a new request_id field, where
	// the old one was or else last, where it wins over any other as protobuf reads it. The borrowed frame is
	// left as it was.
	start, end := hdrEnd, hdrEnd
	if present {
		start, end = off-tagLen, off+n
	}
	grown := len(f) - (end - start) + 1 + protowire.SizeVarint(uint64(id32))
	newHdr := hdrEnd - headerLen + grown - len(f)
	if newHdr > maxProtoHeader || grown > maxTotal {
		binary.BigEndian.PutUint32(f[10:14], id32)
		return // the header cannot grow; see the README's limits
	}
	out := make([]byte, 0, grown)
	out = append(out, f[:start]...)
	out = protowire.AppendTag(out, reqRequestID, protowire.VarintType)
	idOff := len(out)
	out = protowire.AppendVarint(out, uint64(id32))
	idLen := len(out) - idOff
	out = append(out, f[end:]...)
	binary.BigEndian.PutUint32(out[4:8], uint32(len(out)))
	binary.BigEndian.PutUint16(out[8:10], uint16(newHdr))
	binary.BigEndian.PutUint32(out[10:14], id32)
	msg.Frame = out
	msg.Private[privIDOffset] = idOff
	msg.Private[privIDLens] = idLen | 1<<8
}

// putPaddedVarint writes v as a varint that fills b exactly, with redundant continuation bytes when v needs
// fewer.
func putPaddedVarint(b []byte, v uint64) {
	last := len(b) - 1
	for i := range last {
		b[i] = byte(v) | 0x80
		v >>= 7
	}
	b[last] = byte(v)
}

// Encode appends msg to dst with its trans_info edited by mutation, and points msg.Frame at the copy. Only
// the trans_info map is rewritten: entries a mutation sets or removes are dropped where they are, set values
// are appended at the end of the header or meta, and every other byte is copied as it is; the header and total
// sizes are then fixed. Unary requests and responses, request INIT frames and CLOSE frames carry trans_info;
// any frame is copied unchanged by an empty mutation.
func (c *Codec) Encode(dst []byte, msg *codec.Message, mutation *codec.Mutation) ([]byte, error) {
	f := msg.Frame
	if len(f) < headerLen {
		return dst, errors.New("trpc: encode: the message holds no frame")
	}
	if mutation.Empty() {
		out := append(dst, f...)
		msg.Frame = out[len(dst):]
		return out, nil
	}
	kind := msg.Private[privState] & kindMask
	out := append(dst, f[:headerLen]...)
	var err error
	switch kind {
	case kindUnaryRequest, kindUnaryResponse:
		hdrEnd := headerLen + int(binary.BigEndian.Uint16(f[8:10]))
		if hdrEnd > len(f) {
			return dst, errors.New("trpc: encode: message does not hold the frame it was decoded from")
		}
		field := protowire.Number(reqTransInfo)
		if kind == kindUnaryResponse {
			field = rspTransInfo
		}
		if out, err = rewriteTransInfo(out, f[headerLen:hdrEnd], field, mutation); err != nil {
			return dst, fmt.Errorf("trpc: encode: %s %d: %w", msg.Type, msg.ID, err)
		}
		hdr := len(out) - len(dst) - headerLen
		if hdr > maxProtoHeader {
			return dst, fmt.Errorf("trpc: encode: %s %d: protocol header of %d bytes exceeds the limit of %d",
				msg.Type, msg.ID, hdr, maxProtoHeader)
		}
		binary.BigEndian.PutUint16(out[len(dst)+8:], uint16(hdr))
		out = append(out, f[hdrEnd:]...)
	case kindInitRequest:
		if out, err = c.rewriteInit(out, f[headerLen:], mutation); err != nil {
			return dst, fmt.Errorf("trpc: encode: stream %d init: %w", msg.ID, err)
		}
	case kindClose:
		if out, err = rewriteTransInfo(out, f[headerLen:], closeTransInfo, mutation); err != nil {
			return dst, fmt.Errorf("trpc: encode: stream %d close: %w", msg.ID, err)
		}
	default:
		return dst, fmt.Errorf("trpc: encode: %s %d carries no trans_info to rewrite", msg.Type, msg.ID)
	}
	total := len(out) - len(dst)
	if total > c.maxFrame {
		return dst, fmt.Errorf("trpc: encode: %s %d: frame size %d exceeds limit %d", msg.Type, msg.ID, total, c.maxFrame)
	}
	binary.BigEndian.PutUint32(out[len(dst)+4:], uint32(total))
	// Decoding the new frame leaves msg consistent with it: offsets, and trans_info loaded on demand. Its kind
	// is known, so nothing is inferred again.
	msg.Reset()
	if _, err := c.decode(out[len(dst):], msg, kind); err != nil {
		return dst, fmt.Errorf("trpc: encode: re-encoded frame does not decode: %w", err)
	}
	return out, nil
}

// rewriteInit rewrites the trans_info of an INIT meta's request_meta. Every request_meta field is merged
// into one (protobuf merges repeated embedded messages the same way), written after the other fields.
func (c *Codec) rewriteInit(out, meta []byte, mutation *codec.Mutation) ([]byte, error) {
	c.meta = c.meta[:0]
	err := eachRaw(meta, func(num protowire.Number, typ protowire.Type, raw, v []byte) error {
		if num == initRequestMeta && typ == protowire.BytesType {
			c.meta = append(c.meta, v...)
		} else {
			out = append(out, raw...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.inner, err = rewriteTransInfo(c.inner[:0], c.meta, initReqTransInfo, mutation)
	if err != nil {
		return nil, err
	}
	out = protowire.AppendTag(out, initRequestMeta, protowire.BytesType)
	return protowire.AppendBytes(out, c.inner), nil
}

// rewriteTransInfo appends the message b to out with its map field (trans_info) edited: entries whose key the
// mutation sets or removes are dropped, and the values set are appended at the end, once per key. Keys are set
// first and removed second, and the last Set of a key wins.
func rewriteTransInfo(out, b []byte, field protowire.Number, m *codec.Mutation) ([]byte, error) {
	err := eachRaw(b, func(num protowire.Number, typ protowire.Type, raw, v []byte) error {
		if num == field && typ == protowire.BytesType {
			key, _, err := parseEntry(v)
			if err != nil {
				return fmt.Errorf("trans_info entry: %w", err)
			}
			if lastSet(m, string(key)) >= 0 || removes(m, string(key)) {
				return nil
			}
		}
		out = append(out, raw...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, kv := range m.Set {
		if lastSet(m, kv.Key) != i || removes(m, kv.Key) {
			continue
		}
		out = appendEntry(out, field, kv.Key, kv.Value)
	}
	return out, nil
}

// eachRaw calls visit for every field of a message with its raw bytes (tag included) and, for a bytes field,
// its payload.
func eachRaw(b []byte, visit func(num protowire.Number, typ protowire.Type, raw, v []byte) error) error {
	for p := 0; p < len(b); {
		num, typ, tagLen := protowire.ConsumeTag(b[p:])
		if tagLen < 0 {
			return fieldError(p, protowire.ParseError(tagLen))
		}
		var v []byte
		n := 0
		if typ == protowire.BytesType {
			v, n = protowire.ConsumeBytes(b[p+tagLen:])
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b[p+tagLen:])
		}
		if n < 0 {
			return fieldError(p, protowire.ParseError(n))
		}
		end := p + tagLen + n
		if err := visit(num, typ, b[p:end], v); err != nil {
			return err
		}
		p = end
	}
	return nil
}

// appendEntry appends a map<string, bytes> entry as field.
func appendEntry(out []byte, field protowire.Number, key, value string) []byte {
	size := 1 + protowire.SizeBytes(len(key)) + 1 + protowire.SizeBytes(len(value))
	out = protowire.AppendTag(out, field, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(size))
	out = protowire.AppendTag(out, mapKey, protowire.BytesType)
	out = protowire.AppendString(out, key)
	out = protowire.AppendTag(out, mapValue, protowire.BytesType)
	return protowire.AppendString(out, value)
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

// HeartbeatReply appends nothing: tRPC has no heartbeat frames.
func (c *Codec) HeartbeatReply(dst []byte, _ *codec.Message) []byte { return dst }

// ErrorReply appends a reply to req that a tRPC client reads as a framework error: for a unary request, a
// ResponseProtocol with the request's id and call type, ret set to the error's code and error_msg to detail;
// for a stream's INIT, the server's INIT frame with the same code and message in its response_meta, which
// tRPC-Go's NewStream returns as the error. It appends nothing, and returns 0, for oneway requests and other
// frames. It reads only req's ID, Type and Private, never its Frame.
func (c *Codec) ErrorReply(dst []byte, req *codec.Message, kind codec.ErrorKind, detail string) ([]byte, int32) {
	ret := ErrorRet(kind)
	st := req.Private[privState]
	// A message the codec did not decode has no recorded version: answer in the current one (1).
	version := byte(1)
	if st&kindMask != 0 {
		version = byte(st >> stVersionShift)
	}
	msgText := errorMessage(kind, detail)
	id := uint32(req.ID)
	start := len(dst)
	switch {
	case req.Type == codec.Request:
		dst = appendFixedHeader(dst, frameUnary, 0, id, version)
		if ct := uint32(req.Private[privCallType]); ct != 0 {
			dst = appendVarintField(dst, reqCallType, uint64(ct))
		}
		if id != 0 {
			dst = appendVarintField(dst, reqRequestID, uint64(id))
		}
		dst = appendVarintField(dst, rspRet, uint64(int64(ret)))
		dst = protowire.AppendTag(dst, rspErrorMsg, protowire.BytesType)
		dst = protowire.AppendString(dst, msgText)
		binary.BigEndian.PutUint16(dst[start+8:], uint16(len(dst)-start-headerLen))
	case req.Type == codec.StreamInit && st&kindMask != kindInitResponse:
		dst = appendFixedHeader(dst, frameStream, streamFrameInit, id, version)
		size := protowire.SizeTag(initRspRet) + protowire.SizeVarint(uint64(int64(ret))) +
			protowire.SizeTag(initRspErrorMsg) + protowire.SizeBytes(len(msgText))
		dst = protowire.AppendTag(dst, initResponseMeta, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(size))
		dst = appendVarintField(dst, initRspRet, uint64(int64(ret)))
		dst = protowire.AppendTag(dst, initRspErrorMsg, protowire.BytesType)
		dst = protowire.AppendString(dst, msgText)
	case req.Type == codec.StreamData || req.Type == codec.StreamFeedback || req.Type == codec.StreamCloseOneWay:
		// A frame of an open stream: a RESET aborts the stream for the peer, with the code and message.
		dst = appendFixedHeader(dst, frameStream, streamFrameClose, id, version)
		dst = appendVarintField(dst, closeType, closeReset)
		dst = appendVarintField(dst, closeRet, uint64(int64(ret)))
		dst = protowire.AppendTag(dst, closeMsg, protowire.BytesType)
		dst = protowire.AppendString(dst, msgText)
	default:
		return dst, 0
	}
	binary.BigEndian.PutUint32(dst[start+4:], uint32(len(dst)-start))
	return dst, ret
}

// ErrorRet is the tRPC framework return code an error reply of this kind carries.
func ErrorRet(kind codec.ErrorKind) int32 {
	switch kind {
	case codec.RouteNotFound, codec.ClusterNotFound:
		return RetServerNoService
	case codec.NoHealthyUpstream:
		return RetClientConnect
	case codec.BadResponse:
		return RetClientDecode
	case codec.OverLimit:
		return RetServerLimited
	case codec.Timeout:
		return RetServerTimeout
	case codec.Unauthorized:
		return RetServerAuth
	case codec.BadRequest:
		return RetServerDecode
	default:
		return RetUnknown
	}
}

// errorMessage is the error_msg of a reply: detail cut to maxErrorDetail on a rune boundary, or the kind when
// there is no detail.
func errorMessage(kind codec.ErrorKind, detail string) string {
	if detail == "" {
		return "meltemi: " + kind.String()
	}
	if len(detail) > maxErrorDetail {
		cut := maxErrorDetail
		for cut > 0 && !utf8.RuneStart(detail[cut]) {
			cut--
		}
		detail = detail[:cut]
	}
	return detail
}

// appendFixedHeader appends a fixed header whose sizes are filled in later.
func appendFixedHeader(dst []byte, dataType, streamType byte, id uint32, version byte) []byte {
	dst = append(dst, magicHigh, magicLow, dataType, streamType, 0, 0, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, id)
	return append(dst, version, 0)
}

// appendVarintField appends a varint field.
func appendVarintField(dst []byte, num protowire.Number, v uint64) []byte {
	dst = protowire.AppendTag(dst, num, protowire.VarintType)
	return protowire.AppendVarint(dst, v)
}
