package dubbo

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"strings"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"
	"github.com/apache/dubbo-go-hessian2/java_exception"

	"github.com/meltemi-mesh/meltemi/codec"
)

func newCodec(t testing.TB) *Codec {
	t.Helper()
	f, err := Registration().New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return f.NewCodec(codec.Downstream).(*Codec)
}

// decodeOne decodes a whole frame, requiring success and n == len(frame).
func decodeOne(t testing.TB, c *Codec, frame []byte) *codec.Message {
	t.Helper()
	msg := &codec.Message{}
	n, err := c.Decode(frame, msg)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if n != len(frame) {
		t.Fatalf("Decode n = %d, want %d", n, len(frame))
	}
	return msg
}

// metadata returns all of msg's metadata (attachments included) as a map.
func metadata(t testing.TB, msg *codec.Message) map[string]string {
	t.Helper()
	m := map[string]string{}
	msg.Metadata.All(func(k, v string) bool {
		if _, dup := m[k]; dup {
			t.Errorf("metadata key %q twice", k)
		}
		m[k] = v
		return true
	})
	if err := msg.Metadata.Err(); err != nil {
		t.Fatalf("metadata: %v", err)
	}
	return m
}

func TestRegistration(t *testing.T) {
	reg := Registration()
	if reg.Name != "aeraki.meta_protocol.codec.dubbo" || reg.Protocol != "dubbo" {
		t.Fatalf("registration = %q/%q", reg.Name, reg.Protocol)
	}
	tests := []struct {
		config  string
		maxBody int
		err     string
	}{
		{config: "", maxBody: DefaultMaxBodySize},
		{config: "{}", maxBody: 8388608},
		{config: `{"maxBodySize": 1024}`, maxBody: 1024},
		{config: `{"maxBodySize": 0}`, err: "maxBodySize must be between 1 and 2147483647"},
		{config: `{"maxBodySize": -5}`, err: "got -5"},
		{config: `{"maxBodySize": 4294967296}`, err: "got 4294967296"},
		{config: `{"maxBody": 10}`, err: `unknown field "maxBody"`},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			f, err := reg.New(json.RawMessage(tt.config))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !f.Properties().Multiplexing {
				t.Error("Multiplexing = false")
			}
			if got := f.NewCodec(codec.Downstream).(*Codec).maxBody; got != tt.maxBody {
				t.Errorf("maxBody = %d, want %d", got, tt.maxBody)
			}
		})
	}
}

