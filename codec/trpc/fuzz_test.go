package trpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/meltemi-mesh/meltemi/codec"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the fuzz seed corpus in testdata/fuzz")

// seedFrames are the fuzz corpus: tRPC-Go's frames, and spec-built frames for what it does not write.
func seedFrames(t testing.TB) map[string][]byte {
	seeds := map[string][]byte{}
	for _, name := range goldenNames(t) {
		seeds[name] = golden(t, name)
	}
	seeds["spec-request-attachment"] = request(t, 1<<20, withTrans(routed), []byte("body"), []byte("att"))
	seeds["spec-response-ret"] = response(t, 300, fields{"ret": 31, "func_ret": -2, "error_msg": "e",
		"trans_info": map[string]string{"k": "v"}}, nil)
	seeds["spec-init-merged"] = streamFrame(1, 40, append(
		build(t, "TrpcStreamInitMeta", fields{"request_meta": fields{"caller": "a", "trans_info": map[string]string{"k": "v"}}}),
		build(t, "TrpcStreamInitMeta", fields{"request_meta": fields{"func": "/x.Y/Z"}})...))
	seeds["spec-close-trans"] = streamFrame(4, 41, build(t, "TrpcStreamCloseMeta", fields{"close_type": 1, "ret": 22,
		"trans_info": map[string]string{"k": "v"}}))
	return seeds
}

// TestSeedCorpus keeps testdata/fuzz in step with the seeds above; rewrite it with
// go test ./codec/trpc -run TestSeedCorpus -args -update-seeds.
func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	for name, data := range seedFrames(t) {
		path := filepath.Join(dir, name)
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (rewrite the corpus: go test ./codec/trpc -run TestSeedCorpus -args -update-seeds)", err)
		}
		// Golden frames are files, so their seeds match byte for byte; spec frames hold maps, whose order
		// protobuf does not promise across versions.
		if !strings.HasPrefix(name, "spec-") && string(got) != content {
			t.Errorf("%s differs from its golden frame", path)
		}
	}
}

// FuzzDecode checks the codec against arbitrary bytes: it never panics, a decoded frame lies within the
// input, and what decodes can have its id rewritten, be re-encoded, answered and decoded again consistently.
func FuzzDecode(f *testing.F) {
	for _, frame := range seedFrames(f) {
		f.Add(frame)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newCodec(t)
		msg := &codec.Message{}
		buf := data
		for range 8 {
			msg.Reset()
			n, err := c.Decode(buf, msg)
			var fe *codec.FrameError
			switch {
			case err == codec.ErrIncomplete:
				if n != 0 && (n <= len(buf) || n < headerLen) {
					t.Fatalf("ErrIncomplete with n %d of %d bytes", n, len(buf))
				}
				return
			case errors.As(err, &fe):
				if !strings.HasPrefix(fe.Reason, "trpc: ") || n != 0 {
					t.Fatalf("reason %q, n %d", fe.Reason, n)
				}
				if fe.CanReply {
					checkErrorReply(t, c, msg)
				}
				return
			case err != nil:
				t.Fatalf("error of type %T: %v", err, err)
			}
			if n < headerLen || n > len(buf) || !bytes.Equal(msg.Frame, buf[:n]) {
				t.Fatalf("n = %d of %d bytes", n, len(buf))
			}
			checkDecoded(t, msg)
			buf = buf[n:]
		}
	})
}

// sideOf returns a codec that reads msg's frame as msg was read, whatever the fuzzing codec had learnt.
func sideOf(t testing.TB, msg *codec.Message) *Codec {
	c := newCodec(t)
	switch msg.Private[privState] & kindMask {
	case kindUnaryRequest, kindInitRequest:
		c.side = sideDownstream
	case kindUnaryResponse, kindInitResponse:
		c.side = sideUpstream
	}
	return c
}

