package meltemicmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
	"github.com/meltemi-mesh/meltemi/control/source/file"
	"github.com/meltemi-mesh/meltemi/control/xds"
)

func newControllerCommand(p Plugins) *cobra.Command {
	var (
		dir, xdsAddr, admin string
		kubeFlags           kubeFlags
		logs                logFlags
	)
	cmd := &cobra.Command{
		Use:   "controller [-f DIR] [--kube]",
		Short: "Run the control plane: serve the manifests in DIR and/or a cluster's objects to proxies over xDS",
		Long: `Run the control plane: read the manifests in DIR (Istio ServiceEntry, DestinationRule, WorkloadEntry;
Aeraki MetaRouter, ApplicationProtocol, RedisService, RedisDestination, DubboAuthorizationPolicy) and watch the
folder, or with --kube watch the same kinds in a Kubernetes cluster along with its Services and their
EndpointSlices (with both, the folder's objects and the cluster's are served together), and serve each proxy
that connects its own config over xDS (ADS, state of the world and delta). A bad object is reported and
skipped; an object that turns bad keeps its last good version.

In a cluster, several replicas may run side by side: every one serves xDS, and the one holding the Lease
(--leader-elect) writes the Accepted and Programmed conditions of Meltemi's objects and records allocated
addresses in ServiceEntry status. With --webhook-addr, the controller also serves the validating admission
webhook of Meltemi's kinds over HTTPS, with a certificate of its own CA kept in a Secret.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			codecs, err := p.codecs()
			if err != nil {
				return err
			}
			var sources []source.Runner
			var from []string
			if dir != "" || !kubeFlags.enabled {
				src, err := fileSource(dir, codecs, log)
				if err != nil {
					return err
				}
				sources, from = append(sources, src), append(from, dir)
			}
			var kubeCfg *rest.Config
			if kubeFlags.enabled {
				if kubeCfg, err = kubeFlags.restConfig(); err != nil {
					return err
				}
				logTo(log)
				src, name, err := kubeFlags.source(kubeCfg, codecs, log)
				if err != nil {
					return err
				}
				sources, from = append(sources, src), append(from, name)
			}
			src := sources[0]
			if len(sources) > 1 {
				// Objects of the folder and of the cluster may refer to each other, so they are built
				// into one snapshot.
				src = source.NewMerge(localModel(codecs), sources...)
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			metrics := newMetricsRegistry()
			cp, err := newControlPlane(src, metrics, log)
			if err != nil {
				return err
			}
			var k *kubeRuntime
			if kubeFlags.enabled {
				if k, err = kubeFlags.runtime(kubeCfg, cp, codecs, metrics, log); err != nil {
					return err
				}
			} else if cmd.Flags().Changed("webhook-addr") || cmd.Flags().Changed("leader-elect") {
				return errors.New("--webhook-addr and --leader-elect need --kube")
			}
			lis, err := net.Listen("tcp", xdsAddr)
			if err != nil {
				k.close()
				return fmt.Errorf("--xds: %w", err)
			}
			ready := cp.ready
			if k != nil {
				ready = func() bool { return cp.ready() && k.ready() }
				cp.replica = k.dump
			}
			mux := http.NewServeMux()
			mux.Handle("/metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
			mux.HandleFunc("/ready", readyHandler(ready))
			mux.HandleFunc("/config_dump", jsonHandler(func() any { return cp.dump() }))
			wait, err := serveHTTP(ctx, admin, mux, log)
			if err != nil {
				lis.Close()
				k.close()
				return fmt.Errorf("--admin: %w", err)
			}
			log.Info("controller started", "config", strings.Join(from, " and "), "xds", lis.Addr().String(), "admin", admin)
			tasks := []func(context.Context) error{func(ctx context.Context) error { return cp.run(ctx, lis) }}
			if k != nil {
				tasks = append(tasks, k.run)
			}
			runErr := runAll(ctx, tasks...)
			stop()
			return errors.Join(runErr, wait())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&dir, "filename", "f", "", "folder of YAML manifests to serve (watched)")
	f.StringVar(&xdsAddr, "xds", "127.0.0.1:15010", "host:port the xDS server listens on")
	f.StringVar(&admin, "admin", "127.0.0.1:15014", "host:port serving /ready, /metrics and /config_dump")
	kubeFlags.add(cmd)
	kubeFlags.addController(cmd)
	logs.add(cmd)
	return cmd
}

// localModel is how every source of the controller builds its snapshots: for local-mode proxies, the only
// mode translated so far.
func localModel(codecs *codec.Registry) model.Options {
	return model.Options{Codecs: codecsOf(codecs), Local: true}
}

// fileSource reads and watches a folder of manifests.
func fileSource(dir string, codecs *codec.Registry, log *slog.Logger) (source.Runner, error) {
	if dir == "" {
		return nil, errors.New("-f: a folder of manifests (or --kube) is required")
	}
	return file.New(dir, file.Options{Model: localModel(codecs), Logger: log}), nil
}

// controlPlane is a config source feeding the xDS server: what `controller` runs, and half of `mesh`.
type controlPlane struct {
	src source.Runner
	xds *xds.Server
	log *slog.Logger

	mu       sync.Mutex
	last     source.Update
	reported map[string]bool // problems already logged, so each is logged once
	loaded   atomic.Bool
	// observers see each update before the xDS server does; they are set before run.
	observers []func(source.Update)
	// replica, when set, tells about this replica among others (leader election) in /config_dump.
	replica func() any
}

// observe has fn called with every update, before the xDS server gets its snapshot. Call it before run.
func (c *controlPlane) observe(fn func(source.Update)) { c.observers = append(c.observers, fn) }

// snapshot is the snapshot served; nil before the first.
func (c *controlPlane) snapshot() *model.Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last.Snapshot
}

func newControlPlane(src source.Runner, metrics prometheus.Registerer, log *slog.Logger) (*controlPlane, error) {
	srv, err := xds.New(xds.Options{Registry: metrics, Logger: log})
	if err != nil {
		return nil, err
	}
	return &controlPlane{src: src, xds: srv, log: log, reported: map[string]bool{}}, nil
}

// run serves xDS on lis and the source's snapshots to it until ctx ends.
func (c *controlPlane) run(ctx context.Context, lis net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	serveErr := make(chan error, 1)
	go func() { serveErr <- c.xds.Serve(ctx, lis) }()
	srcErr := c.src.Run(ctx, c.publish)
	cancel()
	return errors.Join(srcErr, <-serveErr)
}

// publish hands a source update to the xDS server and logs the problems not seen before.
func (c *controlPlane) publish(u source.Update) {
	c.mu.Lock()
	c.last = u
	current := map[string]bool{}
	for _, p := range u.Problems {
		s := p.String()
		current[s] = true
		if !c.reported[s] {
			if p.Severity == model.SeverityError {
				c.log.Error("config problem", "problem", s)
			} else {
				c.log.Warn("config problem", "problem", s)
			}
		}
	}
	c.reported = current
	c.mu.Unlock()
	for _, fn := range c.observers {
		fn(u)
	}
	if u.Snapshot != nil {
		c.xds.Update(u.Snapshot)
		c.loaded.Store(true)
	}
}

// ready reports whether the first snapshot is being served.
func (c *controlPlane) ready() bool { return c.loaded.Load() }

// dump is the controller's part of /config_dump: what is served and what is wrong.
func (c *controlPlane) dump() any {
	c.mu.Lock()
	u := c.last
	c.mu.Unlock()
	type listener struct {
		Address  string `json:"address"`
		Host     string `json:"host"`
		Protocol string `json:"protocol"`
		Codec    string `json:"codec"`
	}
	type service struct {
		Host      string   `json:"host"`
		Addresses []string `json:"addresses"`
		Allocated []string `json:"allocatedAddresses,omitempty"`
	}
	out := struct {
		Version   uint64     `json:"version"`
		Replica   any        `json:"replica,omitempty"`
		Services  []service  `json:"services"`
		Listeners []listener `json:"listeners"`
		Problems  []string   `json:"problems"`
	}{Services: []service{}, Listeners: []listener{}, Problems: []string{}}
	if c.replica != nil {
		out.Replica = c.replica()
	}
	if s := u.Snapshot; s != nil {
		out.Version = s.Version
		for _, svc := range s.MetaProtocolServices() {
			sv := service{Host: svc.Host}
			for _, a := range svc.Addresses {
				sv.Addresses = append(sv.Addresses, a.IP.String())
				if a.Allocated {
					sv.Allocated = append(sv.Allocated, a.IP.String())
				}
			}
			out.Services = append(out.Services, sv)
		}
		for _, l := range s.Listeners {
			out.Listeners = append(out.Listeners, listener{Address: l.Address.String(), Host: l.Service.Host,
				Protocol: l.Port.App, Codec: l.Port.Codec})
		}
	}
	for _, p := range u.Problems {
		out.Problems = append(out.Problems, p.String())
	}
	return out
}

func readyHandler(ready func() bool) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	}
}

func jsonHandler(v func() any) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(v())
	}
}
