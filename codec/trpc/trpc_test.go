package trpc

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meltemi-mesh/meltemi/codec"
)

// newCodec returns a codec that tells requests from responses by their headers, reading both.
func newCodec(t testing.TB) *Codec {
	t.Helper()
	f, err := Registration().New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := f.NewCodec(codec.Downstream).(*Codec)
	c.side = sideInfer
	return c
}

// decodeOne decodes a whole frame, requiring success and n == len(frame).
func decodeOne(t testing.TB, c *Codec, frame []byte) *codec.Message {
	t.Helper()
	msg := &codec.Message{}
	n, err := c.Decode(frame, msg)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if n != len(frame) {
		t.Fatalf("Decode n = %d, want %d", n, len(frame))
	}
	return msg
}

// metadata returns all of msg's metadata (trans_info included) as a map.
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
	if reg.Name != "aeraki.meta_protocol.codec.trpc" || reg.Protocol != "trpc" {
		t.Fatalf("registration = %q/%q", reg.Name, reg.Protocol)
	}
	tests := []struct {
		config   string
		maxFrame int
		err      string
	}{
		{config: "", maxFrame: DefaultMaxFrameSize},
		{config: "{}", maxFrame: 10485760},
		{config: `{"maxFrameSize": 1024}`, maxFrame: 1024},
		{config: `{"maxFrameSize": 16}`, maxFrame: 16},
		{config: `{"maxFrameSize": 15}`, err: "maxFrameSize must be between 16 (the fixed header) and 2147483647, got 15"},
		{config: `{"maxFrameSize": -1}`, err: "got -1"},
		{config: `{"maxFrameSize": 4294967296}`, err: "got 4294967296"},
		{config: `{"maxFrameSize": "1k"}`, err: "maxFrameSize"},
		{config: `{"maxBodySize": 10}`, err: `unknown field "maxBodySize"`},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			f, err := reg.New(json.RawMessage(tt.config))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.HasPrefix(err.Error(), Name+": ") {
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

func TestSniff(t *testing.T) {
	f, _ := Registration().New(nil)
	s := f.(codec.Sniffer)
	tests := []struct {
		data string
		want codec.SniffResult
	}{
		{"", codec.NeedMore},
		{"\x09", codec.NeedMore},
		{"\x09\x30", codec.NeedMore},
		{"\x09\x30\x00", codec.Mine},
		{"\x09\x30\x01\x01", codec.Mine},
		{"\x09\x30\x02", codec.NotMine},
		{"\x0a", codec.NotMine},
		{"\x09\x31", codec.NotMine},
		{"\xda\xbb\xc2\x00", codec.NotMine},
		{"GET / HTTP/1.1\r\n", codec.NotMine},
	}
	for _, tt := range tests {
		if got := s.Sniff([]byte(tt.data)); got != tt.want {
			t.Errorf("Sniff(%q) = %v, want %v", tt.data, got, tt.want)
		}
	}
	for _, name := range goldenNames(t) {
		if got := s.Sniff(golden(t, name)); got != codec.Mine {
			t.Errorf("Sniff(%s) = %v", name, got)
		}
	}
}

// TestGoldenFrames decodes frames tRPC-Go v1.0.3 wrote, each with a new codec that knows nothing of its side.
func TestGoldenFrames(t *testing.T) {
	tests := []struct {
		name   string
		typ    codec.MessageType
		id     uint64
		status int32
		failed bool
		md     map[string]string
	}{
		{name: "request", typ: codec.Request, id: 1, md: map[string]string{"caller": "trpc.test.client.service",
			"callee": "trpc.test.echo.Echo", "func": "/trpc.test.echo.Echo/Say", "env": "canary", "x-trace": "t-1"}},
		{name: "oneway", typ: codec.Oneway, id: 2, md: map[string]string{"caller": "trpc.test.client.service",
			"callee": "trpc.test.echo.Echo", "func": "/trpc.test.echo.Echo/Say", "env": "canary", "x-trace": "t-1"}},
		{name: "request-bare", typ: codec.Request, id: 3, md: map[string]string{"caller": "trpc.test.client.service",
			"func": "/trpc.test.echo.Echo/Say"}},
		{name: "response", typ: codec.Response, id: 1, md: map[string]string{"rsp-key": "rsp-value"}},
		// ResponseProtocol with ret 0 and func_ret 10042: the client reports the business code.
		{name: "response-business-error", typ: codec.Response, id: 1, status: 10042, failed: true,
			md: map[string]string{"env": "canary", "x-trace": "t-1"}},
		{name: "response-framework-error", typ: codec.Response, id: 1, status: 22, failed: true,
			md: map[string]string{"env": "canary", "x-trace": "t-1"}},
		// A header holding only request_id fits both messages; a codec that has seen nothing reads a response.
		{name: "response-bare", typ: codec.Response, id: 3, md: map[string]string{}},
		{name: "stream-init", typ: codec.StreamInit, id: 5, md: map[string]string{"caller": "trpc.test.client.service",
			"callee": "trpc.test.echo.Echo", "func": "/trpc.test.echo.Echo/Say", "env": "canary"}},
		{name: "stream-init-response", typ: codec.StreamInit, id: 5, md: map[string]string{}},
		{name: "stream-data", typ: codec.StreamData, id: 5, md: map[string]string{}},
		{name: "stream-feedback", typ: codec.StreamFeedback, id: 5, md: map[string]string{}},
		{name: "stream-close", typ: codec.StreamCloseOneWay, id: 5, md: map[string]string{}},
		{name: "stream-reset", typ: codec.StreamCloseTwoWay, id: 5, status: 31, failed: true, md: map[string]string{}},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		seen[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			frame := golden(t, tt.name)
			msg := decodeOne(t, newCodec(t), frame)
			if msg.Type != tt.typ || msg.ID != tt.id || msg.Status != tt.status || msg.Failed != tt.failed {
				t.Fatalf("decoded %v id %d status %d failed %v, want %v id %d status %d failed %v",
					msg.Type, msg.ID, msg.Status, msg.Failed, tt.typ, tt.id, tt.status, tt.failed)
			}
			if !bytes.Equal(msg.Frame, frame) {
				t.Fatal("Frame is not the input")
			}
			if got := metadata(t, msg); !maps.Equal(got, tt.md) {
				t.Fatalf("metadata %q, want %q", got, tt.md)
			}
		})
	}
	for _, name := range goldenNames(t) {
		if !seen[name] {
			t.Errorf("golden frame %s is not checked", name)
		}
	}
}

// request builds a unary request frame from RequestProtocol fields.
func request(t testing.TB, id uint32, values fields, body, attachment []byte) []byte {
	t.Helper()
	v := fields{"request_id": int(id)}
	maps.Copy(v, values)
	if len(attachment) > 0 {
		v["attachment_size"] = len(attachment)
	}
	return unaryFrame(id, build(t, "RequestProtocol", v), body, attachment)
}

// response builds a unary response frame from ResponseProtocol fields.
func response(t testing.TB, id uint32, values fields, body []byte) []byte {
	t.Helper()
	v := fields{"request_id": int(id)}
	maps.Copy(v, values)
	return unaryFrame(id, build(t, "ResponseProtocol", v), body, nil)
}

// routed are the RequestProtocol fields of a typical call.
var routed = fields{"caller": "trpc.app.client.service", "callee": "trpc.app.echo.Echo", "func": "/trpc.app.echo.Echo/Say",
	"timeout": 1000, "content_type": 0}

func TestDecodeSpecFrames(t *testing.T) {
	withTrans := maps.Clone(routed)
	withTrans["trans_info"] = map[string]string{"env": "canary", "bin": "\x00\xff\x10", "long": strings.Repeat("v", 200)}
	tests := []struct {
		name   string
		frame  func(t testing.TB) []byte
		typ    codec.MessageType
		id     uint64
		status int32
		failed bool
		md     map[string]string
	}{{
		name:  "request with trans_info",
		frame: func(t testing.TB) []byte { return request(t, 77, withTrans, []byte("body"), nil) },
		typ:   codec.Request, id: 77,
		md: map[string]string{"caller": "trpc.app.client.service", "callee": "trpc.app.echo.Echo",
			"func": "/trpc.app.echo.Echo/Say", "env": "canary", "bin": "\x00\xff\x10", "long": strings.Repeat("v", 200)},
	}, {
		name: "oneway with attachment",
		frame: func(t testing.TB) []byte {
			v := maps.Clone(routed)
			v["call_type"] = 1
			return request(t, 1<<31+5, v, []byte("body"), []byte("attachment"))
		},
		typ: codec.Oneway, id: 1<<31 + 5,
		md: map[string]string{"caller": "trpc.app.client.service", "callee": "trpc.app.echo.Echo", "func": "/trpc.app.echo.Echo/Say"},
	}, {
		name:  "request with only func",
		frame: func(t testing.TB) []byte { return request(t, 9, fields{"func": "/a.B/C"}, nil, nil) },
		typ:   codec.Request, id: 9, md: map[string]string{"func": "/a.B/C"},
	}, {
		name: "response ret",
		frame: func(t testing.TB) []byte {
			return response(t, 4, fields{"ret": 21, "error_msg": "timeout", "content_type": 2}, nil)
		},
		typ: codec.Response, id: 4, status: 21, failed: true, md: map[string]string{},
	}, {
		name: "response ret and func_ret: ret wins",
		frame: func(t testing.TB) []byte {
			return response(t, 4, fields{"ret": 31, "func_ret": 5}, nil)
		},
		typ: codec.Response, id: 4, status: 31, failed: true, md: map[string]string{},
	}, {
		name: "response negative func_ret",
		frame: func(t testing.TB) []byte {
			return response(t, 4, fields{"func_ret": -3, "trans_info": map[string]string{"k": "v"}}, []byte("x"))
		},
		typ: codec.Response, id: 4, status: -3, failed: true, md: map[string]string{"k": "v"},
	}, {
		name: "response negative ret alone",
		frame: func(t testing.TB) []byte {
			return response(t, 4, fields{"ret": -1, "message_type": 1}, nil)
		},
		typ: codec.Response, id: 4, status: -1, failed: true, md: map[string]string{},
	}, {
		name: "trans_info key named like a header key does not replace it, duplicates keep the last value",
		frame: func(t testing.TB) []byte {
			h := build(t, "RequestProtocol", fields{"request_id": 3, "func": "/a.B/C", "caller": "me"})
			h = appendTestEntry(h, 9, "func", "/evil.X/Y")
			h = appendTestEntry(h, 9, "callee", "from-trans-info")
			h = appendTestEntry(h, 9, "k", "first")
			h = appendTestEntry(h, 9, "k", "last")
			return unaryFrame(3, h, nil, nil)
		},
		typ: codec.Request, id: 3,
		md: map[string]string{"func": "/a.B/C", "caller": "me", "callee": "from-trans-info", "k": "last"},
	}, {
		name: "request_id from the protocol header, not the fixed header",
		frame: func(t testing.TB) []byte {
			return unaryFrame(0, build(t, "RequestProtocol", fields{"request_id": 12, "func": "/a.B/C"}), nil, nil)
		},
		typ: codec.Request, id: 12, md: map[string]string{"func": "/a.B/C"},
	}, {
		name: "unknown fields and a non-minimal varint",
		frame: func(t testing.TB) []byte {
			h := protowire.AppendTag(nil, 3, protowire.VarintType)
			h = append(h, 0x85, 0x80, 0x80, 0x00) // 5 in four bytes
			h = protowire.AppendTag(h, 7, protowire.BytesType)
			h = protowire.AppendString(h, "/a.B/C")
			h = protowire.AppendTag(h, 99, protowire.Fixed64Type)
			h = protowire.AppendFixed64(h, 1)
			h = protowire.AppendTag(h, 100, protowire.StartGroupType)
			h = protowire.AppendTag(h, 1, protowire.VarintType)
			h = protowire.AppendVarint(h, 1)
			h = protowire.AppendTag(h, 100, protowire.EndGroupType)
			return unaryFrame(5, h, nil, nil)
		},
		typ: codec.Request, id: 5, md: map[string]string{"func": "/a.B/C"},
	}, {
		name: "stream init with merged request metas",
		frame: func(t testing.TB) []byte {
			m := build(t, "TrpcStreamInitMeta", fields{"request_meta": fields{"caller": "a", "func": "/x.Y/Z",
				"trans_info": map[string]string{"k1": "v1"}}, "init_window_size": 100})
			m = append(m, build(t, "TrpcStreamInitMeta", fields{"request_meta": fields{"callee": "b",
				"trans_info": map[string]string{"k2": "v2"}}})...)
			return streamFrame(1, 40, m)
		},
		typ: codec.StreamInit, id: 40,
		md: map[string]string{"caller": "a", "callee": "b", "func": "/x.Y/Z", "k1": "v1", "k2": "v2"},
	}, {
		name: "stream init response with an error",
		frame: func(t testing.TB) []byte {
			return streamFrame(1, 41, build(t, "TrpcStreamInitMeta", fields{"response_meta": fields{"ret": 12, "error_msg": "no func"}}))
		},
		typ: codec.StreamInit, id: 41, status: 12, failed: true, md: map[string]string{},
	}, {
		name: "stream close with ret and trans_info",
		frame: func(t testing.TB) []byte {
			return streamFrame(4, 42, build(t, "TrpcStreamCloseMeta", fields{"ret": 0, "func_ret": 7,
				"trans_info": map[string]string{"k": "v"}}))
		},
		typ: codec.StreamCloseOneWay, id: 42, status: 7, failed: true, md: map[string]string{"k": "v"},
	}, {
		name:  "stream data with a protocol header size, which streams ignore",
		frame: func(t testing.TB) []byte { f := streamFrame(2, 43, []byte("data")); f[9] = 3; return f },
		typ:   codec.StreamData, id: 43, md: map[string]string{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := decodeOne(t, newCodec(t), tt.frame(t))
			if msg.Type != tt.typ || msg.ID != tt.id || msg.Status != tt.status || msg.Failed != tt.failed {
				t.Fatalf("decoded %v id %d status %d failed %v, want %v id %d status %d failed %v",
					msg.Type, msg.ID, msg.Status, msg.Failed, tt.typ, tt.id, tt.status, tt.failed)
			}
			if got := metadata(t, msg); !maps.Equal(got, tt.md) {
				t.Fatalf("metadata %q, want %q", got, tt.md)
			}
		})
	}
}

// appendTestEntry appends a map<string, bytes> entry as field num.
func appendTestEntry(b []byte, num protowire.Number, k, v string) []byte {
	var e []byte
	e = protowire.AppendTag(e, 1, protowire.BytesType)
	e = protowire.AppendString(e, k)
	e = protowire.AppendTag(e, 2, protowire.BytesType)
	e = protowire.AppendString(e, v)
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, e)
}

