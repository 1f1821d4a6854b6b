// Package kube is the config source that reads a Kubernetes cluster: core Services with their
// EndpointSlices (and the Pods and Nodes those point at, for endpoint labels, service accounts and
// localities), Istio's ServiceEntry, WorkloadEntry and DestinationRule, and Aeraki's kinds
// (MetaRouter, ApplicationProtocol, RedisService, RedisDestination, DubboAuthorizationPolicy). It
// feeds the same model as the file source: a Service becomes the ServiceEntry Istio would make of it,
// and every other object is decoded and checked exactly as if it had been read from a file.
//
// Objects are watched through controller-runtime's informer cache. A change triggers a rebuild once
// the cluster has been quiet for 100 ms (or 1 s after the first change of a burst), and an update is
// published when the snapshot or the problems changed. A bad object is reported with its kind,
// namespace/name and field, and skipped; an object that was served and turns bad keeps its last good
// version until it is fixed or deleted; objects beside it are not affected.
package kube

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/meltemi-mesh/meltemi/api/scheme"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
)

// DefaultClusterDomain is the DNS domain of a cluster's Services unless told otherwise.
const DefaultClusterDomain = "cluster.local"

// sourceName prefixes the origin of every object this source reads ("kube:MetaRouter default/x").
const sourceName = "kube"

// FromCluster reports whether an object or problem with this origin and key is the cluster object
// of that key, as this source read it (rather than an object of a folder, or one it made from
// another kind).
func FromCluster(o model.Origin, k model.Key) bool {
	return k.Name != "" && o.File == model.ClusterOrigin(sourceName, k, o.Created).File
}

// Options configure a Source; zero values take the defaults.
type Options struct {
	// Model is passed to model.Build for every snapshot.
	Model model.Options
	// ClusterDomain is the DNS domain of the cluster's Services: a Service's host is
	// name.namespace.svc.<ClusterDomain>. DefaultClusterDomain when empty.
	ClusterDomain string
	// Quiet is how long the cluster must stay unchanged before a rebuild; 100 ms by default.
	Quiet time.Duration
	// MaxDelay bounds how long a stream of changes can postpone a rebuild; 1 s by default.
	MaxDelay time.Duration
	// Logger receives what goes wrong talking to the API server; nothing is logged by default.
	Logger *slog.Logger
}

// Source reads a cluster into model snapshots. Run must not be called twice at the same time.
type Source struct {
	cfg  *rest.Config
	opts Options

	// The state of the last rebuild, used by Run's goroutine only.
	decoded  map[types.UID]decodedObject // custom resources by uid, decoded at one resourceVersion
	good     map[model.Key]model.Object  // the objects of the last snapshot
	version  uint64
	snap     *model.Snapshot
	problems []model.Problem
}

// decodedObject is what one version of a custom resource decoded to, kept so that an unchanged
// object is not decoded again on every rebuild.
type decodedObject struct {
	resourceVersion string
	obj             model.Object
	key             model.Key
	problems        []model.Problem
}

