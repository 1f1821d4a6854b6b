package xds

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meltemi-mesh/meltemi/control/translate"
)

// node is what the server knows of one proxy, by node id. Fields are guarded by Server.mu.
type node struct {
	id      string
	ident   translate.Node
	key     string // shareKey(ident)
	streams map[*stream]bool
	// forget, when set, drops the node once it has had no stream for a while.
	forget    *time.Timer
	forgetGen uint64

	// snap is the snapshot the cache holds for the node; modelVersion and snapKey say what it was
	// translated from, so that a node that reconnects unchanged is not translated again.
	snap         *snapshot
	modelVersion uint64
	snapKey      string
	// pending is the model change whose config the node has been sent and not yet ACKed in full.
	pending *change
	// translateErr is why the config of modelVersion could not be made; the node keeps snap.
	translateErr error
}

// change is one call of Update.
type change struct {
	version uint64
	at      time.Time
}

// streamKey names a stream: go-control-plane numbers state-of-the-world and delta streams separately.
type streamKey struct {
	delta bool
	id    int64
}

// stream is one xDS stream of a node and what it has been sent and has answered, by type URL.
type stream struct {
	// node is nil until the first request, which names it.
	node *node
	// typeURL is the type of a per-type service's stream, "" for ADS: a delta request on a per-type
	// stream may leave its type out, and go-control-plane fills it in only after the callback.
	typeURL string
	types   map[string]*typeState
}

// typeState follows one type on one stream.
type typeState struct {
	// acked is the version the proxy runs: the last it ACKed, or told on the first request of the stream.
	acked string
	// nonce and sent are those of the last response.
	nonce, sent string
	// nackVersion and nackReason are those of the last NACK, so that a proxy rejecting one config over
	// and over is logged once.
	nackVersion, nackReason string
}

// answer is what a request says about the last response of its type.
type answer struct {
	typeURL string
	nonce   string
	// version is the version the request reports running; only state-of-the-world requests carry it.
	version string
	delta   bool
	reason  string // error_detail's message
	nack    bool
}

// callbacks feeds go-control-plane's stream events to the server.
type callbacks struct{ s *Server }

var _ serverv3.Callbacks = callbacks{}

func (c callbacks) OnStreamOpen(_ context.Context, id int64, typeURL string) error {
	return c.s.open(streamKey{id: id}, typeURL)
}

func (c callbacks) OnStreamClosed(id int64, _ *corev3.Node) { c.s.detach(streamKey{id: id}) }

func (c callbacks) OnStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	return c.s.onRequest(streamKey{id: id}, req.GetNode(), answer{
		typeURL: req.GetTypeUrl(), nonce: req.GetResponseNonce(), version: req.GetVersionInfo(),
		nack: req.GetErrorDetail() != nil, reason: req.GetErrorDetail().GetMessage(),
	})
}

