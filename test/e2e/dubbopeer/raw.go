package dubbopeer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"
)

// Dubbo header fields, for tests that speak the protocol byte by byte.
const (
	HeaderSize = 16

	FlagTwoWayRequest     byte = 0xC2 // request | two-way | Hessian2
	FlagOnewayRequest     byte = 0x82 // request | Hessian2
	FlagHeartbeat         byte = 0xE2 // request | two-way | event | Hessian2
	FlagResponse          byte = 0x02
	FlagHeartbeatResponse byte = 0x22 // event | Hessian2

	StatusOK              byte = 20
	StatusBadRequest      byte = 40
	StatusBadResponse     byte = 50
	StatusServiceNotFound byte = 60
	StatusServiceError    byte = 70
	StatusServerError     byte = 80
)

// Frame is one Dubbo frame read off a raw connection.
type Frame struct {
	Flag   byte
	Status byte
	ID     uint64
	Body   []byte
}

func (f Frame) String() string {
	return fmt.Sprintf("{flag %#02x status %d id %d body %d bytes %q}", f.Flag, f.Status, f.ID, len(f.Body),
		truncate(f.Body, 80))
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// Value decodes a response body: the returned value for status 20 (nil for a null or void answer), or the
// error message of any other status as an error.
func (f Frame) Value() (any, error) {
	dec := hessian.NewDecoder(f.Body)
	if f.Status != StatusOK {
		msg, err := dec.Decode()
		if err != nil {
			return nil, fmt.Errorf("status %d, undecodable message: %w", f.Status, err)
		}
		return nil, fmt.Errorf("status %d: %v", f.Status, msg)
	}
	kind, err := dec.Decode()
	if err != nil {
		return nil, fmt.Errorf("response type: %w", err)
	}
	switch kind {
	case int32(1), int32(4): // a value, without or with attachments
		return dec.Decode()
	case int32(2), int32(5): // null
		return nil, nil
	case int32(0), int32(3): // an exception
		exc, _ := dec.Decode()
		return nil, fmt.Errorf("exception: %v", exc)
	}
	return nil, fmt.Errorf("unknown response type %v", kind)
}

// ResponseType returns the Hessian int that starts the body of a response with status 20: 1 for a value, 4
// for a value followed by attachments, and so on.
func (f Frame) ResponseType() (int32, error) {
	kind, err := hessian.NewDecoder(f.Body).Decode()
	if err != nil {
		return 0, err
	}
	typ, ok := kind.(int32)
	if !ok {
		return 0, fmt.Errorf("response type %v (%T) is not an int", kind, kind)
	}
	return typ, nil
}

// Attachments decodes the attachments of a response with status 20 whose type says it has them; nil when it
// has none.
func (f Frame) Attachments() (map[string]string, error) {
	dec := hessian.NewDecoder(f.Body)
	kind, err := dec.Decode()
	if err != nil {
		return nil, fmt.Errorf("response type: %w", err)
	}
	switch kind {
	case int32(3), int32(4):
		if _, err := dec.Decode(); err != nil {
			return nil, fmt.Errorf("value: %w", err)
		}
	case int32(5):
	default:
		return nil, nil
	}
	raw, err := dec.Decode()
	if err != nil {
		return nil, fmt.Errorf("attachments: %w", err)
	}
	m, ok := raw.(map[any]any)
	if !ok {
		return nil, fmt.Errorf("attachments are a %T, not a map", raw)
	}
	out := map[string]string{}
	for k, v := range m {
		ks, kok := k.(string)
		vs, vok := v.(string)
		if kok && vok {
			out[ks] = vs
		}
	}
	return out, nil
}

// Header returns a Dubbo header with the given fields.
func Header(flag, status byte, id uint64, bodyLen uint32) []byte {
	h := make([]byte, HeaderSize)
	h[0], h[1], h[2], h[3] = 0xda, 0xbb, flag, status
	binary.BigEndian.PutUint64(h[4:], id)
	binary.BigEndian.PutUint32(h[12:], bodyLen)
	return h
}

// HeartbeatFrame returns a heartbeat request: the event flag and a Hessian null body.
func HeartbeatFrame(id uint64) []byte {
	return append(Header(FlagHeartbeat, 0, id, 1), 'N')
}

// RequestFrame returns a request for a method of Interface, two-way or oneway, as a Java or Go consumer
// writes it: version, path, service version, method, parameter types, arguments, then the attachments.
func RequestFrame(id uint64, twoWay bool, method string, args []any, attachments map[string]string) []byte {
	return RequestFrameVersion("2.0.2", id, twoWay, method, args, attachments)
}

// RequestFrameVersion is RequestFrame with another Dubbo version in the body: consumers since Dubbo 2.6.3
// send the protocol version, 2.0.2; older ones sent their release number (2.5.3, say).
func RequestFrameVersion(dubboVersion string, id uint64, twoWay bool, method string, args []any,
	attachments map[string]string) []byte {
	var types strings.Builder
	for _, a := range args {
		switch a.(type) {
		case string:
			types.WriteString("Ljava/lang/String;")
		case int32:
			types.WriteString("I")
		case int64:
			types.WriteString("J")
		case bool:
			types.WriteString("Z")
		default:
			panic(fmt.Sprintf("RequestFrame: no Java type for %T", a))
		}
	}
	atts := map[string]string{"path": Interface, "interface": Interface}
	for k, v := range attachments {
		atts[k] = v
	}
	enc := hessian.NewEncoder()
	fields := []any{dubboVersion, Interface, "", method, types.String()}
	fields = append(fields, args...)
	fields = append(fields, atts)
	for _, f := range fields {
		if err := enc.Encode(f); err != nil {
			panic(fmt.Sprintf("RequestFrame: encode %v: %v", f, err))
		}
	}
	body := enc.Buffer()
	flag := FlagOnewayRequest
	if twoWay {
		flag = FlagTwoWayRequest
	}
	return append(Header(flag, 0, id, uint32(len(body))), body...)
}

// RawConn is a TCP connection for writing hand-made bytes and reading frames back.
type RawConn struct {
	t    testing.TB
	conn net.Conn
}

// ioTimeout bounds each read and write of a RawConn.
const ioTimeout = 10 * time.Second

// DialRaw connects to addr and closes the connection when the test ends.
func DialRaw(t testing.TB, addr string) *RawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &RawConn{t: t, conn: conn}
}

