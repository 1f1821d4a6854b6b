package brpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meltemi-mesh/meltemi/codec"
)

func TestRegistration(t *testing.T) {
	reg := Registration()
	if reg.Name != "aeraki.meta_protocol.codec.brpc" || reg.Protocol != "brpc" {
		t.Fatalf("registration %q %q", reg.Name, reg.Protocol)
	}
	if c := newCodec(t); c.maxBody != DefaultMaxBodySize || c.upstream {
		t.Errorf("default codec: maxBody %d upstream %v", c.maxBody, c.upstream)
	}
	if c := newUpstream(t); !c.upstream {
		t.Error("NewCodec(codec.Upstream) returns a downstream codec")
	}
	if c := testFactory(t, `{"maxBodySize": 1024}`).NewCodec(codec.Downstream).(*Codec); c.maxBody != 1024 {
		t.Errorf("maxBody %d", c.maxBody)
	}
	if !testFactory(t, "").Properties().Multiplexing {
		t.Error("bRPC replies carry the correlation_id: Multiplexing must be on")
	}
	for _, bad := range []string{`{"maxBodySize": 0}`, `{"maxBodySize": -1}`, `{"maxBodySize": 2147483648}`,
		`{"maxBodysize": 5, "other": 1}`, `{"maxBodySize": "big"}`, `[`} {
		_, err := reg.New([]byte(bad))
		if err == nil {
			t.Errorf("config %s accepted", bad)
			continue
		}
		if !strings.Contains(err.Error(), Name) {
			t.Errorf("config %s: error %q does not name the codec", bad, err)
		}
	}
}

func TestSniff(t *testing.T) {
	f := testFactory(t, "")
	for _, tc := range []struct {
		data string
		want codec.SniffResult
	}{
		{"", codec.NeedMore},
		{"P", codec.NeedMore},
		{"PRP", codec.NeedMore},
		{"PRPC", codec.Mine},
		{"PRPC\x00\x00\x00\x10", codec.Mine},
		{"PRPX", codec.NotMine},
		{"X", codec.NotMine},
		{"\xda\xbb", codec.NotMine},
		{"GET / HTTP/1.1", codec.NotMine},
		{"STRM", codec.NotMine},
	} {
		if got := f.Sniff([]byte(tc.data)); got != tc.want {
			t.Errorf("Sniff(%q) = %v, want %v", tc.data, got, tc.want)
		}
	}
}

