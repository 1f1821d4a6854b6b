package thrift

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	athrift "github.com/apache/thrift/lib/go/thrift"

	"github.com/meltemi-mesh/meltemi/codec"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the fuzz seed corpus in testdata/fuzz")

// seedFrames are real messages for the decoder's corpus, one per transport and protocol.
func seedFrames(t testing.TB) map[string][]byte {
	seeds := map[string][]byte{}
	hdr := map[string]string{"env": "canary"}
	for _, w := range wires {
		name := strings.ReplaceAll(w.String(), "/", "-")
		seeds[name+"-call"] = libMessage(t, w, "echo", athrift.CALL, 7, &richArgs{text: "hi"}, hdr)
		seeds[name+"-exception"] = libMessage(t, w, "echo", athrift.EXCEPTION, 8,
			athrift.NewTApplicationException(athrift.UNKNOWN_METHOD, "no"), nil)
	}
	seeds["framed-binary-reply-declared"] = libMessage(t, wires[0], "echo", athrift.REPLY, 9, &result{field: 2, text: "x"}, nil)
	seeds["buffered-compact-oneway"] = libMessage(t, wires[5], "echo", athrift.ONEWAY, 300, &richArgs{}, nil)
	seeds["kitex-ttheader"] = ttHeaderFrame(5, 1, [][2]string{{"k", "v"}}, map[uint16]string{3: "svc"}, "acl",
		payloadOf(t, "binary", "S:m", athrift.CALL, 5, &richArgs{}))
	return seeds
}

// seedStructs are message bodies for the skipper's corpus; the first byte picks the protocol.
func seedStructs(t testing.TB) map[string][]byte {
	seeds := map[string][]byte{}
	for _, proto := range []string{"binary", "compact"} {
		ser := athrift.NewTSerializer()
		if proto == "compact" {
			ser.Protocol = athrift.NewTCompactProtocolConf(ser.Transport, &athrift.TConfiguration{})
		}
		for name, v := range map[string]athrift.TStruct{
			"rich":      &richArgs{text: "all types"},
			"result":    &result{field: 0, text: "ok"},
			"exception": athrift.NewTApplicationException(athrift.INTERNAL_ERROR, "boom"),
		} {
			b, err := ser.Write(context.Background(), v)
			if err != nil {
				t.Fatal(err)
			}
			sel := byte(0)
			if proto == "compact" {
				sel = 1
			}
			seeds[proto+"-"+name] = append([]byte{sel}, b...)
		}
	}
	return seeds
}

// TestSeedCorpus keeps testdata/fuzz in step with the seeds above; rewrite it with
// go test ./codec/thrift -run TestSeedCorpus -args -update-seeds.
func TestSeedCorpus(t *testing.T) {
	for target, seeds := range map[string]map[string][]byte{"FuzzDecode": seedFrames(t), "FuzzSkip": seedStructs(t)} {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, data := range seeds {
			// THeader key/values and the library's map writes are unordered, so only the set of files and their
			// form are checked, not their bytes.
			path := filepath.Join(dir, name)
			if *updateSeeds {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			content, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (rewrite the corpus: go test ./codec/thrift -run TestSeedCorpus -args -update-seeds)", err)
			}
			if !bytes.HasPrefix(content, []byte("go test fuzz v1\n[]byte(")) {
				t.Errorf("%s is not a fuzz corpus file", path)
			}
		}
	}
}

// FuzzDecode checks the codec against arbitrary bytes: it never panics, a decoded frame lies within the
// input, and what decodes can be re-encoded, answered, renumbered and decoded again consistently.
func FuzzDecode(f *testing.F) {
	for _, frame := range seedFrames(f) {
		f.Add(frame)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newCodec(t)
		buf := data
		for range 8 {
			msg := &codec.Message{}
			n, err := c.Decode(buf, msg)
			var fe *codec.FrameError
			switch {
			case err == codec.ErrIncomplete:
				if n != 0 && n <= len(buf) {
					t.Fatalf("ErrIncomplete with n %d of %d bytes", n, len(buf))
				}
				return
			case errors.As(err, &fe):
				if !strings.HasPrefix(fe.Reason, "thrift: ") {
					t.Fatalf("reason %q", fe.Reason)
				}
				if fe.CanReply {
					checkFuzzErrorReply(t, c, msg)
				}
				return
			case err != nil:
				t.Fatalf("error of type %T: %v", err, err)
			}
			if n <= 0 || n > len(buf) || !bytes.Equal(msg.Frame, buf[:n]) {
				t.Fatalf("n = %d of %d bytes", n, len(buf))
			}
			checkFuzzDecoded(t, msg)
			buf = buf[n:]
		}
	})
}

