package meltemicmd

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meltemi-mesh/meltemi/control/envoyfilter"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source/file"
)

func newCompatCommand(p Plugins) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "compat",
		Short: "Config for data planes built for Aeraki",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newCompatEnvoyFiltersCommand(p))
	return cmd
}

func newCompatEnvoyFiltersCommand(p Plugins) *cobra.Command {
	var (
		dir       string
		opts      envoyfilter.Options
		accessLog envoyfilter.AccessLog
		sampling  float64
	)
	cmd := &cobra.Command{
		Use:   "envoyfilters -f DIR",
		Short: "Print the EnvoyFilters that point Aeraki's Envoy sidecars at Meltemi",
		Long: `Print, as YAML for kubectl apply, the Istio EnvoyFilters that Aeraki's control plane writes for the
meta-protocol services of the manifests in DIR: for each port, one per address that replaces the outbound
listener's tcp_proxy with the MetaProtocol proxy (routes over RDS from Meltemi's controller, through the
bootstrap cluster --xds-cluster), and one for the workloads the ServiceEntry selects that does the same on
their inbound listener, with the MetaRouter's rate limits. The names are Aeraki's, so the objects replace
Aeraki's in place. What is left out, and why, is printed to stderr; the exit status is 1 if any of it is
an error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			if f.Changed("access-log-file") || f.Changed("access-log-encoding") || f.Changed("access-log-format") {
				opts.AccessLog = &accessLog
			}
			if f.Changed("tracing-sampling") {
				opts.Tracing = &envoyfilter.Tracing{Sampling: sampling}
			}
			reg, err := p.codecs()
			if err != nil {
				return err
			}
			u, err := file.New(dir, file.Options{Model: model.Options{Codecs: codecsOf(reg)}}).Scan()
			if err != nil {
				return err
			}
			filters, problems, err := envoyfilter.Generate(u.Snapshot, opts)
			if err != nil {
				return err
			}
			out, err := envoyfilter.MarshalYAML(filters)
			if err != nil {
				return err
			}
			if _, err := cmd.OutOrStdout().Write(out); err != nil {
				return err
			}
			problems = append(u.Problems, problems...)
			for _, p := range problems {
				fmt.Fprintln(cmd.ErrOrStderr(), p)
			}
			if model.HasErrors(problems) {
				return errInvalidConfig
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&dir, "filename", "f", "", "folder of YAML manifests (or one file)")
	f.StringVar(&opts.XDSCluster, "xds-cluster", envoyfilter.DefaultXDSCluster,
		"bootstrap cluster of the sidecars that reaches Meltemi's controller (Aeraki's is aeraki-xds)")
	f.StringVar(&opts.RootNamespace, "root-namespace", envoyfilter.DefaultRootNamespace,
		"Istio's config root namespace, where the EnvoyFilters go unless namespace-scoped or exported")
	f.BoolVar(&opts.NamespaceScoped, "namespace-scoped", false,
		"put each service's EnvoyFilters in its ServiceEntry's namespace")
	f.StringVar(&accessLog.Path, "access-log-file", "", "file the sidecars log requests to (meshConfig.accessLogFile)")
	f.StringVar(&accessLog.Encoding, "access-log-encoding", "TEXT", "TEXT or JSON (meshConfig.accessLogEncoding)")
	f.StringVar(&accessLog.Format, "access-log-format", "", "access log format (meshConfig.accessLogFormat); Aeraki's by default")
	f.Float64Var(&sampling, "tracing-sampling", 0,
		"turn tracing on, sampling this percentage of requests (meshConfig.defaultConfig.tracing.sampling)")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}
