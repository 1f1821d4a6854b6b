package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/proxy"
)

// DefaultInitialFetchTimeout is how long the first config waits for the route configurations and load
// assignments its listeners and clusters name (Envoy's initial_fetch_timeout default).
const DefaultInitialFetchTimeout = 15 * time.Second

// maxResponseSize bounds one xDS response.
const maxResponseSize = 256 << 20

// ConfigUpdater is what the client drives; *proxy.Proxy is one.
type ConfigUpdater interface {
	// Update validates and applies a config, or rejects it and keeps the previous one.
	Update(cfg *proxy.Config) error
}

var _ ConfigUpdater = (*proxy.Proxy)(nil)

// Backoff bounds the wait before reconnecting to the controller, and before answering again a version that
// was rejected and is sent again unchanged.
type Backoff struct {
	// Initial is the first wait (500ms when zero); each failure in a row doubles it.
	Initial time.Duration
	// Max caps the wait (30s when zero).
	Max time.Duration
}

// delay returns the wait after attempt failures in a row (0 for the first), with jitter so that proxies that
// lost the same controller do not all come back at once.
func (b Backoff) delay(attempt int) time.Duration {
	d := b.Initial
	for i := 0; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return d/2 + rand.N(d/2+1)
}

// Options configure a Client.
type Options struct {
	// Address is the controller's host:port.
	Address string
	// DialOptions are added after the client's defaults (plaintext transport credentials, responses up to
	// 256 MiB), so they may replace them.
	DialOptions []grpc.DialOption
	// Node is the identity sent to the controller.
	Node Node
	// Codecs are the codecs the proxy has; a listener naming another one is rejected.
	Codecs *codec.Registry
	// Proxy receives each config.
	Proxy ConfigUpdater
	// Logger receives the client's logs (slog.Default when nil).
	Logger *slog.Logger
	// Metrics is where the client registers its metrics (not registered when nil).
	Metrics prometheus.Registerer
	// Backoff paces reconnection.
	Backoff Backoff
	// InitialFetchTimeout bounds how long the first config waits for the route configurations and load
	// assignments it names (DefaultInitialFetchTimeout when zero); after it, what has arrived is applied.
	InitialFetchTimeout time.Duration
}

// Client keeps a proxy's config in step with a controller over ADS.
type Client struct {
	opts      Options
	log       *slog.Logger
	metrics   *metrics
	node      *corev3.Node
	proxyNode proxy.Node
	running   atomic.Bool

	// What follows belongs to the goroutine in Run.
	types         []*typeState // in Envoy's order: CDS, EDS, LDS, RDS
	byURL         map[string]*typeState
	current       *state        // resources as received; accepted ones once the first config is applied
	applied       *proxy.Config // the config the proxy last accepted
	noted         map[string]bool
	firstResponse time.Time // starts the initial fetch timeout
	outbox        []*discoveryv3.DiscoveryRequest
	nodeSent      bool
	lost          bool // the last stream had been healthy when it ended
}

// typeState is the subscription to one resource type.
type typeState struct {
	url, short string
	wildcard   bool     // LDS and CDS: everything for this node
	names      []string // RDS and EDS: the resources subscribed to, sorted
	acked      string   // the last version accepted: version_info of every request
	version    string   // the version of what current holds
	nonce      string   // of the last response on the current stream
	received   bool     // a response that translates has arrived, ever
	held       bool     // LDS and CDS: the last response waits for the first config before it is answered
	rejected   struct {
		version, reason string
		count           int
	}
	delayed *discoveryv3.DiscoveryRequest // a NACK repeated for the same version waits until due
	due     time.Time
}

