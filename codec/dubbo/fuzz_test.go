package dubbo

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/meltemi-mesh/meltemi/codec"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the fuzz seed corpus in testdata/fuzz")

// seedFrames are real frames for the fuzz corpora.
func seedFrames(t testing.TB) map[string][]byte {
	return map[string][]byte{
		"request": libRequest(t, hessian.PackageRequest_TwoWay, 1, echoService, []any{"hello"}, map[string]string{"trace-id": "abc"}),
		"request-pojo": libRequest(t, hessian.PackageRequest_TwoWay, 2, hessian.Service{Path: "svc.P", Method: "m"},
			[]any{&user{Name: "ann", Friends: []*user{{Name: "bob"}}}, int64(5), []byte("b")}, map[string]string{"k": "v"}),
		"request-unicode": libRequest(t, hessian.PackageRequest_TwoWay, 3, hessian.Service{Path: "服务", Method: "grüß"},
			[]any{"😀"}, map[string]string{"e": "a😀b"}),
		"oneway":         libRequest(t, hessian.PackageRequest, 4, echoService, []any{int32(1)}, nil),
		"heartbeat":      libRequest(t, hessian.PackageHeartbeat, 5, hessian.Service{}, []any{}, nil),
		"readonly":       rawFrame(0xa2, 0, 6, []byte{0x01, 'R'}),
		"response":       libResponse(t, hessian.PackageResponse, 7, StatusOK, hessian.NewResponse("pong", nil, map[string]string{"dubbo": "2.0.2"})),
		"error":          libResponse(t, hessian.PackageResponse, 8, StatusServiceError, hessian.NewResponse(nil, errors.New("boom"), nil)),
		"no-attachments": rawFrame(0xc2, 0, 9, encodeValues(t, "2.0.2", "svc.S", "", "m", "Ljava/lang/String;", "arg")),
		"typed-map": rawFrame(0xc2, 0, 10, append(append(encodeValues(t, "2.0.2", "s", "", "m", ""), 'M'),
			append(encodeValues(t, "java.util.TreeMap", "k", int32(1)), 'Z')...)),
		"old-client": rawFrame(0xc2, 0, 11, encodeValues(t, "2.5.3", "svc.S", "", "m", "Ljava/lang/String;", "arg",
			map[string]string{"k": "v"})),
		// Responses as a dubbo-go provider writes them (no attachments, a trailing null) and with attachments.
		"response-value": libResponse(t, hessian.PackageResponse, 12, StatusOK, "pong"),
		"response-null-attachments": libResponse(t, hessian.PackageResponse, 13, StatusOK,
			hessian.NewResponse(nil, nil, map[string]string{"dubbo": "2.0.2", "k": "v"})),
		"response-exception-attachments": libResponse(t, hessian.PackageResponse, 14, StatusOK,
			hessian.NewResponse(nil, errors.New("boom"), map[string]string{"dubbo": "2.0.2"})),
		"response-pojo-object-attachment": rawFrame(0x02, StatusOK, 15, append(encodeValues(t, int32(responseValueAttach),
			&user{Name: "u"}, map[any]any{"who": &user{Name: "a"}, "s": "t"}), 'N')),
	}
}

// seedValues are Hessian values for the skipper's corpus.
func seedValues(t testing.TB) map[string][]byte {
	return map[string][]byte{
		"pojo":    encodeValues(t, &user{Name: "a", Tags: []string{"t"}}, &user{Name: "b"}),
		"map":     encodeValues(t, map[any]any{"k": int32(1), int32(2): []any{1.5, nil, true}}),
		"strings": encodeValues(t, strings.Repeat("😀", 5000), "", "abc"),
		"grammar": {'C', 0x01, 'P', 0x91, 0x01, 'a', 'O', 0x90, 'V', 0x90, 0x92, 'T', 'F', 'Q', 0x90, 0x4b, 0, 0, 0, 1,
			0x5f, 0, 0, 0, 1, 'A', 0, 1, 9, 0x21, 8, 'R', 0, 1, 'a', 0x01, 'b'},
	}
}

