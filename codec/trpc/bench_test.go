package trpc

import (
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/codec"
)

// benchFrame is a unary request with a 1 KB body and the trans_info a traced, dyed call carries.
func benchFrame(tb testing.TB) []byte {
	v := withTrans(routed)
	v["trans_info"] = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"trpc-env": "canary", "trpc-dyeing-key": "user-42"}
	return request(tb, 1234, v, []byte(strings.Repeat("payload ", 128)), nil)
}

// BenchmarkDecodeRequest decodes the fixed and protocol headers and reads a routing key.
func BenchmarkDecodeRequest(b *testing.B) {
	frame := benchFrame(b)
	c := newCodec(b)
	msg := &codec.Message{}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		msg.Reset()
		if _, err := c.Decode(frame, msg); err != nil {
			b.Fatal(err)
		}
		if v, _ := msg.Metadata.Get(KeyFunc); v != "/trpc.app.echo.Echo/Say" {
			b.Fatal(v)
		}
	}
}

// BenchmarkDecodeTransInfo is the lazy path: Decode, then a lookup that loads trans_info.
func BenchmarkDecodeTransInfo(b *testing.B) {
	frame := benchFrame(b)
	c := newCodec(b)
	msg := &codec.Message{}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		msg.Reset()
		if _, err := c.Decode(frame, msg); err != nil {
			b.Fatal(err)
		}
		if v, _ := msg.Metadata.Get("trpc-env"); v != "canary" {
			b.Fatal(v, msg.Metadata.Err())
		}
	}
}

// BenchmarkSetID rewrites ids of the same varint length, in place.
func BenchmarkSetID(b *testing.B) {
	c := newCodec(b)
	msg := decodeOne(b, c, benchFrame(b))
	b.ReportAllocs()
	id := uint64(0)
	for b.Loop() {
		id++
		c.SetID(msg, 1024+id%1024) // two varint bytes, as the frame's 1234
	}
}

// BenchmarkSetIDGrow rewrites a two-byte id to a four-byte one: the frame is copied.
func BenchmarkSetIDGrow(b *testing.B) {
	frame := benchFrame(b)
	c := newCodec(b)
	msg := &codec.Message{}
	b.ReportAllocs()
	for b.Loop() {
		msg.Reset()
		if _, err := c.Decode(frame, msg); err != nil {
			b.Fatal(err)
		}
		c.SetID(msg, 1<<22)
	}
}

func BenchmarkEncodeMutation(b *testing.B) {
	frame := benchFrame(b)
	c := newCodec(b)
	msg := &codec.Message{}
	mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "x-meltemi-cluster", Value: "outbound|8000||echo"}, {Key: "trpc-env", Value: "prod"}},
		Remove: []string{"trpc-dyeing-key"}}
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
	msg := decodeOne(b, c, benchFrame(b))
	var dst []byte
	b.ReportAllocs()
	for b.Loop() {
		dst, _ = c.ErrorReply(dst[:0], msg, codec.RouteNotFound, "no route for /trpc.app.echo.Echo/Say")
	}
}

// TestSteadyStateAllocs pins the zero-allocation paths the benchmarks measure.
func TestSteadyStateAllocs(t *testing.T) {
	frame := benchFrame(t)
	c := newCodec(t)
	msg := &codec.Message{}
	decode := func() {
		msg.Reset()
		if _, err := c.Decode(frame, msg); err != nil {
			t.Fatal(err)
		}
		if v, _ := msg.Metadata.Get(KeyCallee); v != "trpc.app.echo.Echo" {
			t.Fatal(v)
		}
	}
	if n := testing.AllocsPerRun(100, decode); n != 0 {
		t.Errorf("Decode allocates %v times per request", n)
	}
	id := uint64(1024)
	if n := testing.AllocsPerRun(100, func() { id++; c.SetID(msg, id) }); n != 0 {
		t.Errorf("SetID allocates %v times", n)
	}
	var dst []byte
	mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "trpc-env", Value: "prod"}}}
	encode := func() {
		decode()
		var err error
		if dst, err = c.Encode(dst[:0], msg, mut); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(100, encode); n != 0 {
		t.Errorf("Encode allocates %v times", n)
	}
	lazy := func() {
		decode()
		if v, _ := msg.Metadata.Get("trpc-env"); v != "canary" {
			t.Fatal(v)
		}
	}
	// The trace context is new on every real request; here it repeats, so it is interned like the rest.
	if n := testing.AllocsPerRun(100, lazy); n != 0 {
		t.Errorf("loading trans_info allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { dst, _ = c.ErrorReply(dst[:0], msg, codec.Timeout, "t") }); n != 0 {
		t.Errorf("ErrorReply allocates %v times", n)
	}
}
