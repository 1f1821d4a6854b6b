package proxy

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meltemi-mesh/meltemi/codec"
)

// retryOn is a set of retry conditions.
type retryOn uint8

const (
	retryConnect retryOn = 1 << iota
	retryReset
	retryTimeout
	retryStatus
	retryFailed
)

var retryConditions = map[RetryOn]retryOn{
	RetryConnectFailure:       retryConnect,
	RetryReset:                retryReset,
	RetryTimeout:              retryTimeout,
	RetryRetriableStatusCodes: retryStatus,
	RetryFailed:               retryFailed,
}

// retryPolicy is a RetryPolicy compiled.
type retryPolicy struct {
	on         retryOn
	numRetries uint32
	perTry     time.Duration
	statuses   []int32
	backOffBase,
	backOffMax time.Duration
	// keepAlways says a request may be sent again after it reached its server, so a copy of every request
	// is kept; for connect failures alone a copy is needed only while a connection dials.
	keepAlways bool
}

func buildRetry(rp *RetryPolicy) (*retryPolicy, error) {
	if rp == nil {
		return nil, nil
	}
	out := &retryPolicy{numRetries: rp.NumRetries, perTry: rp.PerTryTimeout, statuses: rp.RetriableStatusCodes,
		backOffBase: cmp.Or(rp.BackOffBase, 25*time.Millisecond)}
	out.backOffMax = cmp.Or(rp.BackOffMax, 10*out.backOffBase)
	for i, on := range rp.RetryOn {
		bit, ok := retryConditions[on]
		if !ok {
			return nil, fmt.Errorf("retryOn[%d]: unknown condition %q (connect-failure, reset, timeout, "+
				"retriable-status-codes, failed)", i, on)
		}
		out.on |= bit
	}
	switch {
	case rp.PerTryTimeout < 0 || rp.BackOffBase < 0 || rp.BackOffMax < 0:
		return nil, errors.New("perTryTimeout, backOffBase, backOffMax: durations cannot be negative")
	case out.backOffMax < out.backOffBase:
		return nil, fmt.Errorf("backOffMax: %v is shorter than backOffBase %v", out.backOffMax, out.backOffBase)
	case out.on&retryStatus != 0 && len(rp.RetriableStatusCodes) == 0:
		return nil, errors.New("retriableStatusCodes: retriable-status-codes needs at least one status")
	}
	if out.on == 0 || out.numRetries == 0 {
		return nil, nil // nothing to retry: no per-request cost either
	}
	out.keepAlways = out.on&^retryConnect != 0
	return out, nil
}

// retriesReply reports whether a failed reply meets the policy's conditions.
func (rp *retryPolicy) retriesReply(resp *codec.Message) bool {
	return rp.on&retryFailed != 0 || rp.on&retryStatus != 0 && slices.Contains(rp.statuses, resp.Status)
}

// fault is a Fault compiled.
type fault struct {
	delay           time.Duration
	delayPerMillion uint32
	abort           codec.ErrorKind
	abortPerMillion uint32
}

func buildFault(f *Fault) (*fault, error) {
	if f == nil {
		return nil, nil
	}
	out := &fault{delay: f.Delay, delayPerMillion: f.DelayPerMillion, abortPerMillion: f.AbortPerMillion}
	switch {
	case f.Delay < 0:
		return nil, errors.New("delay: cannot be negative")
	case f.DelayPerMillion > 1_000_000:
		return nil, fmt.Errorf("delayPerMillion: %d is over a million", f.DelayPerMillion)
	case f.AbortPerMillion > 1_000_000:
		return nil, fmt.Errorf("abortPerMillion: %d is over a million", f.AbortPerMillion)
	case f.Abort == "" && f.AbortPerMillion > 0:
		return nil, errors.New("abort: an error kind is required when abortPerMillion is set")
	}
	if f.Abort != "" {
		kind, ok := codec.ParseErrorKind(f.Abort)
		if !ok {
			return nil, fmt.Errorf("abort: unknown error kind %q", f.Abort)
		}
		out.abort = kind
	}
	if out.delay == 0 {
		out.delayPerMillion = 0
	}
	if out.delayPerMillion == 0 && out.abortPerMillion == 0 {
		return nil, nil
	}
	return out, nil
}

