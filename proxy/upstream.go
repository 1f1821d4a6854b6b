package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meltemi-mesh/meltemi/codec"
)

// maxUpstreamID bounds the request ids the proxy puts on upstream connections, so they fit every protocol's
// id field (Thrift's seqid and tRPC's request id are 32-bit, and some peers treat them as signed).
const maxUpstreamID = 1<<31 - 1

type hostKey struct {
	address string
	codec   string
}

// host is an upstream endpoint as the proxy knows it across config updates: its connections and its load.
// Clusters of any config version that name the same address (and protocol) share it.
type host struct {
	p              *Proxy
	key            hostKey
	factory        codec.Factory
	multiplexing   bool
	connectTimeout time.Duration
	idleTimeout    time.Duration
	maxConns       int
	active         atomic.Int64 // requests in flight, for least-request balancing

	connects, connectFailures, unknownReplies, lateReplies prometheus.Counter
	upstreamDecodeErrors                                   prometheus.Counter

	mu       sync.Mutex
	slots    []*upstreamConn // multiplexing: shared by all requests, each client connection using one slot's
	retiring []*upstreamConn // multiplexing: taken out of their slots, closing once idle
	idle     []*upstreamConn // one request at a time: connections free for the next
	removed  atomic.Bool     // no longer in the config: connections close once idle
}

// hostFor returns the host behind an endpoint for a protocol, the codec registered as codecName, creating it on
// first use.
func (p *Proxy) hostFor(ep *endpointRef, lr *listenerRuntime, c *cluster, codecName string, factory codec.Factory) *host {
	if h := ep.host.Load(); h != nil && h.key.codec == codecName {
		return h
	}
	key := hostKey{address: ep.address, codec: codecName}
	p.hostsMu.Lock()
	h := p.hosts[key]
	if h == nil {
		h = &host{
			p:                    p,
			key:                  key,
			factory:              factory,
			multiplexing:         factory.Properties().Multiplexing,
			connectTimeout:       c.connectTimeout,
			idleTimeout:          c.idleTimeout,
			maxConns:             c.connsPerEndpoint,
			connects:             p.metrics.upstreamConnects.WithLabelValues(ep.address),
			connectFailures:      p.metrics.upstreamConnectFailures.WithLabelValues(ep.address),
			unknownReplies:       p.metrics.upstreamUnknownReplies.WithLabelValues(ep.address),
			lateReplies:          p.metrics.lateReplies.WithLabelValues(ep.address),
			upstreamDecodeErrors: p.metrics.decodeErrors.WithLabelValues(lr.statPrefix, lr.protocol, "upstream"),
		}
		p.hosts[key] = h
	}
	p.hostsMu.Unlock()
	ep.host.Store(h)
	return h
}

// acquireFor takes a connection (the one of slot, for multiplexing protocols) and registers v on it, trying
// another connection when the one taken closed in between; false when three in a row did, or when the
// cluster may open no more connections and the host has none.
func acquireFor[V any](h *host, cl *cluster, slot uint32, register func(*upstreamConn, V) (uint32, bool),
	v V) (*upstreamConn, uint32, bool) {
	for range 3 {
		uc := h.acquire(cl, slot)
		if uc == nil {
			cl.state.overflow[overflowConnections].Inc()
			return nil, 0, false
		}
		if id, ok := register(uc, v); ok {
			return uc, id, true
		}
	}
	return nil, 0, false
}

// sendOneway forwards a request that expects no reply.
func (h *host) sendOneway(cl *cluster, slot uint32, frame []byte, batch *writeBatch) error {
	uc := h.acquire(cl, slot)
	if uc == nil {
		cl.state.overflow[overflowConnections].Inc()
		return errors.New("cluster " + cl.name + " has its maximum of connections")
	}
	err := uc.w.writeTo(frame, batch)
	if !h.multiplexing {
		h.releaseIdle(uc)
	}
	return err
}

