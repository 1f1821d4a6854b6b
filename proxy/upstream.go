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

	connects, connectFailures, unknownReplies prometheus.Counter
	upstreamDecodeErrors                      prometheus.Counter

	mu      sync.Mutex
	conns   []*upstreamConn // multiplexing: shared by all requests
	idle    []*upstreamConn // one request at a time: connections free for the next
	next    int
	removed atomic.Bool // no longer in the config: connections close once idle
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
			upstreamDecodeErrors: p.metrics.decodeErrors.WithLabelValues(lr.statPrefix, lr.protocol, "upstream"),
		}
		p.hosts[key] = h
	}
	p.hostsMu.Unlock()
	ep.host.Store(h)
	return h
}

// send forwards a two-way request. msg's frame is written (or copied) before send returns; its id is
// rewritten in place with dc, the downstream connection's codec, which decoded it.
func (h *host) send(c *call, dc codec.Codec, msg *codec.Message, batch *writeBatch) {
	h.active.Add(1)
	uc, id, ok := acquireFor(h, (*upstreamConn).register, c)
	if !ok {
		h.active.Add(-1)
		c.fail(codec.NoHealthyUpstream, "UF", "upstream "+h.key.address+" unavailable")
		return
	}
	if h.multiplexing {
		dc.SetID(msg, uint64(id))
	}
	if err := uc.w.writeTo(msg.Frame, batch); err != nil {
		// The read loop notices the broken connection and fails what is registered on it, this call too.
		uc.close(err)
	}
}

// acquireFor takes a connection and registers v on it, trying another connection when the one taken closed
// in between; false when three in a row did.
func acquireFor[V any](h *host, register func(*upstreamConn, V) (uint32, bool), v V) (*upstreamConn, uint32, bool) {
	for range 3 {
		uc := h.acquire()
		if id, ok := register(uc, v); ok {
			return uc, id, true
		}
	}
	return nil, 0, false
}

// sendOneway forwards a request that expects no reply.
func (h *host) sendOneway(frame []byte, batch *writeBatch) error {
	uc := h.acquire()
	err := uc.w.writeTo(frame, batch)
	if !h.multiplexing {
		h.releaseIdle(uc)
	}
	return err
}

// acquire returns a connection to send on: a shared one for multiplexing protocols (dialling up to maxConns),
// else an idle one or a new one. A connection still dialling queues what is written to it.
func (h *host) acquire() *upstreamConn {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.multiplexing {
		if n := len(h.idle); n > 0 {
			uc := h.idle[n-1]
			h.idle = h.idle[:n-1]
			return uc
		}
		return h.dial()
	}
	if len(h.conns) < h.maxConns {
		uc := h.dial()
		h.conns = append(h.conns, uc)
		return uc
	}
	h.next++
	return h.conns[h.next%len(h.conns)]
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

// dial starts a connection; h.mu is held.
func (h *host) dial() *upstreamConn {
	uc := &upstreamConn{h: h, w: newPendingWriter(), codec: h.factory.NewCodec(codec.Upstream), calls: map[uint32]*call{}}
	go uc.run()
	return uc
}

// forget drops a closed connection from the host's lists.
func (h *host) forget(uc *upstreamConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.conns = deleteConn(h.conns, uc)
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
	conns := append(append([]*upstreamConn(nil), h.conns...), h.idle...)
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

	mu      sync.Mutex
	conn    net.Conn
	calls   map[uint32]*call
	streams map[uint32]*stream     // streams relayed on the connection; they share the ids of calls
	nextID  [len(idClasses)]uint32 // the last id handed out in each class
	closed  bool
	err     error
}

// register records c as waiting for a reply and returns the id to send it with; false if the connection is
// closed.
func (uc *upstreamConn) register(c *call) (uint32, bool) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.closed {
		return 0, false
	}
	if !uc.h.multiplexing {
		uc.calls[0] = c
		return 0, true
	}
	id := uc.freeID(c.req.ID)
	uc.calls[id] = c
	return id, true
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
			if !call && !stream {
				return *next
			}
		}
	}
}

// take removes and returns the call waiting for id.
func (uc *upstreamConn) take(id uint64) *call {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if !uc.h.multiplexing {
		id = 0
	}
	if id > maxUpstreamID {
		return nil
	}
	c := uc.calls[uint32(id)]
	if c != nil {
		delete(uc.calls, uint32(id))
	}
	return c
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
	uc.mu.Unlock()

	uc.w.fail(net.ErrClosed)
	if conn != nil {
		conn.Close()
	}
	uc.h.forget(uc)
	detail := "upstream " + uc.h.key.address + " closed the connection"
	if err != nil {
		detail = "upstream " + uc.h.key.address + ": " + err.Error()
	}
	for _, c := range calls {
		uc.h.active.Add(-1)
		c.fail(codec.NoHealthyUpstream, flag, detail)
	}
	for _, s := range streams {
		s.end(streamEnd{flag: flag, tellClient: true, kind: codec.NoHealthyUpstream, detail: detail})
	}
}

// run dials the host and reads replies until the connection ends.
func (uc *upstreamConn) run() {
	h := uc.h
	ctx, cancel := context.WithTimeout(context.Background(), h.connectTimeout)
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", h.key.address)
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
			uc.handle(&msg, batch)
			rd.consume(n)
		}
		if batch != nil {
			batch.flush()
		}
		if h.idleTimeout > 0 {
			if now := time.Now(); deadline.Sub(now) < h.idleTimeout/2 {
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
		c.fail(kind, "UPE", "upstream "+uc.h.key.address+": "+err.Error())
	}
	uc.close(err)
}

// handle delivers one reply; writes go to batch when it is not nil.
func (uc *upstreamConn) handle(msg *codec.Message, batch *writeBatch) {
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
	c := uc.take(msg.ID)
	if c == nil {
		h.unknownReplies.Inc()
		return
	}
	h.active.Add(-1)
	c.respond(uc.codec, msg, batch)
	if !h.multiplexing {
		h.releaseIdle(uc)
		return
	}
	if h.removed.Load() {
		uc.closeIfIdle()
	}
}