func TestDecode(t *testing.T) {
	type want struct {
		typ    codec.MessageType
		id     uint64
		status int32
		failed bool
		md     map[string]string
	}
	echo := map[string]string{KeyService: "example.EchoService", KeyMethod: "Echo", KeyCmd: "example.EchoService/Echo"}
	with := func(extra map[string]string) map[string]string {
		m := maps.Clone(echo)
		maps.Copy(m, extra)
		return m
	}
	tests := []struct {
		name       string
		frame      []byte
		downstream want
		upstream   *want // nil: the same as downstream
	}{
		{
			name:       "request",
			frame:      request(7),
			downstream: want{typ: codec.Request, id: 7, md: echo},
		},
		{
			name: "request with every RpcRequestMeta field",
			frame: buildFrame(cat(reqMeta("a.B", "C", vf(3, 1<<40), vf(4, 1), vf(5, 2), vf(6, 3),
				bf(7, str("x-request-id-1")), vf(8, 500)), vf(metaCorrelationID, 1<<40)), "p", ""),
			downstream: want{typ: codec.Request, id: 1 << 40, md: map[string]string{KeyService: "a.B", KeyMethod: "C", KeyCmd: "a.B/C"}},
		},
		{
			name: "request with user_fields, attachment and compression",
			frame: buildFrame(cat(reqMeta("example.EchoService", "Echo"), vf(3, 2), vf(metaCorrelationID, 300),
				vf(5, 6), userField("env", "canary"), userField("tenant", "t1")), "gzipped", "attach"),
			downstream: want{typ: codec.Request, id: 300, md: with(map[string]string{"env": "canary", "tenant": "t1"})},
		},
		{
			name: "user_fields: the last entry of a key wins, request keys are kept",
			frame: buildFrame(cat(userField("env", "a"), reqMeta("example.EchoService", "Echo"), userField("env", "b"),
				userField("service", "spoofed"), userField("cmd", "spoofed"), vf(metaCorrelationID, 1),
				bf(metaUserFields, bf(entryKey, str("empty"))), bf(metaUserFields)), "", ""),
			downstream: want{typ: codec.Request, id: 1, md: with(map[string]string{"env": "b", "empty": ""})},
		},
		{
			name:       "request without correlation_id (proto3 peers leave 0 out)",
			frame:      buildFrame(reqMeta("example.EchoService", "Echo"), "", ""),
			downstream: want{typ: codec.Request, id: 0, md: echo},
		},
		{
			name:       "request without method",
			frame:      buildFrame(cat(bf(metaRequest, bf(requestServiceName, str("svc"))), vf(metaCorrelationID, 2)), "", ""),
			downstream: want{typ: codec.Request, id: 2, md: map[string]string{KeyService: "svc"}},
		},
		{
			name:       "response",
			frame:      response(9, 0, ""),
			downstream: want{typ: codec.Response, id: 9, md: map[string]string{}},
		},
		{
			name:       "failed response",
			frame:      response(10, 2001, "boom"),
			downstream: want{typ: codec.Response, id: 10, status: 2001, failed: true, md: map[string]string{}},
		},
		{
			name:       "response with an error text but code 0",
			frame:      response(11, 0, "odd"),
			downstream: want{typ: codec.Response, id: 11, md: map[string]string{}},
		},
		{
			name:       "response with user_fields",
			frame:      buildFrame(cat(respMeta(0, ""), vf(metaCorrelationID, 12), userField("k", "v")), "", ""),
			downstream: want{typ: codec.Response, id: 12, md: map[string]string{"k": "v"}},
		},
		{
			name:       "both metas, empty response (pbrpc): the side decides",
			frame:      buildFrame(cat(reqMeta("example.EchoService", "Echo"), respMeta(0, ""), vf(metaCorrelationID, 13)), "", ""),
			downstream: want{typ: codec.Request, id: 13, md: echo},
			upstream:   &want{typ: codec.Response, id: 13, md: echo},
		},
		{
			name:       "both metas, failed response (pbrpc)",
			frame:      buildFrame(cat(reqMeta("example.EchoService", "Echo"), respMeta(1001, "no"), vf(metaCorrelationID, 14)), "", ""),
			downstream: want{typ: codec.Response, id: 14, status: 1001, failed: true, md: echo},
		},
		{
			name:       "neither meta: the side decides",
			frame:      buildFrame(vf(metaCorrelationID, 15), "", ""),
			downstream: want{typ: codec.Request, id: 15, md: map[string]string{}},
			upstream:   &want{typ: codec.Response, id: 15, md: map[string]string{}},
		},
		{
			name:       "empty body",
			frame:      buildFrame(nil, "", ""),
			downstream: want{typ: codec.Request, md: map[string]string{}},
			upstream:   &want{typ: codec.Response, md: map[string]string{}},
		},
		{
			name:       "repeated correlation_id: the last wins",
			frame:      buildFrame(cat(vf(metaCorrelationID, 1), reqMeta("example.EchoService", "Echo"), vf(metaCorrelationID, 2)), "", ""),
			downstream: want{typ: codec.Request, id: 2, md: echo},
		},
		{
			name: "repeated request meta: merged",
			frame: buildFrame(cat(bf(metaRequest, bf(requestServiceName, str("old")), bf(requestMethodName, str("Echo"))),
				bf(metaRequest, bf(requestServiceName, str("example.EchoService"))), vf(metaCorrelationID, 3)), "", ""),
			downstream: want{typ: codec.Request, id: 3, md: echo},
		},
		{
			name: "fields with other wire types are unknown fields",
			frame: buildFrame(cat(reqMeta("example.EchoService", "Echo", vf(requestServiceName, 5)), bf(metaCorrelationID, str("x")),
				vf(metaUserFields, 1), vf(metaResponse, 1)), "", ""),
			downstream: want{typ: codec.Request, id: 0, md: echo},
		},
		{
			name: "request_id (field 7) of any wire type; unknown fields and groups",
			frame: buildFrame(cat(reqMeta("example.EchoService", "Echo", vf(7, 1), bf(7, bf(1, str("k")), bf(2, str("v"))),
				protowire.AppendFixed32(protowire.AppendTag(nil, 7, protowire.Fixed32Type), 1)),
				vf(metaCorrelationID, 4), vf(100, 1), bf(101, str("sofa")),
				protowire.AppendFixed64(protowire.AppendTag(nil, 50, protowire.Fixed64Type), 1),
				protowire.AppendTag(protowire.AppendTag(vf(0x7ff, 1), 60, protowire.StartGroupType), 60, protowire.EndGroupType),
				bf(metaChunkInfo), bf(metaChunkInfo, vf(2, 5))), "", ""),
			downstream: want{typ: codec.Request, id: 4, md: echo},
		},
		{
			name:       "an int32 error_code keeps its low 32 bits",
			frame:      buildFrame(cat(bf(metaResponse, vf(responseErrorCode, 0xffff_ffff_ffff_fffe)), vf(metaCorrelationID, 5)), "", ""),
			downstream: want{typ: codec.Response, id: 5, status: -2, failed: true, md: map[string]string{}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for side, c := range map[string]*Codec{"downstream": newCodec(t), "upstream": newUpstream(t)} {
				w := tc.downstream
				if side == "upstream" && tc.upstream != nil {
					w = *tc.upstream
				}
				buf := append(bytes.Clone(tc.frame), "PRPC"...) // the start of the next frame
				msg := &codec.Message{}
				n, err := c.Decode(buf, msg)
				if err != nil || n != len(tc.frame) {
					t.Fatalf("%s: n %d err %v", side, n, err)
				}
				if !bytes.Equal(msg.Frame, tc.frame) || cap(msg.Frame) != len(msg.Frame) {
					t.Errorf("%s: frame is not buf[:n:n]", side)
				}
				if msg.Type != w.typ || msg.ID != w.id || msg.Status != w.status || msg.Failed != w.failed {
					t.Errorf("%s: got %v id %d status %d failed %v, want %v id %d status %d failed %v", side,
						msg.Type, msg.ID, msg.Status, msg.Failed, w.typ, w.id, w.status, w.failed)
				}
				if got := metadataOf(msg); !maps.Equal(got, w.md) {
					t.Errorf("%s: metadata %v, want %v", side, got, w.md)
				}
				if err := msg.Metadata.Err(); err != nil {
					t.Errorf("%s: metadata error %v", side, err)
				}
			}
		})
	}
}

