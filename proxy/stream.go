package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/meltemi-mesh/meltemi/codec"
)

// DefaultStreamIdleTimeout ends a stream on which neither peer has sent a frame for this long, when the
// listener does not set its own: Envoy's default stream idle timeout.
const DefaultStreamIdleTimeout = 5 * time.Minute

// stream is a stream in flight: opened by a client's StreamInit, routed like a request, and pinned from then
// on to the upstream connection the INIT went to. Every later frame of the stream, either way, is relayed on
// that pair of connections with its stream id rewritten: the client's id downstream, the proxy's upstream.
//
// A stream ends when both peers have closed their direction, when either resets it, when the server refuses
// it, when its upstream connection or its client goes away, or when it has been idle too long. The proxy then
// forgets it on both connections, and sends a reset to whichever peer did not end it.
type stream struct {
	d       *downstream
	lr      *listenerRuntime
	uc      *upstreamConn
	downID  uint64 // the client's stream id
	upID    uint32 // the proxy's id for it on uc
	peer    *peerLabels
	start   time.Time
	reqSize int
	// init is what error replies need of the client's INIT (type, id, Private); it holds no frame.
	init codec.Message

	timeout time.Duration
	last    atomic.Int64 // when the stream last carried a frame, in nanoseconds since start
	timer   *time.Timer

	mu                     sync.Mutex
	clientDone, serverDone bool  // each peer has closed its direction
	status                 int32 // the server's answer to the INIT, or its close status
	respSize               int
	ended                  bool
}

// touch records that the stream carried a frame.
func (s *stream) touch() { s.last.Store(int64(time.Since(s.start))) }

// openStream forwards a client's StreamInit to h and starts relaying the stream. dc is the client
// connection's codec, which decoded msg.
func (d *downstream) openStream(h *host, lr *listenerRuntime, cl *cluster, ep *endpointRef, msg *codec.Message,
	start time.Time, size int, buf *[]byte, batch *writeBatch) {
	if !h.multiplexing {
		// Stream frames are told apart by their ids alone.
		d.localReplyPeer(lr, msg, codec.Unspecified, "UF", "streams need a protocol with request ids", start, size,
			ep.peer, buf, batch)
		return
	}
	if d.stream(msg.ID) != nil {
		d.p.log.Debug("dropping a second INIT for an open stream", "listener", d.sock.name, "stream", msg.ID)
		return
	}
	s := &stream{d: d, lr: lr, downID: msg.ID, peer: ep.peer, start: start, reqSize: size, timeout: lr.streamIdleTimeout}
	s.init.Type, s.init.ID, s.init.Private = msg.Type, msg.ID, msg.Private
	// The timer exists before anything can end the stream; it fires no sooner than the timeout.
	s.timer = time.AfterFunc(s.timeout, s.checkIdle)
	h.active.Add(1)
	uc, id, ok := acquireFor(h, cl, d.slot, (*upstreamConn).registerStream, s)
	if !ok {
		h.active.Add(-1)
		s.timer.Stop()
		d.localReplyPeer(lr, msg, codec.NoHealthyUpstream, "UF", "upstream "+h.key.address+" unavailable",
			start, size, ep.peer, buf, batch)
		return
	}
	s.uc, s.upID = uc, id
	d.streamsMu.Lock()
	if d.streams == nil {
		d.streams = map[uint64]*stream{}
	}
	d.streams[s.downID] = s
	d.streamsMu.Unlock()
	d.inflight.Add(1)
	lr.active.Inc()
	d.codec.SetID(msg, uint64(s.upID))
	if err := s.uc.w.writeTo(msg.Frame, batch); err != nil {
		s.uc.close(err) // fails the stream too
	}
}

// stream returns the client's open stream with this id.
func (d *downstream) stream(id uint64) *stream {
	d.streamsMu.Lock()
	defer d.streamsMu.Unlock()
	return d.streams[id]
}

// streamFrame relays a client's frame of an open stream upstream.
func (d *downstream) streamFrame(msg *codec.Message, batch *writeBatch) {
	s := d.stream(msg.ID)
	if s == nil {
		d.p.log.Debug("dropping a frame of an unknown stream", "listener", d.sock.name, "stream", msg.ID,
			"type", msg.Type.String())
		return
	}
	s.touch()
	typ := msg.Type
	d.codec.SetID(msg, uint64(s.upID))
	if err := s.uc.w.writeTo(msg.Frame, batch); err != nil {
		s.uc.close(err)
		return
	}
	switch typ {
	case codec.StreamCloseOneWay:
		s.closeSide(true)
	case codec.StreamCloseTwoWay:
		s.end(streamEnd{status: msg.Status, flag: "DR"}) // the client reset it: the server has been told
	}
}

