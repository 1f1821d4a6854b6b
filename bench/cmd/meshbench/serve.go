package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meltemi-mesh/meltemi/bench/meshload"
	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/brpc"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/codec/thrift"
	"github.com/meltemi-mesh/meltemi/proxy"
)

// The control protocol between run and the servers it starts, one line each way over stdin and stdout:
// the server prints "ready ADDR" once it accepts on ADDR; it answers "usage" with "usage USER_NS SYS_NS",
// its own CPU time from getrusage; it exits when its stdin closes, so that it never outlives run.
const controlUsage = "run under the benchmark orchestrator: report readiness and CPU time over stdin and stdout"

// serverContext is done on SIGINT or SIGTERM.
func serverContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// announce tells whoever started the server that it accepts on addr, and with control starts answering the
// orchestrator's requests; cancel is called when the orchestrator goes away.
func announce(addr net.Addr, control bool, cancel context.CancelFunc) {
	if !control {
		fmt.Fprintf(os.Stderr, "listening on %s\n", addr)
		return
	}
	fmt.Printf("ready %s\n", addr)
	go func() {
		defer cancel()
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			if in.Text() != "usage" {
				fmt.Printf("error unknown request %q\n", in.Text())
				continue
			}
			user, sys, err := cpuTime()
			if err != nil {
				fmt.Printf("error %v\n", err)
				continue
			}
			fmt.Printf("usage %d %d\n", user.Nanoseconds(), sys.Nanoseconds())
		}
	}()
}

// serveWith runs serve on a listener bound to listen until a signal or the orchestrator stops it.
func serveWith(listen string, control bool, serve func(context.Context, net.Listener) error) error {
	ctx, cancel := serverContext()
	defer cancel()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, ln) }()
	announce(ln.Addr(), control, cancel)
	return <-errc
}

func runEcho(args []string) error {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	proto := addProtocolFlag(fs)
	listen := fs.String("listen", "127.0.0.1:20880", "`address` to serve on")
	control := fs.Bool("control", false, controlUsage)
	if err := fs.Parse(args); err != nil {
		return err
	}
	return serveWith(*listen, *control, meshload.Echo{Protocol: proto.Protocol}.Serve)
}

func runFloor(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	proto := addProtocolFlag(fs)
	listen := fs.String("listen", "127.0.0.1:20881", "`address` to serve on")
	upstream := fs.String("upstream", "127.0.0.1:20880", "`address` of the server")
	control := fs.Bool("control", false, controlUsage)
	if err := fs.Parse(args); err != nil {
		return err
	}
	return serveWith(*listen, *control, meshload.Floor{Protocol: proto.Protocol, Upstream: *upstream}.Serve)
}

// codecs are the Meltemi codecs of the protocols the kit speaks, by protocol name.
var codecs = map[string]codec.Registration{
	"dubbo":  dubbo.Registration(),
	"thrift": thrift.Registration(),
	"brpc":   brpc.Registration(),
}

// listenerName is the name of the proxy's one listener.
const listenerName = "bench"

// proxyConfig is a one-listener config: the protocol's codec with its defaults, every request to the one
// endpoint, with the policy a controller gives every route that asks for none (Envoy's 15 s timeout,
// Istio's two retries of connect failures), so that the proxy measured pays what a configured one pays.
func proxyConfig(reg codec.Registration, listen, upstream string, upstreamConns int) *proxy.Config {
	const cluster = "outbound|20880||echo.bench.svc.cluster.local"
	return &proxy.Config{
		Version: "bench",
		Node:    proxy.Node{ID: "meshbench", Workload: "meshbench", Namespace: "bench"},
		Listeners: []proxy.Listener{{
			Name:    listenerName,
			Address: listen,
			Codec:   proxy.CodecConfig{Name: reg.Name},
			Routes: proxy.RouteConfig{Name: "bench", Routes: []proxy.Route{
				{Name: "everything", Cluster: cluster, Timeout: 15 * time.Second, Retry: &proxy.RetryPolicy{
					RetryOn: []proxy.RetryOn{proxy.RetryConnectFailure}, NumRetries: 2}},
			}},
		}},
		Clusters: []proxy.Cluster{{
			Name:                   cluster,
			Service:                proxy.Service{Host: "echo.bench.svc.cluster.local", Name: "echo", Namespace: "bench"},
			ConnectionsPerEndpoint: upstreamConns,
			Endpoints:              []proxy.Endpoint{{Address: upstream}},
		}},
	}
}

func runProxy(args []string) error {
	proxy.TuneRuntime() // as meltemi proxy does
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	proto := addProtocolFlag(fs)
	listen := fs.String("listen", "127.0.0.1:20882", "`address` to serve on")
	upstream := fs.String("upstream", "127.0.0.1:20880", "`address` of the server")
	admin := fs.String("admin", "", "`address` of the admin server (/ready, /metrics, /config_dump, /debug/pprof/); none when empty")
	upstreamConns := fs.Int("upstream-conns", 0, "connections the proxy shares per upstream endpoint (the proxy's default when 0)")
	control := fs.Bool("control", false, controlUsage)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := serverContext()
	defer cancel()

	reg, ok := codecs[proto.Name()]
	if !ok {
		return fmt.Errorf("no Meltemi codec for %s", proto.Name())
	}
	registry, err := codec.NewRegistry(reg)
	if err != nil {
		return err
	}
	// Warnings only: a benchmark must not pay for logging it does not read.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := proxy.New(proxy.Options{Codecs: registry, Logger: logger})
	if err != nil {
		return err
	}
	defer p.Close()
	if err := p.Update(proxyConfig(reg, *listen, *upstream, *upstreamConns)); err != nil {
		return err
	}
	if err := waitFor(ctx, 10*time.Second, p.Ready); err != nil {
		return fmt.Errorf("proxy not ready: %w", err)
	}
	addr := p.ListenerAddr(listenerName)
	if addr == nil {
		return errors.New("proxy has no listener after its config was accepted")
	}
	if *admin != "" {
		ln, err := net.Listen("tcp", *admin)
		if err != nil {
			return fmt.Errorf("admin: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/", p.AdminHandler())
		// Profiles of the proxy under load are what explains its numbers.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		fmt.Fprintf(os.Stderr, "admin on %s\n", ln.Addr())
	}
	announce(addr, *control, cancel)
	<-ctx.Done()
	return nil
}

// waitFor polls cond until it holds, ctx is done or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
