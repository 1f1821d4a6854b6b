package dubbo

import (
	"bytes"
	"errors"
	"maps"
	"strings"
	"testing"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/meltemi-mesh/meltemi/codec"
)

// valueSpan returns where the value of a decoded Hessian 2 response starts and where its attachments start.
func valueSpan(t testing.TB, c *Codec, msg *codec.Message) (int, int) {
	t.Helper()
	if err := c.locate(msg); err != nil {
		t.Fatalf("locate: %v", err)
	}
	return msg.Private[privArgs], msg.Private[privMapStart]
}

// TestEncodeResponse edits the attachments of responses as dubbo-go-hessian2 writes them and reads the result
// back with dubbo-go-hessian2: the attachments it finds, the response type, and the value or exception intact.
func TestEncodeResponse(t *testing.T) {
	pojo := &user{Name: "ann", Age: 30, Tags: []string{"x"}, Friends: []*user{{Name: "bob"}}}
	big := strings.Repeat("é😀", 20000) // 60000 UTF-16 units: a chunked Hessian string
	existing := map[string]string{"dubbo": "2.0.2", "keep": "1", "drop": "2", "change": "3"}
	setRemove := codec.Mutation{
		Set:    []codec.KeyValue{{Key: "change", Value: "33"}, {Key: "new", Value: "新😀"}},
		Remove: []string{"drop", "absent"},
	}
	served := codec.Mutation{Set: []codec.KeyValue{{Key: "x-served-by", Value: "meltemi"}}}
	tests := []struct {
		name     string
		frame    func(t testing.TB) []byte
		mut      codec.Mutation
		wantType int               // the response type after the edit
		want     map[string]string // the attachments dubbo-go-hessian2 and the codec read after the edit
		value    any               // what dubbo-go-hessian2 reads as the value; nil for none
		thrown   string            // part of the exception's message, for exception responses
		same     bool              // the edit changes nothing: the frame is copied as it is
	}{{
		name:     "value without attachments gets them",
		frame:    func(t testing.TB) []byte { return libResponse(t, hessian.PackageResponse, 9, StatusOK, "pong") },
		mut:      served,
		wantType: responseValueAttach,
		want:     map[string]string{"dubbo": "2.0.2", "x-served-by": "meltemi"},
		value:    "pong",
	}, {
		name:     "null value without attachments gets them",
		frame:    func(t testing.TB) []byte { return libResponse(t, hessian.PackageResponse, 9, StatusOK, nil) },
		mut:      served,
		wantType: responseNullValueAttach,
		want:     map[string]string{"dubbo": "2.0.2", "x-served-by": "meltemi"},
	}, {
		name: "exception without attachments gets them",
		frame: func(t testing.TB) []byte {
			return libResponse(t, hessian.PackageResponse, 9, StatusOK, hessian.NewResponse(nil, errors.New("boom"), nil))
		},
		mut:      served,
		wantType: responseWithExceptionAttach,
		want:     map[string]string{"dubbo": "2.0.2", "x-served-by": "meltemi"},
		thrown:   "boom",
	}, {
		name: "POJO value: set, replace and remove",
		frame: func(t testing.TB) []byte {
			return libResponse(t, hessian.PackageResponse, 9, StatusOK, hessian.NewResponse(pojo, nil, existing))
		},
		mut:      setRemove,
		wantType: responseValueAttach,
		want:     map[string]string{"dubbo": "2.0.2", "keep": "1", "change": "33", "new": "新😀"},
		value:    pojo,
	}, {
		name: "null value with attachments",
		frame: func(t testing.TB) []byte {
			return libResponse(t, hessian.PackageResponse, 9, StatusOK, hessian.NewResponse(nil, nil, existing))
		},
		mut:      setRemove,
		wantType: responseNullValueAttach,
		want:     map[string]string{"dubbo": "2.0.2", "keep": "1", "change": "33", "new": "新😀"},
	}, {
		name: "exception with attachments",
		frame: func(t testing.TB) []byte {
			return libResponse(t, hessian.PackageResponse, 9, StatusOK, hessian.NewResponse(nil, errors.New("boom"), existing))
		},
		mut:      setRemove,
		wantType: responseWithExceptionAttach,
		want:     map[string]string{"dubbo": "2.0.2", "keep": "1", "change": "33", "new": "新😀"},
		thrown:   "boom",
	}, {
		name:     "chunked string value",
		frame:    func(t testing.TB) []byte { return libResponse(t, hessian.PackageResponse, 9, StatusOK, big) },
		mut:      served,
		wantType: responseValueAttach,
		want:     map[string]string{"dubbo": "2.0.2", "x-served-by": "meltemi"},
		value:    big,
	}, {
		name:     "the protocol version can be set",
		frame:    func(t testing.TB) []byte { return libResponse(t, hessian.PackageResponse, 9, StatusOK, "pong") },
		mut:      codec.Mutation{Set: []codec.KeyValue{{Key: "dubbo", Value: "2.0.3"}}},
		wantType: responseValueAttach,
		want:     map[string]string{"dubbo": "2.0.3"},
		value:    "pong",
	}, {
		name:     "and removed",
		frame:    func(t testing.TB) []byte { return libResponse(t, hessian.PackageResponse, 9, StatusOK, "pong") },
		mut:      codec.Mutation{Set: []codec.KeyValue{{Key: "a", Value: "1"}}, Remove: []string{"dubbo"}},
		wantType: responseValueAttach,
		want:     map[string]string{"a": "1"},
		value:    "pong",
	}, {
		name:  "last set wins",
		frame: func(t testing.TB) []byte { return libResponse(t, hessian.PackageResponse, 9, StatusOK, "pong") },
		mut: codec.Mutation{Set: []codec.KeyValue{{Key: "k", Value: "first"}, {Key: "j", Value: "j"},
			{Key: "k", Value: "last"}}},
		wantType: responseValueAttach,
		want:     map[string]string{"dubbo": "2.0.2", "k": "last", "j": "j"},
		value:    "pong",
	}, {
		name: "a null map is replaced",
		frame: func(t testing.TB) []byte {
			return rawFrame(0x02, StatusOK, 9, append(encodeValues(t, int32(responseValueAttach), "pong", nil), 'N'))
		},
		mut:      served,
		wantType: responseValueAttach,
		want:     map[string]string{"dubbo": "2.0.2", "x-served-by": "meltemi"},
		value:    "pong",
	}, {
		name:     "removing from a response without attachments changes nothing",
		frame:    func(t testing.TB) []byte { return libResponse(t, hessian.PackageResponse, 9, StatusOK, "pong") },
		mut:      codec.Mutation{Remove: []string{"x-served-by"}},
		wantType: responseValue,
		value:    "pong",
		same:     true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := tt.frame(t)
			c := newCodec(t)
			orig := decodeOne(t, newCodec(t), frame)
			origStart, origEnd := valueSpan(t, newCodec(t), orig)
			origTrailer := frame[orig.Private[privMapEnd]:]

			msg := decodeOne(t, c, bytes.Clone(frame))
			out, err := c.Encode([]byte("dst"), msg, &tt.mut)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if string(out[:3]) != "dst" {
				t.Fatal("dst prefix overwritten")
			}
			enc := out[3:]
			if !bytes.Equal(msg.Frame, enc) {
				t.Fatal("msg.Frame does not point at the encoded frame")
			}
			if tt.same && !bytes.Equal(enc, frame) {
				t.Fatalf("the frame changed: % x", enc)
			}
			if msg.Type != codec.Response || msg.ID != 9 || msg.Status != StatusOK || msg.Failed != orig.Failed {
				t.Errorf("after Encode: %v id %d status %d failed %v", msg.Type, msg.ID, msg.Status, msg.Failed)
			}
			// The header (but its length), the value and what follows the map keep their bytes.
			if !bytes.Equal(enc[:12], frame[:12]) {
				t.Errorf("header changed: % x, was % x", enc[:12], frame[:12])
			}
			start, end := valueSpan(t, c, msg)
			if !bytes.Equal(enc[start:end], frame[origStart:origEnd]) {
				t.Errorf("the value's %d bytes changed", origEnd-origStart)
			}
			if !bytes.Equal(enc[msg.Private[privMapEnd]:], origTrailer) {
				t.Errorf("the bytes after the attachments changed: % x, were % x", enc[msg.Private[privMapEnd]:], origTrailer)
			}
			if got := responseType(msg.Private[privState]); got != tt.wantType {
				t.Errorf("response type %d, want %d", got, tt.wantType)
			}

			// dubbo-go-hessian2, the peer a Go consumer decodes with.
			h, body := libRead(t, enc)
			if h.ID != 9 || h.ResponseStatus != StatusOK {
				t.Errorf("dubbo-go-hessian2 reads header %+v", h)
			}
			resp := body.(*hessian.Response)
			want := tt.want
			if want == nil {
				want = map[string]string{}
			}
			if got := resp.Attachments; !maps.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Errorf("dubbo-go-hessian2 attachments\n got %v\nwant %v", got, want)
			}
			switch {
			case tt.thrown != "":
				if resp.Exception == nil || !strings.Contains(resp.Exception.Error(), tt.thrown) {
					t.Errorf("dubbo-go-hessian2 exception %v, want %q", resp.Exception, tt.thrown)
				}
			case tt.value == nil:
				if resp.RspObj != nil {
					t.Errorf("dubbo-go-hessian2 value %v, want none", resp.RspObj)
				}
			case !sameValue(resp.RspObj, tt.value):
				t.Errorf("dubbo-go-hessian2 value %#v, want %#v", resp.RspObj, tt.value)
			}

			// The codec reads the same attachments, from the message and from the frame decoded afresh.
			if got := metadata(t, msg); !maps.Equal(got, want) {
				t.Errorf("metadata after Encode\n got %v\nwant %v", got, want)
			}
			if got := metadata(t, decodeOne(t, newCodec(t), enc)); !maps.Equal(got, want) {
				t.Errorf("metadata decoded again\n got %v\nwant %v", got, want)
			}

			// The proxy restores the client's id on the message it has just encoded.
			c.SetID(msg, 1<<40)
			if h, _ := libRead(t, msg.Frame); h.ID != 1<<40 {
				t.Errorf("after SetID dubbo-go-hessian2 reads id %d", h.ID)
			}
		})
	}
}

