package meltemicmd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/meltemi-mesh/meltemi/proxy"
	proxyxds "github.com/meltemi-mesh/meltemi/proxy/xds"
)

func newMeshCommand(p Plugins) *cobra.Command {
	var (
		dir, xdsAddr, admin string
		locality            string
		logs                logFlags
	)
	cmd := &cobra.Command{
		Use:   "mesh -f DIR",
		Short: "Run a whole mesh on this machine: controller and proxy, configured by the manifests in DIR",
		Long: `Run the controller and a local-mode proxy in one process. The controller serves the manifests in DIR
(watched: edits are live in under a second) over real xDS on --xds; the proxy dials it, and listens on every
meta-protocol port of every ServiceEntry address (an address in 127.0.0.0/8 is allocated from 127.240.0.0/16
for a ServiceEntry without one), so a client simply dials the service's address.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			proxy.TuneRuntime()
			log, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if _, err := proxyxds.ParseLocality(locality); err != nil {
				return fmt.Errorf("--locality: %w", err)
			}
			codecs, err := p.codecs()
			if err != nil {
				return err
			}
			filters, err := p.filters()
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			src, err := fileSource(dir, codecs, log)
			if err != nil {
				return err
			}
			metrics := newMetricsRegistry()
			cp, err := newControlPlane(src, metrics, log)
			if err != nil {
				return err
			}
			lis, err := net.Listen("tcp", xdsAddr)
			if err != nil {
				return fmt.Errorf("--xds: %w", err)
			}
			p, err := proxy.New(proxy.Options{Codecs: codecs, Filters: filters, Logger: log, Metrics: metrics})
			if err != nil {
				lis.Close()
				return err
			}
			defer p.Close()
			host, _ := os.Hostname()
			client, err := proxyxds.New(proxyxds.Options{
				Address: lis.Addr().String(),
				Node:    proxyxds.Node{ID: "mesh~" + host, Mode: proxyxds.ModeLocal, Locality: locality},
				Codecs:  codecs,
				Proxy:   p,
				Logger:  log,
				Metrics: metrics,
			})
			if err != nil {
				lis.Close()
				return err
			}
			proxyAdmin := p.AdminHandler()
			mux := http.NewServeMux()
			mux.Handle("/metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
			mux.Handle("/ready", proxyAdmin)
			mux.HandleFunc("/config_dump", jsonHandler(func() any {
				return map[string]any{"controller": cp.dump(), "proxy": p.ConfigDump()}
			}))
			wait, err := serveHTTP(ctx, admin, mux, log)
			if err != nil {
				lis.Close()
				return fmt.Errorf("--admin: %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "meltemi mesh: serving %s (xDS on %s, admin on http://%s)\n", dir,
				lis.Addr(), admin)

			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			cpErr := make(chan error, 1)
			go func() { cpErr <- cp.run(ctx, lis) }()
			clientErr := client.Run(ctx)
			cancel()
			return errors.Join(clientErr, <-cpErr, wait())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&dir, "filename", "f", "", "folder of YAML manifests to serve (watched)")
	f.StringVar(&xdsAddr, "xds", "127.0.0.1:15010", "host:port the controller's xDS server listens on")
	f.StringVar(&admin, "admin", "127.0.0.1:15000", "host:port serving /ready, /metrics and /config_dump")
	f.StringVar(&locality, "locality", "", "where the proxy runs, region/zone/subzone; with outlier detection, nearer endpoints come first")
	cmd.MarkFlagRequired("filename")
	logs.add(cmd)
	return cmd
}
