package meshload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// dubboHeaderLen is the length of a Dubbo frame header.
const dubboHeaderLen = 16

// Header bytes and flags of the Dubbo 2 protocol.
const (
	magicHigh byte = 0xda
	magicLow  byte = 0xbb

	flagRequest   byte = 0x80
	flagTwoWay    byte = 0x40
	flagEvent     byte = 0x20
	serialMask    byte = 0x1f
	serialHessian byte = 2
)

// dubboStatusOK is the Dubbo status of a successful response.
const dubboStatusOK = 20

// statusBadRequest answers requests the echo server cannot read.
const statusBadRequest = 40

// Hessian2 response types (written as compact ints, 0x90+n).
const (
	respValue     byte = 0x91
	respNullValue byte = 0x92
)

// errBadMagic reports a stream that is not Dubbo.
var errBadMagic = errors.New("dubbo: bad magic")

// Echo service the requests call.
const (
	dubboVersion  = "2.0.2"
	echoInterface = "org.apache.dubbo.bench.EchoService"
	echoVersion   = "0.0.0"
	echoMethod    = "echo"
	stringDesc    = "Ljava/lang/String;"
)

// frameID returns the request id of a frame.
func frameID(f []byte) uint64 { return binary.BigEndian.Uint64(f[4:12]) }

// appendHeader appends a Dubbo header.
func appendHeader(dst []byte, flag, status byte, id uint64, bodyLen int) []byte {
	dst = append(dst, magicHigh, magicLow, flag, status)
	dst = binary.BigEndian.AppendUint64(dst, id)
	return binary.BigEndian.AppendUint32(dst, uint32(bodyLen))
}

// maxChunk is the longest string chunk written, in UTF-16 units: what Java's Hessian2Output writes.
const maxChunk = 0x8000

// appendString appends s as a Hessian2 string, split into chunks of at most maxChunk UTF-16 units. Like Java,
// it writes a character outside the BMP as its two UTF-16 surrogates, three bytes each.
func appendString(dst []byte, s string) []byte {
	for {
		units, cut, wide := 0, len(s), false
		for i, r := range s {
			u := 1
			if r >= 0x10000 {
				u, wide = 2, true
			}
			if units+u > maxChunk {
				cut = i
				break
			}
			units += u
		}
		switch {
		case cut < len(s):
			dst = append(dst, 'R', byte(units>>8), byte(units))
		case units <= 0x1f:
			dst = append(dst, byte(units))
		case units <= 0x3ff:
			dst = append(dst, 0x30+byte(units>>8), byte(units))
		default:
			dst = append(dst, 'S', byte(units>>8), byte(units))
		}
		dst = appendJavaUTF8(dst, s[:cut], wide)
		if cut == len(s) {
			return dst
		}
		s = s[cut:]
	}
}

// appendJavaUTF8 appends s in the modified UTF-8 Java writes, where each surrogate of a character outside the
// BMP takes three bytes; wide says whether s holds any such character.
func appendJavaUTF8(dst []byte, s string, wide bool) []byte {
	if !wide {
		return append(dst, s...)
	}
	for _, r := range s {
		if r < 0x10000 {
			dst = utf8.AppendRune(dst, r)
			continue
		}
		hi, lo := utf16.EncodeRune(r)
		for _, u := range [2]rune{hi, lo} {
			dst = append(dst, 0xe0|byte(u>>12), 0x80|byte(u>>6)&0x3f, 0x80|byte(u)&0x3f)
		}
	}
	return dst
}

// appendMap appends an untyped Hessian2 map of strings.
func appendMap(dst []byte, kv ...string) []byte {
	dst = append(dst, 'H')
	for _, s := range kv {
		dst = appendString(dst, s)
	}
	return append(dst, 'Z')
}

// errShort reports a Hessian value cut off by the end of the body.
var errShort = errors.New("hessian: value runs past the body")

// stringChunk reads the header of the Hessian2 string chunk (or null) at the start of b: the header's length,
// the chunk's length in UTF-16 units, and whether it is the last chunk.
func stringChunk(b []byte) (hdr, units int, final, null bool, err error) {
	if len(b) == 0 {
		return 0, 0, false, false, errShort
	}
	switch tag := b[0]; {
	case tag == 'N':
		return 1, 0, true, true, nil
	case tag <= 0x1f:
		return 1, int(tag), true, false, nil
	case tag >= 0x30 && tag <= 0x33:
		if len(b) < 2 {
			return 0, 0, false, false, errShort
		}
		return 2, int(tag-0x30)<<8 | int(b[1]), true, false, nil
	case tag == 'S' || tag == 'R':
		if len(b) < 3 {
			return 0, 0, false, false, errShort
		}
		return 3, int(b[1])<<8 | int(b[2]), tag == 'S', false, nil
	default:
		return 0, 0, false, false, fmt.Errorf("hessian: tag 0x%02x is not a string", tag)
	}
}

