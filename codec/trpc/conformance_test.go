package trpc

import (
	"encoding/binary"
	"maps"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/codectest"
)

// TestConformance runs the codec conformance kit on frames tRPC-Go v1.0.3 wrote.
func TestConformance(t *testing.T) { codectest.Run(t, conformanceSuite(t)) }

// FuzzConformance checks the kit's invariants on arbitrary bytes, seeded with the same frames.
func FuzzConformance(f *testing.F) { codectest.Fuzz(f, conformanceSuite(f)) }

// withID returns a unary frame with its request id replaced in both places, written by the protobuf runtime
// rather than by the codec under test.
//
// The kit requires SetID to rewrite every id up to 2^31-1 in place and without allocating, then to restore the
// frame byte for byte. A request_id varint takes such ids in place only when it already has five bytes (ids
// from 2^28), so the unary samples carry such ids. Shorter ids, which need the frame rebuilt one to four bytes
// longer, are checked by TestSetID and, against tRPC-Go, by testdata/trpcgo.
func withID(t testing.TB, frame []byte, id uint32) []byte {
	t.Helper()
	hdr := protoHeader(frame)
	name := "ResponseProtocol"
	if decodeOne(t, newCodec(t), frame).Type != codec.Response {
		name = "RequestProtocol"
	}
	p := parse(t, name, hdr)
	p.m.Set(p.field("request_id"), protoreflect.ValueOfUint32(id))
	newHdr, err := proto.MarshalOptions{Deterministic: true}.Marshal(p.m)
	if err != nil {
		t.Fatal(err)
	}
	return unaryFrame(id, newHdr, frame[16+len(hdr):], nil)
}

// conformanceSuite describes the tRPC codec to the kit. Each sample's metadata is everything the codec decodes
// from it, trans_info included, so a mutation that loses or invents a key shows.
func conformanceSuite(t testing.TB) codectest.Suite {
	names := map[string]string{"caller": "trpc.test.client.service", "callee": "trpc.test.echo.Echo",
		"func": "/trpc.test.echo.Echo/Say"}
	with := func(extra map[string]string) map[string]string {
		m := maps.Clone(names)
		maps.Copy(m, extra)
		return m
	}
	const (
		id1 = 1<<28 + 1
		id2 = 1<<31 - 1
		id3 = 0x5a5a5a5a
	)
	unary := func(name string, id uint32, typ codec.MessageType, status int32, md map[string]string) codectest.Sample {
		return codectest.Sample{Name: name, Frame: withID(t, golden(t, name), id), Type: typ, ID: uint64(id),
			Status: status, Failed: status != 0, Metadata: md}
	}
	stream := func(name string, typ codec.MessageType, status int32, md map[string]string) codectest.Sample {
		return codectest.Sample{Name: name, Frame: golden(t, name), Type: typ, ID: 5, Status: status, Failed: status != 0,
			Metadata: md}
	}
	binaryValues := withTrans(routed)
	binaryValues["trans_info"] = map[string]string{"bin": "\x00\xff", "long": string(make([]byte, 300))}
	return codectest.Suite{
		Registration: Registration(),
		Multiplexing: true,
		MutableKeys:  []string{"env", "x-trace", "codectest-new"},
		// Decode interns caller, callee and func per connection and leaves trans_info for later.
		ZeroAllocDecode: true,
		Samples: []codectest.Sample{
			unary("request", id1, codec.Request, 0, with(map[string]string{"env": "canary", "x-trace": "t-1"})),
			unary("oneway", id2, codec.Oneway, 0, with(map[string]string{"env": "canary", "x-trace": "t-1"})),
			unary("request-bare", id3, codec.Request, 0, map[string]string{"caller": names["caller"], "func": names["func"]}),
			{
				Name:  "request-attachment-binary-trans-info",
				Frame: request(t, id2, binaryValues, []byte("body"), []byte("attachment")),
				Type:  codec.Request, ID: id2,
				Metadata: map[string]string{"caller": "trpc.app.client.service", "callee": "trpc.app.echo.Echo",
					"func": "/trpc.app.echo.Echo/Say", "bin": "\x00\xff", "long": string(make([]byte, 300))},
			},
			unary("response", id1, codec.Response, 0, map[string]string{"rsp-key": "rsp-value"}),
			unary("response-business-error", id2, codec.Response, 10042, map[string]string{"env": "canary", "x-trace": "t-1"}),
			unary("response-framework-error", id3, codec.Response, 22, map[string]string{"env": "canary", "x-trace": "t-1"}),
			unary("response-bare", id1, codec.Response, 0, map[string]string{}),
			stream("stream-init", codec.StreamInit, 0, with(map[string]string{"env": "canary"})),
			stream("stream-init-response", codec.StreamInit, 0, map[string]string{}),
			stream("stream-data", codec.StreamData, 0, map[string]string{}),
			stream("stream-feedback", codec.StreamFeedback, 0, map[string]string{}),
			stream("stream-close", codec.StreamCloseOneWay, 0, map[string]string{}),
			stream("stream-reset", codec.StreamCloseTwoWay, 31, map[string]string{}),
		},
		Foreign: codectest.Preambles("trpc"),
	}
}

// TestConformanceIDs keeps the samples' ids where withID says: five varint bytes, in both places.
func TestConformanceIDs(t *testing.T) {
	for _, smp := range conformanceSuite(t).Samples {
		if smp.Frame[2] != frameUnary {
			continue
		}
		p := parse(t, "RequestProtocol", protoHeader(smp.Frame)) // request_id is field 3 in both messages
		if uint64(p.int("request_id")) != smp.ID || uint64(binary.BigEndian.Uint32(smp.Frame[10:14])) != smp.ID || smp.ID < 1<<28 {
			t.Errorf("%s: ids %d / %d, want %d (at least 2^28)", smp.Name, p.int("request_id"), binary.BigEndian.Uint32(smp.Frame[10:14]), smp.ID)
		}
	}
}