// TestDecodePbrpc decodes what real pbrpc v1.4.0 clients and servers sent (testdata/pbrpcpeer records it).
func TestDecodePbrpc(t *testing.T) {
	echo := map[string]string{KeyService: "example.EchoService", KeyMethod: "Echo", KeyCmd: "example.EchoService/Echo"}
	tests := []struct {
		name     string
		method   string
		status   int32
		wantText string
	}{
		{name: "echo", method: "Echo"},
		{name: "ext-attachment-gzip", method: "Echo"},
		{name: "snappy-trace", method: "Echo"},
		{name: "error", method: "Fail", status: 2001, wantText: "fail on purpose"},
		{name: "not-found", method: "Missing", status: 1001, wantText: "not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			md := maps.Clone(echo)
			md[KeyMethod], md[KeyCmd] = tc.method, "example.EchoService/"+tc.method
			reqFrame := pbrpcFrames(t, tc.name+"-request")
			req := decodeOne(t, newCodec(t), reqFrame)
			if req.Type != codec.Request || req.ID != 1 {
				t.Errorf("request: %v id %d", req.Type, req.ID)
			}
			if got := metadataOf(req); !maps.Equal(got, md) {
				t.Errorf("request metadata %v, want %v", got, md)
			}
			lib, _ := readMeta(t, reqFrame)
			if lib.Service != "example.EchoService" || lib.ID != 1 {
				t.Errorf("protobuf reads %+v", lib)
			}

			respFrame := pbrpcFrames(t, tc.name+"-response")
			resp := decodeOne(t, newUpstream(t), respFrame)
			if resp.Type != codec.Response || resp.ID != 1 || resp.Status != tc.status || resp.Failed != (tc.status != 0) {
				t.Errorf("response: %v id %d status %d failed %v", resp.Type, resp.ID, resp.Status, resp.Failed)
			}
			lib, _ = readMeta(t, respFrame)
			if !strings.Contains(lib.ErrorText, tc.wantText) {
				t.Errorf("error_text %q", lib.ErrorText)
			}
			// A failed pbrpc response is a response on either side; a successful one only by the side.
			down := decodeOne(t, newCodec(t), respFrame)
			if tc.status != 0 && down.Type != codec.Response || tc.status == 0 && down.Type != codec.Request {
				t.Errorf("response decoded downstream as %v", down.Type)
			}
		})
	}
	t.Run("chunked", func(t *testing.T) {
		// pbrpc's ChunkSize splits one request into several frames sharing a chunk_info stream id.
		buf := pbrpcFrames(t, "chunked-request")
		msg := &codec.Message{}
		_, err := newCodec(t).Decode(buf, msg)
		var fe *codec.FrameError
		if !errors.As(err, &fe) || !fe.CanReply || msg.Type != codec.Request || msg.ID != 1 ||
			!strings.Contains(fe.Reason, "chunked messages are not supported") {
			t.Fatalf("chunked request: %v (%+v), msg %v %d", err, fe, msg.Type, msg.ID)
		}
		// The server answers with one ordinary frame.
		resp := decodeOne(t, newUpstream(t), pbrpcFrames(t, "chunked-response"))
		if resp.Type != codec.Response || resp.ID != 1 {
			t.Errorf("response: %v %d", resp.Type, resp.ID)
		}
	})
	t.Run("extension and attachment", func(t *testing.T) {
		// pbrpc's key/value extension reuses RpcRequestMeta field 7; the codec does not expose it.
		frame := pbrpcFrames(t, "ext-attachment-gzip-request")
		lib, rest := readMeta(t, frame)
		if lib.Compress != 2 || lib.AttachmentSize != int32(len("attached bytes")) || !bytes.HasSuffix(rest, []byte("attached bytes")) {
			t.Errorf("compress %d attachment %d", lib.Compress, lib.AttachmentSize)
		}
		msg := decodeOne(t, newCodec(t), frame)
		if _, ok := msg.Metadata.Get("env"); ok {
			t.Error("pbrpc's extension leaked into metadata")
		}
	})
}

