// Command meltemi is the Meltemi service mesh for layer-7 protocols beyond HTTP, with the built-in codecs and
// filters.
package main

import meltemicmd "github.com/meltemi-mesh/meltemi/cmd"

func main() { meltemicmd.Main(meltemicmd.Builtins()) }
