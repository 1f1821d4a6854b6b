package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/meltemi-mesh/meltemi/bench/meshload"
)

// row is one run: one topology under one load and size.
type row struct {
	Size     int     `json:"size_bytes"`
	Load     load    `json:"load"`
	Topology string  `json:"topology"`
	Name     string  `json:"name"`
	Rate     float64 `json:"rate_rps,omitempty"`
	// Round is which round of the session the run was.
	Round int `json:"round"`

	P50  float64 `json:"p50_us"`
	P99  float64 `json:"p99_us"`
	P999 float64 `json:"p999_us"`
	Max  float64 `json:"max_us"`
	Mean float64 `json:"mean_us"`
	// SendLagP50 and SendLagP99, in an open loop, are how late the load generator sent requests after their
	// intended time; the latencies include it.
	SendLagP50 float64 `json:"send_lag_p50_us,omitempty"`
	SendLagP99 float64 `json:"send_lag_p99_us,omitempty"`
	// Added is the latency over T0 under the same load, for F and T1.
	Added *added `json:"added_over_t0,omitempty"`

	RPS      float64 `json:"rps"`
	Requests uint64  `json:"requests"`
	Errors   uint64  `json:"errors"`
	// ErrorDetail breaks Errors down when there are any.
	ErrorDetail string `json:"error_detail,omitempty"`

	// HopCPUPer1k is the floor's or the proxy's CPU seconds per 1000 requests.
	HopCPUPer1k *float64 `json:"hop_cpu_s_per_1k,omitempty"`
	// ServerCPUPer1k and ClientCPUPer1k show whether the echo server or the load generator was the limit.
	ServerCPUPer1k float64 `json:"server_cpu_s_per_1k"`
	ClientCPUPer1k float64 `json:"client_cpu_s_per_1k"`
	// HopRSSMB is the floor's or the proxy's RSS after the run.
	HopRSSMB *float64 `json:"hop_rss_mb,omitempty"`
	// OtherCores is how many CPUs' worth of work processes outside the benchmark did during the window, and
	// StealCores how much the hypervisor took: both make a run noisy.
	OtherCores float64 `json:"other_cores"`
	StealCores float64 `json:"steal_cores"`
	Note       string  `json:"note,omitempty"`
}

// added is a latency over T0, in µs and as a ratio to T0.
type added struct {
	P50       float64 `json:"p50_us"`
	P99       float64 `json:"p99_us"`
	P999      float64 `json:"p999_us"`
	P50Ratio  float64 `json:"p50_ratio"`
	P99Ratio  float64 `json:"p99_ratio"`
	P999Ratio float64 `json:"p999_ratio"`
}

func (r *row) fill(res *meshload.Result) {
	h := res.Latency
	r.P50, r.P99, r.P999 = micros(h.Quantile(0.5)), micros(h.Quantile(0.99)), micros(h.Quantile(0.999))
	r.Max, r.Mean = micros(h.Max()), micros(h.Mean())
	r.RPS, r.Requests, r.Errors = res.RPS(), res.Requests, res.Errors()
	if res.SendLag != nil {
		r.SendLagP50, r.SendLagP99 = micros(res.SendLag.Quantile(0.5)), micros(res.SendLag.Quantile(0.99))
	}
	if r.Errors > 0 {
		r.ErrorDetail = fmt.Sprintf("status %d, mismatched ids %d, bad body %d, timeouts %d, lost %d",
			res.BadStatus, res.Mismatched, res.BadBody, res.Timeouts, res.Lost)
		if res.FirstError != "" {
			r.ErrorDetail += "; first: " + res.FirstError
		}
	}
}

// comparison sets T1 against F under one load: the figures that travel between machines.
type comparison struct {
	Size int  `json:"size_bytes"`
	Load load `json:"load"`
	// AddedP50Ratio and AddedP99Ratio are T1's added latency over F's.
	AddedP50Ratio *float64 `json:"t1_f_added_p50_ratio,omitempty"`
	AddedP99Ratio *float64 `json:"t1_f_added_p99_ratio,omitempty"`
	// RPSRatio is T1's rate over F's.
	RPSRatio      *float64 `json:"t1_f_rps_ratio,omitempty"`
	ProxyCPUPer1k *float64 `json:"proxy_cpu_s_per_1k,omitempty"`
	FloorCPUPer1k *float64 `json:"floor_cpu_s_per_1k,omitempty"`
}

