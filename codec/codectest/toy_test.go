package codectest_test

// The toy protocol is the fixture the kit is tested on: small enough to read at a glance, complete enough to
// pass every check, and breakable one flaw at a time to show that the kit notices.
//
//	0-1    magic "TY"
//	2      message type (codec.MessageType)
//	3      status; a reply with a nonzero status failed
//	4-7    request id, uint32
//	8-11   length of what follows this 14-byte header, uint32
//	12-13  length of the metadata section, uint16
//	       metadata: one "key=value\n" per entry
//	       payload

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/meltemi-mesh/meltemi/codec"
)

const (
	toyHeaderLen  = 14
	toyMaxDetail  = 4096
	toyDefaultMax = 1 << 20
)

// flaw is a bug the toy codec can be built with, to check that the kit catches it.
type flaw uint

const (
	flawIncompleteLen     flaw = 1 << iota // ErrIncomplete with the header's length instead of the frame's
	flawSetIDClobbers                      // SetID also writes the id's low byte over the status
	flawReplyReadsFrame                    // ErrorReply takes the id from req.Frame
	flawMutationDropsKeys                  // Encode keeps only the keys the mutation sets
	flawDecodeAllocates                    // Decode copies its strings instead of interning them
	flawSniffShort                         // Sniff answers NotMine when it has too few bytes to tell
	flawHeartbeatID                        // HeartbeatReply carries the next id
	flawPastEnd                            // Decode returns a frame longer than the buffer
	flawOnewayReply                        // ErrorReply answers oneway requests too
	flawEncodeStaleFrame                   // Encode leaves msg.Frame on the old frame
	flawTrustsHeaderLen                    // Decode slices the metadata section without checking its length
	flawSetIDCopies                        // SetID always builds a new frame, even where the id fits
	flawSetIDMovesDirty                    // SetID builds a new frame but writes the id into the old one too
)

// toyFactory makes toy codecs; it sniffs too.
type toyFactory struct {
	flaws   flaw
	maxBody int
}

func (f *toyFactory) NewCodec(codec.Side) codec.Codec {
	return &toyCodec{flaws: f.flaws, maxBody: f.maxBody}
}

func (f *toyFactory) Properties() codec.Properties { return codec.Properties{Multiplexing: true} }

func (f *toyFactory) Sniff(data []byte) codec.SniffResult {
	short := codec.NeedMore
	if f.flaws&flawSniffShort != 0 {
		short = codec.NotMine
	}
	switch {
	case len(data) == 0:
		return short
	case data[0] != 'T':
		return codec.NotMine
	case len(data) == 1:
		return short
	case data[1] != 'Y':
		return codec.NotMine
	}
	return codec.Mine
}

// toyRegistration registers the toy codec with the given flaws.
func toyRegistration(flaws flaw) codec.Registration {
	return codec.Registration{Name: "codectest.toy", Protocol: "toy", New: func(config json.RawMessage) (codec.Factory, error) {
		cfg := struct {
			MaxBody int `json:"maxBody"`
		}{MaxBody: toyDefaultMax}
		if err := codec.DecodeConfig(config, &cfg); err != nil {
			return nil, fmt.Errorf("codectest.toy: %w", err)
		}
		if cfg.MaxBody <= 0 {
			return nil, fmt.Errorf("codectest.toy: maxBody must be positive, got %d", cfg.MaxBody)
		}
		return &toyFactory{flaws: flaws, maxBody: cfg.MaxBody}, nil
	}}
}

// toyCodec reads and writes toy frames.
type toyCodec struct {
	flaws   flaw
	maxBody int
	strs    codec.Interner
}

func (c *toyCodec) str(b []byte) string {
	if c.flaws&flawDecodeAllocates != 0 {
		return string(b)
	}
	return c.strs.String(b)
}

