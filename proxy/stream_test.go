package proxy_test

import (
	"encoding/binary"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/trpc"
	"github.com/meltemi-mesh/meltemi/proxy"
)

// These tests drive streams through the proxy with hand-built tRPC stream frames: a client and a server
// written here, each reading what the proxy sends with the tRPC codec. test/interop/trpc does the same with
// real trpc-go streaming clients and servers.

// streamFrame builds a tRPC stream frame: the 16-byte fixed header, then the meta (or data) as its body.
func streamFrame(kind byte, id uint32, body []byte) []byte {
	f := []byte{0x09, 0x30, 1, kind, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}
	binary.BigEndian.PutUint32(f[4:], uint32(16+len(body)))
	binary.BigEndian.PutUint32(f[10:], id)
	return append(f, body...)
}

// Stream frame types.
const (
	frameInit     = 1
	frameData     = 2
	frameFeedback = 3
	frameClose    = 4
)

// initRequest is a client's INIT for func fn.
func initRequest(id uint32, fn string) []byte {
	var req []byte
	req = protowire.AppendTag(req, 3, protowire.BytesType) // TrpcStreamInitRequestMeta.func
	req = protowire.AppendString(req, fn)
	var meta []byte
	meta = protowire.AppendTag(meta, 1, protowire.BytesType) // TrpcStreamInitMeta.request_meta
	meta = protowire.AppendBytes(meta, req)
	return streamFrame(frameInit, id, meta)
}

// initResponse is a server's INIT accepting the stream.
func initResponse(id uint32) []byte {
	meta := protowire.AppendTag(nil, 2, protowire.BytesType) // TrpcStreamInitMeta.response_meta, empty
	return streamFrame(frameInit, id, protowire.AppendBytes(meta, nil))
}

// closeFrame is a normal close of one direction.
func closeFrame(id uint32) []byte { return streamFrame(frameClose, id, nil) }

// peer is one end of a stream test, reading the proxy's frames with the tRPC codec of its side.
type peer struct {
	t     *testing.T
	conn  net.Conn
	codec codec.Codec
	buf   []byte
}

func newPeer(t *testing.T, conn net.Conn, side codec.Side) *peer {
	f, err := trpc.Registration().New(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &peer{t: t, conn: conn, codec: f.NewCodec(side)}
}

func (p *peer) send(frame []byte) {
	p.t.Helper()
	if _, err := p.conn.Write(frame); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

// next reads the next frame; it fails the test if none comes within 10 s.
func (p *peer) next() codec.Message {
	p.t.Helper()
	msg, err := p.read()
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	return msg
}

func (p *peer) read() (codec.Message, error) {
	p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var msg codec.Message
		n, err := p.codec.Decode(p.buf, &msg)
		if err == nil {
			msg.Frame = append([]byte(nil), msg.Frame...)
			p.buf = p.buf[n:]
			return msg, nil
		}
		if err != codec.ErrIncomplete {
			return msg, err
		}
		chunk := make([]byte, 4096)
		m, err := p.conn.Read(chunk)
		if err != nil {
			return msg, err
		}
		p.buf = append(p.buf, chunk[:m]...)
	}
}

// streamBench is a proxy with one tRPC listener routing func /echo.S/Chat to one server, and the server's
// side of each connection the proxy opens.
type streamBench struct {
	t       *testing.T
	addr    string
	metrics *prometheus.Registry
	p       *proxy.Proxy
	ln      net.Listener
	accept  chan net.Conn
}

func newStreamBench(t *testing.T, idle time.Duration) *streamBench {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	b := &streamBench{t: t, ln: ln, accept: make(chan net.Conn, 8), metrics: prometheus.NewRegistry()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accept <- c
		}
	}()
	codecs, err := codec.NewRegistry(trpc.Registration())
	if err != nil {
		t.Fatal(err)
	}
	b.p, err = proxy.New(proxy.Options{Codecs: codecs, Metrics: b.metrics, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.p.Close() })
	cfg := &proxy.Config{
		Listeners: []proxy.Listener{{Name: "trpc", Address: "127.0.0.1:0", Codec: proxy.CodecConfig{Name: trpc.Name},
			StreamIdleTimeout: idle,
			Routes: proxy.RouteConfig{Name: "r", Routes: []proxy.Route{{Name: "chat", Cluster: "chat",
				Match: []proxy.MetadataMatcher{{Key: trpc.KeyFunc, Kind: proxy.MatchExact, Value: "/echo.S/Chat"}}}}}}},
		// One connection per endpoint: the tests see every stream's frames on it.
		Clusters: []proxy.Cluster{oneConnection(clusterOf("chat", ln.Addr().String()))},
	}
	if err := b.p.Update(cfg); err != nil {
		t.Fatal(err)
	}
	b.addr = b.p.ListenerAddr("trpc").String()
	return b
}

