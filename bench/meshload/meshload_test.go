package dubboload

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// startServers runs an echo server and a floor in front of it on loopback, and returns their addresses.
func startServers(t *testing.T) (echo, floor string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 2)
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	eln, fln := listen(), listen()
	go func() { errc <- Echo{}.Serve(ctx, eln) }()
	go func() { errc <- Floor{Upstream: eln.Addr().String()}.Serve(ctx, fln) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-errc; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
	})
	return eln.Addr().String(), fln.Addr().String()
}

func TestLoadThroughEchoAndFloor(t *testing.T) {
	echo, floor := startServers(t)
	for _, tc := range []struct {
		name   string
		target string
		conns  int
		in     int
		size   int
		rate   float64
	}{
		{"direct/1x1", echo, 1, 1, 1024, 0},
		{"direct/2x8", echo, 2, 8, 1024, 0},
		{"floor/1x1", floor, 1, 1, 1024, 0},
		{"floor/2x8", floor, 2, 8, 1024, 0},
		{"floor/2x8/64k", floor, 2, 8, 64 << 10, 0},
		{"floor/open", floor, 2, 16, 128, 4000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Run(context.Background(), Config{
				Target: tc.target, Conns: tc.conns, InFlight: tc.in, Size: tc.size, Rate: tc.rate,
				Duration: 30 * time.Second, Requests: 200,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors() != 0 || res.FirstError != "" {
				t.Fatalf("errors: %+v", res)
			}
			if res.Requests != 200 || res.Latency.Count() != 200 {
				t.Fatalf("got %d good replies (%d recorded), want 200", res.Requests, res.Latency.Count())
			}
		})
	}
}

// TestEcho checks the echoed string itself, byte for byte, through the floor and straight to the server,
// with strings that take every Hessian string form.
func TestEcho(t *testing.T) {
	echo, floor := startServers(t)
	payloads := []string{"", "x", Payload(31), Payload(32), Payload(1024), Payload(70000),
		strings.Repeat("héllo, 世界 😀 ", 3000)}
	for _, target := range []string{echo, floor} {
		c, err := net.Dial("tcp", target)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i, p := range payloads {
			req := NewRequest(p)
			id := uint64(1<<40 + i)
			binary.BigEndian.PutUint64(req.Frame[4:12], id)
			if _, err := c.Write(req.Frame); err != nil {
				t.Fatal(err)
			}
			hdr := make([]byte, HeaderLen)
			if _, err := io.ReadFull(c, hdr); err != nil {
				t.Fatal(err)
			}
			body := make([]byte, binary.BigEndian.Uint32(hdr[12:16]))
			if _, err := io.ReadFull(c, body); err != nil {
				t.Fatal(err)
			}
			if hdr[2] != serialHessian || hdr[3] != StatusOK || frameID(hdr) != id {
				t.Fatalf("%s payload %d: header % x", target, i, hdr)
			}
			got, err := ResponseValue(body)
			if err != nil || got != p {
				t.Fatalf("%s payload %d: got %d chars, err %v", target, i, len(got), err)
			}
			if !bytes.Equal(body, req.WantBody) {
				t.Fatalf("%s payload %d: body differs from the expected reply", target, i)
			}
		}
	}
}

// TestEchoEvents checks that heartbeats are answered and oneway requests are not.
func TestEchoEvents(t *testing.T) {
	echo, _ := startServers(t)
	c, err := net.Dial("tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	oneway := NewRequest("fire and forget").Frame
	oneway[2] &^= flagTwoWay
	binary.BigEndian.PutUint64(oneway[4:12], 7)
	heartbeat := appendHeader(nil, flagRequest|flagTwoWay|flagEvent|serialHessian, 0, 8, 1)
	heartbeat = append(heartbeat, 'N')
	if _, err := c.Write(append(oneway, heartbeat...)); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, HeaderLen+1)
	if _, err := io.ReadFull(c, reply); err != nil {
		t.Fatal(err)
	}
	want := append(appendHeader(nil, flagEvent|serialHessian, StatusOK, 8, 1), 'N')
	if !bytes.Equal(reply, want) {
		t.Fatalf("heartbeat reply % x, want % x", reply, want)
	}
}

func TestHistogram(t *testing.T) {
	h := NewHistogram()
	for v := 1; v <= 100000; v++ {
		h.Record(time.Duration(v) * time.Microsecond)
	}
	for _, q := range []float64{0.5, 0.99, 0.999} {
		want := q * 100000 * float64(time.Microsecond)
		got := float64(h.Quantile(q))
		if got < want || got > want*1.01 {
			t.Errorf("q%v = %v, want %v within 1%%", q, time.Duration(got), time.Duration(want))
		}
	}
	if h.Quantile(1) != 100*time.Millisecond || h.Count() != 100000 {
		t.Errorf("max %v count %d", h.Quantile(1), h.Count())
	}
	for v := uint64(0); v < 1<<20; v += 7 {
		if i := bucketOf(v); bucketHigh(i) < v || (i > 0 && bucketHigh(i-1) >= v) {
			t.Fatalf("value %d: bucket %d holds up to %d", v, i, bucketHigh(i))
		}
	}
}

// BenchmarkRoundTrip measures a request through the echo server, directly and through the floor, in one
// process; allocs/op shows that neither the load generator nor the servers allocate per request.
func BenchmarkRoundTrip(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	eln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	fln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go Echo{}.Serve(ctx, eln)
	go Floor{Upstream: eln.Addr().String()}.Serve(ctx, fln)
	for _, bc := range []struct {
		name   string
		target string
		conns  int
		in     int
	}{
		{"direct/1x1", eln.Addr().String(), 1, 1},
		{"direct/4x16", eln.Addr().String(), 4, 16},
		{"floor/1x1", fln.Addr().String(), 1, 1},
		{"floor/4x16", fln.Addr().String(), 4, 16},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			res, err := Run(context.Background(), Config{Target: bc.target, Conns: bc.conns, InFlight: bc.in,
				Size: 1024, Duration: time.Hour, Requests: b.N})
			if err != nil {
				b.Fatal(err)
			}
			if res.Errors() != 0 {
				b.Fatalf("%d errors", res.Errors())
			}
			b.ReportMetric(float64(res.Latency.Quantile(0.5))/1e3, "p50-µs")
		})
	}
}
