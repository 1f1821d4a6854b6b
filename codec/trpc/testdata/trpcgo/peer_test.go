package trpcgo

// The frames here are written and read by tRPC-Go's own codecs (client and server, unary and stream) and its
// client stub, in process: the proxy's codec sits where the network would be, between a real client and a
// real server, with no sockets and no sleeps.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	trpc "trpc.group/trpc-go/trpc-go"
	"trpc.group/trpc-go/trpc-go/client"
	trpccodec "trpc.group/trpc-go/trpc-go/codec"
	"trpc.group/trpc-go/trpc-go/errs"
	"trpc.group/trpc-go/trpc-go/server"
	"trpc.group/trpc-go/trpc-go/transport"
	trpcpb "trpc.group/trpc/trpc-protocol/pb/go/trpc"

	"github.com/meltemi-mesh/meltemi/codec"
	meltemitrpc "github.com/meltemi-mesh/meltemi/codec/trpc"
)

const (
	callee = "trpc.test.echo.Echo"
	method = "/trpc.test.echo.Echo/Say"
	caller = "trpc.test.client.service"
)

// roundTrip is a client transport that hands the request frame to a function instead of a socket.
type roundTrip func(req []byte) ([]byte, error)

func (f roundTrip) RoundTrip(_ context.Context, req []byte, _ ...transport.RoundTripOption) ([]byte, error) {
	return f(bytes.Clone(req))
}

// invoke makes a call with tRPC-Go's client stub over rt and returns the response body.
func invoke(t *testing.T, rt roundTrip, extra ...client.Option) (*client.Attachment, []byte, error) {
	t.Helper()
	ctx, msg := trpccodec.WithNewMessage(context.Background())
	msg.WithClientRPCName(method)
	msg.WithCalleeMethod("Say")
	att := client.NewAttachment(bytes.NewReader([]byte("request-attachment")))
	opts := append([]client.Option{
		client.WithProtocol("trpc"),
		client.WithTarget("ip://127.0.0.1:8000"),
		client.WithTransport(rt),
		client.WithServiceName(callee),
		client.WithCallerServiceName(caller),
		client.WithSerializationType(trpccodec.SerializationTypeNoop),
		client.WithTimeout(2 * time.Second),
		client.WithMetaData("env", []byte("canary")),
		client.WithMetaData("x-trace", []byte("t-1")),
		client.WithAttachment(att),
	}, extra...)
	rsp := &trpccodec.Body{}
	err := client.DefaultClient.Invoke(ctx, &trpccodec.Body{Data: []byte("hello")}, rsp, opts...)
	return att, rsp.Data, err
}

func newCodec(t *testing.T, side codec.Side) codec.Codec {
	t.Helper()
	f, err := meltemitrpc.Registration().New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return f.NewCodec(side)
}

func decode(t *testing.T, c codec.Codec, frame []byte) *codec.Message {
	t.Helper()
	msg := &codec.Message{}
	n, err := c.Decode(frame, msg)
	if err != nil || n != len(frame) {
		t.Fatalf("Decode: n %d of %d: %v", n, len(frame), err)
	}
	return msg
}

func get(msg *codec.Message, key string) string {
	v, _ := msg.Metadata.Get(key)
	return v
}

// serve decodes a request frame with tRPC-Go's server codec and encodes its response, as a server would.
func serve(t *testing.T, req []byte, handle func(msg trpccodec.Msg) ([]byte, error)) []byte {
	t.Helper()
	_, msg := trpccodec.WithNewMessage(context.Background())
	body, err := trpc.DefaultServerCodec.Decode(msg, req)
	if err != nil {
		t.Fatalf("tRPC-Go server codec refuses the proxied request: %v", err)
	}
	if string(body) != "hello" {
		t.Fatalf("server body %q", body)
	}
	rspBody, herr := handle(msg)
	if herr != nil {
		msg.WithServerRspErr(herr)
	}
	rsp, err := trpc.DefaultServerCodec.Encode(msg, rspBody)
	if err != nil {
		t.Fatalf("server encode: %v", err)
	}
	return rsp
}