// fromServer relays a server's frame of the stream to its client. uc's codec decoded msg.
func (s *stream) fromServer(msg *codec.Message, batch *writeBatch) {
	s.touch()
	typ, status, failed := msg.Type, msg.Status, msg.Failed
	s.uc.codec.SetID(msg, s.downID)
	s.mu.Lock()
	s.respSize += len(msg.Frame)
	if typ == codec.StreamInit || typ == codec.StreamCloseOneWay || typ == codec.StreamCloseTwoWay {
		if status != 0 || s.status == 0 {
			s.status = status
		}
	}
	s.mu.Unlock()
	if err := s.d.w.writeTo(msg.Frame, batch); err != nil {
		s.d.conn.Close()
	}
	switch {
	case typ == codec.StreamInit && failed, typ == codec.StreamCloseTwoWay:
		// The server refused or reset the stream: the client has been told.
		s.end(streamEnd{status: status, flag: "-"})
	case typ == codec.StreamCloseOneWay:
		s.closeSide(false)
	}
}

// closeSide records that one peer closed its direction; the stream ends when both have.
func (s *stream) closeSide(client bool) {
	s.mu.Lock()
	if client {
		s.clientDone = true
	} else {
		s.serverDone = true
	}
	both := s.clientDone && s.serverDone
	status := s.status
	s.mu.Unlock()
	if both {
		s.end(streamEnd{status: status, flag: "-"})
	}
}

// checkIdle runs when the idle timer fires: it ends a stream idle for its whole timeout, and re-arms the timer
// for the rest of the timeout otherwise.
func (s *stream) checkIdle() {
	idle := time.Since(s.start) - time.Duration(s.last.Load())
	if idle < s.timeout {
		s.mu.Lock()
		if !s.ended {
			s.timer.Reset(s.timeout - idle)
		}
		s.mu.Unlock()
		return
	}
	s.end(streamEnd{flag: "SI", tellClient: true, tellServer: true, kind: codec.Timeout,
		detail: "stream idle for " + s.timeout.String()})
}

// streamEnd is how a stream ended: the status and response flag its metrics show, and the peers the proxy
// resets itself, with the reason.
type streamEnd struct {
	status                 int32
	flag                   string
	tellClient, tellServer bool
	kind                   codec.ErrorKind
	detail                 string
}

// end forgets the stream on both of its connections, once, sends the resets e asks for, and records the
// stream in the metrics.
func (s *stream) end(e streamEnd) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	respSize := s.respSize
	s.mu.Unlock()
	s.timer.Stop()
	d, uc := s.d, s.uc
	d.streamsMu.Lock()
	if d.streams[s.downID] == s {
		delete(d.streams, s.downID)
	}
	d.streamsMu.Unlock()
	uc.forgetStream(s.upID, s)
	// A reset is a frame of the open stream answered with an error: the codec writes the protocol's abort.
	reset := codec.Message{Type: codec.StreamData, Private: s.init.Private}
	var buf []byte
	if e.tellClient {
		reset.ID = s.downID
		buf, e.status = d.codec.ErrorReply(buf[:0], &reset, e.kind, "meltemi: "+e.detail)
		if len(buf) > 0 && d.w.write(buf) != nil {
			d.conn.Close()
		}
		s.lr.localReplies[e.kind].Inc()
	}
	if e.tellServer {
		reset.ID = uint64(s.upID)
		if buf, _ = uc.codec.ErrorReply(buf[:0], &reset, e.kind, "meltemi: "+e.detail); len(buf) > 0 {
			uc.w.write(buf)
		}
	}
	uc.h.active.Add(-1)
	d.requestDone(s.lr)
	d.p.metrics.record(s.peer, d.protocol(s.lr), e.status, e.flag, time.Since(s.start), s.reqSize, respSize)
	if uc.h.removed.Load() {
		uc.closeIfIdle()
	}
}

// resetStreams ends the client's open streams, telling their servers: the client is gone.
func (d *downstream) resetStreams() {
	d.streamsMu.Lock()
	open := make([]*stream, 0, len(d.streams))
	for _, s := range d.streams {
		open = append(open, s)
	}
	d.streamsMu.Unlock()
	for _, s := range open {
		s.end(streamEnd{flag: "DC", tellServer: true, kind: codec.Unspecified, detail: "client connection closed"})
	}
}

// registerStream records s on the connection and returns the id to relay it with; false if the connection is
// closed. Streams and calls share the connection's ids.
func (uc *upstreamConn) registerStream(s *stream) (uint32, bool) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.closed {
		return 0, false
	}
	id := uc.freeID(s.downID)
	uc.count()
	if uc.streams == nil {
		uc.streams = map[uint32]*stream{}
	}
	uc.streams[id] = s
	return id, true
}

// stream returns the stream relayed with id on the connection.
func (uc *upstreamConn) stream(id uint64) *stream {
	if id > maxUpstreamID {
		return nil
	}
	uc.mu.Lock()
	defer uc.mu.Unlock()
	return uc.streams[uint32(id)]
}

// forgetStream drops the stream with id, if it is still s.
func (uc *upstreamConn) forgetStream(id uint32, s *stream) {
	uc.mu.Lock()
	if uc.streams[id] == s {
		delete(uc.streams, id)
	}
	uc.mu.Unlock()
}