// checkFuzzDecoded exercises everything the proxy may do with a decoded message.
func checkFuzzDecoded(t *testing.T, msg *codec.Message) {
	frame := bytes.Clone(msg.Frame)
	c := newCodec(t)
	orig := &codec.Message{}
	if _, err := c.Decode(frame, orig); err != nil {
		t.Fatalf("decoding a copy: %v", err)
	}
	before := snapshot(orig)
	if msg.Type == codec.Heartbeat || msg.Type == codec.HeartbeatResponse {
		t.Fatalf("Thrift has no heartbeats, decoded %v", msg.Type)
	}

	out, err := c.Encode(nil, orig, &codec.Mutation{})
	if err != nil || !bytes.Equal(out, frame) {
		t.Fatalf("empty mutation: %v", err)
	}
	if msg.Type == codec.Request {
		checkFuzzErrorReply(t, c, orig)
	}

	// A new seqid reads back, with everything else unchanged, whatever the varint lengths.
	for _, id := range []uint64{1<<31 - 1, 1, 300} {
		renum := &codec.Message{}
		if _, err := c.Decode(bytes.Clone(frame), renum); err != nil {
			t.Fatal(err)
		}
		c.SetID(renum, id)
		again := &codec.Message{}
		if n, err := newCodec(t).Decode(renum.Frame, again); err != nil || n != len(renum.Frame) || again.ID != id {
			t.Fatalf("after SetID(%d): n %d of %d, id %d: %v", id, n, len(renum.Frame), again.ID, err)
		}
		after := snapshot(again)
		if after[0] = before[0]; !slices.Equal(before[1:], after[1:]) {
			t.Fatalf("SetID(%d) changed the message\nbefore %q\n after %q", id, before, after)
		}
	}

	// A THeader mutation sets and removes keys and keeps the rest.
	edit := &codec.Message{}
	if _, err := c.Decode(frame, edit); err != nil {
		t.Fatal(err)
	}
	mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "fz-set", Value: "v😀"}}, Remove: []string{"fz-rm"}}
	out, err = c.Encode([]byte("dst"), edit, mut)
	if err != nil {
		return // not THeader, or over a limit: each says so
	}
	if string(out[:3]) != "dst" {
		t.Fatal("dst prefix overwritten")
	}
	enc := &codec.Message{}
	if _, err := newCodec(t).Decode(out[3:], enc); err != nil {
		t.Fatalf("edited frame does not decode: %v", err)
	}
	if v, ok := enc.Metadata.Get("fz-set"); !ok || v != "v😀" {
		t.Fatalf("fz-set = %q, %v (%v)", v, ok, enc.Metadata.Err())
	}
	if _, ok := enc.Metadata.Get("fz-rm"); ok {
		t.Fatal("fz-rm still there")
	}
	if enc.Type != orig.Type || enc.ID != orig.ID {
		t.Fatalf("edit changed %v %d into %v %d", orig.Type, orig.ID, enc.Type, enc.ID)
	}
}

// snapshot lists a message's header fields and metadata.
func snapshot(msg *codec.Message) []string {
	s := []string{fmt.Sprint(msg.Type, msg.ID, msg.Status, msg.Failed)}
	msg.Metadata.All(func(k, v string) bool {
		s = append(s, k+"="+v)
		return true
	})
	if err := msg.Metadata.Err(); err != nil {
		s = append(s, "err="+err.Error())
	}
	return s
}

func checkFuzzErrorReply(t *testing.T, c *Codec, req *codec.Message) {
	req.Frame = nil
	for _, kind := range codec.ErrorKinds {
		reply, status := c.ErrorReply(nil, req, kind, "detail")
		r := &codec.Message{}
		if n, err := newCodec(t).Decode(reply, r); err != nil || n != len(reply) || r.Type != codec.Error || !r.Failed ||
			r.Status != status || r.ID != req.ID {
			t.Fatalf("%v reply decodes to %v failed %v status %d id %d: %v", kind, r.Type, r.Failed, r.Status, r.ID, err)
		}
	}
}

// FuzzSkip checks the struct skippers on arbitrary bytes (the first byte picks binary or compact): no panic,
// progress within the input, and agreement with the Apache library wherever the library reads the struct.
func FuzzSkip(f *testing.F) {
	for _, v := range seedStructs(f) {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		compact := data[0]&1 == 1
		body := data[1:]
		var end int
		var err error
		if compact {
			end, err = skipCompactStruct(body, 0, 0)
		} else {
			end, err = skipBinaryStruct(body, 0, 0)
		}
		if err == nil && (end <= 0 || end > len(body)) {
			t.Fatalf("skip returned %d of %d", end, len(body))
		}
		if err != nil && err != errShort && !strings.HasPrefix(err.Error(), "thrift: ") {
			t.Fatalf("error %v", err)
		}
		// Whatever the library reads, the skipper reads to the same end, unless it hit its depth limit.
		mem := athrift.NewTMemoryBuffer()
		mem.Write(body)
		var p athrift.TProtocol = athrift.NewTBinaryProtocolConf(mem, &athrift.TConfiguration{})
		if compact {
			p = athrift.NewTCompactProtocolConf(mem, &athrift.TConfiguration{})
		}
		if athrift.Skip(context.Background(), p, athrift.STRUCT, 1000) != nil {
			return
		}
		libEnd := len(body) - mem.Len()
		if err != nil && strings.Contains(err.Error(), "nests deeper") {
			return
		}
		if err != nil || end != libEnd {
			t.Fatalf("the library reads a %d-byte struct, the skipper %d: %v", libEnd, end, err)
		}
	})
}
