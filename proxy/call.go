package proxy

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meltemi-mesh/meltemi/codec"
)

// call is a two-way request in flight upstream. What the reply path needs from the request is copied into it,
// since the request's frame is reused as soon as it has been forwarded.
//
// A try of the call is owned by whoever takes it off its upstream connection's table (under that connection's
// lock): the connection's read loop when the reply comes, the connection when it closes, or the call's timer
// when the try runs out of time. The owner then answers the client, or sends the request again.
type call struct {
	d       *downstream
	lr      *listenerRuntime
	r       *route
	cl      *cluster
	ep      *endpointRef // the current try's endpoint
	h       *host        // and its host
	peer    *peerLabels
	req     codec.Message // Type, ID, Private and eager metadata of the request; no frame
	start   time.Time
	reqSize int
	buf     []byte // scratch for a re-encoded or local reply
	flags   string // the response flag of a reply that went through ("-", or "DI" for a delayed request)
	hash    uint64 // the request's consistent hash, when hashed
	hashed  bool
	conc    *atomic.Int64 // the concurrency limit count the call holds, nil when none
	counted bool          // the call is counted in its cluster's requests
	mirror  bool          // a mirrored copy: nobody waits for its reply

	// Set by register under the upstream connection's lock; read by whoever owns the try.
	uc         *upstreamConn
	upID       uint32
	sweepEnd   int64         // when the try runs out, in Unix nanoseconds, if its connection sweeps it; 0 if not
	pendingOn  *clusterState // counted in the cluster's pending requests while its connection dials
	onDialling bool          // the try went to a connection still dialling

	// The rest is for calls with a deadline, a per-try timeout or retries (timed), guarded by mu.
	mu        sync.Mutex
	timed     bool
	timer     *time.Timer // fires onTimer; made once per pooled call
	armed     bool        // timer set and not yet fired
	backoff   bool        // between tries: the timer sends the next one at wakeAt
	wakeAt    time.Time
	finished  bool
	noPool    bool // the timer fired as the call finished: its callback may still touch the call
	deadline  time.Time
	tryEnd    time.Time // the current try's per-try deadline
	tries     uint32
	retrying  bool   // the current try is a retry, counted in the cluster's retries
	frame     []byte // the request as last sent, when it may be sent again
	framePriv [4]int
	kept      bool
}

var callPool = sync.Pool{New: func() any { return new(call) }}

func newCall(d *downstream, lr *listenerRuntime, r *route, cl *cluster, ep *endpointRef, msg *codec.Message,
	start time.Time, size int) *call {
	c := callPool.Get().(*call)
	c.d, c.lr, c.r, c.cl, c.ep, c.peer, c.start, c.reqSize = d, lr, r, cl, ep, ep.peer, start, size
	c.flags = "-"
	c.req.Reset()
	c.req.Type, c.req.ID, c.req.Status, c.req.Private = msg.Type, msg.ID, msg.Status, msg.Private
	msg.Metadata.CopyDecoded(&c.req.Metadata)
	if r.timeout > 0 || r.retry != nil {
		c.timed = true
		if r.timeout > 0 {
			c.deadline = start.Add(r.timeout)
		}
		if c.timer == nil {
			c.timer = time.AfterFunc(time.Hour, c.onTimer)
			c.timer.Stop()
		}
	}
	return c
}

func (c *call) release() {
	if c.noPool {
		return // the timer's callback may still look at it: the garbage collector takes it instead
	}
	c.d, c.lr, c.r, c.cl, c.ep, c.h, c.peer, c.conc, c.uc, c.pendingOn = nil, nil, nil, nil, nil, nil, nil, nil, nil, nil
	c.req.Reset()
	if cap(c.buf) > 64<<10 {
		c.buf = nil
	}
	if cap(c.frame) > 64<<10 {
		c.frame = nil
	}
	c.frame = c.frame[:0]
	c.counted, c.mirror, c.hashed, c.timed, c.armed, c.backoff, c.finished = false, false, false, false, false, false, false
	c.retrying, c.kept, c.tries, c.upID, c.hash = false, false, 0, 0, 0
	c.deadline, c.tryEnd, c.wakeAt, c.onDialling, c.sweepEnd = time.Time{}, time.Time{}, time.Time{}, false, 0
	callPool.Put(c)
}

// send sends the call's first try on h. msg is the request as the client's codec dc decoded it; its id is
// rewritten in place. The write goes to batch when it is not nil.
func (c *call) send(h *host, dc codec.Codec, msg *codec.Message, batch *writeBatch) {
	c.tries = 1
	c.try(h, dc, msg, batch)
}

