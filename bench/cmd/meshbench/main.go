// Command meshbench measures what a proxy adds to a request of a mesh RPC protocol (Dubbo, Thrift, bRPC): it
// runs a near-free echo server, the floor forwarder, the Meltemi proxy and a load generator, and compares
// client → server (T0), client → floor → server (F) and client → proxy → server (T1) side by side in one
// session.
//
// Usage:
//
//	meshbench echo  [-protocol P] -listen ADDR
//	meshbench floor [-protocol P] -listen ADDR -upstream ADDR
//	meshbench proxy [-protocol P] -listen ADDR -upstream ADDR [-admin ADDR]
//	meshbench load  [-protocol P] -target ADDR -conns N -inflight M -size BYTES -duration D [-rate R]
//	meshbench run   [-protocol P] [-sizes 1024] [-loads 1x1,4x16,16x64] [-duration 5s] [-json FILE]
//
// P is dubbo (the default), thrift or brpc.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/meltemi-mesh/meltemi/bench/meshload"
)

var commands = map[string]func(args []string) error{
	"echo":  runEcho,
	"floor": runFloor,
	"proxy": runProxy,
	"load":  runLoad,
	"run":   runAll,
}

const usage = `usage: meshbench COMMAND [flags]

commands:
  echo   serve a near-free echo server
  floor  forward whole frames to an upstream, nothing else
  proxy  run the Meltemi proxy with one listener routing everything to an upstream
  load   apply an echo load to a target and print its latency and rate
  run    start echo, floor and proxy, and compare T0, F and T1 under each load

Every command takes -protocol dubbo|thrift|brpc (default dubbo).
"meshbench COMMAND -h" lists a command's flags.
`

func main() {
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	name := os.Args[1]
	if err := commands[name](os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "meshbench %s: %v\n", name, err)
		os.Exit(1)
	}
}

// protocolFlag is the -protocol flag every command takes.
type protocolFlag struct{ meshload.Protocol }

func (p *protocolFlag) String() string {
	if p.Protocol == nil {
		return ""
	}
	return p.Name()
}

func (p *protocolFlag) Set(name string) error {
	proto, err := meshload.ProtocolByName(name)
	if err != nil {
		return err
	}
	p.Protocol = proto
	return nil
}

// addProtocolFlag adds -protocol to fs, set to Dubbo until given.
func addProtocolFlag(fs *flag.FlagSet) *protocolFlag {
	p := &protocolFlag{meshload.Dubbo{}}
	fs.Var(p, "protocol", "the `protocol`: dubbo, thrift or brpc")
	return p
}
