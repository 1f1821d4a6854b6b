package kvrpc

import (
	"bufio"
	"errors"
	"net"
	"sync"
)

// Handler serves one method. It gets the call's headers (the method among them) and body, and returns the
// reply's headers and body, or an error whose text the caller receives with StatusAppError.
type Handler func(headers map[string]string, body []byte) (map[string]string, []byte, error)

// Server serves methods on the connections of its listeners. Each call runs in its own goroutine, so replies
// on one connection may come out of order; the ids tell them apart.
type Server struct {
	mu        sync.Mutex
	handlers  map[string]Handler
	listeners []net.Listener
	conns     map[net.Conn]struct{}
	closed    bool
}

// NewServer returns a server with no methods.
func NewServer() *Server {
	return &Server{handlers: map[string]Handler{}, conns: map[net.Conn]struct{}{}}
}

// Handle serves method with h.
func (s *Server) Handle(method string, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers[method] = h
}

// Serve accepts connections on l until the server or l is closed.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	for {
		conn, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return nil
		}
		s.conns[conn] = struct{}{}
		s.mu.Unlock()
		go s.serveConn(conn)
	}
}

// Close stops the listeners and closes every connection.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	return nil
}

func (s *Server) serveConn(conn net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
	}()
	var wmu sync.Mutex
	reply := func(f *Frame) {
		b, err := f.Append(nil)
		if err != nil {
			b, _ = (&Frame{Type: TypeResponse, ID: f.ID, Status: StatusAppError, Body: []byte(err.Error())}).Append(nil)
		}
		wmu.Lock()
		defer wmu.Unlock()
		if _, err := conn.Write(b); err != nil {
			conn.Close()
		}
	}
	r := bufio.NewReader(conn)
	for {
		f, err := ReadFrame(r, DefaultMaxFrameSize)
		if err != nil {
			return
		}
		switch f.Type {
		case TypeHeartbeat:
			reply(&Frame{Type: TypeHeartbeatReply, ID: f.ID})
		case TypeRequest, TypeOneway:
			go func() {
				if out := s.call(f); f.Type == TypeRequest {
					reply(out)
				}
			}()
		}
	}
}

// call runs the handler of f's method and returns the response to send.
func (s *Server) call(f *Frame) *Frame {
	out := &Frame{Type: TypeResponse, ID: f.ID}
	method, _ := f.Get(HeaderMethod)
	s.mu.Lock()
	h, ok := s.handlers[method]
	s.mu.Unlock()
	if !ok {
		out.Status, out.Body = StatusNoMethod, []byte("no method "+method)
		return out
	}
	headers, body, err := h(headerMap(f.Headers), f.Body)
	if err != nil {
		out.Status, out.Body = StatusAppError, []byte(err.Error())
		return out
	}
	for _, k := range sortedKeys(headers) {
		out.Headers = append(out.Headers, Header{Key: k, Value: headers[k]})
	}
	out.Body = body
	return out
}
