// Command consumer calls GreetService.sayHello a few times and prints each answer. Pointed at the mesh's
// address for the service, it shows which version the routes chose for each call:
//
//	go run ./consumer -target 127.10.0.1:20880 -n 10
//
// Pointed at a provider's own address (127.10.0.11:20880) it bypasses the mesh.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/meltemi-mesh/meltemi/examples/dubbo/greet"
)

func main() {
	target := flag.String("target", "127.10.0.1:20880", "host:port to call: the service's address in the mesh, or a provider")
	n := flag.Int("n", 10, "number of calls")
	name := flag.String("name", "meltemi", "argument of sayHello")
	flag.Parse()

	c, err := greet.Dial(*target)
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
	failed := 0
	for i := 1; i <= *n; i++ {
		answer, err := c.SayHello(context.Background(), *name)
		if err != nil {
			failed++
			fmt.Printf("%3d  error: %v\n", i, err)
			continue
		}
		fmt.Printf("%3d  %s\n", i, answer)
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "consumer: %d of %d calls failed\n", failed, *n)
		os.Exit(1)
	}
	// Returning ends the process, which closes dubbo-go's connections: its client API cannot close them.
}
