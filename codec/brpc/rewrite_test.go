package brpc

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/meltemi-mesh/meltemi/codec"
)

var update = flag.Bool("update", false, "rewrite the golden error replies in testdata/replies")

// checkRewritten checks that frame differs from orig only in its correlation_id, which is now id.
func checkRewritten(t *testing.T, orig, frame []byte, id uint64) {
	t.Helper()
	before, beforeRest := readMeta(t, orig)
	after, afterRest := readMeta(t, frame)
	if uint64(after.ID) != id {
		t.Errorf("protobuf reads correlation_id %d, want %d", after.ID, id)
	}
	if !proto.Equal(before.withoutID(), after.withoutID()) {
		t.Errorf("other meta fields changed:\nbefore %v\n after %v", before.withoutID(), after.withoutID())
	}
	if !bytes.Equal(beforeRest, afterRest) {
		t.Error("payload or attachment changed")
	}
	// Requests are read on the downstream side, replies on the upstream side.
	c := newCodec(t)
	o := decodeOne(t, c, orig)
	if o.Type.IsReply() {
		c = newUpstream(t)
		o = decodeOne(t, c, orig)
	}
	m := decodeOne(t, c, frame)
	if m.ID != id || m.Type != o.Type || m.Status != o.Status || !maps.Equal(metadataOf(m), metadataOf(o)) {
		t.Errorf("the codec reads %v %d %v, want %v %d %v", m.Type, m.ID, metadataOf(m), o.Type, id, metadataOf(o))
	}
}

