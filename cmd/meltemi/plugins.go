package main

import (
	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
)

// builtinCodecs is the one list of the codecs this binary offers. A binary with a private codec passes one
// more here; nothing registers itself from init.
func builtinCodecs() (*codec.Registry, error) {
	return codec.NewRegistry(
		dubbo.Registration(),
	)
}