// New returns a source for the cluster cfg talks to. It does not contact the cluster.
func New(cfg *rest.Config, opts Options) (*Source, error) {
	if cfg == nil {
		return nil, errors.New("kube: no API server configuration")
	}
	opts.ClusterDomain = strings.TrimSuffix(cmp.Or(opts.ClusterDomain, DefaultClusterDomain), ".")
	if errs := validation.IsDNS1123Subdomain(opts.ClusterDomain); len(errs) > 0 {
		return nil, fmt.Errorf("kube: cluster domain %q: %s", opts.ClusterDomain, strings.Join(errs, "; "))
	}
	if opts.Quiet <= 0 {
		opts.Quiet = 100 * time.Millisecond
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Source{cfg: cfg, opts: opts, decoded: map[types.UID]decodedObject{}, good: map[model.Key]model.Object{}}, nil
}

// customKind is a kind read as unstructured objects and decoded by the model, as a file's
// documents are: Istio's and Aeraki's.
type customKind struct {
	group, kind string
	// versions are the versions the model reads, preferred first; the first one the cluster
	// serves is watched (all serve the same objects).
	versions []string
}

var customKinds = []customKind{
	{"networking.istio.io", string(model.KindServiceEntry), []string{"v1", "v1beta1", "v1alpha3"}},
	{"networking.istio.io", string(model.KindWorkloadEntry), []string{"v1", "v1beta1", "v1alpha3"}},
	{"networking.istio.io", string(model.KindDestinationRule), []string{"v1", "v1beta1", "v1alpha3"}},
	{"metaprotocol.aeraki.io", string(model.KindMetaRouter), []string{"v1alpha1"}},
	{"metaprotocol.aeraki.io", string(model.KindApplicationProtocol), []string{"v1alpha1"}},
	{"redis.aeraki.io", string(model.KindRedisService), []string{"v1alpha1"}},
	{"redis.aeraki.io", string(model.KindRedisDestination), []string{"v1alpha1"}},
	{"dubbo.aeraki.io", string(model.KindDubboAuthorizationPolicy), []string{"v1alpha1"}},
}

// watch is what one Run watches: the custom kinds the cluster serves, at the version chosen, and
// problems about those it does not serve.
type watch struct {
	kinds    []schema.GroupVersionKind
	problems []model.Problem
}

// Run publishes a first update once every watched kind has been listed, then publishes an update
// after each burst of changes that changes the snapshot or the problems, until ctx is done.
// publish is called from Run's goroutine, one update at a time. Run fails if the API server cannot
// be reached to discover what it serves; after that, failures to list or watch are logged and
// retried, and the last objects seen keep being served.
func (s *Source) Run(ctx context.Context, publish func(source.Update)) error {
	httpClient, err := rest.HTTPClientFor(s.cfg)
	if err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	mapper, err := apiutil.NewDynamicRESTMapper(s.cfg, httpClient)
	if err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	w, err := discover(mapper)
	if err != nil {
		return err
	}
	c, err := cache.New(s.cfg, cache.Options{
		HTTPClient: httpClient,
		Scheme:     scheme.New(),
		Mapper:     mapper,
		// The source only reads what it lists, and only keeps what it derives from it.
		DefaultUnsafeDisableDeepCopy: new(true),
		DefaultTransform:             cache.TransformStripManagedFields(),
		DefaultWatchErrorHandler:     s.watchError,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Transform: slimPod},
		},
	})
	if err != nil {
		return fmt.Errorf("kube: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changed := make(chan struct{}, 1)
	if err := addHandlers(ctx, c, w, changed); err != nil {
		return err
	}
	cacheDone := make(chan error, 1)
	go func() { cacheDone <- c.Start(ctx) }()
	defer func() {
		cancel()
		<-cacheDone
	}()
	if !c.WaitForCacheSync(ctx) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("kube: the informer cache stopped before it synced")
	}
	// The first listing triggered every handler; the update below covers it.
	select {
	case <-changed:
	default:
	}
	u, _, err := s.rebuild(ctx, c, w)
	if err != nil {
		return err
	}
	publish(u)

	d := source.NewDebouncer(s.opts.Quiet, s.opts.MaxDelay)
	defer d.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-cacheDone:
			cacheDone <- err // for the deferred wait
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("kube: informer cache stopped: %v", err)
		case <-changed:
			d.Trigger()
		case <-d.C():
			d.Fired()
			u, changed, err := s.rebuild(ctx, c, w)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				s.opts.Logger.Warn("kube: reading the informer cache", "error", err)
				continue
			}
			if changed {
				publish(u)
			}
		}
	}
}

// discover finds the version of each custom kind the cluster serves. A kind it does not serve (its
// CRD is not installed) is not watched, and a warning says so.
func discover(mapper meta.RESTMapper) (watch, error) {
	var w watch
	for _, ck := range customKinds {
		gk := schema.GroupKind{Group: ck.group, Kind: ck.kind}
		mappings, err := mapper.RESTMappings(gk)
		if err != nil && !meta.IsNoMatchError(err) {
			return watch{}, fmt.Errorf("kube: discovering %s: %w", gk, err)
		}
		served := map[string]bool{}
		for _, m := range mappings {
			served[m.GroupVersionKind.Version] = true
		}
		i := slices.IndexFunc(ck.versions, func(v string) bool { return served[v] })
		if i < 0 {
			w.problems = append(w.problems, model.Problem{
				Origin: model.Origin{File: sourceName},
				Key:    model.Key{Kind: model.Kind(ck.kind)},
				Message: fmt.Sprintf("%s is not served by the cluster (%s/%s): not watched; install its CRD and restart",
					ck.kind, ck.group, strings.Join(ck.versions, ", ")),
				Severity: model.SeverityWarning,
			})
			continue
		}
		w.kinds = append(w.kinds, gk.WithVersion(ck.versions[i]))
	}
	return w, nil
}

