// Package kvcodec is the Meltemi codec of kvrpc. It reads the fixed header and the header pairs, which become
// the message's metadata (the method among them), and never reads the body.
package kvcodec

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/meltemi-mesh/meltemi/codec"
)

const (
	// Name is the codec's name in config and in ApplicationProtocol manifests.
	Name = "aeraki.meta_protocol.codec.kvrpc"
	// Protocol is the protocol's name in port names: tcp-metaprotocol-kvrpc.
	Protocol = "kvrpc"

	headerLen          = 16      // magic, length, id, type, status, header section length
	maxFrame           = 4 << 20 // kvrpc's frame size limit; a longer frame is refused before it is buffered
	maxDetail          = 4 << 10 // bounds the detail an error reply carries
	privBody           = 0       // Message.Private index: the offset of the body in Frame, for Encode
	wireResponse       = 1       // the type byte of a response
	wireHeartbeatReply = 4       // the type byte of a heartbeat reply
)

var (
	magic = []byte{'K', 'V', 'R', 1}
	types = [...]codec.MessageType{ // by type byte
		codec.Request, codec.Response, codec.Oneway, codec.Heartbeat, codec.HeartbeatResponse}
)

// Registration returns the codec's registration, for the binary's plugin list.
func Registration() codec.Registration {
	return codec.Registration{Name: Name, Protocol: Protocol, New: func(raw json.RawMessage) (codec.Factory, error) {
		if err := codec.DecodeConfig(raw, &struct{}{}); err != nil {
			return nil, fmt.Errorf("%s: %w", Name, err)
		}
		return factory{}, nil
	}}
}

type factory struct{}

// NewCodec ignores the side: every kvrpc frame says what it is.
func (factory) NewCodec(codec.Side) codec.Codec { return &Codec{} }

// Properties: replies carry their request's id, so upstream connections are shared.
func (factory) Properties() codec.Properties { return codec.Properties{Multiplexing: true} }

// Codec reads and writes the kvrpc frames of one connection. Its interners make steady-state decoding free of
// allocations; keys and values of at most 255 bytes bound what they hold.
type Codec struct{ keys, values codec.Interner }

// Decode reads the header and every header pair. The pairs are few and short, so they are decoded eagerly
// rather than deferred with a Loader.
func (c *Codec) Decode(buf []byte, msg *codec.Message) (int, error) {
	if n := min(len(buf), len(magic)); !bytes.Equal(buf[:n], magic[:n]) {
		return 0, codec.Errorf(false, "kvrpc: bad magic or version % x", buf[:n])
	}
	if len(buf) < headerLen {
		return 0, codec.ErrIncomplete
	}
	if int(buf[12]) >= len(types) {
		return 0, codec.Errorf(false, "kvrpc: unknown frame type %d", buf[12])
	}
	msg.Type, msg.ID = types[buf[12]], uint64(binary.BigEndian.Uint32(buf[8:12]))
	canReply := msg.Type == codec.Request // a refused request is answered before the connection closes
	size := int64(binary.BigEndian.Uint32(buf[4:8])) + 8
	if size < headerLen || size > maxFrame {
		return 0, codec.Errorf(canReply, "kvrpc: frame length %d is outside [%d, %d]", size, headerLen, maxFrame)
	}
	n := int(size)
	if len(buf) < n {
		return n, codec.ErrIncomplete
	}
	frame := buf[:n:n]
	body := headerLen + int(binary.BigEndian.Uint16(frame[14:16]))
	if body > n {
		return 0, codec.Errorf(canReply, "kvrpc: header section ends at %d, past the frame's end", body)
	}
	msg.Status, msg.Frame, msg.Private[privBody] = int32(frame[13]), frame, body
	msg.Failed = msg.Type == codec.Response && msg.Status != 0 // a response with a status other than OK
	for p := headerLen; p < body; {
		k, v, next, ok := pair(frame[:body], p)
		if !ok || len(k) == 0 {
			return 0, codec.Errorf(canReply, "kvrpc: malformed header pair at offset %d", p)
		}
		key := c.keys.String(k)
		if _, dup := msg.Metadata.Get(key); dup {
			return 0, codec.Errorf(canReply, "kvrpc: header %q twice", key)
		}
		msg.Metadata.Add(key, c.values.String(v))
		p = next
	}
	return n, nil
}

// pair reads the header pair at p in hdr: a 1-byte key length, the key, a 1-byte value length, the value.
func pair(hdr []byte, p int) (key, value []byte, next int, ok bool) {
	k := p + 1 + int(hdr[p])
	if k >= len(hdr) || k+1+int(hdr[k]) > len(hdr) {
		return nil, nil, 0, false
	}
	next = k + 1 + int(hdr[k])
	return hdr[p+1 : k], hdr[k+1 : next], next, true
}