// try registers the call on a connection of h, sends msg and arms the timer. For a retry, msg is built
// from the kept frame and dc is the client connection's codec (SetID may run on any goroutine).
//
// It reports whether the request went out; a mirrored copy that would wait behind a backlog does not (and
// is dropped).
func (c *call) try(h *host, dc codec.Codec, msg *codec.Message, batch *writeBatch) bool {
	c.h = h
	h.active.Add(1)
	if c.timed {
		// Held until the request is registered, so that the timer's callback finds the try where it is. The
		// try is timed first: register sees whether its connection must sweep the call.
		c.mu.Lock()
		now := c.start
		if c.tries > 1 {
			now = time.Now()
		}
		c.arm(now)
	}
	uc, id, ok := acquireFor(h, c.cl, c.d.slot, (*upstreamConn).register, c)
	if ok && c.mirror && uc.w.backlog() > maxMirrorBacklog {
		uc.unregister(id, c)
		if c.timed {
			c.disarm()
			c.mu.Unlock()
		}
		h.active.Add(-1)
		c.finish()
		c.release()
		return false
	}
	if !ok {
		if c.timed {
			c.disarm()
			if c.tries == 1 {
				// The first try's frame is still the client's: keep it for a retry on another endpoint.
				c.keepFrame(msg, true)
			}
			c.mu.Unlock()
		}
		h.active.Add(-1)
		c.tryFailed(retryConnect, codec.NoHealthyUpstream, "UF", "upstream "+h.key.address+" unavailable")
		return false
	}
	if h.multiplexing {
		dc.SetID(msg, uint64(id))
	}
	if c.timed {
		if c.tries == 1 {
			c.keepFrame(msg, c.onDialling)
		}
		c.mu.Unlock()
	}
	if err := uc.w.writeTo(msg.Frame, batch); err != nil {
		// The read loop notices the broken connection and fails what is registered on it, this call too.
		uc.close(err)
	}
	return true
}

// keepFrame keeps a copy of the request as it goes out when the call may have to send it again: always
// when its route retries on more than connect failures, else only while its connection is still dialling
// (a request written to an established connection can no longer fail to connect). c.mu is held.
func (c *call) keepFrame(msg *codec.Message, dialling bool) {
	rp := c.r.retry
	if rp == nil || c.mirror || (!rp.keepAlways && (rp.on&retryConnect == 0 || !dialling)) {
		c.kept = false
		return
	}
	c.frame = append(c.frame[:0], msg.Frame...)
	c.framePriv = msg.Private
	c.kept = true
}

// Timeouts of sweepThreshold or more are not timed by a timer of their own but swept by their connection every
// sweepTick: a request then pays no timer at all, and such a timeout fires at most a tick late.
const (
	sweepThreshold = time.Second
	sweepTick      = 50 * time.Millisecond
)

// arm times the current try, which starts now: its per-try timeout or the call's deadline, whichever is
// first. A long one is left to the connection's sweep (sweepEnd, which register reads); a short one gets
// the call's timer. c.mu is held.
func (c *call) arm(now time.Time) {
	c.tryEnd, c.sweepEnd = time.Time{}, 0
	if rp := c.r.retry; rp != nil && rp.perTry > 0 {
		c.tryEnd = now.Add(rp.perTry)
	}
	end := c.tryDeadline()
	switch {
	case end.IsZero():
	case end.Sub(now) >= sweepThreshold:
		c.sweepEnd = end.UnixNano()
	default:
		c.rearm(end.Sub(now))
	}
}

// disarm undoes arm for a try that was not sent. c.mu is held.
func (c *call) disarm() {
	c.sweepEnd = 0
	if c.armed && c.timer.Stop() {
		c.armed = false
	}
}

