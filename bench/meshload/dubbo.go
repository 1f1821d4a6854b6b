// Package dubboload is a Dubbo 2 benchmark kit: a near-free echo server, the floor forwarder that copies
// whole frames and does nothing else, and a load generator that measures latency with a log-linear
// histogram. The dubbobench command drives it; tests call it directly.
package dubboload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"unicode/utf16"
	"unicode/utf8"
)

// HeaderLen is the length of a Dubbo frame header.
const HeaderLen = 16

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

// StatusOK is the Dubbo status of a successful response.
const StatusOK = 20

// statusBadRequest answers requests the echo server cannot read.
const statusBadRequest = 40

// Hessian2 response types (written as compact ints, 0x90+n).
const (
	respValue     byte = 0x91
	respNullValue byte = 0x92
)

// maxBody bounds the body length a frame header may announce; Dubbo's own default payload limit is 8 MiB, and
// anything far beyond it is a stream out of sync rather than a real frame.
const maxBody = 64 << 20

// Errors a frame reader reports when the stream is not Dubbo.
var (
	errBadMagic = errors.New("dubbo: bad magic")
	errBadLen   = errors.New("dubbo: bad body length")
)

// Echo service the requests call.
const (
	dubboVersion  = "2.0.2"
	echoInterface = "org.apache.dubbo.bench.EchoService"
	echoVersion   = "0.0.0"
	echoMethod    = "echo"
	stringDesc    = "Ljava/lang/String;"
)

// frameReader reads whole Dubbo frames from a connection into one reused buffer.
type frameReader struct {
	buf  []byte
	r, w int // unread data is buf[r:w]
	need int // length of the frame at buf[r:], once its header is in
}

func newFrameReader(size int) *frameReader { return &frameReader{buf: make([]byte, size)} }

// next returns the next whole frame, or nil when the buffer holds none yet. The frame is valid until the next
// call to fill.
func (fr *frameReader) next() ([]byte, error) {
	avail := fr.w - fr.r
	if avail < HeaderLen {
		return nil, nil
	}
	h := fr.buf[fr.r:fr.w]
	if h[0] != magicHigh || h[1] != magicLow {
		return nil, errBadMagic
	}
	n := int32(binary.BigEndian.Uint32(h[12:16]))
	if n < 0 || n > maxBody {
		return nil, errBadLen
	}
	total := HeaderLen + int(n)
	if avail < total {
		fr.need = total
		return nil, nil
	}
	fr.need = 0
	f := fr.buf[fr.r : fr.r+total : fr.r+total]
	fr.r += total
	return f, nil
}

// fill reads once from c. It first makes room: it moves the unread bytes to the front when the tail is short,
// and grows the buffer when a frame announced by its header cannot fit.
func (fr *frameReader) fill(c net.Conn) error {
	if fr.r == fr.w {
		fr.r, fr.w = 0, 0
	} else if fr.r > 0 && (len(fr.buf)-fr.w < len(fr.buf)/4 || fr.r+fr.need > len(fr.buf)) {
		fr.w = copy(fr.buf, fr.buf[fr.r:fr.w])
		fr.r = 0
	}
	if fr.need > len(fr.buf) {
		nb := make([]byte, max(fr.need, 2*len(fr.buf)))
		fr.w = copy(nb, fr.buf[fr.r:fr.w])
		fr.r = 0
		fr.buf = nb
	}
	n, err := c.Read(fr.buf[fr.w:])
	fr.w += n
	if n > 0 {
		// The error, if any, comes back on the next read; the bytes read first are served.
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

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

// Request is a Dubbo 2 hessian2 echo(String) two-way request frame, built once and stamped with a new id for
// each send.
type Request struct {
	// Frame is the whole frame; bytes 4 to 12 hold the id.
	Frame []byte
	// WantBody is the body of the echo server's answer: RESPONSE_VALUE and the same string.
	WantBody []byte
}

// NewRequest builds an echo(String) request carrying payload and a small attachment map, as a Dubbo 2.7 Java
// consumer sends it.
func NewRequest(payload string) *Request {
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
	frame := appendHeader(make([]byte, 0, HeaderLen+len(body)), flagRequest|flagTwoWay|serialHessian, 0, 0,
		len(body))
	frame = append(frame, body...)
	want := append([]byte{respValue}, arg...)
	return &Request{Frame: frame, WantBody: want}
}

// Payload returns a deterministic ASCII payload of n bytes.
func Payload(n int) string {
	const pattern = "meltemi-dubbo-bench-0123456789-abcdefghijklmnopqrstuvwxyz-"
	b := make([]byte, n)
	for i := range b {
		b[i] = pattern[i%len(pattern)]
	}
	return string(b)
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
