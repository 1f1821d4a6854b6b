package brpc

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/meltemi-mesh/meltemi/codec"
)

// seedFrames are frames for the fuzz corpus: the spec's shapes and what real pbrpc peers sent.
func seedFrames(tb testing.TB) map[string][]byte {
	reply, _ := (&Codec{}).ErrorReply(nil, &codec.Message{Type: codec.Request, ID: 77}, codec.RouteNotFound, "no route")
	seeds := map[string][]byte{
		"request":     request(7, userField("env", "canary"), vf(3, 1), vf(5, 3)),
		"request-att": buildFrame(cat(reqMeta("example.EchoService", "Echo", bf(7, str("rid")), vf(8, 100)), vf(metaCorrelationID, 1<<40), vf(5, 3)), "payload", "att"),
		"response":    response(8, 0, ""),
		"failed":      response(9, 2001, "boom"),
		"both":        buildFrame(cat(reqMeta("s", "m"), respMeta(0, ""), vf(metaCorrelationID, 1), bf(metaChunkInfo)), "", ""),
		"padded-id":   buildFrame(cat(reqMeta("s", "m"), []byte{0x20, 0x81, 0x80, 0x80, 0x80, 0x00}), "", ""),
		"streaming":   buildFrame(cat(reqMeta("s", "m"), vf(metaCorrelationID, 3), bf(metaStreamSettings, vf(1, 1))), "", ""),
		"error-reply": reply,
		"two-frames":  append(request(1), response(1, 0, "")...),
	}
	for _, name := range []string{"ext-attachment-gzip-request", "echo-response", "error-response", "chunked-request"} {
		seeds["pbrpc-"+name] = pbrpcFrames(tb, name)
	}
	return seeds
}

// TestSeedCorpus keeps testdata/fuzz/FuzzDecode in step with the seeds above; rewrite it with
// go test ./codec/brpc -run TestSeedCorpus -args -update.
func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	for name, data := range seedFrames(t) {
		path := filepath.Join(dir, name)
		content := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, content, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (rewrite the corpus: go test ./codec/brpc -run TestSeedCorpus -args -update)", err)
		}
		if !bytes.Equal(got, content) {
			t.Errorf("%s is out of date (rewrite the corpus: go test ./codec/brpc -run TestSeedCorpus -args -update)", path)
		}
	}
}

// FuzzDecode checks the codec against arbitrary bytes: it never panics, a decoded frame lies within the input,
// and what decodes can have its id rewritten, be re-encoded and be answered, consistently.
func FuzzDecode(f *testing.F) {
	for _, frame := range seedFrames(f) {
		f.Add(frame)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, c := range []*Codec{newCodec(t), newUpstream(t)} {
			buf := data
			for range 4 {
				msg := &codec.Message{}
				n, err := c.Decode(buf, msg)
				var fe *codec.FrameError
				switch {
				case err == codec.ErrIncomplete:
					if n != 0 && (n <= len(buf) || n < headerLen) {
						t.Fatalf("ErrIncomplete with n %d of %d bytes", n, len(buf))
					}
					return
				case errors.As(err, &fe):
					if !strings.HasPrefix(fe.Reason, "brpc: ") {
						t.Fatalf("reason %q", fe.Reason)
					}
					if fe.CanReply {
						if msg.Type != codec.Request {
							t.Fatalf("CanReply for a %v", msg.Type)
						}
						checkErrorReply(t, c, msg)
					}
					return
				case err != nil:
					t.Fatalf("error of type %T: %v", err, err)
				}
				if n < headerLen || n > len(buf) || !bytes.Equal(msg.Frame, buf[:n]) {
					t.Fatalf("n = %d of %d bytes", n, len(buf))
				}
				checkDecoded(t, c, msg)
				buf = buf[n:]
			}
		}
	})
}

