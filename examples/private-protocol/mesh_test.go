package privateprotocol_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/examples/private-protocol/kvrpc"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// TestMesh builds this example's meltemi binary (the built-in codecs plus kvrpc's), runs `meltemi mesh` on the
// example's own manifests moved to addresses of the test's own, and calls the greeter through it with the
// kvrpc client: calls are routed by method and by header, Echo is split 80/20 between the versions and
// carries the header the route adds, heartbeats are answered, and a call no route matches gets the codec's
// error reply.
func TestMesh(t *testing.T) {
	bin := buildMeltemi(t)

	t.Run("validate", func(t *testing.T) {
		out, err := exec.Command(bin, "validate", "-f", "manifests").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "0 errors, 0 warnings") {
			t.Fatalf("meltemi validate -f manifests: %v\n%s", err, out)
		}
	})

	block := meshtest.NewNet()
	svc, v1, v2 := block.Host(1), block.Host(11), block.Host(12)
	port := strconv.Itoa(meshtest.FreePort(t, svc))
	serve(t, "v1", net.JoinHostPort(v1, port))
	serve(t, "v2", net.JoinHostPort(v2, port))
	dir := moveManifests(t, strings.NewReplacer("127.77.0.11", v1, "127.77.0.12", v2, "127.77.0.1", svc,
		"7700", port))
	mesh := meshtest.StartMesh(t, bin, dir, block.Host(100))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var c *kvrpc.Client
	meshtest.Poll(t, 10*time.Second, "the proxy to accept on "+net.JoinHostPort(svc, port), func() bool {
		var err error
		c, err = kvrpc.Dial(ctx, net.JoinHostPort(svc, port))
		return err == nil
	})
	defer c.Close()

	t.Run("heartbeat", func(t *testing.T) {
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("route by method", func(t *testing.T) {
		for i := range 20 {
			r, err := c.Call(ctx, "Greet", nil, []byte(fmt.Sprint("ann-", i)))
			if err != nil {
				t.Fatal(err)
			}
			if v, body := r.Headers["version"], string(r.Body); v != "v1" || body != fmt.Sprint("hello ann-", i) {
				t.Fatalf("Greet %d answered %q by %q; want its own greeting by v1", i, body, v)
			}
		}
	})

	t.Run("route by header", func(t *testing.T) {
		for _, method := range []string{"Greet", "Echo"} {
			r, err := c.Call(ctx, method, map[string]string{"env": "canary"}, []byte("bob"))
			if err != nil {
				t.Fatal(err)
			}
			if v := r.Headers["version"]; v != "v2" {
				t.Fatalf("%s from a canary caller answered by %q; want v2", method, v)
			}
		}
	})

	t.Run("weighted split with request mutation", func(t *testing.T) {
		const n, p, workers = 1000, 0.2, 16
		// 4.5 standard deviations: a correct 80/20 split falls outside about once in 150,000 runs, while a
		// 70/30 split (7.9 deviations away) always fails.
		sigma := math.Sqrt(n * p * (1 - p))
		lo, hi := int(math.Ceil(n*p-4.5*sigma)), int(math.Floor(n*p+4.5*sigma))
		var byV1, byV2, failed atomic.Int64
		var firstErr atomic.Value
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := w; i < n; i += workers {
					body := fmt.Sprint("echo-", i)
					r, err := c.Call(ctx, "Echo", map[string]string{"caller": "test"}, []byte(body))
					switch {
					case err == nil && (string(r.Body) != body || r.Headers["x-route"] != "echo" ||
						r.Headers["caller"] != "test"):
						err = fmt.Errorf("Echo %d answered %q with headers %v; want its body, caller=test and "+
							"x-route=echo", i, r.Body, r.Headers)
					case err == nil && r.Headers["version"] == "v1":
						byV1.Add(1)
						continue
					case err == nil && r.Headers["version"] == "v2":
						byV2.Add(1)
						continue
					case err == nil:
						err = fmt.Errorf("Echo %d answered by version %q", i, r.Headers["version"])
					}
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			})
		}
		wg.Wait()
		if failed.Load() > 0 {
			t.Fatalf("%d of %d calls failed, first: %v", failed.Load(), n, firstErr.Load())
		}
		t.Logf("v1 %d, v2 %d of %d (v2 must be within [%d, %d])", byV1.Load(), byV2.Load(), n, lo, hi)
		if got := int(byV2.Load()); got < lo || got > hi {
			t.Fatalf("v2 answered %d of %d Echo calls; want within [%d, %d] for a 20%% share", got, n, lo, hi)
		}
	})

	t.Run("no route", func(t *testing.T) {
		_, err := c.Call(ctx, "Stats", nil, nil)
		var kerr *kvrpc.Error
		if !errors.As(err, &kerr) || kerr.Status != kvrpc.StatusNoRoute || kerr.Kind != "route_not_found" {
			t.Fatalf("Stats, which no route matches, returned %v; want status %d (route_not_found)", err,
				kvrpc.StatusNoRoute)
		}
		mesh.WaitMetric(t, 10*time.Second, "istio_requests_total", map[string]string{"request_protocol": "kvrpc",
			"response_flags": "NR", "response_code": "4"}, "1", func(v float64) bool { return v == 1 })
	})
}

// buildMeltemi builds this module's cmd/meltemi into a folder of the test's own.
func buildMeltemi(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meltemi")
	start := time.Now()
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/meltemi").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/meltemi: %v\n%s", err, out)
	}
	t.Logf("built meltemi with the kvrpc codec in %v", time.Since(start).Round(time.Millisecond))
	return bin
}

// serve runs the example's greeter as version on addr until the test ends.
func serve(t *testing.T, version, addr string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := kvrpc.NewGreeter(version)
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
}

// moveManifests copies the example's manifests into a new folder with r applied, so that the mesh runs on
// exactly what the example ships, on the test's own addresses.
func moveManifests(t *testing.T, r *strings.Replacer) string {
	t.Helper()
	files, err := filepath.Glob("manifests/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests found (%v)", err)
	}
	dir := t.TempDir()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		moved := r.Replace(string(b))
		if strings.Contains(moved, "127.77.") {
			t.Fatalf("%s: an address the test does not move:\n%s", f, moved)
		}
		meshtest.WriteAtomically(t, dir, filepath.Base(f), moved)
	}
	return dir
}
