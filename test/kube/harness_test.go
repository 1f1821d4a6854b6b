package kubeinterop

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/brpc"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/codec/thrift"
	"github.com/meltemi-mesh/meltemi/codec/trpc"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
	"github.com/meltemi-mesh/meltemi/control/source/kube"
	"github.com/meltemi-mesh/meltemi/control/xds"
	"github.com/meltemi-mesh/meltemi/proxy"
	proxyxds "github.com/meltemi-mesh/meltemi/proxy/xds"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// waitLimit bounds every wait for the cluster, the controller or the proxy; generous, because the
// machine running the tests may be busy.
const waitLimit = 30 * time.Second

// codecs are the codecs the binary carries, as the controller and the proxy know them.
func codecs(t testing.TB) *codec.Registry {
	t.Helper()
	reg, err := codec.NewRegistry(dubbo.Registration(), thrift.Registration(), brpc.Registration(), trpc.Registration())
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func modelCodecs(t testing.TB) model.Codecs {
	reg := codecs(t)
	out := model.Codecs{}
	for _, name := range reg.Names() {
		r, _ := reg.Lookup(name)
		out[strings.ToLower(r.Protocol)] = r.Name
	}
	return out
}

// testLog is a logger writing to the test's log.
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// updates records what a source publishes.
type updates struct {
	mu  sync.Mutex
	all []source.Update
}

func (u *updates) publish(up source.Update) {
	u.mu.Lock()
	u.all = append(u.all, up)
	u.mu.Unlock()
}

func (u *updates) last() source.Update {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.all) == 0 {
		return source.Update{}
	}
	return u.all[len(u.all)-1]
}

func (u *updates) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.all)
}

// wait returns the first update, from now on or the last one, for which cond holds.
func (u *updates) wait(t testing.TB, what string, cond func(source.Update) bool) source.Update {
	t.Helper()
	var got source.Update
	deadline := time.Now().Add(waitLimit)
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		if got = u.last(); got.Snapshot != nil && cond(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; the last of %d updates has problems:\n%s", waitLimit, what,
				u.count(), strings.Join(problemsOf(got), "\n"))
		}
		time.Sleep(delay)
	}
}

// runSource runs a kube source on cfg until the test ends, logging to log (the test's log when nil);
// its updates go to the returned recorder, and to each of also.
func runSource(t testing.TB, cfg *rest.Config, log *slog.Logger, also ...func(source.Update)) *updates {
	t.Helper()
	if log == nil {
		log = testLog(t)
	}
	src, err := kube.New(cfg, kube.Options{Model: model.Options{Codecs: modelCodecs(t), Local: true}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	rec := &updates{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- src.Run(ctx, func(u source.Update) {
			rec.publish(u)
			for _, f := range also {
				f(u)
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("kube source: %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("kube source did not stop within %v of its context ending", waitLimit)
		}
	})
	return rec
}

// controlPlane is a kube source feeding an xDS server, as `meltemi controller --kube` runs them.
type controlPlane struct {
	*updates
	// Addr is the xDS server's host:port.
	Addr string
}

func startControlPlane(t testing.TB, cfg *rest.Config, host string) *controlPlane {
	t.Helper()
	srv, err := xds.New(xds.Options{Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("xds: %v", err)
		}
	})
	rec := runSource(t, cfg, nil, func(u source.Update) { srv.Update(u.Snapshot) })
	return &controlPlane{updates: rec, Addr: lis.Addr().String()}
}

// proxyConfigs records the configs a real xDS client of the proxy applies.
type proxyConfigs struct {
	mu   sync.Mutex
	last *proxy.Config
	n    int
}

// Update takes a config as the proxy would; it accepts every one.
func (p *proxyConfigs) Update(cfg *proxy.Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last, p.n = cfg, p.n+1
	return nil
}

func (p *proxyConfigs) current() *proxy.Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// wait returns the applied config once cond holds for it.
func (p *proxyConfigs) wait(t testing.TB, what string, cond func(*proxy.Config) bool) *proxy.Config {
	t.Helper()
	var got *proxy.Config
	meshtest.Poll(t, waitLimit, what, func() bool {
		got = p.current()
		return got != nil && cond(got)
	})
	return got
}

// connectProxy runs the proxy's xDS client against addr, in local mode, until the test ends.
func connectProxy(t testing.TB, addr string) *proxyConfigs {
	t.Helper()
	rec := &proxyConfigs{}
	client, err := proxyxds.New(proxyxds.Options{
		Address: addr,
		Node:    proxyxds.Node{ID: "kube-test~" + t.Name(), Mode: proxyxds.ModeLocal},
		Codecs:  codecs(t),
		Proxy:   rec,
		Logger:  testLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- client.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return rec
}

func listenerOf(cfg *proxy.Config, routeConfig string) *proxy.Listener {
	for i := range cfg.Listeners {
		if cfg.Listeners[i].Routes.Name == routeConfig {
			return &cfg.Listeners[i]
		}
	}
	return nil
}

func clusterOf(cfg *proxy.Config, name string) *proxy.Cluster {
	for i := range cfg.Clusters {
		if cfg.Clusters[i].Name == name {
			return &cfg.Clusters[i]
		}
	}
	return nil
}

// endpointsOf is a cluster's endpoints as "address labels" lines, for comparing.
func endpointsOf(c *proxy.Cluster) []string {
	if c == nil {
		return nil
	}
	var out []string
	for _, ep := range c.Endpoints {
		out = append(out, fmt.Sprintf("%s %v", ep.Address, ep.Labels))
	}
	return out
}

// problemsOf is an update's problems as the controller logs them.
func problemsOf(u source.Update) []string {
	var out []string
	for _, p := range u.Problems {
		out = append(out, p.String())
	}
	return out
}

func hasProblem(u source.Update, text string) bool {
	for _, p := range u.Problems {
		if strings.Contains(p.String(), text) {
			return true
		}
	}
	return false
}
