package trpcgo

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	trpc "trpc.group/trpc-go/trpc-go"
	"trpc.group/trpc-go/trpc-go/client"
	trpccodec "trpc.group/trpc-go/trpc-go/codec"
	"trpc.group/trpc-go/trpc-go/errs"
	"trpc.group/trpc-go/trpc-go/server"
	trpcpb "trpc.group/trpc/trpc-protocol/pb/go/trpc"
)

var update = flag.Bool("update", false, "rewrite the golden frames in ../frames")

// goldenFrames are frames tRPC-Go v1.0.3 writes, which the codec's own tests (in the main module) decode.
func goldenFrames(t *testing.T) map[string][]byte {
	frames := map[string][]byte{}
	capture := func(name string, opts ...client.Option) []byte {
		var req []byte
		_, _, err := invoke(t, func(r []byte) ([]byte, error) {
			req = r
			return nil, errs.ErrClientNoResponse
		}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		frames[name] = req
		return req
	}
	req := capture("request")
	capture("oneway", client.WithSendOnly())

	frames["response"] = serve(t, req, func(msg trpccodec.Msg) ([]byte, error) {
		server.GetAttachment(msg).SetResponse(bytes.NewReader([]byte("response-attachment")))
		msg.WithServerMetaData(trpccodec.MetaData{"rsp-key": []byte("rsp-value")})
		return []byte("world"), nil
	})
	frames["response-business-error"] = serve(t, req, func(trpccodec.Msg) ([]byte, error) {
		return nil, errs.New(10042, "no such user")
	})
	frames["response-framework-error"] = serve(t, req, func(trpccodec.Msg) ([]byte, error) {
		return nil, errs.NewFrameError(errs.RetServerOverload, "busy")
	})

	// A request with nothing but its func, as the client codec writes it for a bare message, and the bare
	// response to it: a header holding only request_id, which fits both messages.
	_, msg := trpccodec.WithNewMessage(context.Background())
	msg.WithClientRPCName(method)
	msg.WithCallerServiceName(caller)
	bare, err := trpc.DefaultClientCodec.Encode(msg, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	frames["request-bare"] = bare
	_, smsg := trpccodec.WithNewMessage(context.Background())
	if _, err := trpc.DefaultServerCodec.Decode(smsg, bare); err != nil {
		t.Fatal(err)
	}
	if frames["response-bare"], err = trpc.DefaultServerCodec.Encode(smsg, []byte("world")); err != nil {
		t.Fatal(err)
	}

	stream := func(name string, enc trpccodec.Codec, typ trpcpb.TrpcStreamFrameType, meta any, body []byte, setup func(trpccodec.Msg)) {
		m := streamMsg(typ, 5, meta)
		if setup != nil {
			setup(m)
		}
		f, err := enc.Encode(m, body)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		frames[name] = f
	}
	stream("stream-init", trpc.DefaultClientCodec, trpcpb.TrpcStreamFrameType_TRPC_STREAM_FRAME_INIT,
		&trpcpb.TrpcStreamInitMeta{RequestMeta: &trpcpb.TrpcStreamInitRequestMeta{}, InitWindowSize: 65536}, nil,
		func(m trpccodec.Msg) {
			m.WithCallerServiceName(caller)
			m.WithCalleeServiceName(callee)
			m.WithClientRPCName(method)
			m.WithClientMetaData(trpccodec.MetaData{"env": []byte("canary")})
		})
	stream("stream-init-response", trpc.DefaultServerCodec, trpcpb.TrpcStreamFrameType_TRPC_STREAM_FRAME_INIT,
		&trpcpb.TrpcStreamInitMeta{ResponseMeta: &trpcpb.TrpcStreamInitResponseMeta{}, InitWindowSize: 65536}, nil, nil)
	stream("stream-data", trpc.DefaultClientCodec, trpcpb.TrpcStreamFrameType_TRPC_STREAM_FRAME_DATA, nil, []byte("chunk"), nil)
	stream("stream-feedback", trpc.DefaultServerCodec, trpcpb.TrpcStreamFrameType_TRPC_STREAM_FRAME_FEEDBACK,
		&trpcpb.TrpcStreamFeedBackMeta{WindowSizeIncrement: 4096}, nil, nil)
	stream("stream-close", trpc.DefaultClientCodec, trpcpb.TrpcStreamFrameType_TRPC_STREAM_FRAME_CLOSE,
		&trpcpb.TrpcStreamCloseMeta{CloseType: int32(trpcpb.TrpcStreamCloseType_TRPC_STREAM_CLOSE)}, nil, nil)
	stream("stream-reset", trpc.DefaultClientCodec, trpcpb.TrpcStreamFrameType_TRPC_STREAM_FRAME_CLOSE,
		&trpcpb.TrpcStreamCloseMeta{CloseType: int32(trpcpb.TrpcStreamCloseType_TRPC_STREAM_RESET), Ret: 31, Msg: []byte("boom")}, nil, nil)
	return frames
}

// TestGoldenFrames keeps ../frames in step with what tRPC-Go writes; rewrite them with go test -run
// TestGoldenFrames -update. Map order in trans_info is random, so only the set of files is compared.
func TestGoldenFrames(t *testing.T) {
	dir := filepath.Join("..", "frames")
	for name, frame := range goldenFrames(t) {
		path := filepath.Join(dir, name+".bin")
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, frame, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%v (rewrite them: go test -run TestGoldenFrames -update)", err)
		}
	}
}
