package kvrpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
)

// Reply is a successful response.
type Reply struct {
	Headers map[string]string
	Body    []byte
}

// Error is a response whose status is not OK.
type Error struct {
	Status Status
	// Kind is the reply's "error" header: set by a proxy that answered the call itself.
	Kind string
	// Message is the reply's body.
	Message string
}

func (e *Error) Error() string {
	if e.Kind != "" {
		return fmt.Sprintf("kvrpc: status %d (%s): %s", e.Status, e.Kind, e.Message)
	}
	return fmt.Sprintf("kvrpc: status %d: %s", e.Status, e.Message)
}

// ErrClosed is returned by calls on a client whose connection has ended.
var ErrClosed = errors.New("kvrpc: connection closed")

// Client calls a server over one connection. Calls may run concurrently: each gets its own id and its reply
// is matched by that id, in whatever order replies come.
type Client struct {
	conn net.Conn

	wmu sync.Mutex // one frame written at a time
	buf []byte

	mu      sync.Mutex
	nextID  uint32
	pending map[uint32]chan *Frame
	err     error // why the connection ended, once it has
}

// Dial connects to a server (or to a proxy in front of one).
func Dial(ctx context.Context, addr string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Client{conn: conn, pending: map[uint32]chan *Frame{}}
	go c.readLoop()
	return c, nil
}

// Close ends the connection; calls in flight fail with ErrClosed.
func (c *Client) Close() error { return c.conn.Close() }

// Call calls method with headers and body and waits for the reply or for ctx to end. A reply with a status
// other than OK is returned as an *Error.
func (c *Client) Call(ctx context.Context, method string, headers map[string]string, body []byte) (*Reply, error) {
	hs, err := callHeaders(method, headers)
	if err != nil {
		return nil, err
	}
	f, err := c.roundTrip(ctx, &Frame{Type: TypeRequest, Headers: hs, Body: body})
	if err != nil {
		return nil, err
	}
	if f.Type != TypeResponse {
		return nil, fmt.Errorf("kvrpc: call %d answered by a frame of type %d", f.ID, f.Type)
	}
	if f.Status != StatusOK {
		kind, _ := f.Get(HeaderError)
		return nil, &Error{Status: f.Status, Kind: kind, Message: string(f.Body)}
	}
	return &Reply{Headers: headerMap(f.Headers), Body: f.Body}, nil
}

// Notify sends a oneway call, which gets no reply.
func (c *Client) Notify(method string, headers map[string]string, body []byte) error {
	hs, err := callHeaders(method, headers)
	if err != nil {
		return err
	}
	return c.write(&Frame{Type: TypeOneway, Headers: hs, Body: body})
}

// Ping sends a heartbeat and waits for its reply.
func (c *Client) Ping(ctx context.Context) error {
	f, err := c.roundTrip(ctx, &Frame{Type: TypeHeartbeat})
	if err == nil && f.Type != TypeHeartbeatReply {
		err = fmt.Errorf("kvrpc: heartbeat %d answered by a frame of type %d", f.ID, f.Type)
	}
	return err
}

func (c *Client) roundTrip(ctx context.Context, f *Frame) (*Frame, error) {
	ch := make(chan *Frame, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.nextID++
	f.ID = c.nextID
	c.pending[f.ID] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, f.ID)
		c.mu.Unlock()
	}()
	if err := c.write(f); err != nil {
		return nil, err
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, ErrClosed
		}
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Client) write(f *Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var err error
	if c.buf, err = f.Append(c.buf[:0]); err != nil {
		return err
	}
	_, err = c.conn.Write(c.buf)
	return err
}

// readLoop hands each reply to the call waiting for its id, until the connection ends.
func (c *Client) readLoop() {
	r := bufio.NewReader(c.conn)
	for {
		f, err := ReadFrame(r, DefaultMaxFrameSize)
		c.mu.Lock()
		if err != nil {
			c.err = ErrClosed
			for id, ch := range c.pending {
				close(ch)
				delete(c.pending, id)
			}
			c.mu.Unlock()
			c.conn.Close()
			return
		}
		// A reply to a call that has given up finds nobody waiting and is dropped.
		if ch, ok := c.pending[f.ID]; ok {
			ch <- f
			delete(c.pending, f.ID)
		}
		c.mu.Unlock()
	}
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
