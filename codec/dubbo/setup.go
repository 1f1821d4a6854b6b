package dubbo

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/meltemi-mesh/meltemi/codec"
)

// Name is the codec's name in config, as Aeraki spells it.
const Name = "aeraki.meta_protocol.codec.dubbo"

// Protocol is the application protocol's short name.
const Protocol = "dubbo"

// DefaultMaxBodySize is Dubbo's own default payload limit (the "payload" URL parameter): 8 MiB.
const DefaultMaxBodySize = 8 << 20

// Config is the codec's JSON config.
type Config struct {
	// MaxBodySize is the largest frame body accepted, in bytes; a larger frame closes the connection (after an
	// error reply when it is a two-way request). Default 8388608, Dubbo's default payload limit.
	MaxBodySize int64 `json:"maxBodySize"`
}

// Registration returns the Dubbo codec's registration.
func Registration() codec.Registration {
	return codec.Registration{Name: Name, Protocol: Protocol, New: newFactory}
}

func newFactory(config json.RawMessage) (codec.Factory, error) {
	cfg := Config{MaxBodySize: DefaultMaxBodySize}
	if err := codec.DecodeConfig(config, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	if cfg.MaxBodySize <= 0 || cfg.MaxBodySize > math.MaxInt32 {
		return nil, fmt.Errorf("%s: config field maxBodySize must be between 1 and %d (Dubbo's body length is an int32), got %d",
			Name, math.MaxInt32, cfg.MaxBodySize)
	}
	return &Factory{cfg: cfg}, nil
}

// Factory makes the Dubbo codecs of one configuration.
type Factory struct {
	cfg Config
}

// NewCodec returns a codec for a new connection. Dubbo marks requests and replies in every frame, so both
// sides decode alike.
func (f *Factory) NewCodec(codec.Side) codec.Codec { return &Codec{maxBody: int(f.cfg.MaxBodySize)} }

// Properties says that Dubbo replies carry their request's id, so upstream connections are multiplexed.
func (f *Factory) Properties() codec.Properties { return codec.Properties{Multiplexing: true} }

// Sniff recognises the 0xdabb magic that starts every Dubbo frame.
func (f *Factory) Sniff(data []byte) codec.SniffResult {
	switch {
	case len(data) > 0 && data[0] != magicHigh, len(data) > 1 && data[1] != magicLow:
		return codec.NotMine
	case len(data) < 2:
		return codec.NeedMore
	}
	return codec.Mine
}

var (
	_ codec.Factory = (*Factory)(nil)
	_ codec.Sniffer = (*Factory)(nil)
)
