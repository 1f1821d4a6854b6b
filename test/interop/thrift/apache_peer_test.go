package thriftinterop

import (
	"context"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/meltemi-mesh/meltemi/test/interop/thrift/apachegen/echo"
)

// apacheTransport is one way Apache Thrift peers frame and encode messages. Servers and clients of a test use
// the same one, as the peers of one service do in practice.
type apacheTransport struct {
	name string
	// headers is true when the transport carries key/values (THeader), so routes can match on them and
	// requestMutation can set them.
	headers bool
	// server returns the server's transport and protocol factories.
	server func(conf *thrift.TConfiguration) (thrift.TTransportFactory, thrift.TProtocolFactory)
	// client wraps a socket into the client's transport and protocol.
	client func(sock thrift.TTransport, conf *thrift.TConfiguration) (thrift.TTransport, thrift.TProtocol)
}

// apacheTransports are the transports an Apache Thrift service may speak, each checked through the proxy.
var apacheTransports = []apacheTransport{
	{
		name: "binary+framed",
		server: func(conf *thrift.TConfiguration) (thrift.TTransportFactory, thrift.TProtocolFactory) {
			return thrift.NewTFramedTransportFactoryConf(thrift.NewTTransportFactory(), conf),
				thrift.NewTBinaryProtocolFactoryConf(conf)
		},
		client: func(sock thrift.TTransport, conf *thrift.TConfiguration) (thrift.TTransport, thrift.TProtocol) {
			t := thrift.NewTFramedTransportConf(sock, conf)
			return t, thrift.NewTBinaryProtocolConf(t, conf)
		},
	},
	{
		name: "compact+framed",
		server: func(conf *thrift.TConfiguration) (thrift.TTransportFactory, thrift.TProtocolFactory) {
			return thrift.NewTFramedTransportFactoryConf(thrift.NewTTransportFactory(), conf),
				thrift.NewTCompactProtocolFactoryConf(conf)
		},
		client: func(sock thrift.TTransport, conf *thrift.TConfiguration) (thrift.TTransport, thrift.TProtocol) {
			t := thrift.NewTFramedTransportConf(sock, conf)
			return t, thrift.NewTCompactProtocolConf(t, conf)
		},
	},
	{
		name: "binary+buffered",
		server: func(conf *thrift.TConfiguration) (thrift.TTransportFactory, thrift.TProtocolFactory) {
			return thrift.NewTBufferedTransportFactory(8192), thrift.NewTBinaryProtocolFactoryConf(conf)
		},
		client: func(sock thrift.TTransport, conf *thrift.TConfiguration) (thrift.TTransport, thrift.TProtocol) {
			t := thrift.NewTBufferedTransport(sock, 8192)
			return t, thrift.NewTBinaryProtocolConf(t, conf)
		},
	},
	theaderTransport("theader+binary", thrift.THeaderProtocolBinary),
	theaderTransport("theader+compact", thrift.THeaderProtocolCompact),
}

// theaderTransport is Apache's THeader transport carrying the given protocol. The server detects the
// protocol from each frame and answers in it.
func theaderTransport(name string, id thrift.THeaderProtocolID) apacheTransport {
	return apacheTransport{
		name:    name,
		headers: true,
		server: func(conf *thrift.TConfiguration) (thrift.TTransportFactory, thrift.TProtocolFactory) {
			return thrift.NewTHeaderTransportFactoryConf(nil, conf), thrift.NewTHeaderProtocolFactoryConf(conf)
		},
		client: func(sock thrift.TTransport, conf *thrift.TConfiguration) (thrift.TTransport, thrift.TProtocol) {
			c := *conf
			c.THeaderProtocolID = &id
			t := thrift.NewTHeaderTransportConf(sock, &c)
			return t, thrift.NewTHeaderProtocolConf(t, &c)
		},
	}
}

// peerConf is the configuration of every Apache peer: bounded waits, so that a lost reply fails a test
// rather than hanging it.
func peerConf() *thrift.TConfiguration {
	return &thrift.TConfiguration{ConnectTimeout: 5 * time.Second, SocketTimeout: 20 * time.Second}
}

// apacheServer is a real Apache Thrift server on an address of its own: Echo as the default processor (for
// plain calls) and Calc under its name (for TMultiplexedProtocol calls), behind a TSimpleServer.
type apacheServer struct {
	version  string
	addr     string
	accepted atomic.Int64 // connections the server accepted

	mu       sync.Mutex
	notified []string // messages of the oneway calls received
}

