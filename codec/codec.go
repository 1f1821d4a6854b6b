// Package codec is the contract between the Meltemi proxy and a wire protocol.
//
// A protocol plugs into the proxy by supplying a codec: something that finds frames in a byte stream, reads the
// few header fields the proxy routes on, rewrites request ids in place, edits the metadata the protocol carries,
// and writes the replies (heartbeat answers and local errors) a real client of the protocol understands. The
// proxy does everything else: routing, load balancing, filters, metrics.
//
// The life of a codec:
//
//   - a Registration names it (e.g. "aeraki.meta_protocol.codec.dubbo") and builds a Factory from its typed
//     config, once per config;
//   - the Factory makes one Codec per connection, so a codec may keep per-connection state;
//   - the Codec decodes frames into reused Messages. A Message borrows its Frame from the connection's buffer:
//     it is valid until the proxy decodes the next frame on that connection, and nobody keeps it longer.
//
// Decoding reads the frame header and the fields routes need; the body travels as bytes and is never
// deserialised. Metadata that routes rarely ask for (most Dubbo attachments, say) is decoded on first use.
package codec

import (
	"errors"
	"fmt"
	"strconv"
)

// MessageType is the kind of a message. The first values are numbered as in Aeraki's codec API.
type MessageType uint8

// Message types. Request expects a Response; Oneway expects nothing.
const (
	Request MessageType = iota
	Response
	Oneway
	StreamInit
	StreamData
	StreamCloseOneWay
	StreamCloseTwoWay
	Heartbeat
	Error
	StreamFeedback
	// HeartbeatResponse answers a Heartbeat. Proxies answer heartbeats themselves, so they rarely see one.
	HeartbeatResponse
)

var messageTypeNames = [...]string{
	Request:           "request",
	Response:          "response",
	Oneway:            "oneway",
	StreamInit:        "stream_init",
	StreamData:        "stream_data",
	StreamCloseOneWay: "stream_close_one_way",
	StreamCloseTwoWay: "stream_close_two_way",
	Heartbeat:         "heartbeat",
	Error:             "error",
	StreamFeedback:    "stream_feedback",
	HeartbeatResponse: "heartbeat_response",
}

func (t MessageType) String() string {
	if int(t) < len(messageTypeNames) {
		return messageTypeNames[t]
	}
	return "MessageType(" + strconv.Itoa(int(t)) + ")"
}

// ExpectsReply reports whether a message of this type is answered by its peer: a request, a heartbeat, and a
// stream INIT (answered by the server's INIT).
func (t MessageType) ExpectsReply() bool { return t == Request || t == Heartbeat || t == StreamInit }

// IsReply reports whether a message of this type answers an earlier one.
func (t MessageType) IsReply() bool { return t == Response || t == HeartbeatResponse || t == Error }

// ErrorKind is why the proxy answers a request itself. The first values are numbered as in Aeraki's codec API.
type ErrorKind uint8

// The local error kinds every codec must be able to answer with.
const (
	RouteNotFound ErrorKind = iota
	ClusterNotFound
	NoHealthyUpstream
	BadResponse
	Unspecified
	OverLimit
	Timeout
	Unauthorized
	BadRequest
)

var errorKindNames = [...]string{
	RouteNotFound:     "route_not_found",
	ClusterNotFound:   "cluster_not_found",
	NoHealthyUpstream: "no_healthy_upstream",
	BadResponse:       "bad_response",
	Unspecified:       "unspecified",
	OverLimit:         "over_limit",
	Timeout:           "timeout",
	Unauthorized:      "unauthorized",
	BadRequest:        "bad_request",
}

// ErrorKinds lists every ErrorKind, for tests and metrics that enumerate them.
var ErrorKinds = []ErrorKind{RouteNotFound, ClusterNotFound, NoHealthyUpstream, BadResponse, Unspecified,
	OverLimit, Timeout, Unauthorized, BadRequest}