// skipString returns the length in bytes of the Hessian2 string (or null) at the start of b.
func skipString(b []byte) (int, error) {
	off := 0
	for {
		hdr, units, final, null, err := stringChunk(b[off:])
		if err != nil {
			return 0, err
		}
		off += hdr
		if null {
			return off, nil
		}
		n, err := utf8Span(b[off:], units)
		if err != nil {
			return 0, err
		}
		off += n
		if final {
			return off, nil
		}
	}
}

// utf8Span returns how many bytes of b hold units UTF-16 code units. ASCII, the common case, is checked eight
// bytes at a time so that the echo server stays near free for large bodies.
func utf8Span(b []byte, units int) (int, error) {
	off := 0
	for units >= 8 && off+8 <= len(b) && binary.LittleEndian.Uint64(b[off:])&0x8080808080808080 == 0 {
		off += 8
		units -= 8
	}
	for units > 0 {
		if off >= len(b) {
			return 0, errShort
		}
		c := b[off]
		if c < utf8.RuneSelf {
			off++
			units--
			continue
		}
		r, size := utf8.DecodeRune(b[off:])
		if r == utf8.RuneError && size <= 1 {
			// Java writes each half of a surrogate pair as its own three-byte sequence, which Go rejects as
			// UTF-8; the lead byte still gives the length.
			size = utf8SeqLen(c)
			if size == 0 || off+size > len(b) {
				return 0, errShort
			}
		}
		off += size
		if size == 4 {
			units -= 2
		} else {
			units--
		}
	}
	return off, nil
}

// utf8SeqLen is the length of the UTF-8 sequence that starts with lead byte c, or 0 for a continuation byte.
func utf8SeqLen(c byte) int {
	switch {
	case c&0xe0 == 0xc0:
		return 2
	case c&0xf0 == 0xe0:
		return 3
	case c&0xf8 == 0xf0:
		return 4
	}
	return 0
}

// readString decodes the Hessian2 string (or null, as "") at the start of b and returns its length in bytes.
func readString(b []byte) (string, int, error) {
	var s []byte
	off := 0
	for {
		hdr, units, final, null, err := stringChunk(b[off:])
		if err != nil {
			return "", 0, err
		}
		off += hdr
		if null {
			return fromJavaUTF8(s), off, nil
		}
		n, err := utf8Span(b[off:], units)
		if err != nil {
			return "", 0, err
		}
		s = append(s, b[off:off+n]...)
		off += n
		if final {
			return fromJavaUTF8(s), off, nil
		}
	}
}

// fromJavaUTF8 turns Java's modified UTF-8, with surrogates written separately, into a Go string.
func fromJavaUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var s []rune
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 && utf8SeqLen(b[i]) == 3 && i+3 <= len(b) {
			r, n = rune(b[i]&0x0f)<<12|rune(b[i+1]&0x3f)<<6|rune(b[i+2]&0x3f), 3
		}
		if k := len(s); k > 0 && utf16.IsSurrogate(s[k-1]) && utf16.IsSurrogate(r) {
			if pair := utf16.DecodeRune(s[k-1], r); pair != utf8.RuneError {
				s[k-1] = pair
				i += n
				continue
			}
		}
		s = append(s, r)
		i += n
	}
	return string(s)
}

// Dubbo is Dubbo 2 with hessian2: each request calls org.apache.dubbo.bench.EchoService.echo(String), as a
// Dubbo 2.7 Java consumer sends it (Dubbo version 2.0.2, attachments path, interface, version and timeout).
// Heartbeats are answered and oneway requests ignored.
type Dubbo struct{}

// Name implements Protocol.
func (Dubbo) Name() string { return "dubbo" }

// Workload implements Protocol.
func (Dubbo) Workload() string { return "Dubbo 2 hessian2 echo(String)" }

// IDBits implements Protocol: Dubbo's request id is a 64-bit integer.
func (Dubbo) IDBits() int { return 64 }

// FrameLen implements Protocol: a frame is its 16-byte header and the body length the header announces.
func (Dubbo) FrameLen(b []byte) (int, error) {
	if len(b) < dubboHeaderLen {
		return 0, nil
	}
	if b[0] != magicHigh || b[1] != magicLow {
		return 0, errBadMagic
	}
	n := int32(binary.BigEndian.Uint32(b[12:16]))
	if n < 0 || n > maxFrame {
		return 0, errFrameLen
	}
	return dubboHeaderLen + int(n), nil
}

// NewCall implements Protocol.
func (Dubbo) NewCall(payload string) Call { return newDubboCall(payload) }

