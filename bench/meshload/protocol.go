// Package meshload is a benchmark kit for the RPC protocols Meltemi proxies. For each protocol it has a
// near-free echo server, the floor forwarder that copies whole frames and does nothing else, and a load
// generator that stamps a new id on every request, checks every reply and measures latency with a log-linear
// histogram. The meshbench command drives it; tests call it directly.
//
// The harness is written once; what differs between protocols sits behind Protocol: Dubbo 2 (hessian2),
// Thrift (binary protocol, framed transport) and bRPC (baidu_std).
package meshload

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
)

// Protocol is what the kit needs to know of a wire protocol to serve it, forward it and load it.
type Protocol interface {
	// Name is the protocol's short name, as meshbench's -protocol flag spells it.
	Name() string
	// Workload describes the echo call in reports.
	Workload() string
	// FrameLen returns the length of the whole frame at the start of b, or 0 when b is too short to tell. An
	// error means the stream is not this protocol, or is out of sync.
	FrameLen(b []byte) (int, error)
	// IDBits is the width of the protocol's request id; the load generator's ids fit in it and are never 0.
	IDBits() int
	// NewCall builds the echo request carrying payload.
	NewCall(payload string) Call
	// AppendEcho appends the echo server's answer to frame f, if f needs one: the request's string argument
	// copied byte for byte into a successful reply under the request's id.
	AppendEcho(out, f []byte) []byte
}

// Call is one echo request, built once and sent under a new id each time.
type Call interface {
	// Append appends the request frame under id to dst; it allocates nothing when dst has room for MaxLen
	// more bytes.
	Append(dst []byte, id uint64) []byte
	// MaxLen bounds the length of a request frame.
	MaxLen() int
	// Check reads a frame from the server: the id of the request it answers and what it says. A frame of the
	// peer's own (a Dubbo heartbeat) is Peer, and Check appends the answer it needs, if any, to out. Check
	// allocates nothing.
	Check(f, out []byte) (id uint64, v Verdict, _ []byte)
}

// Verdict is what a frame from the server says about the request it answers.
type Verdict uint8

const (
	// Good is a successful reply carrying the echoed string.
	Good Verdict = iota
	// BadStatus is a reply that reports a failure: a Dubbo status other than 20, a Thrift EXCEPTION, a bRPC
	// error_code.
	BadStatus
	// BadBody is a successful reply that does not carry the echoed string, or a frame that cannot be read as a
	// reply.
	BadBody
	// Peer is a frame that answers no request: the peer's own heartbeat or a reply to ours.
	Peer
)

// Protocols lists the protocols the kit speaks.
var Protocols = []Protocol{Dubbo{}, Thrift{}, BRPC{}}

// ProtocolByName returns the protocol named name.
func ProtocolByName(name string) (Protocol, error) {
	var names []string
	for _, p := range Protocols {
		if p.Name() == name {
			return p, nil
		}
		names = append(names, p.Name())
	}
	return nil, fmt.Errorf("unknown protocol %q (%s)", name, strings.Join(names, ", "))
}

// Payload returns a deterministic ASCII payload of n bytes.
func Payload(n int) string {
	const pattern = "meltemi-mesh-bench-0123456789-abcdefghijklmnopqrstuvwxyz-"
	b := make([]byte, n)
	for i := range b {
		b[i] = pattern[i%len(pattern)]
	}
	return string(b)
}

// maxFrame bounds the frame length a header may announce: every protocol here defaults to a limit at or below
// 64 MiB, and anything far beyond it is a stream out of sync rather than a real frame.
const maxFrame = 64 << 20

// errFrameLen reports a frame length out of bounds.
var errFrameLen = errors.New("frame length out of bounds")

// frameReader reads whole frames of one protocol from a connection into one reused buffer.
type frameReader struct {
	proto Protocol
	buf   []byte
	r, w  int // unread data is buf[r:w]
	need  int // length of the frame at buf[r:], once its header is in
}

func newFrameReader(p Protocol, size int) *frameReader {
	return &frameReader{proto: p, buf: make([]byte, size)}
}

// next returns the next whole frame, or nil when the buffer holds none yet. The frame is valid until the next
// call to fill.
func (fr *frameReader) next() ([]byte, error) {
	total, err := fr.proto.FrameLen(fr.buf[fr.r:fr.w])
	if err != nil {
		return nil, err
	}
	if total == 0 || fr.w-fr.r < total {
		fr.need = total
		return nil, nil
	}
	fr.need = 0
	f := fr.buf[fr.r : fr.r+total : fr.r+total]
	fr.r += total
	return f, nil
}

// fill reads once from c. It first makes room: it moves the unread bytes to the front when the tail is short,
// and grows the buffer when a frame announced by its header cannot fit.
func (fr *frameReader) fill(c net.Conn) error {
	if fr.r == fr.w {
		fr.r, fr.w = 0, 0
	} else if fr.r > 0 && (len(fr.buf)-fr.w < len(fr.buf)/4 || fr.r+fr.need > len(fr.buf)) {
		fr.w = copy(fr.buf, fr.buf[fr.r:fr.w])
		fr.r = 0
	}
	if fr.need > len(fr.buf) {
		nb := make([]byte, max(fr.need, 2*len(fr.buf)))
		fr.w = copy(nb, fr.buf[fr.r:fr.w])
		fr.r = 0
		fr.buf = nb
	}
	n, err := c.Read(fr.buf[fr.w:])
	fr.w += n
	if n > 0 {
		// The error, if any, comes back on the next read; the bytes read first are served.
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}