// Write writes b; the test fails if it cannot.
func (c *RawConn) Write(b []byte) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write %d bytes: %v", len(b), err)
	}
}

// CloseWrite half-closes the connection: the peer reads EOF.
func (c *RawConn) CloseWrite() {
	c.t.Helper()
	if err := c.conn.(*net.TCPConn).CloseWrite(); err != nil {
		c.t.Fatalf("close write: %v", err)
	}
}

// ReadFrame reads one frame; the test fails if none arrives in time.
func (c *RawConn) ReadFrame() Frame {
	c.t.Helper()
	f, err := c.TryReadFrame(ioTimeout)
	if err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	return f
}

// TryReadFrame reads one frame, waiting at most timeout. It returns io.EOF when the peer closed the connection
// cleanly before a frame began.
func (c *RawConn) TryReadFrame(timeout time.Duration) (Frame, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	h := make([]byte, HeaderSize)
	if _, err := io.ReadFull(c.conn, h); err != nil {
		return Frame{}, err
	}
	if h[0] != 0xda || h[1] != 0xbb {
		return Frame{}, fmt.Errorf("bad magic % x", h[:2])
	}
	f := Frame{Flag: h[2], Status: h[3], ID: binary.BigEndian.Uint64(h[4:])}
	n := binary.BigEndian.Uint32(h[12:])
	if n > 16<<20 {
		return Frame{}, fmt.Errorf("frame %v claims a %d-byte body", f, n)
	}
	f.Body = make([]byte, n)
	if _, err := io.ReadFull(c.conn, f.Body); err != nil {
		return Frame{}, fmt.Errorf("body of %v: %w", f, err)
	}
	return f, nil
}

// WaitClosed reads until the peer closes the connection and returns the frames that came first. The test
// fails if the connection is still open after timeout or other bytes arrive.
func (c *RawConn) WaitClosed(timeout time.Duration) []Frame {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var frames []Frame
	for {
		f, err := c.TryReadFrame(time.Until(deadline))
		switch {
		case err == nil:
			frames = append(frames, f)
			continue
		case errors.Is(err, io.EOF) || isReset(err):
			return frames
		case errors.Is(err, os.ErrDeadlineExceeded):
			c.t.Fatalf("connection still open after %v (frames read: %v)", timeout, frames)
		default:
			c.t.Fatalf("waiting for close: %v (frames read: %v)", err, frames)
		}
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && (strings.Contains(op.Err.Error(), "reset") ||
		strings.Contains(op.Err.Error(), "broken pipe"))
}