func TestSetID(t *testing.T) {
	type step struct {
		id      uint64
		inPlace bool
	}
	tests := []struct {
		name  string
		frame []byte
		steps []step
	}{
		{
			name:  "same length, shorter (padded), longer, then in place",
			frame: request(300, userField("env", "canary")),
			steps: []step{{id: 301, inPlace: true}, {id: 5, inPlace: true}, {id: 16383, inPlace: true},
				{id: 1 << 30, inPlace: false}, {id: 7, inPlace: true}, {id: math.MaxInt32, inPlace: true}, {id: 300, inPlace: true}},
		},
		{
			name:  "pbrpc request: its empty response meta makes room for one byte more",
			frame: pbrpcFrames(t, "ext-attachment-gzip-request"),
			steps: []step{{id: 127, inPlace: true}, {id: 16383, inPlace: true}, {id: 2097151, inPlace: true},
				{id: 1 << 28, inPlace: false}, {id: 1, inPlace: true}},
		},
		{
			name:  "pbrpc request, a longer id at once",
			frame: pbrpcFrames(t, "echo-request"),
			steps: []step{{id: 1 << 30, inPlace: false}},
		},
		{
			name:  "response without slack restored to a large brpc client id",
			frame: response(3, 0, ""),
			steps: []step{{id: 5<<32 | 123, inPlace: false}, {id: 3, inPlace: true}},
		},
		{
			// brpc writes error_code and compress_type even when they are 0: four bytes to spare.
			name:  "brpc response restored to a large brpc client id",
			frame: buildFrame(cat(bf(metaResponse, vf(responseErrorCode, 0)), vf(3, 0), vf(metaCorrelationID, 3), vf(5, 3)), "pay", "att"),
			steps: []step{{id: 5<<32 | 123, inPlace: true}, {id: 3, inPlace: true}, {id: 200<<32 | 123, inPlace: false}},
		},
		{
			name:  "brpc response with a proxy id of two bytes",
			frame: buildFrame(cat(bf(metaResponse, vf(responseErrorCode, 0)), vf(3, 0), vf(metaCorrelationID, 300)), "pay", ""),
			steps: []step{{id: 1000<<32 | 5, inPlace: true}, {id: 1 << 62, inPlace: false}},
		},
		{
			name:  "failed brpc response keeps its error_code",
			frame: buildFrame(cat(bf(metaResponse, vf(responseErrorCode, 2001), bf(responseErrorText, str("x"))), vf(3, 0), vf(metaCorrelationID, 3)), "", ""),
			steps: []step{{id: 300, inPlace: true}, {id: 1 << 20, inPlace: true}, {id: 1 << 30, inPlace: false}},
		},
		{
			name:  "brpc request from a slot-0 client id: compress_type makes room",
			frame: buildFrame(cat(reqMeta("example.EchoService", "Echo", vf(3, 7)), vf(3, 0), vf(metaCorrelationID, 1000)), "payload", ""),
			steps: []step{{id: 1 << 25, inPlace: true}, {id: 1<<31 - 1, inPlace: false}},
		},
		{
			// The last compress_type wins: leaving out its 0 would bring back the gzip before it.
			name:  "repeated compress_type, the last 0",
			frame: buildFrame(cat(reqMeta("example.EchoService", "Echo"), vf(3, 2), vf(metaCorrelationID, 1), vf(3, 0)), "payload", ""),
			steps: []step{{id: 300, inPlace: false}},
		},
		{
			// Response metas that occur twice are merged: emptying the second would bring back the first's code.
			name: "merged response metas",
			frame: buildFrame(cat(bf(metaResponse, vf(responseErrorCode, 2001)), bf(metaResponse, vf(responseErrorCode, 0)),
				vf(metaCorrelationID, 1)), "", ""),
			steps: []step{{id: 300, inPlace: false}},
		},
		{
			name: "repeated zeros are all slack",
			frame: buildFrame(cat(bf(metaResponse, vf(responseErrorCode, 0)), vf(3, 0), bf(metaResponse, vf(responseErrorCode, 0)),
				vf(3, 0), vf(metaCorrelationID, 1)), "", ""),
			steps: []step{{id: 1 << 40, inPlace: true}},
		},
		{
			name:  "compressed: compress_type is not slack",
			frame: buildFrame(cat(reqMeta("example.EchoService", "Echo"), vf(3, 1), vf(metaCorrelationID, 1)), "payload", ""),
			steps: []step{{id: 300, inPlace: false}},
		},
		{
			name:  "no correlation_id: slack holds the new field",
			frame: buildFrame(cat(bf(metaResponse, vf(responseErrorCode, 0)), vf(3, 0)), "", ""),
			steps: []step{{id: 9, inPlace: true}, {id: 300, inPlace: true}, {id: 1 << 30, inPlace: false}},
		},
		{
			name:  "64-bit id needs ten bytes",
			frame: response(1<<40, 2001, "x"),
			steps: []step{{id: math.MaxUint64, inPlace: false}, {id: 1, inPlace: true}, {id: math.MaxUint64, inPlace: true}},
		},
		{
			name:  "no correlation_id: one is added",
			frame: buildFrame(reqMeta("example.EchoService", "Echo"), "payload", "att"),
			steps: []step{{id: 9, inPlace: false}, {id: 10, inPlace: true}},
		},
		{
			name:  "repeated correlation_id: the last is rewritten",
			frame: buildFrame(cat(vf(metaCorrelationID, 1), reqMeta("example.EchoService", "Echo"), vf(metaCorrelationID, 2)), "", ""),
			steps: []step{{id: 3, inPlace: true}, {id: 1 << 20, inPlace: false}},
		},
		{
			name:  "padded varint from a peer",
			frame: buildFrame(cat(reqMeta("example.EchoService", "Echo"), []byte{0x20, 0x81, 0x80, 0x80, 0x00}), "", ""),
			steps: []step{{id: 1 << 27, inPlace: true}, {id: 0, inPlace: true}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCodec(t)
			buf := bytes.Clone(tc.frame)
			msg := decodeOne(t, c, buf)
			for _, s := range tc.steps {
				before := msg.Frame
				c.SetID(msg, s.id)
				if msg.ID != s.id {
					t.Fatalf("msg.ID %d, want %d", msg.ID, s.id)
				}
				if got := len(msg.Frame) == len(before) && &msg.Frame[0] == &before[0]; got != s.inPlace {
					t.Fatalf("SetID(%d): in place %v, want %v", s.id, got, s.inPlace)
				}
				checkRewritten(t, tc.frame, msg.Frame, s.id)
			}
		})
	}

	t.Run("message filled without Decode", func(t *testing.T) {
		frame := request(300)
		msg := &codec.Message{Type: codec.Request, ID: 300, Frame: bytes.Clone(frame)}
		newCodec(t).SetID(msg, 42)
		checkRewritten(t, frame, msg.Frame, 42)
		// Private pointing elsewhere is not trusted either.
		msg.Private = [4]int{headerLen + 2, 3}
		newCodec(t).SetID(msg, 43)
		checkRewritten(t, frame, msg.Frame, 43)
	})
	t.Run("no frame", func(t *testing.T) {
		for _, frame := range [][]byte{nil, []byte("PRPC"), []byte("XRPC\x00\x00\x00\x00\x00\x00\x00\x00"),
			[]byte("PRPC\x00\x00\x00\x05\x00\x00\x00\x00"), buildFrame([]byte{0x20}, "", "")} {
			msg := &codec.Message{Type: codec.Request, Frame: bytes.Clone(frame)}
			newCodec(t).SetID(msg, 5)
			if msg.ID != 5 || !bytes.Equal(msg.Frame, frame) {
				t.Errorf("%q: id %d frame %q", frame, msg.ID, msg.Frame)
			}
		}
	})
	t.Run("padding", func(t *testing.T) {
		for width := 1; width <= 10; width++ {
			for _, v := range []uint64{0, 1, 127, 128, 1<<(7*min(width, 9)) - 1, math.MaxUint64} {
				if protowire.SizeVarint(v) > width {
					continue
				}
				b := make([]byte, width)
				putPaddedVarint(b, v)
				got, n := protowire.ConsumeVarint(b)
				if got != v || n != width {
					t.Errorf("width %d value %d: read %d in %d bytes", width, v, got, n)
				}
			}
		}
	})
}

