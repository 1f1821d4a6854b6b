package thrift

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/meltemi-mesh/meltemi/codec"
)

// Name is the codec's name in config, as Aeraki spells it.
const Name = "aeraki.meta_protocol.codec.thrift"

// Protocol is the application protocol's short name.
const Protocol = "thrift"

// DefaultMaxFrameSize is Thrift's own default frame limit (TFramedTransport's DEFAULT_MAX_LENGTH).
const DefaultMaxFrameSize = 16384000

// sniffLen is the most bytes Sniff may ask for before it answers.
const sniffLen = 16

// maxFrameLimit is the largest LENGTH THeader allows, and so the largest limit the codec accepts.
const maxFrameLimit = 0x3fffffff

// Config is the codec's JSON config.
type Config struct {
	// MaxFrameSize is the largest message accepted, in bytes: a frame's LENGTH, or an unframed message's whole
	// size. A larger message closes the connection (after an error reply when it is a call whose header could
	// be read). Default 16384000, Thrift's framed-transport default.
	MaxFrameSize int64 `json:"maxFrameSize"`
}

// Registration returns the Thrift codec's registration.
func Registration() codec.Registration {
	return codec.Registration{Name: Name, Protocol: Protocol, New: newFactory}
}

func newFactory(config json.RawMessage) (codec.Factory, error) {
	cfg := Config{MaxFrameSize: DefaultMaxFrameSize}
	if err := codec.DecodeConfig(config, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	if cfg.MaxFrameSize < 16 || cfg.MaxFrameSize > maxFrameLimit {
		return nil, fmt.Errorf("%s: config field maxFrameSize must be between 16 and %d (THeader's largest LENGTH), got %d",
			Name, maxFrameLimit, cfg.MaxFrameSize)
	}
	return &Factory{cfg: cfg}, nil
}

// Factory makes the Thrift codecs of one configuration.
type Factory struct {
	cfg Config
}

// NewCodec returns a codec for a new connection. Thrift marks calls and replies in every message, so both
// sides decode alike.
func (f *Factory) NewCodec(codec.Side) codec.Codec { return &Codec{maxFrame: int(f.cfg.MaxFrameSize)} }

// Properties says that Thrift replies carry their request's seqid, so upstream connections are multiplexed.
func (f *Factory) Properties() codec.Properties { return codec.Properties{Multiplexing: true} }

// Sniff recognises a Thrift client from its first bytes: a framed or unframed binary (strict or old form) or
// compact message, or a THeader or TTHeader frame. The old binary form starts with a bare name length, like
// many protocols, so it is only taken when the name is a short identifier followed by a message type.
func (f *Factory) Sniff(data []byte) codec.SniffResult {
	if len(data) == 0 {
		return codec.NeedMore
	}
	if data[0] == 0x80 || data[0] == compactID {
		return sniffMessage(data)
	}
	if data[0] > maxFrameLimit>>24 {
		return codec.NotMine
	}
	if len(data) < 4 {
		return codec.NeedMore
	}
	if binary.BigEndian.Uint32(data) > uint32(f.cfg.MaxFrameSize) {
		// Too long for a frame of this configuration, and for an old-form name.
		return codec.NotMine
	}
	if len(data) < 5 {
		return codec.NeedMore
	}
	switch b4 := data[4]; {
	case b4 == 0x80 || b4 == compactID:
		if binary.BigEndian.Uint32(data) < 4 {
			return codec.NotMine
		}
		return sniffMessage(data[4:])
	case b4 == magicTHeader>>8 || b4 == magicTTHeader>>8:
		if len(data) < 6 {
			return codec.NeedMore
		}
		if m := binary.BigEndian.Uint16(data[4:]); (m == magicTHeader || m == magicTTHeader) &&
			binary.BigEndian.Uint32(data) >= headerFixedLen-4 {
			return codec.Mine
		}
		return codec.NotMine
	case b4 == 0:
		if binary.BigEndian.Uint32(data) < 9 {
			return codec.NotMine
		}
		return sniffOldBinary(data, 4)
	}
	return sniffOldBinary(data, 0)
}

// sniffOldBinary checks an old-form binary message at data[off:]: a name length of 1 to 255, a name made of
// identifier characters as far as the first sniffLen bytes go, then a known message type.
func sniffOldBinary(data []byte, off int) codec.SniffResult {
	if len(data) < off+5 {
		return codec.NeedMore
	}
	n := binary.BigEndian.Uint32(data[off:])
	if n == 0 || n > 255 {
		return codec.NotMine
	}
	end := off + 4 + int(n)
	for i := off + 4; i < end; i++ {
		if i == len(data) {
			if i >= sniffLen {
				return codec.Mine // the name goes on beyond what a sniff may ask for
			}
			return codec.NeedMore
		}
		if c := data[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':') {
			return codec.NotMine
		}
	}
	if end == len(data) {
		return codec.NeedMore
	}
	if typ := data[end]; typ >= typeCall && typ <= typeOneway {
		return codec.Mine
	}
	return codec.NotMine
}

// sniffMessage checks the start of a strict binary or compact message: version and a known message type.
func sniffMessage(data []byte) codec.SniffResult {
	if data[0] == compactID {
		if len(data) < 2 {
			return codec.NeedMore
		}
		if typ := data[1] >> 5; data[1]&compactVersionMk == compactVersion && typ >= typeCall && typ <= typeOneway {
			return codec.Mine
		}
		return codec.NotMine
	}
	want := [...]byte{0x80, 0x01, 0x00}
	for i := 1; i < 4; i++ {
		if len(data) <= i {
			return codec.NeedMore
		}
		if i < 3 && data[i] != want[i] {
			return codec.NotMine
		}
	}
	if typ := data[3]; typ >= typeCall && typ <= typeOneway {
		return codec.Mine
	}
	return codec.NotMine
}

var (
	_ codec.Factory = (*Factory)(nil)
	_ codec.Sniffer = (*Factory)(nil)
)
