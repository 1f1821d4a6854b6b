package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
)

// downstream is a client connection. One goroutine reads it, decodes each request and forwards it before
// reading the next; replies are written by whichever goroutine has them (usually an upstream connection's
// reader), straight to the socket.
type downstream struct {
	p      *Proxy
	sock   *listenerSocket
	conn   net.Conn
	codec  codec.Codec
	w      connWriter
	rd     *frameReader
	msg    codec.Message
	replyB []byte     // scratch for replies written from the read loop
	batch  writeBatch // writes queued while handling the frames of one read

	// The snapshot this connection last used, and its listener in it.
	snap *snapshot
	lr   *listenerRuntime

	// streams are the client's open streams by its stream ids. The read loop adds them; whoever ends one
	// removes it.
	streamsMu sync.Mutex
	streams   map[uint64]*stream

	// chooser is the connection's codec when it chooses another (a sniffing listener's), else nil; chosen is
	// what it picked, once it has.
	chooser codec.Chooser
	chosen  atomic.Pointer[chosenCodec]

	// slot picks the upstream connection of each host that the connection's requests share.
	slot uint32

	inflight  atomic.Int64 // requests and streams
	readDone  atomic.Bool
	closeOnce sync.Once
}

func (p *Proxy) newDownstream(sock *listenerSocket, conn net.Conn, lr *listenerRuntime) *downstream {
	d := &downstream{p: p, sock: sock, conn: conn, codec: lr.factory.NewCodec(codec.Downstream), rd: newFrameReader(conn),
		slot: p.slots.Add(1)}
	d.chooser, _ = d.codec.(codec.Chooser)
	d.w.conn = conn
	d.listener()
	return d
}

// listener returns the connection's listener in the current snapshot (nil once the listener is removed).
func (d *downstream) listener() *listenerRuntime {
	if s := d.p.snap.Load(); s != d.snap {
		d.snap, d.lr = s, s.listeners[d.sock.name]
	}
	return d.lr
}

// serve runs the read loop until the connection ends.
func (d *downstream) serve() {
	defer d.finishReading()
	var deadline time.Time
	for {
		need := 0
		var batch *writeBatch
		// The frames of one read arrived together: one clock reading serves them all.
		now := time.Now()
		for {
			data := d.rd.data()
			if len(data) == 0 {
				break
			}
			d.msg.Reset()
			n, err := d.codec.Decode(data, &d.msg)
			if err == codec.ErrIncomplete {
				need = n
				break
			}
			if err != nil {
				if batch != nil {
					batch.flush()
				}
				d.protocolError(err)
				return
			}
			if n < len(data) {
				// More frames follow in this read: their writes go out together once all are handled.
				batch = &d.batch
			}
			d.handle(&d.msg, n, batch, now)
			d.rd.consume(n)
		}
		if batch != nil {
			batch.flush()
		}
		if lr := d.lr; lr != nil && lr.idleTimeout > 0 {
			// Re-armed on every read; an expiry with requests in flight is not idleness.
			if deadline.Sub(now) < lr.idleTimeout/2 {
				deadline = now.Add(lr.idleTimeout)
				d.conn.SetReadDeadline(deadline)
			}
		}
		if err := d.rd.fill(need); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && d.inflight.Load() > 0 {
				deadline = time.Time{}
				continue
			}
			if err != io.EOF && !errors.Is(err, net.ErrClosed) {
				d.p.log.Debug("downstream read", "listener", d.sock.name, "remote", d.conn.RemoteAddr(),
					"error", err)
			}
			return
		}
	}
}

// protocolError answers a frame the codec refused, when the protocol allows, and ends the connection.
func (d *downstream) protocolError(err error) {
	lr := d.listener()
	if lr != nil {
		lr.decodeErrors.Inc()
	}
	d.p.log.Info("closing downstream connection on bad frame", "listener", d.sock.name,
		"remote", d.conn.RemoteAddr(), "error", err)
	var fe *codec.FrameError
	if errors.As(err, &fe) && fe.CanReply && d.msg.Type.ExpectsReply() && lr != nil {
		reply, status := d.codec.ErrorReply(d.replyB[:0], &d.msg, codec.BadRequest, fe.Reason)
		d.replyB = reply
		if len(reply) > 0 {
			d.w.write(reply)
		}
		lr.localReplies[codec.BadRequest].Inc()
		d.p.metrics.record(lr.noDestination, d.protocol(lr), status, codec.BadRequest.ResponseFlag(), 0, 0,
			len(reply))
	}
}