// TestSides checks how unary headers are told apart: by the side when it is set, else by wire types where the
// two messages differ, and as a response when nothing tells.
func TestSides(t *testing.T) {
	bareReq := unaryFrame(1, build(t, "RequestProtocol", fields{"request_id": 1, "callee": "x", "timeout": 5}), nil, nil)
	// Both readings fit: callee or error_msg, timeout or ret.
	if p := parse(t, "ResponseProtocol", protoHeader(bareReq)); p.int("ret") != 5 || p.str("error_msg") != "x" {
		t.Fatal("the bare header is not a valid response too")
	}
	req := request(t, 2, routed, nil, nil)
	rsp := response(t, 3, fields{"func_ret": 1}, nil)
	conflicting := unaryFrame(4, func() []byte {
		h := build(t, "RequestProtocol", fields{"request_id": 4, "caller": "c"})
		return appendTestVarint(h, 5, 9) // func_ret as well: both messages see an unknown field
	}(), nil, nil)
	tests := []struct {
		name   string
		side   side
		frames [][]byte
		want   []codec.MessageType
	}{
		{"fits both: a response", sideInfer, [][]byte{bareReq}, []codec.MessageType{codec.Response}},
		{"nothing learnt from earlier frames", sideInfer, [][]byte{req, bareReq}, []codec.MessageType{codec.Request, codec.Response}},
		{"clear frames decide for themselves", sideInfer, [][]byte{req, rsp, req}, []codec.MessageType{codec.Request, codec.Response, codec.Request}},
		{"conflicting: a response", sideInfer, [][]byte{req, conflicting}, []codec.MessageType{codec.Request, codec.Response}},
		{"downstream reads requests", sideDownstream, [][]byte{bareReq, rsp, conflicting}, []codec.MessageType{codec.Request, codec.Request, codec.Request}},
		{"upstream reads responses", sideUpstream, [][]byte{req, bareReq}, []codec.MessageType{codec.Response, codec.Response}},
		{"a bare init follows the side", sideUpstream, [][]byte{streamFrame(1, 1, nil)}, []codec.MessageType{codec.StreamInit}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCodec(t)
			c.side = tt.side
			for i, f := range tt.frames {
				if got := decodeOne(t, c, f).Type; got != tt.want[i] {
					t.Fatalf("frame %d decodes to %v, want %v", i, got, tt.want[i])
				}
			}
		})
	}
	// A bare INIT on an upstream codec is a response INIT: no error reply is written for it.
	c := newCodec(t)
	c.side = sideUpstream
	if reply, _ := c.ErrorReply(nil, decodeOne(t, c, streamFrame(1, 1, nil)), codec.RouteNotFound, ""); len(reply) != 0 {
		t.Fatal("error reply to a server's INIT")
	}
	c = newCodec(t)
	if reply, _ := c.ErrorReply(nil, decodeOne(t, c, streamFrame(1, 1, nil)), codec.RouteNotFound, ""); len(reply) == 0 {
		t.Fatal("no error reply to a bare INIT on a new codec")
	}
}