// addHandlers makes the informers of everything the source reads and has each signal a change.
// Pods and Nodes signal only changes to what is read from them, not every status update.
func addHandlers(ctx context.Context, c cache.Cache, w watch, changed chan<- struct{}) error {
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	every := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { signal() },
		UpdateFunc: func(any, any) { signal() },
		DeleteFunc: func(any) { signal() },
	}
	only := func(relevant func(prev, next any) bool) toolscache.ResourceEventHandler {
		h := every
		h.UpdateFunc = func(prev, next any) {
			if relevant(prev, next) {
				signal()
			}
		}
		return h
	}
	type watched struct {
		name    string
		obj     client.Object
		handler toolscache.ResourceEventHandler
	}
	objects := []watched{
		{"Services", &corev1.Service{}, every},
		{"EndpointSlices", &discoveryv1.EndpointSlice{}, every},
		{"Pods", &corev1.Pod{}, only(podChanged)},
		{"Nodes", nodeMetadata(), only(labelsChanged)},
	}
	for _, gvk := range w.kinds {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		objects = append(objects, watched{gvk.Kind, u, every})
	}
	for _, o := range objects {
		inf, err := c.GetInformer(ctx, o.obj, cache.BlockUntilSynced(false))
		if err != nil {
			return fmt.Errorf("kube: watching %s: %w", o.name, err)
		}
		if _, err := inf.AddEventHandler(o.handler); err != nil {
			return fmt.Errorf("kube: watching %s: %w", o.name, err)
		}
	}
	return nil
}

// nodeMetadata is the object Nodes are watched as: their metadata only, since only their topology
// labels are read.
func nodeMetadata() *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"}}
}

// slimPod keeps of a Pod only what endpoints need (labels, service account, node), so that a
// cluster's pods cost little memory.
func slimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, ResourceVersion: pod.ResourceVersion, Labels: pod.Labels,
		},
		Spec: corev1.PodSpec{ServiceAccountName: pod.Spec.ServiceAccountName, NodeName: pod.Spec.NodeName},
	}, nil
}

func podChanged(prev, next any) bool {
	o, ok1 := prev.(*corev1.Pod)
	n, ok2 := next.(*corev1.Pod)
	return !ok1 || !ok2 || !maps.Equal(o.Labels, n.Labels) || o.Spec.ServiceAccountName != n.Spec.ServiceAccountName ||
		o.Spec.NodeName != n.Spec.NodeName
}

func labelsChanged(prev, next any) bool {
	o, ok1 := prev.(metav1.Object)
	n, ok2 := next.(metav1.Object)
	return !ok1 || !ok2 || !maps.Equal(o.GetLabels(), n.GetLabels())
}

// watchError logs why a list or watch failed (the informer retries it): most often RBAC, or an API
// server that went away.
func (s *Source) watchError(_ context.Context, r *toolscache.Reflector, err error) {
	if errors.Is(err, io.EOF) || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		return // a watch that ended normally, or that must list again: the informer handles both
	}
	s.opts.Logger.Warn("kube: cannot list or watch; retrying", "type", r.TypeDescription(), "error", err)
}

// rebuild reads everything from the cache and builds a snapshot if the objects changed. changed
// reports whether the update differs from the previous one.
func (s *Source) rebuild(ctx context.Context, c client.Reader, w watch) (u source.Update, changed bool, err error) {
	objs, problems, err := s.collect(ctx, c, w)
	if err != nil {
		return source.Update{}, false, err
	}
	if hash := objs.Hash(); s.snap == nil || hash != s.snap.Hash {
		s.version++
		s.snap = model.Build(s.version, objs, s.opts.Model)
		changed = true
	}
	problems = append(problems, s.snap.Problems...)
	problems = append(problems, w.problems...)
	model.SortProblems(problems)
	if !slices.Equal(problems, s.problems) {
		changed = true
	}
	s.problems = problems
	return source.Update{Snapshot: s.snap, Problems: problems}, changed, nil
}

