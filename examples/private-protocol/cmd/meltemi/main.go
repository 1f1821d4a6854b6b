// Command meltemi is Meltemi with one more codec: the built-in codecs and filters, plus kvrpc's.
package main

import (
	meltemicmd "github.com/meltemi-mesh/meltemi/cmd"
	"github.com/meltemi-mesh/meltemi/examples/private-protocol/kvcodec"
)

func main() {
	plugins := meltemicmd.Builtins()
	plugins.Codecs = append(plugins.Codecs, kvcodec.Registration())
	meltemicmd.Main(plugins)
}