// acquire returns a connection to send on: for multiplexing protocols, the connection of one of the host's
// maxConns slots, dialled on first use, so that a client connection (whose slot it is) sends all its requests
// on one upstream connection and gets its replies in batches; else an idle connection or a new one. It
// returns nil when a new connection is needed and the cluster cl has its maximum of them. A connection still
// dialling queues what is written to it.
func (h *host) acquire(cl *cluster, slot uint32) *upstreamConn {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.multiplexing {
		if n := len(h.idle); n > 0 {
			uc := h.idle[n-1]
			h.idle = h.idle[:n-1]
			return uc
		}
		if !cl.connectionAllowed() {
			return nil
		}
		return h.dial(cl)
	}
	if len(h.slots) < h.maxConns {
		h.slots = append(h.slots, make([]*upstreamConn, h.maxConns-len(h.slots))...)
	}
	i := int(slot % uint32(len(h.slots)))
	uc := h.slots[i]
	if uc != nil && !uc.retired.Load() {
		return uc
	}
	if uc != nil {
		// Served its maximum of requests: it closes once idle, and the slot gets a new one.
		h.retiring = append(h.retiring, uc)
		h.slots[i] = nil
	}
	if cl.connectionAllowed() {
		uc = h.dial(cl)
		h.slots[i] = uc
		return uc
	}
	// The cluster may open no more connections: share another slot's.
	for _, uc := range h.slots {
		if uc != nil && !uc.retired.Load() {
			return uc
		}
	}
	return nil
}

// connectionAllowed counts a new connection of the cluster in, if its limit allows one.
func (c *cluster) connectionAllowed() bool {
	n := c.state.connections.Add(1)
	if c.cb.MaxConnections > 0 && n > int64(c.cb.MaxConnections) {
		c.state.connections.Add(-1)
		return false
	}
	return true
}

// connected reports whether the host has an established connection to send on.
func (h *host) connected() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, uc := range h.slots {
		if uc != nil && !uc.dialling() {
			return true
		}
	}
	return len(h.idle) > 0
}

// all returns every connection of the host; h.mu is held.
func (h *host) all() []*upstreamConn {
	var out []*upstreamConn
	for _, uc := range h.slots {
		if uc != nil {
			out = append(out, uc)
		}
	}
	return append(append(out, h.retiring...), h.idle...)
}

// releaseIdle returns a one-request-at-a-time connection to the idle list.
func (h *host) releaseIdle(uc *upstreamConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.removed.Load() || uc.isClosed() {
		go uc.close(nil)
		return
	}
	h.idle = append(h.idle, uc)
}

// dial starts a connection, counted in the cluster's connections (the caller counted it in); h.mu is held.
func (h *host) dial(cl *cluster) *upstreamConn {
	uc := &upstreamConn{h: h, w: newPendingWriter(), codec: h.factory.NewCodec(codec.Upstream),
		calls: map[uint32]*call{}, charged: cl.state, maxRequests: cl.maxRqPerConn}
	go uc.run()
	return uc
}

// forget drops a closed connection from the host's lists.
func (h *host) forget(uc *upstreamConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, c := range h.slots {
		if c == uc {
			h.slots[i] = nil
		}
	}
	h.retiring = deleteConn(h.retiring, uc)
	h.idle = deleteConn(h.idle, uc)
}

func deleteConn(list []*upstreamConn, uc *upstreamConn) []*upstreamConn {
	for i, c := range list {
		if c == uc {
			list[i] = list[len(list)-1]
			list[len(list)-1] = nil
			return list[:len(list)-1]
		}
	}
	return list
}

// drain marks a host gone from the config: idle connections close now, busy ones when their last reply is in.
func (h *host) drain() {
	h.removed.Store(true)
	h.mu.Lock()
	conns := h.all()
	h.mu.Unlock()
	for _, uc := range conns {
		uc.closeIfIdle()
	}
}

// upstreamConn is one connection to a host. A goroutine dials it and then reads its replies, handing each to
// the call that waits for it; writes come from the downstream read loops.
type upstreamConn struct {
	h     *host
	w     *connWriter
	codec codec.Codec

	charged     *clusterState // the cluster whose connection count it is in
	maxRequests uint32        // requests after which it retires (0: never)

	mu      sync.Mutex
	conn    net.Conn
	calls   map[uint32]*call
	streams map[uint32]*stream     // streams relayed on the connection; they share the ids of calls
	nextID  [len(idClasses)]uint32 // the last id handed out in each class
	late    lateIDs                // ids of requests that timed out, kept from reuse a while
	served  uint32
	// sweep times out the calls whose timeouts are long (call.sweepEnd), every sweepTick while there are any.
	sweep    *time.Timer
	sweeping bool
	retired  atomic.Bool // served its maximum of requests: no longer handed out, closes once idle
	closed   bool
	err      error
}