func (k ErrorKind) String() string {
	if int(k) < len(errorKindNames) {
		return errorKindNames[k]
	}
	return "ErrorKind(" + strconv.Itoa(int(k)) + ")"
}

// ParseErrorKind returns the kind a name (as String writes it) stands for.
func ParseErrorKind(name string) (ErrorKind, bool) {
	for k, n := range errorKindNames {
		if n == name {
			return ErrorKind(k), true
		}
	}
	return 0, false
}

// ResponseFlag is Envoy's short response flag for a local reply of this kind, as Istio's response_flags label
// shows it.
func (k ErrorKind) ResponseFlag() string {
	switch k {
	case RouteNotFound:
		return "NR"
	case ClusterNotFound:
		return "NC"
	case NoHealthyUpstream:
		return "UH"
	case BadResponse:
		return "UPE"
	case OverLimit:
		return "RL"
	case Timeout:
		return "UT"
	case Unauthorized:
		return "UAEX"
	case BadRequest:
		return "DPE"
	default:
		return "UF"
	}
}

// KeyValue is one metadata entry.
type KeyValue struct {
	Key   string
	Value string
}

// Mutation is an edit of the metadata a protocol carries on the wire (Dubbo attachments, THeader key/values,
// tRPC trans_info, ...): keys to set, then keys to remove.
type Mutation struct {
	Set    []KeyValue
	Remove []string
}

// Empty reports whether the mutation changes nothing.
func (m *Mutation) Empty() bool { return m == nil || len(m.Set) == 0 && len(m.Remove) == 0 }

// Message is one decoded frame. The proxy reuses Messages; Reset clears one for the next frame.
type Message struct {
	// Type is what the frame is.
	Type MessageType
	// ID is the request id as carried on the wire, widened to 64 bits. Replies carry the id of their request.
	ID uint64
	// Status is the protocol's own status code (Dubbo 20, 70, ...; bRPC error_code; tRPC ret). It is what the
	// response_code metric label shows.
	Status int32
	// Failed reports that the message is a reply that signals failure (a non-OK status or an exception).
	Failed bool
	// Frame is the whole frame on the wire, header included. It is borrowed: valid until the next frame is
	// decoded on the same connection, or until the codec replaces it (Encode).
	Frame []byte
	// Metadata is what routes match on.
	Metadata Metadata
	// Private is the codec's own bookkeeping for this message (offsets into Frame, say), so that lazy decoding
	// and re-encoding need no allocation. The proxy never reads it.
	Private [4]int
}

// Reset clears m for reuse, keeping its allocations.
func (m *Message) Reset() {
	m.Type, m.ID, m.Status, m.Failed, m.Frame = 0, 0, 0, false, nil
	m.Metadata.reset()
	m.Private = [4]int{}
}

// Metadata is a small ordered set of string keys and values. Codecs put the fields routes need most in it
// while decoding and may attach a Loader for the rest, which then runs on the first lookup of a key that is not
// there yet.
type Metadata struct {
	pairs  []KeyValue
	loader Loader
	msg    *Message
	err    error
}

// Loader decodes the metadata a codec left out of the eager pass.
type Loader interface {
	// LoadMetadata adds the rest of msg's metadata to msg.Metadata with Add or Set. It runs at most once per
	// message, and is detached before it runs, so it may call Get itself.
	LoadMetadata(msg *Message) error
}

func (md *Metadata) reset() {
	clear(md.pairs)
	md.pairs = md.pairs[:0]
	md.loader, md.msg, md.err = nil, nil, nil
}

// Set sets key to value, replacing an earlier value.
func (md *Metadata) Set(key, value string) {
	for i := range md.pairs {
		if md.pairs[i].Key == key {
			md.pairs[i].Value = value
			return
		}
	}
	md.pairs = append(md.pairs, KeyValue{Key: key, Value: value})
}

// Add appends key and value without looking for an earlier value; codecs use it while decoding keys they know
// to be distinct.
func (md *Metadata) Add(key, value string) {
	md.pairs = append(md.pairs, KeyValue{Key: key, Value: value})
}

