package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meltemi-mesh/meltemi/examples/dubbo/greet"
)

// counters are the running totals of the callers' outcomes.
type counters struct {
	v1, v2, other, errors atomic.Int64
}

// tally is a snapshot of counters, or the difference of two.
type tally struct {
	v1, v2, other, errors int64
}

func (c *counters) snapshot() tally {
	return tally{v1: c.v1.Load(), v2: c.v2.Load(), other: c.other.Load(), errors: c.errors.Load()}
}

func (t tally) minus(u tally) tally {
	return tally{v1: t.v1 - u.v1, v2: t.v2 - u.v2, other: t.other - u.other, errors: t.errors - u.errors}
}

func (t tally) plus(u tally) tally {
	return tally{v1: t.v1 + u.v1, v2: t.v2 + u.v2, other: t.other + u.other, errors: t.errors + u.errors}
}

func (t tally) calls() int64 { return t.v1 + t.v2 + t.other + t.errors }

// split shows the share of answers from each version.
func (t tally) split() string {
	answered := t.v1 + t.v2 + t.other
	if answered == 0 {
		return "v1    -  v2    -"
	}
	pct := func(n int64) float64 { return math.Round(100 * float64(n) / float64(answered)) }
	s := fmt.Sprintf("v1 %3.0f%%  v2 %3.0f%%", pct(t.v1), pct(t.v2))
	if t.other > 0 {
		s += fmt.Sprintf("  other %3.0f%%", pct(t.other))
	}
	return s
}

// drive runs the callers, prints the split every second, rewrites the MetaRouter in dir after cfg.before,
// and stops after cfg.after more, or when ctx ends. It returns once every call has come back.
func drive(ctx context.Context, client *greet.Client, cfg config, dir string) error {
	var (
		count     counters
		stop      atomic.Bool
		firstErr  sync.Once
		errMsg    atomic.Pointer[string]
		firstV2At atomic.Int64 // UnixNano of the first answer from v2
		callers   sync.WaitGroup
	)
	start := time.Now()
	for range cfg.callers {
		callers.Go(func() {
			// A stop flag rather than a cancelled context: calls in flight when the demo stops finish, so
			// that stopping never shows up as a failed call.
			for !stop.Load() {
				answer, err := client.SayHello(context.Background(), "meltemi")
				switch {
				case err != nil:
					count.errors.Add(1)
					firstErr.Do(func() { msg := err.Error(); errMsg.Store(&msg) })
				case greet.VersionOf(answer) == "v1":
					count.v1.Add(1)
				case greet.VersionOf(answer) == "v2":
					count.v2.Add(1)
					firstV2At.CompareAndSwap(0, time.Now().UnixNano())
				default:
					count.other.Add(1)
				}
			}
		})
	}

	var (
		seconds     []tally // one per second of traffic
		prev        tally
		rewrittenAt time.Time
		settled     int // index in seconds of the first full second after the rewrite, once there is one
		errShown    bool
		v2Shown     bool
		interrupted bool
	)
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			interrupted = true
			break loop
		case now := <-ticker.C:
			cur := count.snapshot()
			d := cur.minus(prev)
			prev = cur
			seconds = append(seconds, d)
			elapsed := now.Sub(start).Round(time.Second)
			fmt.Printf("t=%-4s %s   (%d calls/s, %d errors)\n", fmt.Sprint(elapsed), d.split(), d.calls(), d.errors)
			if msg := errMsg.Load(); msg != nil && !errShown {
				errShown = true
				fmt.Printf("       first error: %s\n", *msg)
			}
			if at := firstV2At.Load(); at != 0 && !v2Shown && !rewrittenAt.IsZero() {
				v2Shown = true
				fmt.Printf("       first answer from v2 %d ms after the rewrite\n",
					time.Unix(0, at).Sub(rewrittenAt).Milliseconds())
			}
			switch {
			case rewrittenAt.IsZero() && elapsed >= cfg.before:
				if err := rewriteRouter(dir); err != nil {
					stop.Store(true)
					callers.Wait()
					return fmt.Errorf("rewrite the MetaRouter: %w", err)
				}
				rewrittenAt = time.Now()
				// The next second is the one the change happens in; the route in force shows from the one
				// after.
				settled = len(seconds) + 1
				fmt.Printf("       >>> MetaRouter rewritten: 20%% to v1, 80%% to v2 (%s replaced, atomically)\n",
					routerFile)
			case !rewrittenAt.IsZero() && elapsed >= cfg.before+cfg.after:
				break loop
			}
		}
	}
	stop.Store(true)
	callers.Wait()
	took := time.Since(start)
	// The calls that came back after the last tick.
	seconds = append(seconds, count.snapshot().minus(prev))
	err := summarize(seconds, count.snapshot(), took, settled)
	if interrupted {
		return errInterrupted
	}
	return err
}

// summarize prints the totals and the final split: that of the last few full seconds after the second in
// which the route changed (settled indexes the first of them), or of the whole run if there are none. It
// returns an error if a call failed or if the final split is far from the route's 20/80, so that the demo
// doubles as a check that the mesh works.
func summarize(seconds []tally, total tally, took time.Duration, settled int) error {
	fmt.Printf("\nSummary: %d calls in %.1f s, %d errors (expected 0)\n", total.calls(), took.Seconds(), total.errors)
	// The last entry of seconds is the part-second after the last tick: left out.
	const window = 5
	var last tally
	n := 0
	for i := len(seconds) - 2; settled > 0 && i >= settled && n < window; i-- {
		last = last.plus(seconds[i])
		n++
	}
	if n == 0 {
		fmt.Printf("  split        %s   (all %d calls)\n", total.split(), total.calls())
	} else {
		fmt.Printf("  final split  %s   (last %d s: %d calls; the route says 20/80)\n", last.split(), n, last.calls())
	}
	if total.errors > 0 {
		return fmt.Errorf("%d of %d calls failed", total.errors, total.calls())
	}
	// Over thousands of calls a 20/80 split lands within a point or two of it: ten is room enough.
	if answered := last.v1 + last.v2 + last.other; answered > 0 {
		if share := float64(last.v2) / float64(answered); share < 0.7 || share > 0.9 {
			return fmt.Errorf("v2 answered %.0f%% of the calls after the change, not about 80%%", 100*share)
		}
	}
	return nil
}