func (b *streamBench) client() *peer {
	b.t.Helper()
	c, err := net.Dial("tcp", b.addr)
	if err != nil {
		b.t.Fatal(err)
	}
	return newPeer(b.t, c, codec.Upstream)
}

// server returns the server's side of the next connection the proxy opens.
func (b *streamBench) server() *peer {
	b.t.Helper()
	select {
	case c := <-b.accept:
		return newPeer(b.t, c, codec.Downstream)
	case <-time.After(10 * time.Second):
		b.t.Fatal("the proxy opened no upstream connection")
		return nil
	}
}

func (b *streamBench) active() float64 {
	h := &harness{t: b.t, metrics: b.metrics}
	return h.counter("meltemi_proxy_active_requests", nil)
}

// TestStreamRelayedBothWays: every frame of a stream reaches the other peer with the stream id each peer
// knows, the stream ends when both sides have closed, and it is counted once.
func TestStreamRelayedBothWays(t *testing.T) {
	b := newStreamBench(t, 0)
	cl := b.client()
	cl.send(initRequest(7, "/echo.S/Chat"))
	srv := b.server()
	init := srv.next()
	if init.Type != codec.StreamInit {
		t.Fatalf("server got %v", init.Type)
	}
	up := uint32(init.ID)
	srv.send(initResponse(up))
	if m := cl.next(); m.Type != codec.StreamInit || m.ID != 7 || m.Failed {
		t.Fatalf("client got %v id %d failed %v", m.Type, m.ID, m.Failed)
	}
	for i, dir := range []struct {
		from, to *peer
		id       uint32
		want     uint64
		kind     byte
	}{
		{cl, srv, 7, uint64(up), frameData},
		{srv, cl, up, 7, frameData},
		{srv, cl, up, 7, frameFeedback},
		{cl, srv, 7, uint64(up), frameFeedback},
		{cl, srv, 7, uint64(up), frameData},
	} {
		dir.from.send(streamFrame(dir.kind, dir.id, []byte{byte(i), 'x'}))
		m := dir.to.next()
		if m.ID != dir.want || len(m.Frame) != 18 || m.Frame[16] != byte(i) {
			t.Fatalf("frame %d arrived as %v id %d (% x); want id %d", i, m.Type, m.ID, m.Frame, dir.want)
		}
	}
	cl.send(closeFrame(7))
	if m := srv.next(); m.Type != codec.StreamCloseOneWay || m.ID != uint64(up) {
		t.Fatalf("server got %v id %d", m.Type, m.ID)
	}
	if b.active() != 1 {
		t.Fatalf("the stream ended with only the client's direction closed")
	}
	srv.send(closeFrame(up))
	if m := cl.next(); m.Type != codec.StreamCloseOneWay || m.ID != 7 {
		t.Fatalf("client got %v id %d", m.Type, m.ID)
	}
	waitFor(t, "the stream to end", func() bool { return b.active() == 0 })
	h := &harness{t: t, metrics: b.metrics}
	if n := h.counter("istio_requests_total", map[string]string{"request_protocol": "trpc", "response_flags": "-"}); n != 1 {
		t.Errorf("istio_requests_total = %v; want 1", n)
	}
}