func TestDecodeRequest(t *testing.T) {
	unicodeService := hessian.Service{Path: "org.example.服务", Version: "2.0", Method: "grüß", Group: "g😀"}
	friend := &user{Name: "bob", Age: 7}
	tests := []struct {
		name  string
		frame func(t testing.TB) []byte
		typ   codec.MessageType
		id    uint64
		// eager is what Decode sets before any lazy load; all is the metadata after it.
		eager map[string]string
		all   map[string]string
	}{{
		name: "two-way echo",
		frame: func(t testing.TB) []byte {
			return libRequest(t, hessian.PackageRequest_TwoWay, 42, echoService, []any{"hello"},
				map[string]string{"trace-id": "abc123", "env": "canary"})
		},
		typ:   codec.Request,
		id:    42,
		eager: map[string]string{"interface": echoService.Path, "method": "echo", "version": "1.0.0"},
		all: map[string]string{"interface": echoService.Path, "method": "echo", "version": "1.0.0",
			"path": echoService.Path, "group": "blue", "timeout": "3000", "trace-id": "abc123", "env": "canary"},
	}, {
		name: "oneway",
		frame: func(t testing.TB) []byte {
			return libRequest(t, hessian.PackageRequest, 7, hessian.Service{Path: "a.B", Method: "fire"}, []any{int32(1)}, nil)
		},
		typ:   codec.Oneway,
		id:    7,
		eager: map[string]string{"interface": "a.B", "method": "fire"},
		all:   map[string]string{"interface": "a.B", "method": "fire", "path": "a.B", "version": ""},
	}, {
		name: "non-ASCII names and surrogate pairs",
		frame: func(t testing.TB) []byte {
			return libRequest(t, hessian.PackageRequest_TwoWay, 1<<40, unicodeService, []any{"x"},
				map[string]string{"emoji": "a😀b🎉", "long": strings.Repeat("é😀", 3000)})
		},
		typ:   codec.Request,
		id:    1 << 40,
		eager: map[string]string{"interface": "org.example.服务", "method": "grüß", "version": "2.0"},
		all: map[string]string{"interface": "org.example.服务", "method": "grüß", "version": "2.0",
			"path": "org.example.服务", "group": "g😀", "emoji": "a😀b🎉", "long": strings.Repeat("é😀", 3000)},
	}, {
		name: "arguments of every kind",
		frame: func(t testing.TB) []byte {
			args := []any{
				int32(-5), int64(1) << 40, 3.25, true, nil, []byte("bin"), time.UnixMilli(1700000000000),
				[]string{"a", "b"}, map[any]any{"k": int32(1), int32(2): []any{"x", 1.5}},
				&user{Name: "ann", Age: 30, Tags: []string{"x"}, Friends: []*user{friend, friend}},
				&user{Name: "second instance of the class"},
				java_exception.NewThrowable("boom"),
				strings.Repeat("long argument ", 1000),
				bytes.Repeat([]byte{0xff}, 70000),
			}
			return libRequest(t, hessian.PackageRequest_TwoWay, 9, hessian.Service{Path: "svc.P", Method: "m"}, args,
				map[string]string{"k": "v"})
		},
		typ:   codec.Request,
		id:    9,
		eager: map[string]string{"interface": "svc.P", "method": "m"},
		all:   map[string]string{"interface": "svc.P", "method": "m", "path": "svc.P", "version": "", "k": "v"},
	}, {
		name: "attachment values of several types",
		frame: func(t testing.TB) []byte {
			atta := map[string]any{
				"str": "s", "int": int32(3000), "long": int64(-1) << 40, "true": true, "false": false,
				"double": 1.5, "whole": 2.0, "null": nil, "date": time.UnixMilli(86400000).UTC(),
				"bin": []byte("raw"), "nested": map[string]any{"a": "b"}, "list": []string{"x"},
			}
			body := encodeValues(t, "2.0.2", "svc.Q", "", "get", "I", int32(1), atta)
			return rawFrame(0xc2, 0, 5, body)
		},
		typ:   codec.Request,
		id:    5,
		eager: map[string]string{"interface": "svc.Q", "method": "get"},
		all: map[string]string{"interface": "svc.Q", "method": "get", "str": "s", "int": "3000",
			"long": "-1099511627776", "true": "true", "false": "false", "double": "1.5", "whole": "2.0",
			"null": "", "date": "1970-01-02T00:00:00.000Z", "bin": "raw"},
	}, {
		name: "attachment keys that are not strings, and a header key repeated in the attachments",
		frame: func(t testing.TB) []byte {
			atta := map[any]any{int32(7): "seven", true: "yes", nil: "nil key", "interface": "other", "method": "x"}
			body := encodeValues(t, "2.0.2", "svc.R", "1", "m", "", atta)
			return rawFrame(0xc2, 0, 6, body)
		},
		typ:   codec.Request,
		id:    6,
		eager: map[string]string{"interface": "svc.R", "method": "m", "version": "1"},
		all:   map[string]string{"interface": "svc.R", "method": "m", "version": "1", "7": "seven", "true": "yes"},
	}, {
		name: "no attachment map (old client)",
		frame: func(t testing.TB) []byte {
			return rawFrame(0xc2, 0, 8, encodeValues(t, "2.0.2", "svc.S", nil, "m", "Ljava/lang/String;", "arg"))
		},
		typ:   codec.Request,
		id:    8,
		eager: map[string]string{"interface": "svc.S", "method": "m"},
		all:   map[string]string{"interface": "svc.S", "method": "m"},
	}, {
		name: "null attachment map",
		frame: func(t testing.TB) []byte {
			return rawFrame(0xc2, 0, 8, encodeValues(t, "2.0.2", "svc.S", "", "m", "", nil))
		},
		typ:   codec.Request,
		id:    8,
		eager: map[string]string{"interface": "svc.S", "method": "m"},
		all:   map[string]string{"interface": "svc.S", "method": "m"},
	}, {
		name: "typed attachment map",
		frame: func(t testing.TB) []byte {
			body := encodeValues(t, "2.0.2", "svc.T", "", "m", "[I", []int32{1, 2})
			body = append(body, 'M')
			body = append(body, encodeValues(t, "java.util.TreeMap", "k", "v", "n", int32(-3))...)
			body = append(body, 'Z')
			return rawFrame(0xc2, 0, 10, body)
		},
		typ:   codec.Request,
		id:    10,
		eager: map[string]string{"interface": "svc.T", "method": "m"},
		all:   map[string]string{"interface": "svc.T", "method": "m", "k": "v", "n": "-3"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := tt.frame(t)
			c := newCodec(t)
			msg := decodeOne(t, c, frame)
			if msg.Type != tt.typ || msg.ID != tt.id || msg.Status != 0 || msg.Failed {
				t.Errorf("type %v id %d status %d failed %v, want %v %d 0 false", msg.Type, msg.ID, msg.Status, msg.Failed, tt.typ, tt.id)
			}
			if !bytes.Equal(msg.Frame, frame) {
				t.Error("Frame is not the decoded bytes")
			}
			for k, want := range tt.eager {
				if got, ok := msg.Metadata.Get(k); !ok || got != want {
					t.Errorf("eager %s = %q, %v; want %q", k, got, ok, want)
				}
			}
			if msg.Metadata.Len() != len(tt.eager) && msg.Metadata.Err() != nil {
				t.Fatalf("lazy load: %v", msg.Metadata.Err())
			}
			if got := metadata(t, msg); !maps.Equal(got, tt.all) {
				t.Errorf("metadata\n got %v\nwant %v", got, tt.all)
			}
		})
	}
}

// TestLazyAttachments checks that attachments are not decoded until a key misses.
func TestLazyAttachments(t *testing.T) {
	c := newCodec(t)
	frame := libRequest(t, hessian.PackageRequest_TwoWay, 1, echoService, []any{"hi"}, map[string]string{"x": "1"})
	msg := decodeOne(t, c, frame)
	if msg.Private[privState]&stLocated != 0 {
		t.Fatal("attachments located during Decode")
	}
	if v, _ := msg.Metadata.Get("method"); v != "echo" {
		t.Fatalf("method = %q", v)
	}
	if msg.Private[privState]&stLocated != 0 {
		t.Fatal("a hit on an eager key loaded the attachments")
	}
	if v, ok := msg.Metadata.Get("x"); !ok || v != "1" {
		t.Fatalf("x = %q, %v", v, ok)
	}
	if msg.Private[privState]&stLocated == 0 {
		t.Fatal("attachments not located after a miss")
	}
}

