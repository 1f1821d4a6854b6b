package status

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/meltemi-mesh/meltemi/api/scheme"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
)

// Metrics are the status writers' Prometheus series, shared by the writers of every term of
// leadership.
type Metrics struct {
	writes *prometheus.CounterVec
}

// NewMetrics registers the series on reg; nil leaves them unregistered.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{writes: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meltemi_controller_status_writes_total",
		Help: "Writes to the status of cluster objects (conditions of Meltemi's kinds, addresses of ServiceEntries), by kind and result.",
	}, []string{"kind", "result"})}
	if reg != nil {
		if err := reg.Register(m.writes); err != nil {
			return nil, fmt.Errorf("status: metrics: %w", err)
		}
	}
	return m, nil
}

func (m *Metrics) wrote(kind string, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.writes.WithLabelValues(kind, result).Inc()
}

// WriterOptions configure a Writer.
type WriterOptions struct {
	// Updates are the source's updates, which the controller serves.
	Updates *source.Latest
	// Namespace and Set are where the replicas' reports are, and the name of their set.
	Namespace, Set string
	// ReportInterval is the replicas' (DefaultReportInterval when zero): it says when a report has expired.
	ReportInterval time.Duration
	Metrics        *Metrics
	// Logger receives failed writes (Warn) and reports of replicas that are gone (Info).
	Logger *slog.Logger
}

// Writer writes the Accepted and Programmed conditions of the cluster objects of Meltemi's kinds. It
// is a singleton: the leader runs it.
type Writer struct {
	cfg    *rest.Config
	opts   WriterOptions
	client client.Client
	// written remembers the last write to each object, by uid: until the cache has seen it, the
	// cache's object is older than what was written, and writing the same again would be a waste.
	written map[types.UID]write
}

// write is one status write: the resourceVersion of the object it was made from, and what was written.
type write struct {
	from       string
	generation int64
	conditions []metav1.Condition
}

// NewWriter returns a writer for the cluster cfg talks to. It contacts nothing until Run.
func NewWriter(cfg *rest.Config, opts WriterOptions) (*Writer, error) {
	if opts.Updates == nil || opts.Namespace == "" || opts.Set == "" {
		return nil, fmt.Errorf("status: the writer needs the updates, and the namespace and set of the replicas' reports")
	}
	opts.ReportInterval = cmp.Or(opts.ReportInterval, DefaultReportInterval)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	return &Writer{cfg: cfg, opts: opts, client: c, written: map[types.UID]write{}}, nil
}

// Run writes conditions until ctx ends: after each update of the source, change of an object, or
// change of a report.
func (w *Writer) Run(ctx context.Context) error {
	httpClient, err := rest.HTTPClientFor(w.cfg)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	mapper, err := apiutil.NewDynamicRESTMapper(w.cfg, httpClient)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	var kinds []schema.GroupVersionKind
	for _, gvk := range Kinds {
		if _, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err == nil {
			kinds = append(kinds, gvk)
		} else if !meta.IsNoMatchError(err) {
			return fmt.Errorf("status: discovering %s: %w", gvk.Kind, err)
		}
		// A kind the cluster does not serve has no objects to write to; the source says it is not watched.
	}
	c, err := cache.New(w.cfg, cache.Options{
		HTTPClient:                   httpClient,
		Scheme:                       scheme.New(),
		Mapper:                       mapper,
		DefaultTransform:             cache.TransformStripManagedFields(),
		DefaultUnsafeDisableDeepCopy: new(true),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.ConfigMap{}: {
				Namespaces: map[string]cache.Config{w.opts.Namespace: {}},
				Label:      labels.SelectorFromSet(labels.Set{LabelReplicaSet: w.opts.Set}),
			},
		},
		DefaultWatchErrorHandler: func(_ context.Context, r *toolscache.Reflector, err error) {
			w.opts.Logger.Warn("status: cannot list or watch; retrying", "type", r.TypeDescription(), "error", err)
		},
	})
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	changed := make(chan struct{}, 1)
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { signal() }, UpdateFunc: func(any, any) { signal() }, DeleteFunc: func(any) { signal() },
	}
	watched := []client.Object{&corev1.ConfigMap{}}
	for _, gvk := range kinds {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		watched = append(watched, u)
	}
	for _, obj := range watched {
		inf, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
		if err != nil {
			return fmt.Errorf("status: %w", err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("status: %w", err)
		}
	}
	cacheDone := make(chan error, 1)
	go func() { cacheDone <- c.Start(ctx) }()
	defer func() { <-cacheDone }()
	if !c.WaitForCacheSync(ctx) {
		return nil
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		_, _, updated := w.opts.Updates.Get()
		next := w.round(ctx, c, kinds, time.Now())
		resetTimer(timer, next)
		select {
		case <-ctx.Done():
			return nil
		case <-updated:
		case <-changed:
		case <-timer.C:
		}
	}
}

