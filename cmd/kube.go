package meltemicmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/control/election"
	"github.com/meltemi-mesh/meltemi/control/source"
	"github.com/meltemi-mesh/meltemi/control/source/kube"
	"github.com/meltemi-mesh/meltemi/control/status"
	"github.com/meltemi-mesh/meltemi/control/validation"
	"github.com/meltemi-mesh/meltemi/control/webhook"
)

// kubeFlags are the flags that make a command read a Kubernetes cluster, and those of what the
// controller does there besides reading: leader election, status, the webhook server.
type kubeFlags struct {
	enabled       bool
	kubeconfig    string
	clusterDomain string
	namespace     string

	leaderElect    bool
	leaseNamespace string
	leaseID        string
	leaseDuration  time.Duration
	renewDeadline  time.Duration
	retryPeriod    time.Duration
	reportInterval time.Duration

	webhookAddr    string
	webhookService string
	webhookHosts   []string
}

// serviceAccountNamespace holds the namespace of the pod the controller runs in.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// defaultNamespace is the controller's namespace when none is given: its pod's, else meltemi-system.
func defaultNamespace() string {
	if b, err := os.ReadFile(serviceAccountNamespace); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b))
	}
	return "meltemi-system"
}

func (f *kubeFlags) add(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.BoolVar(&f.enabled, "kube", false, "read config from a Kubernetes cluster (Services, EndpointSlices, Istio and Aeraki objects); "+
		"with -f, the folder's objects too")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file of the cluster; the in-cluster config when absent (with --kube)")
	fs.StringVar(&f.clusterDomain, "cluster-domain", kube.DefaultClusterDomain, "DNS domain of the cluster's Services (with --kube)")
}

// addController adds the flags of what only the controller does in a cluster.
func (f *kubeFlags) addController(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.namespace, "namespace", "", "namespace of the controller's own objects: the replicas' reports, the webhook's Secret "+
		"(default: the pod's namespace, else meltemi-system)")
	fs.BoolVar(&f.leaderElect, "leader-elect", true, "with --kube, run the singletons (status, address records, webhook caBundle) "+
		"only on the replica holding the Lease; off, this replica runs them")
	fs.StringVar(&f.leaseNamespace, "leader-election-namespace", "", "namespace of the Lease (default: --namespace)")
	fs.StringVar(&f.leaseID, "leader-election-id", "meltemi-controller", "name of the Lease, which the replicas of one controller share; "+
		"it also names their reports and the webhook's Secret")
	fs.DurationVar(&f.leaseDuration, "leader-election-lease-duration", election.DefaultLeaseDuration,
		"how long the other replicas wait before taking over from a leader that vanished")
	fs.DurationVar(&f.renewDeadline, "leader-election-renew-deadline", election.DefaultRenewDeadline,
		"how long the leader keeps trying to renew the Lease before it stops its singletons")
	fs.DurationVar(&f.retryPeriod, "leader-election-retry-period", election.DefaultRetryPeriod,
		"how often the replicas try to take the Lease, and the leader to renew it")
	fs.DurationVar(&f.reportInterval, "status-report-interval", status.DefaultReportInterval,
		"how often a replica renews the report of its proxies when nothing changes; a report three intervals old is a gone replica's")
	fs.StringVar(&f.webhookAddr, "webhook-addr", "", "host:port the admission webhook server listens on (HTTPS); off when empty")
	fs.StringVar(&f.webhookService, "webhook-service", "", "Service NAME.NAMESPACE the API server calls the webhooks through: "+
		"the certificate is for it, and its webhooks get the caBundle")
	fs.StringSliceVar(&f.webhookHosts, "webhook-hosts", nil, "further DNS names or IP addresses the webhook certificate is for, "+
		"for an API server that calls the webhooks by URL; their webhooks get the caBundle")
}

// logTo sends client-go's and controller-runtime's logs, which go through their own global loggers,
// where ours go.
func logTo(log *slog.Logger) {
	logger := logr.FromSlogHandler(log.Handler())
	klog.SetLogger(logger)
	ctrllog.SetLogger(logger)
}

// source returns the kube source the flags describe, and a description of it for logs.
func (f *kubeFlags) source(cfg *rest.Config, codecs *codec.Registry, log *slog.Logger) (source.Runner, string, error) {
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
	var cfg *rest.Config
	var err error
	if f.kubeconfig != "" {
		if cfg, err = clientcmd.BuildConfigFromFlags("", f.kubeconfig); err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", f.kubeconfig, err)
		}
	} else if cfg, err = rest.InClusterConfig(); err != nil {
		return nil, fmt.Errorf("--kube without --kubeconfig needs the in-cluster config: %w", err)
	}
	cfg.UserAgent = "meltemi-controller/" + version
	return cfg, nil
}

// kubeRuntime is what the controller runs in a cluster besides its source: the replica's report, the
// webhook server, and the singletons, on the leader.
type kubeRuntime struct {
	cfg      *rest.Config
	flags    *kubeFlags
	log      *slog.Logger
	identity string
	elector  *election.Elector // nil without --leader-elect: this replica runs the singletons
	reporter *status.Reporter
	metrics  *status.Metrics
	latest   *source.Latest
	webhook  *webhook.Server
	lis      net.Listener // the webhook server's
}