// handle deals with one decoded frame of n bytes that arrived at now. Writes go to batch when it is not nil.
func (d *downstream) handle(msg *codec.Message, n int, batch *writeBatch, now time.Time) {
	switch msg.Type {
	case codec.Request, codec.Oneway, codec.StreamInit:
		lr := d.listener()
		if lr == nil {
			// The listener was removed: its connections finish what is in flight and take no more.
			d.localReply(nil, msg, codec.Unspecified, "UF", "listener removed", now, n, &d.replyB, batch)
			return
		}
		d.forward(lr, msg, now, batch)
	case codec.Heartbeat:
		d.replyB = d.codec.HeartbeatReply(d.replyB[:0], msg)
		if len(d.replyB) > 0 {
			d.w.writeTo(d.replyB, batch)
		}
	case codec.StreamData, codec.StreamFeedback, codec.StreamCloseOneWay, codec.StreamCloseTwoWay:
		d.streamFrame(msg, batch)
	default:
		// Replies and heartbeat answers from a client: nothing to do.
		d.p.log.Debug("dropping unexpected frame from downstream", "listener", d.sock.name,
			"type", msg.Type.String())
	}
}

// forward runs the filter chain and the router for a request.
func (d *downstream) forward(lr *listenerRuntime, msg *codec.Message, start time.Time, batch *writeBatch) {
	if len(lr.filters) == 0 {
		d.route(lr, msg, start, &d.replyB, batch)
		return
	}
	ex := &exchange{d: d, lr: lr, msg: msg, start: start, buf: &d.replyB, batch: batch}
	ex.run(0)
}

// route sends a request that passed the filters to its upstream. buf is scratch space for a re-encoded request
// or a local reply: the connection's own on the read loop, the exchange's when a filter resumed the request.
// Writes go to batch when it is not nil.
func (d *downstream) route(lr *listenerRuntime, msg *codec.Message, start time.Time, buf *[]byte,
	batch *writeBatch) {
	d.choice() // before any reply, so that metrics show the protocol chosen
	r := lr.match(&msg.Metadata)
	if r == nil {
		d.localReply(lr, msg, codec.RouteNotFound, "NR", "no route matched", start, len(msg.Frame), buf, batch)
		return
	}
	if f := r.fault; f != nil && msg.Type != codec.StreamInit {
		abort := hit(f.abortPerMillion)
		if hit(f.delayPerMillion) {
			d.delay(lr, r, msg, start, abort)
			return
		}
		if abort {
			r.faultAborts.Inc()
			d.localReply(lr, msg, f.abort, "FI", "fault injected", start, len(msg.Frame), buf, batch)
			return
		}
	}
	d.dispatch(lr, r, msg, start, "-", buf, batch)
}

// dispatch sends a routed request to an endpoint of its route's cluster, within the limits of the route and
// the cluster. flags is the response flag a reply that goes through is recorded with.
func (d *downstream) dispatch(lr *listenerRuntime, r *route, msg *codec.Message, start time.Time, flags string,
	buf *[]byte, batch *writeBatch) {
	size := len(msg.Frame)
	c, name := r.target()
	if c == nil {
		d.localReply(lr, msg, codec.ClusterNotFound, "NC", "cluster "+name+" not found", start, size, buf, batch)
		return
	}
	var hash uint64
	var hashed bool
	if (c.lb == RingHash || c.lb == Maglev) && len(r.hashKeys) > 0 {
		hash, hashed = requestHash(&msg.Metadata, r.hashKeys)
	}
	ep := c.pick(hash, hashed)
	if ep == nil {
		d.localReplyPeer(lr, msg, codec.NoHealthyUpstream, "UH", "no endpoint in cluster "+name, start, size,
			c.noEndpoint, buf, batch)
		return
	}
	if r.reqMutation != nil {
		enc := d.codec
		if buf != &d.replyB {
			// Off the read loop (a filter resumed the request), the connection's codec is busy decoding.
			enc = lr.factory.NewCodec(codec.Downstream)
		}
		frame, err := enc.Encode((*buf)[:0], msg, r.reqMutation)
		if err != nil {
			d.localReplyPeer(lr, msg, codec.BadRequest, "DPE", "request mutation: "+err.Error(), start, size,
				c.noEndpoint, buf, batch)
			return
		}
		*buf = frame
		size = len(frame)
	}
	codecName, factory := lr.codecName, lr.factory
	if cc := d.chosen.Load(); cc != nil {
		// A sniffing listener's connection: upstream connections speak the protocol it chose.
		codecName, factory = cc.name, cc.factory
	}
	h := d.p.hostFor(ep, lr, c, codecName, factory)
	switch msg.Type {
	case codec.StreamInit:
		d.openStream(h, lr, c, ep, msg, start, size, buf, batch)
		return
	case codec.Oneway:
		if err := h.sendOneway(c, d.slot, msg.Frame, batch); err != nil {
			d.p.log.Debug("oneway request dropped", "upstream", ep.address, "error", err)
		}
		d.mirror(lr, r, msg, codecName, factory, batch)
		d.p.metrics.record(ep.peer, d.protocol(lr), -1, flags, time.Since(start), size, -1)
		return
	}
	var counter *atomic.Int64
	if r.conc != nil {
		var ok bool
		if counter, ok = r.conc.acquire(&msg.Metadata); !ok {
			d.localReplyPeer(lr, msg, codec.OverLimit, "UO", "route "+r.name+" has its maximum of requests in flight",
				start, size, ep.peer, buf, batch)
			return
		}
	}
	if limit, detail, over := c.admit(h); over {
		if counter != nil {
			counter.Add(-1)
		}
		c.state.overflow[limit].Inc()
		d.localReplyPeer(lr, msg, codec.OverLimit, "UO", "cluster "+name+" has its "+detail, start, size,
			ep.peer, buf, batch)
		return
	}
	call := newCall(d, lr, r, c, ep, msg, start, size)
	call.counted, call.conc, call.flags, call.hash, call.hashed = c.countRequests, counter, flags, hash, hashed
	d.inflight.Add(1)
	lr.active.Inc()
	call.send(h, d.codec, msg, batch)
	d.mirror(lr, r, msg, codecName, factory, batch)
}