func appendTestVarint(b []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

// TestSplitPoints feeds every prefix of each frame: ErrIncomplete, with n the frame length once the fixed
// header is in, and the frame when it is whole, even with the next frame behind it.
func TestSplitPoints(t *testing.T) {
	frames := map[string][]byte{"spec request": request(t, 1, routed, []byte("body"), []byte("att"))}
	for _, name := range goldenNames(t) {
		frames[name] = golden(t, name)
	}
	for name, frame := range frames {
		t.Run(name, func(t *testing.T) {
			c := newCodec(t)
			for i := range len(frame) {
				msg := &codec.Message{}
				n, err := c.Decode(frame[:i], msg)
				want := len(frame)
				if i < headerLen {
					want = 0
				}
				if !errors.Is(err, codec.ErrIncomplete) || n != want {
					t.Fatalf("prefix %d: n %d, %v; want %d, ErrIncomplete", i, n, err, want)
				}
			}
			two := append(bytes.Clone(frame), frame...)
			msg := &codec.Message{}
			if n, err := c.Decode(two, msg); err != nil || n != len(frame) || len(msg.Frame) != len(frame) || cap(msg.Frame) != len(frame) {
				t.Fatalf("two frames: n %d, %v, frame %d/%d", n, err, len(msg.Frame), cap(msg.Frame))
			}
		})
	}
}

// TestSetID rewrites ids of every length into ids of every length and checks both copies with protobuf.
func TestSetID(t *testing.T) {
	ids := []uint32{0, 1, 127, 128, 16383, 16384, 1<<21 - 1, 1 << 21, 1<<28 - 1, 1 << 28, 1<<31 - 1}
	for _, from := range ids {
		for _, to := range ids {
			frame := request(t, from, withTrans(routed), []byte("body"), []byte("attachment"))
			c := newCodec(t)
			msg := decodeOne(t, c, bytes.Clone(frame))
			before := &msg.Frame[0]
			c.SetID(msg, uint64(to))
			fits := protowire.SizeVarint(uint64(from)) >= protowire.SizeVarint(uint64(to)) && from != 0
			if inPlace := &msg.Frame[0] == before; inPlace != (fits || from == 0 && to == 0) {
				t.Fatalf("%d to %d: in place %v", from, to, inPlace)
			}
			checkRewritten(t, frame, msg, uint64(to), codec.Request)
		}
	}
	t.Run("response", func(t *testing.T) {
		frame := response(t, 5, fields{"ret": 21, "trans_info": map[string]string{"k": "v"}}, []byte("x"))
		for _, to := range []uint32{6, 1 << 20} {
			c := newCodec(t)
			msg := decodeOne(t, c, bytes.Clone(frame))
			c.SetID(msg, uint64(to))
			checkRewritten(t, frame, msg, uint64(to), codec.Response)
		}
	})
	t.Run("grow then shrink", func(t *testing.T) {
		frame := request(t, 3, routed, []byte("body"), nil)
		c := newCodec(t)
		msg := decodeOne(t, c, bytes.Clone(frame))
		c.SetID(msg, 1<<30)
		grown := &msg.Frame[0]
		c.SetID(msg, 2)
		if &msg.Frame[0] != grown {
			t.Fatal("the second id was not written in place")
		}
		checkRewritten(t, frame, msg, 2, codec.Request)
	})
	t.Run("streams", func(t *testing.T) {
		for _, name := range []string{"stream-init", "stream-data", "stream-feedback", "stream-close", "stream-init-response"} {
			frame := golden(t, name)
			c := newCodec(t)
			msg := decodeOne(t, c, bytes.Clone(frame))
			c.SetID(msg, 123456)
			if binary.BigEndian.Uint32(msg.Frame[10:14]) != 123456 || msg.ID != 123456 ||
				!bytes.Equal(msg.Frame[14:], frame[14:]) || !bytes.Equal(msg.Frame[:10], frame[:10]) {
				t.Fatalf("%s: stream id not rewritten alone", name)
			}
			if again := decodeOne(t, newCodec(t), msg.Frame); again.ID != 123456 || again.Type != msg.Type {
				t.Fatalf("%s re-decodes to %v %d", name, again.Type, again.ID)
			}
		}
	})
	t.Run("a header at the size limit cannot grow", func(t *testing.T) {
		h := build(t, "RequestProtocol", fields{"request_id": 1, "func": "/a.B/C"})
		// A callee that fills the header to its limit: a tag byte, a three-byte length, the name.
		h = protowire.AppendTag(h, 6, protowire.BytesType)
		h = protowire.AppendString(h, strings.Repeat("c", maxProtoHeader-len(h)-3))
		if len(h) != maxProtoHeader {
			t.Fatalf("header of %d bytes", len(h))
		}
		frame := unaryFrame(1, h, nil, nil)
		c := newCodec(t)
		msg := decodeOne(t, c, frame)
		c.SetID(msg, 1<<20)
		if msg.ID != 1<<20 || binary.BigEndian.Uint32(msg.Frame[10:14]) != 1<<20 {
			t.Fatal("fixed header id not rewritten")
		}
		checkSizes(t, msg.Frame)
	})
}

// withTrans adds trans_info to request fields.
func withTrans(v fields) fields {
	v = maps.Clone(v)
	v["trans_info"] = map[string]string{"env": "canary", "trace": "t-1"}
	return v
}

// checkRewritten checks a frame after SetID against the original: both ids, sizes, every other field, body
// and attachment.
func checkRewritten(t *testing.T, orig []byte, msg *codec.Message, id uint64, typ codec.MessageType) {
	t.Helper()
	checkSizes(t, msg.Frame)
	name := "RequestProtocol"
	if typ == codec.Response {
		name = "ResponseProtocol"
	}
	got, want := parse(t, name, protoHeader(msg.Frame)), parse(t, name, protoHeader(orig))
	if uint64(got.int("request_id")) != id || uint64(binary.BigEndian.Uint32(msg.Frame[10:14])) != id || msg.ID != id {
		t.Fatalf("ids after SetID(%d): header %d, fixed %d, msg %d", id, got.int("request_id"),
			binary.BigEndian.Uint32(msg.Frame[10:14]), msg.ID)
	}
	want.m.Set(want.field("request_id"), got.m.Get(got.field("request_id")))
	if !protoEqual(got, want) {
		t.Fatalf("SetID(%d) changed other fields", id)
	}
	if tail := orig[16+len(protoHeader(orig)):]; !bytes.Equal(msg.Frame[len(msg.Frame)-len(tail):], tail) {
		t.Fatal("body or attachment changed")
	}
	c := newCodec(t)
	if typ == codec.Request {
		c.side = sideDownstream
	}
	again := decodeOne(t, c, msg.Frame)
	if again.ID != id || again.Type != typ {
		t.Fatalf("re-decodes to %v %d", again.Type, again.ID)
	}
	if typ == codec.Request && !maps.Equal(metadata(t, again), metadata(t, decodeOne(t, newCodec(t), orig))) {
		t.Fatal("metadata changed")
	}
}

func TestEncodeMutation(t *testing.T) {
	reqFrame := request(t, 8, withTrans(routed), []byte("body"), []byte("attachment"))
	tests := []struct {
		name  string
		frame []byte
		msg   string // the message that holds trans_info
		mut   codec.Mutation
		want  map[string]string
	}{{
		name: "set new, replace, remove", frame: reqFrame, msg: "RequestProtocol",
		mut:  codec.Mutation{Set: []codec.KeyValue{{Key: "x-new", Value: "n"}, {Key: "env", Value: "prod"}}, Remove: []string{"trace"}},
		want: map[string]string{"env": "prod", "x-new": "n"},
	}, {
		name: "last set wins, remove after set", frame: reqFrame, msg: "RequestProtocol",
		mut: codec.Mutation{Set: []codec.KeyValue{{Key: "a", Value: "1"}, {Key: "a", Value: "2"}, {Key: "gone", Value: "x"}},
			Remove: []string{"gone", "absent"}},
		want: map[string]string{"env": "canary", "trace": "t-1", "a": "2"},
	}, {
		name: "binary and empty values", frame: reqFrame, msg: "RequestProtocol",
		mut:  codec.Mutation{Set: []codec.KeyValue{{Key: "bin", Value: "\x00\x01"}, {Key: "empty", Value: ""}}},
		want: map[string]string{"env": "canary", "trace": "t-1", "bin": "\x00\x01", "empty": ""},
	}, {
		name: "request without trans_info", frame: request(t, 9, routed, nil, nil), msg: "RequestProtocol",
		mut:  codec.Mutation{Set: []codec.KeyValue{{Key: "k", Value: "v"}}},
		want: map[string]string{"k": "v"},
	}, {
		name: "response", frame: golden(t, "response"), msg: "ResponseProtocol",
		mut:  codec.Mutation{Set: []codec.KeyValue{{Key: "x-served-by", Value: "meltemi"}}, Remove: []string{"rsp-key"}},
		want: map[string]string{"x-served-by": "meltemi"},
	}, {
		name: "real request", frame: golden(t, "request"), msg: "RequestProtocol",
		mut:  codec.Mutation{Set: []codec.KeyValue{{Key: "env", Value: "prod"}}},
		want: map[string]string{"env": "prod", "x-trace": "t-1"},
	}, {
		name: "stream init", frame: golden(t, "stream-init"), msg: "TrpcStreamInitMeta",
		mut:  codec.Mutation{Set: []codec.KeyValue{{Key: "x-new", Value: "n"}}, Remove: []string{"env"}},
		want: map[string]string{"x-new": "n"},
	}, {
		name: "stream close", frame: golden(t, "stream-reset"), msg: "TrpcStreamCloseMeta",
		mut:  codec.Mutation{Set: []codec.KeyValue{{Key: "k", Value: "v"}}},
		want: map[string]string{"k": "v"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCodec(t)
			msg := decodeOne(t, c, bytes.Clone(tt.frame))
			typ, id := msg.Type, msg.ID
			out, err := c.Encode([]byte("dst"), msg, &tt.mut)
			if err != nil {
				t.Fatal(err)
			}
			if string(out[:3]) != "dst" || !bytes.Equal(msg.Frame, out[3:]) {
				t.Fatal("dst prefix or msg.Frame wrong")
			}
			frame := out[3:]
			checkSizes(t, frame)
			// The message now describes the new frame, its metadata included.
			if msg.Type != typ || msg.ID != id {
				t.Fatalf("msg became %v %d", msg.Type, msg.ID)
			}
			md := metadata(t, msg)
			for k, v := range tt.want {
				if md[k] != v {
					t.Fatalf("msg metadata %q, want %q", md, tt.want)
				}
			}
			var got, orig parsed
			if typ == codec.Request || typ == codec.Response {
				got, orig = parse(t, tt.msg, protoHeader(frame)), parse(t, tt.msg, protoHeader(tt.frame))
				tail := tt.frame[16+len(protoHeader(tt.frame)):]
				if !bytes.Equal(frame[16+len(protoHeader(frame)):], tail) {
					t.Fatal("body or attachment changed")
				}
			} else {
				got, orig = parse(t, tt.msg, frame[16:]), parse(t, tt.msg, tt.frame[16:])
			}
			holder, origHolder := got, orig
			if tt.msg == "TrpcStreamInitMeta" {
				holder, origHolder = got.sub("request_meta"), orig.sub("request_meta")
			}
			if tr := holder.trans(); !maps.Equal(tr, tt.want) {
				t.Fatalf("trans_info %q, want %q", tr, tt.want)
			}
			holder.m.Clear(holder.field("trans_info"))
			origHolder.m.Clear(origHolder.field("trans_info"))
			if !protoEqual(got, orig) {
				t.Fatal("fields other than trans_info changed")
			}
		})
	}
}

func TestEncodeRefuses(t *testing.T) {
	set := &codec.Mutation{Set: []codec.KeyValue{{Key: "k", Value: "v"}}}
	for _, name := range []string{"stream-data", "stream-feedback", "stream-init-response"} {
		c := newCodec(t)
		msg := decodeOne(t, c, golden(t, name))
		if _, err := c.Encode(nil, msg, set); err == nil || !strings.Contains(err.Error(), "carries no trans_info") {
			t.Errorf("%s: %v", name, err)
		}
		// An empty mutation copies any frame.
		out, err := c.Encode([]byte("x"), msg, &codec.Mutation{})
		if err != nil || !bytes.Equal(out[1:], golden(t, name)) || !bytes.Equal(msg.Frame, out[1:]) {
			t.Errorf("%s: empty mutation: %v", name, err)
		}
	}
	c := newCodec(t)
	msg := decodeOne(t, c, request(t, 1, routed, nil, nil))
	big := &codec.Mutation{Set: []codec.KeyValue{{Key: "big", Value: strings.Repeat("v", maxProtoHeader)}}}
	if _, err := c.Encode(nil, msg, big); err == nil || !strings.Contains(err.Error(), "protocol header of") {
		t.Errorf("oversized header: %v", err)
	}
	f, _ := Registration().New(json.RawMessage(`{"maxFrameSize": 200}`))
	c = f.NewCodec(codec.Downstream).(*Codec)
	msg = decodeOne(t, c, request(t, 1, routed, nil, nil))
	long := &codec.Mutation{Set: []codec.KeyValue{{Key: "long", Value: strings.Repeat("v", 200)}}}
	if _, err := c.Encode(nil, msg, long); err == nil || !strings.Contains(err.Error(), "exceeds limit 200") {
		t.Errorf("oversized frame: %v", err)
	}
	h := build(t, "RequestProtocol", fields{"request_id": 1, "func": "/a.B/C"})
	h = protowire.AppendTag(h, 9, protowire.BytesType)
	h = protowire.AppendBytes(h, []byte{0x0a, 0x05, 'a'}) // an entry whose key is cut short
	c = newCodec(t)
	msg = decodeOne(t, c, unaryFrame(1, h, nil, nil))
	if _, err := c.Encode(nil, msg, set); err == nil || !strings.Contains(err.Error(), "trans_info entry") {
		t.Errorf("bad entry: %v", err)
	}
	if _, ok := msg.Metadata.Get("k"); ok || msg.Metadata.Err() == nil {
		t.Errorf("bad entry loads: %v", msg.Metadata.Err())
	}
	if v, _ := msg.Metadata.Get(KeyFunc); v != "/a.B/C" {
		t.Error("eager keys lost after a failed load")
	}
}

func TestErrorReply(t *testing.T) {
	want := map[codec.ErrorKind]int32{
		codec.RouteNotFound: 11, codec.ClusterNotFound: 11, codec.NoHealthyUpstream: 111, codec.BadResponse: 122,
		codec.Unspecified: 999, codec.OverLimit: 23, codec.Timeout: 21, codec.Unauthorized: 41, codec.BadRequest: 1,
	}
	for _, kind := range codec.ErrorKinds {
		t.Run(kind.String(), func(t *testing.T) {
			c := newCodec(t)
			v := maps.Clone(routed)
			v["call_type"] = 3 // a legacy call type is echoed back, as tRPC-Go's server does
			msg := decodeOne(t, c, request(t, 300, v, nil, nil))
			msg.Frame = nil // the proxy may answer long after the frame is gone
			reply, status := c.ErrorReply([]byte("dst"), msg, kind, "detail: "+kind.String())
			if status != want[kind] || ErrorRet(kind) != status {
				t.Fatalf("status %d, want %d", status, want[kind])
			}
			if string(reply[:3]) != "dst" {
				t.Fatal("dst overwritten")
			}
			reply = reply[3:]
			checkSizes(t, reply)
			if reply[2] != 0 || reply[3] != 0 || binary.BigEndian.Uint32(reply[10:14]) != 300 || reply[14] != 1 {
				t.Fatalf("fixed header % x", reply[:16])
			}
			p := parse(t, "ResponseProtocol", protoHeader(reply))
			if p.int("request_id") != 300 || p.int("ret") != int64(status) || p.int("call_type") != 3 ||
				p.str("error_msg") != "detail: "+kind.String() || p.int("func_ret") != 0 {
				t.Fatalf("reply header %v", p.m)
			}
			r := decodeOne(t, newCodec(t), reply)
			if r.Type != codec.Response || r.ID != 300 || r.Status != status || !r.Failed {
				t.Fatalf("reply decodes to %v %d status %d failed %v", r.Type, r.ID, r.Status, r.Failed)
			}
		})
	}
	t.Run("stream init", func(t *testing.T) {
		c := newCodec(t)
		msg := decodeOne(t, c, golden(t, "stream-init"))
		msg.Frame = nil
		reply, status := c.ErrorReply(nil, msg, codec.Unauthorized, "denied")
		if status != 41 {
			t.Fatalf("status %d", status)
		}
		checkSizes(t, reply)
		if reply[2] != 1 || reply[3] != 1 || binary.BigEndian.Uint32(reply[10:14]) != 5 {
			t.Fatalf("fixed header % x", reply[:16])
		}
		rm := parse(t, "TrpcStreamInitMeta", reply[16:]).sub("response_meta")
		if rm.int("ret") != 41 || rm.str("error_msg") != "denied" {
			t.Fatalf("response meta %v", rm.m)
		}
		r := decodeOne(t, newCodec(t), reply)
		if r.Type != codec.StreamInit || r.ID != 5 || r.Status != 41 || !r.Failed {
			t.Fatalf("reply decodes to %v %d status %d", r.Type, r.ID, r.Status)
		}
	})
	t.Run("frames of an open stream: a reset", func(t *testing.T) {
		for _, name := range []string{"stream-data", "stream-feedback", "stream-close"} {
			c := newCodec(t)
			msg := decodeOne(t, c, golden(t, name))
			msg.Frame = nil
			reply, status := c.ErrorReply(nil, msg, codec.NoHealthyUpstream, "upstream gone")
			if status != RetClientConnect {
				t.Fatalf("%s: status %d", name, status)
			}
			checkSizes(t, reply)
			r := decodeOne(t, newCodec(t), reply)
			if r.Type != codec.StreamCloseTwoWay || r.ID != msg.ID || r.Status != RetClientConnect || !r.Failed {
				t.Fatalf("%s: reset decodes to %v %d status %d failed %v", name, r.Type, r.ID, r.Status, r.Failed)
			}
			if m := parse(t, "TrpcStreamCloseMeta", reply[16:]); m.str("msg") != "upstream gone" {
				t.Fatalf("%s: close meta %v", name, m.m)
			}
		}
	})
	t.Run("nothing for frames that expect no reply", func(t *testing.T) {
		for _, name := range []string{"oneway", "response", "stream-init-response"} {
			c := newCodec(t)
			msg := decodeOne(t, c, golden(t, name))
			if reply, status := c.ErrorReply([]byte("x"), msg, codec.RouteNotFound, "d"); string(reply) != "x" || status != 0 {
				t.Errorf("%s: reply %q status %d", name, reply, status)
			}
		}
	})
	t.Run("detail", func(t *testing.T) {
		c := newCodec(t)
		msg := &codec.Message{Type: codec.Request, ID: 1} // not decoded by the codec: version 1, unary call
		for detail, want := range map[string]string{
			"":                               "meltemi: timeout",
			strings.Repeat("é", 10000):       strings.Repeat("é", maxErrorDetail/2),
			"x" + strings.Repeat("é", 10000): "x" + strings.Repeat("é", maxErrorDetail/2-1),
		} {
			reply, _ := c.ErrorReply(nil, msg, codec.Timeout, detail)
			if got := parse(t, "ResponseProtocol", protoHeader(reply)).str("error_msg"); got != want {
				t.Errorf("error_msg of %d bytes, want %d", len(got), len(want))
			}
			if reply[14] != 1 {
				t.Errorf("version %d", reply[14])
			}
		}
	})
}

func TestHeartbeatReply(t *testing.T) {
	c := newCodec(t)
	msg := decodeOne(t, c, golden(t, "request"))
	if out := c.HeartbeatReply([]byte("x"), msg); string(out) != "x" {
		t.Fatalf("heartbeat reply %q", out)
	}
}

func TestDecodeErrors(t *testing.T) {
	small := func() *Codec {
		f, _ := Registration().New(json.RawMessage(`{"maxFrameSize": 100}`))
		c := f.NewCodec(codec.Downstream).(*Codec)
		c.side = sideInfer
		return c
	}
	bigReq := request(t, 33, withTrans(routed), make([]byte, 200), nil)
	bigOneway := func() []byte {
		v := maps.Clone(routed)
		v["call_type"] = 1
		return request(t, 34, v, make([]byte, 200), nil)
	}()
	tests := []struct {
		name     string
		codec    func() *Codec
		frame    []byte
		err      string
		canReply bool
		id       uint64
	}{
		{name: "bad magic", frame: []byte("GET / HTTP/1.1\r\n"), err: "bad magic 0x4745"},
		{name: "bad second magic byte", frame: []byte{0x09, 0x31}, err: "bad magic 0x0931"},
		{name: "unknown data frame type", frame: fixedHeader(2, 0, 1, 16, 0), err: "unknown data frame type 2"},
		{name: "unknown stream frame type", frame: fixedHeader(1, 5, 1, 16, 0), err: "unknown stream frame type 5"},
		{name: "stream frame type 0", frame: fixedHeader(1, 0, 1, 16, 0), err: "unknown stream frame type 0"},
		{name: "unary without header", frame: fixedHeader(0, 0, 1, 20, 0), err: "has no protocol header"},
		{name: "total below headers", frame: fixedHeader(0, 0, 1, 20, 10), err: "smaller than the fixed and protocol headers (26)"},
		{name: "stream total below fixed header", frame: fixedHeader(1, 2, 1, 15, 0), err: "smaller than the fixed header"},
		{name: "truncated varint", frame: unaryFrame(1, []byte{0x18, 0x80}, nil, nil), err: "bad protocol header"},
		{name: "field number 0", frame: unaryFrame(1, []byte{0x00, 0x01}, nil, nil), err: "bad protocol header"},
		{name: "bytes beyond the header", frame: unaryFrame(1, []byte{0x3a, 0x09, 'a'}, nil, nil), err: "bad protocol header"},
		{name: "attachment larger than the frame", frame: request(t, 5, fields{"func": "/a.B/C", "attachment_size": 10}, []byte("x"), nil),
			err: "attachment size 10 exceeds the 1 bytes", canReply: true, id: 5},
		{name: "bad init meta", frame: streamFrame(1, 6, []byte{0x0a, 0x05}), err: "stream 6: bad init meta"},
		{name: "bad close meta", frame: streamFrame(4, 7, []byte{0x08}), err: "stream 7: bad close meta"},
		{name: "over the limit", codec: small, frame: bigReq, err: "request 33: frame size", canReply: true, id: 33},
		{name: "oneway over the limit", codec: small, frame: bigOneway, err: "frame size"},
		{name: "stream over the limit", codec: small, frame: streamFrame(2, 8, make([]byte, 100)), err: "frame 8: size 116 exceeds limit 100"},
		{name: "huge total", frame: fixedHeader(1, 2, 9, 1<<32-1, 0), err: "size 4294967295 exceeds limit 10485760"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCodec(t)
			if tt.codec != nil {
				c = tt.codec()
			}
			msg := &codec.Message{}
			n, err := c.Decode(tt.frame, msg)
			var fe *codec.FrameError
			if !errors.As(err, &fe) || !strings.Contains(fe.Reason, tt.err) || !strings.HasPrefix(fe.Reason, "trpc: ") || n != 0 {
				t.Fatalf("n %d, err %v; want a FrameError containing %q", n, err, tt.err)
			}
			if fe.CanReply != tt.canReply {
				t.Fatalf("CanReply %v", fe.CanReply)
			}
			if fe.CanReply {
				if msg.Type != codec.Request || msg.ID != tt.id {
					t.Fatalf("msg %v %d", msg.Type, msg.ID)
				}
				reply, status := c.ErrorReply(nil, msg, codec.BadRequest, fe.Reason)
				r := decodeOne(t, newCodec(t), reply)
				if r.ID != tt.id || r.Status != status || status != 1 {
					t.Fatalf("reply %v %d status %d", r.Type, r.ID, r.Status)
				}
			}
		})
	}
	t.Run("over the limit waits for the protocol header", func(t *testing.T) {
		c := small()
		for i := headerLen; i < 16+len(protoHeader(bigReq)); i++ {
			if n, err := c.Decode(bigReq[:i], &codec.Message{}); n != 0 || !errors.Is(err, codec.ErrIncomplete) {
				t.Fatalf("prefix %d: %d, %v", i, n, err)
			}
		}
		var fe *codec.FrameError
		if _, err := c.Decode(bigReq[:16+len(protoHeader(bigReq))], &codec.Message{}); !errors.As(err, &fe) || !fe.CanReply {
			t.Fatalf("with the header: %v", err)
		}
	})
}
