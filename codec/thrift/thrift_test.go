package thrift

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"maps"
	"strconv"
	"strings"
	"testing"

	athrift "github.com/apache/thrift/lib/go/thrift"

	"github.com/meltemi-mesh/meltemi/codec"
)

func newCodec(t testing.TB) *Codec {
	t.Helper()
	f, err := Registration().New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return f.NewCodec(codec.Downstream).(*Codec)
}

// decodeOne decodes a whole frame, requiring success and n == len(frame).
func decodeOne(t testing.TB, c *Codec, frame []byte) *codec.Message {
	t.Helper()
	msg := &codec.Message{}
	n, err := c.Decode(frame, msg)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if n != len(frame) || !bytes.Equal(msg.Frame, frame) {
		t.Fatalf("Decode n = %d, want %d", n, len(frame))
	}
	return msg
}

// metadata returns all of msg's metadata (THeader key/values included) as a map.
func metadata(t testing.TB, msg *codec.Message) map[string]string {
	t.Helper()
	m := map[string]string{}
	msg.Metadata.All(func(k, v string) bool {
		if _, dup := m[k]; dup {
			t.Errorf("metadata key %q twice", k)
		}
		m[k] = v
		return true
	})
	if err := msg.Metadata.Err(); err != nil {
		t.Fatalf("metadata: %v", err)
	}
	return m
}

func TestRegistration(t *testing.T) {
	reg := Registration()
	if reg.Name != "aeraki.meta_protocol.codec.thrift" || reg.Protocol != "thrift" {
		t.Fatalf("registration = %q/%q", reg.Name, reg.Protocol)
	}
	tests := []struct {
		config   string
		maxFrame int
		err      string
	}{
		{config: "", maxFrame: DefaultMaxFrameSize},
		{config: "{}", maxFrame: 16384000},
		{config: `{"maxFrameSize": 1024}`, maxFrame: 1024},
		{config: `{"maxFrameSize": 1073741823}`, maxFrame: 1073741823},
		{config: `{"maxFrameSize": 0}`, err: "maxFrameSize must be between 16 and 1073741823"},
		{config: `{"maxFrameSize": -5}`, err: "got -5"},
		{config: `{"maxFrameSize": 1073741824}`, err: "got 1073741824"},
		{config: `{"maxFrame": 10}`, err: `unknown field "maxFrame"`},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			f, err := reg.New(json.RawMessage(tt.config))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !f.Properties().Multiplexing {
				t.Error("Multiplexing = false")
			}
			if got := f.NewCodec(codec.Downstream).(*Codec).maxFrame; got != tt.maxFrame {
				t.Errorf("maxFrame = %d, want %d", got, tt.maxFrame)
			}
		})
	}
}

// msgCase is one kind of message a peer sends.
type msgCase struct {
	name   string
	typ    athrift.TMessageType
	body   athrift.TStruct
	want   codec.MessageType
	failed bool
	status int32
}

var msgCases = []msgCase{
	{name: "call", typ: athrift.CALL, body: &richArgs{text: "hello"}, want: codec.Request},
	{name: "oneway", typ: athrift.ONEWAY, body: &richArgs{text: "fire"}, want: codec.Oneway},
	{name: "reply", typ: athrift.REPLY, body: &result{field: 0, text: "ok"}, want: codec.Response},
	{name: "reply-void", typ: athrift.REPLY, body: &result{field: -1}, want: codec.Response},
	{name: "reply-declared-exception", typ: athrift.REPLY, body: &result{field: 1, text: "bad"}, want: codec.Response, failed: true},
	{name: "reply-declared-exception-20", typ: athrift.REPLY, body: &result{field: 20, text: "bad"}, want: codec.Response, failed: true},
	{name: "exception", typ: athrift.EXCEPTION, body: athrift.NewTApplicationException(athrift.INTERNAL_ERROR, "boom"),
		want: codec.Error, failed: true, status: ExceptionInternalError},
}

// headers are the THeader key/values of test messages. "method" must not replace the message's method.
var headers = map[string]string{"trace-id": "4bf92f3577b34da6", "env": "canary", "method": "spoof"}