// localReply answers a request from the proxy itself.
func (d *downstream) localReply(lr *listenerRuntime, msg *codec.Message, kind codec.ErrorKind, flag,
	detail string, start time.Time, reqSize int, buf *[]byte, batch *writeBatch) {
	var peer *peerLabels
	if lr != nil {
		peer = lr.noDestination
	}
	d.localReplyPeer(lr, msg, kind, flag, detail, start, reqSize, peer, buf, batch)
}

func (d *downstream) localReplyPeer(lr *listenerRuntime, msg *codec.Message, kind codec.ErrorKind, flag,
	detail string, start time.Time, reqSize int, peer *peerLabels, buf *[]byte, batch *writeBatch) {
	reply, status := d.codec.ErrorReply((*buf)[:0], msg, kind, "meltemi: "+detail)
	*buf = reply
	if len(reply) > 0 {
		if err := d.w.writeTo(reply, batch); err != nil {
			d.conn.Close()
		}
	}
	if lr == nil {
		return
	}
	lr.localReplies[kind].Inc()
	if peer != nil {
		d.p.metrics.record(peer, d.protocol(lr), status, flag, time.Since(start), reqSize, len(reply))
	}
}

// chosenCodec is what a choosing codec picked: the codec's registered name, its factory and its protocol.
type chosenCodec struct {
	name     string
	factory  codec.Factory
	protocol string
}

// choice returns the codec the connection's codec chose, or nil when it is not a choosing codec or has not
// chosen yet.
func (d *downstream) choice() *chosenCodec {
	if d.chooser == nil {
		return nil
	}
	if cc := d.chosen.Load(); cc != nil {
		return cc
	}
	name, f, ok := d.chooser.Chosen()
	if !ok {
		return nil
	}
	cc := &chosenCodec{name: name, factory: f, protocol: name}
	if reg, ok := d.p.opts.Codecs.Lookup(name); ok {
		cc.protocol = reg.Protocol
	}
	d.chosen.Store(cc)
	return cc
}

// protocol is the request_protocol of the connection's requests: the one its codec chose, or the listener's.
func (d *downstream) protocol(lr *listenerRuntime) string {
	if cc := d.chosen.Load(); cc != nil {
		return cc.protocol
	}
	return lr.protocol
}

// finishReading runs when the read loop ends: the connection closes once its requests in flight are answered.
func (d *downstream) finishReading() {
	d.rd.release()
	d.resetStreams()
	d.readDone.Store(true)
	if d.inflight.Load() == 0 {
		d.closeWhenFlushed()
	}
}

// requestDone is called when a request in flight has been answered.
func (d *downstream) requestDone(lr *listenerRuntime) {
	lr.active.Dec()
	if d.inflight.Add(-1) == 0 && d.readDone.Load() {
		d.closeWhenFlushed()
	}
}

// closeWhenFlushed closes the connection once every reply queued for it is written: the last replies may
// still wait in a batch of the upstream read loop that answered them.
func (d *downstream) closeWhenFlushed() { d.w.whenDrained(d.close) }

func (d *downstream) close() {
	d.closeOnce.Do(func() {
		d.conn.Close()
		d.w.fail(net.ErrClosed)
		d.sock.remove(d)
	})
}

// exchange carries a request through the filter chain.
type exchange struct {
	d     *downstream
	lr    *listenerRuntime
	msg   *codec.Message
	start time.Time
	next  int
	// state is one of the ex* states. A filter may decide from another goroutine before its OnRequest has
	// returned (an answer from a rate-limit service can be that quick), so Reply and Resume go through it.
	state atomic.Int32
	// The reply asked for while the filter ran, sent by the goroutine running the chain.
	replyKind   codec.ErrorKind
	replyDetail string
	buf         *[]byte     // scratch: the connection's on the read loop, the exchange's own once held
	batch       *writeBatch // the read loop's batch; nil once held
	own         []byte
}

