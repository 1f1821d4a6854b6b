package brpc

import (
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/codec"
)

// benchFrame is a request with a 1 KB payload, a small attachment and the user_fields a client might send, as
// a brpc C++ client writes it (its correlation ids are bthread ids: five or more varint bytes).
func benchFrame() []byte {
	meta := cat(reqMeta("example.EchoService", "Echo", vf(3, 12345), vf(8, 500)), vf(metaCorrelationID, 1<<32|77),
		vf(5, 16), userField("env", "canary"), userField("trace-id", "4bf92f3577b34da6a3ce929d0e0e4736"))
	return buildFrame(meta, strings.Repeat("p", 1024), strings.Repeat("a", 16))
}

func BenchmarkDecodeRequest(b *testing.B) {
	frame := benchFrame()
	c := newCodec(b)
	msg := &codec.Message{}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		msg.Reset()
		if _, err := c.Decode(frame, msg); err != nil {
			b.Fatal(err)
		}
		if v, _ := msg.Metadata.Get(KeyCmd); v != "example.EchoService/Echo" {
			b.Fatal(v)
		}
	}
}

// BenchmarkDecodeUserFields is the lazy path: Decode, then a lookup of a user_fields key.
func BenchmarkDecodeUserFields(b *testing.B) {
	frame := benchFrame()
	c := newCodec(b)
	msg := &codec.Message{}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		msg.Reset()
		if _, err := c.Decode(frame, msg); err != nil {
			b.Fatal(err)
		}
		if v, _ := msg.Metadata.Get("env"); v != "canary" {
			b.Fatal(v, msg.Metadata.Err())
		}
	}
}

// BenchmarkSetID rewrites the id with values of the frame's varint length or shorter: in place.
func BenchmarkSetID(b *testing.B) {
	c := newCodec(b)
	msg := decodeOne(b, c, benchFrame())
	b.ReportAllocs()
	id := uint64(0)
	for b.Loop() {
		id++
		c.SetID(msg, id&0x7fffffff)
	}
}

// brpcResponseFrame is a response as brpc's server writes it (error_code and compress_type written though 0),
// answering the proxy's id 300, with a 1 KB payload.
func brpcResponseFrame() []byte {
	return buildFrame(cat(bf(metaResponse, vf(responseErrorCode, 0)), vf(3, 0), vf(metaCorrelationID, 300)),
		strings.Repeat("p", 1024), "")
}

// BenchmarkSetIDCompact restores a brpc client's six-byte id in a response that carried the proxy's two-byte
// one: the meta is compacted in place. Each round decodes a fresh copy.
func BenchmarkSetIDCompact(b *testing.B) {
	orig := brpcResponseFrame()
	frame := make([]byte, len(orig))
	c := newUpstream(b)
	msg := &codec.Message{}
	b.ReportAllocs()
	for b.Loop() {
		copy(frame, orig)
		msg.Reset()
		if _, err := c.Decode(frame, msg); err != nil {
			b.Fatal(err)
		}
		c.SetID(msg, 300<<32|77)
	}
}

// BenchmarkSetIDGrow rewrites a one-byte id with a five-byte one: the frame is copied.
func BenchmarkSetIDGrow(b *testing.B) {
	c := newCodec(b)
	msg := &codec.Message{}
	frame := buildFrame(cat(reqMeta("example.EchoService", "Echo"), vf(metaCorrelationID, 1)), strings.Repeat("p", 1024), "")
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		msg.Reset()
		if _, err := c.Decode(frame, msg); err != nil {
			b.Fatal(err)
		}
		c.SetID(msg, 1<<30)
	}
}

func BenchmarkEncodeMutation(b *testing.B) {
	frame := benchFrame()
	c := newCodec(b)
	msg := &codec.Message{}
	mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "x-routed-by", Value: "meltemi"}, {Key: "env", Value: "prod"}},
		Remove: []string{"trace-id"}}
	var dst []byte
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		msg.Reset()
		if _, err := c.Decode(frame, msg); err != nil {
			b.Fatal(err)
		}
		var err error
		if dst, err = c.Encode(dst[:0], msg, mut); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkErrorReply(b *testing.B) {
	c := newCodec(b)
	req := &codec.Message{Type: codec.Request, ID: 1<<32 | 77}
	var dst []byte
	b.ReportAllocs()
	for b.Loop() {
		dst, _ = c.ErrorReply(dst[:0], req, codec.RouteNotFound, "meltemi: no route matched")
	}
}

// TestSteadyStateAllocs pins the zero-allocation paths the benchmarks measure.
func TestSteadyStateAllocs(t *testing.T) {
	frame := benchFrame()
	c := newCodec(t)
	msg := &codec.Message{}
	decode := func(key, want string) func() {
		return func() {
			msg.Reset()
			if _, err := c.Decode(frame, msg); err != nil {
				t.Fatal(err)
			}
			if v, _ := msg.Metadata.Get(key); v != want {
				t.Fatal(key, v)
			}
		}
	}
	if n := testing.AllocsPerRun(100, decode(KeyCmd, "example.EchoService/Echo")); n != 0 {
		t.Errorf("Decode allocates %v times per request", n)
	}
	if n := testing.AllocsPerRun(100, decode("env", "canary")); n != 0 {
		t.Errorf("Decode with user_fields allocates %v times per request", n)
	}
	id := uint64(0)
	if n := testing.AllocsPerRun(100, func() { id++; c.SetID(msg, id) }); n != 0 {
		t.Errorf("SetID allocates %v times", n)
	}
	orig := brpcResponseFrame()
	resp := make([]byte, len(orig))
	up := newUpstream(t)
	compact := func() {
		copy(resp, orig)
		msg.Reset()
		if _, err := up.Decode(resp, msg); err != nil {
			t.Fatal(err)
		}
		c.SetID(msg, 300<<32|77)
		if &msg.Frame[0] != &resp[0] {
			t.Fatal("SetID did not compact in place")
		}
	}
	if n := testing.AllocsPerRun(100, compact); n != 0 {
		t.Errorf("SetID compacting the meta allocates %v times", n)
	}
	var dst []byte
	mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "env", Value: "prod"}}, Remove: []string{"trace-id"}}
	decodeMethod := decode(KeyMethod, "Echo")
	encode := func() {
		decodeMethod()
		var err error
		if dst, err = c.Encode(dst[:0], msg, mut); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(100, encode); n != 0 {
		t.Errorf("Encode allocates %v times", n)
	}
	req := &codec.Message{Type: codec.Request, ID: 5}
	if n := testing.AllocsPerRun(100, func() {
		dst, _ = c.ErrorReply(dst[:0], req, codec.NoHealthyUpstream, "meltemi: no endpoint in cluster x")
	}); n != 0 {
		t.Errorf("ErrorReply allocates %v times", n)
	}
}
