package meshload

import (
	"bytes"
	"encoding/binary"
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
)

// BRPC is bRPC's baidu_std protocol. Each request calls example.EchoService/Echo, brpc's own example service:
// a 12-byte "PRPC" header, an RpcMeta holding the request meta (service_name, method_name) and the
// correlation_id, then the payload, an EchoRequest whose field 1 is the string. The echo server answers with
// an RpcMeta holding a response meta (error_code 0) and the same correlation_id, and the payload copied, which
// is the EchoResponse with the same string in its field 1. The request id is the correlation_id, written as
// the shortest varint, as brpc writes it.
type BRPC struct{}

// baidu_std constants.
const (
	brpcHeaderLen = 12
	brpcMagic     = "PRPC"

	// RpcMeta fields.
	brpcMetaRequest        protowire.Number = 1
	brpcMetaResponse       protowire.Number = 2
	brpcMetaCorrelationID  protowire.Number = 4
	brpcMetaAttachmentSize protowire.Number = 5
	// RpcRequestMeta fields.
	brpcRequestService protowire.Number = 1
	brpcRequestMethod  protowire.Number = 2
	// RpcResponseMeta fields.
	brpcResponseErrorCode protowire.Number = 1
	brpcResponseErrorText protowire.Number = 2
	// EchoRequest and EchoResponse field.
	brpcEchoMessage protowire.Number = 1
)

// The method the requests call.
const (
	brpcService = "example.EchoService"
	brpcMethod  = "Echo"
)

// errBRPCMagic reports a stream that is not baidu_std.
var errBRPCMagic = errors.New("brpc: bad magic")

// Name implements Protocol.
func (BRPC) Name() string { return "brpc" }

// Workload implements Protocol.
func (BRPC) Workload() string { return "bRPC baidu_std example.EchoService/Echo(EchoRequest)" }

// IDBits implements Protocol: the correlation_id is an int64, and the load keeps it positive, as brpc does.
func (BRPC) IDBits() int { return 63 }

// FrameLen implements Protocol: a frame is its 12-byte header and the body_size the header announces.
func (BRPC) FrameLen(b []byte) (int, error) {
	if len(b) < brpcHeaderLen {
		return 0, nil
	}
	if string(b[:4]) != brpcMagic {
		return 0, errBRPCMagic
	}
	body, meta := binary.BigEndian.Uint32(b[4:8]), binary.BigEndian.Uint32(b[8:12])
	if body > maxFrame || meta > body {
		return 0, errFrameLen
	}
	return brpcHeaderLen + int(body), nil
}

// brpcMeta is what the kit reads of an RpcMeta: the fields it needs, as the bytes they hold in the frame.
type brpcMeta struct {
	request, response bool
	failed            bool   // the response meta has a non-zero error_code or an error_text
	id                []byte // the correlation_id's varint
	attachment        []byte // the attachment_size field, tag included
}

// readBRPCMeta splits the frame f into its meta and its payload (the attachment included) and reads the meta.
// ok is false when the frame cannot be read.
func readBRPCMeta(f []byte) (m brpcMeta, payload []byte, ok bool) {
	n := binary.BigEndian.Uint32(f[8:12])
	if uint64(n) > uint64(len(f)-brpcHeaderLen) {
		return m, nil, false
	}
	meta, payload := f[brpcHeaderLen:brpcHeaderLen+int(n)], f[brpcHeaderLen+int(n):]
	for len(meta) > 0 {
		num, typ, tn := protowire.ConsumeTag(meta)
		if tn < 0 {
			return m, nil, false
		}
		vn := protowire.ConsumeFieldValue(num, typ, meta[tn:])
		if vn < 0 {
			return m, nil, false
		}
		field, value := meta[:tn+vn], meta[tn:tn+vn]
		switch {
		case num == brpcMetaRequest && typ == protowire.BytesType:
			m.request = true
		case num == brpcMetaResponse && typ == protowire.BytesType:
			m.response = true
			sub, _ := protowire.ConsumeBytes(value)
			if !brpcResponseOK(sub) {
				m.failed = true
			}
		case num == brpcMetaCorrelationID && typ == protowire.VarintType:
			m.id = value
		case num == brpcMetaAttachmentSize && typ == protowire.VarintType:
			m.attachment = field
		}
		meta = meta[tn+vn:]
	}
	return m, payload, true
}