// New checks opts and returns a client; Run starts it.
func New(opts Options) (*Client, error) {
	if _, _, err := net.SplitHostPort(opts.Address); err != nil {
		return nil, fmt.Errorf("xds: address: %w", err)
	}
	if opts.Codecs == nil || opts.Proxy == nil {
		return nil, errors.New("xds: codecs and proxy are required")
	}
	if err := opts.Node.validate(); err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	node, err := opts.Node.proto()
	if err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Backoff.Initial <= 0 {
		opts.Backoff.Initial = 500 * time.Millisecond
	}
	if opts.Backoff.Max <= 0 {
		opts.Backoff.Max = 30 * time.Second
	}
	opts.Backoff.Max = max(opts.Backoff.Max, opts.Backoff.Initial)
	if opts.InitialFetchTimeout <= 0 {
		opts.InitialFetchTimeout = DefaultInitialFetchTimeout
	}
	m, err := newMetrics(opts.Metrics)
	if err != nil {
		return nil, fmt.Errorf("xds: metrics: %w", err)
	}
	c := &Client{opts: opts, log: opts.Logger, metrics: m, node: node, proxyNode: opts.Node.proxyNode(),
		byURL: map[string]*typeState{}, current: newState(), noted: map[string]bool{}}
	for _, ts := range []*typeState{
		{url: ClusterType, short: "cds", wildcard: true},
		{url: EndpointType, short: "eds"},
		{url: ListenerType, short: "lds", wildcard: true},
		{url: RouteType, short: "rds"},
	} {
		c.types = append(c.types, ts)
		c.byURL[ts.url] = ts
	}
	return c, nil
}

// Run keeps a stream open to the controller until ctx ends, reconnecting with backoff; the proxy keeps its
// last config meanwhile. It returns nil when ctx ends, and an error only if the controller cannot be dialled
// at all (a bad address or dial option).
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("xds: Run is already running")
	}
	defer c.running.Store(false)
	failures := 0
	for {
		healthy, err := c.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var dialErr dialError
		if errors.As(err, &dialErr) {
			return err
		}
		if healthy {
			failures = 0
			c.lost = true
			c.log.Warn("xds: stream to the controller ended; the proxy keeps its config and the client reconnects",
				"address", c.opts.Address, "error", err)
		} else {
			c.log.Debug("xds: stream to the controller failed", "address", c.opts.Address, "error", err)
		}
		wait := c.opts.Backoff.delay(failures)
		failures++
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		c.metrics.reconnects.Inc()
	}
}

// dialError is a failure no retry can fix.
type dialError struct{ error }

// stream runs one ADS stream until it fails or ctx ends. It is healthy once the controller has answered.
func (c *Client) stream(ctx context.Context) (healthy bool, err error) {
	conn, err := grpc.NewClient(c.opts.Address, append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// gRPC's 4 MiB default is too small for the listeners and clusters of a large mesh.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxResponseSize)),
	}, c.opts.DialOptions...)...)
	if err != nil {
		return false, dialError{fmt.Errorf("xds: dial %s: %w", c.opts.Address, err)}
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		return false, err
	}

	responses := make(chan *discoveryv3.DiscoveryResponse)
	recvErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			resp, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case responses <- resp:
			case <-sctx.Done():
				return
			}
		}
	}()
	// Cancelling the stream's context ends Recv, so the reader is gone before stream returns.
	defer func() {
		cancel()
		wg.Wait()
	}()

	c.metrics.connected.Set(1)
	defer c.metrics.connected.Set(0)
	c.startStream()
	if err := c.flush(st); err != nil {
		return false, err
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if wake, ok := c.nextWake(time.Now()); ok {
			timer.Reset(time.Until(wake))
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			return healthy, ctx.Err()
		case err := <-recvErr:
			return healthy, err
		case resp := <-responses:
			if !healthy && c.lost {
				c.log.Info("xds: reconnected to the controller", "address", c.opts.Address)
				c.lost = false
			}
			healthy = true
			c.handle(resp, time.Now())
		case <-timer.C:
			c.onTimer(time.Now())
		}
		if err := c.flush(st); err != nil {
			return healthy, err
		}
	}
}

// startStream queues the requests that open a stream: every subscription, with the versions last accepted,
// so a controller that restarted knows what the proxy runs.
func (c *Client) startStream() {
	c.nodeSent = false
	c.outbox = c.outbox[:0]
	for _, ts := range c.types {
		ts.nonce, ts.delayed = "", nil
		if ts.wildcard || len(ts.names) > 0 {
			c.queue(c.request(ts, ""))
		}
	}
}

// flush sends the queued requests; the node goes on the first request of a stream only.
func (c *Client) flush(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient) error {
	defer func() { c.outbox = c.outbox[:0] }()
	for _, req := range c.outbox {
		if !c.nodeSent {
			req.Node = c.node
			c.nodeSent = true
		}
		if err := st.Send(req); err != nil {
			return err
		}
		c.log.Debug("xds: request sent", "type", typeName(req.GetTypeUrl()), "version", req.GetVersionInfo(),
			"nonce", req.GetResponseNonce(), "names", req.GetResourceNames(), "nack", req.GetErrorDetail() != nil)
	}
	return nil
}