// register records c as waiting for a reply and returns the id to send it with; false if the connection is
// closed.
func (uc *upstreamConn) register(c *call) (uint32, bool) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.closed {
		return 0, false
	}
	id := uint32(0)
	if uc.h.multiplexing {
		id = uc.freeID(c.req.ID)
	}
	uc.calls[id] = c
	c.uc, c.upID, c.onDialling = uc, id, uc.conn == nil
	if c.sweepEnd != 0 && !uc.sweeping {
		uc.sweeping = true
		if uc.sweep == nil {
			uc.sweep = time.AfterFunc(sweepTick, uc.sweepCalls)
		} else {
			uc.sweep.Reset(sweepTick)
		}
	}
	if c.onDialling && c.pendingOn == nil {
		c.pendingOn = c.cl.state
		c.pendingOn.pending.Add(1)
	}
	uc.count()
	return id, true
}

// sweepCalls takes the calls whose time is up off the connection and times them out, then comes back a tick
// later if calls with long timeouts remain.
func (uc *upstreamConn) sweepCalls() {
	now := time.Now()
	cutoff := now.UnixNano()
	var expired []*call
	uc.mu.Lock()
	uc.sweeping = false
	more := false
	for id, c := range uc.calls {
		switch {
		case c.sweepEnd == 0:
		case c.sweepEnd <= cutoff:
			delete(uc.calls, id)
			if uc.h.multiplexing {
				uc.late.add(id, now)
			}
			expired = append(expired, c)
		default:
			more = true
		}
	}
	if more && !uc.closed {
		uc.sweeping = true
		uc.sweep.Reset(sweepTick)
	}
	uc.mu.Unlock()
	for _, c := range expired {
		c.timedOut(uc, now)
	}
}

// unregister takes c, registered with id, back off the connection before it was sent.
func (uc *upstreamConn) unregister(id uint32, c *call) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.calls[id] == c {
		delete(uc.calls, id)
	}
}

// count counts a request or stream sent on the connection, retiring the connection when it has served its
// maximum; uc.mu is held.
func (uc *upstreamConn) count() {
	uc.served++
	if uc.maxRequests > 0 && uc.served >= uc.maxRequests {
		uc.retired.Store(true)
	}
}

// dialling reports whether the connection is still being established.
func (uc *upstreamConn) dialling() bool {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	return uc.conn == nil && !uc.closed
}

// timeOut takes c, the request registered with id, off the connection because it ran out of time, and keeps
// id from reuse for a while so that a late reply is not taken for the answer to a later request. False when
// the request is no longer there (its reply came first).
func (uc *upstreamConn) timeOut(id uint32, c *call) bool {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.calls[id] != c {
		return false
	}
	delete(uc.calls, id)
	if uc.h.multiplexing {
		if uc.late.add(id, time.Now()) > maxLateIDs {
			// A server this far behind is not answering: start afresh.
			go uc.close(errors.New("too many requests timed out"))
		}
	}
	return true
}

// lateIDs are the ids of timed-out requests, in the order they timed out.
type lateIDs struct {
	at    map[uint32]time.Time
	queue []lateID
}

type lateID struct {
	id uint32
	at time.Time
}

// lateIDTTL is how long the id of a timed-out request stays out of use; maxLateIDs bounds how many a
// connection keeps.
const (
	lateIDTTL  = 5 * time.Minute
	maxLateIDs = 1 << 16
)

// add records id, forgetting those older than lateIDTTL, and returns how many are kept.
func (l *lateIDs) add(id uint32, now time.Time) int {
	if l.at == nil {
		l.at = map[uint32]time.Time{}
	}
	for len(l.queue) > 0 && now.Sub(l.queue[0].at) > lateIDTTL {
		if old := l.queue[0]; l.at[old.id] == old.at {
			delete(l.at, old.id)
		}
		l.queue = l.queue[1:]
	}
	l.at[id] = now
	l.queue = append(l.queue, lateID{id, now})
	return len(l.at)
}

// has reports whether id belongs to a timed-out request.
func (l *lateIDs) has(id uint32) bool {
	_, ok := l.at[id]
	return ok
}

// forget lets id be used again: its late reply came.
func (l *lateIDs) forget(id uint32) bool {
	if _, ok := l.at[id]; !ok {
		return false
	}
	delete(l.at, id)
	return true
}