func TestLazyAttachmentErrors(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		err  string
	}{
		{"bad descriptor", encodeValues(t, "2.0.2", "s", "", "m", "Ljava/lang/String", "x", map[string]string{}), `descriptor "Ljava/lang/String" is not a JVM descriptor`},
		{"too few arguments", encodeValues(t, "2.0.2", "s", "", "m", "II", int32(1)), "argument 2 of 2"},
		{"not a map", encodeValues(t, "2.0.2", "s", "", "m", "I", int32(1), "oops"), "expected the attachment map after 1 arguments, found tag 0x04"},
		{"truncated map", append(encodeValues(t, "2.0.2", "s", "", "m", ""), 'H', 1, 'k'), "attachments: hessian2: value runs past the end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := decodeOne(t, newCodec(t), rawFrame(0xc2, 0, 3, tt.body))
			if _, ok := msg.Metadata.Get("missing"); ok {
				t.Fatal("found a missing key")
			}
			if err := msg.Metadata.Err(); err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Err() = %v, want %q", err, tt.err)
			}
			if v, _ := msg.Metadata.Get("method"); v != "m" {
				t.Errorf("method = %q after a failed load", v)
			}
		})
	}
}

func TestDecodeResponse(t *testing.T) {
	withAttachments := map[string]string{"dubbo": "2.0.2", "k": "v"}
	tests := []struct {
		name   string
		frame  func(t testing.TB) []byte
		typ    codec.MessageType
		status int32
		failed bool
		meta   map[string]string // the response's attachments, decoded on demand
	}{
		{"value", func(t testing.TB) []byte {
			return libResponse(t, hessian.PackageResponse, 3, StatusOK, "pong")
		}, codec.Response, 20, false, nil},
		{"null value", func(t testing.TB) []byte {
			return libResponse(t, hessian.PackageResponse, 3, StatusOK, nil)
		}, codec.Response, 20, false, nil},
		{"exception", func(t testing.TB) []byte {
			return libResponse(t, hessian.PackageResponse, 3, StatusOK, hessian.NewResponse(nil, errors.New("boom"), nil))
		}, codec.Response, 20, true, nil},
		{"value with attachments", func(t testing.TB) []byte {
			return libResponse(t, hessian.PackageResponse, 3, StatusOK, hessian.NewResponse(&user{Name: "u"}, nil, withAttachments))
		}, codec.Response, 20, false, withAttachments},
		{"null with attachments", func(t testing.TB) []byte {
			return libResponse(t, hessian.PackageResponse, 3, StatusOK, hessian.NewResponse(nil, nil, withAttachments))
		}, codec.Response, 20, false, withAttachments},
		{"exception with attachments", func(t testing.TB) []byte {
			return libResponse(t, hessian.PackageResponse, 3, StatusOK, hessian.NewResponse(nil, errors.New("boom"), withAttachments))
		}, codec.Response, 20, true, withAttachments},
		{"attachment values of several types, an object defined by the value", func(t testing.TB) []byte {
			friend := &user{Name: "f"}
			body := encodeValues(t, int32(responseValueAttach), &user{Name: "u", Friends: []*user{friend}},
				map[any]any{"n": int32(7), "ok": true, "who": &user{Name: "attached"}, "s": "t"})
			return rawFrame(0x02, StatusOK, 3, append(body, 'N'))
		}, codec.Response, 20, false, map[string]string{"n": "7", "ok": "true", "s": "t"}},
		{"service error 70", func(t testing.TB) []byte {
			return libResponse(t, hessian.PackageResponse, 3, StatusServiceError, hessian.NewResponse(nil, errors.New("failed"), nil))
		}, codec.Response, 70, true, nil},
		{"client timeout 30", func(t testing.TB) []byte {
			return libResponse(t, hessian.PackageResponse, 3, StatusClientTimeout, hessian.NewResponse(nil, errors.New("late"), nil))
		}, codec.Response, 30, true, nil},
		{"threadpool exhausted 100", func(t testing.TB) []byte {
			return libResponse(t, hessian.PackageResponse, 3, StatusThreadpoolExhausted, hessian.NewResponse(nil, errors.New("busy"), nil))
		}, codec.Response, 100, true, nil},
		{"unreadable response type", func(t testing.TB) []byte {
			return rawFrame(0x02, StatusOK, 3, []byte{'S'})
		}, codec.Response, 20, true, nil},
		{"response type out of range", func(t testing.TB) []byte {
			return rawFrame(0x02, StatusOK, 3, encodeValues(t, int32(6), "x"))
		}, codec.Response, 20, true, nil},
		{"heartbeat response", func(t testing.TB) []byte {
			return libResponse(t, hessian.PackageHeartbeat, 3, StatusOK, nil)
		}, codec.HeartbeatResponse, 20, false, nil},
		{"kryo response is read at the header only", func(t testing.TB) []byte {
			return rawFrame(0x08, StatusOK, 3, []byte{0x00})
		}, codec.Response, 20, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCodec(t)
			msg := decodeOne(t, c, tt.frame(t))
			if msg.Type != tt.typ || msg.ID != 3 || msg.Status != tt.status || msg.Failed != tt.failed {
				t.Errorf("got %v id %d status %d failed %v; want %v 3 %d %v", msg.Type, msg.ID, msg.Status, msg.Failed, tt.typ, tt.status, tt.failed)
			}
			if msg.Private[privState]&stLocated != 0 {
				t.Error("the attachments were located during Decode")
			}
			want := tt.meta
			if want == nil {
				want = map[string]string{}
			}
			if got := metadata(t, msg); !maps.Equal(got, want) {
				t.Errorf("metadata\n got %v\nwant %v", got, want)
			}
		})
	}
}

