// Package filter is the contract between the proxy and its request filters (rate limits, authorization,
// fault injection, ...). A filter is built once per config from its typed config and shared by every
// request of the listener it is configured on; whatever it keeps per request lives in the Exchange.
package filter

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meltemi-mesh/meltemi/codec"
)

// Status is what a filter decides about a request.
type Status uint8

const (
	// Continue passes the request to the next filter (the router is last).
	Continue Status = iota
	// Stop ends the chain for now: the filter has answered (Exchange.Reply), or it will call
	// Exchange.Resume once it has decided (after a call to a rate-limit service, say).
	Stop
)

// Filter handles requests on their way to the router.
type Filter interface {
	// OnRequest inspects or changes the request. It must not keep ex after it returns, unless it returns Stop
	// and later calls ex.Resume or ex.Reply exactly once.
	OnRequest(ex Exchange) Status
}

// ResponseFilter is a Filter that also sees responses, in reverse order of the request chain.
type ResponseFilter interface {
	Filter
	// OnResponse inspects the response to ex's request before it goes downstream.
	OnResponse(ex Exchange, resp *codec.Message)
}

// Exchange is one request on its way through the proxy.
type Exchange interface {
	// Request is the decoded request. Its frame is valid until the filter returns.
	Request() *codec.Message
	// Reply answers the request locally with an error of the given kind; the chain stops.
	Reply(kind codec.ErrorKind, detail string)
	// Reroute makes the router pick the route again, for filters that changed metadata routes match on.
	Reroute()
	// Resume continues the chain after a filter returned Stop.
	Resume()
	// Reply and Resume may be called from any goroutine, even before the OnRequest that returned Stop has
	// returned: the proxy then acts on the call once it has copied the request out of the connection's
	// buffer.
}

// Provisioner is a Filter that needs the proxy's services beyond its config (a rate-limit filter that calls
// a service of the mesh, say). The proxy calls Provision once, after New and before the first request.
type Provisioner interface {
	Filter
	Provision(h Host) error
}

// Host is what the proxy offers the filters it builds.
type Host interface {
	// DialCluster connects to an endpoint of the named cluster of the config being served, picked by the
	// cluster's load balancer, within the cluster's connect timeout.
	DialCluster(ctx context.Context, cluster string) (net.Conn, error)
	// Logger is where filters log.
	Logger() *slog.Logger
	// Metrics is where filters register their metrics. A filter is built anew whenever its config changes,
	// so a filter registering a collector that an earlier instance registered must reuse the registered
	// one (prometheus.AlreadyRegisteredError.ExistingCollector).
	Metrics() prometheus.Registerer
}

// A filter that is also an io.Closer is closed once no config being served uses it: after an update that
// rebuilt it or dropped it, and when the proxy closes.

// Registration describes a filter to the proxy.
type Registration struct {
	// Name is the filter's name in config, e.g. "aeraki.meta_protocol.filters.local_ratelimit".
	Name string
	// New builds the filter from its JSON config, rejecting unknown fields and naming the field at fault.
	New func(config json.RawMessage) (Filter, error)
}

// Registry holds the filters a binary offers, filled explicitly by its main.
type Registry struct {
	mu     sync.RWMutex
	byName map[string]Registration
}

// NewRegistry returns a registry holding regs.
func NewRegistry(regs ...Registration) (*Registry, error) {
	r := &Registry{byName: map[string]Registration{}}
	for _, reg := range regs {
		if err := r.Register(reg); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Register adds a filter; names must be unique.
func (r *Registry) Register(reg Registration) error {
	if reg.Name == "" || reg.New == nil {
		return fmt.Errorf("filter registration %q: name and constructor are required", reg.Name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byName == nil {
		r.byName = map[string]Registration{}
	}
	if _, dup := r.byName[reg.Name]; dup {
		return fmt.Errorf("filter %q registered twice", reg.Name)
	}
	r.byName[reg.Name] = reg
	return nil
}

// Lookup returns the filter registered under name.
func (r *Registry) Lookup(name string) (Registration, bool) {
	if r == nil {
		return Registration{}, false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	reg, ok := r.byName[name]
	return reg, ok
}

// Names returns the registered filter names, sorted.
func (r *Registry) Names() []string {
	if r == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.byName))
	for n := range r.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