// TestSplitPoints feeds every prefix of frames: before the header is whole the length is unknown (n 0), after
// it n is the frame's length.
func TestSplitPoints(t *testing.T) {
	frames := map[string][]byte{
		"request":        request(7, userField("env", "canary")),
		"response":       response(8, 2001, "boom"),
		"pbrpc request":  pbrpcFrames(t, "ext-attachment-gzip-request"),
		"pbrpc response": pbrpcFrames(t, "error-response"),
		"empty":          buildFrame(nil, "", ""),
	}
	for name, frame := range frames {
		for _, c := range []*Codec{newCodec(t), newUpstream(t)} {
			for i := range len(frame) {
				msg := &codec.Message{}
				n, err := c.Decode(frame[:i], msg)
				want := 0
				if i >= headerLen {
					want = len(frame)
				}
				if err != codec.ErrIncomplete || n != want {
					t.Fatalf("%s: %d of %d bytes: n %d err %v, want %d ErrIncomplete", name, i, len(frame), n, err, want)
				}
			}
		}
	}
	// Frames back to back decode one after the other.
	var stream []byte
	for _, id := range []uint64{1, 2, 3} {
		stream = append(stream, request(id)...)
	}
	c := newCodec(t)
	for _, id := range []uint64{1, 2, 3} {
		msg := &codec.Message{}
		n, err := c.Decode(stream, msg)
		if err != nil || msg.ID != id {
			t.Fatalf("frame %d: %v id %d", id, err, msg.ID)
		}
		stream = stream[n:]
	}
}