// onTimer runs when the timer fires: the current try ran out of time, or the back-off before the next try is
// over. The timer is one per call and re-armed for each try, so a firing may be a stale one, from a try that
// was answered meanwhile: the callback acts only once the time it waits for has come.
func (c *call) onTimer() {
	c.mu.Lock()
	c.armed = false
	if c.finished {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	if c.backoff {
		if now.Before(c.wakeAt) {
			c.rearm(c.wakeAt.Sub(now))
			c.mu.Unlock()
			return
		}
		c.backoff = false
		c.mu.Unlock()
		c.retry()
		return
	}
	end := c.tryDeadline()
	if end.IsZero() || c.uc == nil {
		c.mu.Unlock()
		return
	}
	if now.Before(end) {
		c.rearm(end.Sub(now))
		c.mu.Unlock()
		return
	}
	uc := c.uc
	claimed := uc.timeOut(c.upID, c)
	c.mu.Unlock()
	if !claimed {
		return // the reply or the connection's end got there first
	}
	c.timedOut(uc, now)
}

// timedOut handles a try that ran out of time, which the caller took off uc: retried when its per-try timeout
// ran out and the route allows, failed with the protocol's timeout error otherwise.
func (c *call) timedOut(uc *upstreamConn, now time.Time) {
	c.h.active.Add(-1)
	c.cl.state.timeouts.Inc()
	if !uc.h.multiplexing {
		// Without request ids a late reply would answer the next request: the connection cannot be reused.
		go uc.close(nil)
	}
	detail := "upstream " + uc.h.key.address + " did not answer in time"
	if !c.deadline.IsZero() && !now.Before(c.deadline) {
		// The route's timeout covers every try: no retry can help.
		c.cl.state.report(c.ep.health, outcomeLocalFailure, c.cl.outlier)
		c.fail(codec.Timeout, "UT", detail+" (route timeout "+c.r.timeout.String()+")")
		return
	}
	c.tryFailed(retryTimeout, codec.Timeout, "UT", detail+" (per-try timeout "+c.r.retry.perTry.String()+")")
}

// tryDeadline is when the current try runs out: its per-try timeout or the call's deadline, whichever is
// first; zero when neither. c.mu is held.
func (c *call) tryDeadline() time.Time {
	switch {
	case c.tryEnd.IsZero():
		return c.deadline
	case c.deadline.IsZero() || c.tryEnd.Before(c.deadline):
		return c.tryEnd
	}
	return c.deadline
}

// rearm sets the timer to fire after d. c.mu is held.
func (c *call) rearm(d time.Duration) {
	c.armed = true
	c.timer.Reset(d)
}

// onReply handles the reply to the current try, which the caller took off uc. uc's codec decoded it.
func (c *call) onReply(uc *upstreamConn, resp *codec.Message, batch *writeBatch, now time.Time) {
	c.h.active.Add(-1)
	if resp.Failed {
		c.cl.state.report(c.ep.health, outcomeFailedReply, c.cl.outlier)
		if rp := c.r.retry; rp != nil && rp.retriesReply(resp) && c.scheduleRetry() {
			return
		}
	} else {
		c.cl.state.report(c.ep.health, outcomeSuccess, c.cl.outlier)
	}
	c.respond(uc.codec, resp, batch, now)
}

// tryFailed handles a try that got no reply (cause is the retry condition it meets): it is retried when the
// route allows, else the client is answered with kind. The caller owns the try.
func (c *call) tryFailed(cause retryOn, kind codec.ErrorKind, flag, detail string) {
	if cause != 0 {
		c.cl.state.report(c.ep.health, outcomeLocalFailure, c.cl.outlier)
	} else {
		c.cl.state.report(c.ep.health, outcomeFailedReply, c.cl.outlier)
	}
	if rp := c.r.retry; rp != nil && rp.on&cause != 0 && c.scheduleRetry() {
		return
	}
	c.fail(kind, flag, detail)
}

// scheduleRetry arranges the next try after a jittered back-off, if the route's policy, the call's deadline
// and the cluster's retry limit allow one. The caller owns the try.
func (c *call) scheduleRetry() bool {
	rp := c.r.retry
	// Under the lock: the connection's end may come while the try that registered the call still holds it
	// (it keeps the frame and arms the timer there).
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mirror || !c.kept || c.tries > rp.numRetries || c.d == nil {
		return false
	}
	if c.retrying {
		c.retrying = false
		c.cl.state.retries.Add(-1)
	}
	// Envoy's fully jittered exponential back-off: up to base × 2^(n-1) before the n-th retry, capped.
	wait := min(rp.backOffBase<<min(c.tries-1, 20), rp.backOffMax)
	if wait > 0 {
		wait = rand.N(wait) + 1
	}
	now := time.Now()
	if !c.deadline.IsZero() && !now.Add(wait).Before(c.deadline) {
		return false
	}
	if !c.cl.retryAllowed() {
		c.cl.state.retryOverflow.Inc()
		return false
	}
	c.retrying = true
	c.cl.state.retried.Inc()
	c.uc, c.backoff, c.wakeAt = nil, true, now.Add(wait)
	c.rearm(wait)
	return true
}

// retry sends the next try, to another endpoint of the cluster when it has one.
func (c *call) retry() {
	c.tries++
	d := c.d
	if d.p.down.Load() {
		c.fail(codec.NoHealthyUpstream, "UF", "proxy shutting down")
		return
	}
	// The cluster as the config being served has it: its endpoints may have changed since the first try.
	if cur := d.p.snap.Load().clusters[c.cl.name]; cur != nil && cur.state == c.cl.state {
		c.cl = cur
	}
	ep := c.cl.pickOther(c.ep, c.hash, c.hashed)
	if ep == nil {
		c.fail(codec.NoHealthyUpstream, "UH", "no endpoint in cluster "+c.cl.name)
		return
	}
	c.ep, c.peer = ep, ep.peer
	name, factory := c.lr.codecName, c.lr.factory
	if cc := d.chosen.Load(); cc != nil {
		name, factory = cc.name, cc.factory
	}
	h := d.p.hostFor(ep, c.lr, c.cl, name, factory)
	// A fresh copy: the previous try's write of the kept frame may not have returned yet.
	msg := codec.Message{Type: c.req.Type, ID: c.req.ID, Frame: append([]byte(nil), c.frame...),
		Private: c.framePriv}
	c.try(h, d.codec, &msg, nil)
}

// retryAllowed takes one of the cluster's retries in flight, if its limit or budget has one left.
func (c *cluster) retryAllowed() bool {
	limit := int64(c.cb.MaxRetries)
	if p := c.cb.RetryBudgetPercent; p > 0 {
		limit = max(int64(c.cb.RetryBudgetMinConcurrency), int64(p*float64(c.state.requests.Load())/100))
		if c.cb.RetryBudgetMinConcurrency == 0 {
			limit = max(limit, 3)
		}
	}
	if limit == 0 {
		c.state.retries.Add(1)
		return true
	}
	if c.state.retries.Add(1) > limit {
		c.state.retries.Add(-1)
		return false
	}
	return true
}

// finish ends the call's life in the proxy once its client has been answered: it stops the timer and gives
// back what the call held.
func (c *call) finish() {
	retrying := false
	if c.timed {
		c.mu.Lock()
		c.finished = true
		if c.armed && !c.timer.Stop() {
			c.noPool = true
		}
		c.armed = false
		retrying, c.retrying = c.retrying, false
		c.mu.Unlock()
	}
	if c.counted {
		c.cl.state.requests.Add(-1)
	}
	if retrying {
		c.cl.state.retries.Add(-1)
	}
	if c.pendingOn != nil {
		c.pendingOn.pending.Add(-1)
		c.pendingOn = nil
	}
	if c.conc != nil {
		c.conc.Add(-1)
	}
}

// respond sends an upstream's reply downstream. resp was decoded by the upstream's codec uc. The write goes to
// batch when it is not nil.
func (c *call) respond(uc codec.Codec, resp *codec.Message, batch *writeBatch, now time.Time) {
	c.finish()
	if c.mirror {
		c.release()
		return
	}
	d := c.d
	uc.SetID(resp, c.req.ID)
	if c.r.resMutation != nil {
		var frame []byte
		var err error
		if re, ok := uc.(codec.ReplyEncoder); ok {
			frame, err = re.EncodeReply(c.buf[:0], &c.req, resp, c.r.resMutation)
		} else {
			frame, err = uc.Encode(c.buf[:0], resp, c.r.resMutation)
		}
		if err == nil {
			c.buf = frame
		} else {
			d.p.log.Debug("response mutation failed", "error", err)
		}
	}
	if len(c.lr.respFilters) > 0 {
		ex := &exchange{d: d, lr: c.lr, msg: &c.req, start: c.start}
		for _, f := range c.lr.respFilters {
			f.OnResponse(ex, resp)
		}
	}
	if err := d.w.writeTo(resp.Frame, batch); err != nil {
		d.conn.Close()
	}
	d.requestDone(c.lr)
	d.p.metrics.record(c.peer, d.protocol(c.lr), resp.Status, c.flags, now.Sub(c.start), c.reqSize,
		len(resp.Frame))
	c.release()
}

// fail answers the request locally because its upstream could not.
func (c *call) fail(kind codec.ErrorKind, flag, detail string) {
	c.finish()
	if c.mirror {
		c.release()
		return
	}
	d := c.d
	reply, status := d.codec.ErrorReply(c.buf[:0], &c.req, kind, "meltemi: "+detail)
	c.buf = reply
	if len(reply) > 0 {
		if err := d.w.write(reply); err != nil {
			d.conn.Close()
		}
	}
	c.lr.localReplies[kind].Inc()
	d.requestDone(c.lr)
	d.p.metrics.record(c.peer, d.protocol(c.lr), status, flag, time.Since(c.start), c.reqSize, len(reply))
	c.release()
}