// TestProxiedCall runs calls from tRPC-Go's client through the codec the way the proxy does (decode, new id,
// trans_info edit) to tRPC-Go's server codec, and its responses back (decode, original id restored).
func TestProxiedCall(t *testing.T) {
	tests := []struct {
		name    string
		proxyID uint64
		handle  func(t *testing.T, msg trpccodec.Msg) ([]byte, error)
		status  int32
		failed  bool
		code    int
	}{{
		name:    "ok, id grows",
		proxyID: 300000, // three varint bytes for a client id of one: the frame is rebuilt
		handle: func(t *testing.T, msg trpccodec.Msg) ([]byte, error) {
			server.GetAttachment(msg).SetResponse(bytes.NewReader([]byte("response-attachment")))
			msg.WithServerMetaData(trpccodec.MetaData{"rsp-key": []byte("rsp-value")})
			return []byte("world"), nil
		},
	}, {
		name:    "business error",
		proxyID: 7,
		handle: func(*testing.T, trpccodec.Msg) ([]byte, error) {
			return nil, errs.New(10042, "no such user")
		},
		status: 10042, failed: true, code: 10042,
	}, {
		name:    "framework error",
		proxyID: 1 << 30,
		handle: func(*testing.T, trpccodec.Msg) ([]byte, error) {
			return nil, errs.NewFrameError(errs.RetServerOverload, "busy")
		},
		status: 22, failed: true, code: 22,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			down, up := newCodec(t, codec.Downstream), newCodec(t, codec.Upstream)
			att, body, err := invoke(t, func(req []byte) ([]byte, error) {
				msg := decode(t, down, req)
				if msg.Type != codec.Request || get(msg, "caller") != caller || get(msg, "callee") != callee ||
					get(msg, "func") != method || get(msg, "env") != "canary" || get(msg, "x-trace") != "t-1" {
					t.Fatalf("request decodes to %v caller %q callee %q func %q env %q", msg.Type,
						get(msg, "caller"), get(msg, "callee"), get(msg, "func"), get(msg, "env"))
				}
				clientID := msg.ID
				if uint32(clientID) != binary.BigEndian.Uint32(req[10:14]) {
					t.Fatalf("id %d, fixed header %d", clientID, binary.BigEndian.Uint32(req[10:14]))
				}
				down.SetID(msg, tt.proxyID)
				out, err := down.Encode(nil, msg, &codec.Mutation{
					Set: []codec.KeyValue{{Key: "x-meltemi", Value: "1"}}, Remove: []string{"x-trace"}})
				if err != nil {
					t.Fatal(err)
				}
				rsp := serve(t, out, func(smsg trpccodec.Msg) ([]byte, error) {
					head := smsg.ServerReqHead().(*trpcpb.RequestProtocol)
					fh := smsg.FrameHead().(*trpc.FrameHead)
					if uint64(head.RequestId) != tt.proxyID || uint64(fh.StreamID) != tt.proxyID {
						t.Fatalf("server sees request_id %d, fixed header %d, want %d", head.RequestId, fh.StreamID, tt.proxyID)
					}
					md := smsg.ServerMetaData()
					if string(md["x-meltemi"]) != "1" || string(md["env"]) != "canary" || md["x-trace"] != nil {
						t.Fatalf("server metadata %q", md)
					}
					if smsg.CallerServiceName() != caller || smsg.ServerRPCName() != method {
						t.Fatalf("server sees caller %q func %q", smsg.CallerServiceName(), smsg.ServerRPCName())
					}
					a, _ := io.ReadAll(server.GetAttachment(smsg).Request())
					if string(a) != "request-attachment" {
						t.Fatalf("server attachment %q", a)
					}
					return tt.handle(t, smsg)
				})
				r := decode(t, up, rsp)
				if r.Type != codec.Response || r.ID != tt.proxyID || r.Status != tt.status || r.Failed != tt.failed {
					t.Fatalf("response decodes to %v id %d status %d failed %v", r.Type, r.ID, r.Status, r.Failed)
				}
				up.SetID(r, clientID)
				return r.Frame, nil
			})
			if tt.code != 0 {
				if errs.Code(err) != trpcpb.TrpcRetCode(tt.code) {
					t.Fatalf("client error %v, want code %d", err, tt.code)
				}
				return
			}
			if err != nil || string(body) != "world" {
				t.Fatalf("client: %q, %v", body, err)
			}
			a, _ := io.ReadAll(att.Response())
			if string(a) != "response-attachment" {
				t.Fatalf("client response attachment %q", a)
			}
		})
	}
}

