// Package proxy is Meltemi's data plane: listeners that decode requests with a codec, run them through a
// filter chain and a router, and forward them over multiplexed upstream connections.
//
// The whole runtime config sits behind one atomic pointer. Update builds a new one and swaps it in; requests
// in flight finish on the config they started with, and no connection closes because routes, clusters or
// endpoints changed. Upstream connections belong to hosts, which outlive configs: a new config that names the
// same endpoint reuses its connections.
package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
)

// Options are what a Proxy is built from, besides its Config.
type Options struct {
	// Codecs are the protocols the proxy can speak.
	Codecs *codec.Registry
	// Filters are the filters configs may name (the router needs no registration).
	Filters *filter.Registry
	// Logger receives the proxy's logs (slog.Default when nil).
	Logger *slog.Logger
	// Metrics is where the proxy registers its metrics (a new registry when nil).
	Metrics *prometheus.Registry
	// Mark, when not zero, is the firewall mark (SO_MARK, Linux) of every connection the proxy opens, so that
	// the iptables rules that capture a sidecar's traffic can let the proxy's own traffic pass.
	Mark uint32
}

// Proxy is a running data plane.
type Proxy struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	snap    atomic.Pointer[snapshot]
	ready   atomic.Bool
	down    atomic.Bool // closed: retries waiting for their turn give up
	slots   atomic.Uint32
	// virtuals are the virtual listeners' sockets by address, for capture listeners to hand connections to.
	virtuals atomic.Pointer[map[string]*listenerSocket]

	mu      sync.Mutex // serialises Update and Close
	sockets map[string]*listenerSocket
	closed  bool

	hostsMu sync.Mutex
	hosts   map[hostKey]*host

	wg sync.WaitGroup
}

// New returns a proxy with no listeners; Update gives it its config.
func New(opts Options) (*Proxy, error) {
	if opts.Codecs == nil {
		return nil, errors.New("proxy: no codecs")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = prometheus.NewRegistry()
	}
	m, err := newMetrics(opts.Metrics)
	if err != nil {
		return nil, fmt.Errorf("proxy: metrics: %w", err)
	}
	p := &Proxy{opts: opts, log: opts.Logger, metrics: m, sockets: map[string]*listenerSocket{},
		hosts: map[hostKey]*host{}}
	p.snap.Store(&snapshot{cfg: &Config{}, listeners: map[string]*listenerRuntime{},
		clusters: map[string]*cluster{}})
	return p, nil
}

// Update validates cfg, builds it, binds new listeners and swaps it in. On error nothing changes and the
// previous config keeps serving. Connections are never closed because routes or clusters changed; a listener
// that is gone from cfg stops accepting, and its connections finish what they have in flight.
func (p *Proxy) Update(cfg *Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("proxy: closed")
	}
	s, err := p.build(cfg)
	if err != nil {
		p.metrics.configUpdates.WithLabelValues("rejected").Inc()
		return fmt.Errorf("config %s rejected: %w", cfg.Version, err)
	}
	prev := p.snap.Load()

	// Bind what is new before anything changes, so a port in use rejects the whole config.
	bound := map[string]*listenerSocket{}
	for name, lr := range s.listeners {
		if old := p.sockets[name]; old != nil && old.address == lr.address && old.virtual == lr.virtual &&
			old.capture == lr.capture {
			continue
		}
		var ln net.Listener
		if !lr.virtual {
			if ln, err = net.Listen("tcp", lr.address); err != nil {
				for _, b := range bound {
					b.stop()
				}
				closeFilters(s, prev)
				p.metrics.configUpdates.WithLabelValues("rejected").Inc()
				return fmt.Errorf("config %s rejected: listener %q: %w", cfg.Version, name, err)
			}
		}
		bound[name] = p.newSocket(name, lr, ln)
	}

	p.snap.Store(s)
	closeFilters(prev, s)
	for _, c := range s.clusters {
		c.state.serve(c)
	}
	for name, c := range prev.clusters {
		if s.clusters[name] == nil {
			c.state.retire()
		}
	}
	for name, sock := range p.sockets {
		if _, keep := s.listeners[name]; !keep || bound[name] != nil {
			delete(p.sockets, name)
			sock.shutdown()
		}
	}
	virtuals := map[string]*listenerSocket{}
	for name, sock := range bound {
		p.sockets[name] = sock
		if sock.ln != nil {
			p.wg.Add(1)
			go sock.acceptLoop()
		}
	}
	for _, sock := range p.sockets {
		if sock.virtual {
			virtuals[sock.address] = sock
		}
	}
	p.virtuals.Store(&virtuals)
	p.drainHosts(s)
	p.ready.Store(true)
	p.metrics.configUpdates.WithLabelValues("accepted").Inc()
	p.log.Debug("config accepted", "version", cfg.Version, "listeners", len(s.listeners),
		"clusters", len(s.clusters))
	return nil
}

// drainHosts lets go of the hosts that the new snapshot no longer sends to.
func (p *Proxy) drainHosts(cur *snapshot) {
	keep := cur.addresses()
	var gone []*host
	p.hostsMu.Lock()
	for key, h := range p.hosts {
		if !keep[key.address] {
			delete(p.hosts, key)
			gone = append(gone, h)
		}
	}
	p.hostsMu.Unlock()
	for _, h := range gone {
		h.drain()
	}
}