// TestLazyResponseAttachmentErrors checks that a response whose attachments cannot be read says why, on the
// first lookup, while its type and status stay as decoded.
func TestLazyResponseAttachmentErrors(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		err  string
	}{
		{"body ends after the value", encodeValues(t, int32(responseValueAttach), "pong"),
			"dubbo: response 3: its type 4 says attachments follow the value, but the body ends at offset 22"},
		{"not a map after the exception", encodeValues(t, int32(responseWithExceptionAttach), "boom", "oops"),
			"dubbo: response 3: expected the attachment map after the exception, found tag 0x04"},
		{"truncated value", append(encodeValues(t, int32(responseValueAttach)), 0x05, 'p'),
			"dubbo: response 3: value: hessian2: value runs past the end of the body"},
		{"truncated map", append(encodeValues(t, int32(responseNullValueAttach)), 'H', 0x01, 'k'),
			"dubbo: response 3: attachments: hessian2: value runs past the end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := decodeOne(t, newCodec(t), rawFrame(0x02, StatusOK, 3, tt.body))
			if msg.Type != codec.Response || msg.Status != StatusOK {
				t.Fatalf("decoded as %v status %d", msg.Type, msg.Status)
			}
			if _, ok := msg.Metadata.Get("k"); ok {
				t.Fatal("found a key in unreadable attachments")
			}
			if err := msg.Metadata.Err(); err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Err() = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestDecodeEvents(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
		typ   codec.MessageType
		event string
	}{
		{"heartbeat from dubbo-go-hessian2", libRequest(t, hessian.PackageHeartbeat, 11, hessian.Service{}, []any{}, nil), codec.Heartbeat, ""},
		{"two-way heartbeat", rawFrame(0xe2, 0, 11, []byte{'N'}), codec.Heartbeat, ""},
		{"oneway heartbeat is not answered", rawFrame(0xa2, 0, 11, []byte{'N'}), codec.Oneway, "heartbeat"},
		{"readonly event", rawFrame(0xa2, 0, 11, encodeValues(t, "R")), codec.Oneway, "readonly"},
		{"two-way event with data is not a heartbeat", rawFrame(0xe2, 0, 11, encodeValues(t, "R")), codec.Oneway, "readonly"},
		{"other event", rawFrame(0xa2, 0, 11, encodeValues(t, int32(1))), codec.Oneway, "other"},
		{"fastjson heartbeat", rawFrame(0xe6, 0, 11, []byte("null\n")), codec.Heartbeat, ""},
		{"fastjson oneway event", rawFrame(0xa6, 0, 11, []byte("\"R\"\n")), codec.Oneway, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := decodeOne(t, newCodec(t), tt.frame)
			if msg.Type != tt.typ || msg.ID != 11 {
				t.Errorf("type %v id %d, want %v 11", msg.Type, msg.ID, tt.typ)
			}
			got, _ := msg.Metadata.Get(KeyEvent)
			if got != tt.event {
				t.Errorf("event = %q, want %q", got, tt.event)
			}
		})
	}
}

func TestHeartbeatReply(t *testing.T) {
	c := newCodec(t)
	for _, tt := range []struct {
		name  string
		frame []byte
		flag  byte
		body  string
	}{
		{"hessian2", libRequest(t, hessian.PackageHeartbeat, 99, hessian.Service{}, []any{}, nil), 0x22, "N"},
		{"fastjson echoes its null", rawFrame(0xe6, 0, 99, []byte("null\n")), 0x26, "null\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := decodeOne(t, c, tt.frame)
			if req.Type != codec.Heartbeat {
				t.Fatalf("type = %v", req.Type)
			}
			prefix := []byte("prefix")
			out := c.HeartbeatReply(prefix, req)
			if !bytes.HasPrefix(out, []byte("prefix")) {
				t.Fatal("dst overwritten")
			}
			reply := out[len("prefix"):]
			want := rawFrame(tt.flag, StatusOK, 99, []byte(tt.body))
			if !bytes.Equal(reply, want) {
				t.Fatalf("reply % x, want % x", reply, want)
			}
			msg := decodeOne(t, c, reply)
			if msg.Type != codec.HeartbeatResponse || msg.ID != 99 || msg.Failed {
				t.Errorf("decoded reply: %v id %d failed %v", msg.Type, msg.ID, msg.Failed)
			}
			if tt.flag == 0x22 {
				h, _ := libRead(t, reply)
				if h.Type != hessian.PackageHeartbeat|hessian.PackageResponse || h.ID != 99 || h.ResponseStatus != StatusOK {
					t.Errorf("dubbo-go-hessian2 reads %+v", h)
				}
			}
		})
	}
}

