// Command dubbobench measures what a Dubbo proxy adds to a request: it runs a near-free echo server, the floor
// forwarder, the Meltemi proxy and a load generator, and compares client → server (T0), client → floor →
// server (F) and client → proxy → server (T1) side by side in one session.
//
// Usage:
//
//	dubbobench echo  -listen ADDR
//	dubbobench floor -listen ADDR -upstream ADDR
//	dubbobench proxy -listen ADDR -upstream ADDR [-admin ADDR]
//	dubbobench load  -target ADDR -conns N -inflight M -size BYTES -duration D [-rate R]
//	dubbobench run   [-sizes 1024] [-loads 1x1,4x16,16x64] [-duration 5s] [-json FILE]
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

var commands = map[string]func(args []string) error{
	"echo":  runEcho,
	"floor": runFloor,
	"proxy": runProxy,
	"load":  runLoad,
	"run":   runAll,
}

const usage = `usage: dubbobench COMMAND [flags]

commands:
  echo   serve a near-free Dubbo echo server
  floor  forward whole Dubbo frames to an upstream, nothing else
  proxy  run the Meltemi proxy with one Dubbo listener routing everything to an upstream
  load   apply a Dubbo echo load to a target and print its latency and rate
  run    start echo, floor and proxy, and compare T0, F and T1 under each load

"dubbobench COMMAND -h" lists a command's flags.
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
		fmt.Fprintf(os.Stderr, "dubbobench %s: %v\n", name, err)
		os.Exit(1)
	}
}
