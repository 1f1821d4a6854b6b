package thrift

import (
	"strings"
	"testing"

	athrift "github.com/apache/thrift/lib/go/thrift"

	"github.com/meltemi-mesh/meltemi/codec"
)

// benchFrame is a framed strict-binary CALL whose body is about 1 KB.
func benchFrame(tb testing.TB) []byte {
	return libMessage(tb, wires[0], "echo", athrift.CALL, 1, &richArgs{text: strings.Repeat("payload ", 100)}, nil)
}

func BenchmarkDecodeFramedBinary(b *testing.B) {
	benchDecode(b, benchFrame(b), KeyMethod, "echo")
}

// BenchmarkDecodeUnframedCompact finds the end of an unframed message by skipping its whole struct.
func BenchmarkDecodeUnframedCompact(b *testing.B) {
	frame := libMessage(b, wires[5], "echo", athrift.CALL, 1, &richArgs{text: strings.Repeat("payload ", 100)}, nil)
	benchDecode(b, frame, KeyMethod, "echo")
}

// BenchmarkDecodeTHeaderKeyValue is the lazy path: Decode, then a lookup of a THeader key/value.
func BenchmarkDecodeTHeaderKeyValue(b *testing.B) {
	frame := libMessage(b, wires[6], "echo", athrift.CALL, 1, &richArgs{text: strings.Repeat("payload ", 100)},
		map[string]string{"env": "canary", "tenant": "blue", "caller": "frontend"})
	benchDecode(b, frame, "env", "canary")
}

func benchDecode(b *testing.B, frame []byte, key, want string) {
	c := newCodec(b)
	msg := &codec.Message{}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		msg.Reset()
		if _, err := c.Decode(frame, msg); err != nil {
			b.Fatal(err)
		}
		if v, _ := msg.Metadata.Get(key); v != want {
			b.Fatal(v)
		}
	}
}

func BenchmarkSetID(b *testing.B) {
	c := newCodec(b)
	msg := decodeOne(b, c, benchFrame(b))
	b.ReportAllocs()
	id := uint64(0)
	for b.Loop() {
		id++
		c.SetID(msg, id&0x7fffffff)
	}
}

// BenchmarkSetIDCompact rewrites a compact seqid with values of its own varint length, the common case.
func BenchmarkSetIDCompact(b *testing.B) {
	c := newCodec(b)
	msg := decodeOne(b, c, libMessage(b, wires[2], "echo", athrift.CALL, 1<<20, &richArgs{}, nil))
	b.ReportAllocs()
	id := uint64(1 << 20)
	for b.Loop() {
		id++
		c.SetID(msg, 1<<20|id&0xfffff)
	}
}

func BenchmarkEncodeTHeaderMutation(b *testing.B) {
	frame := libMessage(b, wires[6], "echo", athrift.CALL, 1, &richArgs{text: strings.Repeat("payload ", 100)},
		map[string]string{"env": "canary", "tenant": "blue", "caller": "frontend"})
	c := newCodec(b)
	msg := &codec.Message{}
	mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "x-meltemi-cluster", Value: "outbound|9090||echo"}, {Key: "env", Value: "prod"}},
		Remove: []string{"caller"}}
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

// TestSteadyStateAllocs pins the zero-allocation paths the benchmarks measure.
func TestSteadyStateAllocs(t *testing.T) {
	for _, w := range wires {
		frame := libMessage(t, w, "echo", athrift.CALL, 1, &richArgs{text: "x"}, map[string]string{"env": "canary"})
		c := newCodec(t)
		msg := &codec.Message{}
		decode := func() {
			msg.Reset()
			if _, err := c.Decode(frame, msg); err != nil {
				t.Fatal(err)
			}
			if v, _ := msg.Metadata.Get(KeyMethod); v != "echo" {
				t.Fatal(v)
			}
		}
		if n := testing.AllocsPerRun(100, decode); n != 0 {
			t.Errorf("%v: Decode allocates %v times per message", w, n)
		}
		if n := testing.AllocsPerRun(100, func() { c.SetID(msg, 12345) }); n != 0 {
			t.Errorf("%v: SetID allocates %v times", w, n)
		}
		if w.transport != "header" {
			continue
		}
		withKV := func() {
			decode()
			if v, _ := msg.Metadata.Get("env"); v != "canary" {
				t.Fatal(v)
			}
		}
		if n := testing.AllocsPerRun(100, withKV); n != 0 {
			t.Errorf("%v: Decode and a key/value lookup allocate %v times", w, n)
		}
		var dst []byte
		mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "env", Value: "prod"}}}
		encode := func() {
			decode()
			var err error
			if dst, err = c.Encode(dst[:0], msg, mut); err != nil {
				t.Fatal(err)
			}
		}
		if n := testing.AllocsPerRun(100, encode); n != 0 {
			t.Errorf("%v: Encode allocates %v times", w, n)
		}
	}
}
