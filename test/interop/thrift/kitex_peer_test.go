package thriftinterop

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bytedance/gopkg/cloud/metainfo"
	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/remote/trans/gonet"
	"github.com/cloudwego/kitex/server"
	"github.com/cloudwego/kitex/transport"

	kecho "github.com/meltemi-mesh/meltemi/test/interop/thrift/kitexgen/echo"
	kechoservice "github.com/meltemi-mesh/meltemi/test/interop/thrift/kitexgen/echo/echo"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// Kitex servers run in child processes (this test binary, started with kitexServerArg), with Kitex's
// default network layer, netpoll; Kitex clients run in the test with Kitex's Go net transport (gonet). Run in
// the test's own process, netpoll closed sockets that were not its own: when a peer closes a connection it
// may close that file descriptor number a second time after another socket of the process has reused it,
// and the in-process proxy's upstream writes failed with EBADF and a listener refused connections. A gonet
// server cannot stand in: its Stop makes the accept loop call os.Exit(1).

// kitexServerArg as the first argument makes the test binary a Kitex server: kitexServerArg ADDR VERSION.
const kitexServerArg = "kitex-echo-server"

// runKitexServerIfAsked serves Echo as a Kitex server and never returns when the binary was started with
// kitexServerArg; otherwise it returns at once.
func runKitexServerIfAsked() {
	if len(os.Args) != 4 || os.Args[1] != kitexServerArg {
		return
	}
	addr, err := net.ResolveTCPAddr("tcp", os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	srv := kechoservice.NewServer(&kitexEcho{&kitexServer{version: os.Args[3]}}, server.WithServiceAddr(addr))
	if err := srv.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// kitexServer is a real Kitex server of Echo on an address of its own. A Kitex server reads every transport
// a Kitex client may speak (TTHeader, framed, unframed) and answers each in kind.
type kitexServer struct {
	version string
	addr    string
}

// startKitexServer starts a server process on host answering as version, waits until it accepts
// connections, and stops it when the test ends.
func startKitexServer(t *testing.T, host, version string) *kitexServer {
	t.Helper()
	s := &kitexServer{version: version, addr: meshtest.FreeAddr(t, host)}
	p := meshtest.Start(t, os.Args[0], "kitex server "+version, kitexServerArg, s.addr, version)
	meshtest.Poll(t, 20*time.Second, "kitex server "+version+" to accept connections", func() bool {
		p.Alive(t)
		c, err := net.Dial("tcp", s.addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return s
}

// notified holds the messages of the oneway calls a server process received.
var notified sync.Map

// notifiedKey prefixes a Header key that asks whether a oneway call with the rest of the key came.
const notifiedKey = "notified?"

// kitexEcho is the Echo handler (Kitex requires a pointer): every answer starts with the server's version.
type kitexEcho struct{ s *kitexServer }

func (h *kitexEcho) Echo(_ context.Context, msg string) (string, error) {
	return h.s.version + ":" + msg, nil
}

// Header answers a metainfo value: Kitex reads TTHeader's RPC_TRANSIT_<key> pairs into the context as <key>.
func (h *kitexEcho) Header(ctx context.Context, key string) (string, error) {
	if msg, ok := strings.CutPrefix(key, notifiedKey); ok {
		_, seen := notified.Load(msg)
		return h.s.version + ":" + strconv.FormatBool(seen), nil
	}
	v, _ := metainfo.GetValue(ctx, key)
	return h.s.version + ":" + v, nil
}

// Notify records msg; a later Header call with key notifiedKey+msg answers whether it came.
func (h *kitexEcho) Notify(_ context.Context, msg string) error {
	notified.Store(msg, true)
	return nil
}

func (h *kitexEcho) Fail(_ context.Context, msg string) (string, error) {
	return "", &kecho.EchoError{Why: h.s.version + ":" + msg}
}

// kitexTransport is a transport a Kitex client may speak.
type kitexTransport struct {
	name     string
	protocol transport.Protocol
	// headers is true when the transport carries metainfo (TTHeader).
	headers bool
}

// kitexTransports are the transports checked by TestKitex. Kitex's unframed form (transport.PurePayload) is
// left out: a Kitex v0.12.0 server refuses it even without a proxy ("codec msg type not match with
// thriftCodec"). TTHeaderFramed has a test of its own.
var kitexTransports = []kitexTransport{
	{"ttheader", transport.TTHeader, true},
	{"framed", transport.Framed, false},
}

// kitexTTHeaderFramed is TTHeader whose payload is itself a framed message: after the TTHeader header comes
// a 4-byte length, then the Thrift message.
var kitexTTHeaderFramed = kitexTransport{"ttheader+framed", transport.TTHeaderFramed, true}

// dialKitex returns a Kitex client of Echo calling addr over tr, with extra options.
func dialKitex(t *testing.T, addr string, tr kitexTransport, opts ...client.Option) kechoservice.Client {
	t.Helper()
	c, err := kechoservice.NewClient("echo", append([]client.Option{client.WithHostPorts(addr),
		client.WithTransportProtocol(tr.protocol), client.WithRPCTimeout(20 * time.Second),
		client.WithDialer(gonet.NewDialer()), client.WithTransHandlerFactory(gonet.NewCliTransHandlerFactory())},
		opts...)...)
	if err != nil {
		t.Fatalf("kitex client of %s: %v", addr, err)
	}
	return c
}
