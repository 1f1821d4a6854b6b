package meltemicmd

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/proxy/xds"
)

func newProxyCommand(p Plugins) *cobra.Command {
	var (
		xdsAddr, node, mode, admin string
		namespace, workload        string
		locality                   string
		labels                     map[string]string
		logs                       logFlags
	)
	cmd := &cobra.Command{
		Use:   "proxy --xds ADDR",
		Short: "Run the MetaProtocol proxy, configured over xDS by a controller",
		Long: `Run the data plane: listeners for Dubbo and the other meta-protocols, configured over ADS by the
controller at --xds (meltemi controller, meltemi mesh, or an Aeraki control plane). The proxy keeps
serving its last config while the controller is away, and resyncs when it comes back.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			proxy.TuneRuntime()
			if xdsAddr == "" {
				return errors.New("--xds: the controller's address is required")
			}
			m := xds.Mode(strings.ToLower(mode))
			switch m {
			case xds.ModeLocal, xds.ModeSidecar, xds.ModeGateway:
			default:
				return fmt.Errorf("--mode: %q is not local, sidecar or gateway", mode)
			}
			if _, err := xds.ParseLocality(locality); err != nil {
				return fmt.Errorf("--locality: %w", err)
			}
			if node == "" {
				host, err := os.Hostname()
				if err != nil {
					return fmt.Errorf("--node not given and no hostname: %w", err)
				}
				node = string(m) + "~" + host
			}
			log, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
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

			metrics := newMetricsRegistry()
			p, err := proxy.New(proxy.Options{Codecs: codecs, Filters: filters, Logger: log, Metrics: metrics})
			if err != nil {
				return err
			}
			defer p.Close()
			client, err := xds.New(xds.Options{
				Address: xdsAddr,
				Node: xds.Node{ID: node, Mode: m, Namespace: namespace, WorkloadName: workload,
					Labels: labels, Locality: locality},
				Codecs:  codecs,
				Proxy:   p,
				Logger:  log,
				Metrics: metrics,
			})
			if err != nil {
				return err
			}
			wait, err := serveHTTP(ctx, admin, p.AdminHandler(), log)
			if err != nil {
				return fmt.Errorf("--admin: %w", err)
			}
			log.Info("proxy started", "node", node, "mode", m, "xds", xdsAddr, "admin", admin)
			runErr := client.Run(ctx)
			stop()
			return errors.Join(runErr, wait())
		},
	}
	f := cmd.Flags()
	f.StringVar(&xdsAddr, "xds", "", "host:port of the controller's xDS server")
	f.StringVar(&node, "node", "", "xDS node id (default MODE~HOSTNAME)")
	f.StringVar(&mode, "mode", "local", "local, sidecar or gateway; sent to the controller in the node metadata")
	f.StringVar(&admin, "admin", "127.0.0.1:15000", "host:port serving /ready, /metrics and /config_dump")
	f.StringVar(&namespace, "namespace", "", "namespace of the workload this proxy serves")
	f.StringVar(&workload, "workload", "", "name of the workload this proxy serves")
	f.StringToStringVar(&labels, "labels", nil, "labels of the workload (app=x,version=v1)")
	f.StringVar(&locality, "locality", "", "where the proxy runs, region/zone/subzone; with outlier detection, nearer endpoints come first")
	logs.add(cmd)
	return cmd
}
