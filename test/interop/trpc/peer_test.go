package trpc

// The peers: trpc-go v1.0.3 servers and clients configured in code (no trpc_go.yaml), with the Echo service of
// echopb registered by hand through server.ServiceDesc, the way trpc-go's generated stubs would.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	trpcgo "trpc.group/trpc-go/trpc-go"
	"trpc.group/trpc-go/trpc-go/client"
	trpccodec "trpc.group/trpc-go/trpc-go/codec"
	"trpc.group/trpc-go/trpc-go/pool/multiplexed"
	"trpc.group/trpc-go/trpc-go/server"
	"trpc.group/trpc-go/trpc-go/stream"
	"trpc.group/trpc-go/trpc-go/transport"

	"github.com/meltemi-mesh/meltemi/test/interop/trpc/echopb"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// The service's names as trpc-go puts them on the wire: callee and func.
const (
	echoService = "trpc.meltemi.echo.Echo"
	funcSay     = "/" + echoService + "/Say"
	funcShout   = "/" + echoService + "/Shout"
	funcNotify  = "/" + echoService + "/Notify"
	funcChat    = "/" + echoService + "/Chat"
	// callerName is what the test clients call themselves unless a test says otherwise.
	callerName = "trpc.meltemi.test.client"
)

// callTimeout bounds each call and stream, so that a proxy that never answers fails a test in seconds.
const callTimeout = 10 * time.Second

// echoServer is a trpc-go server of the Echo service, labelled with a version it puts in every reply.
type echoServer struct {
	version string
	addr    string

	mu       sync.Mutex
	notified map[string]int // oneway Notify calls received, by text
	chatErrs []error        // how the Chat streams that failed ended
}

// echoHandler is the interface the ServiceDesc's HandlerType names, as generated stubs declare one.
type echoHandler interface {
	Say(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoReply, error)
	Notify(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoReply, error)
	Chat(s server.Stream) error
}

// unaryMethod adapts a handler method to trpc-go's server.Method, as a generated stub does: the filter
// function decodes the body, and the filter chain runs the handler.
func unaryMethod(name string, handle func(echoHandler, context.Context, *echopb.EchoRequest) (*echopb.EchoReply, error)) server.Method {
	return server.Method{
		Name: name,
		Func: func(svr any, ctx context.Context, f server.FilterFunc) (any, error) {
			req := &echopb.EchoRequest{}
			filters, err := f(req)
			if err != nil {
				return nil, err
			}
			return filters.Filter(ctx, req, func(ctx context.Context, req any) (any, error) {
				return handle(svr.(echoHandler), ctx, req.(*echopb.EchoRequest))
			})
		},
	}
}

// serviceDesc describes the Echo service. Each server needs its own: the stream dispatcher keeps the server's
// streams.
func serviceDesc() *server.ServiceDesc {
	return &server.ServiceDesc{
		ServiceName:  echoService,
		HandlerType:  (*echoHandler)(nil),
		StreamHandle: stream.NewStreamDispatcher(),
		Methods: []server.Method{
			unaryMethod(funcSay, echoHandler.Say),
			unaryMethod(funcShout, echoHandler.Say),
			unaryMethod(funcNotify, echoHandler.Notify),
		},
		Streams: []server.StreamDesc{{
			StreamName:    funcChat,
			Handler:       func(svr any, s server.Stream) error { return svr.(echoHandler).Chat(s) },
			ClientStreams: true,
			ServerStreams: true,
		}},
	}
}

