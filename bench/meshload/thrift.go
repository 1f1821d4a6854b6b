package meshload

import (
	"bytes"
	"encoding/binary"
)

// Thrift is Apache Thrift's strict binary protocol over the framed transport. Each request calls
// `string echo(1: string msg)`: a CALL message named "echo" whose argument struct holds the string as field 1,
// which the echo server returns as the REPLY's field 0. The request id is the message's seqid.
type Thrift struct{}

// Thrift binary protocol constants.
const (
	thriftVersion1   uint32 = 0x80010000 // strict binary: version in the high half, message type in the low byte
	thriftCall       byte   = 1
	thriftReply      byte   = 2
	thriftException  byte   = 3
	thriftOneway     byte   = 4
	thriftTypeI32    byte   = 8
	thriftTypeString byte   = 11
	thriftStop       byte   = 0

	// thriftProtocolError is TApplicationException's PROTOCOL_ERROR.
	thriftProtocolError = 7
)

// thriftMethod is the method the requests call.
const thriftMethod = "echo"

// Name implements Protocol.
func (Thrift) Name() string { return "thrift" }

// Workload implements Protocol.
func (Thrift) Workload() string { return "Thrift binary framed echo(1: string)" }

// IDBits implements Protocol: the seqid is an i32.
func (Thrift) IDBits() int { return 32 }

// FrameLen implements Protocol: a frame is a 4-byte big-endian length and that many bytes.
func (Thrift) FrameLen(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, nil
	}
	n := int32(binary.BigEndian.Uint32(b))
	if n <= 0 || n > maxFrame {
		return 0, errFrameLen
	}
	return 4 + int(n), nil
}

// thriftHeader reads the header of the framed strict-binary message f: its type, the offset of its seqid and
// the offset of its body (the struct after the seqid). ok is false when f is no such message.
func thriftHeader(f []byte) (typ byte, seqAt, bodyAt int, ok bool) {
	if len(f) < 16 || binary.BigEndian.Uint32(f[4:8])&0xffff0000 != thriftVersion1 {
		return 0, 0, 0, false
	}
	n := binary.BigEndian.Uint32(f[8:12])
	if uint64(n) > uint64(len(f)-16) {
		return 0, 0, 0, false
	}
	seqAt = 12 + int(n)
	return f[7], seqAt, seqAt + 4, true
}

// appendThriftHeader appends a frame length to be patched and a strict-binary message header.
func appendThriftHeader(dst []byte, typ byte, name, seqid []byte) []byte {
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, thriftVersion1|uint32(typ))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(name)))
	dst = append(dst, name...)
	return append(dst, seqid...)
}

// appendThriftString appends a string field.
func appendThriftString(dst []byte, id int16, s []byte) []byte {
	dst = append(dst, thriftTypeString)
	dst = binary.BigEndian.AppendUint16(dst, uint16(id))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

// patchFrameLen sets the frame length of the framed message f from its size.
func patchFrameLen(f []byte) { binary.BigEndian.PutUint32(f, uint32(len(f)-4)) }

// NewCall implements Protocol.
func (Thrift) NewCall(payload string) Call {
	var zero [4]byte
	req := appendThriftHeader(nil, thriftCall, []byte(thriftMethod), zero[:])
	req = appendThriftString(req, 1, []byte(payload))
	req = append(req, thriftStop)
	patchFrameLen(req)
	reply := appendThriftHeader(nil, thriftReply, []byte(thriftMethod), zero[:])
	reply = appendThriftString(reply, 0, []byte(payload))
	reply = append(reply, thriftStop)
	patchFrameLen(reply)
	_, seqAt, _, _ := thriftHeader(req)
	return &thriftEcho{frame: req, want: reply, seqAt: seqAt}
}

// thriftEcho is an echo CALL and the REPLY it expects, both with the seqid at seqAt.
type thriftEcho struct {
	frame, want []byte
	seqAt       int
}

func (c *thriftEcho) MaxLen() int { return len(c.frame) }

func (c *thriftEcho) Append(dst []byte, id uint64) []byte {
	n := len(dst)
	dst = append(dst, c.frame...)
	binary.BigEndian.PutUint32(dst[n+c.seqAt:], uint32(id))
	return dst
}

func (c *thriftEcho) Check(f, out []byte) (uint64, Verdict, []byte) {
	typ, seqAt, _, ok := thriftHeader(f)
	if !ok {
		return 0, BadBody, out
	}
	id := uint64(binary.BigEndian.Uint32(f[seqAt:]))
	switch {
	case typ == thriftException:
		return id, BadStatus, out
	case typ != thriftReply || seqAt != c.seqAt || len(f) != len(c.want),
		!bytes.Equal(f[:seqAt], c.want[:seqAt]), !bytes.Equal(f[seqAt+4:], c.want[seqAt+4:]):
		return id, BadBody, out
	}
	return id, Good, out
}

// AppendEcho implements Protocol: a CALL whose arguments start with a string field 1 gets a REPLY carrying
// that string as field 0; any other CALL gets an EXCEPTION (PROTOCOL_ERROR); the rest gets nothing.
func (Thrift) AppendEcho(out, f []byte) []byte {
	typ, seqAt, bodyAt, ok := thriftHeader(f)
	if !ok || typ != thriftCall {
		return out // not a strict-binary CALL; ONEWAY calls want no answer
	}
	name, seqid, args := f[12:seqAt], f[seqAt:bodyAt], f[bodyAt:]
	at := len(out)
	if arg, ok := thriftFirstString(args); ok {
		out = appendThriftHeader(out, thriftReply, name, seqid)
		out = appendThriftString(out, 0, arg)
		out = append(out, thriftStop)
	} else {
		out = appendThriftHeader(out, thriftException, name, seqid)
		out = appendThriftString(out, 1, []byte("echo takes one string as field 1"))
		out = append(out, thriftTypeI32, 0, 2)
		out = binary.BigEndian.AppendUint32(out, thriftProtocolError)
		out = append(out, thriftStop)
	}
	patchFrameLen(out[at:])
	return out
}

// thriftFirstString returns the value of the argument struct's first field when it is string field 1. Later
// fields are not looked at: the echo server reads no more than it needs.
func thriftFirstString(args []byte) ([]byte, bool) {
	if len(args) < 7 || args[0] != thriftTypeString || binary.BigEndian.Uint16(args[1:3]) != 1 {
		return nil, false
	}
	n := binary.BigEndian.Uint32(args[3:7])
	if uint64(n) > uint64(len(args)-7) {
		return nil, false
	}
	return args[7 : 7+n], true
}