// Defer arranges for l to decode the rest of msg's metadata when a lookup first misses.
func (md *Metadata) Defer(l Loader, msg *Message) { md.loader, md.msg = l, msg }

// Get returns the value of key.
func (md *Metadata) Get(key string) (string, bool) {
	for i := range md.pairs {
		if md.pairs[i].Key == key {
			return md.pairs[i].Value, true
		}
	}
	if md.load() {
		return md.Get(key)
	}
	return "", false
}

// Len returns the number of entries, loading deferred ones first.
func (md *Metadata) Len() int {
	md.load()
	return len(md.pairs)
}

// All calls yield for each entry in order, loading deferred ones first, until yield returns false.
func (md *Metadata) All(yield func(key, value string) bool) {
	md.load()
	for _, kv := range md.pairs {
		if !yield(kv.Key, kv.Value) {
			return
		}
	}
}

// CopyDecoded copies the entries decoded so far into dst, replacing its contents; deferred entries stay
// behind, since they would be decoded from a frame that dst's message may not have.
func (md *Metadata) CopyDecoded(dst *Metadata) {
	dst.reset()
	dst.pairs = append(dst.pairs, md.pairs...)
	dst.err = md.err
}

// Err returns the error of the deferred decoding, if it failed.
func (md *Metadata) Err() error { md.load(); return md.err }

// load runs the deferred loader once and reports whether it ran.
func (md *Metadata) load() bool {
	l := md.loader
	if l == nil {
		return false
	}
	md.loader = nil
	md.err = l.LoadMetadata(md.msg)
	md.msg = nil
	return true
}

// Codec reads and writes one connection's frames.
//
// Decode, Encode and a Loader the codec attached to a message run on one goroutine at a time, that of the
// connection whose codec it is, and may share per-connection state and scratch space. SetID, HeartbeatReply
// and ErrorReply depend only on the message they are given and the codec's configuration: the proxy calls
// them from other goroutines too, concurrently with Decode. ErrorReply must not read req.Frame, which is long
// gone when the proxy answers a request whose upstream failed: keep what replies need (a serialization id, a
// transport kind) in Private while decoding. The proxy encodes a request with the codec of the connection it
// came from, and a response with the codec of the upstream connection it came from.
type Codec interface {
	// Decode decodes the first frame in buf into msg, which has been Reset.
	//
	// It returns the frame's length n and a nil error when buf holds the whole frame; msg.Frame is buf[:n].
	// When buf holds only part of a frame, it returns ErrIncomplete with n the whole frame's length if the
	// header has told it (so the caller can size its buffer), else 0. Any other error is a protocol error: the
	// connection cannot go on. If the error is a *FrameError with CanReply set, msg holds the type and id of
	// the offending request and ErrorReply can answer it before the connection closes.
	Decode(buf []byte, msg *Message) (n int, err error)

	// SetID rewrites msg's request id in msg.Frame and in msg.ID. The proxy only passes ids that fit in 31
	// bits. It rewrites the frame in place, without allocating, whenever the new id fits where the old one
	// was. A protocol with variable-length ids (varints) may find no room: SetID then builds the rewritten
	// frame in new memory, points msg.Frame at it and leaves the old bytes untouched. Its bookkeeping in
	// Private must then describe the new frame, so that later SetID calls rewrite it in place.
	SetID(msg *Message, id uint64)

	// Encode re-encodes msg with mutation applied, appends the frame to dst, and points msg.Frame at it.
	Encode(dst []byte, msg *Message, mutation *Mutation) ([]byte, error)

	// HeartbeatReply appends the answer to the heartbeat req to dst.
	HeartbeatReply(dst []byte, req *Message) []byte

	// ErrorReply appends to dst a reply to req that a client of the protocol reads as a failure of this kind,
	// with detail as its message, and returns the status code it carries. It appends nothing, and returns
	// status 0, for a request that expects no reply.
	//
	// For streams, req is a frame of the stream: to a StreamInit the reply refuses the stream (the answer a
	// server gives when it will not serve it); to any other frame of an open stream (data, feedback, a
	// one-way close) it is a frame that aborts the stream, which decodes as StreamCloseTwoWay. The proxy uses
	// the latter on both sides, with the other side's stream id, when it ends a stream itself (its upstream
	// failed, or it was idle too long). A protocol without such frames appends nothing.
	ErrorReply(dst []byte, req *Message, kind ErrorKind, detail string) ([]byte, int32)
}