// idClasses split the ids the proxy hands out by the bytes they take as a protobuf or Thrift compact varint
// (7 bits a byte): 1-127, 128-16383, and so on up to maxUpstreamID.
var idClasses = [...]struct{ lo, hi uint32 }{
	{1, 1<<7 - 1}, {1 << 7, 1<<14 - 1}, {1 << 14, 1<<21 - 1}, {1 << 21, 1<<28 - 1}, {1 << 28, maxUpstreamID},
}

// idClass returns the class of an id; ids beyond maxUpstreamID belong to the last.
func idClass(id uint64) int {
	for i, c := range idClasses {
		if id <= uint64(c.hi) {
			return i
		}
	}
	return len(idClasses) - 1
}

// freeID returns an id that no call or stream on the connection uses, for a request whose downstream id is
// down; uc.mu is held.
//
// It prefers an id that takes as many varint bytes as down: a codec whose ids are varints (Thrift compact,
// bRPC, tRPC) then rewrites the request and restores the reply in place, where a longer id would make it copy
// the request and a shorter one the reply (servers write ids in their shortest form). Other codecs are
// indifferent. Ids go round within their class, so an id is reused only after its class has gone round; a
// class with no free id passes the request to the next.
//
// Requests end only with their reply or their connection, so no late reply can reach an id's next owner.
func (uc *upstreamConn) freeID(down uint64) uint32 {
	for class := idClass(down); ; class = (class + 1) % len(idClasses) {
		lo, hi := idClasses[class].lo, idClasses[class].hi
		next := &uc.nextID[class]
		for range min(hi-lo+1, 1024) {
			if *next < lo || *next >= hi {
				*next = lo
			} else {
				*next++
			}
			_, call := uc.calls[*next]
			_, stream := uc.streams[*next]
			if !call && !stream && (len(uc.late.at) == 0 || !uc.late.has(*next)) {
				return *next
			}
		}
	}
}

// take removes and returns the call waiting for id; late is true when id belongs to a request that timed out.
func (uc *upstreamConn) take(id uint64) (c *call, late bool) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if !uc.h.multiplexing {
		id = 0
	}
	if id > maxUpstreamID {
		return nil, false
	}
	c = uc.calls[uint32(id)]
	if c != nil {
		delete(uc.calls, uint32(id))
		return c, false
	}
	return nil, len(uc.late.at) > 0 && uc.late.forget(uint32(id))
}

func (uc *upstreamConn) isClosed() bool {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	return uc.closed
}

// closeIfIdle closes the connection when nothing is in flight on it.
func (uc *upstreamConn) closeIfIdle() {
	if uc.idle() {
		uc.close(nil)
	}
}

// close ends the connection and fails every call still waiting on it.
func (uc *upstreamConn) close(err error) { uc.closeFlagged(err, "UC") }

// closeFlagged is close with the response flag that the failed calls' metrics show.
func (uc *upstreamConn) closeFlagged(err error, flag string) {
	uc.mu.Lock()
	if uc.closed {
		uc.mu.Unlock()
		return
	}
	uc.closed, uc.err = true, err
	calls, streams := uc.calls, uc.streams
	uc.calls, uc.streams = nil, nil
	conn := uc.conn
	if uc.sweep != nil {
		uc.sweep.Stop()
	}
	uc.mu.Unlock()

	uc.w.fail(net.ErrClosed)
	if conn != nil {
		conn.Close()
	}
	uc.charged.connections.Add(-1)
	uc.h.forget(uc)
	detail := "upstream " + uc.h.key.address + " closed the connection"
	if err != nil {
		detail = "upstream " + uc.h.key.address + ": " + err.Error()
	}
	cause := retryReset
	if flag == "UF" {
		cause = retryConnect
	}
	for _, c := range calls {
		uc.h.active.Add(-1)
		c.tryFailed(cause, codec.NoHealthyUpstream, flag, detail)
	}
	for _, s := range streams {
		s.end(streamEnd{flag: flag, tellClient: true, kind: codec.NoHealthyUpstream, detail: detail})
	}
}

