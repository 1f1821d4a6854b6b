package status

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/meltemi-mesh/meltemi/api/scheme"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
	"github.com/meltemi-mesh/meltemi/control/source/kube"
)

// AddressesOptions configure an Addresses.
type AddressesOptions struct {
	// Updates are the source's updates, which the controller serves.
	Updates *source.Latest
	Metrics *Metrics
	// Logger receives failed writes (Warn) and addresses recorded (Info).
	Logger *slog.Logger
}

// Addresses records in a ServiceEntry's status.addresses (Istio's ServiceEntryStatus.addresses, a
// value and a host each) the address local mode allocated to each of its hosts, so that every replica
// reads it back and serves the host on that address, whichever replica allocated it and whatever
// hosts come later. It is a singleton: the leader runs it. Entries of other ranges, such as Istio's own
// allocations, are kept as they are.
type Addresses struct {
	cfg    *rest.Config
	opts   AddressesOptions
	client client.Client
}

// NewAddresses returns a recorder for the cluster cfg talks to. It contacts nothing until Run.
func NewAddresses(cfg *rest.Config, opts AddressesOptions) (*Addresses, error) {
	if opts.Updates == nil {
		return nil, fmt.Errorf("status: the address recorder needs the updates")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	return &Addresses{cfg: cfg, opts: opts, client: c}, nil
}

// serviceEntryVersions are the versions ServiceEntries are served under, preferred first.
var serviceEntryVersions = []string{"v1", "v1beta1", "v1alpha3"}

// Run records addresses after each update of the source until ctx ends.
func (a *Addresses) Run(ctx context.Context) error {
	httpClient, err := rest.HTTPClientFor(a.cfg)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	mapper, err := apiutil.NewDynamicRESTMapper(a.cfg, httpClient)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var gvk schema.GroupVersionKind
	for {
		u, ok, updated := a.opts.Updates.Get()
		next := time.Hour
		if ok && gvk.Empty() {
			if gvk, err = serviceEntryKind(mapper); err != nil {
				a.opts.Logger.Warn("status: ServiceEntries are not served; no address is recorded", "error", err)
			}
		}
		if ok && !gvk.Empty() {
			next = a.round(ctx, u.Snapshot, gvk)
		}
		resetTimer(timer, next)
		select {
		case <-ctx.Done():
			return nil
		case <-updated:
		case <-timer.C:
		}
	}
}

func serviceEntryKind(mapper meta.RESTMapper) (schema.GroupVersionKind, error) {
	gk := schema.GroupKind{Group: "networking.istio.io", Kind: string(model.KindServiceEntry)}
	m, err := mapper.RESTMapping(gk, serviceEntryVersions...)
	if err != nil {
		return schema.GroupVersionKind{}, err
	}
	return m.GroupVersionKind, nil
}

// unrecorded returns, for each cluster ServiceEntry of the snapshot, the addresses allocated to its
// hosts that its status does not hold yet.
func unrecorded(snap *model.Snapshot) map[model.Key]map[string]netip.Addr {
	out := map[model.Key]map[string]netip.Addr{}
	if snap == nil {
		return out
	}
	for _, svc := range snap.Services {
		m := svc.Entry.Metadata()
		if m.Kind != model.KindServiceEntry || !kube.FromCluster(m.Origin, m.Key()) || len(svc.Addresses) != 1 ||
			!svc.Addresses[0].Allocated || svc.Addresses[0].Recorded {
			continue
		}
		if out[m.Key()] == nil {
			out[m.Key()] = map[string]netip.Addr{}
		}
		out[m.Key()][svc.Host] = svc.Addresses[0].IP
	}
	return out
}

// round records what the snapshot allocated and its entries do not hold; it returns when to try
// again without an update.
func (a *Addresses) round(ctx context.Context, snap *model.Snapshot, gvk schema.GroupVersionKind) time.Duration {
	next := time.Hour
	todo := unrecorded(snap)
	for _, key := range slices.SortedFunc(maps.Keys(todo), model.Key.Compare) {
		if err := a.record(ctx, key, todo[key], gvk); err != nil {
			if ctx.Err() != nil {
				return next
			}
			a.opts.Logger.Warn("status: cannot record allocated addresses; retrying", "serviceentry", key.Namespace+"/"+key.Name, "error", err)
			next = retryAfter
		}
	}
	return next
}

// record writes the addresses of hosts into an entry's status.addresses, unless it holds them.
func (a *Addresses) record(ctx context.Context, key model.Key, hosts map[string]netip.Addr, gvk schema.GroupVersionKind) error {
	se := &unstructured.Unstructured{}
	se.SetGroupVersionKind(gvk)
	if err := a.client.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: key.Name}, se); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	if addrs, _, _ := unstructured.NestedSlice(se.Object, "spec", "addresses"); len(addrs) > 0 {
		return nil // given addresses since the snapshot was built: nothing to allocate
	}
	current, _, _ := unstructured.NestedSlice(se.Object, "status", "addresses")
	var kept []any
	have := map[string]netip.Addr{}
	for _, e := range current {
		m, _ := e.(map[string]any)
		host, _ := m["host"].(string)
		value, _ := m["value"].(string)
		ip, err := netip.ParseAddr(value)
		if _, ours := hosts[host]; ours && err == nil && model.VIPRange.Contains(ip.Unmap()) {
			have[host] = ip.Unmap()
			continue
		}
		kept = append(kept, e) // other hosts', other ranges' (Istio's), and what no one can read
	}
	if maps.Equal(have, hosts) {
		return nil
	}
	for _, host := range slices.Sorted(maps.Keys(hosts)) {
		kept = append(kept, map[string]any{"value": hosts[host].String(), "host": host})
	}
	// The resourceVersion makes the write fail if the entry changed since it was read.
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": se.GetResourceVersion()},
		"status":   map[string]any{"addresses": kept},
	})
	if err != nil {
		return err
	}
	err = a.client.Status().Patch(ctx, se, client.RawPatch(types.MergePatchType, patch))
	a.opts.Metrics.wrote(string(model.KindServiceEntry), err)
	if err != nil {
		return err
	}
	a.opts.Logger.Info("status: recorded allocated addresses", "serviceentry", key.Namespace+"/"+key.Name, "addresses", hosts)
	return nil
}
