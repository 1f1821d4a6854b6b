package brpcinterop

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	baidurpc "github.com/baidu-golang/pbrpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/meltemi-mesh/meltemi/test/interop/brpc/echopb"
)

// The services and methods the echo servers answer, named as pbrpc dispatches on them: the protobuf service's
// full name and the method name, both taken from echo.proto.
var (
	echoService  = string(echopb.File_echo_proto.Services().ByName("EchoService").FullName())
	adminService = string(echopb.File_echo_proto.Services().ByName("AdminService").FullName())
)

// callTimeout bounds one call. A pbrpc call that times out fails with code 62, which no test expects.
const callTimeout = 10 * time.Second

// echoServer is a real pbrpc server answering EchoService (Echo, Upper) and AdminService (Echo), labelled
// with a version that every answer names.
type echoServer struct {
	Version string
	Addr    string // host:port the server listens on
	tap     *wireTap
}

// startEchoServer starts a pbrpc server on host and stops it when the test ends.
func startEchoServer(t testing.TB, host, version string) *echoServer {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("listen for the %s server: %v", version, err)
	}
	tap := &wireTap{Listener: l}
	srv := baidurpc.NewTpcServer(&baidurpc.ServerMeta{})
	for _, m := range []echoMethod{
		{service: echoService, method: "Echo", version: version},
		{service: echoService, method: "Upper", version: version},
		{service: adminService, method: "Echo", version: version},
	} {
		if _, err := srv.Register(m); err != nil {
			t.Fatalf("register %s/%s: %v", m.service, m.method, err)
		}
	}
	if err := srv.StartServer(tap); err != nil {
		t.Fatalf("start the %s server: %v", version, err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	return &echoServer{Version: version, Addr: l.Addr().String(), tap: tap}
}

// echoMethod is one method of the echo servers. It implements pbrpc's Service itself rather than going
// through RegisterRpc, whose NewParameter hands every request of a method the same message to unmarshal
// into, from a goroutine per request: concurrent calls would read each other's arguments.
type echoMethod struct {
	service, method, version string
}

// DoService answers with the request, the answering server's version, the names it dispatched on and the
// log id it read. The attachment goes back as it came.
func (m echoMethod) DoService(msg proto.Message, attachment []byte, logID *int64) (proto.Message, []byte, error) {
	// A request whose message encodes to no bytes reaches the handler as nil.
	in, _ := msg.(*echopb.EchoRequest)
	out := &echopb.EchoResponse{Message: in.GetMessage(), Payload: in.GetPayload(), Version: m.version,
		Service: m.service, Method: m.method}
	if logID != nil {
		out.LogId = *logID
	}
	if m.method == "Upper" {
		out.Message = strings.ToUpper(out.Message)
	}
	return out, attachment, nil
}

func (m echoMethod) GetServiceName() string      { return m.service }
func (m echoMethod) GetMethodName() string       { return m.method }
func (m echoMethod) NewParameter() proto.Message { return new(echopb.EchoRequest) }

// wireTap is the server's listener, keeping every byte the server reads from each connection it accepts. A
// pbrpc handler sees neither the request meta nor its user_fields; the tap shows the frames exactly as the
// server's socket delivered them, decoded by pbrpc's own reader, without a relay or anything else between
// the proxy and the server.
type wireTap struct {
	net.Listener
	mu    sync.Mutex
	conns []*bytes.Buffer // one per accepted connection, in accept order
}

func (w *wireTap) Accept() (net.Conn, error) {
	c, err := w.Listener.Accept()
	if err != nil {
		return nil, err
	}
	buf := &bytes.Buffer{}
	w.mu.Lock()
	w.conns = append(w.conns, buf)
	w.mu.Unlock()
	return &tappedConn{Conn: c, tap: w, buf: buf}, nil
}

// tappedConn records what the server reads.
type tappedConn struct {
	net.Conn
	tap *wireTap
	buf *bytes.Buffer
}

func (c *tappedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.tap.mu.Lock()
	c.buf.Write(p[:n])
	c.tap.mu.Unlock()
	return n, err
}

// connections returns how many connections the server accepted.
func (w *wireTap) connections() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.conns)
}

// received returns the frames the server read, per connection in accept order, each decoded by pbrpc's
// RpcDataPackage.ReadIO as the server decodes it. Call it once the calls it is about have been answered, so
// that every request frame is complete.
func (w *wireTap) received(t testing.TB) [][]*baidurpc.RpcDataPackage {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([][]*baidurpc.RpcDataPackage, len(w.conns))
	for i, buf := range w.conns {
		r := bytes.NewReader(buf.Bytes())
		for r.Len() > 0 {
			pkg := baidurpc.NewRpcDataPackage()
			if err := pkg.ReadIO(r); err != nil {
				t.Fatalf("connection %d: frame %d as the server read it: %v", i, len(out[i]), err)
			}
			out[i] = append(out[i], pkg)
		}
	}
	return out
}