// TestLibraryMessages checks every message kind in every transport and protocol the library writes: decoding,
// every split point, seqid rewriting, metadata rewriting and error replies, each read back by the library.
func TestLibraryMessages(t *testing.T) {
	for _, w := range wires {
		for _, mc := range msgCases {
			t.Run(w.String()+"/"+mc.name, func(t *testing.T) {
				frame := libMessage(t, w, "echo", mc.typ, 7, mc.body, headers)
				c := newCodec(t)
				msg := decodeOne(t, c, frame)
				checkDecoded(t, w, mc, msg, 7)
				checkSplits(t, w, frame)
				checkStream(t, frame)
				checkEncode(t, w, c, frame)
				checkSetID(t, w, frame)
				if mc.want == codec.Request {
					checkErrorReplies(t, w, c, frame)
				} else if reply, status := c.ErrorReply([]byte("x"), msg, codec.Timeout, "d"); string(reply) != "x" || status != 0 {
					t.Errorf("ErrorReply to a %v: %q, %d", msg.Type, reply, status)
				}
				if hb := c.HeartbeatReply([]byte("x"), msg); string(hb) != "x" {
					t.Errorf("HeartbeatReply appended %q", hb)
				}
			})
		}
	}
}

func checkDecoded(t *testing.T, w wire, mc msgCase, msg *codec.Message, seq uint64) {
	t.Helper()
	if msg.Type != mc.want || msg.ID != seq || msg.Failed != mc.failed || msg.Status != mc.status {
		t.Errorf("decoded %v id %d failed %v status %d, want %v %d %v %d",
			msg.Type, msg.ID, msg.Failed, msg.Status, mc.want, seq, mc.failed, mc.status)
	}
	want := map[string]string{"method": "echo", "thrift.method_full": "echo"}
	if w.mux != "" && (mc.typ == athrift.CALL || mc.typ == athrift.ONEWAY) {
		want["service"] = w.mux
		want["thrift.method_full"] = w.mux + ":echo"
	}
	if w.transport == "header" {
		for k, v := range headers {
			if k != "method" {
				want[k] = v
			}
		}
	}
	if got := metadata(t, msg); !maps.Equal(got, want) {
		t.Errorf("metadata = %v, want %v", got, want)
	}
}

// checkSplits decodes every prefix of frame: each is incomplete, with the frame's length once the frame
// header has told it.
func checkSplits(t *testing.T, w wire, frame []byte) {
	t.Helper()
	warm := newCodec(t)
	decodeOne(t, warm, frame)
	for i := range len(frame) {
		prefix := bytes.Clone(frame[:i])
		n, err := newCodec(t).Decode(prefix, &codec.Message{})
		want := 0
		if w.framed() && i >= 5 {
			want = len(frame)
		}
		if err != codec.ErrIncomplete || n != want {
			t.Fatalf("prefix of %d/%d bytes: n %d err %v, want n %d and ErrIncomplete", i, len(frame), n, err, want)
		}
		// A codec that has seen a framed frame sizes the next one from its four length bytes.
		n, err = warm.Decode(prefix, &codec.Message{})
		if w.framed() && i >= 4 {
			want = len(frame)
		}
		if err != codec.ErrIncomplete || n != want {
			t.Fatalf("warm codec, prefix of %d/%d bytes: n %d err %v, want n %d", i, len(frame), n, err, want)
		}
	}
}

// checkStream decodes two copies of frame back to back.
func checkStream(t *testing.T, frame []byte) {
	t.Helper()
	stream := append(bytes.Clone(frame), frame...)
	c := newCodec(t)
	for i := range 2 {
		msg := &codec.Message{}
		n, err := c.Decode(stream, msg)
		if err != nil || n != len(frame) {
			t.Fatalf("message %d of the stream: n %d err %v", i, n, err)
		}
		stream = stream[n:]
	}
}