func (c *toyCodec) Decode(buf []byte, msg *codec.Message) (int, error) {
	if len(buf) > 0 && buf[0] != 'T' || len(buf) > 1 && buf[1] != 'Y' {
		return 0, codec.Errorf(false, "toy: bad magic")
	}
	if len(buf) < toyHeaderLen {
		return 0, codec.ErrIncomplete
	}
	typ, status := codec.MessageType(buf[2]), buf[3]
	id := binary.BigEndian.Uint32(buf[4:8])
	bodyLen := binary.BigEndian.Uint32(buf[8:12])
	metaLen := int(binary.BigEndian.Uint16(buf[12:14]))
	if typ > codec.HeartbeatResponse {
		return 0, codec.Errorf(false, "toy: bad message type %d", typ)
	}
	if int64(bodyLen) > int64(c.maxBody) {
		canReply := typ == codec.Request
		if canReply {
			msg.Type, msg.ID = typ, uint64(id)
		}
		return 0, codec.Errorf(canReply, "toy: body length %d exceeds %d", bodyLen, c.maxBody)
	}
	n := toyHeaderLen + int(bodyLen)
	if len(buf) < n {
		switch {
		case c.flaws&flawIncompleteLen != 0:
			return toyHeaderLen, codec.ErrIncomplete
		case c.flaws&flawPastEnd != 0:
			msg.Type, msg.ID, msg.Frame = typ, uint64(id), buf
			return n, nil
		}
		return n, codec.ErrIncomplete
	}
	if metaLen > int(bodyLen) && c.flaws&flawTrustsHeaderLen == 0 {
		return 0, codec.Errorf(false, "toy: metadata length %d exceeds body length %d", metaLen, bodyLen)
	}
	frame := buf[:n:n]
	msg.Type, msg.ID, msg.Status, msg.Frame = typ, uint64(id), int32(status), frame
	msg.Failed = typ == codec.Error || typ.IsReply() && status != 0
	meta := frame[toyHeaderLen : toyHeaderLen+metaLen]
	for len(meta) > 0 {
		line, rest, ok := bytes.Cut(meta, []byte{'\n'})
		if !ok {
			return 0, codec.Errorf(false, "toy: metadata entry %q has no newline", line)
		}
		k, v, ok := bytes.Cut(line, []byte{'='})
		if !ok || len(k) == 0 {
			return 0, codec.Errorf(false, "toy: metadata entry %q is not key=value", line)
		}
		key := c.str(k)
		if _, dup := msg.Metadata.Get(key); dup {
			return 0, codec.Errorf(false, "toy: metadata key %q twice", key)
		}
		msg.Metadata.Add(key, c.str(v))
		meta = rest
	}
	return n, nil
}

func (c *toyCodec) SetID(msg *codec.Message, id uint64) {
	if len(msg.Frame) >= toyHeaderLen {
		if c.flaws&flawSetIDMovesDirty != 0 {
			binary.BigEndian.PutUint32(msg.Frame[4:8], uint32(id))
		}
		if c.flaws&(flawSetIDCopies|flawSetIDMovesDirty) != 0 {
			msg.Frame = append([]byte(nil), msg.Frame...)
		}
		binary.BigEndian.PutUint32(msg.Frame[4:8], uint32(id))
		if c.flaws&flawSetIDClobbers != 0 {
			msg.Frame[3] = byte(id)
		}
	}
	msg.ID = id
}

