package meltemicmd

import (
	"slices"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/brpc"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/codec/sniff"
	"github.com/meltemi-mesh/meltemi/codec/thrift"
	"github.com/meltemi-mesh/meltemi/codec/trpc"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
	"github.com/meltemi-mesh/meltemi/proxy/filters/localratelimit"
	"github.com/meltemi-mesh/meltemi/proxy/filters/ratelimit"
)

// Plugins are the codecs and request filters a binary offers. Nothing registers itself from init: a binary
// lists what it carries, and an ApplicationProtocol manifest names a codec by its registered name.
type Plugins struct {
	Codecs  []codec.Registration
	Filters []filter.Registration
}

// Builtins returns Meltemi's own codecs and filters: the one list of them.
func Builtins() Plugins {
	return Plugins{
		Codecs: []codec.Registration{
			dubbo.Registration(),
			thrift.Registration(),
			brpc.Registration(),
			trpc.Registration(),
		},
		Filters: []filter.Registration{
			localratelimit.Registration(),
			ratelimit.Registration(),
		},
	}
}

// codecs returns the binary's codecs, plus the sniffing codec over them (protocol "auto"), which serves all of
// them on one port and picks each connection's from its first bytes.
func (p Plugins) codecs() (*codec.Registry, error) {
	return codec.NewRegistry(append(slices.Clip(p.Codecs), sniff.Registration(p.Codecs...))...)
}
func (p Plugins) filters() (*filter.Registry, error) { return filter.NewRegistry(p.Filters...) }