// DialCluster connects to an endpoint of a cluster of the config being served, for filters that call
// services of the mesh (filter.Host).
func (p *Proxy) DialCluster(ctx context.Context, name string) (net.Conn, error) {
	c := p.snap.Load().clusters[name]
	if c == nil {
		return nil, fmt.Errorf("cluster %q not found", name)
	}
	ep := c.pick(0, false)
	if ep == nil {
		return nil, fmt.Errorf("cluster %q has no endpoint", name)
	}
	ctx, cancel := context.WithTimeout(ctx, c.connectTimeout)
	defer cancel()
	return p.dialer().DialContext(ctx, "tcp", ep.address)
}

// dialer dials the proxy's own connections, marked when Options.Mark says so.
func (p *Proxy) dialer() *net.Dialer {
	d := &net.Dialer{}
	if p.opts.Mark != 0 {
		d.Control = markControl(p.opts.Mark)
	}
	return d
}

// Logger is where the proxy and its filters log (filter.Host).
func (p *Proxy) Logger() *slog.Logger { return p.log }

// Metrics is the registry the proxy's metrics are in, where filters register theirs (filter.Host).
func (p *Proxy) Metrics() prometheus.Registerer { return p.opts.Metrics }

var _ filter.Host = (*Proxy)(nil)

// ListenerAddr returns the bound address of the named listener (useful with port 0), or nil.
func (p *Proxy) ListenerAddr(name string) net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.sockets[name]; s != nil && s.ln != nil {
		return s.ln.Addr()
	}
	return nil
}

// Ready reports whether every listener of the first accepted config is accepting: Update binds listeners
// before it accepts a config, so that is once one config has been accepted.
func (p *Proxy) Ready() bool { return p.ready.Load() }

// AdminHandler serves /ready, /metrics and /config_dump.
func (p *Proxy) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !p.Ready() {
			http.Error(w, "not ready: no config accepted yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(p.opts.Metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("/config_dump", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(p.ConfigDump())
	})
	return mux
}

// ConfigDump returns the config being served. It must not be modified.
func (p *Proxy) ConfigDump() *Config { return p.snap.Load().cfg }

// Close stops every listener and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.down.Store(true)
	sockets := p.sockets
	p.sockets = map[string]*listenerSocket{}
	p.mu.Unlock()
	for _, s := range sockets {
		s.closeAll()
	}
	closeFilters(p.snap.Load(), nil)
	for _, c := range p.snap.Load().clusters {
		c.state.retire()
	}
	p.hostsMu.Lock()
	hosts := p.hosts
	p.hosts = map[hostKey]*host{}
	p.hostsMu.Unlock()
	for _, h := range hosts {
		h.removed.Store(true)
		h.mu.Lock()
		conns := h.all()
		h.mu.Unlock()
		for _, uc := range conns {
			uc.close(errors.New("proxy shutting down"))
		}
	}
	p.wg.Wait()
	return nil
}

// listenerSocket is a listener's socket and its connections. It lives as long as its listener keeps its name
// and address across configs. A virtual listener's has no socket (ln is nil): capture listeners hand it its
// connections.
type listenerSocket struct {
	p       *Proxy
	name    string
	address string
	ln      net.Listener
	virtual bool
	capture bool

	mu     sync.Mutex
	conns  map[*downstream]struct{}
	relays map[net.Conn]struct{} // a capture listener's passthrough connections
	closed bool

	total  prometheus.Counter
	active prometheus.Gauge
}

func (p *Proxy) newSocket(name string, lr *listenerRuntime, ln net.Listener) *listenerSocket {
	return &listenerSocket{p: p, name: name, address: lr.address, ln: ln, virtual: lr.virtual, capture: lr.capture,
		conns: map[*downstream]struct{}{}, relays: map[net.Conn]struct{}{},
		total:  p.metrics.downstreamTotal.WithLabelValues(lr.statPrefix),
		active: p.metrics.downstreamActive.WithLabelValues(lr.statPrefix)}
}

func (s *listenerSocket) acceptLoop() {
	defer s.p.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		if s.capture {
			s.handOn(conn)
			continue
		}
		if !s.serveConn(conn) {
			return
		}
	}
}

// serveConn serves a connection accepted on the listener's socket or handed to it by a capture listener;
// false once the listener is closed.
func (s *listenerSocket) serveConn(conn net.Conn) bool {
	lr := s.p.snap.Load().listeners[s.name]
	if lr == nil {
		conn.Close()
		return true
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	d := s.p.newDownstream(s, conn, lr)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return false
	}
	s.conns[d] = struct{}{}
	s.mu.Unlock()
	s.total.Inc()
	s.active.Inc()
	s.p.wg.Add(1)
	go func() {
		defer s.p.wg.Done()
		d.serve()
	}()
	return true
}

func (s *listenerSocket) remove(d *downstream) {
	s.mu.Lock()
	if _, ok := s.conns[d]; ok {
		delete(s.conns, d)
		s.active.Dec()
	}
	s.mu.Unlock()
}

// shutdown stops accepting and lets the connections finish what is in flight: their read side closes, so they
// take no new requests, and each closes once its last reply is out.
func (s *listenerSocket) shutdown() {
	for _, d := range s.stop() {
		if tc, ok := d.conn.(*net.TCPConn); ok {
			tc.CloseRead()
		} else {
			d.close()
		}
	}
}

// closeAll stops accepting and closes every connection now.
func (s *listenerSocket) closeAll() {
	for _, d := range s.stop() {
		d.close()
	}
}

// stop closes the listening socket and its passthrough connections, and returns the connections it accepted.
func (s *listenerSocket) stop() []*downstream {
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.relays {
		c.Close()
	}
	conns := make([]*downstream, 0, len(s.conns))
	for d := range s.conns {
		conns = append(conns, d)
	}
	return conns
}