// collect turns the cache's contents into model objects and the problems of single objects.
func (s *Source) collect(ctx context.Context, c client.Reader, w watch) (model.Objects, []model.Problem, error) {
	var objs model.Objects
	services, problems, err := s.services(ctx, c)
	if err != nil {
		return objs, nil, err
	}
	for _, svc := range services {
		objs.Add(svc)
	}
	good := map[model.Key]model.Object{}
	badKeys := map[model.Key]bool{}
	seen := map[types.UID]bool{}
	for _, gvk := range w.kinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := c.List(ctx, list); err != nil {
			return objs, nil, fmt.Errorf("listing %s: %w", gvk.Kind, err)
		}
		for i := range list.Items {
			d := s.decode(&list.Items[i])
			seen[list.Items[i].GetUID()] = true
			problems = append(problems, d.problems...)
			switch {
			case d.obj != nil:
				good[d.key] = d.obj
			case d.key.Name != "":
				badKeys[d.key] = true
			}
		}
	}
	for uid := range s.decoded {
		if !seen[uid] {
			delete(s.decoded, uid)
		}
	}
	// An object that turned bad keeps its last good version while it exists; a deleted one goes.
	for key, last := range s.good {
		if _, ok := good[key]; !ok && badKeys[key] {
			good[key] = last
			problems = append(problems, model.Problem{Origin: last.Metadata().Origin, Key: key,
				Message: "serving its last good version until its errors are fixed", Severity: model.SeverityWarning})
		}
	}
	s.good = good
	for _, key := range slices.SortedFunc(maps.Keys(good), model.Key.Compare) {
		objs.Add(good[key])
	}
	return objs, problems, nil
}

// decode reads one custom resource as a manifest of a file would be read, with its origin naming the
// cluster object; unchanged objects are not decoded again.
func (s *Source) decode(u *unstructured.Unstructured) decodedObject {
	if d, ok := s.decoded[u.GetUID()]; ok && d.resourceVersion == u.GetResourceVersion() {
		return d
	}
	key := model.Key{Kind: model.Kind(u.GetKind()), Namespace: cmp.Or(u.GetNamespace(), model.DefaultNamespace), Name: u.GetName()}
	origin := model.ClusterOrigin(sourceName, key, u.GetCreationTimestamp().Time)
	origin.Generation = u.GetGeneration()
	d := decodedObject{resourceVersion: u.GetResourceVersion(), key: key}
	doc, err := json.Marshal(u.Object)
	if err != nil {
		d.problems = []model.Problem{{Origin: origin, Key: key, Message: fmt.Sprintf("cannot encode as JSON: %v", err)}}
	} else {
		var problems []model.Problem
		d.obj, _, problems = model.Decode(origin, doc)
		d.problems = problems
	}
	s.decoded[u.GetUID()] = d
	return d
}

// services makes the ServiceEntry-equivalent of every Service, with their problems.
func (s *Source) services(ctx context.Context, c client.Reader) ([]*model.ServiceEntry, []model.Problem, error) {
	var services corev1.ServiceList
	if err := c.List(ctx, &services); err != nil {
		return nil, nil, fmt.Errorf("listing Services: %w", err)
	}
	var sliceList discoveryv1.EndpointSliceList
	if err := c.List(ctx, &sliceList); err != nil {
		return nil, nil, fmt.Errorf("listing EndpointSlices: %w", err)
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods); err != nil {
		return nil, nil, fmt.Errorf("listing Pods: %w", err)
	}
	nodes := &metav1.PartialObjectMetadataList{}
	nodes.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: "NodeList"})
	if err := c.List(ctx, nodes); err != nil {
		return nil, nil, fmt.Errorf("listing Nodes: %w", err)
	}
	slicesOf := map[string][]*discoveryv1.EndpointSlice{}
	for i := range sliceList.Items {
		es := &sliceList.Items[i]
		if name := es.Labels[discoveryv1.LabelServiceName]; name != "" {
			slicesOf[es.Namespace+"/"+name] = append(slicesOf[es.Namespace+"/"+name], es)
		}
	}
	podsByName := make(map[string]*corev1.Pod, len(pods.Items))
	for i := range pods.Items {
		p := &pods.Items[i]
		podsByName[p.Namespace+"/"+p.Name] = p
	}
	nodeLabels := make(map[string]map[string]string, len(nodes.Items))
	for _, n := range nodes.Items {
		nodeLabels[n.Name] = n.Labels
	}
	out := make([]*model.ServiceEntry, 0, len(services.Items))
	var problems []model.Problem
	for i := range services.Items {
		svc := &services.Items[i]
		conv := convertService(serviceInputs{
			service: svc,
			slices:  slicesOf[svc.Namespace+"/"+svc.Name],
			pods:    podsByName,
			nodes:   nodeLabels,
		}, s.opts.ClusterDomain, sourceName)
		out = append(out, conv.entry)
		problems = append(problems, conv.problems...)
	}
	return out, problems, nil
}
