// Command server is a kvrpc greeter: Greet answers "hello <body>" and Echo returns the body and the call's
// headers. Every reply carries the server's version in the "version" header, so a caller can see which
// server answered.
package main

import (
	"flag"
	"log"
	"net"

	"github.com/meltemi-mesh/meltemi/examples/private-protocol/kvrpc"
)

func main() {
	addr := flag.String("listen", "127.77.0.11:7700", "address to serve on")
	version := flag.String("version", "v1", "version this server reports")
	flag.Parse()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("kvrpc greeter %s serving on %s", *version, l.Addr())
	log.Fatal(kvrpc.NewGreeter(*version).Serve(l))
}