// checkEncode: THeader key/values are rewritten and read back by the library; other transports refuse a
// mutation and copy the frame for an empty one.
func checkEncode(t *testing.T, w wire, c *Codec, frame []byte) {
	t.Helper()
	msg := decodeOne(t, c, bytes.Clone(frame))
	out, err := c.Encode([]byte("dst"), msg, &codec.Mutation{})
	if err != nil || string(out[:3]) != "dst" || !bytes.Equal(out[3:], frame) || !bytes.Equal(msg.Frame, frame) {
		t.Fatalf("empty mutation: %v", err)
	}
	mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "env", Value: "prod"}, {Key: "x-routed-by", Value: "meltemi"}},
		Remove: []string{"trace-id"}}
	out, err = c.Encode([]byte("dst"), msg, mut)
	if w.transport != "header" {
		if err == nil || !strings.Contains(err.Error(), "transport cannot carry metadata") {
			t.Fatalf("mutation on %s: %v", w.transport, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("mutation: %v", err)
	}
	if string(out[:3]) != "dst" || !bytes.Equal(msg.Frame, out[3:]) {
		t.Fatal("msg.Frame does not point at the encoded frame")
	}
	orig := libReadMessage(t, w, frame)
	got := libReadMessage(t, w, out[3:])
	want := map[string]string{"env": "prod", "x-routed-by": "meltemi", "method": "spoof"}
	if !maps.Equal(got.headers, want) || got.name != orig.name || got.seq != orig.seq || got.typ != orig.typ {
		t.Fatalf("library reads %+v, want headers %v and the message of %+v", got, want, orig)
	}
	if v, _ := msg.Metadata.Get("env"); v != "prod" {
		t.Fatalf("re-decoded env = %q", v)
	}
	if _, ok := msg.Metadata.Get("trace-id"); ok {
		t.Fatal("trace-id still there")
	}
}

// checkSetID rewrites the seqid of one message through ids of every varint length, up and down, and has the
// library read each result.
func checkSetID(t *testing.T, w wire, frame []byte) {
	t.Helper()
	c := newCodec(t)
	msg := decodeOne(t, c, bytes.Clone(frame))
	orig := libReadMessage(t, w, frame)
	for _, id := range []uint64{1, 127, 128, 300, 1 << 21, 1<<30 + 5, 0x7fffffff, 3, 0, 200} {
		c.SetID(msg, id)
		if msg.ID != id {
			t.Fatalf("msg.ID = %d after SetID(%d)", msg.ID, id)
		}
		got := libReadMessage(t, w, msg.Frame)
		if got.seq != int32(id) || got.name != orig.name || got.typ != orig.typ || !maps.Equal(got.headers, orig.headers) {
			t.Fatalf("after SetID(%d) the library reads %+v, want seqid %d and the rest of %+v", id, got, id, orig)
		}
		if w.transport == "header" {
			if h := binary.BigEndian.Uint32(msg.Frame[8:]); h != uint32(id) {
				t.Fatalf("THeader seqid %d after SetID(%d)", h, id)
			}
		}
		again := decodeOne(t, newCodec(t), msg.Frame)
		if again.ID != id {
			t.Fatalf("re-decoded id %d after SetID(%d)", again.ID, id)
		}
	}
}

// checkErrorReplies answers a call with every error kind and has the library's client read each reply.
func checkErrorReplies(t *testing.T, w wire, c *Codec, frame []byte) {
	t.Helper()
	buf := bytes.Clone(frame)
	req := decodeOne(t, c, buf)
	// ErrorReply must not need the frame: it is long gone when an upstream fails.
	for i := range buf {
		buf[i] = 0xee
	}
	req.Frame = nil
	for _, kind := range codec.ErrorKinds {
		reply, status := c.ErrorReply([]byte("dst"), req, kind, "detail for "+kind.String())
		if string(reply[:3]) != "dst" {
			t.Fatal("dst prefix overwritten")
		}
		reply = reply[3:]
		if status != ExceptionTypeOf(kind) {
			t.Errorf("%v: status %d, want %d", kind, status, ExceptionTypeOf(kind))
		}
		err := libRecv(t, w, reply, int32(req.ID), "echo")
		var ae athrift.TApplicationException
		if !errors.As(err, &ae) {
			t.Fatalf("%v: library client reads %v (%T), want a TApplicationException", kind, err, err)
		}
		wantMsg := "meltemi: " + kind.String() + ": detail for " + kind.String()
		if ae.TypeId() != status || ae.Error() != wantMsg {
			t.Errorf("%v: library reads type %d %q, want %d %q", kind, ae.TypeId(), ae.Error(), status, wantMsg)
		}
		r := decodeOne(t, newCodec(t), reply)
		if r.Type != codec.Error || !r.Failed || r.Status != status || r.ID != req.ID {
			t.Errorf("%v: reply decodes to %v failed %v status %d id %d", kind, r.Type, r.Failed, r.Status, r.ID)
		}
		if m, _ := r.Metadata.Get(KeyMethod); m != "echo" {
			t.Errorf("%v: reply method %q", kind, m)
		}
	}
}

func TestMessageTypeMapping(t *testing.T) {
	for _, tt := range []struct {
		typ  athrift.TMessageType
		want codec.MessageType
	}{{athrift.CALL, codec.Request}, {athrift.ONEWAY, codec.Oneway}, {athrift.REPLY, codec.Response}, {athrift.EXCEPTION, codec.Error}} {
		msg := decodeOne(t, newCodec(t), libMessage(t, wires[0], "m", tt.typ, 1, &result{field: -1}, nil))
		if msg.Type != tt.want || msg.Type == codec.Heartbeat {
			t.Errorf("%v decodes to %v, want %v", tt.typ, msg.Type, tt.want)
		}
	}
}

func TestNegativeSeqID(t *testing.T) {
	for _, w := range wires {
		frame := libMessage(t, w, "echo", athrift.CALL, -5, &richArgs{}, nil)
		msg := decodeOne(t, newCodec(t), frame)
		if msg.ID != uint64(uint32(0xfffffffb)) {
			t.Errorf("%v: id %#x", w, msg.ID)
		}
		c := newCodec(t)
		c.SetID(msg, 9)
		c.SetID(msg, uint64(uint32(0xfffffffb)))
		if got := libReadMessage(t, w, msg.Frame); got.seq != -5 {
			t.Errorf("%v: seqid %d after restoring -5", w, got.seq)
		}
	}
}

// TestSetIDCompactVarint pins how a compact seqid is rewritten: in place and padded when it fits, in a new
// frame with its length fixed when it does not.
func TestSetIDCompactVarint(t *testing.T) {
	w := wire{transport: "framed", proto: "compact"}
	frame := libMessage(t, w, "m", athrift.CALL, 300, &result{field: -1}, nil) // a 2-byte varint: ac 02
	c := newCodec(t)
	msg := decodeOne(t, c, frame)
	c.SetID(msg, 5)
	if &msg.Frame[0] != &frame[0] || !bytes.Equal(frame[6:8], []byte{0x85, 0x00}) {
		t.Fatalf("SetID(5) on a 2-byte seqid: % x", msg.Frame[:10])
	}
	if n := testing.AllocsPerRun(100, func() { c.SetID(msg, 77) }); n != 0 {
		t.Errorf("SetID that fits allocates %v times", n)
	}
	c.SetID(msg, 1<<20)
	if len(msg.Frame) != len(frame)+1 || binary.BigEndian.Uint32(msg.Frame) != uint32(len(frame)-3) {
		t.Fatalf("SetID(1<<20) on a 2-byte seqid: %d bytes, length %d", len(msg.Frame), binary.BigEndian.Uint32(msg.Frame))
	}
	if got := libReadMessage(t, w, msg.Frame); got.seq != 1<<20 {
		t.Fatalf("library reads seqid %d", got.seq)
	}
}

// TestKitexTTHeader decodes a Kitex TTHeader frame built by hand (no Kitex peer is light enough to add): string
// and integer key/values, an ACL token, flags; then rewrites it and its seqid.
func TestKitexTTHeader(t *testing.T) {
	payload := payloadOf(t, "binary", "Echo:echo", athrift.CALL, 42, &richArgs{text: "kitex"})
	frame := ttHeaderFrame(42, 1, [][2]string{{"RPC_TRANSIT_env", "canary"}, {"rip", "10.0.0.1"}, {"env", "a"}, {"env", "b"}},
		map[uint16]string{3: "caller.svc", 9: "echo", 100: "custom"}, "token", payload)
	c := newCodec(t)
	msg := decodeOne(t, c, frame)
	if msg.Type != codec.Request || msg.ID != 42 {
		t.Fatalf("decoded %v %d", msg.Type, msg.ID)
	}
	want := map[string]string{"method": "echo", "service": "Echo", "thrift.method_full": "Echo:echo",
		"RPC_TRANSIT_env": "canary", "rip": "10.0.0.1", "env": "b",
		"kitex.from_service": "caller.svc", "kitex.to_method": "echo", "kitex.100": "custom"}
	if got := metadata(t, msg); !maps.Equal(got, want) {
		t.Fatalf("metadata = %v, want %v", got, want)
	}
	checkSplits(t, wire{transport: "header"}, frame)

	// Mutation: string key/values are rewritten; integer key/values and the ACL token keep their bytes.
	mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "env", Value: "prod"}, {Key: "new", Value: "v"}}, Remove: []string{"rip"}}
	out, err := c.Encode(nil, msg, mut)
	if err != nil {
		t.Fatal(err)
	}
	wantOut := ttHeaderFrame(42, 1, [][2]string{{"RPC_TRANSIT_env", "canary"}, {"env", "prod"}, {"new", "v"}},
		map[uint16]string{3: "caller.svc", 9: "echo", 100: "custom"}, "token", payload)
	if !bytes.Equal(out, wantOut) {
		t.Fatalf("encoded\n% x\nwant\n% x", out, wantOut)
	}
	want["env"], want["new"] = "prod", "v"
	delete(want, "rip")
	if got := metadata(t, msg); !maps.Equal(got, want) {
		t.Fatalf("metadata after encode = %v, want %v", got, want)
	}

	// SetID rewrites the header's seqid and the payload's.
	c.SetID(msg, 1000)
	if binary.BigEndian.Uint32(msg.Frame[8:]) != 1000 || !bytes.Contains(msg.Frame, []byte{0, 0, 0x03, 0xe8}) {
		t.Fatalf("SetID: % x", msg.Frame)
	}
	if got := libReadMessage(t, wire{transport: "buffered", proto: "binary"}, msg.Frame[len(msg.Frame)-len(payload):]); got.seq != 1000 {
		t.Fatalf("payload seqid %d", got.seq)
	}

	// An error reply is a TTHeader frame with the flags echoed.
	reply, status := c.ErrorReply(nil, msg, codec.RouteNotFound, "no route")
	if status != ExceptionUnknownMethod || binary.BigEndian.Uint16(reply[4:]) != 0x1000 || binary.BigEndian.Uint16(reply[6:]) != 1 {
		t.Fatalf("reply % x status %d", reply, status)
	}
	r := decodeOne(t, newCodec(t), reply)
	if r.Type != codec.Error || r.ID != 1000 || r.Status != ExceptionUnknownMethod {
		t.Fatalf("reply decodes to %v %d %d", r.Type, r.ID, r.Status)
	}
	err = libRecv(t, wire{transport: "buffered", proto: "binary"}, reply[18:], 1000, "echo")
	var ae athrift.TApplicationException
	if !errors.As(err, &ae) || ae.TypeId() != ExceptionUnknownMethod || ae.Error() != "meltemi: route_not_found: no route" {
		t.Fatalf("library reads the payload as %v", err)
	}
}

