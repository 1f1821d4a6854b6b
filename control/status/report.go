package status

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meltemi-mesh/meltemi/api/scheme"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source/kube"
	"github.com/meltemi-mesh/meltemi/control/xds"
)

// Reports are ConfigMaps, one per replica, named <set>-report-<identity> in the controller's
// namespace and labelled LabelReplicaSet=<set>, <set> being the name the replicas share (their
// Lease's).
const (
	// LabelReplicaSet marks a replica's report with the name of its set of replicas.
	LabelReplicaSet = "meltemi.io/replica-set"
	// reportKey is the ConfigMap key holding the report, as JSON.
	reportKey = "report.json"
	// DefaultReportInterval is how often a replica renews its report when nothing changes. A report
	// not renewed for three intervals is the report of a replica that is gone: it no longer counts, and
	// the leader deletes it.
	DefaultReportInterval = 30 * time.Second
	reportLifetimes       = 3
	// minReportGap spaces a replica's writes while its proxies come and ACK.
	minReportGap = 250 * time.Millisecond
)

// Report is what one replica says about the proxies connected to it.
type Report struct {
	// Replica is the identity of the replica.
	Replica string `json:"replica"`
	// RenewTime is when the replica wrote the report last.
	RenewTime metav1.Time `json:"renewTime"`
	// Proxies is the number of proxies connected to it.
	Proxies int `json:"proxies"`
	// Objects are, for each cluster object of Meltemi's kinds in the snapshot it serves (by "Kind
	// namespace/name"), the generation served and how many of its proxies have acknowledged a config
	// made with that generation.
	Objects map[string]ObjectReport `json:"objects,omitempty"`
}

// ObjectReport is what a Report says of one object.
type ObjectReport struct {
	Generation int64 `json:"generation"`
	Acked      int   `json:"acked"`
}

// expired reports whether a report was not renewed for long enough to be the report of a replica that is gone.
func (r Report) expired(interval time.Duration, now time.Time) bool {
	return now.Sub(r.RenewTime.Time) > reportLifetimes*interval
}

// ReportName is the name of the ConfigMap of a replica's report.
func ReportName(set, identity string) string { return set + "-report-" + identity }

// Proxies is what a Reporter reads of the replica's xDS server.
type Proxies interface {
	Proxies() []xds.ProxyStatus
	Changes() <-chan struct{}
}

// ReporterOptions configure a Reporter.
type ReporterOptions struct {
	// Namespace is where reports are kept; Set names the replicas' set; Identity is this replica's.
	Namespace, Set, Identity string
	// Interval is DefaultReportInterval when zero.
	Interval time.Duration
	// Logger receives failed writes (Warn).
	Logger *slog.Logger
}

// Reporter keeps the report of one replica current. Every replica runs one.
type Reporter struct {
	opts    ReporterOptions
	client  client.Client
	proxies Proxies

	mu      sync.Mutex
	history map[uint64]map[string]int64 // the generations of Meltemi's objects in each snapshot served
	latest  uint64
	changed chan struct{}
}

// NewReporter returns a reporter for the proxies of one xDS server. It contacts nothing until Run.
func NewReporter(cfg *rest.Config, proxies Proxies, opts ReporterOptions) (*Reporter, error) {
	if opts.Namespace == "" || opts.Set == "" || opts.Identity == "" {
		return nil, errors.New("status: a report needs a namespace, the replicas' set and this replica's identity")
	}
	opts.Interval = cmp.Or(opts.Interval, DefaultReportInterval)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	return &Reporter{opts: opts, client: c, proxies: proxies, history: map[uint64]map[string]int64{},
		changed: make(chan struct{}, 1)}, nil
}

