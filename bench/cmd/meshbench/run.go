package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/meltemi-mesh/meltemi/bench/meshload"
)

// Topologies, as BENCHMARKS.md names them.
const (
	topoDirect = "T0"
	topoFloor  = "F"
	topoProxy  = "T1"
)

var topoNames = map[string]string{topoDirect: "T0 direct", topoFloor: "F floor", topoProxy: "T1 one hop"}

// load is one load shape: connections × requests in flight on each.
type load struct {
	Conns    int `json:"conns"`
	InFlight int `json:"inflight"`
}

func (l load) String() string { return fmt.Sprintf("%dx%d", l.Conns, l.InFlight) }

// runOptions are run's flags.
type runOptions struct {
	proto         meshload.Protocol
	sizes         []int
	loads         []load
	topologies    []string
	repeat        int
	duration      time.Duration
	warmup        time.Duration
	rate          float64
	upstreamConns int
	jsonPath      string
}

func runAll(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	proto := addProtocolFlag(fs)
	sizes := fs.String("sizes", "1024", "comma-separated echoed string `lengths` in bytes")
	loads := fs.String("loads", "1x1,4x16,16x64", "comma-separated loads, `CONNSxINFLIGHT`")
	topos := fs.String("topologies", "T0,F,T1", "comma-separated topologies to run, in order")
	duration := fs.Duration("duration", 5*time.Second, "measured window of each run")
	repeat := fs.Int("repeat", 1, "rounds of every topology under each load; the table shows each topology's median round by p50")
	warmup := fs.Duration("warmup", time.Second, "load before each measured window, not recorded")
	rate := fs.Float64("rate", 0, "open loop at this many requests per second (INFLIGHT then caps each connection); closed loop when 0")
	upstreamConns := fs.Int("upstream-conns", 0, "connections the proxy shares per upstream endpoint (the proxy's default when 0)")
	jsonPath := fs.String("json", "", "also write the results as JSON to this `file` (e.g. bench/results/NAME.json)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *repeat < 1 {
		return errors.New("-repeat: must be at least 1")
	}
	opts := runOptions{proto: proto.Protocol, repeat: *repeat, duration: *duration, warmup: *warmup, rate: *rate, upstreamConns: *upstreamConns,
		jsonPath: *jsonPath}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 {
			return fmt.Errorf("-sizes: bad size %q", s)
		}
		opts.sizes = append(opts.sizes, n)
	}
	for _, s := range strings.Split(*loads, ",") {
		c, m, ok := strings.Cut(strings.TrimSpace(s), "x")
		nc, err1 := strconv.Atoi(c)
		nm, err2 := strconv.Atoi(m)
		if !ok || err1 != nil || err2 != nil || nc < 1 || nm < 1 {
			return fmt.Errorf("-loads: bad load %q, want CONNSxINFLIGHT", s)
		}
		opts.loads = append(opts.loads, load{nc, nm})
	}
	for _, s := range strings.Split(*topos, ",") {
		s = strings.TrimSpace(s)
		if topoNames[s] == "" {
			return fmt.Errorf("-topologies: unknown topology %q (T0, F or T1)", s)
		}
		opts.topologies = append(opts.topologies, s)
	}

	ctx, cancel := serverContext()
	defer cancel()
	report, err := session(ctx, opts)
	if report != nil {
		report.summarise()
		report.print(os.Stdout)
		if opts.jsonPath != "" {
			if werr := writeJSON(opts.jsonPath, report); werr != nil && err == nil {
				err = werr
			}
		}
	}
	return err
}

// session starts the servers, runs every size × load × topology and returns what it measured. The report
// holds whatever was measured before an error.
func session(ctx context.Context, opts runOptions) (*report, error) {
	const startTimeout = 30 * time.Second
	// Each server on its own loopback address, on a port the kernel picks.
	pflag := "-protocol=" + opts.proto.Name()
	echo, err := startChild(ctx, startTimeout, "echo", pflag, "-listen", "127.0.0.2:0")
	if err != nil {
		return nil, err
	}
	defer echo.stop()
	hops := map[string]*child{}
	rep := newReport(opts)
	for _, t := range opts.topologies {
		var c *child
		switch t {
		case topoFloor:
			c, err = startChild(ctx, startTimeout, "floor", pflag, "-listen", "127.0.0.3:0", "-upstream", echo.addr)
		case topoProxy:
			c, err = startChild(ctx, startTimeout, "proxy", pflag, "-listen", "127.0.0.4:0", "-upstream", echo.addr,
				"-upstream-conns", strconv.Itoa(opts.upstreamConns))
		default:
			continue
		}
		if err != nil {
			// The other topologies still measure something worth having.
			fmt.Fprintf(os.Stderr, "%s unavailable: %v\n", topoNames[t], err)
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s unavailable: %v", topoNames[t], firstLine(err.Error())))
			continue
		}
		defer c.stop()
		hops[t] = c
		if t == topoProxy {
			if rss, err := c.rss(); err == nil {
				rep.ProxyRSSIdleMB = mb(rss)
			}
		}
	}

	for _, size := range opts.sizes {
		for _, l := range opts.loads {
			// Rounds interleave the topologies, so that a burst of outside work hits them alike.
			tried := map[string][]*row{}
			for round := range opts.repeat {
				for _, t := range opts.topologies {
					target, hop := echo.addr, hops[t]
					if t != topoDirect {
						if hop == nil {
							continue
						}
						if !hop.alive() {
							rep.Notes = append(rep.Notes, fmt.Sprintf("%s died: %v", topoNames[t],
								hop.failure(errors.New("exited"))))
							delete(hops, t)
							continue
						}
						target = hop.addr
					}
					fmt.Fprintf(os.Stderr, "running %s, %s, %d B, round %d of %d\n", topoNames[t], l, size,
						round+1, opts.repeat)
					r, err := measure(ctx, opts, t, l, size, target, echo, hop)
					if err != nil {
						rep.keep(tried, opts.topologies)
						return rep, err
					}
					r.Round = round + 1
					tried[t] = append(tried[t], r)
				}
			}
			rep.keep(tried, opts.topologies)
		}
	}
	if c := hops[topoProxy]; c != nil {
		if rss, err := c.rss(); err == nil {
			rep.ProxyRSSAfterMB = mb(rss)
		}
	}
	return rep, nil
}

