package dubboload

import (
	"bytes"
	"context"
	"net"
)

// Echo is a Dubbo echo server built to cost as little as possible, so that a benchmark measures what sits in
// front of it: it answers each two-way request with a status-20 RESPONSE_VALUE holding the request's first
// argument copied byte for byte, answers heartbeats, ignores oneway requests, and writes the replies to all
// the requests one read brought in with a single write.
type Echo struct{}

// Serve answers the connections ln accepts until ctx is done.
func (Echo) Serve(ctx context.Context, ln net.Listener) error { return serve(ctx, ln, echoConn) }

// outKeep is the largest reply buffer a connection keeps between batches.
const outKeep = 4 << 20

func echoConn(c net.Conn) {
	fr := newFrameReader(64 << 10)
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
			out = appendEchoReply(out, f)
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

// stringDescWire is the parameter-types descriptor of echo(String) as Hessian writes it.
var stringDescWire = appendString(nil, stringDesc)

// appendEchoReply appends the reply to frame f, if it needs one.
func appendEchoReply(out, f []byte) []byte {
	flag := f[2]
	if flag&flagRequest == 0 || flag&flagTwoWay == 0 {
		return out // a response, or a oneway request
	}
	id, serial := frameID(f), flag&serialMask
	if flag&flagEvent != 0 {
		out = appendHeader(out, flagEvent|serial, StatusOK, id, 1)
		return append(out, 'N')
	}
	arg, err := echoArgument(f[HeaderLen:])
	if err != nil {
		at := len(out)
		out = appendHeader(out, serial, statusBadRequest, id, 0)
		out = appendString(out, err.Error())
		patchBodyLen(out[at:])
		return out
	}
	if arg == nil {
		out = appendHeader(out, serial, StatusOK, id, 1)
		return append(out, respNullValue)
	}
	out = appendHeader(out, serial, StatusOK, id, 1+len(arg))
	out = append(out, respValue)
	return append(out, arg...)
}

// patchBodyLen sets the body length of the frame f from its size.
func patchBodyLen(f []byte) {
	n := len(f) - HeaderLen
	f[12], f[13], f[14], f[15] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
}

// echoArgument returns the wire bytes of the String argument of a request body, or nil when the method takes
// something other than one String.
func echoArgument(body []byte) ([]byte, error) {
	off := 0
	// Dubbo version, service path, service version and method name come before the descriptor.
	for range 4 {
		n, err := skipString(body[off:])
		if err != nil {
			return nil, err
		}
		off += n
	}
	n, err := skipString(body[off:])
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(body[off:off+n], stringDescWire) {
		return nil, nil
	}
	off += n
	n, err = skipString(body[off:])
	if err != nil {
		return nil, err
	}
	return body[off : off+n], nil
}