func TestErrorReply(t *testing.T) {
	c := newCodec(t)
	req := decodeOne(t, c, libRequest(t, hessian.PackageRequest_TwoWay, 1234, echoService, []any{"x"}, nil))
	want := map[codec.ErrorKind]byte{
		codec.RouteNotFound: 60, codec.ClusterNotFound: 60, codec.NoHealthyUpstream: 80, codec.BadResponse: 50,
		codec.Unspecified: 80, codec.OverLimit: 100, codec.Timeout: 31, codec.Unauthorized: 80, codec.BadRequest: 40,
	}
	for _, kind := range codec.ErrorKinds {
		t.Run(kind.String(), func(t *testing.T) {
			out, status := c.ErrorReply([]byte{1, 2}, req, kind, "no route for echo 路由")
			if status != int32(want[kind]) {
				t.Fatalf("status = %d, want %d", status, want[kind])
			}
			reply := out[2:]
			h, body := libRead(t, reply)
			if h.ID != 1234 || h.ResponseStatus != want[kind] || h.Type&hessian.PackageResponse_Exception == 0 || h.SerialID != serialHessian2 {
				t.Errorf("dubbo-go-hessian2 reads header %+v", h)
			}
			msgText := "meltemi: " + kind.String() + ": no route for echo 路由"
			if exc := body.(*hessian.Response).Exception; exc == nil || !strings.Contains(exc.Error(), msgText) {
				t.Errorf("dubbo-go-hessian2 reads exception %v, want %q", exc, msgText)
			}
			msg := decodeOne(t, c, reply)
			if msg.Type != codec.Response || !msg.Failed || msg.Status != status || msg.ID != 1234 {
				t.Errorf("decoded reply: %v failed %v status %d id %d", msg.Type, msg.Failed, msg.Status, msg.ID)
			}
		})
	}
	oneway := decodeOne(t, c, libRequest(t, hessian.PackageRequest, 5, echoService, []any{"x"}, nil))
	if out, status := c.ErrorReply(nil, oneway, codec.RouteNotFound, "x"); len(out) != 0 || status != 0 {
		t.Errorf("oneway got a reply of %d bytes, status %d", len(out), status)
	}
	// A request refused for its size can be answered although it was never fully read.
	big := newCodec(t)
	big.maxBody = 10
	tooBig := &codec.Message{}
	if _, err := big.Decode(libRequest(t, hessian.PackageRequest_TwoWay, 77, echoService, []any{"x"}, nil), tooBig); err == nil {
		t.Fatal("no error for an oversized frame")
	}
	out, _ := c.ErrorReply(nil, tooBig, codec.BadRequest, "frame too large")
	if h, _ := libRead(t, out); h.ID != 77 || h.ResponseStatus != StatusBadRequest {
		t.Errorf("reply to the oversized request: %+v", h)
	}
}

func TestDecodeBadInput(t *testing.T) {
	good := libRequest(t, hessian.PackageRequest_TwoWay, 21, echoService, []any{"x"}, nil)
	oneway := libRequest(t, hessian.PackageRequest, 21, echoService, []any{"x"}, nil)
	withLen := func(f []byte, n uint32) []byte {
		f = bytes.Clone(f)
		f[12], f[13], f[14], f[15] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
		return f
	}
	tests := []struct {
		name     string
		buf      []byte
		err      string
		canReply bool
	}{
		{"wrong magic", append([]byte{0xca, 0xfe}, good[2:]...), "dubbo: bad magic 0xcafe, want 0xdabb", false},
		{"wrong first byte alone", []byte{'G'}, "dubbo: bad magic 0x4700", false},
		{"telnet", []byte("ls\r\n"), "bad magic 0x6c73", false},
		{"wrong second byte", []byte{0xda, 0x00}, "bad magic 0xda00", false},
		{"body over the limit", withLen(good, 9000000), "dubbo: body length 9000000 exceeds limit 8388608", true},
		{"oneway over the limit", withLen(oneway, 9000000), "exceeds limit", false},
		{"length 0xFFFFFFFF", withLen(good, 0xffffffff), "body length 0xffffffff is negative as an int32 (limit 8388608)", true},
		{"length 0x80000000", withLen(good, 0x80000000), "negative", true},
		{"response over the limit", withLen(rawFrame(0x02, 20, 21, nil), 1<<30), "exceeds limit", false},
		{"head not a string", rawFrame(0xc2, 0, 21, encodeValues(t, int32(1))), "dubbo: request 21: bad body: dubbo version: hessian2: expected a string, found tag 0x91 at offset 16", true},
		{"head truncated", rawFrame(0xc2, 0, 21, encodeValues(t, "2.0.2", "svc")), "service version: hessian2: value runs past the end of the body at offset 26", true},
		{"oneway head broken", rawFrame(0x82, 0, 21, []byte{0x05, 'a'}), "bad body", false},
		{"bad UTF-8", rawFrame(0xc2, 0, 21, []byte{0x02, 0x80, 0x80}), "bad UTF-8 lead byte 0x80", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := &codec.Message{}
			_, err := newCodec(t).Decode(tt.buf, msg)
			var fe *codec.FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a FrameError", err)
			}
			if !strings.Contains(fe.Reason, tt.err) {
				t.Errorf("reason %q, want it to contain %q", fe.Reason, tt.err)
			}
			if fe.CanReply != tt.canReply {
				t.Errorf("CanReply = %v, want %v", fe.CanReply, tt.canReply)
			}
			if fe.CanReply && (msg.Type != codec.Request || msg.ID != 21) {
				t.Errorf("CanReply but msg holds %v id %d", msg.Type, msg.ID)
			}
		})
	}
}