// TestStreamsShareAnUpstreamConnection: streams with the same id from two clients are told apart upstream.
func TestStreamsShareAnUpstreamConnection(t *testing.T) {
	b := newStreamBench(t, 0)
	c1, c2 := b.client(), b.client()
	c1.send(initRequest(1, "/echo.S/Chat"))
	srv := b.server()
	id1 := srv.next().ID
	c2.send(initRequest(1, "/echo.S/Chat"))
	id2 := srv.next().ID
	if id1 == id2 {
		t.Fatalf("both streams have upstream id %d", id1)
	}
	srv.send(streamFrame(frameData, uint32(id2), []byte("two")))
	srv.send(streamFrame(frameData, uint32(id1), []byte("one")))
	if m := c1.next(); string(m.Frame[16:]) != "one" || m.ID != 1 {
		t.Errorf("client 1 got %q id %d", m.Frame[16:], m.ID)
	}
	if m := c2.next(); string(m.Frame[16:]) != "two" || m.ID != 1 {
		t.Errorf("client 2 got %q id %d", m.Frame[16:], m.ID)
	}
	select {
	case <-b.accept:
		t.Error("the proxy opened a second upstream connection")
	default:
	}
}

// TestStreamWithoutRouteRefused: an INIT no route takes is answered with the server's refusal.
func TestStreamWithoutRouteRefused(t *testing.T) {
	b := newStreamBench(t, 0)
	cl := b.client()
	cl.send(initRequest(3, "/echo.S/Nothing"))
	m := cl.next()
	if m.Type != codec.StreamInit || m.ID != 3 || !m.Failed || m.Status != trpc.RetServerNoService {
		t.Fatalf("client got %v id %d failed %v status %d", m.Type, m.ID, m.Failed, m.Status)
	}
}

// TestStreamIdleTimeout: a stream on which nobody sends is reset on both sides.
func TestStreamIdleTimeout(t *testing.T) {
	const idle = time.Second
	b := newStreamBench(t, idle)
	cl := b.client()
	cl.send(initRequest(5, "/echo.S/Chat"))
	srv := b.server()
	up := uint32(srv.next().ID)
	srv.send(initResponse(up))
	cl.next()
	// Traffic every fifth of the timeout keeps it alive past the timeout.
	tick := time.NewTicker(idle / 5)
	defer tick.Stop()
	for start := time.Now(); time.Since(start) < idle*3/2; <-tick.C {
		cl.send(streamFrame(frameData, 5, []byte("tick")))
		if m := srv.next(); m.Type != codec.StreamData {
			t.Fatalf("the server got %v while the stream was busy", m.Type)
		}
	}
	if m := cl.next(); m.Type != codec.StreamCloseTwoWay || m.ID != 5 || m.Status != trpc.RetServerTimeout {
		t.Fatalf("client got %v id %d status %d", m.Type, m.ID, m.Status)
	}
	if m := srv.next(); m.Type != codec.StreamCloseTwoWay || m.ID != uint64(up) {
		t.Fatalf("server got %v id %d", m.Type, m.ID)
	}
	waitFor(t, "the stream to end", func() bool { return b.active() == 0 })
}

// TestStreamPeerLoss: a server that goes away resets its streams for their clients, and a client that goes
// away resets its streams for their servers.
func TestStreamPeerLoss(t *testing.T) {
	b := newStreamBench(t, 0)
	c1, c2 := b.client(), b.client()
	c1.send(initRequest(1, "/echo.S/Chat"))
	srv := b.server()
	up1 := srv.next().ID
	c2.send(initRequest(2, "/echo.S/Chat"))
	srv.next()

	c1.conn.Close()
	if m := srv.next(); m.Type != codec.StreamCloseTwoWay || m.ID != up1 {
		t.Fatalf("after the client left, the server got %v id %d", m.Type, m.ID)
	}
	srv.conn.Close()
	if m := c2.next(); m.Type != codec.StreamCloseTwoWay || m.ID != 2 || m.Status != trpc.RetClientConnect {
		t.Fatalf("after the server left, the client got %v id %d status %d", m.Type, m.ID, m.Status)
	}
	waitFor(t, "the streams to end", func() bool { return b.active() == 0 })
}