// startEchoServer runs a server labelled version on a free port of host, and waits until it accepts
// connections. It is closed when the test ends.
func startEchoServer(t testing.TB, host, version string) *echoServer {
	t.Helper()
	s := &echoServer{version: version, addr: meshtest.FreeAddr(t, host), notified: map[string]int{}}
	// The go-net stream transport serves unary calls and streams on one port. trpc-go would pick tnet for a
	// unary-only service; a service with streams runs on the stream transport either way.
	st := transport.NewServerStreamTransport()
	svc := server.New(
		server.WithServiceName(echoService),
		server.WithProtocol("trpc"),
		server.WithNetwork("tcp"),
		server.WithAddress(s.addr),
		server.WithTransport(st),
		server.WithStreamTransport(st),
	)
	if err := svc.Register(serviceDesc(), s); err != nil {
		t.Fatalf("register the Echo service: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- svc.Serve() }()
	t.Cleanup(func() {
		if err := svc.Close(nil); err != nil {
			t.Errorf("close server %s: %v", version, err)
		}
	})
	meshtest.Poll(t, 10*time.Second, "server "+version+" to listen on "+s.addr, func() bool {
		select {
		case err := <-served:
			t.Fatalf("server %s: %v", version, err)
		default:
		}
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return s
}

// reply builds the answer to req from what the server saw in ctx.
func (s *echoServer) reply(ctx context.Context, req *echopb.EchoRequest) *echopb.EchoReply {
	msg := trpccodec.Message(ctx)
	md := map[string][]byte{}
	for k := range msg.ServerMetaData() {
		md[k] = trpcgo.GetMetaData(ctx, k)
	}
	return &echopb.EchoReply{Version: s.version, Text: req.GetText(), Payload: req.GetPayload(), Metadata: md,
		Remote: msg.RemoteAddr().String(), Func: msg.ServerRPCName()}
}

// Say answers Say and Shout.
func (s *echoServer) Say(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoReply, error) {
	return s.reply(ctx, req), nil
}

// Notify counts the call; it is called oneway, so the reply goes nowhere.
func (s *echoServer) Notify(_ context.Context, req *echopb.EchoRequest) (*echopb.EchoReply, error) {
	s.mu.Lock()
	s.notified[req.GetText()]++
	s.mu.Unlock()
	return &echopb.EchoReply{}, nil
}

// notifiedCount is how many Notify calls with this text arrived.
func (s *echoServer) notifiedCount(text string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notified[text]
}

// Chat answers every message with a reply, until the client closes its side.
func (s *echoServer) Chat(st server.Stream) error {
	err := s.chat(st)
	if err != nil {
		s.mu.Lock()
		s.chatErrs = append(s.chatErrs, err)
		s.mu.Unlock()
	}
	return err
}

// failedChats returns how the Chat streams that failed ended.
func (s *echoServer) failedChats() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.chatErrs)
}

func (s *echoServer) chat(st server.Stream) error {
	for {
		req := &echopb.EchoRequest{}
		if err := st.RecvMsg(req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := st.SendMsg(s.reply(st.Context(), req)); err != nil {
			return err
		}
	}
}

// callOpts are the options every test client uses: trpc over TCP to target, no naming service.
func callOpts(target string, extra []client.Option) []client.Option {
	return append([]client.Option{
		client.WithProtocol("trpc"),
		client.WithNetwork("tcp"),
		client.WithTarget("ip://" + target),
		client.WithCallerServiceName(callerName),
		client.WithTimeout(callTimeout),
	}, extra...)
}

// call makes a unary call of fn on the Echo service at target with trpc-go's client, as a generated stub
// does. Later options override earlier ones: client.WithCallerServiceName, WithServiceName (the callee),
// WithMetaData, WithSendOnly, WithMultiplexed.
func call(ctx context.Context, target, fn string, req *echopb.EchoRequest, opts ...client.Option) (*echopb.EchoReply, error) {
	ctx, msg := trpccodec.WithCloneMessage(ctx)
	defer trpccodec.PutBackMessage(msg)
	msg.WithClientRPCName(fn)
	msg.WithCalleeServiceName(echoService)
	msg.WithSerializationType(trpccodec.SerializationTypePB)
	rsp := &echopb.EchoReply{}
	if err := client.DefaultClient.Invoke(ctx, req, rsp, callOpts(target, opts)...); err != nil {
		return nil, err
	}
	return rsp, nil
}

// say calls Say with text and checks the reply is the answer to it.
func say(ctx context.Context, target, text string, opts ...client.Option) (*echopb.EchoReply, error) {
	rsp, err := call(ctx, target, funcSay, &echopb.EchoRequest{Text: text}, opts...)
	if err == nil && rsp.GetText() != text {
		return nil, fmt.Errorf("Say(%q) was answered with %q", text, rsp.GetText())
	}
	return rsp, err
}

// streamClient opens Chat streams. Its streams share one client stream transport and one multiplexed pool
// of one connection per address: trpc-go's own pool dials two per address up front, and puts every stream on
// the first anyway.
type streamClient struct {
	c    stream.Client
	tr   transport.ClientStreamTransport
	pool multiplexed.Pool
}

func newStreamClient() *streamClient {
	return &streamClient{c: stream.NewStreamClient(), tr: transport.NewClientStreamTransport(),
		pool: multiplexed.New(multiplexed.WithConnectNumber(1), multiplexed.WithMaxVirConnsPerConn(1000))}
}

var chatDesc = &client.ClientStreamDesc{StreamName: funcChat, ClientStreams: true, ServerStreams: true}

// chat opens a bidirectional Chat stream to target; ctx bounds the whole stream.
func (sc *streamClient) chat(ctx context.Context, target string, opts ...client.Option) (client.ClientStream, error) {
	ctx, msg := trpccodec.WithCloneMessage(ctx)
	msg.WithCalleeServiceName(echoService)
	msg.WithSerializationType(trpccodec.SerializationTypePB)
	return sc.c.NewStream(ctx, chatDesc, funcChat,
		callOpts(target, append([]client.Option{client.WithStreamTransport(sc.tr),
			client.WithMultiplexedPool(sc.pool)}, opts...))...)
}

// exchange sends text on s and receives the reply, which must be its answer.
func exchange(s client.ClientStream, text string) (*echopb.EchoReply, error) {
	if err := s.SendMsg(&echopb.EchoRequest{Text: text}); err != nil {
		return nil, fmt.Errorf("send %q: %w", text, err)
	}
	rsp := &echopb.EchoReply{}
	if err := s.RecvMsg(rsp); err != nil {
		return nil, fmt.Errorf("receive the answer to %q: %w", text, err)
	}
	if rsp.GetText() != text {
		return nil, fmt.Errorf("%q was answered with %q", text, rsp.GetText())
	}
	return rsp, nil
}

// closeChat closes the client's side and waits for the server's end of the stream.
func closeChat(s client.ClientStream) error {
	if err := s.CloseSend(); err != nil {
		return fmt.Errorf("close send: %w", err)
	}
	if err := s.RecvMsg(&echopb.EchoReply{}); !errors.Is(err, io.EOF) {
		return fmt.Errorf("after close, receive = %v; want io.EOF", err)
	}
	return nil
}

// testCtx bounds the calls of a test.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