// TestPartial feeds every prefix of real frames.
func TestPartial(t *testing.T) {
	frames := map[string][]byte{
		"request":   libRequest(t, hessian.PackageRequest_TwoWay, 3, echoService, []any{"hello", int32(3)}, map[string]string{"a": "b"}),
		"response":  libResponse(t, hessian.PackageResponse, 3, StatusOK, "pong"),
		"heartbeat": libRequest(t, hessian.PackageHeartbeat, 3, hessian.Service{}, []any{}, nil),
	}
	for name, frame := range frames {
		t.Run(name, func(t *testing.T) {
			c := newCodec(t)
			for i := range len(frame) {
				msg := &codec.Message{}
				n, err := c.Decode(frame[:i], msg)
				want := len(frame)
				if i < headerLen {
					want = 0
				}
				if err != codec.ErrIncomplete || n != want {
					t.Fatalf("prefix %d: n %d err %v, want %d ErrIncomplete", i, n, err, want)
				}
			}
			decodeOne(t, c, frame)
		})
	}
}

func TestBackToBack(t *testing.T) {
	a := libRequest(t, hessian.PackageRequest_TwoWay, 1, echoService, []any{"one"}, map[string]string{"n": "1"})
	b := libRequest(t, hessian.PackageRequest_TwoWay, 2, hessian.Service{Path: "other.Svc", Method: "two"}, []any{"two"}, map[string]string{"n": "2"})
	buf := append(append(bytes.Clone(a), b...), a[:10]...)
	c := newCodec(t)
	msg := &codec.Message{}
	for i, want := range []struct {
		id     uint64
		method string
		n      string
	}{{1, "echo", "1"}, {2, "two", "2"}} {
		msg.Reset()
		n, err := c.Decode(buf, msg)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if msg.ID != want.id {
			t.Errorf("frame %d: id %d", i, msg.ID)
		}
		if v, _ := msg.Metadata.Get("method"); v != want.method {
			t.Errorf("frame %d: method %q", i, v)
		}
		if v, _ := msg.Metadata.Get("n"); v != want.n {
			t.Errorf("frame %d: attachment n = %q", i, v)
		}
		buf = buf[n:]
	}
	msg.Reset()
	if n, err := c.Decode(buf, msg); err != codec.ErrIncomplete || n != 0 {
		t.Errorf("trailing partial header: n %d err %v", n, err)
	}
}

func TestSetID(t *testing.T) {
	c := newCodec(t)
	frame := libRequest(t, hessian.PackageRequest_TwoWay, 5, echoService, []any{"x"}, map[string]string{"a": "b"})
	orig := bytes.Clone(frame)
	msg := decodeOne(t, c, frame)
	c.SetID(msg, 0x7fff_fff0)
	if msg.ID != 0x7fff_fff0 || idOf(frame) != 0x7fff_fff0 {
		t.Fatalf("id %d, frame id %d", msg.ID, idOf(frame))
	}
	if !bytes.Equal(frame[:4], orig[:4]) || !bytes.Equal(frame[12:], orig[12:]) {
		t.Fatal("SetID changed bytes outside the id")
	}
	if h, _ := libRead(t, frame); h.ID != 0x7fff_fff0 {
		t.Errorf("dubbo-go-hessian2 reads id %d", h.ID)
	}
	if v, _ := msg.Metadata.Get("a"); v != "b" {
		t.Errorf("attachment after SetID: %q", v)
	}
	empty := &codec.Message{}
	c.SetID(empty, 3) // no frame: must not panic
	if empty.ID != 3 {
		t.Error("SetID without a frame did not set ID")
	}
}

