package meltemicmd

import (
	"fmt"
	"log/slog"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/control/source"
	"github.com/meltemi-mesh/meltemi/control/source/kube"
)

// kubeFlags are the flags that make a command read a Kubernetes cluster.
type kubeFlags struct {
	enabled       bool
	kubeconfig    string
	clusterDomain string
}

func (f *kubeFlags) add(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.BoolVar(&f.enabled, "kube", false, "read config from a Kubernetes cluster (Services, EndpointSlices, Istio and Aeraki objects); "+
		"with -f, the folder's objects too")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file of the cluster; the in-cluster config when absent (with --kube)")
	fs.StringVar(&f.clusterDomain, "cluster-domain", kube.DefaultClusterDomain, "DNS domain of the cluster's Services (with --kube)")
}

// source returns the kube source the flags describe, and a description of it for logs.
func (f *kubeFlags) source(codecs *codec.Registry, log *slog.Logger) (source.Runner, string, error) {
	cfg, err := f.restConfig()
	if err != nil {
		return nil, "", err
	}
	cfg.UserAgent = "meltemi-controller/" + version
	// client-go and controller-runtime log through their own global loggers; they go where ours go.
	logger := logr.FromSlogHandler(log.Handler())
	klog.SetLogger(logger)
	ctrllog.SetLogger(logger)
	src, err := kube.New(cfg, kube.Options{
		Model:         localModel(codecs),
		ClusterDomain: f.clusterDomain,
		Logger:        log,
	})
	if err != nil {
		return nil, "", err
	}
	return src, "kube " + cfg.Host, nil
}

func (f *kubeFlags) restConfig() (*rest.Config, error) {
	if f.kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", f.kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", f.kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("--kube without --kubeconfig needs the in-cluster config: %w", err)
	}
	return cfg, nil
}
