package main

import (
	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
	"github.com/meltemi-mesh/meltemi/proxy/filters/localratelimit"
)

// builtinCodecs is the one list of the codecs this binary offers. A binary with a private codec passes one
// more here; nothing registers itself from init.
func builtinCodecs() (*codec.Registry, error) {
	return codec.NewRegistry(
		dubbo.Registration(),
	)
}

// builtinFilters is the one list of the request filters this binary offers, in the same spirit as
// builtinCodecs.
func builtinFilters() (*filter.Registry, error) {
	return filter.NewRegistry(
		localratelimit.Registration(),
	)
}
