package trpc

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/meltemi-mesh/meltemi/codec"
)

// Name is the codec's name in config, as Aeraki spells it.
const Name = "aeraki.meta_protocol.codec.trpc"

// Protocol is the application protocol's short name.
const Protocol = "trpc"

// DefaultMaxFrameSize is tRPC-Go's own frame limit (trpc.DefaultMaxFrameSize): 10 MiB, fixed header,
// protocol header, body and attachment together.
const DefaultMaxFrameSize = 10 << 20

// Config is the codec's JSON config.
type Config struct {
	// MaxFrameSize is the largest frame accepted, in bytes, as the fixed header's total size counts it; a
	// larger frame closes the connection (after an error reply when it is a two-way request). Default
	// 10485760, tRPC-Go's default.
	MaxFrameSize int64 `json:"maxFrameSize"`
}

// Registration returns the tRPC codec's registration.
func Registration() codec.Registration {
	return codec.Registration{Name: Name, Protocol: Protocol, New: newFactory}
}

func newFactory(config json.RawMessage) (codec.Factory, error) {
	cfg := Config{MaxFrameSize: DefaultMaxFrameSize}
	if err := codec.DecodeConfig(config, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	// The total size is a uint32 on the wire; the bound stays at MaxInt32 so a frame length is an int
	// everywhere.
	if cfg.MaxFrameSize < headerLen || cfg.MaxFrameSize > math.MaxInt32 {
		return nil, fmt.Errorf("%s: config field maxFrameSize must be between %d (the fixed header) and %d, got %d",
			Name, headerLen, math.MaxInt32, cfg.MaxFrameSize)
	}
	return &Factory{cfg: cfg}, nil
}

// Factory makes the tRPC codecs of one configuration.
type Factory struct {
	cfg Config
}

// NewCodec returns a codec for a connection on the given side: a unary frame is a request on a client's
// connection and a response on a server's, which settles the headers that could be either.
func (f *Factory) NewCodec(side codec.Side) codec.Codec {
	c := &Codec{maxFrame: int(f.cfg.MaxFrameSize), side: sideDownstream}
	if side == codec.Upstream {
		c.side = sideUpstream
	}
	return c
}

// Properties says that tRPC replies carry their request's id, so upstream connections are multiplexed.
func (f *Factory) Properties() codec.Properties { return codec.Properties{Multiplexing: true} }

// Sniff recognises tRPC from its magic, 0x0930, and a known data frame type.
func (f *Factory) Sniff(data []byte) codec.SniffResult {
	for i, want := range [...]byte{magicHigh, magicLow} {
		if len(data) <= i {
			return codec.NeedMore
		}
		if data[i] != want {
			return codec.NotMine
		}
	}
	if len(data) < 3 {
		return codec.NeedMore
	}
	if data[2] != frameUnary && data[2] != frameStream {
		return codec.NotMine
	}
	return codec.Mine
}

var (
	_ codec.Factory = (*Factory)(nil)
	_ codec.Sniffer = (*Factory)(nil)
)
