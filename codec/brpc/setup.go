package brpc

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/meltemi-mesh/meltemi/codec"
)

// Name is the codec's name in config, as Aeraki spells it.
const Name = "aeraki.meta_protocol.codec.brpc"

// Protocol is the application protocol's short name.
const Protocol = "brpc"

// DefaultMaxBodySize is brpc's own default limit on a message body (the max_body_size flag): 64 MiB.
const DefaultMaxBodySize = 64 << 20

// Config is the codec's JSON config.
type Config struct {
	// MaxBodySize is the largest frame body (everything after the 12-byte header) accepted, in bytes; a larger
	// frame closes the connection, after an error reply when it is a request whose meta could be read.
	// Default 67108864, brpc's max_body_size.
	MaxBodySize int64 `json:"maxBodySize"`
}

// Registration returns the bRPC codec's registration.
func Registration() codec.Registration {
	return codec.Registration{Name: Name, Protocol: Protocol, New: newFactory}
}

func newFactory(config json.RawMessage) (codec.Factory, error) {
	cfg := Config{MaxBodySize: DefaultMaxBodySize}
	if err := codec.DecodeConfig(config, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	// The header's body_size is a uint32, but a frame must also survive SetID and Encode growing it a little,
	// and a 2 GiB RPC is far past anything brpc sends.
	if cfg.MaxBodySize <= 0 || cfg.MaxBodySize > math.MaxInt32 {
		return nil, fmt.Errorf("%s: config field maxBodySize must be between 1 and %d, got %d",
			Name, math.MaxInt32, cfg.MaxBodySize)
	}
	return &Factory{cfg: cfg}, nil
}

// Factory makes the bRPC codecs of one configuration.
type Factory struct {
	cfg Config
}

// NewCodec returns a codec for a connection on the given side. The side matters only for frames that carry
// both a request and an empty response meta, as every baidu-golang/pbrpc frame does: they are requests on a
// client's connection and responses on a server's.
func (f *Factory) NewCodec(side codec.Side) codec.Codec { return f.newCodec(side == codec.Upstream) }

func (f *Factory) newCodec(upstream bool) *Codec {
	return &Codec{maxBody: uint32(f.cfg.MaxBodySize), upstream: upstream}
}

// Properties says that bRPC replies carry their request's correlation_id, so upstream connections are
// multiplexed.
func (f *Factory) Properties() codec.Properties { return codec.Properties{Multiplexing: true} }

// Sniff recognises the "PRPC" magic that starts every baidu_std frame.
func (f *Factory) Sniff(data []byte) codec.SniffResult {
	for i := 0; i < len(magic); i++ {
		if i == len(data) {
			return codec.NeedMore
		}
		if data[i] != magic[i] {
			return codec.NotMine
		}
	}
	return codec.Mine
}

var (
	_ codec.Factory = (*Factory)(nil)
	_ codec.Sniffer = (*Factory)(nil)
)