// TestIDPaddedInPlace: an id shorter than the client's is written in the varint's bytes with continuation
// bytes, which tRPC-Go's protobuf reads.
func TestIDPaddedInPlace(t *testing.T) {
	c := newCodec(t, codec.Downstream)
	_, _, err := invoke(t, func(req []byte) ([]byte, error) {
		msg := decode(t, c, req)
		c.SetID(msg, 1<<28) // five bytes: grown
		grown := msg.Frame
		c.SetID(msg, 3) // one byte of value in five: in place
		if &msg.Frame[0] != &grown[0] || len(msg.Frame) != len(grown) {
			t.Fatal("a shorter id was not written in place")
		}
		serve(t, msg.Frame, func(smsg trpccodec.Msg) ([]byte, error) {
			if id := smsg.ServerReqHead().(*trpcpb.RequestProtocol).RequestId; id != 3 {
				t.Fatalf("server sees request_id %d", id)
			}
			return nil, nil
		})
		return nil, errs.ErrClientNoResponse
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestErrorReplies: tRPC-Go's client reads every error reply as a callee framework error with the reply's
// code and message.
func TestErrorReplies(t *testing.T) {
	for _, kind := range codec.ErrorKinds {
		t.Run(kind.String(), func(t *testing.T) {
			c := newCodec(t, codec.Downstream)
			var status int32
			_, _, err := invoke(t, func(req []byte) ([]byte, error) {
				msg := decode(t, c, req)
				var reply []byte
				reply, status = c.ErrorReply(nil, msg, kind, "meltemi: "+kind.String()+" for "+method)
				return reply, nil
			})
			var e *errs.Error
			if !errors.As(err, &e) {
				t.Fatalf("client error %v (%T)", err, err)
			}
			if e.Type != errs.ErrorTypeCalleeFramework || int32(e.Code) != status || status != meltemitrpc.ErrorRet(kind) ||
				e.Msg != "meltemi: "+kind.String()+" for "+method {
				t.Fatalf("client error type %d code %d msg %q; reply status %d", e.Type, e.Code, e.Msg, status)
			}
		})
	}
}

// TestOneway: a oneway request decodes as Oneway and gets no error reply.
func TestOneway(t *testing.T) {
	c := newCodec(t, codec.Downstream)
	_, _, err := invoke(t, func(req []byte) ([]byte, error) {
		msg := decode(t, c, req)
		if msg.Type != codec.Oneway || get(msg, "func") != method {
			t.Fatalf("oneway decodes to %v func %q", msg.Type, get(msg, "func"))
		}
		if reply, status := c.ErrorReply(nil, msg, codec.RouteNotFound, "x"); len(reply) != 0 || status != 0 {
			t.Fatalf("error reply to a oneway request: %x, %d", reply, status)
		}
		return nil, errs.ErrClientNoResponse
	}, client.WithSendOnly())
	if err != nil {
		t.Fatal(err)
	}
}

// streamMsg is a tRPC-Go message set up for a stream frame.
func streamMsg(frameType trpcpb.TrpcStreamFrameType, id uint32, frame any) trpccodec.Msg {
	_, msg := trpccodec.WithNewMessage(context.Background())
	msg.WithFrameHead(&trpc.FrameHead{FrameType: uint8(trpcpb.TrpcDataFrameType_TRPC_STREAM_FRAME),
		StreamFrameType: uint8(frameType), StreamID: id})
	msg.WithStreamID(id)
	msg.WithLocalAddr(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8000})
	msg.WithRemoteAddr(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000})
	if frame != nil {
		msg.WithStreamFrame(frame)
	}
	return msg
}

// TestStream carries a stream's frames from tRPC-Go's client stream codec through the codec to its server
// stream codec, with the stream id rewritten, and the server's frames back.
func TestStream(t *testing.T) {
	down, up := newCodec(t, codec.Downstream), newCodec(t, codec.Upstream)
	const clientStream, proxyStream = 5, 90000
	proxy := func(c codec.Codec, frame []byte, want codec.MessageType, id uint64) *codec.Message {
		t.Helper()
		msg := decode(t, c, frame)
		if msg.Type != want {
			t.Fatalf("frame decodes to %v, want %v", msg.Type, want)
		}
		c.SetID(msg, id)
		return msg
	}
	serverDecode := func(frame []byte) trpccodec.Msg {
		t.Helper()
		msg := streamMsg(0, 0, nil)
		if _, err := trpc.DefaultServerCodec.Decode(msg, frame); err != nil {
			t.Fatalf("server stream codec: %v", err)
		}
		if msg.StreamID() != proxyStream {
			t.Fatalf("server sees stream %d", msg.StreamID())
		}
		return msg
	}
	clientDecode := func(frame []byte) trpccodec.Msg {
		t.Helper()
		msg := streamMsg(0, 0, nil)
		if _, err := trpc.DefaultClientCodec.Decode(msg, frame); err != nil {
			t.Fatalf("client stream codec: %v", err)
		}
		if msg.StreamID() != clientStream {
			t.Fatalf("client sees stream %d", msg.StreamID())
		}
		return msg
	}

	// INIT from the client, with routing names and metadata.
	cmsg := streamMsg(trpcpb.TrpcStreamFrameType_TRPC_STREAM_FRAME_INIT, clientStream,
		&trpcpb.TrpcStreamInitMeta{RequestMeta: &trpcpb.TrpcStreamInitRequestMeta{}, InitWindowSize: 65536})
	cmsg.WithCallerServiceName(caller)
	cmsg.WithCalleeServiceName(callee)
	cmsg.WithClientRPCName(method)
	cmsg.WithClientMetaData(trpccodec.MetaData{"env": []byte("canary")})
	frame, err := trpc.DefaultClientCodec.Encode(cmsg, nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := proxy(down, frame, codec.StreamInit, proxyStream)
	if get(msg, "caller") != caller || get(msg, "callee") != callee || get(msg, "func") != method || get(msg, "env") != "canary" {
		t.Fatalf("init metadata: caller %q callee %q func %q env %q", get(msg, "caller"), get(msg, "callee"), get(msg, "func"), get(msg, "env"))
	}
	out, err := down.Encode(nil, msg, &codec.Mutation{Set: []codec.KeyValue{{Key: "x-meltemi", Value: "1"}}})
	if err != nil {
		t.Fatal(err)
	}
	smsg := serverDecode(out)
	if smsg.ServerRPCName() != method || string(smsg.ServerMetaData()["x-meltemi"]) != "1" ||
		string(smsg.ServerMetaData()["env"]) != "canary" {
		t.Fatalf("server init: func %q metadata %q", smsg.ServerRPCName(), smsg.ServerMetaData())
	}

	// INIT response from the server.
	rsp, err := trpc.DefaultServerCodec.Encode(streamMsg(trpcpb.TrpcStreamFrameType_TRPC_STREAM_FRAME_INIT, proxyStream,
		&trpcpb.TrpcStreamInitMeta{ResponseMeta: &trpcpb.TrpcStreamInitResponseMeta{}, InitWindowSize: 65536}), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := proxy(up, rsp, codec.StreamInit, clientStream)
	if r.Failed {
		t.Fatal("init response failed")
	}
	if m := clientDecode(r.Frame); m.ClientRspErr() != nil {
		t.Fatalf("client init: %v", m.ClientRspErr())
	}

	// DATA and FEEDBACK both ways.
	data, err := trpc.DefaultClientCodec.Encode(streamMsg(trpcpb.TrpcStreamFrameType_TRPC_STREAM_FRAME_DATA, clientStream, nil), []byte("chunk"))
	if err != nil {
		t.Fatal(err)
	}
	msg = proxy(down, data, codec.StreamData, proxyStream)
	if body, err := trpc.DefaultServerCodec.Decode(streamMsg(0, 0, nil), msg.Frame); err != nil || string(body) != "chunk" {
		t.Fatalf("server data %q: %v", body, err)
	}
	fb, err := trpc.DefaultServerCodec.Encode(streamMsg(trpcpb.TrpcStreamFrameType_TRPC_STREAM_FRAME_FEEDBACK, proxyStream,
		&trpcpb.TrpcStreamFeedBackMeta{WindowSizeIncrement: 4096}), nil)
	if err != nil {
		t.Fatal(err)
	}
	r = proxy(up, fb, codec.StreamFeedback, clientStream)
	if m := clientDecode(r.Frame); m.StreamFrame().(*trpcpb.TrpcStreamFeedBackMeta).WindowSizeIncrement != 4096 {
		t.Fatal("feedback lost its increment")
	}

	// CLOSE from the client (one direction ends), RESET from the server (the stream fails).
	cl, err := trpc.DefaultClientCodec.Encode(streamMsg(trpcpb.TrpcStreamFrameType_TRPC_STREAM_FRAME_CLOSE, clientStream,
		&trpcpb.TrpcStreamCloseMeta{CloseType: int32(trpcpb.TrpcStreamCloseType_TRPC_STREAM_CLOSE)}), nil)
	if err != nil {
		t.Fatal(err)
	}
	msg = proxy(down, cl, codec.StreamCloseOneWay, proxyStream)
	if msg.Failed {
		t.Fatal("a normal close failed")
	}
	serverDecode(msg.Frame)
	reset, err := trpc.DefaultClientCodec.Encode(streamMsg(trpcpb.TrpcStreamFrameType_TRPC_STREAM_FRAME_CLOSE, proxyStream,
		&trpcpb.TrpcStreamCloseMeta{CloseType: int32(trpcpb.TrpcStreamCloseType_TRPC_STREAM_RESET), Ret: 31, Msg: []byte("boom")}), nil)
	if err != nil {
		t.Fatal(err)
	}
	r = proxy(up, reset, codec.StreamCloseTwoWay, clientStream)
	if !r.Failed || r.Status != 31 {
		t.Fatalf("reset: failed %v status %d", r.Failed, r.Status)
	}
	if m := clientDecode(r.Frame); errs.Code(m.ClientRspErr()) != 31 {
		t.Fatalf("client reset error %v", m.ClientRspErr())
	}
}

// TestStreamInitErrorReply: the INIT the codec answers a refused stream with fails tRPC-Go's NewStream.
func TestStreamInitErrorReply(t *testing.T) {
	c := newCodec(t, codec.Downstream)
	cmsg := streamMsg(trpcpb.TrpcStreamFrameType_TRPC_STREAM_FRAME_INIT, 9,
		&trpcpb.TrpcStreamInitMeta{RequestMeta: &trpcpb.TrpcStreamInitRequestMeta{}})
	cmsg.WithClientRPCName(method)
	frame, err := trpc.DefaultClientCodec.Encode(cmsg, nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := decode(t, c, frame)
	reply, status := c.ErrorReply(nil, msg, codec.RouteNotFound, "no route")
	m := streamMsg(0, 0, nil)
	if _, err := trpc.DefaultClientCodec.Decode(m, reply); err != nil {
		t.Fatal(err)
	}
	var e *errs.Error
	if !errors.As(m.ClientRspErr(), &e) || int32(e.Code) != status || e.Msg != "no route" || m.StreamID() != 9 {
		t.Fatalf("client init error %v on stream %d", m.ClientRspErr(), m.StreamID())
	}
}