func TestEncode(t *testing.T) {
	type want struct {
		meta map[string]string // metadata of the re-decoded frame (without interface/method/version)
		lib  map[string]string // attachments dubbo-go-hessian2 reads
	}
	base := func(t testing.TB) []byte {
		return libRequest(t, hessian.PackageRequest_TwoWay, 77, hessian.Service{Path: "svc.E", Method: "m"},
			[]any{"arg", &user{Name: "n", Friends: []*user{{Name: "f"}}}}, map[string]string{"keep": "1", "drop": "2", "change": "3"})
	}
	baseLib := map[string]string{"path": "svc.E", "version": "", "keep": "1", "drop": "2", "change": "3", "dubbo": "2.0.2"}
	tests := []struct {
		name  string
		frame func(t testing.TB) []byte
		mut   codec.Mutation
		want  want
	}{{
		name:  "set and remove",
		frame: base,
		mut: codec.Mutation{
			Set:    []codec.KeyValue{{Key: "change", Value: "33"}, {Key: "new", Value: "新😀"}, {Key: "gone", Value: "x"}},
			Remove: []string{"drop", "gone", "absent"},
		},
		want: want{
			meta: map[string]string{"path": "svc.E", "version": "", "keep": "1", "change": "33", "new": "新😀"},
			lib:  map[string]string{"path": "svc.E", "version": "", "keep": "1", "change": "33", "new": "新😀", "dubbo": "2.0.2"},
		},
	}, {
		name:  "last set wins",
		frame: base,
		mut:   codec.Mutation{Set: []codec.KeyValue{{Key: "keep", Value: "a"}, {Key: "x", Value: "b"}, {Key: "keep", Value: "c"}, {Key: "x", Value: "d"}}},
		want: want{
			meta: map[string]string{"path": "svc.E", "version": "", "keep": "c", "drop": "2", "change": "3", "x": "d"},
		},
	}, {
		name: "no attachment map gets one",
		frame: func(t testing.TB) []byte {
			return rawFrame(0xc2, 0, 77, encodeValues(t, "2.0.2", "svc.E", "", "m", "Ljava/lang/String;", "arg"))
		},
		mut:  codec.Mutation{Set: []codec.KeyValue{{Key: "a", Value: "1"}}, Remove: []string{"b"}},
		want: want{meta: map[string]string{"a": "1"}, lib: map[string]string{"a": "1", "dubbo": "2.0.2"}},
	}, {
		name: "null attachment map is replaced",
		frame: func(t testing.TB) []byte {
			return rawFrame(0xc2, 0, 77, encodeValues(t, "2.0.2", "svc.E", "", "m", "", nil))
		},
		mut:  codec.Mutation{Set: []codec.KeyValue{{Key: "a", Value: "1"}}},
		want: want{meta: map[string]string{"a": "1"}, lib: map[string]string{"a": "1", "dubbo": "2.0.2"}},
	}, {
		name: "typed map keeps its type and untouched values keep their encoding",
		frame: func(t testing.TB) []byte {
			body := encodeValues(t, "2.0.2", "svc.E", "", "m", "")
			body = append(body, 'M')
			body = append(body, encodeValues(t, "java.util.TreeMap", "n", int32(5), "list", []string{"x"}, "s", "t")...)
			return rawFrame(0xc2, 0, 77, append(body, 'Z'))
		},
		mut:  codec.Mutation{Set: []codec.KeyValue{{Key: "s", Value: "u"}}, Remove: []string{"list"}},
		want: want{meta: map[string]string{"n": "5", "s": "u"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCodec(t)
			frame := tt.frame(t)
			msg := decodeOne(t, c, frame)
			eager := map[string]string{}
			for _, k := range []string{"interface", "method", "version"} {
				if v, ok := msg.Metadata.Get(k); ok {
					eager[k] = v
				}
			}
			prefix := []byte("keep me")
			out, err := c.Encode(prefix, msg, &tt.mut)
			if err != nil {
				t.Fatal(err)
			}
			if string(out[:7]) != "keep me" {
				t.Fatal("dst prefix overwritten")
			}
			enc := out[7:]
			if !bytes.Equal(msg.Frame, enc) {
				t.Fatal("msg.Frame does not point at the encoded frame")
			}
			argsEnd := frame[:msgArgsEnd(t, frame)]
			if !bytes.Equal(enc[:4], frame[:4]) || !bytes.Equal(enc[4:12], frame[4:12]) || !bytes.HasPrefix(enc[16:], argsEnd[16:]) {
				t.Fatal("bytes before the attachment map changed")
			}
			wantMeta := maps.Clone(tt.want.meta)
			maps.Copy(wantMeta, eager)
			if got := metadata(t, msg); !maps.Equal(got, wantMeta) {
				t.Errorf("metadata after Encode\n got %v\nwant %v", got, wantMeta)
			}
			again := decodeOne(t, newCodec(t), enc)
			if got := metadata(t, again); !maps.Equal(got, wantMeta) {
				t.Errorf("metadata decoded again\n got %v\nwant %v", got, wantMeta)
			}
			if tt.want.lib != nil {
				if got := libAttachments(t, enc); !maps.Equal(got, tt.want.lib) {
					t.Errorf("dubbo-go-hessian2 attachments\n got %v\nwant %v", got, tt.want.lib)
				}
			}
		})
	}
	t.Run("base frame as dubbo-go-hessian2 sees it", func(t *testing.T) {
		if got := libAttachments(t, base(t)); !maps.Equal(got, baseLib) {
			t.Errorf("got %v", got)
		}
	})
}

// msgArgsEnd returns where the attachment map of a request frame starts.
func msgArgsEnd(t testing.TB, frame []byte) int {
	t.Helper()
	c := newCodec(t)
	msg := decodeOne(t, c, frame)
	if err := c.locate(msg); err != nil {
		t.Fatal(err)
	}
	return msg.Private[privMapStart]
}

func TestEncodeEmptyMutationCopies(t *testing.T) {
	frames := [][]byte{
		libRequest(t, hessian.PackageRequest_TwoWay, 1, echoService, []any{"x"}, map[string]string{"a": "b"}),
		libResponse(t, hessian.PackageResponse, 1, StatusOK, "pong"),
		rawFrame(0xc6, 0, 1, []byte(`"json body"`)),
	}
	for _, frame := range frames {
		c := newCodec(t)
		msg := decodeOne(t, c, frame)
		for _, mut := range []*codec.Mutation{nil, {}} {
			out, err := c.Encode(nil, msg, mut)
			if err != nil || !bytes.Equal(out, frame) || &msg.Frame[0] != &out[0] {
				t.Errorf("flag 0x%02x: empty mutation: err %v, copy equal %v", frame[2], err, bytes.Equal(out, frame))
			}
		}
	}
}

func TestEncodeRefusals(t *testing.T) {
	set := &codec.Mutation{Set: []codec.KeyValue{{Key: "a", Value: "b"}}}
	// An attachment whose value is a list, in a map that later refers back to it.
	refMap := append(encodeValues(t, "2.0.2", "s", "", "m", ""), 'H')
	refMap = append(refMap, encodeValues(t, "a", []string{"x"}, "b")...)
	refMap = append(refMap, 'Q', 0x91, 'Z')
	tests := []struct {
		name  string
		frame []byte
		err   string
	}{
		{"heartbeat", rawFrame(0xe2, 0, 4, []byte{'N'}), "dubbo: encode: heartbeat 4 is an event, which has no attachments to rewrite"},
		{"heartbeat response", libResponse(t, hessian.PackageHeartbeat, 4, StatusOK, nil), "heartbeat_response 4 is an event"},
		{"readonly event", rawFrame(0xa2, 0, 4, encodeValues(t, "R")), "oneway 4 is an event"},
		{"fastjson request", rawFrame(0xc6, 0, 4, []byte(`"x"`)), "attachments of request 4: it is serialized with id 6, and only hessian2 (2) is supported"},
		{"renumbering", rawFrame(0xc2, 0, 4, refMap), `cannot rewrite attachment "a" of request 4`},
		{"too large", libRequest(t, hessian.PackageRequest_TwoWay, 4, echoService, []any{strings.Repeat("x", 850)}, nil), "request 4: body length 1263 exceeds limit 1100"},
		{"response with status 70", libResponse(t, hessian.PackageResponse, 4, StatusServiceError, hessian.NewResponse(nil, errors.New("failed"), nil)),
			"dubbo: encode: response 4 has status 70: a Dubbo response that is not OK carries an error message and no attachments"},
		{"response with status 100", libResponse(t, hessian.PackageResponse, 4, StatusThreadpoolExhausted, hessian.NewResponse(nil, errors.New("busy"), nil)),
			"response 4 has status 100"},
		{"kryo response", rawFrame(0x08, StatusOK, 4, []byte{0x00}), "attachments of response 4: it is serialized with id 8, and only hessian2 (2) is supported"},
		{"response type unreadable", rawFrame(0x02, StatusOK, 4, []byte{'S'}), "response 4: its body does not start with a response type (0 to 5)"},
		{"response attachments unreadable", rawFrame(0x02, StatusOK, 4, encodeValues(t, int32(responseValueAttach), "pong", "oops")),
			"expected the attachment map after the value, found tag 0x04"},
		{"response renumbering", rawFrame(0x02, StatusOK, 4, append(encodeValues(t, int32(responseNullValueAttach)), refMap[len(encodeValues(t, "2.0.2", "s", "", "m", "")):]...)),
			`cannot rewrite attachment "a" of response 4`},
		{"response too large", libResponse(t, hessian.PackageResponse, 4, StatusOK, strings.Repeat("x", 1080)), "response 4: body length 1103 exceeds limit 1100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCodec(t)
			c.maxBody = 1100
			msg := decodeOne(t, c, tt.frame)
			mut := set
			if tt.name == "too large" {
				mut = &codec.Mutation{Set: []codec.KeyValue{{Key: "big", Value: strings.Repeat("y", 200)}}}
			}
			out, err := c.Encode([]byte("dst"), msg, mut)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
			if string(out) != "dst" {
				t.Errorf("dst changed on error: %q", out)
			}
			// The proxy sends the message as it was when an edit fails.
			if !bytes.Equal(msg.Frame, tt.frame) || msg.ID != 4 {
				t.Errorf("a refused edit changed the message: frame equal %v, id %d", bytes.Equal(msg.Frame, tt.frame), msg.ID)
			}
		})
	}
}