// hit rolls the dice for a share given in millionths.
func hit(perMillion uint32) bool {
	return perMillion >= 1_000_000 || perMillion > 0 && rand.Uint32N(1_000_000) < perMillion
}

// mirror is a Mirror resolved.
type mirror struct {
	name          string
	cluster       *cluster // nil when the cluster does not exist
	perMillion    uint32
	sent, dropped prometheus.Counter
}

// concurrencyLimit counts a route's requests in flight, as a whole or per value of a metadata key. It outlives
// config updates that leave its route's limit as it was, so that the requests in flight still count.
type concurrencyLimit struct {
	cfg   ConcurrencyLimit
	all   atomic.Int64
	mu    sync.RWMutex
	byKey map[string]*atomic.Int64
}

// maxKeys bounds the per-key counters a limit keeps, so that a client sending ever new values cannot grow
// the proxy's memory without end: past it, idle counters are dropped.
const maxKeys = 4096

// acquire counts a request in; nil when the limit is reached (or the request has no value for the key, which
// passes uncounted: the limit is on values that are there).
func (cl *concurrencyLimit) acquire(md *codec.Metadata) (counter *atomic.Int64, ok bool) {
	n := &cl.all
	if cl.cfg.PerKey != "" {
		v, found := md.Get(cl.cfg.PerKey)
		if !found {
			return nil, true
		}
		n = cl.counter(v)
	}
	if n.Add(1) > int64(cl.cfg.MaxRequests) {
		n.Add(-1)
		return nil, false
	}
	return n, true
}

func (cl *concurrencyLimit) counter(key string) *atomic.Int64 {
	cl.mu.RLock()
	n := cl.byKey[key]
	cl.mu.RUnlock()
	if n != nil {
		return n
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if n = cl.byKey[key]; n != nil {
		return n
	}
	if len(cl.byKey) >= maxKeys {
		for k, c := range cl.byKey {
			if c.Load() == 0 {
				delete(cl.byKey, k)
			}
		}
	}
	n = new(atomic.Int64)
	cl.byKey[key] = n
	return n
}

// delay holds a request for its route's fault delay, then aborts it (when abort is set) or sends it on.
func (d *downstream) delay(lr *listenerRuntime, r *route, msg *codec.Message, start time.Time, abort bool) {
	r.faultDelays.Inc()
	held := copyMessage(msg)
	// The connection stays open for the request, as for any in flight.
	d.inflight.Add(1)
	lr.active.Inc()
	time.AfterFunc(r.fault.delay, func() {
		var buf []byte
		if abort {
			r.faultAborts.Inc()
			d.localReply(lr, held, r.fault.abort, "FI", "fault injected", start, len(held.Frame), &buf, nil)
		} else {
			d.dispatch(lr, r, held, start, "DI", &buf, nil)
		}
		d.requestDone(lr)
	})
}

// maxMirrorBacklog is how much may wait to be written to a mirror's connection before copies are dropped
// rather than queued: mirroring must never hold the proxy's memory or the primary's path.
const maxMirrorBacklog = 1 << 20

// mirror sends copies of a request that was just sent to the route's mirrors, fire and forget: their replies
// are dropped, and a copy that cannot go out at once is dropped too. msg's frame may be rewritten.
func (d *downstream) mirror(lr *listenerRuntime, r *route, msg *codec.Message, codecName string,
	factory codec.Factory, batch *writeBatch) {
	for i := range r.mirrors {
		m := &r.mirrors[i]
		if !hit(m.perMillion) {
			continue
		}
		var ep *endpointRef
		if m.cluster != nil {
			ep = m.cluster.pick(0, false)
		}
		if ep == nil {
			m.dropped.Inc()
			continue
		}
		h := d.p.hostFor(ep, lr, m.cluster, codecName, factory)
		if msg.Type == codec.Oneway {
			if err := h.sendOneway(m.cluster, d.slot, msg.Frame, batch); err != nil {
				m.dropped.Inc()
				continue
			}
			m.sent.Inc()
			continue
		}
		mc := newCall(d, lr, r, m.cluster, ep, msg, time.Now(), len(msg.Frame))
		mc.mirror = true
		mc.tries = 1
		if mc.try(h, d.codec, msg, batch) {
			m.sent.Inc()
		} else {
			m.dropped.Inc()
		}
	}
}