// target is one of the figures BENCHMARKS.md sets a target for.
type target struct {
	Figure string `json:"figure"`
	Value  string `json:"value"`
	Target string `json:"target"`
	Met    bool   `json:"met"`
}

// report is everything a session measured.
type report struct {
	Machine   machine `json:"machine"`
	Protocol  string  `json:"protocol"`
	Workload  string  `json:"workload"`
	DurationS float64 `json:"duration_s"`
	WarmupS   float64 `json:"warmup_s"`
	Repeat    int     `json:"repeat"`
	Runs      []*row  `json:"runs"`
	// AllRuns holds every round when there were several; Runs holds each topology's median round.
	AllRuns         []*row       `json:"all_runs,omitempty"`
	ProxyRSSIdleMB  float64      `json:"proxy_rss_idle_mb,omitempty"`
	ProxyRSSAfterMB float64      `json:"proxy_rss_after_mb,omitempty"`
	Comparisons     []comparison `json:"comparisons,omitempty"`
	Targets         []target     `json:"targets,omitempty"`
	Notes           []string     `json:"notes,omitempty"`
}

func newReport(opts runOptions) *report {
	w := opts.proto.Workload() + ", closed loop"
	if opts.rate > 0 {
		w = fmt.Sprintf("%s, open loop at %.0f rps", opts.proto.Workload(), opts.rate)
	}
	return &report{Machine: thisMachine(), Protocol: opts.proto.Name(), Workload: w, DurationS: opts.duration.Seconds(),
		WarmupS: opts.warmup.Seconds(), Repeat: opts.repeat}
}

// find returns the run of topology t under size and l.
func (rep *report) find(size int, l load, t string) *row {
	for _, r := range rep.Runs {
		if r.Size == size && r.Load == l && r.Topology == t {
			return r
		}
	}
	return nil
}

// keep records the rounds of one load, and each topology's median round by p50, in topology order.
func (rep *report) keep(tried map[string][]*row, order []string) {
	for _, t := range order {
		rs := tried[t]
		if len(rs) == 0 {
			continue
		}
		if rep.Repeat > 1 {
			rep.AllRuns = append(rep.AllRuns, rs...)
		}
		sorted := slices.SortedFunc(slices.Values(rs), func(a, b *row) int { return cmp.Compare(a.P50, b.P50) })
		rep.Runs = append(rep.Runs, sorted[(len(sorted)-1)/2])
	}
}