// TestSeedCorpus keeps testdata/fuzz in step with the seeds above; rewrite it with
// go test ./codec/dubbo -run TestSeedCorpus -args -update-seeds.
func TestSeedCorpus(t *testing.T) {
	for target, seeds := range map[string]map[string][]byte{"FuzzDecode": seedFrames(t), "FuzzHessianSkip": seedValues(t)} {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, data := range seeds {
			// Map iteration and dubbo-go-hessian2's map encoding are unordered, so only the set of files and
			// their well-formedness are checked, not their bytes.
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
				t.Fatalf("%v (rewrite the corpus: go test ./codec/dubbo -run TestSeedCorpus -args -update-seeds)", err)
			}
			if !bytes.HasPrefix(content, []byte("go test fuzz v1\n[]byte(")) {
				t.Errorf("%s is not a fuzz corpus file", path)
			}
		}
	}
}

// FuzzDecode checks the codec against arbitrary bytes: it never panics, a decoded frame lies within the
// input, and what decodes can be re-encoded, answered and decoded again consistently.
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
				if n != 0 && n <= len(buf) {
					t.Fatalf("ErrIncomplete with n %d of %d bytes", n, len(buf))
				}
				return
			case errors.As(err, &fe):
				if fe.Reason == "" || !strings.HasPrefix(fe.Reason, "dubbo: ") {
					t.Fatalf("reason %q", fe.Reason)
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

// checkDecoded exercises everything the proxy may do with a decoded message.
func checkDecoded(t *testing.T, msg *codec.Message) {
	frame := bytes.Clone(msg.Frame)
	c := newCodec(t)
	orig := &codec.Message{}
	if _, err := c.Decode(frame, orig); err != nil {
		t.Fatalf("decoding a copy: %v", err)
	}
	before := snapshot(orig)

	// An empty mutation decodes again to the same metadata.
	out, err := c.Encode(nil, orig, &codec.Mutation{})
	if err != nil || !bytes.Equal(out, frame) {
		t.Fatalf("empty mutation: %v", err)
	}
	again := &codec.Message{}
	if _, err := newCodec(t).Decode(out, again); err != nil {
		t.Fatalf("re-decoding: %v", err)
	}
	if after := snapshot(again); !slices.Equal(before, after) {
		t.Fatalf("metadata changed\nbefore %q\n after %q", before, after)
	}

	switch msg.Type {
	case codec.Heartbeat:
		reply := c.HeartbeatReply(nil, orig)
		r := &codec.Message{}
		if _, err := newCodec(t).Decode(reply, r); err != nil || r.Type != codec.HeartbeatResponse || r.ID != orig.ID {
			t.Fatalf("heartbeat reply decodes to %v %d: %v", r.Type, r.ID, err)
		}
	case codec.Request:
		checkErrorReply(t, c, orig)
	}
	if msg.Type == codec.Response {
		checkResponseEdit(t, frame)
	}
	if msg.Type != codec.Request && msg.Type != codec.Oneway || msg.Metadata.Err() != nil {
		return
	}

	// A real edit: the set key is there, the removed one is not, the bytes before the map are kept.
	edit := &codec.Message{}
	if _, err := c.Decode(frame, edit); err != nil {
		t.Fatal(err)
	}
	mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "fz-set", Value: "v😀"}}, Remove: []string{"fz-rm"}}
	out, err = c.Encode([]byte("dst"), edit, mut)
	if err != nil {
		return // not Hessian 2, a map holding references, or over the limit: each says so
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
	for _, k := range []string{KeyInterface, KeyMethod, KeyVersion} {
		a, _ := orig.Metadata.Get(k)
		b, _ := enc.Metadata.Get(k)
		if a != b {
			t.Fatalf("%s changed from %q to %q", k, a, b)
		}
	}
}