func TestDecodeErrors(t *testing.T) {
	big := func(meta []byte, body uint32) []byte {
		out := []byte(magic)
		out = binary.BigEndian.AppendUint32(out, body)
		out = binary.BigEndian.AppendUint32(out, uint32(len(meta)))
		return append(out, meta...)
	}
	reqMetaBytes := cat(reqMeta("example.EchoService", "Echo"), vf(metaCorrelationID, 77))
	tests := []struct {
		name     string
		frame    []byte
		reason   string
		canReply bool
		id       uint64
	}{
		{name: "bad magic", frame: []byte("HTTP/1.1 200 OK\r\n"), reason: `bad magic "HTTP"`},
		{name: "bad magic, one byte", frame: []byte("G"), reason: "bad magic"},
		{name: "bad magic, dubbo", frame: []byte{0xda, 0xbb, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}, reason: "bad magic"},
		{name: "streaming protocol frame", frame: []byte("STRM\x00\x00\x00\x00\x00\x00\x00\x00"), reason: "bad magic"},
		{name: "meta larger than body", frame: []byte("PRPC\x00\x00\x00\x04\x00\x00\x00\x05"), reason: "meta_size 5 exceeds body_size 4"},
		{name: "over limit, request meta present", frame: big(reqMetaBytes, 64<<20+1), reason: "body_size 67108865 exceeds limit 67108864",
			canReply: true, id: 77},
		{name: "over limit, response", frame: big(cat(respMeta(0, ""), vf(metaCorrelationID, 1)), 0xffffffff), reason: "exceeds limit"},
		{name: "over limit, meta too large to wait for", frame: []byte("PRPC\xff\xff\xff\xff\x00\x10\x00\x00"), reason: "exceeds limit"},
		{name: "over limit, bad meta", frame: big([]byte{0xff}, 0xffffffff), reason: "exceeds limit"},
		{name: "truncated varint", frame: buildFrame([]byte{0x20, 0x80}, "", ""), reason: "RpcMeta: field 4 at offset 1: unexpected EOF"},
		{name: "field number 0", frame: buildFrame([]byte{0x00, 0x01}, "", ""), reason: "RpcMeta: bad tag at offset 0"},
		{name: "length past the meta", frame: buildFrame([]byte{0x0a, 0x05, 0x0a}, "payload", ""), reason: "RpcMeta: field 1 at offset 1: unexpected EOF"},
		{name: "bad request meta", frame: buildFrame(bf(metaRequest, []byte{0x0a, 0x09}), "", ""), reason: "RpcRequestMeta: field 1"},
		{name: "bad response meta", frame: buildFrame(bf(metaResponse, []byte{0x08}), "", ""), reason: "RpcResponseMeta: field 1"},
		{name: "bad chunk info", frame: buildFrame(bf(metaChunkInfo, []byte{0x08, 0xff}), "", ""), reason: "ChunkInfo: field 1"},
		{name: "unmatched end group", frame: buildFrame(protowire.AppendTag(nil, 5, protowire.EndGroupType), "", ""), reason: "RpcMeta: field 5"},
		{name: "streaming request", frame: buildFrame(cat(reqMetaBytes, bf(metaStreamSettings, vf(1, 5))), "", ""),
			reason: "streaming RPCs are not supported", canReply: true, id: 77},
		{name: "streaming response", frame: buildFrame(cat(respMeta(0, ""), vf(metaCorrelationID, 3), bf(metaStreamSettings)), "", ""),
			reason: "streaming RPCs are not supported"},
		{name: "chunk", frame: buildFrame(cat(reqMetaBytes, bf(metaChunkInfo, vf(chunkStreamID, 99), vf(2, 1))), "", ""),
			reason: "chunk_info stream 99", canReply: true, id: 77},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := &codec.Message{}
			_, err := newCodec(t).Decode(tc.frame, msg)
			var fe *codec.FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("err %v, want a FrameError", err)
			}
			if !strings.HasPrefix(fe.Reason, "brpc: ") || !strings.Contains(fe.Reason, tc.reason) {
				t.Errorf("reason %q, want %q", fe.Reason, tc.reason)
			}
			if fe.CanReply != tc.canReply {
				t.Errorf("CanReply %v", fe.CanReply)
			}
			if tc.canReply && (msg.Type != codec.Request || msg.ID != tc.id) {
				t.Errorf("msg %v %d, want request %d", msg.Type, msg.ID, tc.id)
			}
		})
	}
	t.Run("over limit waits for the meta", func(t *testing.T) {
		frame := big(reqMetaBytes, 1<<30)
		for i := headerLen; i < len(frame); i++ {
			if n, err := newCodec(t).Decode(frame[:i], &codec.Message{}); err != codec.ErrIncomplete || n != 0 {
				t.Fatalf("%d bytes: n %d err %v", i, n, err)
			}
		}
	})
	t.Run("configured limit", func(t *testing.T) {
		c := testFactory(t, `{"maxBodySize": 16}`).NewCodec(codec.Downstream)
		ok := buildFrame(vf(metaCorrelationID, 1), strings.Repeat("x", 14), "")
		if _, err := c.Decode(ok, &codec.Message{}); err != nil {
			t.Fatalf("a 16-byte body: %v", err)
		}
		if _, err := c.Decode(buildFrame(vf(metaCorrelationID, 1), strings.Repeat("x", 15), ""), &codec.Message{}); err == nil {
			t.Fatal("a 17-byte body was accepted")
		}
	})
	t.Run("too many user_fields", func(t *testing.T) {
		fields := [][]byte{reqMetaBytes}
		for i := range maxUserFields + 1 {
			fields = append(fields, userField(fmt.Sprint("k", i), "v"))
		}
		msg := decodeOne(t, newCodec(t), buildFrame(cat(fields...), "", ""))
		if v, _ := msg.Metadata.Get("k0"); v != "v" {
			t.Errorf("k0 = %q", v)
		}
		if err := msg.Metadata.Err(); err == nil || !strings.Contains(err.Error(), "more than 1024 entries") {
			t.Errorf("Err() = %v", err)
		}
	})
	t.Run("bad user_fields entry", func(t *testing.T) {
		// user_fields are read lazily: the frame is routed on its request meta, and Metadata.Err says why the
		// rest is missing.
		frame := buildFrame(cat(reqMetaBytes, bf(metaUserFields, []byte{0x0a, 0x05})), "", "")
		msg := decodeOne(t, newCodec(t), frame)
		if v, _ := msg.Metadata.Get(KeyMethod); v != "Echo" {
			t.Errorf("method %q", v)
		}
		if _, ok := msg.Metadata.Get("env"); ok {
			t.Error("env found")
		}
		if err := msg.Metadata.Err(); err == nil || !strings.Contains(err.Error(), "user_fields entry") {
			t.Errorf("Err() = %v", err)
		}
	})
}

func TestHeartbeatReply(t *testing.T) {
	c := newCodec(t)
	req := decodeOne(t, c, request(1))
	dst := []byte("keep")
	if got := c.HeartbeatReply(dst, req); !bytes.Equal(got, dst) {
		t.Errorf("HeartbeatReply appended %q", got[len(dst):])
	}
}
