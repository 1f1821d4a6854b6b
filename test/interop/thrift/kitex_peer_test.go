package thriftinterop

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bytedance/gopkg/cloud/metainfo"
	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/transport"
	"github.com/cloudwego/kitex/server"

	kecho "github.com/meltemi-mesh/meltemi/test/interop/thrift/kitexgen/echo"
	kechoservice "github.com/meltemi-mesh/meltemi/test/interop/thrift/kitexgen/echo/echo"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// kitexServer is a real Kitex server of Echo on an address of its own. A Kitex server reads every transport
// a Kitex client may speak (TTHeader, framed, unframed) and answers each in kind.
type kitexServer struct {
	version string
	addr    string

	mu       sync.Mutex
	notified []string // messages of the oneway calls received
}

// startKitexServer starts a server on host answering as version, waits until it accepts connections, and
// stops it when the test ends.
func startKitexServer(t *testing.T, host, version string) *kitexServer {
	t.Helper()
	s := &kitexServer{version: version, addr: meshtest.FreeAddr(t, host)}
	tcpAddr, err := net.ResolveTCPAddr("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := kechoservice.NewServer(&kitexEcho{s}, server.WithServiceAddr(tcpAddr),
		server.WithExitWaitTime(time.Second))
	done := make(chan error, 1)
	go func() { done <- srv.Run() }()
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Errorf("stop kitex server %s: %v", version, err)
		}
		<-done
	})
	meshtest.Poll(t, 10*time.Second, "kitex server "+version+" to accept connections", func() bool {
		select {
		case err := <-done:
			t.Fatalf("kitex server %s ended: %v", version, err)
		default:
		}
		c, err := net.Dial("tcp", s.addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return s
}

func (s *kitexServer) notifiedWith(msg string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.notified, msg)
}

// kitexEcho is the Echo handler (Kitex requires a pointer): every answer starts with the server's version.
type kitexEcho struct{ s *kitexServer }

func (h *kitexEcho) Echo(_ context.Context, msg string) (string, error) {
	return h.s.version + ":" + msg, nil
}

// Header answers a metainfo value: Kitex reads TTHeader's RPC_TRANSIT_<key> pairs into the context as <key>.
func (h *kitexEcho) Header(ctx context.Context, key string) (string, error) {
	v, _ := metainfo.GetValue(ctx, key)
	return h.s.version + ":" + v, nil
}

func (h *kitexEcho) Notify(_ context.Context, msg string) error {
	h.s.mu.Lock()
	h.s.notified = append(h.s.notified, msg)
	h.s.mu.Unlock()
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
		client.WithTransportProtocol(tr.protocol), client.WithRPCTimeout(20 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatalf("kitex client of %s: %v", addr, err)
	}
	return c
}