// checkResponseEdit edits a response's attachments, as a client that reads them and one that does not: when
// the edit is accepted, the set key is there, the removed one is not, and the header's fields, the value and
// whatever follows the map keep their bytes; when it is refused, the message still holds the frame.
func checkResponseEdit(t *testing.T, frame []byte) {
	for _, version := range []string{"2.0.2", "2.5.3"} {
		c := newCodec(t)
		req := &codec.Message{}
		if _, err := c.Decode(rawFrame(0xc2, 0, 1, encodeValues(t, version, "s", "", "m", "")), req); err != nil {
			t.Fatal(err)
		}
		resp := &codec.Message{}
		if _, err := c.Decode(bytes.Clone(frame), resp); err != nil {
			t.Fatal(err)
		}
		before := snapshot(resp)
		mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "fz-set", Value: "v😀"}}, Remove: []string{"fz-rm"}}
		out, err := c.EncodeReply([]byte("dst"), req, resp, mut)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "dubbo: ") || !bytes.Equal(resp.Frame, frame) || string(out) != "dst" {
				t.Fatalf("refused edit (%v) changed the message or dst", err)
			}
			continue
		}
		if string(out[:3]) != "dst" || !bytes.Equal(resp.Frame, out[3:]) {
			t.Fatal("Encode did not append the frame it points the message at")
		}
		enc := &codec.Message{}
		ec := newCodec(t)
		if _, err := ec.Decode(bytes.Clone(out[3:]), enc); err != nil {
			t.Fatalf("edited response does not decode: %v", err)
		}
		if enc.Type != resp.Type || enc.ID != resp.ID || enc.Status != resp.Status || enc.Failed != resp.Failed {
			t.Fatalf("edited response decodes to %v %d %d %v; was %q", enc.Type, enc.ID, enc.Status, enc.Failed, before[0])
		}
		if v, ok := enc.Metadata.Get("fz-set"); !ok || v != "v😀" {
			t.Fatalf("fz-set = %q, %v (%v)", v, ok, enc.Metadata.Err())
		}
		if _, ok := enc.Metadata.Get("fz-rm"); ok {
			t.Fatal("fz-rm still there")
		}
		orig := &codec.Message{}
		oc := newCodec(t)
		if _, err := oc.Decode(frame, orig); err != nil {
			t.Fatal(err)
		}
		if err := oc.locate(orig); err != nil {
			t.Fatalf("edited a response whose attachments cannot be located: %v", err)
		}
		if err := ec.locate(enc); err != nil {
			t.Fatal(err)
		}
		edited := out[3:]
		if !bytes.Equal(edited[:12], frame[:12]) ||
			!bytes.Equal(edited[enc.Private[privArgs]:enc.Private[privMapStart]], frame[orig.Private[privArgs]:orig.Private[privMapStart]]) ||
			!bytes.Equal(edited[enc.Private[privMapEnd]:], frame[orig.Private[privMapEnd]:]) {
			t.Fatal("bytes outside the response type and the attachments changed")
		}
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

func checkErrorReply(t *testing.T, c *Codec, req *codec.Message) {
	for _, kind := range codec.ErrorKinds {
		reply, status := c.ErrorReply(nil, req, kind, "detail")
		r := &codec.Message{}
		if _, err := newCodec(t).Decode(reply, r); err != nil || r.Type != codec.Response || !r.Failed || r.Status != status || r.ID != req.ID {
			t.Fatalf("%v reply decodes to %v failed %v status %d id %d: %v", kind, r.Type, r.Failed, r.Status, r.ID, err)
		}
	}
}

// FuzzHessianSkip checks the skipper and the text renderer on arbitrary values: no panic, progress, and an
// offset within the input.
func FuzzHessianSkip(f *testing.F) {
	for _, v := range seedValues(f) {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &hreader{}
		r.reset(data)
		p := 0
		for p < len(data) {
			next, err := r.skipValue(p, 0)
			if err != nil {
				var he *hessianError
				if !errors.As(err, &he) || he.off < 0 || he.off > len(data) {
					t.Fatalf("error %v", err)
				}
				break
			}
			if next <= p || next > len(data) {
				t.Fatalf("skip from %d returned %d of %d", p, next, len(data))
			}
			p = next
		}
		r.reset(data)
		if _, next, _, err := r.appendText(nil, 0, new([]byte)); err == nil && len(data) > 0 && (next <= 0 || next > len(data)) {
			t.Fatalf("appendText next %d of %d", next, len(data))
		}
		if s, next, _, err := r.readString(0, new([]byte)); err == nil && (next > len(data) || len(s) > 2*len(data)) {
			t.Fatalf("readString next %d len %d of %d", next, len(s), len(data))
		}
	})
}

// FuzzStringRoundTrip checks that appendString and readString agree on any Go string.
func FuzzStringRoundTrip(f *testing.F) {
	for _, s := range []string{"", "abc", "😀", "a\xffb", strings.Repeat("é😀", 20000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc := appendString(nil, s)
		r := &hreader{}
		r.reset(enc)
		got, next, _, err := r.readString(0, new([]byte))
		if err != nil || next != len(enc) {
			t.Fatalf("readString: next %d of %d: %v", next, len(enc), err)
		}
		if want := string([]rune(s)); string(got) != want {
			t.Fatalf("round trip: %q, want %q", got, want)
		}
	})
}