func TestEncode(t *testing.T) {
	long := strings.Repeat("t", 100)
	base := buildFrame(cat(reqMeta("example.EchoService", "Echo", vf(3, 5)), vf(3, 1), vf(metaCorrelationID, 9),
		userField("env", "canary"), vf(5, 3), userField("a", "1"), userField("trace", long)), "payload", "att")
	baseFields := map[string]string{"env": "canary", "a": "1", "trace": long}
	tests := []struct {
		name     string
		frame    []byte
		upstream bool
		mutation codec.Mutation
		want     map[string]string // the user_fields after the edit
	}{
		{name: "set a new key", frame: base, mutation: codec.Mutation{Set: []codec.KeyValue{{Key: "x-routed-by", Value: "meltemi"}}},
			want: map[string]string{"env": "canary", "a": "1", "trace": long, "x-routed-by": "meltemi"}},
		{name: "replace", frame: base, mutation: codec.Mutation{Set: []codec.KeyValue{{Key: "env", Value: "prod"}}},
			want: map[string]string{"env": "prod", "a": "1", "trace": long}},
		{name: "remove", frame: base, mutation: codec.Mutation{Remove: []string{"a", "missing"}},
			want: map[string]string{"env": "canary", "trace": long}},
		{name: "set and remove the same key: removed", frame: base,
			mutation: codec.Mutation{Set: []codec.KeyValue{{Key: "env", Value: "x"}, {Key: "new", Value: "y"}}, Remove: []string{"env", "new"}},
			want:     map[string]string{"a": "1", "trace": long}},
		{name: "the last set wins", frame: base,
			mutation: codec.Mutation{Set: []codec.KeyValue{{Key: "k", Value: "1"}, {Key: "k", Value: "2"}, {Key: "a", Value: ""}}},
			want:     map[string]string{"env": "canary", "a": "", "trace": long, "k": "2"}},
		{name: "duplicate entries on the wire are all replaced",
			frame:    buildFrame(cat(reqMeta("s", "m"), userField("k", "1"), vf(metaCorrelationID, 1), userField("k", "2")), "", ""),
			mutation: codec.Mutation{Set: []codec.KeyValue{{Key: "k", Value: "3"}}}, want: map[string]string{"k": "3"}},
		{name: "a request without user_fields", frame: request(4),
			mutation: codec.Mutation{Set: []codec.KeyValue{{Key: "k", Value: "v"}}}, want: map[string]string{"k": "v"}},
		{name: "a response", frame: response(4, 2001, "boom"), upstream: true,
			mutation: codec.Mutation{Set: []codec.KeyValue{{Key: "k", Value: "v"}}}, want: map[string]string{"k": "v"}},
		{name: "a pbrpc request", frame: pbrpcFrames(t, "ext-attachment-gzip-request"),
			mutation: codec.Mutation{Set: []codec.KeyValue{{Key: "k", Value: "v"}}}, want: map[string]string{"k": "v"}},
		{name: "a pbrpc response keeps its type", frame: pbrpcFrames(t, "echo-response"), upstream: true,
			mutation: codec.Mutation{Set: []codec.KeyValue{{Key: "k", Value: "v"}}}, want: map[string]string{"k": "v"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCodec(t)
			if tc.upstream {
				c = newUpstream(t)
			}
			msg := decodeOne(t, c, bytes.Clone(tc.frame))
			typ, id := msg.Type, msg.ID
			dst := []byte("prefix")
			out, err := c.Encode(dst, msg, &tc.mutation)
			if err != nil {
				t.Fatal(err)
			}
			if string(out[:len(dst)]) != "prefix" || !bytes.Equal(msg.Frame, out[len(dst):]) {
				t.Fatal("msg.Frame is not the appended frame")
			}
			frame := out[len(dst):]
			libBefore, beforeRest := readMeta(t, tc.frame)
			libAfter, afterRest := readMeta(t, frame)
			if !maps.Equal(libAfter.UserFields, tc.want) {
				t.Errorf("user_fields %v, want %v", libAfter.UserFields, tc.want)
			}
			if !proto.Equal(libBefore.withoutUserFields(), libAfter.withoutUserFields()) || !bytes.Equal(beforeRest, afterRest) {
				t.Error("fields other than user_fields changed")
			}
			if a, b := otherFields(t, tc.frame), otherFields(t, frame); !bytes.Equal(a, b) {
				t.Errorf("the other fields are not byte-identical:\n% x\n% x", a, b)
			}
			// msg now describes the new frame.
			if msg.Type != typ || msg.ID != id {
				t.Errorf("after Encode: %v %d, want %v %d", msg.Type, msg.ID, typ, id)
			}
			for k, v := range tc.want {
				if got, _ := msg.Metadata.Get(k); got != v {
					t.Errorf("metadata %s = %q, want %q", k, got, v)
				}
			}
			// Encode leaves room in the correlation_id for any id the proxy assigns next.
			before := msg.Frame
			c.SetID(msg, 1<<31-1)
			if got, _ := readMeta(t, msg.Frame); got.ID != 1<<31-1 || &msg.Frame[0] != &before[0] {
				t.Errorf("SetID after Encode: %d, in place %v", got.ID, &msg.Frame[0] == &before[0])
			}
		})
	}
	t.Run("base fields", func(t *testing.T) {
		if got, _ := readMeta(t, base); !maps.Equal(got.UserFields, baseFields) {
			t.Fatalf("base frame has %v", got.UserFields)
		}
	})
	t.Run("empty mutation copies", func(t *testing.T) {
		for _, m := range []*codec.Mutation{nil, {}} {
			c := newCodec(t)
			msg := decodeOne(t, c, bytes.Clone(base))
			out, err := c.Encode(nil, msg, m)
			if err != nil || !bytes.Equal(out, base) || &msg.Frame[0] != &out[0] {
				t.Errorf("%v: %v", m, err)
			}
		}
	})
	t.Run("errors", func(t *testing.T) {
		c := newCodec(t)
		if _, err := c.Encode(nil, &codec.Message{}, &codec.Mutation{Remove: []string{"a"}}); err == nil {
			t.Error("a message without frame encoded")
		}
		small := testFactory(t, fmt.Sprintf(`{"maxBodySize": %d}`, len(base)-headerLen)).NewCodec(codec.Downstream)
		msg := decodeOne(t, small.(*Codec), bytes.Clone(base))
		if _, err := small.Encode(nil, msg, &codec.Mutation{Set: []codec.KeyValue{{Key: "k", Value: "v"}}}); err == nil ||
			!strings.Contains(err.Error(), "exceeds limit") {
			t.Errorf("over limit: %v", err)
		}
		bad := decodeOne(t, c, buildFrame(cat(reqMeta("s", "m"), bf(metaUserFields, []byte{0x0a, 0x07})), "", ""))
		if _, err := c.Encode(nil, bad, &codec.Mutation{Set: []codec.KeyValue{{Key: "k", Value: "v"}}}); err == nil ||
			!strings.Contains(err.Error(), "user_fields") {
			t.Errorf("bad entry: %v", err)
		}
	})
}

