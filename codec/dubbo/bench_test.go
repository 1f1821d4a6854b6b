package dubbo

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/meltemi-mesh/meltemi/codec"
)

// benchFrame is a ~1 KB echo(String) request with the attachments a Java consumer sends plus a trace id.
func benchFrame(tb testing.TB) []byte {
	return libRequest(tb, hessian.PackageRequest_TwoWay, 1, echoService, []any{strings.Repeat("payload ", 100)},
		map[string]string{"trace-id": "4bf92f3577b34da6a3ce929d0e0e4736", "env": "canary", "remote.application": "consumer"})
}

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
		if v, _ := msg.Metadata.Get(KeyMethod); v != "echo" {
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

// BenchmarkDecodeAttachments is the lazy path: Decode, then a lookup that misses the eager keys.
func BenchmarkDecodeAttachments(b *testing.B) {
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
		if v, _ := msg.Metadata.Get("env"); v != "canary" {
			b.Fatal(v, msg.Metadata.Err())
		}
	}
}

// BenchmarkLibraryAttachments reads the same attachments with dubbo-go-hessian2, for the design note.
func BenchmarkLibraryAttachments(b *testing.B) {
	frame := benchFrame(b)
	rd := bytes.NewReader(frame)
	br := bufio.NewReaderSize(rd, 4096)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(frame)
		br.Reset(rd)
		hc := hessian.NewHessianCodec(br)
		var h hessian.DubboHeader
		if err := hc.ReadHeader(&h); err != nil {
			b.Fatal(err)
		}
		atta, err := hc.ReadAttachments()
		if err != nil || atta["env"] != "canary" {
			b.Fatal(err, atta)
		}
	}
}

func BenchmarkEncodeMutation(b *testing.B) {
	frame := benchFrame(b)
	c := newCodec(b)
	msg := &codec.Message{}
	mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "x-meltemi-cluster", Value: "outbound|20880||echo"}, {Key: "env", Value: "prod"}},
		Remove: []string{"remote.application"}}
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

// benchResponse is a ~1 KB answer to benchFrame as a dubbo-go provider writes it: RESPONSE_VALUE, the string,
// and a trailing null; with attachments, RESPONSE_VALUE_WITH_ATTACHMENTS and a map a Java provider would send.
func benchResponse(tb testing.TB, attachments bool) []byte {
	value := strings.Repeat("payload ", 100)
	if !attachments {
		return libResponse(tb, hessian.PackageResponse, 1, StatusOK, value)
	}
	return libResponse(tb, hessian.PackageResponse, 1, StatusOK, hessian.NewResponse(value, nil,
		map[string]string{"dubbo": "2.0.2", "trace-id": "4bf92f3577b34da6a3ce929d0e0e4736", "x-served-by": "v1"}))
}

// responseMutation is what a route's responseMutation becomes: keys to set.
var responseMutation = &codec.Mutation{Set: []codec.KeyValue{{Key: "x-served-by", Value: "meltemi"},
	{Key: "x-meltemi-cluster", Value: "outbound|20880|v1|echo"}}}

// BenchmarkEncodeResponseMutation decodes a response and sets two attachments, as the proxy does for a route
// with a responseMutation: added to a response without attachments (dubbo-go's), and edited in a map.
func BenchmarkEncodeResponseMutation(b *testing.B) {
	for _, tc := range []struct {
		name        string
		attachments bool
	}{{"added", false}, {"edited", true}} {
		b.Run(tc.name, func(b *testing.B) {
			frame := benchResponse(b, tc.attachments)
			c := newCodec(b)
			msg := &codec.Message{}
			var dst []byte
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				msg.Reset()
				if _, err := c.Decode(frame, msg); err != nil {
					b.Fatal(err)
				}
				var err error
				if dst, err = c.Encode(dst[:0], msg, responseMutation); err != nil {
					b.Fatal(err)
				}
			}
		})
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
		if v, _ := msg.Metadata.Get(KeyInterface); v != echoService.Path {
			t.Fatal(v)
		}
	}
	if n := testing.AllocsPerRun(100, decode); n != 0 {
		t.Errorf("Decode allocates %v times per request", n)
	}
	if n := testing.AllocsPerRun(100, func() { c.SetID(msg, 12345) }); n != 0 {
		t.Errorf("SetID allocates %v times", n)
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
		t.Errorf("Encode allocates %v times", n)
	}
	for _, attachments := range []bool{false, true} {
		frame := benchResponse(t, attachments)
		resp := &codec.Message{}
		decodeResponse := func() {
			resp.Reset()
			if _, err := c.Decode(frame, resp); err != nil {
				t.Fatal(err)
			}
		}
		if n := testing.AllocsPerRun(100, decodeResponse); n != 0 {
			t.Errorf("Decode of a response (attachments %v) allocates %v times", attachments, n)
		}
		lookup := func() {
			decodeResponse()
			resp.Metadata.Get("x-served-by")
		}
		if n := testing.AllocsPerRun(100, lookup); n != 0 {
			t.Errorf("an attachment lookup on a response (attachments %v) allocates %v times", attachments, n)
		}
		encodeResponse := func() {
			decodeResponse()
			var err error
			if dst, err = c.Encode(dst[:0], resp, responseMutation); err != nil {
				t.Fatal(err)
			}
		}
		if n := testing.AllocsPerRun(100, encodeResponse); n != 0 {
			t.Errorf("Encode of a response (attachments %v) allocates %v times", attachments, n)
		}
	}
}