func (c *Client) queue(req *discoveryv3.DiscoveryRequest) { c.outbox = append(c.outbox, req) }

// request is the next request of a type: the version last accepted, the nonce last received, the current
// subscription, and a reason when it rejects the response it answers.
func (c *Client) request(ts *typeState, reason string) *discoveryv3.DiscoveryRequest {
	req := &discoveryv3.DiscoveryRequest{VersionInfo: ts.acked, ResponseNonce: ts.nonce, TypeUrl: ts.url,
		ResourceNames: slices.Clone(ts.names)}
	if reason != "" {
		req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: reason}
	}
	return req
}

// handle takes one response: translate, apply, answer.
func (c *Client) handle(resp *discoveryv3.DiscoveryResponse, now time.Time) {
	ts := c.byURL[resp.GetTypeUrl()]
	if ts == nil {
		c.log.Debug("xds: response of a type not subscribed to; ignored", "type", resp.GetTypeUrl())
		return
	}
	c.log.Debug("xds: response received", "type", ts.short, "version", resp.GetVersionInfo(),
		"nonce", resp.GetNonce(), "resources", len(resp.GetResources()))
	ts.nonce, ts.delayed = resp.GetNonce(), nil
	if c.firstResponse.IsZero() {
		c.firstResponse = now
	}
	next, n, err := c.translateResponse(ts, resp)
	if err != nil {
		c.reject(ts, resp.GetVersionInfo(), err, now)
		return
	}
	// Only a response that translates counts: a proxy whose listeners were all rejected is not ready.
	ts.received = true
	c.logNotes(n)

	if c.applied == nil {
		// Until the first config, listeners and clusters are kept and answered once it is applied, so that the
		// proxy is not ready before its listeners are, and a config the proxy refuses is NACKed. Route
		// configurations and load assignments are answered at once: the controller must be free to send the
		// ones the first config still waits for, and translation has checked them already.
		c.current = next
		ts.version = resp.GetVersionInfo()
		if ts.wildcard {
			ts.held = true
		} else {
			c.accept(ts)
		}
		c.resubscribe()
		c.tryFirstConfig(now)
		return
	}

	previous := ts.version
	ts.version = resp.GetVersionInfo()
	if err := c.apply(next); err != nil {
		ts.version = previous
		c.reject(ts, resp.GetVersionInfo(), err, now)
		return
	}
	c.current = next
	c.accept(ts)
	c.resubscribe()
}

// accept answers the last response of a type with an ACK.
func (c *Client) accept(ts *typeState) {
	ts.acked, ts.held = ts.version, false
	ts.rejected.version, ts.rejected.reason, ts.rejected.count = "", "", 0
	c.queue(c.request(ts, ""))
}

// maxRenackDelay bounds the wait before answering a version rejected again: while the answer waits, the
// controller has no request to answer with a fixed config, so this is also how late a fix can arrive.
const maxRenackDelay = 2 * time.Second

// reject answers the last response of a type with a NACK. The controller may send the same version straight
// back (go-control-plane's cache does), so a repeated rejection of one version is answered after a backoff
// instead of at once.
func (c *Client) reject(ts *typeState, version string, err error, now time.Time) {
	c.metrics.nacks.WithLabelValues(ts.short).Inc()
	ts.held = false
	reason := err.Error()
	req := c.request(ts, reason)
	if ts.rejected.version == version && ts.rejected.reason == reason {
		ts.rejected.count++
		ts.delayed, ts.due = req, now.Add(min(c.opts.Backoff.delay(ts.rejected.count-2), maxRenackDelay))
		c.log.Debug("xds: rejected again", "type", ts.short, "version", version, "answer_in", ts.due.Sub(now))
		return
	}
	ts.rejected.version, ts.rejected.reason, ts.rejected.count = version, reason, 1
	c.log.Warn("xds: config rejected; the proxy keeps its last good config", "type", ts.short,
		"version", version, "error", err)
	c.queue(req)
}