// checkDecoded exercises everything the proxy may do with a decoded message.
func checkDecoded(t *testing.T, msg *codec.Message) {
	frame := bytes.Clone(msg.Frame)
	c := sideOf(t, msg)
	orig := &codec.Message{}
	if _, err := c.Decode(frame, orig); err != nil {
		t.Fatalf("decoding a copy: %v", err)
	}
	before := snapshot(orig)

	// An empty mutation copies the frame.
	out, err := c.Encode(nil, orig, &codec.Mutation{})
	if err != nil || !bytes.Equal(out, frame) {
		t.Fatalf("empty mutation: %v", err)
	}

	// A new id, in both places, and nothing else changed.
	for _, id := range []uint64{1, 1<<31 - 1} {
		m := &codec.Message{}
		if _, err := c.Decode(bytes.Clone(frame), m); err != nil {
			t.Fatal(err)
		}
		c.SetID(m, id)
		if got := binary.BigEndian.Uint32(m.Frame[10:14]); got != uint32(id) || m.ID != id {
			t.Fatalf("SetID(%d): fixed header %d, ID %d", id, got, m.ID)
		}
		again := &codec.Message{}
		if _, err := sideOf(t, m).Decode(m.Frame, again); err != nil {
			t.Fatalf("SetID(%d) frame does not decode: %v", id, err)
		}
		if again.Type != orig.Type || again.Status != orig.Status || again.Failed != orig.Failed ||
			!slices.Equal(snapshot(again)[1:], before[1:]) {
			t.Fatalf("SetID(%d) decodes to %q, was %q", id, snapshot(again), before)
		}
		// Only a unary header already at its size limit cannot take a longer id.
		canGrow := frame[2] == frameStream || binary.BigEndian.Uint16(frame[8:10]) <= maxProtoHeader-6
		if again.ID != id && canGrow {
			t.Fatalf("SetID(%d) decodes to id %d", id, again.ID)
		}
	}

	if orig.Type == codec.Request || orig.Type == codec.StreamInit {
		checkErrorReply(t, c, orig)
	}
	if orig.Metadata.Err() != nil {
		return
	}

	// A real edit, where the frame can carry trans_info.
	edit := &codec.Message{}
	if _, err := c.Decode(frame, edit); err != nil {
		t.Fatal(err)
	}
	mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "fz-set", Value: "v\x00😀"}}, Remove: []string{"fz-rm"}}
	out, err = c.Encode([]byte("dst"), edit, mut)
	if err != nil {
		return // no trans_info here, or over a limit: each says so
	}
	if string(out[:3]) != "dst" {
		t.Fatal("dst prefix overwritten")
	}
	enc := &codec.Message{}
	if _, err := sideOf(t, orig).Decode(out[3:], enc); err != nil {
		t.Fatalf("edited frame does not decode: %v", err)
	}
	if v, ok := enc.Metadata.Get("fz-set"); !ok || v != "v\x00😀" {
		t.Fatalf("fz-set = %q, %v (%v)", v, ok, enc.Metadata.Err())
	}
	if _, ok := enc.Metadata.Get("fz-rm"); ok {
		t.Fatal("fz-rm still there")
	}
	if enc.Type != orig.Type || enc.ID != orig.ID || enc.Status != orig.Status {
		t.Fatalf("edit changed %v %d %d to %v %d %d", orig.Type, orig.ID, orig.Status, enc.Type, enc.ID, enc.Status)
	}
	for _, k := range []string{KeyCaller, KeyCallee, KeyFunc} {
		a, _ := orig.Metadata.Get(k)
		b, _ := enc.Metadata.Get(k)
		if a != b {
			t.Fatalf("%s changed from %q to %q", k, a, b)
		}
	}
}

// snapshot lists a message's header fields and metadata.
func snapshot(msg *codec.Message) []string {
	s := []string{fmt.Sprint(msg.Type, msg.ID, msg.Status, msg.Failed)}
	md := map[string]string{}
	msg.Metadata.All(func(k, v string) bool {
		md[k] = v
		return true
	})
	for _, k := range slices.Sorted(maps.Keys(md)) {
		s = append(s, k+"="+md[k])
	}
	if err := msg.Metadata.Err(); err != nil {
		s = append(s, "err")
	}
	return s
}

// checkErrorReply checks that every error reply to req decodes as its failure.
func checkErrorReply(t *testing.T, c *Codec, req *codec.Message) {
	want := codec.Response
	if req.Type == codec.StreamInit {
		want = codec.StreamInit
	}
	for _, kind := range codec.ErrorKinds {
		reply, status := c.ErrorReply(nil, req, kind, "detail")
		if req.Type == codec.StreamInit && req.Private[privState]&kindMask == kindInitResponse {
			if len(reply) != 0 {
				t.Fatal("error reply to a server's INIT")
			}
			continue
		}
		r := &codec.Message{}
		rc := newCodec(t)
		rc.side = sideUpstream
		if _, err := rc.Decode(reply, r); err != nil || r.Type != want || !r.Failed || r.Status != status || r.ID != uint64(uint32(req.ID)) {
			t.Fatalf("%v reply decodes to %v failed %v status %d id %d: %v", kind, r.Type, r.Failed, r.Status, r.ID, err)
		}
	}
}

