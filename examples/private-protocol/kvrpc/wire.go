// Package kvrpc is a small private RPC protocol: length-prefixed frames with a request id, a type, a status,
// ordered key/value headers (one of them the method) and an opaque body. It has a multiplexing client and a
// server in plain Go, and knows nothing of Meltemi. The wire format is described in the example's README.
package kvrpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Magic is the first four bytes of every frame: "KVR" and the protocol version, 1.
var Magic = [4]byte{'K', 'V', 'R', 1}

// HeaderLen is the size of the fixed header: magic, length, id, type, status, header section length.
const HeaderLen = 16

// DefaultMaxFrameSize is the largest frame a peer accepts unless told otherwise.
const DefaultMaxFrameSize = 4 << 20

// Header keys with a meaning in the protocol.
const (
	// HeaderMethod names the method a request or oneway call is for; it is the first header of every call.
	HeaderMethod = "method"
	// HeaderError says, in a failed reply written by a proxy, what kind of failure it was.
	HeaderError = "error"
)

// Type is what a frame is.
type Type uint8

// Frame types.
const (
	TypeRequest        Type = 0 // a call that expects a response with its id
	TypeResponse       Type = 1 // the answer to a request
	TypeOneway         Type = 2 // a call that expects nothing
	TypeHeartbeat      Type = 3 // a liveness probe, answered with a heartbeat reply
	TypeHeartbeatReply Type = 4
)

// Status is the outcome a response carries.
type Status uint8

// Statuses. Servers write the first four; proxies write the others when they answer a call themselves.
const (
	StatusOK          Status = 0
	StatusBadRequest  Status = 1 // the request could not be read
	StatusNoMethod    Status = 2 // the server has no such method
	StatusAppError    Status = 3 // the method failed; the body says why
	StatusNoRoute     Status = 4 // no route or no service for the call
	StatusUnavailable Status = 5 // no server could take the call
	StatusTimeout     Status = 6
	StatusOverloaded  Status = 7
	StatusDenied      Status = 8
)

// Header is one key/value pair. Keys are 1 to 255 bytes, values at most 255.
type Header struct{ Key, Value string }

// Frame is one message on the wire.
type Frame struct {
	Type    Type
	ID      uint32
	Status  Status
	Headers []Header // in wire order; keys are unique
	Body    []byte
}

// Get returns the value of a header.
func (f *Frame) Get(key string) (string, bool) {
	for _, h := range f.Headers {
		if h.Key == key {
			return h.Value, true
		}
	}
	return "", false
}

// Append appends f's wire form to dst.
func (f *Frame) Append(dst []byte) ([]byte, error) {
	start := len(dst)
	dst = append(dst, Magic[:]...)
	dst = binary.BigEndian.AppendUint32(dst, 0) // the length, known at the end
	dst = binary.BigEndian.AppendUint32(dst, f.ID)
	dst = append(dst, byte(f.Type), byte(f.Status), 0, 0)
	for _, h := range f.Headers {
		if len(h.Key) == 0 || len(h.Key) > math.MaxUint8 || len(h.Value) > math.MaxUint8 {
			return dst[:start], fmt.Errorf("kvrpc: header %q is too long or empty", h.Key)
		}
		dst = append(dst, byte(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = append(dst, byte(len(h.Value)))
		dst = append(dst, h.Value...)
	}
	section := len(dst) - start - HeaderLen
	if section > math.MaxUint16 {
		return dst[:start], fmt.Errorf("kvrpc: %d bytes of headers, more than %d", section, math.MaxUint16)
	}
	dst = append(dst, f.Body...)
	if len(dst)-start-8 > math.MaxUint32 {
		return dst[:start], errors.New("kvrpc: frame too large")
	}
	binary.BigEndian.PutUint32(dst[start+4:], uint32(len(dst)-start-8))
	binary.BigEndian.PutUint16(dst[start+14:], uint16(section))
	return dst, nil
}

// ReadFrame reads one frame from r, refusing frames longer than maxSize bytes.
func ReadFrame(r io.Reader, maxSize int) (*Frame, error) {
	var head [HeaderLen]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	if !bytes.Equal(head[:4], Magic[:]) {
		return nil, fmt.Errorf("kvrpc: bad magic % x", head[:4])
	}
	size := int64(binary.BigEndian.Uint32(head[4:8])) + 8
	if size < HeaderLen || size > int64(maxSize) {
		return nil, fmt.Errorf("kvrpc: frame length %d outside [%d, %d]", size, HeaderLen, maxSize)
	}
	rest := make([]byte, size-HeaderLen)
	if _, err := io.ReadFull(r, rest); err != nil {
		return nil, err
	}
	f := &Frame{Type: Type(head[12]), ID: binary.BigEndian.Uint32(head[8:12]), Status: Status(head[13])}
	if f.Type > TypeHeartbeatReply {
		return nil, fmt.Errorf("kvrpc: unknown frame type %d", f.Type)
	}
	section := int(binary.BigEndian.Uint16(head[14:16]))
	if section > len(rest) {
		return nil, fmt.Errorf("kvrpc: header section of %d bytes in a frame of %d", section, size)
	}
	hdr := rest[:section]
	for len(hdr) > 0 {
		kl := int(hdr[0])
		if kl == 0 || 1+kl+1 > len(hdr) {
			return nil, errors.New("kvrpc: malformed header key")
		}
		key := string(hdr[1 : 1+kl])
		vl := int(hdr[1+kl])
		if 2+kl+vl > len(hdr) {
			return nil, fmt.Errorf("kvrpc: header %q overruns the header section", key)
		}
		if _, dup := f.Get(key); dup {
			return nil, fmt.Errorf("kvrpc: header %q twice", key)
		}
		f.Headers = append(f.Headers, Header{Key: key, Value: string(hdr[2+kl : 2+kl+vl])})
		hdr = hdr[2+kl+vl:]
	}
	f.Body = rest[section:]
	return f, nil
}

// callHeaders lays out a call's headers: the method first, then the others sorted by key, so that the same
// call always has the same bytes.
func callHeaders(method string, headers map[string]string) ([]Header, error) {
	if method == "" {
		return nil, errors.New("kvrpc: a call needs a method")
	}
	out := []Header{{Key: HeaderMethod, Value: method}}
	for _, k := range sortedKeys(headers) {
		if k == HeaderMethod {
			return nil, errors.New("kvrpc: the method is an argument, not a header")
		}
		out = append(out, Header{Key: k, Value: headers[k]})
	}
	return out, nil
}

// headerMap returns the headers as a map.
func headerMap(hs []Header) map[string]string {
	m := make(map[string]string, len(hs))
	for _, h := range hs {
		m[h.Key] = h.Value
	}
	return m
}