// measure runs one load against target and reads the CPU time of the processes involved around the
// measured window.
func measure(ctx context.Context, opts runOptions, topo string, l load, size int, target string,
	echo, hop *child) (*row, error) {
	type sample struct {
		hop, echo, self time.Duration
		machine         machineCPU
		wall            time.Time
		err             error
	}
	var at [2]sample // window open, window close
	snap := func(i int) {
		s := &at[i]
		var err error
		if hop != nil {
			s.hop, err = hop.cpu()
			s.err = err
		}
		if s.echo, err = echo.cpu(); err != nil && s.err == nil {
			s.err = err
		}
		u, sy, err := cpuTime()
		if err != nil && s.err == nil {
			s.err = err
		}
		s.self = u + sy
		s.machine, _ = readMachineCPU()
		s.wall = time.Now()
	}
	res, err := meshload.Run(ctx, meshload.Config{
		Protocol: opts.proto, Target: target, Conns: l.Conns, InFlight: l.InFlight, Size: size, Rate: opts.rate,
		Warmup: opts.warmup, Duration: opts.duration,
		OnWindow: func(open bool) {
			if open {
				snap(0)
			} else {
				snap(1)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", topoNames[topo], l, err)
	}
	r := &row{Size: size, Load: l, Topology: topo, Name: topoNames[topo], Rate: opts.rate}
	r.fill(res)
	if err := errorsOf(at[0].err, at[1].err); err != nil {
		r.Note = "CPU time unavailable: " + firstLine(err.Error())
	} else if res.Requests > 0 {
		per1k := func(a, b time.Duration) float64 { return (b - a).Seconds() / float64(res.Requests) * 1000 }
		if hop != nil {
			v := per1k(at[0].hop, at[1].hop)
			r.HopCPUPer1k = &v
		}
		r.ServerCPUPer1k = per1k(at[0].echo, at[1].echo)
		r.ClientCPUPer1k = per1k(at[0].self, at[1].self)
	}
	if at[0].err == nil && at[1].err == nil && at[0].machine.ok && at[1].machine.ok {
		// Whatever the machine's CPUs did beyond our three processes was someone else's work, competing
		// with ours: a run where this is high is not to be trusted.
		wall := at[1].wall.Sub(at[0].wall).Seconds()
		ours := (at[1].hop - at[0].hop + at[1].echo - at[0].echo + at[1].self - at[0].self).Seconds()
		busy := at[1].machine.busy - at[0].machine.busy
		if wall > 0 {
			r.OtherCores = max(0, (busy.Seconds()-ours)/wall)
			r.StealCores = (at[1].machine.steal - at[0].machine.steal).Seconds() / wall
		}
	}
	if hop != nil {
		if rss, err := hop.rss(); err == nil {
			v := mb(rss)
			r.HopRSSMB = &v
		}
	}
	return r, nil
}

// machineCPU is the CPU time all the machine's CPUs have spent, from /proc/stat.
type machineCPU struct {
	busy  time.Duration // user, nice, system, irq and softirq
	steal time.Duration // taken by the hypervisor for other guests
	ok    bool
}

// clockTick is the unit of /proc/stat: USER_HZ, 100 on every Linux architecture Go runs on.
const clockTick = 10 * time.Millisecond

func readMachineCPU() (machineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return machineCPU{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var v [9]int64
	for i := 1; i < 9; i++ {
		if v[i], err = strconv.ParseInt(f[i], 10, 64); err != nil {
			return machineCPU{}, fmt.Errorf("/proc/stat: %w", err)
		}
	}
	// Fields: user nice system idle iowait irq softirq steal.
	busy := v[1] + v[2] + v[3] + v[6] + v[7]
	return machineCPU{busy: time.Duration(busy) * clockTick, steal: time.Duration(v[8]) * clockTick, ok: true}, nil
}

// errorsOf returns the first non-nil error.
func errorsOf(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// mb converts bytes to megabytes (MiB).
func mb(b int64) float64 { return float64(b) / (1 << 20) }

// machine describes where the figures come from, since they mean little without it.
type machine struct {
	CPU        string `json:"cpu"`
	NumCPU     int    `json:"num_cpu"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Kernel     string `json:"kernel,omitempty"`
	Go         string `json:"go"`
	OS         string `json:"os"`
	Date       string `json:"date"`
}

func thisMachine() machine {
	m := machine{NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version(),
		OS: runtime.GOOS + "/" + runtime.GOARCH, Date: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func writeJSON(path string, rep *report) error {
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