// otherFields returns the raw bytes of the meta's fields other than user_fields, in order, with the
// correlation_id in its shortest form (Encode pads it).
func otherFields(t *testing.T, frame []byte) []byte {
	t.Helper()
	end, ok := metaBounds(frame)
	if !ok {
		t.Fatal("not a frame")
	}
	var out []byte
	meta := frame[headerLen:end]
	for p := 0; p < len(meta); {
		num, typ, n := protowire.ConsumeField(meta[p:])
		if n < 0 {
			t.Fatal(protowire.ParseError(n))
		}
		switch {
		case num == metaCorrelationID && typ == protowire.VarintType:
			_, _, tagLen := protowire.ConsumeTag(meta[p:])
			id, _ := protowire.ConsumeVarint(meta[p+tagLen:])
			out = append(out, vf(metaCorrelationID, id)...)
		case num != metaUserFields:
			out = append(out, meta[p:p+n]...)
		}
		p += n
	}
	return out
}

func TestErrorReply(t *testing.T) {
	for _, kind := range codec.ErrorKinds {
		t.Run(kind.String(), func(t *testing.T) {
			// Only the type and id: ErrorReply must not need the frame.
			req := &codec.Message{Type: codec.Request, ID: 1<<33 + 5}
			reply, status := newCodec(t).ErrorReply([]byte("x"), req, kind, "meltemi: no route matched")
			if status != ErrorCode(kind) || status < 1001 {
				t.Fatalf("status %d", status)
			}
			if reply[0] != 'x' {
				t.Fatal("dst was overwritten")
			}
			reply = reply[1:]
			wantText := "meltemi: " + kind.String() + ": no route matched"
			lib, rest := readMeta(t, reply)
			if uint64(lib.ID) != req.ID || lib.ErrorCode != status || lib.ErrorText != wantText || len(rest) != 0 ||
				lib.Service != "" {
				t.Errorf("protobuf reads %+v, rest %q", lib, rest)
			}
			for _, c := range []*Codec{newCodec(t), newUpstream(t)} {
				msg := decodeOne(t, c, reply)
				if msg.Type != codec.Response || msg.ID != req.ID || msg.Status != status || !msg.Failed {
					t.Errorf("the codec reads %v %d %d %v", msg.Type, msg.ID, msg.Status, msg.Failed)
				}
			}
		})
	}
	codes := map[codec.ErrorKind]int32{codec.RouteNotFound: 1001, codec.ClusterNotFound: 1001, codec.NoHealthyUpstream: 2001,
		codec.BadResponse: 2002, codec.Unspecified: 2001, codec.OverLimit: 2004, codec.Timeout: 1008,
		codec.Unauthorized: 1004, codec.BadRequest: 1003, codec.ErrorKind(200): 2001}
	for kind, code := range codes {
		if got := ErrorCode(kind); got != code {
			t.Errorf("ErrorCode(%v) = %d, want %d", kind, got, code)
		}
	}

	text := func(t *testing.T, detail string) string {
		t.Helper()
		reply, _ := newCodec(t).ErrorReply(nil, &codec.Message{Type: codec.Request, ID: 1}, codec.Timeout, detail)
		lib, _ := readMeta(t, reply)
		return lib.ErrorText
	}
	t.Run("details", func(t *testing.T) {
		if got := text(t, ""); got != "meltemi: timeout" {
			t.Errorf("empty detail: %q", got)
		}
		if got := text(t, "upstream 10.0.0.1:8000 timed out"); got != "meltemi: timeout: upstream 10.0.0.1:8000 timed out" {
			t.Errorf("plain detail: %q", got)
		}
		if got := text(t, "bad \xff byte"); got != "meltemi: timeout: bad \uFFFD byte" {
			t.Errorf("invalid UTF-8: %q", got)
		}
		long := strings.Repeat("a", maxErrorDetail-1) + "é" + "tail"
		got := text(t, long)
		if !utf8.ValidString(got) || len(got) > len("meltemi: timeout: ")+maxErrorDetail || !strings.HasSuffix(got, "a") {
			t.Errorf("long detail: %d bytes, valid %v", len(got), utf8.ValidString(got))
		}
	})
	t.Run("no reply expected", func(t *testing.T) {
		for _, typ := range []codec.MessageType{codec.Response, codec.Oneway, codec.Heartbeat, codec.Error} {
			reply, status := newCodec(t).ErrorReply([]byte("x"), &codec.Message{Type: typ, ID: 1}, codec.Timeout, "d")
			if string(reply) != "x" || status != 0 {
				t.Errorf("%v: %q %d", typ, reply, status)
			}
		}
	})
	t.Run("after a refused frame", func(t *testing.T) {
		// The proxy answers a FrameError with CanReply from what Decode left in the message.
		msg := &codec.Message{}
		_, err := newCodec(t).Decode(buildFrame(cat(reqMeta("s", "m"), vf(metaCorrelationID, 12), bf(metaStreamSettings)), "", ""), msg)
		if err == nil {
			t.Fatal("streaming request accepted")
		}
		reply, status := newCodec(t).ErrorReply(nil, msg, codec.BadRequest, err.Error())
		if lib, _ := readMeta(t, reply); lib.ID != 12 || status != CodeRequest || !strings.Contains(lib.ErrorText, "streaming") {
			t.Errorf("reply %+v status %d", lib, status)
		}
	})
}