// startApacheServer starts a server speaking tr on host, answering as version, and stops it when the test
// ends.
func startApacheServer(t *testing.T, host, version string, tr apacheTransport) *apacheServer {
	t.Helper()
	s := &apacheServer{version: version}
	processor := thrift.NewTMultiplexedProcessor()
	processor.RegisterDefault(echo.NewEchoProcessor(apacheEcho{s}))
	processor.RegisterProcessor("Calc", echo.NewCalcProcessor(apacheCalc{}))
	listen := func(addr net.Addr) (net.Listener, error) {
		l, err := net.Listen(addr.Network(), addr.String())
		if err != nil {
			return nil, err
		}
		return countingListener{Listener: l, accepted: &s.accepted}, nil
	}
	socket := thrift.NewTServerSocketFromFactoryTimeout(listen, &net.TCPAddr{IP: net.ParseIP(host)}, 0)
	transports, protocols := tr.server(peerConf())
	srv := thrift.NewTSimpleServer4(processor, socket, transports, protocols)
	// Without a log context, a TSimpleServer started by Listen and AcceptLoop (rather than Serve) crashes on
	// the first connection error it logs.
	srv.SetLogContext(context.Background())
	if err := srv.Listen(); err != nil {
		t.Fatalf("%s server %s: listen: %v", tr.name, version, err)
	}
	s.addr = socket.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.AcceptLoop(); err != nil {
			t.Errorf("%s server %s: %v", tr.name, version, err)
		}
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return s
}

// notifiedWith reports whether a oneway call with msg reached the server.
func (s *apacheServer) notifiedWith(msg string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.notified, msg)
}

// countingListener counts the connections a server accepts: how many upstream connections the proxy opened.
type countingListener struct {
	net.Listener
	accepted *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// apacheEcho is the Echo handler: every answer starts with the server's version.
type apacheEcho struct{ s *apacheServer }

func (h apacheEcho) Echo(_ context.Context, msg string) (string, error) {
	return h.s.version + ":" + msg, nil
}

// Header answers a header the THeader transport read from the request; TSimpleServer puts them in ctx.
func (h apacheEcho) Header(ctx context.Context, key string) (string, error) {
	v, _ := thrift.GetHeader(ctx, key)
	return h.s.version + ":" + v, nil
}

func (h apacheEcho) Notify(_ context.Context, msg string) error {
	h.s.mu.Lock()
	h.s.notified = append(h.s.notified, msg)
	h.s.mu.Unlock()
	return nil
}

func (h apacheEcho) Fail(_ context.Context, msg string) (string, error) {
	return "", &echo.EchoError{Why: h.s.version + ":" + msg}
}

// apacheCalc is the Calc handler.
type apacheCalc struct{}

func (apacheCalc) Add(_ context.Context, a, b int64) (int64, error) { return a + b, nil }

// apacheClient is a real Apache Thrift client connection: the Echo client and the multiplexed Calc client
// share its one socket, as generated clients may. Calls on it must not overlap: Apache clients are not safe
// for concurrent use.
type apacheClient struct {
	echo *echo.EchoClient
	calc *echo.CalcClient
}

// dialApache connects a client speaking tr to addr and closes it when the test ends.
func dialApache(t *testing.T, addr string, tr apacheTransport) *apacheClient {
	t.Helper()
	conf := peerConf()
	sock := thrift.NewTSocketConf(addr, conf)
	trans, proto := tr.client(sock, conf)
	if err := trans.Open(); err != nil {
		t.Fatalf("%s client: open %s: %v", tr.name, addr, err)
	}
	t.Cleanup(func() { trans.Close() })
	return &apacheClient{
		echo: echo.NewEchoClient(thrift.NewTStandardClient(proto, proto)),
		calc: echo.NewCalcClient(thrift.NewTStandardClient(proto, thrift.NewTMultiplexedProtocol(proto, "Calc"))),
	}
}

// withHeader returns ctx carrying a THeader key/value that the client sends with its next calls.
func withHeader(ctx context.Context, key, value string) context.Context {
	ctx = thrift.SetHeader(ctx, key, value)
	return thrift.SetWriteHeaderList(ctx, append(thrift.GetWriteHeaderList(ctx), key))
}