// ReplyEncoder is a Codec whose edit of a reply depends on the request it answers: a Dubbo server writes
// response attachments only to clients whose requests say they can read them, so a codec adding attachments to
// a reply must know who asked. The proxy encodes a reply's mutation with EncodeReply when the upstream codec has
// it, and with Encode otherwise.
type ReplyEncoder interface {
	// EncodeReply is Encode for resp, the reply to req. req was decoded by a codec of the same protocol (the
	// downstream connection's), and its frame is gone: only its Type, ID, Status, Private and the metadata
	// decoded eagerly remain, so the codec keeps what it needs in Private while decoding.
	EncodeReply(dst []byte, req, resp *Message, mutation *Mutation) ([]byte, error)
}

// Side is the end of the proxy a connection is on.
type Side uint8

// Sides.
const (
	// Downstream is a client's connection to the proxy: its codec reads requests and writes replies.
	Downstream Side = iota
	// Upstream is the proxy's connection to a server: its codec writes requests and reads replies.
	Upstream
)

func (s Side) String() string {
	if s == Upstream {
		return "upstream"
	}
	return "downstream"
}

// Factory makes the codecs of one configuration.
type Factory interface {
	// NewCodec returns a codec for a new connection on the given side. Most protocols mark requests and
	// replies in every frame and can ignore the side; some cannot (a bRPC reply without an error looks like a
	// request in some clients' framing), and their codecs read a frame as the side expects it.
	NewCodec(side Side) Codec
	// Properties describes what the protocol allows the proxy to do.
	Properties() Properties
}

// Chooser is a Codec that serves its connection with a codec it chose, as the sniffing codec does once a
// connection's first bytes have told it the protocol. The proxy opens upstream connections for the requests
// of such a connection with the chosen factory, so that each protocol has upstream connections of its own.
type Chooser interface {
	// Chosen returns the registered name and the factory of the codec chosen; ok is false until one is.
	Chosen() (name string, f Factory, ok bool)
}

// SniffResult is what a codec makes of the first bytes of a connection.
type SniffResult uint8

// Sniff results.
const (
	// NotMine: these bytes cannot start this protocol.
	NotMine SniffResult = iota
	// Mine: these bytes start this protocol.
	Mine
	// NeedMore: too few bytes to tell.
	NeedMore
)

// Sniffer is a Factory that recognises its protocol from the first bytes a client sends, so that a listener
// can serve several protocols on one port. Sniff must be cheap (a few byte comparisons), must not keep data,
// and must answer Mine or NotMine once it has the bytes it needs (at most 16).
type Sniffer interface {
	Sniff(data []byte) SniffResult
}

// Properties describes a protocol to the proxy.
type Properties struct {
	// Multiplexing says that replies carry their request's id, so many downstream requests can share an
	// upstream connection (with their ids rewritten). Without it the proxy sends one request at a time per
	// upstream connection.
	Multiplexing bool
}

// ErrIncomplete is returned by Decode when buf ends before the frame does.
var ErrIncomplete = errors.New("incomplete frame")

// FrameError is a frame the codec refuses.
type FrameError struct {
	// Reason says what is wrong, for logs and for the error reply.
	Reason string
	// CanReply says that the message passed to Decode holds the request's type and id, so the peer can be
	// told before the connection closes.
	CanReply bool
}

func (e *FrameError) Error() string { return e.Reason }

// Errorf returns a FrameError with a formatted reason.
func Errorf(canReply bool, format string, args ...any) *FrameError {
	return &FrameError{Reason: fmt.Sprintf(format, args...), CanReply: canReply}
}