// FuzzHeaderAgainstProtobuf decodes arbitrary protocol headers and stream metas with the codec and with the
// protobuf runtime (from the transcribed trpc.proto), and requires the two to agree on every field the codec
// reads, whenever protobuf accepts the bytes.
func FuzzHeaderAgainstProtobuf(f *testing.F) {
	for _, frame := range seedFrames(f) {
		if frame[2] == frameUnary {
			f.Add(protoHeader(frame))
		} else {
			f.Add(frame[16:])
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 || len(b) > maxProtoHeader {
			return
		}
		agree := func(name string, frame []byte, side side, check func(p parsed, msg *codec.Message)) {
			m := dynamicpbParse(name, b)
			c := newCodec(t)
			c.side = side
			msg := &codec.Message{}
			_, err := c.Decode(frame, msg)
			if m == nil || name != "TrpcStreamInitMeta" && name != "TrpcStreamCloseMeta" && m.int("attachment_size") > 1<<16 {
				return // protobuf refuses it (invalid UTF-8 in a map key, say; the codec may be laxer), or no room
			}
			if err != nil {
				t.Fatalf("%s: protobuf reads it, the codec does not: %v", name, err)
			}
			check(*m, msg)
		}
		// same requires msg's metadata to be protobuf's trans_info, overlaid with the non-empty names of
		// names (caller, callee and func) when there are some.
		same := func(trans, names parsed, hasNames bool, msg *codec.Message) {
			want := trans.trans()
			if hasNames {
				for _, k := range []string{KeyCaller, KeyCallee, KeyFunc} {
					if v := names.str(k); v != "" {
						want[k] = v
					}
				}
			}
			got := map[string]string{}
			msg.Metadata.All(func(k, v string) bool { got[k] = v; return true })
			if msg.Metadata.Err() != nil {
				t.Fatalf("trans_info that protobuf reads fails: %v", msg.Metadata.Err())
			}
			if !maps.Equal(got, want) {
				t.Fatalf("metadata %q; protobuf says %q", got, want)
			}
		}
		// A unary frame needs room for the attachment its header announces.
		unary := func(name string) []byte {
			if m := dynamicpbParse(name, b); m != nil && m.int("attachment_size") <= 1<<16 {
				return unaryFrame(0, b, nil, make([]byte, m.int("attachment_size")))
			}
			return unaryFrame(0, b, nil, nil)
		}
		agree("RequestProtocol", unary("RequestProtocol"), sideDownstream, func(p parsed, msg *codec.Message) {
			if msg.ID != uint64(p.int("request_id")) || (msg.Type == codec.Oneway) != (p.int("call_type") == 1) {
				t.Fatalf("request id %d type %v; protobuf says %d, call type %d", msg.ID, msg.Type, p.int("request_id"), p.int("call_type"))
			}
			same(p, p, true, msg)
		})
		agree("ResponseProtocol", unary("ResponseProtocol"), sideUpstream, func(p parsed, msg *codec.Message) {
			ret, funcRet := int32(p.int("ret")), int32(p.int("func_ret"))
			want := ret
			if ret == 0 {
				want = funcRet
			}
			if msg.ID != uint64(p.int("request_id")) || msg.Status != want || msg.Failed != (ret != 0 || funcRet != 0) {
				t.Fatalf("response id %d status %d; protobuf says %d, ret %d, func_ret %d", msg.ID, msg.Status, p.int("request_id"), ret, funcRet)
			}
			same(p, p, false, msg)
		})
		agree("TrpcStreamInitMeta", streamFrame(1, 1, b), sideDownstream, func(p parsed, msg *codec.Message) {
			if p.m.Has(p.field("response_meta")) {
				if ret := int32(p.sub("response_meta").int("ret")); msg.Status != ret {
					t.Fatalf("init status %d; protobuf says %d", msg.Status, ret)
				}
				return
			}
			rm := p.sub("request_meta")
			same(rm, rm, true, msg)
		})
		agree("TrpcStreamCloseMeta", streamFrame(4, 1, b), sideDownstream, func(p parsed, msg *codec.Message) {
			if (msg.Type == codec.StreamCloseTwoWay) != (p.int("close_type") == closeReset) {
				t.Fatalf("close type %v; protobuf says %d", msg.Type, p.int("close_type"))
			}
			same(p, p, false, msg)
		})
	})
}

// dynamicpbParse reads b as a message of trpc.proto, or returns nil when protobuf refuses it. The reflective
// path protobuf takes for dynamic messages panics on a map entry whose key has another wire type (generated
// code does not): that counts as a refusal too.
func dynamicpbParse(name string, b []byte) (p *parsed) {
	defer func() {
		if recover() != nil {
			p = nil
		}
	}()
	m := dynamicpb.NewMessage(trpcProto.Messages().ByName(protoreflect.Name(name)))
	if err := proto.Unmarshal(b, m); err != nil {
		return nil
	}
	return &parsed{m}
}
