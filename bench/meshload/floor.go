package meshload

import (
	"context"
	"net"
)

// Floor is the least a proxy can do: it reads each frame by the length its header gives (Protocol.FrameLen:
// Dubbo's 16-byte header, framed Thrift's 4-byte length, bRPC's 12-byte header) and copies it whole to the
// other side, over one upstream connection per downstream connection, and nothing else. Whatever a real proxy
// adds over the floor is the cost of its own work, which makes the ratio to the floor a figure that travels
// between machines.
type Floor struct {
	// Protocol says where each frame ends.
	Protocol Protocol
	// Upstream is the server's host:port.
	Upstream string
}

// Serve forwards the connections ln accepts until ctx is done.
func (f Floor) Serve(ctx context.Context, ln net.Listener) error {
	return serve(ctx, ln, func(down net.Conn) { f.forward(ctx, down) })
}

func (f Floor) forward(ctx context.Context, down net.Conn) {
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", f.Upstream)
	if err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyFrames(f.Protocol, down, up)
		// The server went away: end the client's side too, as a proxy would.
		down.Close()
	}()
	copyFrames(f.Protocol, up, down)
	up.Close()
	<-done
}

// copyFrames copies whole frames from src to dst until either fails. All the whole frames one read brings in
// leave in one write, straight from the read buffer.
func copyFrames(p Protocol, dst, src net.Conn) {
	fr := newFrameReader(p, 64<<10)
	for {
		if err := fr.fill(src); err != nil {
			return
		}
		start := fr.r
		for {
			f, err := fr.next()
			if err != nil {
				return
			}
			if f == nil {
				break
			}
		}
		if fr.r == start {
			continue
		}
		if _, err := dst.Write(fr.buf[start:fr.r]); err != nil {
			return
		}
	}
}