func TestCountArgs(t *testing.T) {
	tests := []struct {
		desc string
		n    int
		ok   bool
	}{
		{"", 0, true},
		{"Ljava/lang/String;I[B", 3, true},
		{"Ljava/lang/String;[Ljava/lang/String;[Ljava/lang/Object;", 3, true},
		{"ZBCDFIJSV", 9, true},
		{"[[[I[[Ljava/util/Map;", 2, true},
		{"Ljava/lang/String", 0, false},
		{"[", 0, false},
		{"Q", 0, false},
		{"java.lang.String", 0, false},
	}
	for _, tt := range tests {
		if n, ok := countArgs([]byte(tt.desc)); n != tt.n || ok != tt.ok {
			t.Errorf("countArgs(%q) = %d, %v; want %d, %v", tt.desc, n, ok, tt.n, tt.ok)
		}
	}
}

func TestErrorStatusCoversEveryKind(t *testing.T) {
	for _, k := range append(codec.ErrorKinds, codec.ErrorKind(200)) {
		if s := ErrorStatus(k); s == StatusOK || s == 0 {
			t.Errorf("%v maps to %d", k, s)
		}
	}
	if math.MaxUint8 < StatusThreadpoolExhausted {
		t.Fatal("statuses are bytes")
	}
}

// TestRepeatedAttachmentLastWins checks that a key repeated in the attachment map reads as its last value, as
// the provider's own map decoding reads it, while the header's fields still win over attachments.
func TestRepeatedAttachmentLastWins(t *testing.T) {
	body := encodeValues(t, "2.0.2", "org.example.Echo", "", "echo", "Ljava/lang/String;", "hi")
	// An untyped map written by hand: dubbo-go-hessian2 cannot write a key twice.
	body = append(body, 'H')
	for _, kv := range [][2]string{{"env", "canary"}, {"method", "spoofed"}, {"env", "prod"}} {
		body = append(body, encodeValues(t, kv[0], kv[1])...)
	}
	body = append(body, 'Z')
	msg := decodeOne(t, newCodec(t), rawFrame(0xc2, 0, 9, body))
	if v, _ := msg.Metadata.Get("env"); v != "prod" {
		t.Errorf("env = %q, want the last value, prod", v)
	}
	if v, _ := msg.Metadata.Get("method"); v != "echo" {
		t.Errorf("method = %q, want the header's echo", v)
	}
}
