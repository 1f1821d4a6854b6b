package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestSummarise(t *testing.T) {
	cpu := func(v float64) *float64 { return &v }
	l11, l416 := load{1, 1}, load{4, 16}
	rep := &report{Workload: "closed loop", Repeat: 3}
	// Three rounds of each topology under 1x1: the median by p50 must be kept, whatever the order.
	rep.keep(map[string][]*row{
		topoDirect: {{Topology: topoDirect, Load: l11, Size: 1024, P50: 30, P99: 100, RPS: 30000, Round: 1},
			{Topology: topoDirect, Load: l11, Size: 1024, P50: 20, P99: 90, RPS: 40000, Round: 2},
			{Topology: topoDirect, Load: l11, Size: 1024, P50: 25, P99: 95, RPS: 35000, Round: 3}},
		topoFloor: {{Topology: topoFloor, Load: l11, Size: 1024, P50: 105, P99: 295, RPS: 9000,
			HopCPUPer1k: cpu(0.07)}},
		topoProxy: {{Topology: topoProxy, Load: l11, Size: 1024, P50: 125, P99: 395, RPS: 8000,
			HopCPUPer1k: cpu(0.08)}},
	}, []string{topoDirect, topoFloor, topoProxy})
	rep.keep(map[string][]*row{
		topoDirect: {{Topology: topoDirect, Load: l416, Size: 1024, P50: 100, P99: 500, RPS: 400000}},
		topoFloor:  {{Topology: topoFloor, Load: l416, Size: 1024, P50: 300, P99: 900, RPS: 200000, HopCPUPer1k: cpu(0.003)}},
		topoProxy:  {{Topology: topoProxy, Load: l416, Size: 1024, P50: 500, P99: 1500, RPS: 60000, HopCPUPer1k: cpu(0.02)}},
	}, []string{topoDirect, topoFloor, topoProxy})
	rep.ProxyRSSIdleMB, rep.ProxyRSSAfterMB = 10, 30
	rep.summarise()

	if len(rep.Runs) != 6 || len(rep.AllRuns) != 8 || rep.Runs[0].Round != 3 {
		t.Fatalf("kept %d runs of %d, first from round %d; want 6 of 8, the median from round 3",
			len(rep.Runs), len(rep.AllRuns), rep.Runs[0].Round)
	}
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-9 }
	f := rep.find(1024, l11, topoFloor)
	if f.Added == nil || !near(f.Added.P50, 80) || !near(f.Added.P50Ratio, 3.2) {
		t.Fatalf("floor added %+v, want +80 µs, 3.2× T0", f.Added)
	}
	c := rep.Comparisons[0]
	if !near(*c.AddedP50Ratio, 100.0/80) || !near(*c.AddedP99Ratio, 300.0/200) || !near(*c.RPSRatio, 8000.0/9000) {
		t.Fatalf("1x1 comparison %v %v %v", *c.AddedP50Ratio, *c.AddedP99Ratio, *c.RPSRatio)
	}
	want := map[string]bool{
		"added p50 per hop, 1024 B, 1x1, T1/F":        true,  // 1.25
		"added p99 per hop, 1024 B, 1x1":              false, // +300 µs
		"rps through one hop, 1024 B, 4x16, T1/F":     false, // 0.3
		"proxy CPU-s per 1000 requests, 1024 B, 4x16": false, // 0.02
		"proxy RSS idle":                              true,
		"proxy RSS after load":                        false,
	}
	if len(rep.Targets) != len(want) {
		t.Fatalf("%d targets, want %d: %+v", len(rep.Targets), len(want), rep.Targets)
	}
	for _, tg := range rep.Targets {
		if met, ok := want[tg.Figure]; !ok || met != tg.Met {
			t.Errorf("target %q met=%v, want %v (known: %v)", tg.Figure, tg.Met, met, ok)
		}
	}
	var out bytes.Buffer
	rep.print(&out)
	if !strings.Contains(out.String(), "T1 one hop") || !strings.Contains(out.String(), "MISSED") {
		t.Errorf("table lacks rows or verdicts:\n%s", out.String())
	}
}
