// Command demo is what `make demo` runs: a Dubbo service with two versions behind `meltemi mesh`, real
// dubbo-go traffic through it, and a canary release made by editing one manifest while that traffic flows.
//
//	go run ./demo -meltemi ../../bin/meltemi
//
// It starts the two sample providers (this same program, in a provider role), `meltemi mesh` on a copy of
// manifests/, and dubbo-go callers of the service's address, and prints every second which versions answered.
// After a few seconds it rewrites the copied MetaRouter from "all to v1" to "20% v1, 80% v2", and the split
// follows within a second, with no call lost. Whatever it started stops when it ends, fails or is interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/meltemi-mesh/meltemi/examples/dubbo/greet"
)

// As in manifests/serviceentry.yaml: the service's host and address (consumers dial it and the mesh listens
// on it), and its two endpoints, where the providers listen.
const (
	serviceHost = "org.apache.dubbo.samples.greetservice"
	serviceAddr = "127.10.0.1:20880"
)

var providers = []struct{ version, addr string }{
	{"v1", "127.10.0.11:20880"},
	{"v2", "127.10.0.12:20880"},
}

// providerRole, as the first argument, makes this program a provider: the demo runs its providers as copies
// of itself, since dubbo-go keeps one handler per interface in a process.
const providerRole = "provider"

type config struct {
	meltemi   string
	manifests string
	before    time.Duration
	after     time.Duration
	callers   int
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == providerRole {
		os.Exit(runProvider(os.Args[2:]))
	}
	var cfg config
	flag.StringVar(&cfg.meltemi, "meltemi", "meltemi", "path of the meltemi binary (make build puts it in bin/ at the repository root)")
	flag.StringVar(&cfg.manifests, "manifests", "manifests", "folder of the example's manifests")
	flag.DurationVar(&cfg.before, "before", 5*time.Second, "how long traffic runs before the route change")
	flag.DurationVar(&cfg.after, "after", 8*time.Second, "how long traffic runs after the route change")
	flag.IntVar(&cfg.callers, "callers", 4, "concurrent callers")
	flag.Parse()
	if cfg.callers < 1 || cfg.before < time.Second || cfg.after < time.Second {
		fmt.Fprintln(os.Stderr, "demo: -callers must be at least 1, -before and -after at least 1s")
		os.Exit(2)
	}

	// Ctrl-C ends the traffic early; the summary is printed and everything started is stopped all the same.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg)
	stop()
	switch {
	case err == nil:
		fmt.Println("\nThe mesh and both providers are stopped.")
	case errors.Is(err, errInterrupted):
		fmt.Println("\nInterrupted: the mesh and both providers are stopped.")
		os.Exit(130)
	default:
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

var errInterrupted = errors.New("interrupted")

// run is the whole demo. Each thing it starts is stopped by a deferred call, in reverse order: callers, mesh,
// providers.
func run(ctx context.Context, cfg config) error {
	meltemi, err := exec.LookPath(cfg.meltemi)
	if err != nil {
		return fmt.Errorf("the meltemi binary: %w (build it with `make build` and pass -meltemi PATH)", err)
	}
	for _, addr := range []string{serviceAddr, providers[0].addr, providers[1].addr} {
		if accepting(addr) {
			return fmt.Errorf("something already listens on %s (a mesh or provider started by hand?): "+
				"stop it and run the demo again", addr)
		}
	}
	dir, err := os.MkdirTemp("", "meltemi-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := copyManifests(cfg.manifests, dir); err != nil {
		return err
	}

	fmt.Println("Meltemi demo: a canary release of a Dubbo service, with traffic flowing")
	fmt.Println()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for _, p := range providers {
		c, err := startChild("provider "+p.version, self, providerRole, "-listen", p.addr, "-version", p.version)
		if err != nil {
			return err
		}
		defer c.stop(5 * time.Second)
		if err := waitFor(ctx, c, "provider "+p.version+" to accept on "+p.addr, func() bool {
			return accepting(p.addr)
		}); err != nil {
			return err
		}
		fmt.Printf("  provider %s   %-19s dubbo-go; sayHello answers %q\n", p.version, p.addr,
			p.version+": hello NAME")
	}

	mesh, cmdline, err := startMesh(ctx, meltemi, dir)
	if err != nil {
		return err
	}
	defer mesh.stop(10 * time.Second)
	fmt.Printf("  mesh          %s\n", cmdline)
	fmt.Printf("  service       %s, listening on %s\n", serviceHost, serviceAddr)
	fmt.Printf("  route         all calls to v1 (%s)\n", routerFile)

	client, err := greet.Dial(serviceAddr)
	if err != nil {
		return err
	}
	fmt.Printf("  consumer      %d dubbo-go callers of %s\n\n", cfg.callers, serviceAddr)

	err = drive(ctx, client, cfg, dir)
	// The callers are done: close their connections before the mesh goes, so that dubbo-go does not try
	// to reconnect (and complain) while the demo shuts down.
	greet.CloseConnections()
	return err
}

// runProvider is the provider role: serve until the demo closes stdin (or dies, which closes it too).
func runProvider(args []string) int {
	fs := flag.NewFlagSet(providerRole, flag.ExitOnError)
	listen := fs.String("listen", "", "host:port to serve on")
	version := fs.String("version", "", "version label")
	_ = fs.Parse(args)
	if err := greet.Serve(*listen, *version); err != nil {
		fmt.Fprintln(os.Stderr, "provider:", err)
		return 1
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}
