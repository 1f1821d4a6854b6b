package meshload

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// openConn is one connection of an open loop: the pacer writes to it, a reader goroutine reads from it. The
// slot tables are atomics because the two sides share them without a lock.
type openConn struct {
	w       *worker // the reader's counters and histogram; w.out and w.seq belong to the pacer
	ids     []atomic.Uint64
	due     []atomic.Int64
	free    chan int
	wmu     sync.Mutex // the reader answers the peer's heartbeats on the same connection
	pending []int64    // intended times of the requests in w.out
	closing atomic.Bool
}

// runOpenLoop sends at cfg.Rate whatever the replies do, spreading the requests over the connections in
// turn, and measures each latency from the time the request was due, so that a stall shows in full rather
// than hiding behind the requests it held back. One pacer goroutine sends for every connection, on a thread
// of its own where the system allows, because the runtime's timers wake up to a millisecond late.
func runOpenLoop(ctx context.Context, cfg *Config, workers []*worker, lag *Histogram) {
	m := cfg.InFlight
	ocs := make([]*openConn, len(workers))
	var readers sync.WaitGroup
	for i, w := range workers {
		oc := &openConn{w: w, ids: make([]atomic.Uint64, m), due: make([]atomic.Int64, m),
			free: make(chan int, m)}
		for s := range m {
			oc.free <- s
		}
		w.out = make([]byte, 0, 64<<10)
		ocs[i] = oc
		readers.Go(oc.read)
	}
	pace(ctx, cfg, ocs, lag)

	// Wait for the replies still due by taking every slot back.
	w0 := workers[0]
	drain := time.NewTimer(time.Until(w0.base.Add(time.Duration(w0.close) + cfg.Drain)))
	defer drain.Stop()
	expired := false
	for _, oc := range ocs {
		for got := 0; got < m; got++ {
			select {
			case <-oc.free:
				continue
			default:
			}
			if !expired {
				select {
				case <-oc.free:
					continue
				case <-drain.C:
				case <-ctx.Done():
				}
				expired = true
			}
			// Past the deadline: what has not come back by now never will.
			oc.w.timeouts += uint64(m - got)
			break
		}
	}
	for _, oc := range ocs {
		oc.closing.Store(true)
		oc.w.conn.Close()
	}
	readers.Wait()
}

// pace is the open loop's sender.
func pace(ctx context.Context, cfg *Config, ocs []*openConn, lag *Histogram) {
	sleep := newPacer()
	w0 := ocs[0].w
	interval := 1e9 / cfg.Rate
	next := 0.0 // intended time of the next request, ns since base
	k := 0      // connection it goes to
	flushAll := func() bool {
		t := w0.now()
		ok := true
		for _, oc := range ocs {
			if len(oc.w.out) == 0 {
				continue
			}
			for _, due := range oc.pending {
				if due >= w0.open && due < w0.close {
					lag.Record(time.Duration(t - due))
				}
			}
			oc.pending = oc.pending[:0]
			oc.wmu.Lock()
			_, err := oc.w.conn.Write(oc.w.out)
			oc.wmu.Unlock()
			oc.w.out = oc.w.out[:0]
			if err != nil {
				oc.w.fail(err, 0)
				ok = false
			}
		}
		return ok
	}
	for ctx.Err() == nil {
		now := w0.now()
		if int64(next) >= w0.close {
			return
		}
		if int64(next) > now {
			sleep(time.Duration(int64(next) - now))
			continue
		}
		for int64(next) <= now && int64(next) < w0.close {
			oc := ocs[k]
			k = (k + 1) % len(ocs)
			if !oc.w.mayIssue(now) {
				flushAll()
				return
			}
			var s int
			select {
			case s = <-oc.free:
			default:
				// Every slot of this connection is busy: send what is ready, then wait; the wait counts in the
				// latency of every request it delays.
				if !flushAll() {
					return
				}
				select {
				case s = <-oc.free:
				case <-ctx.Done():
					return
				}
			}
			oc.due[s].Store(int64(next))
			oc.ids[s].Store(oc.w.stamp(s))
			oc.pending = append(oc.pending, int64(next))
			next += interval
		}
		if !flushAll() {
			return
		}
	}
}

// read checks the replies on one connection and frees their slots.
func (oc *openConn) read() {
	w := oc.w
	m := len(oc.ids)
	fr := newFrameReader(w.cfg.Protocol, max(64<<10, 2*w.call.MaxLen()))
	var hb []byte // replies to the peer's heartbeats
	for {
		if err := fr.fill(w.conn); err != nil {
			if !oc.closing.Load() {
				w.fail(err, 0)
			}
			return
		}
		now := w.now()
		for {
			f, err := fr.next()
			if err != nil {
				w.fail(err, 0)
				w.conn.Close()
				return
			}
			if f == nil {
				break
			}
			var (
				id uint64
				v  Verdict
			)
			if id, v, hb = w.call.Check(f, hb); v == Peer {
				continue
			}
			s := slotOf(id, m)
			if s < 0 || oc.ids[s].Load() != id {
				w.mismatched++
				continue
			}
			w.record(v, oc.due[s].Load(), now)
			oc.ids[s].Store(0)
			oc.free <- s
		}
		if len(hb) > 0 {
			oc.wmu.Lock()
			_, err := w.conn.Write(hb)
			oc.wmu.Unlock()
			hb = hb[:0]
			if err != nil {
				w.fail(err, 0)
				return
			}
		}
	}
}