// brpcResponseOK reports whether a response meta says the call succeeded: no error_code but 0, no error_text.
func brpcResponseOK(b []byte) bool {
	for len(b) > 0 {
		num, typ, tn := protowire.ConsumeTag(b)
		if tn < 0 {
			return false
		}
		vn := protowire.ConsumeFieldValue(num, typ, b[tn:])
		if vn < 0 {
			return false
		}
		switch {
		case num == brpcResponseErrorCode && typ == protowire.VarintType:
			if v, _ := protowire.ConsumeVarint(b[tn:]); v != 0 {
				return false
			}
		case num == brpcResponseErrorText && typ == protowire.BytesType:
			if s, _ := protowire.ConsumeBytes(b[tn:]); len(s) > 0 {
				return false
			}
		}
		b = b[tn+vn:]
	}
	return true
}

// appendBRPCHeader appends a baidu_std header.
func appendBRPCHeader(dst []byte, metaLen, payloadLen int) []byte {
	dst = append(dst, brpcMagic...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(metaLen+payloadLen))
	return binary.BigEndian.AppendUint32(dst, uint32(metaLen))
}

// NewCall implements Protocol.
func (BRPC) NewCall(payload string) Call {
	var req []byte
	req = protowire.AppendTag(req, brpcRequestService, protowire.BytesType)
	req = protowire.AppendString(req, brpcService)
	req = protowire.AppendTag(req, brpcRequestMethod, protowire.BytesType)
	req = protowire.AppendString(req, brpcMethod)
	var prefix []byte
	prefix = protowire.AppendTag(prefix, brpcMetaRequest, protowire.BytesType)
	prefix = protowire.AppendBytes(prefix, req)
	prefix = protowire.AppendTag(prefix, brpcMetaCorrelationID, protowire.VarintType)
	var body []byte
	body = protowire.AppendTag(body, brpcEchoMessage, protowire.BytesType)
	body = protowire.AppendString(body, payload)
	return &brpcCall{metaPrefix: prefix, payload: body}
}

// brpcCall is an Echo request: its meta up to the correlation_id's value, and its payload, which the reply
// must carry back unchanged.
type brpcCall struct {
	metaPrefix, payload []byte
}

func (c *brpcCall) MaxLen() int {
	return brpcHeaderLen + len(c.metaPrefix) + protowire.SizeVarint(^uint64(0)) + len(c.payload)
}

func (c *brpcCall) Append(dst []byte, id uint64) []byte {
	dst = appendBRPCHeader(dst, len(c.metaPrefix)+protowire.SizeVarint(id), len(c.payload))
	dst = append(dst, c.metaPrefix...)
	dst = protowire.AppendVarint(dst, id)
	return append(dst, c.payload...)
}

func (c *brpcCall) Check(f, out []byte) (uint64, Verdict, []byte) {
	m, payload, ok := readBRPCMeta(f)
	if !ok || m.id == nil {
		return 0, BadBody, out
	}
	id, _ := protowire.ConsumeVarint(m.id)
	switch {
	case m.failed:
		return id, BadStatus, out
	case !m.response || !bytes.Equal(payload, c.payload):
		return id, BadBody, out
	}
	return id, Good, out
}

// brpcReplyOK is the response meta of a successful reply: error_code 0, which brpc writes even when it is 0.
var brpcReplyOK = protowire.AppendBytes(protowire.AppendTag(nil, brpcMetaResponse, protowire.BytesType),
	protowire.AppendVarint(protowire.AppendTag(nil, brpcResponseErrorCode, protowire.VarintType), 0))

// AppendEcho implements Protocol: a request gets a successful response with its correlation_id and its
// payload and attachment copied (an EchoRequest's field 1 is an EchoResponse's field 1). A frame that carries
// a request meta is a request here, whatever else it carries: pbrpc adds an empty response meta to its
// requests. Frames that carry no request meta, or cannot be read, get nothing.
func (BRPC) AppendEcho(out, f []byte) []byte {
	m, payload, ok := readBRPCMeta(f)
	if !ok || !m.request {
		return out
	}
	metaLen := len(brpcReplyOK) + len(m.attachment)
	if m.id != nil {
		metaLen += protowire.SizeTag(brpcMetaCorrelationID) + len(m.id)
	}
	out = appendBRPCHeader(out, metaLen, len(payload))
	out = append(out, brpcReplyOK...)
	if m.id != nil {
		out = protowire.AppendTag(out, brpcMetaCorrelationID, protowire.VarintType)
		out = append(out, m.id...)
	}
	out = append(out, m.attachment...)
	return append(out, payload...)
}
