// Package xds is the controller's xDS server: it gives every proxy that connects its own config, translated
// from the current model snapshot for the proxy's identity, and pushes a new one when the model changes.
//
// The protocol is go-control-plane's: its snapshot cache and its server, for ADS (state of the world and
// delta) and for the separate LDS, CDS, EDS and RDS services. This package decides what each node's
// snapshot holds and when it changes, and watches the answers proxies give.
package xds

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/translate"
)

// TranslateFunc computes the resources of one proxy from a model snapshot, as translate.Translate does.
type TranslateFunc func(*model.Snapshot, translate.Node) (*translate.Resources, error)

// Options configure a Server; the zero value is usable.
type Options struct {
	// Translate computes a proxy's resources; nil means translate.Translate. It is called with Node.ID
	// empty: proxies whose identities differ only by id share one translation, so it must not depend on
	// the id.
	Translate TranslateFunc
	// Registry receives the server's metrics; nil leaves them unregistered.
	Registry prometheus.Registerer
	// Logger receives rejected configs (Info), translation errors (Error) and protocol details (Debug);
	// nil means slog.Default().
	Logger *slog.Logger
	// ForgetAfter is how long a proxy's config and state are kept after its last stream closes, so that a
	// proxy that reconnects soon is not translated again; 0 means one minute.
	ForgetAfter time.Duration
	// GRPCOptions are added to those of the gRPC server Serve makes (TLS credentials, limits).
	GRPCOptions []grpc.ServerOption
}

const (
	defaultForgetAfter = time.Minute
	// stopTimeout bounds how long Serve waits for connections to drain once streams have been ended.
	stopTimeout = 5 * time.Second
)

// Server is the controller's xDS server.
type Server struct {
	translate   TranslateFunc
	log         *slog.Logger
	metrics     *metrics
	forgetAfter time.Duration
	grpcOptions []grpc.ServerOption

	cache cachev3.SnapshotCache
	xds   serverv3.Server
	// ctx lives as long as streams may: go-control-plane ends every stream when it is done.
	ctx    context.Context
	cancel context.CancelFunc

	// pushMu serializes model changes and snapshot setting, so that a node is never handed a config older
	// than one it already has.
	pushMu     sync.Mutex
	model      *model.Snapshot    // guarded by pushMu
	shared     map[string]*output // translations of model by share key; guarded by pushMu
	translated func()             // test hook called before each translation; guarded by pushMu

	// mu guards the state of nodes and streams, which stream callbacks read and write on every request.
	mu        sync.Mutex
	nodes     map[string]*node
	streams   map[streamKey]*stream
	forgetGen uint64
	stopped   bool
	converged func(nodeID string, modelVersion uint64, took time.Duration) // test hook
	// changed is closed, and replaced, whenever what Proxies returns may have changed.
	changed chan struct{}
}

// output is one translation, shared by every node with the same share key.
type output struct {
	snap *snapshot
	err  error
}

// New returns a server with no model: proxies that connect wait for the first Update.
func New(opts Options) (*Server, error) {
	m, err := newMetrics(opts.Registry)
	if err != nil {
		return nil, err
	}
	s := &Server{
		translate:   opts.Translate,
		log:         opts.Logger,
		metrics:     m,
		forgetAfter: opts.ForgetAfter,
		grpcOptions: opts.GRPCOptions,
		nodes:       map[string]*node{},
		streams:     map[streamKey]*stream{},
		changed:     make(chan struct{}),
	}
	if s.translate == nil {
		s.translate = translate.Translate
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.forgetAfter <= 0 {
		s.forgetAfter = defaultForgetAfter
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// Not the cache's ADS mode: it answers a route or endpoint request only when the request names every
	// resource of that type in the snapshot, and then drops the request unanswered. A proxy that rejected
	// one listener never asks for that listener's routes, so in ADS mode it would get no route update
	// again. Ordered responses below keep clusters ahead of the routes that name them. Nodes are keyed by
	// id, which is what snapshots are set under.
	s.cache = cachev3.NewSnapshotCache(false, cachev3.IDHash{}, cacheLogger{s.log})
	// Ordered ADS sends one stream's responses in the cache's type order (clusters, endpoints, listeners,
	// routes), so a proxy never sees a route before the cluster it names.
	s.xds = serverv3.NewServer(s.ctx, s.cache, callbacks{s}, sotw.WithOrderedADS(), sotw.WithLogger(cacheLogger{s.log}))
	return s, nil
}

// Register adds the xDS services to a gRPC server the caller runs; Run must run beside it.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
}

// Run serves the streams of the gRPC server given to Register until ctx ends, then ends them, so that the
// caller's GracefulStop does not wait for proxies to hang up. The server cannot run again afterwards.
func (s *Server) Run(ctx context.Context) error {
	<-ctx.Done()
	s.stop()
	return nil
}

// Serve serves xDS on lis with a gRPC server of its own until ctx ends, then stops it gracefully. It
// returns nil when ctx ended, and the error that stopped it otherwise.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	g := grpc.NewServer(append([]grpc.ServerOption{
		// Proxies hold one stream open for their whole life: keepalives find the ones that vanished.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
		// Connections are idle nearly all the time; a write buffer per connection would cost 32 KiB each.
		grpc.SharedWriteBuffer(true),
	}, s.grpcOptions...)...)
	s.Register(g)
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	select {
	case <-ctx.Done():
	case err := <-served:
		s.stop()
		g.Stop()
		return fmt.Errorf("xds: serve %s: %w", lis.Addr(), err)
	}
	s.stop()
	stopped := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		g.Stop()
		<-stopped
	}
	<-served
	return nil
}