// sameValue compares a value dubbo-go-hessian2 decoded with the one it encoded.
func sameValue(got, want any) bool {
	if w, ok := want.(*user); ok {
		g, ok := got.(*user)
		return ok && g.Name == w.Name && g.Age == w.Age && len(g.Friends) == len(w.Friends) &&
			len(g.Tags) == len(w.Tags) && (len(g.Friends) == 0 || g.Friends[0].Name == w.Friends[0].Name)
	}
	return got == want
}

// TestEncodeReply checks that response attachments are added only for clients whose requests say they can
// read them, and that responses which have attachments are edited whoever asked.
func TestEncodeReply(t *testing.T) {
	request := func(t testing.TB, version any) *codec.Message {
		frame := rawFrame(0xc2, 0, 9, encodeValues(t, version, "svc.R", "", "m", "Ljava/lang/String;", "a",
			map[string]string{"k": "v"}))
		return decodeOne(t, newCodec(t), frame)
	}
	plain := func(t testing.TB) []byte { return libResponse(t, hessian.PackageResponse, 9, StatusOK, "pong") }
	withMap := func(t testing.TB) []byte {
		return libResponse(t, hessian.PackageResponse, 9, StatusOK,
			hessian.NewResponse("pong", nil, map[string]string{"dubbo": "2.0.2"}))
	}
	mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "x-served-by", Value: "meltemi"}}}
	tests := []struct {
		name    string
		version any // the request's Dubbo version; nil writes a Hessian null
		resp    func(testing.TB) []byte
		err     string
	}{
		{"protocol 2.0.2, as every client since Dubbo 2.6.3 sends", "2.0.2", plain, ""},
		{"dubbo-go's version", "2.0.2", withMap, ""},
		{"Dubbo 2.5.3 sent its release number", "2.5.3", plain, "older than 2.0.2 and cannot read response attachments"},
		{"protocol 2.0.0", "2.0.0", plain, "older than 2.0.2"},
		{"null version", nil, plain, "older than 2.0.2"},
		{"a server that wrote attachments to an old client gets them edited", "2.5.3", withMap, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(t, tt.version)
			c := newCodec(t)
			frame := tt.resp(t)
			resp := decodeOne(t, c, bytes.Clone(frame))
			out, err := c.EncodeReply(nil, req, resp, mut)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				if !bytes.Equal(resp.Frame, frame) {
					t.Error("a refused edit changed the response")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, body := libRead(t, out); body.(*hessian.Response).Attachments["x-served-by"] != "meltemi" {
				t.Errorf("dubbo-go-hessian2 reads attachments %v", body.(*hessian.Response).Attachments)
			}
		})
	}
}

func TestReadsResponseAttachments(t *testing.T) {
	tests := []struct {
		version string
		ok      bool
	}{
		{"2.0.2", true},
		{"2.0.3", true},
		{"2.0.9", true},
		{"2.0.99", false}, // inside 2.0.10 to 2.6.2 as integers compare
		{"2.0.2-SNAPSHOT", true},
		{"2.6.3", true},
		{"2.7.23", true},
		{"2.0.0", false},
		{"2.0.1", false},
		{"2.0.10", false},
		{"2.5.3", false},
		{"2.6.2", false},
		{"1.0.0", false},
		{"", false},
		{"dubbo", false},
		{"2.0.2.0.0", false},
	}
	for _, tt := range tests {
		if got := readsResponseAttachments([]byte(tt.version)); got != tt.ok {
			t.Errorf("readsResponseAttachments(%q) = %v, want %v", tt.version, got, tt.ok)
		}
	}
}