// TestGoldenFrames keeps the frames that testdata/pbrpcpeer serves to real pbrpc clients and servers in step
// with the codec: error replies, and frames whose correlation_id SetID padded or compacted. Rewrite them with
// go test ./codec/brpc -run TestGoldenFrames -args -update.
func TestGoldenFrames(t *testing.T) {
	golden := map[string][]byte{}
	for _, kind := range codec.ErrorKinds {
		// Correlation id 1 is the id of a new pbrpc client's first call.
		reply, status := newCodec(t).ErrorReply(nil, &codec.Message{Type: codec.Request, ID: 1}, kind, "meltemi: detail")
		golden[filepath.Join("replies", fmt.Sprintf("%d-%s.bin", status, kind))] = reply
	}
	// A request whose correlation_id 2 is padded to five bytes, for a pbrpc server, and a response whose 1 is,
	// for a pbrpc client.
	padded := func(c *Codec, name string, id uint64) []byte {
		msg := decodeOne(t, c, bytes.Clone(pbrpcFrames(t, name)))
		c.SetID(msg, 1<<30)
		c.SetID(msg, id)
		if msg.Private[privIDLen] != reservedIDLen {
			t.Fatalf("%s: correlation_id is %d bytes long", name, msg.Private[privIDLen])
		}
		return msg.Frame
	}
	golden[filepath.Join("padded", "request.bin")] = padded(newCodec(t), "echo-request", 2)
	golden[filepath.Join("padded", "response.bin")] = padded(newUpstream(t), "echo-response", 1)
	// A request whose correlation_id 300 took the place of its empty response meta, for a pbrpc server.
	c := newCodec(t)
	compacted := decodeOne(t, c, bytes.Clone(pbrpcFrames(t, "echo-request")))
	orig := compacted.Frame
	c.SetID(compacted, 300)
	if &compacted.Frame[0] != &orig[0] {
		t.Fatal("SetID(300) on a pbrpc request was not in place")
	}
	golden[filepath.Join("padded", "compacted-request.bin")] = compacted.Frame
	for name, data := range golden {
		path := filepath.Join("testdata", name)
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (rewrite: go test ./codec/brpc -run TestGoldenFrames -args -update)", err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s is out of date (rewrite: go test ./codec/brpc -run TestGoldenFrames -args -update)", path)
		}
	}
}
