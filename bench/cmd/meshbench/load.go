package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/meltemi-mesh/meltemi/bench/meshload"
)

func runLoad(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	proto := addProtocolFlag(fs)
	target := fs.String("target", "127.0.0.1:20880", "`address` to send requests to")
	conns := fs.Int("conns", 1, "connections")
	inflight := fs.Int("inflight", 1, "requests in flight per connection (closed loop), or at most (open loop)")
	size := fs.Int("size", 1024, "echoed string length in `bytes`")
	duration := fs.Duration("duration", 5*time.Second, "measured window")
	warmup := fs.Duration("warmup", time.Second, "load before the measured window, not recorded")
	rate := fs.Float64("rate", 0, "open loop at this many requests per second in all; closed loop when 0")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := serverContext()
	defer cancel()
	res, err := meshload.Run(ctx, meshload.Config{
		Protocol: proto.Protocol, Target: *target, Conns: *conns, InFlight: *inflight, Size: *size,
		Rate: *rate, Warmup: *warmup, Duration: *duration,
	})
	if err != nil {
		return err
	}
	h := res.Latency
	fmt.Printf("%s %s %dx%d %d B: %.0f rps, %d requests in %v\n", proto.Name(), *target, *conns, *inflight, *size, res.RPS(),
		res.Requests, res.Elapsed)
	fmt.Printf("latency µs: p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f\n", micros(h.Quantile(0.5)),
		micros(h.Quantile(0.99)), micros(h.Quantile(0.999)), micros(h.Max()), micros(h.Mean()))
	if res.SendLag != nil {
		fmt.Printf("send lag behind the intended times µs (included above): p50 %.1f  p99 %.1f  max %.1f\n",
			micros(res.SendLag.Quantile(0.5)), micros(res.SendLag.Quantile(0.99)), micros(res.SendLag.Max()))
	}
	fmt.Printf("errors: %d (status %d, mismatched ids %d, bad body %d, timeouts %d, lost %d)\n", res.Errors(),
		res.BadStatus, res.Mismatched, res.BadBody, res.Timeouts, res.Lost)
	if res.FirstError != "" {
		fmt.Fprintf(os.Stderr, "first connection error: %s\n", res.FirstError)
	}
	if res.Errors() > 0 {
		return fmt.Errorf("%d requests failed", res.Errors())
	}
	return nil
}

// micros converts d to microseconds.
func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
