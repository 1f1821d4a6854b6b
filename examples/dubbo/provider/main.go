// Command provider runs one sample GreetService provider: a dubbo-go server of the classic dubbo protocol
// whose SayHello answers with the provider's version label, so that a caller sees which version served it.
//
//	go run ./provider -listen 127.10.0.11:20880 -version v1
//	go run ./provider -listen 127.10.0.12:20880 -version v2
//
// The addresses are the endpoints listed in manifests/serviceentry.yaml. It serves until Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/meltemi-mesh/meltemi/examples/dubbo/greet"
)

func main() {
	listen := flag.String("listen", "127.10.0.11:20880", "host:port to serve on")
	version := flag.String("version", "v1", "version label put in every answer")
	flag.Parse()

	if err := greet.Serve(*listen, *version); err != nil {
		fmt.Fprintln(os.Stderr, "provider:", err)
		os.Exit(1)
	}
	fmt.Printf("provider %s: serving %s on %s (Ctrl-C stops it)\n", *version, greet.Interface, *listen)

	// The server runs on dubbo-go's goroutines; the process lives until it is told to stop.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
}
