package proxy

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// handOn gives a connection accepted by a capture listener to the listener for its original destination: a
// virtual listener for that address, else one for 0.0.0.0 (or ::) on its port. A connection no listener
// takes is relayed to where it was going, or closed.
func (s *listenerSocket) handOn(conn net.Conn) {
	dst, err := originalDst(conn)
	if err != nil {
		s.p.log.Info("capture listener: no original destination; closing", "listener", s.name,
			"remote", conn.RemoteAddr(), "error", err)
		conn.Close()
		return
	}
	if la, ok := conn.LocalAddr().(*net.TCPAddr); ok && la.AddrPort() == dst {
		// Dialled directly rather than redirected: handing it on would loop.
		conn.Close()
		return
	}
	virtuals := *s.p.virtuals.Load()
	target := virtuals[dst.String()]
	if target == nil {
		any := netip.IPv4Unspecified()
		if dst.Addr().Is6() {
			any = netip.IPv6Unspecified()
		}
		target = virtuals[netip.AddrPortFrom(any, dst.Port()).String()]
	}
	if target != nil {
		target.serveConn(conn)
		return
	}
	if lr := s.p.snap.Load().listeners[s.name]; lr != nil && lr.passthrough {
		s.relay(conn, dst)
		return
	}
	conn.Close()
}

// relay copies bytes both ways between a captured connection and its original destination, as Istio's
// PassthroughCluster does for traffic no listener serves.
func (s *listenerSocket) relay(conn net.Conn, dst netip.AddrPort) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return
	}
	s.relays[conn] = struct{}{}
	s.mu.Unlock()
	s.p.wg.Add(1)
	go func() {
		defer s.p.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.relays, conn)
			s.mu.Unlock()
			conn.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		up, err := s.p.dialer().DialContext(ctx, "tcp", net.JoinHostPort(dst.Addr().String(),
			strconv.Itoa(int(dst.Port()))))
		cancel()
		if err != nil {
			s.p.log.Debug("passthrough dial failed", "listener", s.name, "destination", dst, "error", err)
			return
		}
		defer up.Close()
		done := make(chan struct{})
		go func() {
			io.Copy(up, conn)
			if tc, ok := up.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			close(done)
		}()
		io.Copy(conn, up)
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		<-done
	}()
}