// allReceived returns the frames the server read on all its connections.
func (w *wireTap) allReceived(t testing.TB) []*baidurpc.RpcDataPackage {
	t.Helper()
	var all []*baidurpc.RpcDataPackage
	for _, c := range w.received(t) {
		all = append(all, c...)
	}
	return all
}

// userFields decodes brpc's RpcMeta.user_fields (field 9, map<string, string>) from a meta pbrpc parsed.
// pbrpc's RpcMeta does not declare the field, so its parser keeps it among the meta's unknown fields, and its
// server writes them back in the response meta it builds from the request's.
func userFields(t testing.TB, meta *baidurpc.RpcMeta) map[string]string {
	t.Helper()
	const userFieldsNumber = 9
	out := map[string]string{}
	b := meta.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("unknown fields of the meta: %v", protowire.ParseError(n))
		}
		b = b[n:]
		if num != userFieldsNumber || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				t.Fatalf("unknown field %d of the meta: %v", num, protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		entry, n := protowire.ConsumeBytes(b)
		if n < 0 {
			t.Fatalf("user_fields entry: %v", protowire.ParseError(n))
		}
		b = b[n:]
		var key, value string
		for len(entry) > 0 {
			num, typ, n := protowire.ConsumeTag(entry)
			if n < 0 || typ != protowire.BytesType {
				t.Fatalf("user_fields entry: field %d of wire type %d (%d)", num, typ, n)
			}
			v, m := protowire.ConsumeString(entry[n:])
			if m < 0 {
				t.Fatalf("user_fields entry: %v", protowire.ParseError(m))
			}
			entry = entry[n+m:]
			switch num {
			case 1:
				key = v
			case 2:
				value = v
			}
		}
		out[key] = value
	}
	return out
}

// echoClient is a real pbrpc client on one connection of its own. pbrpc multiplexes the calls of one client
// on its connection by correlation id, counting from 1.
type echoClient struct {
	rpc  *baidurpc.RpcClient
	conn *baidurpc.TCPConnection
}

// dialEcho connects a client to addr and closes it when the test ends.
func dialEcho(t testing.TB, addr string) *echoClient {
	t.Helper()
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	url := baidurpc.URL{}
	url.SetHost(&host).SetPort(&port)
	// No connection timeout: pbrpc would set it as a read deadline on the connection, so an idle client's
	// receive loop would fail and reconnect. Each call has its own timeout instead.
	conn, err := baidurpc.NewTCPConnection(url, nil)
	if err != nil {
		t.Fatalf("connect a pbrpc client to %s: %v", addr, err)
	}
	rpc, err := baidurpc.NewRpcCient(conn)
	if err != nil {
		conn.Close()
		t.Fatalf("pbrpc client: %v", err)
	}
	t.Cleanup(func() {
		rpc.Close()
		conn.Close()
	})
	return &echoClient{rpc: rpc, conn: conn}
}

// callOptions are what a call carries besides its request message.
type callOptions struct {
	attachment []byte
	gzip       bool
	logID      int64
}

// call makes one call and returns the answer, and the response frame pbrpc read (its meta included; it is
// the request's own frame when the call failed locally in the client).
func (c *echoClient) call(service, method string, req *echopb.EchoRequest, opts callOptions) (*echopb.EchoResponse,
	*baidurpc.RpcDataPackage, error) {
	inv := baidurpc.NewRpcInvocation(&service, &method)
	inv.SetParameterIn(req)
	inv.Attachment = opts.attachment
	if opts.gzip {
		gzip := int32(baidurpc.COMPRESS_GZIP)
		inv.CompressType = &gzip
	}
	if opts.logID != 0 {
		inv.LogId = &opts.logID
	}
	out := &echopb.EchoResponse{}
	pkg, err := c.rpc.SendRpcRequestWithTimeout(callTimeout, inv, out)
	return out, pkg, err
}

// echo calls service/method with message and checks that the answer is its own: the same message (upper
// case for Upper) from the method called. It returns the version that answered.
func (c *echoClient) echo(service, method, message string) (string, error) {
	out, _, err := c.call(service, method, &echopb.EchoRequest{Message: message}, callOptions{})
	if err != nil {
		return "", fmt.Errorf("%s/%s(%q): %w", service, method, message, err)
	}
	want := message
	if method == "Upper" {
		want = strings.ToUpper(message)
	}
	if out.GetMessage() != want || out.GetService() != service || out.GetMethod() != method {
		return "", fmt.Errorf("%s/%s(%q) answered %q from %s/%s", service, method, message, out.GetMessage(),
			out.GetService(), out.GetMethod())
	}
	return out.GetVersion(), nil
}