func appendPair(dst []byte, key, value string) []byte {
	return append(append(append(append(dst, byte(len(key))), key...), byte(len(value))), value...)
}

// SetID rewrites the 4-byte id in place; ids always fit.
func (c *Codec) SetID(msg *codec.Message, id uint64) {
	binary.BigEndian.PutUint32(msg.Frame[8:12], uint32(id))
	msg.ID = id
}

// Encode rewrites the header section: untouched pairs keep their bytes and places, then each set key follows
// with the last value given, unless it is also removed. The body is copied as it is.
func (c *Codec) Encode(dst []byte, msg *codec.Message, mut *codec.Mutation) ([]byte, error) {
	frame, start, body := msg.Frame, len(dst), msg.Private[privBody]
	if mut.Empty() {
		dst = append(dst, frame...)
		msg.Frame = dst[start:]
		return dst, nil
	}
	final := map[string]*string{} // the keys the mutation touches: the value after it, nil when removed
	for _, kv := range mut.Set {
		if kv.Key == "" || len(kv.Key) > math.MaxUint8 || len(kv.Value) > math.MaxUint8 {
			return dst, fmt.Errorf("kvrpc: cannot write header %q of %d bytes", kv.Key, len(kv.Value))
		}
		final[kv.Key] = &kv.Value
	}
	for _, k := range mut.Remove {
		final[k] = nil
	}
	out := append(dst, frame[:headerLen]...)
	for p := headerLen; p < body; {
		k, _, next, _ := pair(frame[:body], p)
		if _, touched := final[string(k)]; !touched {
			out = append(out, frame[p:next]...)
		}
		p = next
	}
	for _, kv := range mut.Set {
		if val := final[kv.Key]; val != nil {
			out = appendPair(out, kv.Key, *val)
			delete(final, kv.Key) // written once, with the last value
		}
	}
	section := len(out) - start - headerLen
	if out = append(out, frame[body:]...); section > math.MaxUint16 || len(out)-start > maxFrame {
		return dst, fmt.Errorf("kvrpc: the edited frame is too large (%d bytes of headers)", section)
	}
	binary.BigEndian.PutUint32(out[start+4:], uint32(len(out)-start-8))
	binary.BigEndian.PutUint16(out[start+14:], uint16(section))
	msg.Reset() // decoding the new frame points msg.Frame, Private and the metadata at it
	if _, err := c.Decode(out[start:], msg); err != nil {
		return dst, fmt.Errorf("kvrpc: encode: %w", err)
	}
	return out, nil
}

// HeartbeatReply answers a heartbeat with the same id.
func (c *Codec) HeartbeatReply(dst []byte, req *codec.Message) []byte {
	return appendFrame(dst, wireHeartbeatReply, 0, req.ID, "", "")
}

// ErrorReply writes a failed response (a status, the kind as "error" header, the detail as body) from req's
// type and id alone: req.Frame is gone by the time an upstream fails.
func (c *Codec) ErrorReply(dst []byte, req *codec.Message, kind codec.ErrorKind, detail string) ([]byte, int32) {
	if req.Type != codec.Request {
		return dst, 0
	}
	detail = strings.ToValidUTF8(detail[:min(len(detail), maxDetail)], "") // drops a character cut in two
	status := statuses[kind]
	return appendFrame(dst, wireResponse, status, req.ID, kind.String(), detail), int32(status)
}

// statuses are the kvrpc statuses of the proxy's own replies (see the README).
var statuses = [...]byte{codec.BadRequest: 1, codec.RouteNotFound: 4, codec.ClusterNotFound: 4,
	codec.NoHealthyUpstream: 5, codec.BadResponse: 5, codec.Unspecified: 5, codec.Timeout: 6, codec.OverLimit: 7,
	codec.Unauthorized: 8}

func appendFrame(dst []byte, typ, status byte, id uint64, errKind, body string) []byte {
	start := len(dst)
	dst = binary.BigEndian.AppendUint32(append(dst, magic...), 0) // length, set below
	dst = append(binary.BigEndian.AppendUint32(dst, uint32(id)), typ, status, 0, 0)
	if errKind != "" {
		dst = appendPair(dst, "error", errKind)
	}
	binary.BigEndian.PutUint16(dst[start+14:], uint16(len(dst)-start-headerLen))
	dst = append(dst, body...)
	binary.BigEndian.PutUint32(dst[start+4:], uint32(len(dst)-start-8))
	return dst
}