// Record notes the generations of the objects of a snapshot. Call it before the snapshot is handed to
// the xDS server, so that every model version a proxy may report running is known.
func (r *Reporter) Record(snap *model.Snapshot) {
	if snap == nil {
		return
	}
	gens := map[string]int64{}
	for _, obj := range snap.Objects.All() {
		if m := obj.Metadata(); ourKind(m.Kind) && kube.FromCluster(m.Origin, m.Key()) {
			gens[m.Key().String()] = m.Origin.Generation
		}
	}
	r.mu.Lock()
	r.history[snap.Version] = gens
	r.latest = max(r.latest, snap.Version)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// report computes the report for the proxies connected now, and forgets the snapshots no connected
// proxy runs any more.
func (r *Reporter) report(now time.Time) Report {
	statuses := r.proxies.Proxies()
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := Report{Replica: r.opts.Identity, RenewTime: metav1.NewTime(now.UTC().Truncate(time.Second)), Objects: map[string]ObjectReport{}}
	latest := r.history[r.latest]
	for key, gen := range latest {
		rep.Objects[key] = ObjectReport{Generation: gen}
	}
	oldest := r.latest
	for _, p := range statuses {
		if p.Streams == 0 {
			continue
		}
		rep.Proxies++
		if !p.Synced || p.Error != "" {
			continue
		}
		oldest = min(oldest, p.ModelVersion)
		runs := r.history[p.ModelVersion]
		for key, gen := range latest {
			if g, ok := runs[key]; ok && g == gen {
				o := rep.Objects[key]
				o.Acked++
				rep.Objects[key] = o
			}
		}
	}
	for v := range r.history {
		if v < oldest {
			delete(r.history, v)
		}
	}
	return rep
}

// Run keeps the replica's report current until ctx ends, then deletes it: a replica that stops
// gracefully no longer counts at once, one that crashes once its report expires.
func (r *Reporter) Run(ctx context.Context) error {
	var (
		last      Report
		written   bool
		lastWrite time.Time
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	defer r.delete()
	for {
		proxiesChanged := r.proxies.Changes()
		select {
		case <-ctx.Done():
			return nil
		case <-r.changed:
		case <-proxiesChanged:
		case <-timer.C:
		}
		now := time.Now()
		if wait := minReportGap - now.Sub(lastWrite); wait > 0 {
			resetTimer(timer, wait)
			continue
		}
		rep := r.report(now)
		if written && sameReport(rep, last) && now.Sub(lastWrite) < r.opts.Interval {
			resetTimer(timer, r.opts.Interval-now.Sub(lastWrite))
			continue
		}
		if err := r.write(ctx, rep); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.opts.Logger.Warn("status: cannot write this replica's report; retrying", "configmap",
				r.opts.Namespace+"/"+ReportName(r.opts.Set, r.opts.Identity), "error", err)
			resetTimer(timer, retryAfter)
			continue
		}
		last, written, lastWrite = rep, true, now
		resetTimer(timer, r.opts.Interval)
	}
}

func sameReport(a, b Report) bool {
	return a.Proxies == b.Proxies && maps.Equal(a.Objects, b.Objects)
}

func (r *Reporter) write(ctx context.Context, rep Report) error {
	data, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	key := types.NamespacedName{Namespace: r.opts.Namespace, Name: ReportName(r.opts.Set, r.opts.Identity)}
	var cm corev1.ConfigMap
	err = r.client.Get(ctx, key, &cm)
	if apierrors.IsNotFound(err) {
		cm = corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: map[string]string{
				LabelReplicaSet: r.opts.Set, "app.kubernetes.io/name": "meltemi", "app.kubernetes.io/component": "controller"}},
			Data: map[string]string{reportKey: string(data)},
		}
		return r.client.Create(ctx, &cm)
	}
	if err != nil {
		return err
	}
	cm.Data = map[string]string{reportKey: string(data)}
	return r.client.Update(ctx, &cm)
}

func (r *Reporter) delete() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: r.opts.Namespace, Name: ReportName(r.opts.Set, r.opts.Identity)}}
	if err := r.client.Delete(ctx, cm); err != nil && !apierrors.IsNotFound(err) {
		r.opts.Logger.Warn("status: cannot delete this replica's report; it expires on its own", "configmap",
			r.opts.Namespace+"/"+cm.Name, "error", err)
	}
}

// parseReport reads a report ConfigMap.
func parseReport(cm *corev1.ConfigMap) (Report, error) {
	var rep Report
	if err := json.Unmarshal([]byte(cm.Data[reportKey]), &rep); err != nil {
		return Report{}, fmt.Errorf("report %s/%s: %w", cm.Namespace, cm.Name, err)
	}
	return rep, nil
}

// sum adds up the reports of the replicas.
func sum(reports []Report) acks {
	return func(key model.Key, gen int64) (acked, connected int) {
		k := key.String()
		for _, r := range reports {
			connected += r.Proxies
			if o, ok := r.Objects[k]; ok && o.Generation == gen {
				acked += o.Acked
			}
		}
		return acked, connected
	}
}

// retryAfter is how soon to try again after the API server refused a write.
const retryAfter = 5 * time.Second

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(max(d, 0))
}

// sortReports orders reports by replica, for messages and tests.
func sortReports(reports []Report) {
	slices.SortFunc(reports, func(a, b Report) int { return cmp.Compare(a.Replica, b.Replica) })
}