// tryFirstConfig applies the first config once listeners and clusters have arrived, and the route
// configurations and load assignments they name have too or the initial fetch timeout has passed.
func (c *Client) tryFirstConfig(now time.Time) {
	if c.applied != nil || !c.byURL[ListenerType].received || !c.byURL[ClusterType].received {
		return
	}
	_, waiting := c.current.compose(nil)
	if len(waiting) > 0 {
		if now.Sub(c.firstResponse) < c.opts.InitialFetchTimeout {
			return
		}
		c.log.Warn("xds: initial fetch timed out; starting without what has not arrived", "waiting", waiting)
	}
	if err := c.apply(c.current); err != nil {
		// Nothing tells which response is at fault: all of them are rejected, and sent again.
		for _, ts := range c.types {
			if ts.held {
				c.reject(ts, ts.version, err, now)
			}
		}
		return
	}
	for _, ts := range c.types {
		if ts.held {
			c.accept(ts)
		}
	}
	c.log.Info("xds: first config applied", "version", c.applied.Version, "listeners", len(c.applied.Listeners),
		"clusters", len(c.applied.Clusters))
}

// apply composes a config from s and hands it to the proxy, unless it is the one the proxy already runs.
func (c *Client) apply(s *state) error {
	cfg, waiting := s.compose(c.applied)
	if len(waiting) > 0 {
		c.log.Debug("xds: waiting for resources; the previous version serves meanwhile", "waiting", waiting)
	}
	cfg.Node = c.proxyNode
	cfg.Version = fmt.Sprintf("cds=%s eds=%s lds=%s rds=%s", c.byURL[ClusterType].version,
		c.byURL[EndpointType].version, c.byURL[ListenerType].version, c.byURL[RouteType].version)
	if c.applied != nil && sameConfig(c.applied, cfg) {
		return nil
	}
	if err := c.opts.Proxy.Update(cfg); err != nil {
		return err
	}
	c.applied = cfg
	c.metrics.applied.Inc()
	c.log.Debug("xds: config applied", "version", cfg.Version, "listeners", len(cfg.Listeners),
		"clusters", len(cfg.Clusters))
	return nil
}

// sameConfig reports whether two configs differ in their version only.
func sameConfig(a, b *proxy.Config) bool {
	x, y := *a, *b
	x.Version, y.Version = "", ""
	return reflect.DeepEqual(&x, &y)
}

// resubscribe follows the listeners and clusters: RDS asks for the route configurations they name, EDS for
// the load assignments; what is no longer named is dropped.
func (c *Client) resubscribe() {
	for _, sub := range []struct {
		ts    *typeState
		names []string
	}{
		{c.byURL[EndpointType], c.current.endpointNames()},
		{c.byURL[RouteType], c.current.routeNames()},
	} {
		if slices.Equal(sub.ts.names, sub.names) {
			continue
		}
		sub.ts.names = sub.names
		keep := map[string]bool{}
		for _, name := range sub.names {
			keep[name] = true
		}
		// A new state rather than edits in place: c.current may share its maps with a state being built.
		next := *c.current
		if sub.ts.url == RouteType {
			next.routes = maps.Clone(next.routes)
			maps.DeleteFunc(next.routes, func(name string, _ proxy.RouteConfig) bool { return !keep[name] })
		} else {
			next.endpoints = maps.Clone(next.endpoints)
			maps.DeleteFunc(next.endpoints, func(name string, _ []proxy.Endpoint) bool { return !keep[name] })
		}
		c.current = &next
		sub.ts.delayed = nil // the request below answers the same response
		c.queue(c.request(sub.ts, ""))
	}
}

// nextWake returns when onTimer has something to do: a delayed NACK, or the end of the initial fetch timeout.
func (c *Client) nextWake(now time.Time) (time.Time, bool) {
	var wake time.Time
	for _, ts := range c.types {
		if ts.delayed != nil && (wake.IsZero() || ts.due.Before(wake)) {
			wake = ts.due
		}
	}
	if c.applied == nil && !c.firstResponse.IsZero() {
		if deadline := c.firstResponse.Add(c.opts.InitialFetchTimeout); deadline.After(now) &&
			(wake.IsZero() || deadline.Before(wake)) {
			wake = deadline
		}
	}
	return wake, !wake.IsZero()
}

func (c *Client) onTimer(now time.Time) {
	for _, ts := range c.types {
		if ts.delayed != nil && !now.Before(ts.due) {
			c.queue(ts.delayed)
			ts.delayed = nil
		}
	}
	c.tryFirstConfig(now)
}

// logNotes logs each thing translation left out once, not on every update.
func (c *Client) logNotes(n notes) {
	for _, x := range n {
		if c.noted[x.text] {
			continue
		}
		if len(c.noted) >= 4096 {
			clear(c.noted) // bounded memory; at worst a note is logged again
		}
		c.noted[x.text] = true
		level := slog.LevelWarn
		if x.quiet {
			level = slog.LevelDebug
		}
		c.log.Log(context.Background(), level, "xds: left out of the proxy's config", "detail", x.text)
	}
}

