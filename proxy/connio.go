package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// readBufSize is the size of a pooled read buffer. Frames larger than that get a buffer of their own for as
// long as they take to arrive.
const readBufSize = 64 << 10

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// frameReader reads a connection's bytes into a pooled buffer that it gives back whenever it holds no
// unprocessed bytes, so an idle connection holds no buffer at all: with a raw socket it waits for the socket
// to become readable before taking one.
type frameReader struct {
	conn net.Conn
	raw  syscall.RawConn // nil when conn is not a socket (tests over net.Pipe)
	buf  *[]byte
	r, w int

	readFn func(fd uintptr) bool // fr.readRaw, bound once
	need   int                   // frame size the current fill makes room for
	rerr   error                 // what the current fill's readRaw saw
}

func newFrameReader(conn net.Conn) *frameReader {
	fr := &frameReader{conn: conn}
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			fr.raw = raw
			fr.readFn = fr.readRaw
		}
	}
	return fr
}

// data returns the bytes read and not yet consumed.
func (fr *frameReader) data() []byte {
	if fr.buf == nil {
		return nil
	}
	return (*fr.buf)[fr.r:fr.w]
}

// consume drops n bytes from the front of data.
func (fr *frameReader) consume(n int) {
	fr.r += n
	if fr.r == fr.w {
		fr.r, fr.w = 0, 0
	}
}

// release gives the buffer back when it holds nothing worth keeping.
func (fr *frameReader) release() {
	if fr.buf == nil || fr.r != fr.w {
		return
	}
	if cap(*fr.buf) == readBufSize {
		readBufs.Put(fr.buf)
	}
	fr.buf, fr.r, fr.w = nil, 0, 0
}

// reserve makes room for a frame of need bytes (or just some more bytes when need is 0).
func (fr *frameReader) reserve(need int) {
	if fr.buf == nil {
		if need <= readBufSize {
			fr.buf = readBufs.Get().(*[]byte)
		} else {
			b := make([]byte, need)
			fr.buf = &b
		}
		return
	}
	b := *fr.buf
	pending := fr.w - fr.r
	if need < pending+1 {
		need = pending + 1
	}
	if fr.r+need <= len(b) {
		return
	}
	if need <= len(b) {
		copy(b, b[fr.r:fr.w])
	} else {
		nb := make([]byte, max(need, 2*len(b)))
		copy(nb, b[fr.r:fr.w])
		if cap(b) == readBufSize {
			readBufs.Put(fr.buf)
		}
		fr.buf = &nb
	}
	fr.r, fr.w = 0, pending
}