// round writes what differs, and returns when to look again without being woken: when a report expires,
// or a write is to be retried.
func (w *Writer) round(ctx context.Context, c client.Reader, kinds []schema.GroupVersionKind, now time.Time) time.Duration {
	next := time.Hour
	u, ok, _ := w.opts.Updates.Get()
	if !ok {
		return next
	}
	reports, expiresIn := w.reports(ctx, c, now)
	next = min(next, expiresIn)
	v := newView(u)
	proxies := sum(reports)
	seen := map[types.UID]bool{}
	for _, gvk := range kinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := c.List(ctx, list); err != nil {
			w.opts.Logger.Warn("status: reading the cache", "kind", gvk.Kind, "error", err)
			continue
		}
		for i := range list.Items {
			obj := &list.Items[i]
			seen[obj.GetUID()] = true
			if err := w.sync(ctx, obj, v, proxies, now); err != nil {
				if ctx.Err() != nil {
					return next
				}
				w.opts.Logger.Warn("status: cannot write the status; retrying", "kind", gvk.Kind,
					"object", obj.GetNamespace()+"/"+obj.GetName(), "error", err)
				next = min(next, retryAfter)
			}
		}
	}
	for uid := range w.written {
		if !seen[uid] {
			delete(w.written, uid)
		}
	}
	return next
}

// sync writes the conditions of one object if they differ from those it has.
func (w *Writer) sync(ctx context.Context, obj *unstructured.Unstructured, v view, proxies acks, now time.Time) error {
	key := model.Key{Kind: model.Kind(obj.GetKind()), Namespace: obj.GetNamespace(), Name: obj.GetName()}
	gen := obj.GetGeneration()
	if !v.knows(key, gen) {
		return nil // the source has not read this generation yet; its update wakes the writer
	}
	have, haveGen := statusOf(obj)
	want := v.conditions(key, gen, proxies, have, now)
	if haveGen == gen && sameConditions(want, have) {
		return nil
	}
	if last, ok := w.written[obj.GetUID()]; ok && last.from == obj.GetResourceVersion() &&
		last.generation == gen && sameConditions(want, last.conditions) {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"observedGeneration": gen, "conditions": want}})
	if err != nil {
		return err
	}
	target := &unstructured.Unstructured{}
	target.SetGroupVersionKind(obj.GroupVersionKind())
	target.SetNamespace(obj.GetNamespace())
	target.SetName(obj.GetName())
	err = w.client.Status().Patch(ctx, target, client.RawPatch(types.MergePatchType, patch))
	if apierrors.IsNotFound(err) {
		return nil // deleted meanwhile
	}
	w.opts.Metrics.wrote(obj.GetKind(), err)
	if err != nil {
		return err
	}
	w.written[obj.GetUID()] = write{from: obj.GetResourceVersion(), generation: gen, conditions: want}
	return nil
}

// statusOf reads the conditions and observed generation an object's status holds; what cannot be
// read counts as nothing, to be overwritten.
func statusOf(obj *unstructured.Unstructured) ([]metav1.Condition, int64) {
	status, _ := obj.Object["status"].(map[string]any)
	var st struct {
		ObservedGeneration int64              `json:"observedGeneration"`
		Conditions         []metav1.Condition `json:"conditions"`
	}
	if status != nil {
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(status, &st)
	}
	return st.Conditions, st.ObservedGeneration
}

// reports returns the reports of the replicas that are alive, deleting those of replicas that are
// gone, and how long until the first of the live ones expires.
func (w *Writer) reports(ctx context.Context, c client.Reader, now time.Time) ([]Report, time.Duration) {
	var list corev1.ConfigMapList
	if err := c.List(ctx, &list, client.InNamespace(w.opts.Namespace), client.MatchingLabels{LabelReplicaSet: w.opts.Set}); err != nil {
		w.opts.Logger.Warn("status: reading the replicas' reports", "error", err)
		return nil, retryAfter
	}
	var out []Report
	next := time.Hour
	for i := range list.Items {
		cm := &list.Items[i]
		rep, err := parseReport(cm)
		if err != nil {
			w.opts.Logger.Warn("status: a replica's report cannot be read; not counted", "error", err)
			continue
		}
		if rep.expired(w.opts.ReportInterval, now) {
			w.opts.Logger.Info("status: the report of a replica that is gone is deleted", "replica", rep.Replica,
				"renewed", rep.RenewTime.Time)
			if err := w.client.Delete(ctx, cm.DeepCopy()); err != nil && !apierrors.IsNotFound(err) {
				w.opts.Logger.Warn("status: cannot delete an expired report", "configmap", cm.Namespace+"/"+cm.Name, "error", err)
			}
			continue
		}
		out = append(out, rep)
		next = min(next, rep.RenewTime.Add(reportLifetimes*w.opts.ReportInterval).Sub(now)+time.Second)
	}
	sortReports(out)
	return out, next
}