func (c *toyCodec) Encode(dst []byte, msg *codec.Message, mut *codec.Mutation) ([]byte, error) {
	frame := msg.Frame
	if len(frame) < toyHeaderLen {
		return dst, errors.New("toy: encode: the message holds no frame")
	}
	if mut.Empty() {
		out := append(dst, frame...)
		msg.Frame = out[len(dst):]
		return out, nil
	}
	if msg.Type != codec.Request && msg.Type != codec.Oneway {
		return dst, fmt.Errorf("toy: encode: a %v carries no metadata to edit", msg.Type)
	}
	for _, kv := range mut.Set {
		if kv.Key == "" || strings.ContainsAny(kv.Key, "=\n") || strings.Contains(kv.Value, "\n") {
			return dst, fmt.Errorf("toy: encode: cannot write %q=%q", kv.Key, kv.Value)
		}
	}
	lastSet := func(key string) int {
		for i := len(mut.Set) - 1; i >= 0; i-- {
			if mut.Set[i].Key == key {
				return i
			}
		}
		return -1
	}
	removed := func(key string) bool {
		for _, r := range mut.Remove {
			if r == key {
				return true
			}
		}
		return false
	}
	metaLen := int(binary.BigEndian.Uint16(frame[12:14]))
	start := len(dst)
	out := append(dst, frame[:toyHeaderLen]...)
	written := make([]bool, len(mut.Set))
	for meta := frame[toyHeaderLen : toyHeaderLen+metaLen]; len(meta) > 0; {
		line, rest, _ := bytes.Cut(meta, []byte{'\n'})
		k, _, _ := bytes.Cut(line, []byte{'='})
		meta = rest
		switch i := lastSet(string(k)); {
		case removed(string(k)):
		case i >= 0:
			out = append(append(append(out, k...), '='), mut.Set[i].Value...)
			out = append(out, '\n')
			written[i] = true
		case c.flaws&flawMutationDropsKeys == 0:
			out = append(append(out, line...), '\n')
		}
	}
	for i, kv := range mut.Set {
		if written[i] || lastSet(kv.Key) != i || removed(kv.Key) {
			continue
		}
		out = append(append(append(out, kv.Key...), '='), kv.Value...)
		out = append(out, '\n')
	}
	newMetaLen := len(out) - start - toyHeaderLen
	out = append(out, frame[toyHeaderLen+metaLen:]...)
	binary.BigEndian.PutUint32(out[start+8:], uint32(len(out)-start-toyHeaderLen))
	binary.BigEndian.PutUint16(out[start+12:], uint16(newMetaLen))
	if c.flaws&flawEncodeStaleFrame != 0 {
		return out, nil
	}
	msg.Reset()
	if _, err := c.Decode(out[start:], msg); err != nil {
		return dst, fmt.Errorf("toy: encode: the new frame does not decode: %w", err)
	}
	return out, nil
}

func (c *toyCodec) HeartbeatReply(dst []byte, req *codec.Message) []byte {
	id := req.ID
	if c.flaws&flawHeartbeatID != 0 {
		id++
	}
	return appendToyFrame(dst, codec.HeartbeatResponse, 0, uint32(id), nil, "")
}

func (c *toyCodec) ErrorReply(dst []byte, req *codec.Message, kind codec.ErrorKind, detail string) ([]byte, int32) {
	if req.Type != codec.Request && !(req.Type == codec.Oneway && c.flaws&flawOnewayReply != 0) {
		return dst, 0
	}
	id := uint32(req.ID)
	if c.flaws&flawReplyReadsFrame != 0 {
		id = binary.BigEndian.Uint32(req.Frame[4:8])
	}
	if len(detail) > toyMaxDetail {
		detail = detail[:toyMaxDetail]
	}
	status := 100 + byte(kind)
	return appendToyFrame(dst, codec.Error, status, id, [][2]string{{"error", kind.String()}}, detail), int32(status)
}

// appendToyFrame appends a toy frame; the tests build their samples with it too, from the layout above.
func appendToyFrame(dst []byte, typ codec.MessageType, status byte, id uint32, meta [][2]string, payload string) []byte {
	var m []byte
	for _, kv := range meta {
		m = append(m, kv[0]+"="+kv[1]+"\n"...)
	}
	dst = append(dst, 'T', 'Y', byte(typ), status)
	dst = binary.BigEndian.AppendUint32(dst, id)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(m)+len(payload)))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(m)))
	dst = append(dst, m...)
	return append(dst, payload...)
}

var (
	_ codec.Factory = (*toyFactory)(nil)
	_ codec.Sniffer = (*toyFactory)(nil)
	_ codec.Codec   = (*toyCodec)(nil)
)