// States of an exchange.
const (
	// exRunning: a filter's OnRequest runs, on the goroutine running the chain.
	exRunning int32 = iota
	// exReplyAsked: Reply was called while the filter ran; the chain's goroutine sends the reply.
	exReplyAsked
	// exResumeAsked: Resume was called while the filter ran; the chain's goroutine goes on.
	exResumeAsked
	// exHeld: a filter returned Stop and has not decided; the request is detached from the connection's
	// buffers, and whoever calls Reply or Resume carries it out.
	exHeld
	// exDone: answered, or handed to the router.
	exDone
)

var _ filter.Exchange = (*exchange)(nil)

func (ex *exchange) Request() *codec.Message { return ex.msg }

func (ex *exchange) Reply(kind codec.ErrorKind, detail string) {
	for {
		switch ex.state.Load() {
		case exRunning:
			// Read only after the swap succeeds, by the goroutine that then sees exReplyAsked.
			ex.replyKind, ex.replyDetail = kind, detail
			if ex.state.CompareAndSwap(exRunning, exReplyAsked) {
				return
			}
		case exHeld:
			if ex.state.CompareAndSwap(exHeld, exDone) {
				ex.reply(kind, detail)
				ex.d.releaseHold()
				return
			}
		default:
			return // decided already
		}
	}
}

// Reroute is a no-op: the router matches after the filters have run, so it always sees their changes.
func (ex *exchange) Reroute() {}

func (ex *exchange) Resume() {
	for {
		switch ex.state.Load() {
		case exRunning:
			if ex.state.CompareAndSwap(exRunning, exResumeAsked) {
				return
			}
		case exHeld:
			if ex.state.CompareAndSwap(exHeld, exRunning) {
				ex.run(ex.next)
				ex.d.releaseHold()
				return
			}
		default:
			return
		}
	}
}

func (ex *exchange) reply(kind codec.ErrorKind, detail string) {
	ex.d.localReply(ex.lr, ex.msg, kind, kind.ResponseFlag(), detail, ex.start, len(ex.msg.Frame), ex.buf,
		ex.batch)
}

// run continues the chain at filter i. The exchange is in state exRunning.
func (ex *exchange) run(i int) {
	for ; i < len(ex.lr.filters); i++ {
		st := ex.lr.filters[i].OnRequest(ex)
		if ex.decided() {
			return
		}
		if ex.state.Load() == exResumeAsked {
			ex.state.Store(exRunning)
			continue
		}
		if st == filter.Continue {
			continue
		}
		// The filter will decide later, after the read loop has reused the frame: keep a copy, and count the
		// request as in flight so that the connection stays open for its answer.
		ex.detach()
		ex.next = i + 1
		ex.d.inflight.Add(1)
		if ex.state.CompareAndSwap(exRunning, exHeld) {
			return
		}
		// The filter decided while the request was being copied; this goroutine carries it out. The request
		// is still counted (or the read loop is running), so the connection cannot close meanwhile.
		done := ex.decided()
		ex.d.inflight.Add(-1)
		if done {
			return
		}
		ex.state.Store(exRunning) // exResumeAsked
	}
	ex.state.Store(exDone)
	ex.d.route(ex.lr, ex.msg, ex.start, ex.buf, ex.batch)
}

// decided sends the reply a filter asked for while it ran, and reports whether there was one.
func (ex *exchange) decided() bool {
	if ex.state.Load() != exReplyAsked {
		return false
	}
	ex.state.Store(exDone)
	ex.reply(ex.replyKind, ex.replyDetail)
	return true
}

// releaseHold ends the count of a request a filter held; the connection closes if it was the last thing it
// waited for.
func (d *downstream) releaseHold() {
	if d.inflight.Add(-1) == 0 && d.readDone.Load() {
		d.closeWhenFlushed()
	}
}

// detach copies the request out of the connection's buffers, all metadata decoded.
func (ex *exchange) detach() {
	ex.msg, ex.buf, ex.batch = copyMessage(ex.msg), &ex.own, nil
}

// copyMessage copies a request out of the connection's buffers, all metadata decoded, for handling after the
// read loop has moved on.
func copyMessage(msg *codec.Message) *codec.Message {
	m := new(codec.Message)
	msg.Metadata.Len()
	msg.Metadata.CopyDecoded(&m.Metadata)
	m.Type, m.ID, m.Status, m.Failed, m.Private = msg.Type, msg.ID, msg.Status, msg.Failed, msg.Private
	m.Frame = append([]byte(nil), msg.Frame...)
	return m
}