// translateResponse returns the state with a response's resources in place of the type's previous ones, or
// the errors of every resource that does not translate. LDS and CDS responses hold every resource; RDS and
// EDS responses may hold some only, and resources not subscribed to are ignored.
func (c *Client) translateResponse(ts *typeState, resp *discoveryv3.DiscoveryResponse) (*state, notes, error) {
	next := *c.current
	switch ts.url {
	case ListenerType:
		next.listeners = map[string]*listenerPart{}
	case ClusterType:
		next.clusters = map[string]*clusterPart{}
	case RouteType:
		next.routes = maps.Clone(next.routes)
	case EndpointType:
		next.endpoints = maps.Clone(next.endpoints)
	}
	subscribed := map[string]bool{}
	for _, name := range ts.names {
		subscribed[name] = true
	}
	var n notes
	var errs []error
	seen := map[string]bool{}
	for i, a := range resp.GetResources() {
		msg, name, err := unpackResource(a, ts.url)
		if err != nil {
			errs = append(errs, fmt.Errorf("resources[%d]: %w", i, err))
			continue
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("resources[%d]: %q sent twice", i, name))
			continue
		}
		seen[name] = true
		if msg == nil {
			// A TTL heartbeat: the resource stays as it is.
			if l := c.current.listeners[name]; ts.url == ListenerType && l != nil {
				next.listeners[name] = l
			}
			if cl := c.current.clusters[name]; ts.url == ClusterType && cl != nil {
				next.clusters[name] = cl
			}
			continue
		}
		switch m := msg.(type) {
		case *listenerv3.Listener:
			part, err := translateListener(m, c.opts.Codecs, &n)
			if err != nil {
				errs = append(errs, err)
			} else if part != nil {
				next.listeners[name] = part
			}
		case *clusterv3.Cluster:
			part, err := translateCluster(m, &n)
			if err != nil {
				errs = append(errs, err)
			} else {
				next.clusters[name] = part
			}
		case *routev3.RouteConfiguration:
			if !subscribed[name] {
				continue
			}
			rc, err := translateRouteConfiguration(m, &n)
			if err != nil {
				errs = append(errs, err)
			} else {
				next.routes[name] = rc
			}
		case *endpointv3.ClusterLoadAssignment:
			if !subscribed[name] {
				continue
			}
			eps, err := translateLoadAssignment(m)
			if err != nil {
				errs = append(errs, err)
			} else {
				next.endpoints[name] = eps
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return &next, n, nil
}

// unpackResource decodes one resource of a response, unwrapping the Resource envelope a server uses for TTLs.
// A nil message with a name is a TTL heartbeat.
func unpackResource(a *anypb.Any, url string) (proto.Message, string, error) {
	if typeName(a.GetTypeUrl()) == resourceWrapperName {
		r := &discoveryv3.Resource{}
		if err := proto.Unmarshal(a.GetValue(), r); err != nil {
			return nil, "", err
		}
		if r.GetResource() == nil {
			if r.GetName() == "" {
				return nil, "", errors.New("resource without a name or a body")
			}
			return nil, r.GetName(), nil
		}
		a = r.GetResource()
	}
	if typeName(a.GetTypeUrl()) != typeName(url) {
		return nil, "", fmt.Errorf("type %s in a response for %s", a.GetTypeUrl(), typeName(url))
	}
	var msg proto.Message
	var name func() string
	switch url {
	case ListenerType:
		m := &listenerv3.Listener{}
		msg, name = m, m.GetName
	case RouteType:
		m := &routev3.RouteConfiguration{}
		msg, name = m, m.GetName
	case ClusterType:
		m := &clusterv3.Cluster{}
		msg, name = m, m.GetName
	case EndpointType:
		m := &endpointv3.ClusterLoadAssignment{}
		msg, name = m, m.GetClusterName
	default:
		return nil, "", fmt.Errorf("type %s is not one the client subscribes to", url)
	}
	if err := proto.Unmarshal(a.GetValue(), msg); err != nil {
		return nil, "", fmt.Errorf("%s: %w", typeName(url), err)
	}
	if name() == "" {
		return nil, "", fmt.Errorf("%s without a name", typeName(url))
	}
	return msg, name(), nil
}