// run dials the host and reads replies until the connection ends.
func (uc *upstreamConn) run() {
	h := uc.h
	ctx, cancel := context.WithTimeout(context.Background(), h.connectTimeout)
	conn, err := h.p.dialer().DialContext(ctx, "tcp", h.key.address)
	cancel()
	if err != nil {
		h.connectFailures.Inc()
		h.p.log.Info("upstream connect failed", "address", h.key.address, "error", err)
		uc.closeFlagged(err, "UF")
		return
	}
	h.connects.Inc()
	uc.mu.Lock()
	if uc.closed { // closed while dialling (proxy shutting down)
		uc.mu.Unlock()
		conn.Close()
		return
	}
	uc.conn = conn
	for _, c := range uc.calls {
		// Connected: the requests that waited for it are no longer pending.
		if c.pendingOn != nil {
			c.pendingOn.pending.Add(-1)
			c.pendingOn = nil
		}
	}
	uc.mu.Unlock()
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if err := uc.w.attach(conn); err != nil {
		uc.close(err)
		return
	}
	uc.readLoop(conn)
}

func (uc *upstreamConn) readLoop(conn net.Conn) {
	h := uc.h
	rd := newFrameReader(conn)
	defer rd.release()
	var msg codec.Message
	var deadline time.Time
	var batched writeBatch
	for {
		need := 0
		var batch *writeBatch
		now := time.Now() // the replies of one read arrived together
		for {
			data := rd.data()
			if len(data) == 0 {
				break
			}
			msg.Reset()
			n, err := uc.codec.Decode(data, &msg)
			if err == codec.ErrIncomplete {
				need = n
				break
			}
			if err != nil {
				if batch != nil {
					batch.flush()
				}
				h.upstreamDecodeErrors.Inc()
				h.p.log.Info("closing upstream connection on bad frame", "address", h.key.address, "error", err)
				uc.closeWith(codec.BadResponse, err)
				return
			}
			if n < len(data) {
				batch = &batched // more replies in this read: write each downstream connection's together
			}
			uc.handle(&msg, batch, now)
			rd.consume(n)
		}
		if batch != nil {
			batch.flush()
		}
		if h.idleTimeout > 0 {
			if deadline.Sub(now) < h.idleTimeout/2 {
				deadline = now.Add(h.idleTimeout)
				conn.SetReadDeadline(deadline)
			}
		}
		if err := rd.fill(need); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !uc.idle() {
				deadline = time.Time{}
				continue
			}
			if err == io.EOF || errors.Is(err, net.ErrClosed) || errors.As(err, &ne) && ne.Timeout() {
				err = nil
			}
			uc.close(err)
			return
		}
	}
}

func (uc *upstreamConn) idle() bool {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	return len(uc.calls) == 0 && len(uc.streams) == 0
}

// closeWith fails the calls on the connection with kind (a bad reply frame, say) and closes it.
func (uc *upstreamConn) closeWith(kind codec.ErrorKind, err error) {
	uc.mu.Lock()
	calls := uc.calls
	uc.calls = map[uint32]*call{}
	uc.mu.Unlock()
	for _, c := range calls {
		uc.h.active.Add(-1)
		c.tryFailed(0, kind, "UPE", "upstream "+uc.h.key.address+": "+err.Error())
	}
	uc.close(err)
}

// handle delivers one reply, which arrived at now; writes go to batch when it is not nil.
func (uc *upstreamConn) handle(msg *codec.Message, batch *writeBatch, now time.Time) {
	h := uc.h
	switch msg.Type {
	case codec.Response, codec.Error:
	case codec.Heartbeat:
		if reply := uc.codec.HeartbeatReply(nil, msg); len(reply) > 0 {
			uc.w.writeTo(reply, batch)
		}
		return
	case codec.StreamInit, codec.StreamData, codec.StreamFeedback, codec.StreamCloseOneWay, codec.StreamCloseTwoWay:
		if s := uc.stream(msg.ID); s != nil {
			s.fromServer(msg, batch)
		} else {
			h.unknownReplies.Inc()
		}
		return
	default:
		return
	}
	c, late := uc.take(msg.ID)
	if c == nil {
		if late {
			h.lateReplies.Inc()
		} else {
			h.unknownReplies.Inc()
		}
		return
	}
	c.onReply(uc, msg, batch, now)
	if !h.multiplexing {
		h.releaseIdle(uc)
		return
	}
	if h.removed.Load() || uc.retired.Load() {
		uc.closeIfIdle()
	}
}