// relate sets each run's latency over T0 under the same size and load.
func (rep *report) relate() {
	for _, r := range rep.Runs {
		t0 := rep.find(r.Size, r.Load, topoDirect)
		if t0 == nil || r.Topology == topoDirect {
			continue
		}
		a := &added{P50: r.P50 - t0.P50, P99: r.P99 - t0.P99, P999: r.P999 - t0.P999}
		a.P50Ratio, a.P99Ratio, a.P999Ratio = ratio(a.P50, t0.P50), ratio(a.P99, t0.P99), ratio(a.P999, t0.P999)
		r.Added = a
	}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// ptr returns a pointer to v, or nil when v is not meaningful (a ratio to something not positive).
func ptr(v float64, ok bool) *float64 {
	if !ok {
		return nil
	}
	return &v
}

// summarise sets T1 against F under each load and checks the targets that apply to this session.
func (rep *report) summarise() {
	rep.relate()
	for _, r := range rep.Runs {
		if r.Topology != topoProxy {
			continue
		}
		f := rep.find(r.Size, r.Load, topoFloor)
		if f == nil {
			continue
		}
		c := comparison{Size: r.Size, Load: r.Load, ProxyCPUPer1k: r.HopCPUPer1k, FloorCPUPer1k: f.HopCPUPer1k}
		if r.Added != nil && f.Added != nil {
			c.AddedP50Ratio = ptr(ratio(r.Added.P50, f.Added.P50), f.Added.P50 > 0)
			c.AddedP99Ratio = ptr(ratio(r.Added.P99, f.Added.P99), f.Added.P99 > 0)
		}
		c.RPSRatio = ptr(ratio(r.RPS, f.RPS), f.RPS > 0)
		rep.Comparisons = append(rep.Comparisons, c)
	}
	if strings.Contains(rep.Workload, "open loop") {
		return // the targets are set for closed loops
	}
	// The targets are for 1 KB; fall back to the only size when there is just one.
	size := 1024
	if len(rep.Runs) > 0 && rep.find(size, load{1, 1}, topoProxy) == nil && rep.find(size, load{4, 16}, topoProxy) == nil {
		size = rep.Runs[0].Size
	}
	for _, c := range rep.Comparisons {
		if c.Size != size {
			continue
		}
		switch c.Load {
		case load{1, 1}:
			if c.AddedP50Ratio != nil {
				rep.Targets = append(rep.Targets, target{
					Figure: fmt.Sprintf("added p50 per hop, %d B, 1x1, T1/F", size),
					Value:  fmt.Sprintf("%.2f×", *c.AddedP50Ratio), Target: "≤ 1.3×", Met: *c.AddedP50Ratio <= 1.3})
			}
			if t1 := rep.find(size, c.Load, topoProxy); t1 != nil && t1.Added != nil {
				rep.Targets = append(rep.Targets, target{
					Figure: fmt.Sprintf("added p99 per hop, %d B, 1x1", size),
					Value:  fmt.Sprintf("%+.0f µs", t1.Added.P99), Target: "≤ 200 µs", Met: t1.Added.P99 <= 200})
			}
		case load{4, 16}:
			if c.RPSRatio != nil {
				t1 := rep.find(size, c.Load, topoProxy)
				rep.Targets = append(rep.Targets, target{
					Figure: fmt.Sprintf("rps through one hop, %d B, 4x16, T1/F", size),
					Value:  fmt.Sprintf("%.2f× (%.0f rps)", *c.RPSRatio, t1.RPS), Target: "≥ 0.4×",
					Met: *c.RPSRatio >= 0.4})
			}
			if c.ProxyCPUPer1k != nil {
				rep.Targets = append(rep.Targets, target{
					Figure: fmt.Sprintf("proxy CPU-s per 1000 requests, %d B, 4x16", size),
					Value:  fmt.Sprintf("%.4f", *c.ProxyCPUPer1k), Target: "≤ 0.015",
					Met: *c.ProxyCPUPer1k <= 0.015})
			}
		}
	}
	if rep.ProxyRSSIdleMB > 0 {
		rep.Targets = append(rep.Targets, target{Figure: "proxy RSS idle", Value: fmt.Sprintf("%.1f MB", rep.ProxyRSSIdleMB),
			Target: "≤ 20 MB", Met: rep.ProxyRSSIdleMB <= 20})
	}
	if rep.ProxyRSSAfterMB > 0 {
		rep.Targets = append(rep.Targets, target{Figure: "proxy RSS after load", Value: fmt.Sprintf("%.1f MB", rep.ProxyRSSAfterMB),
			Target: "≤ 25 MB", Met: rep.ProxyRSSAfterMB <= 25})
	}
}

// print writes the report as one table followed by the comparisons and targets.
func (rep *report) print(out io.Writer) {
	m := rep.Machine
	fmt.Fprintf(out, "%s; %gs per run after %gs warmup", rep.Workload, rep.DurationS, rep.WarmupS)
	if rep.Repeat > 1 {
		fmt.Fprintf(out, "; median of %d interleaved rounds by p50", rep.Repeat)
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "%s, %d CPUs, GOMAXPROCS %d, %s %s, kernel %s, %s\n\n", m.CPU, m.NumCPU, m.GOMAXPROCS, m.Go,
		m.OS, m.Kernel, m.Date)

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "size\ttopology\tload\tp50 µs\tp99 µs\tp99.9 µs\t+p50 µs (×T0)\t+p99 µs (×T0)\trps\terrors\t"+
		"hop CPU-s/1k\tsrv CPU-s/1k\tcli CPU-s/1k\thop RSS MB\tother cores\t")
	for _, r := range rep.Runs {
		addP50, addP99 := "—", "—"
		if r.Added != nil {
			addP50 = fmt.Sprintf("%+.1f (%.2f×)", r.Added.P50, r.Added.P50Ratio)
			addP99 = fmt.Sprintf("%+.1f (%.2f×)", r.Added.P99, r.Added.P99Ratio)
		}
		hopCPU, rss := "—", "—"
		if r.HopCPUPer1k != nil {
			hopCPU = fmt.Sprintf("%.4f", *r.HopCPUPer1k)
		}
		if r.HopRSSMB != nil {
			rss = fmt.Sprintf("%.1f", *r.HopRSSMB)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.1f\t%.1f\t%.1f\t%s\t%s\t%.0f\t%d\t%s\t%.4f\t%.4f\t%s\t%.2f\t\n",
			r.Size, topoNames[r.Topology], r.Load, r.P50, r.P99, r.P999, addP50, addP99, r.RPS, r.Errors, hopCPU,
			r.ServerCPUPer1k, r.ClientCPUPer1k, rss, r.OtherCores)
	}
	tw.Flush()

	if len(rep.Comparisons) > 0 {
		fmt.Fprintln(out, "\nT1 against the floor (added latency over T0, T1/F):")
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "size\tload\tadded p50 T1/F\tadded p99 T1/F\trps T1/F\tproxy CPU-s/1k\tfloor CPU-s/1k\t")
		for _, c := range rep.Comparisons {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", c.Size, c.Load, fmtRatio(c.AddedP50Ratio),
				fmtRatio(c.AddedP99Ratio), fmtRatio(c.RPSRatio), fmtCPU(c.ProxyCPUPer1k), fmtCPU(c.FloorCPUPer1k))
		}
		tw.Flush()
	}
	if rep.ProxyRSSIdleMB > 0 {
		fmt.Fprintf(out, "\nproxy RSS: %.1f MB idle", rep.ProxyRSSIdleMB)
		if rep.ProxyRSSAfterMB > 0 {
			fmt.Fprintf(out, ", %.1f MB after the runs", rep.ProxyRSSAfterMB)
		}
		fmt.Fprintln(out)
	}
	if len(rep.Targets) > 0 {
		fmt.Fprintln(out, "\nTargets (BENCHMARKS.md):")
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		for _, t := range rep.Targets {
			verdict := "met"
			if !t.Met {
				verdict = "MISSED"
			}
			fmt.Fprintf(tw, "  %s\t%s\ttarget %s\t%s\n", t.Figure, t.Value, t.Target, verdict)
		}
		tw.Flush()
	}
	if strings.Contains(rep.Workload, "open loop") {
		fmt.Fprintln(out, "\nLoad generator's own send lag behind the intended times (included in the latencies):")
		for _, r := range rep.Runs {
			fmt.Fprintf(out, "  %s %s %d B: p50 %.1f µs, p99 %.1f µs\n", topoNames[r.Topology], r.Load, r.Size, r.SendLagP50,
				r.SendLagP99)
		}
	}
	for _, r := range rep.Runs {
		if r.ErrorDetail != "" || r.Note != "" {
			fmt.Fprintf(out, "\n%s %s %d B: %s %s", topoNames[r.Topology], r.Load, r.Size, r.ErrorDetail, r.Note)
		}
	}
	noisy := 0
	for _, r := range rep.Runs {
		if r.OtherCores > noisyCores || r.StealCores > noisyCores {
			noisy++
		}
	}
	if noisy > 0 {
		fmt.Fprintf(out, "\nwarning: in %d of %d runs other work took more than %.1f of the machine's cores "+
			"(other cores column, or hypervisor steal): those figures are noisy; rerun on a quiet machine.",
			noisy, len(rep.Runs), noisyCores)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(out, "\nnote: %s", n)
	}
	fmt.Fprintln(out)
}

// noisyCores is how much CPU outside the benchmark makes a run suspect.
const noisyCores = 0.1

func fmtRatio(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", *v)
}

func fmtCPU(v *float64) string {
	if v == nil {
		return "—"
	}
	return fmt.Sprintf("%.4f", *v)
}
