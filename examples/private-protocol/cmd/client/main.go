// Command client calls a kvrpc server (or the mesh in front of it) and prints which version answered.
//
//	client -addr 127.77.0.1:7700 -method Echo -n 20 -H env=canary hello
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/meltemi-mesh/meltemi/examples/private-protocol/kvrpc"
)

// headerFlags collects repeated -H key=value flags.
type headerFlags map[string]string

func (h headerFlags) String() string { return fmt.Sprint(map[string]string(h)) }

func (h headerFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("header %q is not key=value", s)
	}
	h[k] = v
	return nil
}

func main() {
	addr := flag.String("addr", "127.77.0.1:7700", "address to call: the service's address in the mesh")
	method := flag.String("method", "Greet", "method to call")
	n := flag.Int("n", 1, "number of calls")
	headers := headerFlags{}
	flag.Var(headers, "H", "header key=value to send (repeatable)")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := kvrpc.Dial(ctx, *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	failed := false
	for i := range *n {
		r, err := c.Call(ctx, *method, headers, []byte(strings.Join(flag.Args(), " ")))
		if err != nil {
			fmt.Printf("%d: %v\n", i, err)
			failed = true
			continue
		}
		fmt.Printf("%d: %s: %s\n", i, r.Headers["version"], r.Body)
	}
	if failed {
		os.Exit(1)
	}
}