// TestKitexTTHeaderFramed: Kitex's TTHeaderFramed transport keeps the message's own framed length inside the
// TTHeader frame. The codec reads the message after it, keeps it through a mutation, and writes it in replies.
func TestKitexTTHeaderFramed(t *testing.T) {
	payload := payloadOf(t, "binary", "echo", athrift.CALL, 7, &richArgs{text: "framed"})
	inner := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	frame := ttHeaderFrame(7, 0, [][2]string{{"RPC_TRANSIT_env", "canary"}}, nil, "", append(inner, payload...))
	c := newCodec(t)
	msg := decodeOne(t, c, frame)
	if msg.Type != codec.Request || msg.ID != 7 {
		t.Fatalf("decoded %v %d", msg.Type, msg.ID)
	}
	if got := metadata(t, msg); got["method"] != "echo" || got["RPC_TRANSIT_env"] != "canary" {
		t.Fatalf("metadata = %v", got)
	}
	checkSplits(t, wire{transport: "header"}, frame)

	out, err := c.Encode(nil, msg, &codec.Mutation{Set: []codec.KeyValue{{Key: "x-routed-by", Value: "meltemi"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(out, append(inner, payload...)) {
		t.Fatalf("the mutated frame lost the inner length:\n% x", out)
	}
	c.SetID(msg, 300)
	if got := libReadMessage(t, wire{transport: "buffered", proto: "binary"}, msg.Frame[len(msg.Frame)-len(payload):]); got.seq != 300 {
		t.Fatalf("payload seqid %d", got.seq)
	}

	reply, _ := c.ErrorReply(nil, msg, codec.RouteNotFound, "no route")
	r := decodeOne(t, newCodec(t), reply)
	if r.Type != codec.Error || r.ID != 300 || r.Status != ExceptionUnknownMethod {
		t.Fatalf("reply decodes to %v %d %d", r.Type, r.ID, r.Status)
	}
	body := reply[18:]
	if n := binary.BigEndian.Uint32(body); int(n) != len(body)-4 {
		t.Fatalf("the reply's inner length is %d for a %d-byte message", n, len(body)-4)
	}
	err = libRecv(t, wire{transport: "buffered", proto: "binary"}, body[4:], 300, "echo")
	var ae athrift.TApplicationException
	if !errors.As(err, &ae) || ae.TypeId() != ExceptionUnknownMethod {
		t.Fatalf("library reads the payload as %v", err)
	}
}

// TestTHeaderMutations covers the edge cases of rewriting key/values: none before, all removed, set then
// removed, duplicates.
func TestTHeaderMutations(t *testing.T) {
	w := wire{transport: "header", proto: "binary"}
	tests := []struct {
		name    string
		headers map[string]string
		mut     codec.Mutation
		want    map[string]string
	}{
		{name: "add to none", mut: codec.Mutation{Set: []codec.KeyValue{{Key: "a", Value: "1"}}}, want: map[string]string{"a": "1"}},
		{name: "remove all", headers: map[string]string{"a": "1", "b": "2"}, mut: codec.Mutation{Remove: []string{"a", "b"}},
			want: map[string]string{}},
		{name: "set then removed", headers: map[string]string{"a": "1"},
			mut: codec.Mutation{Set: []codec.KeyValue{{Key: "b", Value: "2"}}, Remove: []string{"b"}}, want: map[string]string{"a": "1"}},
		{name: "last set wins", headers: map[string]string{"a": "1"},
			mut:  codec.Mutation{Set: []codec.KeyValue{{Key: "a", Value: "2"}, {Key: "a", Value: "3"}, {Key: "c", Value: "x"}, {Key: "c", Value: "y"}}},
			want: map[string]string{"a": "3", "c": "y"}},
		{name: "long value", headers: map[string]string{"a": "1"},
			mut:  codec.Mutation{Set: []codec.KeyValue{{Key: "big", Value: strings.Repeat("v", 300)}}},
			want: map[string]string{"a": "1", "big": strings.Repeat("v", 300)}},
		{name: "remove absent", headers: map[string]string{"a": "1"}, mut: codec.Mutation{Remove: []string{"zz"}},
			want: map[string]string{"a": "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := libMessage(t, w, "m", athrift.CALL, 9, &richArgs{}, tt.headers)
			c := newCodec(t)
			msg := decodeOne(t, c, frame)
			out, err := c.Encode(nil, msg, &tt.mut)
			if err != nil {
				t.Fatal(err)
			}
			got := libReadMessage(t, w, out)
			if !maps.Equal(got.headers, tt.want) || got.seq != 9 || got.name != "m" {
				t.Fatalf("library reads %+v, want headers %v", got, tt.want)
			}
		})
	}
	t.Run("too big", func(t *testing.T) {
		c := newCodec(t)
		msg := decodeOne(t, c, libMessage(t, w, "m", athrift.CALL, 9, &richArgs{}, nil))
		_, err := c.Encode(nil, msg, &codec.Mutation{Set: []codec.KeyValue{{Key: "a", Value: strings.Repeat("x", 70000)}}})
		if err == nil || !strings.Contains(err.Error(), "exceeds limit 65536") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("kitex string too long", func(t *testing.T) {
		c := newCodec(t)
		msg := decodeOne(t, c, ttHeaderFrame(1, 0, nil, nil, "", payloadOf(t, "binary", "m", athrift.CALL, 1, &richArgs{})))
		_, err := c.Encode(nil, msg, &codec.Mutation{Set: []codec.KeyValue{{Key: "a", Value: strings.Repeat("x", 70000)}}})
		if err == nil || !strings.Contains(err.Error(), "exceeds 65535") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestOverLimit(t *testing.T) {
	f, err := Registration().New(json.RawMessage(`{"maxFrameSize": 1000}`))
	if err != nil {
		t.Fatal(err)
	}
	big := &richArgs{text: strings.Repeat("x", 2000)}
	for _, w := range wires {
		t.Run(w.String(), func(t *testing.T) {
			frame := libMessage(t, w, "echo", athrift.CALL, 11, big, headers)
			for _, cut := range []int{len(frame), 1100} {
				c := f.NewCodec(codec.Downstream)
				msg := &codec.Message{}
				_, err := c.Decode(frame[:cut], msg)
				var fe *codec.FrameError
				if !errors.As(err, &fe) {
					t.Fatalf("err = %v", err)
				}
				want := "thrift: frame length " + strconv.Itoa(len(frame)-4) + " exceeds limit 1000"
				if !w.framed() {
					want = "thrift: unframed message longer than limit 1000"
				}
				if fe.Reason != want {
					t.Fatalf("reason %q, want %q", fe.Reason, want)
				}
				if !fe.CanReply || msg.Type != codec.Request || msg.ID != 11 {
					t.Fatalf("CanReply %v type %v id %d", fe.CanReply, msg.Type, msg.ID)
				}
				reply, status := c.ErrorReply(nil, msg, codec.BadRequest, fe.Reason)
				if status != ExceptionProtocolError {
					t.Fatalf("status %d", status)
				}
				err = libRecv(t, w, reply, 11, "echo")
				var ae athrift.TApplicationException
				if !errors.As(err, &ae) || ae.TypeId() != ExceptionProtocolError || !strings.Contains(ae.Error(), want) {
					t.Fatalf("library reads %v", err)
				}
			}
		})
	}
	t.Run("reply over limit", func(t *testing.T) {
		frame := libMessage(t, wires[0], "echo", athrift.REPLY, 11, &result{text: strings.Repeat("x", 2000)}, nil)
		var fe *codec.FrameError
		if _, err := f.NewCodec(codec.Downstream).Decode(frame, &codec.Message{}); !errors.As(err, &fe) || fe.CanReply {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestGarbage feeds frames no Thrift peer sends: each is refused with a clear reason and no reply.
func TestGarbage(t *testing.T) {
	call := payloadOf(t, "binary", "m", athrift.CALL, 1, &result{field: -1})
	framed := func(p []byte) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(p))), p...) }
	theader := func(hdr, payload []byte) []byte {
		f := []byte{0, 0, 0, 0, 0x0f, 0xff, 0, 0, 0, 0, 0, 1}
		f = binary.BigEndian.AppendUint16(f, uint16(len(hdr)/4))
		f = append(append(f, hdr...), payload...)
		binary.BigEndian.PutUint32(f, uint32(len(f)-4))
		return f
	}
	tests := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"dubbo", []byte{0xda, 0xbb, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}, "first bytes da bb c2 00 start neither"},
		{"http", []byte("GET / HTTP/1.1\r\n"), "first bytes 47 45 54 20 start neither"},
		{"frame too long", []byte{0x01, 0x38, 0x96, 0x80, 0x80, 0x01, 0, 1}, "thrift: frame length 20485760 exceeds limit 16384000"},
		{"empty frame", []byte{0, 0, 0, 0, 0}, "thrift: empty frame"},
		{"bad binary version", framed([]byte{0x80, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0}), "bad binary protocol version 0x80020001"},
		{"bad compact version", framed([]byte{0x82, 0x22, 1, 0, 0}), "bad compact protocol version 2"},
		{"unknown message type", framed([]byte{0x80, 0x01, 0, 9, 0, 0, 0, 1, 'm', 0, 0, 0, 1, 0}), `message "m" seqid 1 has unknown type 9`},
		{"unknown protocol", framed([]byte{0x90, 0, 0, 0}), "unknown protocol: message starts with 0x90"},
		{"negative name length", framed([]byte{0x80, 0x01, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1}), "negative size -1"},
		{"header past frame", framed([]byte{0x80, 0x01, 0, 1, 0, 0, 0, 9, 'm'}), "message header runs past the end of the 9-byte frame"},
		{"unframed bad struct", append(bytes.Clone(call[:len(call)-1]), 0x07, 0, 1, 0), `message "m" seqid 1: thrift: unknown binary type 7`},
		{"zlib", theader([]byte{0, 1, 1, 0}, call), "THeader transform 1 (zlib) is not supported"},
		{"json", theader([]byte{1, 0, 0, 0}, call), "THeader protocol 1 (JSON) is not supported"},
		{"protobuf", theader([]byte{3, 0, 0, 0}, call), "THeader protocol id 3 is not a Thrift binary or compact payload"},
		{"header too big", func() []byte {
			f := theader(make([]byte, 65540), call)
			binary.BigEndian.PutUint16(f[12:], 16385)
			return f
		}(), "THeader header size 65540 exceeds limit 65536"},
		{"header past frame", func() []byte {
			f := theader([]byte{0, 0, 0, 0}, nil)
			binary.BigEndian.PutUint16(f[12:], 2)
			return f
		}(), "THeader header of 8 bytes runs past the end of the 14-byte frame"},
		{"key/values past header", theader([]byte{0, 0, 1, 5}, call), "key/value count 5 exceeds the header"},
		{"string past header", theader([]byte{0, 0, 1, 1, 9, 0, 0, 0}, call), "info blocks run past the end of the header"},
		{"protocol mismatch", theader([]byte{2, 0, 0, 0}, call), "THeader says protocol compact but the message is binary"},
		{"deep unframed", func() []byte {
			p := []byte{0x80, 0x01, 0, 1, 0, 0, 0, 1, 'm', 0, 0, 0, 1}
			for range 100 {
				p = append(p, tStruct, 0, 1)
			}
			return append(p, bytes.Repeat([]byte{0}, 101)...)
		}(), "nests deeper than 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := &codec.Message{}
			_, err := newCodec(t).Decode(tt.frame, msg)
			var fe *codec.FrameError
			if !errors.As(err, &fe) || !strings.Contains(fe.Reason, tt.want) || !strings.HasPrefix(fe.Reason, "thrift: ") {
				t.Fatalf("err = %v, want a FrameError containing %q", err, tt.want)
			}
			if fe.CanReply {
				t.Fatal("CanReply on garbage")
			}
		})
	}
}

// TestTHeaderOpaqueInfo keeps an info block the codec does not know, as the Apache library ignores it.
func TestTHeaderOpaqueInfo(t *testing.T) {
	call := payloadOf(t, "binary", "m", athrift.CALL, 1, &result{field: -1})
	hdr := []byte{0, 0, 1, 1, 1, 'k', 1, 'v', 7, 0xaa, 0xbb, 0} // KEYVALUE{k: v}, then id 7 with opaque bytes
	f := []byte{0, 0, 0, 0, 0x0f, 0xff, 0, 0, 0, 0, 0, 1}
	f = binary.BigEndian.AppendUint16(f, uint16(len(hdr)/4))
	f = append(append(f, hdr...), call...)
	binary.BigEndian.PutUint32(f, uint32(len(f)-4))
	c := newCodec(t)
	msg := decodeOne(t, c, f)
	if v, _ := msg.Metadata.Get("k"); v != "v" {
		t.Fatalf("k = %q (%v)", v, msg.Metadata.Err())
	}
	out, err := c.Encode(nil, msg, &codec.Mutation{Set: []codec.KeyValue{{Key: "k", Value: "w"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte{1, 1, 1, 'k', 1, 'w', 7, 0xaa, 0xbb}) {
		t.Fatalf("encoded % x", out)
	}
	if got := libReadMessage(t, wire{transport: "header", proto: "binary"}, out); got.headers["k"] != "w" {
		t.Fatalf("library reads %+v", got)
	}
}

func TestSniff(t *testing.T) {
	f, _ := Registration().New(nil)
	sn := f.(codec.Sniffer)
	for _, w := range wires {
		frame := libMessage(t, w, "echo", athrift.CALL, 1, &richArgs{}, headers)
		got := sn.Sniff(frame[:min(16, len(frame))])
		if got != codec.Mine {
			t.Errorf("%v: %v, want Mine", w, got)
		}
		// Never Mine on fewer bytes than a decision needs, never NotMine before it has them.
		for i := range min(16, len(frame)) {
			if r := sn.Sniff(frame[:i]); r != codec.NeedMore && r != got {
				t.Errorf("%v: %d bytes sniff %v, then %v", w, i, r, got)
			}
		}
	}
	kitex := ttHeaderFrame(1, 0, nil, nil, "", payloadOf(t, "binary", "m", athrift.CALL, 1, &richArgs{}))
	for _, tt := range []struct {
		name string
		data []byte
		want codec.SniffResult
	}{
		{"kitex", kitex[:16], codec.Mine},
		{"dubbo", []byte{0xda, 0xbb, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}, codec.NotMine},
		{"http", []byte("GET / HTTP/1.1\r\n"), codec.NotMine},
		{"tls", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}, codec.NotMine},
		{"brpc", []byte("PRPC\x00\x00\x00\x10\x00\x00\x00\x08"), codec.NotMine},
		{"trpc", []byte{0x09, 0x30, 0, 0, 0, 0, 0, 0x20, 0, 0x10, 0, 0, 0, 1, 0, 0}, codec.NotMine},
		{"kafka", []byte{0, 0, 0, 0x2a, 0, 0x12, 0, 3, 0, 0, 0, 1}, codec.NotMine},
		{"redis", []byte("*2\r\n$3\r\nGET\r\n"), codec.NotMine},
		{"kafka produce", []byte{0, 0, 0, 0x40, 0, 0, 0, 9, 0, 0, 0, 1, 0, 6, 'c', 'l'}, codec.NotMine},
		{"old binary, long name", append([]byte{0, 0, 0, 40}, "averyveryverylongmethodname"...), codec.Mine},
		{"old binary, name not an identifier", []byte{0, 0, 0, 4, 'a', ' ', 'b', 'c', 1, 0, 0, 0, 1}, codec.NotMine},
		{"old binary, bad type", []byte{0, 0, 0, 2, 'a', 'b', 9, 0, 0, 0, 1}, codec.NotMine},
		{"compact bad type", []byte{0x82, 0xa1}, codec.NotMine},
		{"binary bad type", []byte{0x80, 0x01, 0x00, 0x07}, codec.NotMine},
		{"binary bad version", []byte{0x80, 0x02}, codec.NotMine},
		{"empty", nil, codec.NeedMore},
		{"framed short", []byte{0, 0, 0, 20}, codec.NeedMore},
	} {
		if got := sn.Sniff(tt.data); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestMixedTransports decodes replies of every framed kind on one codec, as an upstream connection shared by
// clients of different transports carries them; each error reply follows its own request's transport.
func TestMixedTransports(t *testing.T) {
	c := newCodec(t)
	var stream []byte
	var want []wire
	for _, w := range wires {
		if w.framed() {
			stream = append(stream, libMessage(t, w, "echo", athrift.REPLY, int32(len(want)), &result{text: "ok"}, headers)...)
			want = append(want, w)
		}
	}
	for i, w := range want {
		msg := &codec.Message{}
		n, err := c.Decode(stream, msg)
		if err != nil || msg.Type != codec.Response || msg.ID != uint64(i) {
			t.Fatalf("%v: %v %d: %v", w, msg.Type, msg.ID, err)
		}
		stream = stream[n:]
	}
	for _, w := range wires {
		req := decodeOne(t, c, libMessage(t, w, "echo", athrift.CALL, 3, &richArgs{}, nil))
		reply, _ := c.ErrorReply(nil, req, codec.Timeout, "slow")
		var ae athrift.TApplicationException
		if err := libRecv(t, w, reply, 3, "echo"); !errors.As(err, &ae) || ae.TypeId() != ExceptionInternalError {
			t.Fatalf("%v: library reads %v", w, err)
		}
	}
}