// dubboCall is a two-way echo(String) request and the body of the reply it expects.
type dubboCall struct {
	// frame is the whole request frame; bytes 4 to 12 hold the id.
	frame []byte
	// wantBody is the body of the echo server's answer: RESPONSE_VALUE and the same string.
	wantBody []byte
}

func newDubboCall(payload string) *dubboCall {
	body := make([]byte, 0, 128+len(payload)+len(payload)/maxChunk*3)
	body = appendString(body, dubboVersion)
	body = appendString(body, echoInterface)
	body = appendString(body, echoVersion)
	body = appendString(body, echoMethod)
	body = appendString(body, stringDesc)
	argAt := len(body)
	body = appendString(body, payload)
	arg := body[argAt:]
	body = appendMap(body,
		"path", echoInterface,
		"interface", echoInterface,
		"version", echoVersion,
		"timeout", "3000",
	)
	frame := appendHeader(make([]byte, 0, dubboHeaderLen+len(body)), flagRequest|flagTwoWay|serialHessian, 0, 0,
		len(body))
	frame = append(frame, body...)
	want := append([]byte{respValue}, arg...)
	return &dubboCall{frame: frame, wantBody: want}
}

func (c *dubboCall) MaxLen() int { return len(c.frame) }

func (c *dubboCall) Append(dst []byte, id uint64) []byte {
	n := len(dst)
	dst = append(dst, c.frame...)
	binary.BigEndian.PutUint64(dst[n+4:n+12], id)
	return dst
}

func (c *dubboCall) Check(f, out []byte) (uint64, Verdict, []byte) {
	flag := f[2]
	if flag&flagRequest != 0 {
		// The peer's own request: answer its heartbeat, drop anything else.
		if flag&flagEvent != 0 && flag&flagTwoWay != 0 {
			out = appendHeader(out, flagEvent|flag&serialMask, dubboStatusOK, frameID(f), 1)
			out = append(out, 'N')
		}
		return 0, Peer, out
	}
	if flag&flagEvent != 0 {
		return 0, Peer, out // a heartbeat reply
	}
	switch {
	case f[3] != dubboStatusOK:
		return frameID(f), BadStatus, out
	case !bytes.Equal(f[dubboHeaderLen:], c.wantBody):
		return frameID(f), BadBody, out
	}
	return frameID(f), Good, out
}

// AppendEcho implements Protocol: a two-way request gets a status-20 RESPONSE_VALUE holding its String
// argument, a heartbeat its answer; responses and oneway requests get nothing.
func (Dubbo) AppendEcho(out, f []byte) []byte {
	flag := f[2]
	if flag&flagRequest == 0 || flag&flagTwoWay == 0 {
		return out // a response, or a oneway request
	}
	id, serial := frameID(f), flag&serialMask
	if flag&flagEvent != 0 {
		out = appendHeader(out, flagEvent|serial, dubboStatusOK, id, 1)
		return append(out, 'N')
	}
	arg, err := echoArgument(f[dubboHeaderLen:])
	if err != nil {
		at := len(out)
		out = appendHeader(out, serial, statusBadRequest, id, 0)
		out = appendString(out, err.Error())
		patchBodyLen(out[at:])
		return out
	}
	if arg == nil {
		out = appendHeader(out, serial, dubboStatusOK, id, 1)
		return append(out, respNullValue)
	}
	out = appendHeader(out, serial, dubboStatusOK, id, 1+len(arg))
	out = append(out, respValue)
	return append(out, arg...)
}

// patchBodyLen sets the body length of the frame f from its size.
func patchBodyLen(f []byte) {
	n := len(f) - dubboHeaderLen
	f[12], f[13], f[14], f[15] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
}

// stringDescWire is the parameter-types descriptor of echo(String) as Hessian writes it.
var stringDescWire = appendString(nil, stringDesc)

// echoArgument returns the wire bytes of the String argument of a request body, or nil when the method takes
// something other than one String.
func echoArgument(body []byte) ([]byte, error) {
	off := 0
	// Dubbo version, service path, service version and method name come before the descriptor.
	for range 4 {
		n, err := skipString(body[off:])
		if err != nil {
			return nil, err
		}
		off += n
	}
	n, err := skipString(body[off:])
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(body[off:off+n], stringDescWire) {
		return nil, nil
	}
	off += n
	n, err = skipString(body[off:])
	if err != nil {
		return nil, err
	}
	return body[off : off+n], nil
}

// ResponseValue decodes the string a RESPONSE_VALUE response body carries.
func ResponseValue(body []byte) (string, error) {
	if len(body) == 0 || body[0] != respValue {
		return "", fmt.Errorf("dubbo: response body is not a RESPONSE_VALUE")
	}
	s, n, err := readString(body[1:])
	if err != nil {
		return "", err
	}
	if 1+n != len(body) {
		return "", fmt.Errorf("dubbo: %d bytes after the response value", len(body)-1-n)
	}
	return s, nil
}