// kubeRuntime checks the flags and builds what the controller runs in the cluster for cp, binding the
// webhook server's address so that one in use is reported at start.
func (f *kubeFlags) runtime(cfg *rest.Config, cp *controlPlane, codecs *codec.Registry, reg prometheus.Registerer,
	log *slog.Logger) (*kubeRuntime, error) {
	ns := f.namespace
	if ns == "" {
		ns = defaultNamespace()
	}
	f.namespace = ns
	if f.leaseNamespace == "" {
		f.leaseNamespace = ns
	}
	k := &kubeRuntime{cfg: cfg, flags: f, log: log, identity: election.NewIdentity(), latest: &source.Latest{}}
	if f.leaderElect {
		e, err := election.New(cfg, election.Options{
			Namespace: f.leaseNamespace, Name: f.leaseID, Identity: k.identity,
			LeaseDuration: f.leaseDuration, RenewDeadline: f.renewDeadline, RetryPeriod: f.retryPeriod, Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("--leader-election-*: %w", err)
		}
		k.elector = e
	}
	var err error
	if k.metrics, err = status.NewMetrics(reg); err != nil {
		return nil, err
	}
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meltemi_controller_leader",
		Help: "1 while this replica runs the singletons (holds the Lease, or runs without leader election), else 0.",
	}, func() float64 {
		if k.leading() {
			return 1
		}
		return 0
	})); err != nil {
		return nil, err
	}
	k.reporter, err = status.NewReporter(cfg, cp.xds, status.ReporterOptions{
		Namespace: ns, Set: f.leaseID, Identity: k.identity, Interval: f.reportInterval, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	cp.observe(func(u source.Update) {
		// Before the xDS server has the snapshot: its proxies may report running it at once.
		k.reporter.Record(u.Snapshot)
		k.latest.Publish(u)
	})
	switch {
	case f.webhookAddr == "" && (f.webhookService != "" || len(f.webhookHosts) > 0):
		return nil, errors.New("--webhook-service and --webhook-hosts need --webhook-addr")
	case f.webhookAddr != "":
		k.webhook, err = webhook.New(cfg, webhook.Options{
			Service: f.webhookService, Hosts: f.webhookHosts, ClusterDomain: f.clusterDomain,
			Namespace: ns, SecretName: f.leaseID + "-webhook-tls", Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("--webhook-*: %w", err)
		}
		k.webhook.Handle(validation.Path, &validation.Handler{Snapshot: cp.snapshot, Model: localModel(codecs)})
		if k.lis, err = net.Listen("tcp", f.webhookAddr); err != nil {
			return nil, fmt.Errorf("--webhook-addr: %w", err)
		}
	}
	return k, nil
}

// close releases what runtime bound, for a controller that stops before it runs; nil does nothing.
func (k *kubeRuntime) close() {
	if k != nil && k.lis != nil {
		k.lis.Close()
	}
}

// leading reports whether this replica runs the singletons.
func (k *kubeRuntime) leading() bool { return k.elector == nil || k.elector.Leading() }

// ready reports whether what the replica serves besides xDS is ready: the webhook's certificate.
func (k *kubeRuntime) ready() bool { return k.webhook == nil || k.webhook.Ready() }

// run runs the report, the webhook server and the election until ctx ends or one of them fails.
func (k *kubeRuntime) run(ctx context.Context) error {
	tasks := []func(context.Context) error{k.reporter.Run}
	if k.webhook != nil {
		tasks = append(tasks, func(ctx context.Context) error { return k.webhook.Run(ctx, k.lis) })
	}
	if k.elector != nil {
		tasks = append(tasks, func(ctx context.Context) error { return k.elector.Run(ctx, k.singletons) })
	} else {
		tasks = append(tasks, k.singletons)
	}
	return runAll(ctx, tasks...)
}

// singletons is what only one replica runs at a time.
func (k *kubeRuntime) singletons(ctx context.Context) error {
	writer, err := status.NewWriter(k.cfg, status.WriterOptions{
		Updates: k.latest, Namespace: k.flags.namespace, Set: k.flags.leaseID, ReportInterval: k.flags.reportInterval,
		Metrics: k.metrics, Logger: k.log,
	})
	if err != nil {
		return err
	}
	addresses, err := status.NewAddresses(k.cfg, status.AddressesOptions{Updates: k.latest, Metrics: k.metrics, Logger: k.log})
	if err != nil {
		return err
	}
	tasks := []func(context.Context) error{writer.Run, addresses.Run}
	if k.webhook != nil {
		tasks = append(tasks, k.webhook.PatchCABundles)
	}
	return runAll(ctx, tasks...)
}

// dump is the replica's part of /config_dump.
func (k *kubeRuntime) dump() any {
	out := struct {
		Identity string   `json:"identity"`
		Leader   string   `json:"leader,omitempty"`
		Leading  bool     `json:"leading"`
		Webhooks []string `json:"webhooks,omitempty"`
	}{Identity: k.identity, Leading: k.leading()}
	if k.elector != nil {
		out.Leader = k.elector.Leader()
	} else {
		out.Leader = k.identity
	}
	if k.webhook != nil {
		out.Webhooks = k.webhook.Paths()
	}
	return out
}

// runAll runs tasks side by side until ctx ends or one of them returns, which stops the others; it
// returns once all have returned, with their errors.
func runAll(ctx context.Context, tasks ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(tasks))
	var wg sync.WaitGroup
	for i, task := range tasks {
		wg.Go(func() {
			errs[i] = task(ctx)
			cancel()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
