package meshload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes one load.
type Config struct {
	// Protocol is the protocol the requests speak.
	Protocol Protocol
	// Target is the host:port requests go to.
	Target string
	// Conns is the number of connections.
	Conns int
	// InFlight is how many requests each connection keeps in flight in a closed loop, and the most it may have
	// in flight in an open loop (at most 65536).
	InFlight int
	// Size is the length of the echoed string in bytes.
	Size int
	// Rate, when > 0, runs an open loop at this many requests per second in all; 0 runs a closed loop.
	Rate float64
	// Warmup is how long the load runs before the measured window opens.
	Warmup time.Duration
	// Duration is the length of the measured window.
	Duration time.Duration
	// Requests, when > 0, ends the run once this many requests have been sent in all, warmup included.
	Requests int
	// Drain bounds the wait for the replies still due when the window closes (5s when zero).
	Drain time.Duration
	// OnWindow, when set, is called as the measured window opens (true) and as it closes (false).
	OnWindow func(open bool)
}

// Result is what a load measured in its window. Errors are counted over the whole run, warmup and drain
// included.
type Result struct {
	// Requests counts the successful replies that came back within the window with the echoed string.
	Requests uint64
	// Latency holds the latency of those replies: from the send in a closed loop, from the intended send time
	// in an open loop.
	Latency *Histogram
	// SendLag, in an open loop, holds how late the load generator itself sent each request of the window
	// after its intended time: its own scheduling noise, which Latency includes.
	SendLag *Histogram
	// Elapsed is the length of the window.
	Elapsed time.Duration
	// BadStatus counts replies that report a failure (Verdict BadStatus).
	BadStatus uint64
	// Mismatched counts replies whose id matches no request in flight.
	Mismatched uint64
	// BadBody counts successful replies that do not carry the echoed string, and frames that are no reply.
	BadBody uint64
	// Timeouts counts requests still unanswered when the drain ended.
	Timeouts uint64
	// Lost counts requests in flight on a connection that failed.
	Lost uint64
	// FirstError describes the first connection failure, if any.
	FirstError string
}

// Errors is the number of failed requests of every kind.
func (r *Result) Errors() uint64 { return r.BadStatus + r.Mismatched + r.BadBody + r.Timeouts + r.Lost }

// RPS is the rate of good replies within the window.
func (r *Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// slotBits is how many low bits of a request id name its slot; the bits above, as many as the protocol's id
// has, count sends on the connection, so that a reply whose id was mangled on the way back is caught.
const slotBits = 16

// Run applies the load described by cfg and returns what it measured. Connections are made before the clock
// starts; a failure to connect is an error, failures afterwards are counted in the Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Protocol == nil {
		return nil, errors.New("load: no protocol")
	}
	if cfg.Conns < 1 || cfg.InFlight < 1 || cfg.InFlight > 1<<slotBits || cfg.Size < 0 {
		return nil, fmt.Errorf("load: need conns ≥ 1, 1 ≤ inflight ≤ %d and size ≥ 0", 1<<slotBits)
	}
	if cfg.Duration <= 0 {
		return nil, errors.New("load: duration must be positive")
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 5 * time.Second
	}
	call := cfg.Protocol.NewCall(Payload(cfg.Size))
	idMask := ^uint64(0) >> (64 - cfg.Protocol.IDBits())

	var d net.Dialer
	conns := make([]net.Conn, 0, cfg.Conns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range cfg.Conns {
		c, err := d.DialContext(ctx, "tcp", cfg.Target)
		if err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		conns = append(conns, c)
	}
	stop := context.AfterFunc(ctx, func() {
		for _, c := range conns {
			c.Close()
		}
	})
	defer stop()

	base := time.Now()
	open := int64(cfg.Warmup)
	closeAt := open + int64(cfg.Duration)
	deadline := base.Add(time.Duration(closeAt) + cfg.Drain)
	var issued *atomic.Int64
	if cfg.Requests > 0 {
		issued = new(atomic.Int64)
	}

	workers := make([]*worker, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		if err := c.SetDeadline(deadline); err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		w := &worker{
			cfg: &cfg, call: call, idMask: idMask, conn: c, base: base, open: open, close: closeAt,
			issued: issued, hist: NewHistogram(),
		}
		workers[i] = w
		if cfg.Rate <= 0 {
			wg.Go(w.closedLoop)
		}
	}
	var lag *Histogram
	if cfg.Rate > 0 {
		lag = NewHistogram()
		wg.Go(func() { runOpenLoop(ctx, &cfg, workers, lag) })
	}

	windowDone := make(chan struct{})
	var hookWG sync.WaitGroup
	if cfg.OnWindow != nil {
		hookWG.Go(func() { windowHooks(base, open, closeAt, cfg.OnWindow, windowDone) })
	}
	wg.Wait()
	close(windowDone)
	hookWG.Wait()

	res := &Result{Latency: NewHistogram(), SendLag: lag, Elapsed: cfg.Duration}
	var last int64
	for _, w := range workers {
		res.Latency.Merge(w.hist)
		res.Requests += w.good
		res.BadStatus += w.badStatus
		res.Mismatched += w.mismatched
		res.BadBody += w.badBody
		res.Timeouts += w.timeouts
		res.Lost += w.lost
		if res.FirstError == "" && w.err != nil {
			res.FirstError = w.err.Error()
		}
		last = max(last, w.lastGood)
	}
	if cfg.Requests > 0 && last > open {
		// The run may have ended before the window did.
		res.Elapsed = min(time.Duration(last-open), cfg.Duration)
	}
	return res, ctx.Err()
}