func (c callbacks) OnStreamResponse(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	c.s.onResponse(streamKey{id: id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
}

func (c callbacks) OnDeltaStreamOpen(_ context.Context, id int64, typeURL string) error {
	return c.s.open(streamKey{delta: true, id: id}, typeURL)
}

func (c callbacks) OnDeltaStreamClosed(id int64, _ *corev3.Node) {
	c.s.detach(streamKey{delta: true, id: id})
}

func (c callbacks) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	// go-control-plane fills in the node of a delta request only after this callback, so a request
	// other than the first has none: the stream is found by its id.
	return c.s.onRequest(streamKey{delta: true, id: id}, req.GetNode(), answer{
		typeURL: req.GetTypeUrl(), nonce: req.GetResponseNonce(), delta: true,
		nack: req.GetErrorDetail() != nil, reason: req.GetErrorDetail().GetMessage(),
	})
}

func (c callbacks) OnStreamDeltaResponse(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	c.s.onResponse(streamKey{delta: true, id: id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
}

// OnFetchRequest gives a node that polls (REST-style Fetch, no stream) its config, which it then keeps
// for ForgetAfter.
func (c callbacks) OnFetchRequest(_ context.Context, req *discovery.DiscoveryRequest) error {
	return c.s.attach(nil, req.GetNode())
}

func (c callbacks) OnFetchResponse(*discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {}

// open registers a stream; its node is known at its first request.
func (s *Server) open(key streamKey, typeURL string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return status.Error(codes.Unavailable, "xds: the controller is stopping")
	}
	s.streams[key] = &stream{typeURL: typeURL, types: map[string]*typeState{}}
	return nil
}

// attach gives a stream (nil for a fetch) its node and makes sure the node has its config before
// go-control-plane looks for it in the cache, which it does once the callback returns.
func (s *Server) attach(st *stream, pn *corev3.Node) error {
	ident, err := parseNode(pn)
	if err != nil {
		s.log.Info("xds: proxy refused", "error", err)
		return status.Error(codes.InvalidArgument, err.Error())
	}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return status.Error(codes.Unavailable, "xds: the controller is stopping")
	}
	n := s.nodes[ident.ID]
	if n == nil {
		n = &node{id: ident.ID, streams: map[*stream]bool{}}
		s.nodes[ident.ID] = n
	}
	n.ident, n.key = ident, shareKey(ident)
	if n.forget != nil {
		n.forget.Stop()
		n.forget = nil
	}
	if st != nil {
		st.node = n
		n.streams[st] = true
		if len(n.streams) == 1 {
			s.metrics.connected.Inc()
		}
		s.log.Debug("xds: proxy stream opened", "node", n.id, "mode", ident.Mode, "streams", len(n.streams))
	} else if len(n.streams) == 0 {
		s.scheduleForget(n)
	}
	s.notifyLocked()
	s.mu.Unlock()
	s.sync(n)
	return nil
}

// detach forgets a closed stream; a node left without any is forgotten later.
func (s *Server) detach(key streamKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[key]
	if st == nil {
		return
	}
	delete(s.streams, key)
	n := st.node
	if n == nil {
		return
	}
	delete(n.streams, st)
	s.notifyLocked()
	s.log.Debug("xds: proxy stream closed", "node", n.id, "streams", len(n.streams))
	if len(n.streams) == 0 {
		s.metrics.connected.Dec()
		s.scheduleForget(n)
	}
}

// scheduleForget arranges for n to be dropped after ForgetAfter unless a stream opens. s.mu must be held.
func (s *Server) scheduleForget(n *node) {
	if s.stopped {
		return
	}
	if n.forget != nil {
		n.forget.Stop()
	}
	// A generation number, unique across nodes, tells a timer that fired late, after the node reconnected
	// and left again or was replaced, that it is stale.
	s.forgetGen++
	gen := s.forgetGen
	id := n.id
	n.forget = time.AfterFunc(s.forgetAfter, func() { s.forgetNode(id, gen) })
	n.forgetGen = gen
}

// forgetNode drops a node and its snapshot if it is still the one scheduled and still without streams.
func (s *Server) forgetNode(id string, gen uint64) {
	// pushMu first: a stream that opens meanwhile sets the node's snapshot under it, after the clear.
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	s.mu.Lock()
	n := s.nodes[id]
	if n == nil || n.forgetGen != gen || len(n.streams) > 0 || s.stopped {
		s.mu.Unlock()
		return
	}
	delete(s.nodes, id)
	s.notifyLocked()
	s.mu.Unlock()
	s.cache.ClearSnapshot(id)
}

// onRequest follows what a request tells: a new stream's node, and the proxy's answer to the last
// response of the type.
func (s *Server) onRequest(key streamKey, pn *corev3.Node, a answer) error {
	s.mu.Lock()
	st := s.streams[key]
	s.mu.Unlock()
	if st == nil {
		// Open refused it, as the server is stopping.
		return status.Error(codes.Unavailable, "xds: the controller is stopping")
	}
	// Only the stream's own goroutine sets its node, so reading it unlocked here is safe.
	if st.node == nil {
		if err := s.attach(st, pn); err != nil {
			return err
		}
	}

	s.mu.Lock()
	n := st.node
	if a.typeURL == "" {
		a.typeURL = st.typeURL
	}
	ts := st.types[a.typeURL]
	if ts == nil {
		ts = &typeState{}
		st.types[a.typeURL] = ts
	}
	var (
		logNack  bool
		rejected string
		done     func()
	)
	switch {
	case a.nack:
		rejected = ts.sent
		if a.nonce != ts.nonce {
			rejected = "" // a NACK of an older response than the last: its version is not known any more
		}
		logNack = ts.nackVersion != rejected || ts.nackReason != a.reason
		ts.nackVersion, ts.nackReason = rejected, a.reason
		if !a.delta {
			ts.acked = a.version
		}
	case a.nonce == "":
		// The first request of the type on this stream: a state-of-the-world proxy tells the version it
		// runs (after a reconnect, the one it had).
		ts.acked = a.version
	default:
		if !a.delta {
			ts.acked = a.version
		} else if a.nonce == ts.nonce {
			ts.acked = ts.sent
		}
		ts.nackVersion, ts.nackReason = "", ""
		done = s.ackedAll(n)
	}
	s.notifyLocked()
	s.mu.Unlock()

	if a.nack {
		s.metrics.nacks.WithLabelValues(shortType(a.typeURL)).Inc()
		level := slog.LevelInfo
		if !logNack {
			level = slog.LevelDebug
		}
		s.log.Log(context.Background(), level, "xds: proxy rejected config", "node", n.id, "type", a.typeURL,
			"version", rejected, "error", a.reason)
	}
	if done != nil {
		done()
	}
	return nil
}

// onResponse remembers the nonce and version of the response going out, so that an answer can be matched.
func (s *Server) onResponse(key streamKey, typeURL, nonce, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[key]
	if st == nil || st.node == nil {
		return
	}
	ts := st.types[typeURL]
	if ts == nil {
		ts = &typeState{}
		st.types[typeURL] = ts
	}
	ts.nonce, ts.sent = nonce, version
}

// ackedAll records the convergence of a node that has now ACKed the whole config of its pending model
// change. It returns the test hook's call, to be made once s.mu is released; nil when there is none.
// s.mu must be held.
func (s *Server) ackedAll(n *node) func() {
	if n.pending == nil || !s.upToDate(n) {
		return nil
	}
	ch := n.pending
	n.pending = nil
	took := time.Since(ch.at)
	s.metrics.convergence.Observe(took.Seconds())
	if hook := s.converged; hook != nil {
		return func() { hook(n.id, ch.version, took) }
	}
	return nil
}

// upToDate reports whether every type the node subscribes to, on every stream, runs the version of its
// snapshot. A delta subscription to named resources that a change left alone is sent nothing and so
// never catches up: such a node's convergence is not recorded. s.mu must be held.
func (s *Server) upToDate(n *node) bool {
	for st := range n.streams {
		for typeURL, ts := range st.types {
			if ts.acked != n.snap.GetVersion(typeURL) {
				return false
			}
		}
	}
	return true
}

// cacheLogger hands go-control-plane's messages to slog. Its warnings are about ordinary protocol states
// (a request naming resources the snapshot lacks yet), so they go to Debug, and only its errors are
// warnings here.
type cacheLogger struct{ l *slog.Logger }

var _ log.Logger = cacheLogger{}

func (c cacheLogger) Debugf(format string, args ...any) { c.logf(slog.LevelDebug, format, args) }
func (c cacheLogger) Infof(format string, args ...any)  { c.logf(slog.LevelDebug, format, args) }
func (c cacheLogger) Warnf(format string, args ...any)  { c.logf(slog.LevelDebug, format, args) }
func (c cacheLogger) Errorf(format string, args ...any) { c.logf(slog.LevelWarn, format, args) }

func (c cacheLogger) logf(level slog.Level, format string, args []any) {
	// The cache logs on every watch; formatting is skipped unless someone reads it.
	if !c.l.Enabled(context.Background(), level) {
		return
	}
	c.l.Log(context.Background(), level, "xds: "+fmt.Sprintf(format, args...))
}

// Changes returns a channel that is closed the next time what Proxies returns may change: a proxy
// connects or leaves, is sent a config, or answers one.
func (s *Server) Changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// notifyLocked wakes those waiting on Changes. s.mu must be held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// ProxyStatus is what the server knows of one proxy, for operators (config dumps, debugging) and for
// telling which config the proxies run (status conditions).
type ProxyStatus struct {
	// ID is the xDS node id.
	ID string
	// Node is the identity read from the node, which its config is translated for.
	Node translate.Node
	// Streams is the number of open xDS streams; 0 for a proxy that left and is not forgotten yet.
	Streams int
	// ModelVersion is the version of the model snapshot the proxy's config was last translated from.
	ModelVersion uint64
	// Versions are the versions of the proxy's config, by type URL.
	Versions map[string]string
	// Synced is true when the proxy has ACKed the version of every type it subscribes to.
	Synced bool
	// Error is why the config of ModelVersion could not be made, when it could not: the proxy keeps
	// the config it had, which Synced is about.
	Error string
}

// Proxies returns the status of every proxy the server knows, sorted by id.
func (s *Server) Proxies() []ProxyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProxyStatus, 0, len(s.nodes))
	for _, n := range s.nodes {
		p := ProxyStatus{ID: n.id, Node: n.ident, Streams: len(n.streams), ModelVersion: n.modelVersion}
		if n.snap != nil {
			p.Versions = make(map[string]string, len(servedTypes))
			for _, typ := range servedTypes {
				p.Versions[typ] = n.snap.GetVersion(typ)
			}
			p.Synced = s.upToDate(n)
		}
		if n.translateErr != nil {
			p.Error = n.translateErr.Error()
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b ProxyStatus) int { return cmp.Compare(a.ID, b.ID) })
	return out
}