// checkDecoded exercises everything the proxy may do with a decoded message.
func checkDecoded(t *testing.T, c *Codec, msg *codec.Message) {
	orig := bytes.Clone(msg.Frame)
	md := metadataOf(msg)
	mdErr := msg.Metadata.Err()
	lib, libRest, libErr := libraryMeta(orig)
	libOK := libErr == nil
	if libOK && uint64(lib.ID) != msg.ID {
		t.Fatalf("the codec reads id %d, protobuf %d", msg.ID, lib.ID)
	}

	// An empty mutation copies the frame.
	cp := &codec.Message{}
	if _, err := c.Decode(bytes.Clone(orig), cp); err != nil {
		t.Fatalf("decoding a copy: %v", err)
	}
	out, err := c.Encode(nil, cp, nil)
	if err != nil || !bytes.Equal(out, orig) {
		t.Fatalf("empty mutation: %v", err)
	}

	// SetID, in place or not, changes the id alone.
	for _, id := range []uint64{msg.ID, 1, 1 << 30, math.MaxInt32, 1 << 62, msg.ID} {
		c.SetID(cp, id)
		again := &codec.Message{}
		if _, err := c.Decode(bytes.Clone(cp.Frame), again); err != nil {
			t.Fatalf("SetID(%d): the frame no longer decodes: %v", id, err)
		}
		if again.ID != id || again.Type != msg.Type || again.Status != msg.Status {
			t.Fatalf("SetID(%d): decodes to %v %d %d, want %v %d %d", id, again.Type, again.ID, again.Status, msg.Type, id, msg.Status)
		}
		if got := metadataOf(again); !maps.Equal(got, md) {
			t.Fatalf("SetID(%d): metadata %v, want %v", id, got, md)
		}
		if libOK {
			after, rest, err := libraryMeta(cp.Frame)
			if err != nil || uint64(after.ID) != id || !proto.Equal(after.withoutID(), lib.withoutID()) || !bytes.Equal(rest, libRest) {
				t.Fatalf("SetID(%d): protobuf reads %v", id, after.msg)
			}
		}
	}

	// A real edit: the set key is there, the removed one is not, the other fields keep their bytes.
	if mdErr != nil {
		return
	}
	mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "fuzz-key", Value: "v"}}}
	var removed string
	for k := range md {
		if k != KeyService && k != KeyMethod && k != KeyCmd {
			removed = k
			mut.Remove = append(mut.Remove, k)
			break
		}
	}
	edit := &codec.Message{}
	if _, err := c.Decode(bytes.Clone(orig), edit); err != nil {
		t.Fatal(err)
	}
	out, err = c.Encode(nil, edit, mut)
	if err != nil {
		if strings.Contains(err.Error(), "exceeds limit") {
			return
		}
		t.Fatalf("encode: %v", err)
	}
	if !bytes.Equal(otherFields(t, orig), otherFields(t, out)) {
		t.Fatal("encode changed fields other than user_fields")
	}
	if edit.Type != msg.Type || edit.ID != msg.ID {
		t.Fatalf("encode: %v %d, want %v %d", edit.Type, edit.ID, msg.Type, msg.ID)
	}
	if v, _ := edit.Metadata.Get("fuzz-key"); v != "v" {
		t.Fatalf("fuzz-key = %q (%v)", v, edit.Metadata.Err())
	}
	if removed != "" {
		if _, ok := edit.Metadata.Get(removed); ok {
			t.Fatalf("%q not removed", removed)
		}
	}

	if msg.Type == codec.Request {
		checkErrorReply(t, c, msg)
	}
}

// checkErrorReply checks that the reply to a request decodes as a failed response with its id.
func checkErrorReply(t *testing.T, c *Codec, req *codec.Message) {
	for _, kind := range codec.ErrorKinds {
		reply, status := c.ErrorReply(nil, req, kind, "detail")
		r := &codec.Message{}
		n, err := newUpstream(t).Decode(reply, r)
		if err != nil || n != len(reply) || r.Type != codec.Response || r.ID != req.ID || r.Status != status || !r.Failed {
			t.Fatalf("%v reply decodes to %v %d %d: %v", kind, r.Type, r.ID, r.Status, err)
		}
	}
}