// windowHooks calls hook as the window opens and closes, or closes it early when done is closed first.
func windowHooks(base time.Time, open, closeAt int64, hook func(bool), done <-chan struct{}) {
	t := time.NewTimer(time.Until(base.Add(time.Duration(open))))
	defer t.Stop()
	select {
	case <-t.C:
	case <-done:
		return
	}
	hook(true)
	t.Reset(time.Until(base.Add(time.Duration(closeAt))))
	select {
	case <-t.C:
	case <-done:
	}
	hook(false)
}

// worker drives one connection.
type worker struct {
	cfg    *Config
	call   Call
	idMask uint64 // the bits a request id may use
	conn   net.Conn
	base   time.Time
	open   int64 // window start, ns since base
	close  int64 // window end, ns since base
	issued *atomic.Int64

	seq  uint64
	hist *Histogram
	out  []byte

	good, badStatus, mismatched, badBody, timeouts, lost uint64
	lastGood                                             int64
	err                                                  error
}

// now is the time since base, from the monotonic clock.
func (w *worker) now() int64 { return int64(time.Since(w.base)) }

// mayIssue reports whether another request may go out at time now.
func (w *worker) mayIssue(now int64) bool {
	return now < w.close && (w.issued == nil || w.issued.Add(1) <= int64(w.cfg.Requests))
}

// stamp appends the request frame for slot to w.out under a new id and returns the id. An id that the
// protocol's width wraps to 0 is skipped: 0 marks a free slot.
func (w *worker) stamp(slot int) uint64 {
	for {
		w.seq++
		if id := (w.seq<<slotBits | uint64(slot)) & w.idMask; id != 0 {
			w.out = w.call.Append(w.out, id)
			return id
		}
	}
}

// slotOf returns the slot a reply's id names, or -1 when it names none of m.
func slotOf(id uint64, m int) int {
	s := int(id & (1<<slotBits - 1))
	if id == 0 || s >= m {
		return -1
	}
	return s
}

// record counts a reply to a request sent at sent and records its latency if it is good and inside the
// window.
func (w *worker) record(v Verdict, sent, now int64) {
	switch {
	case v == BadStatus:
		w.badStatus++
	case v != Good:
		w.badBody++
	case now >= w.open && now < w.close:
		w.good++
		w.lastGood = now
		w.hist.Record(time.Duration(now - sent))
	}
}

// fail records why the connection ended with n requests unanswered.
func (w *worker) fail(err error, n int) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		w.timeouts += uint64(n)
		return
	}
	w.lost += uint64(n)
	if w.err == nil {
		w.err = err
	}
}

// closedLoop keeps InFlight requests in flight on one goroutine: each read's replies are checked and their
// slots refilled, and the new requests leave in one write, so a request costs no goroutine hand-off.
func (w *worker) closedLoop() {
	m := w.cfg.InFlight
	ids := make([]uint64, m) // id in flight in each slot, 0 when free
	sent := make([]int64, m)
	pending := make([]int, 0, m) // slots written by the next flush
	w.out = make([]byte, 0, m*w.call.MaxLen())
	fr := newFrameReader(w.cfg.Protocol, max(64<<10, 2*w.call.MaxLen()))
	inFlight := 0

	flush := func() error {
		t := w.now()
		for _, s := range pending {
			sent[s] = t
		}
		pending = pending[:0]
		_, err := w.conn.Write(w.out)
		w.out = w.out[:0]
		return err
	}

	now := w.now()
	for s := range m {
		if !w.mayIssue(now) {
			break
		}
		ids[s] = w.stamp(s)
		pending = append(pending, s)
		inFlight++
	}
	if err := flush(); err != nil {
		w.fail(err, inFlight)
		return
	}
	for inFlight > 0 {
		if err := fr.fill(w.conn); err != nil {
			w.fail(err, inFlight)
			return
		}
		now := w.now()
		for {
			f, err := fr.next()
			if err != nil {
				w.fail(err, inFlight)
				return
			}
			if f == nil {
				break
			}
			var (
				id uint64
				v  Verdict
			)
			if id, v, w.out = w.call.Check(f, w.out); v == Peer {
				continue
			}
			s := slotOf(id, m)
			if s < 0 || ids[s] != id {
				w.mismatched++
				continue
			}
			w.record(v, sent[s], now)
			ids[s] = 0
			inFlight--
			if w.mayIssue(now) {
				ids[s] = w.stamp(s)
				pending = append(pending, s)
				inFlight++
			}
		}
		if len(w.out) > 0 {
			if err := flush(); err != nil {
				w.fail(err, inFlight)
				return
			}
		}
	}
}
