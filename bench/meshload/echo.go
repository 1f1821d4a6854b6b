package meshload

import (
	"context"
	"net"
)

// Echo is an echo server built to cost as little as possible, so that a benchmark measures what sits in front
// of it: it answers each request with a successful reply holding the request's string argument copied byte
// for byte (Protocol.AppendEcho), and writes the replies to all the requests one read brought in with a
// single write.
type Echo struct {
	Protocol Protocol
}

// Serve answers the connections ln accepts until ctx is done.
func (e Echo) Serve(ctx context.Context, ln net.Listener) error { return serve(ctx, ln, e.conn) }

// outKeep is the largest reply buffer a connection keeps between batches.
const outKeep = 4 << 20

func (e Echo) conn(c net.Conn) {
	fr := newFrameReader(e.Protocol, 64<<10)
	out := make([]byte, 0, 64<<10)
	for {
		if err := fr.fill(c); err != nil {
			return
		}
		for {
			f, err := fr.next()
			if err != nil {
				return
			}
			if f == nil {
				break
			}
			out = e.Protocol.AppendEcho(out, f)
		}
		if len(out) == 0 {
			continue
		}
		if _, err := c.Write(out); err != nil {
			return
		}
		if cap(out) > outKeep {
			out = make([]byte, 0, 64<<10)
		}
		out = out[:0]
	}
}