// stop ends every stream and forgets nothing more.
func (s *Server) stop() {
	s.mu.Lock()
	s.stopped = true
	for _, n := range s.nodes {
		if n.forget != nil {
			n.forget.Stop()
			n.forget = nil
		}
	}
	s.mu.Unlock()
	s.cancel()
}

// Update makes m the model served and gives every connected proxy the config translated from it. It
// returns once every snapshot is set; proxies whose config did not change are sent nothing. An update
// with the version already served does nothing, as a source republishes its snapshot when only its
// problems change.
func (s *Server) Update(m *model.Snapshot) {
	if m == nil {
		return
	}
	ch := &change{version: m.Version, at: time.Now()}
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	if s.model != nil && s.model.Version == m.Version {
		return
	}
	s.model = m
	s.shared = map[string]*output{}
	s.metrics.configVersion.Set(float64(m.Version))

	s.mu.Lock()
	nodes := make([]*node, 0, len(s.nodes))
	for _, n := range s.nodes {
		if len(n.streams) > 0 {
			nodes = append(nodes, n)
		}
	}
	s.mu.Unlock()
	pushed := 0
	for _, n := range nodes {
		if s.push(n, ch) {
			pushed++
		}
	}
	took := time.Since(ch.at)
	s.metrics.pushDuration.Observe(took.Seconds())
	s.log.Debug("xds: model updated", "version", m.Version, "proxies", len(nodes), "pushed", pushed, "took", took)
}

// sync gives a node that just connected the config of the current model, unless it has it already.
func (s *Server) sync(n *node) {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	start := time.Now()
	if s.push(n, nil) {
		s.metrics.pushDuration.Observe(time.Since(start).Seconds())
	}
}

// push translates the model for n, sharing the work with nodes of the same identity, and sets the node's
// snapshot if its content changed. ch is the model change that asked for it; nil when the node connected.
// It reports whether a snapshot was set. pushMu must be held.
func (s *Server) push(n *node, ch *change) bool {
	if s.model == nil {
		return false
	}
	s.mu.Lock()
	ident, key := n.ident, n.key
	current := n.snap != nil && n.modelVersion == s.model.Version && n.snapKey == key
	var prev *snapshot
	if n.snapKey == key {
		prev = n.snap
	}
	s.mu.Unlock()
	if current {
		return false
	}
	out := s.shared[key]
	if out == nil {
		out = s.translateFor(ident, prev)
		s.shared[key] = out
	}

	s.mu.Lock()
	n.modelVersion, n.snapKey = s.model.Version, key
	n.translateErr = out.err
	s.notifyLocked()
	if out.err != nil {
		s.mu.Unlock()
		return false
	}
	if n.snap != nil && sameVersions(n.snap, out.snap) {
		// Nothing to send. Later nodes of this identity share the snapshot the cache already holds rather
		// than the equal new one, so one copy stays in memory.
		out.snap = n.snap
		s.mu.Unlock()
		return false
	}
	n.snap = out.snap
	// Convergence is judged on the proxy's next ACKs. Not here: a proxy that is still subscribing looks up
	// to date when it has subscribed to nothing yet.
	n.pending = ch
	s.mu.Unlock()

	if err := s.cache.SetSnapshot(s.ctx, n.id, out.snap); err != nil {
		s.log.Warn("xds: setting a proxy's config failed", "node", n.id, "error", err)
		return false
	}
	s.metrics.pushes.Inc()
	return true
}

// translateFor translates the current model for one identity. A translator that panics is a bug, but one
// that should cost the proxies concerned their update, not every proxy its controller: it is reported as
// a failed translation.
func (s *Server) translateFor(ident translate.Node, prev *snapshot) (out *output) {
	// The node that asked is named in the log: the translation stands for all of its identity.
	id := ident.ID
	ident.ID = ""
	var stack []byte
	defer func() {
		if r := recover(); r != nil {
			out, stack = &output{err: fmt.Errorf("translator panicked: %v", r)}, debug.Stack()
		}
		if out.err != nil {
			attrs := []any{"model_version", s.model.Version, "node", id, "mode", ident.Mode, "namespace", ident.Namespace,
				"workload", ident.Workload, "error", out.err}
			if stack != nil {
				attrs = append(attrs, "stack", string(stack))
			}
			s.metrics.translateErrors.Inc()
			s.log.Error("xds: translation failed; the proxies concerned keep their last config", attrs...)
		}
	}()
	if s.translated != nil {
		s.translated()
	}
	res, err := s.translate(s.model, ident)
	if err != nil {
		return &output{err: err}
	}
	snap, err := newSnapshot(res, prev)
	if err != nil {
		return &output{err: fmt.Errorf("translation output: %w", err)}
	}
	return &output{snap: snap}
}