// fill reads at least one more byte, making room for a frame of need bytes first.
func (fr *frameReader) fill(need int) error {
	if fr.raw == nil {
		fr.reserve(need)
		n, err := fr.conn.Read((*fr.buf)[fr.w:])
		fr.w += n
		if n > 0 {
			return nil
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	if fr.buf != nil || need > 0 {
		fr.reserve(need)
	}
	fr.need, fr.rerr = need, nil
	if err := fr.raw.Read(fr.readFn); err != nil {
		return err
	}
	return fr.rerr
}

// readRaw is the callback of RawConn.Read: it reads what the socket has, or reports false to wait for it to
// become readable, giving the buffer back meanwhile. It is bound once per reader so that a read allocates no
// closure.
func (fr *frameReader) readRaw(fd uintptr) bool {
	if fr.buf == nil {
		fr.reserve(fr.need)
	}
	for {
		n, err := syscall.Read(int(fd), (*fr.buf)[fr.w:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			fr.release()
			return false
		case err != nil:
			fr.rerr = err
		case n == 0:
			fr.rerr = io.EOF
		default:
			fr.w += n
		}
		return true
	}
}

// maxSpareWrite is the largest drained write queue a connection keeps for its next burst; a larger one, left
// by a burst, goes back to the garbage collector rather than staying with the connection.
const maxSpareWrite = 1 << 20

// maxPendingWrite bounds the bytes queued for a connection that does not keep up; past it the connection is
// closed rather than letting one slow peer hold the proxy's memory.
const maxPendingWrite = 64 << 20

var errWriteQueueFull = errors.New("write queue over limit: peer not reading")

// connWriter writes frames to a connection from many goroutines. A frame goes straight to the socket when no
// other write is in progress; frames that arrive meanwhile are queued and go out together in one write.
// Before the connection exists (an upstream still dialling) every frame is queued.
type connWriter struct {
	mu      sync.Mutex
	conn    net.Conn
	writing bool
	batched bool // pending holds frames that a batch will flush
	pending []byte
	spare   []byte
	err     error
	drained func() // runs once nothing is queued or being written (whenDrained)
}

// writeBatch collects the writers that a read loop queued frames on while it handled several frames from one
// read, so that each gets one write for all of them when the read's frames are done.
type writeBatch struct {
	writers []*connWriter
}

// flush starts writing everything queued in the batch.
func (b *writeBatch) flush() {
	for i, w := range b.writers {
		w.flushBatched()
		b.writers[i] = nil
	}
	b.writers = b.writers[:0]
}

// newPendingWriter returns a writer that queues frames until attach gives it its connection.
func newPendingWriter() *connWriter { return &connWriter{writing: true} }

// attach gives the writer its connection and sends what was queued.
func (w *connWriter) attach(conn net.Conn) error {
	w.mu.Lock()
	w.conn = conn
	w.mu.Unlock()
	return w.flush(nil)
}

// fail makes every later write return err and drops what is queued.
func (w *connWriter) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.pending, w.spare = nil, nil
	f := w.takeDrained()
	w.mu.Unlock()
	if f != nil {
		f()
	}
}

// whenDrained runs f once everything queued has been written (or the writer failed): now, if nothing is.
func (w *connWriter) whenDrained(f func()) {
	w.mu.Lock()
	if w.err != nil || !w.writing && !w.batched && len(w.pending) == 0 {
		w.mu.Unlock()
		f()
		return
	}
	w.drained = f
	w.mu.Unlock()
}

// takeDrained returns the function waiting for the queue to drain, if the queue is drained; w.mu is held.
func (w *connWriter) takeDrained() func() {
	f := w.drained
	if f == nil || w.err == nil && (w.writing || w.batched || len(w.pending) > 0) {
		return nil
	}
	w.drained = nil
	return f
}

// backlog returns how many bytes wait to be written.
func (w *connWriter) backlog() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending)
}

// writeTo is write when b is nil; otherwise it queues a copy of frame for b's flush.
func (w *connWriter) writeTo(frame []byte, b *writeBatch) error {
	if b == nil {
		return w.write(frame)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if len(w.pending)+len(frame) > maxPendingWrite {
		return errWriteQueueFull
	}
	w.pending = append(w.pending, frame...)
	if !w.batched && !w.writing {
		// Whoever is writing will send the queue; otherwise the batch must.
		w.batched = true
		b.writers = append(b.writers, w)
	}
	return nil
}

// flushBatched writes what a batch queued, unless another goroutine already did or is doing it.
func (w *connWriter) flushBatched() {
	w.mu.Lock()
	w.batched = false
	if w.writing || len(w.pending) == 0 || w.err != nil {
		f := w.takeDrained()
		w.mu.Unlock()
		if f != nil {
			f()
		}
		return
	}
	w.writing = true
	w.mu.Unlock()
	w.flush(nil)
}

// write sends frame, or queues a copy of it when another write is in progress.
func (w *connWriter) write(frame []byte) error {
	w.mu.Lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	if w.writing {
		if len(w.pending)+len(frame) > maxPendingWrite {
			w.mu.Unlock()
			return errWriteQueueFull
		}
		w.pending = append(w.pending, frame...)
		w.mu.Unlock()
		return nil
	}
	w.writing = true
	w.mu.Unlock()
	return w.flush(frame)
}

// flush writes first (if any), then whatever queued up meanwhile, until the queue is empty. The caller has
// set writing.
func (w *connWriter) flush(first []byte) error {
	buf, queued := first, false
	for {
		if len(buf) > 0 {
			if _, err := w.conn.Write(buf); err != nil {
				w.mu.Lock()
				w.writing = false
				if w.err == nil {
					w.err = err
				}
				w.pending, w.spare = nil, nil
				f := w.takeDrained()
				w.mu.Unlock()
				if f != nil {
					f()
				}
				return err
			}
		}
		w.mu.Lock()
		if queued && cap(buf) <= maxSpareWrite {
			w.spare = buf[:0] // reuse the drained queue's memory, unless a burst made it large
		}
		if w.err != nil || len(w.pending) == 0 {
			w.writing = false
			err := w.err
			f := w.takeDrained()
			w.mu.Unlock()
			if f != nil {
				f()
			}
			return err
		}
		buf, w.pending, w.spare, queued = w.pending, w.spare, nil, true
		w.mu.Unlock()
	}
}
