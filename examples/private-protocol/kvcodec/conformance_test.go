package kvcodec

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/codectest"
	"github.com/meltemi-mesh/meltemi/examples/private-protocol/kvrpc"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// TestConformance runs the codec conformance kit on frames that kvrpc's own client and server wrote to each
// other over a socket.
func TestConformance(t *testing.T) { codectest.Run(t, conformanceSuite(t)) }

// FuzzConformance checks the kit's invariants on arbitrary bytes, seeded with the same frames.
func FuzzConformance(f *testing.F) { codectest.Fuzz(f, conformanceSuite(f)) }

func conformanceSuite(t testing.TB) codectest.Suite {
	calls, replies := recordSession(t)
	greet := map[string]string{"method": "Greet", "env": "canary", "trace-id": "4bf92f3577b34da6"}
	samples := []codectest.Sample{
		{Name: "request", Frame: calls[0], Type: codec.Request, ID: 1, Metadata: greet},
		{Name: "request-unicode-body", Frame: calls[1], Type: codec.Request, ID: 2,
			Metadata: map[string]string{"method": "Echo", "caller": "bücher-😀"}},
		{Name: "request-no-headers", Frame: calls[2], Type: codec.Request, ID: 3,
			Metadata: map[string]string{"method": "Echo"}},
		{Name: "request-no-method-on-server", Frame: calls[3], Type: codec.Request, ID: 4,
			Metadata: map[string]string{"method": "Missing"}},
		{Name: "request-app-error", Frame: calls[4], Type: codec.Request, ID: 5,
			Metadata: map[string]string{"method": "Fail"}},
		{Name: "oneway", Frame: calls[5], Type: codec.Oneway, ID: 0,
			Metadata: map[string]string{"method": "Log", "env": "prod"}},
		{Name: "heartbeat", Frame: calls[6], Type: codec.Heartbeat, ID: 6},
		{Name: "request-large-body", Frame: calls[7], Type: codec.Request, ID: 7,
			Metadata: map[string]string{"method": "Echo"}},

		{Name: "response", Frame: replies[0], Type: codec.Response, ID: 1,
			Metadata: map[string]string{"version": "v1"}},
		{Name: "response-unicode-body", Frame: replies[1], Type: codec.Response, ID: 2},
		{Name: "response-empty", Frame: replies[2], Type: codec.Response, ID: 3},
		{Name: "response-no-method", Frame: replies[3], Type: codec.Response, ID: 4,
			Status: int32(kvrpc.StatusNoMethod), Failed: true},
		{Name: "response-app-error", Frame: replies[4], Type: codec.Response, ID: 5,
			Status: int32(kvrpc.StatusAppError), Failed: true},
		{Name: "heartbeat-reply", Frame: replies[5], Type: codec.HeartbeatResponse, ID: 6},
		{Name: "response-large-body", Frame: replies[6], Type: codec.Response, ID: 7},
	}
	return codectest.Suite{
		Registration:    Registration(),
		Samples:         samples,
		Multiplexing:    true,
		MutableKeys:     []string{"env", "trace-id", "x-codectest"},
		ZeroAllocDecode: true,
	}
}

// recordSession runs a kvrpc client against a kvrpc server through a relay that records the bytes each way,
// and returns them cut into frames: the client's, then the server's, each in the order written.
func recordSession(t testing.TB) (calls, replies [][]byte) {
	t.Helper()
	srv := kvrpc.NewServer()
	srv.Handle("Greet", func(map[string]string, []byte) (map[string]string, []byte, error) {
		return map[string]string{"version": "v1"}, []byte("hello"), nil
	})
	srv.Handle("Echo", func(_ map[string]string, body []byte) (map[string]string, []byte, error) {
		return nil, body, nil
	})
	srv.Handle("Fail", func(map[string]string, []byte) (map[string]string, []byte, error) {
		return nil, nil, errors.New("the handler failed")
	})
	logged := make(chan struct{})
	srv.Handle("Log", func(map[string]string, []byte) (map[string]string, []byte, error) {
		close(logged)
		return nil, nil, nil
	})
	block := meshtest.NewNet()
	srvL := listen(t, block.Host(1))
	go srv.Serve(srvL)
	t.Cleanup(func() { srv.Close() })

	var toServer, toClient lockedBuffer
	relayL := listen(t, block.Host(2))
	t.Cleanup(func() { relayL.Close() })
	go func() {
		down, err := relayL.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", srvL.Addr().String())
		if err != nil {
			down.Close()
			return
		}
		t.Cleanup(func() { down.Close(); up.Close() })
		// TeeReader records bytes before they are passed on, so a reply the client has seen was recorded.
		go io.Copy(up, io.TeeReader(down, &toServer))
		io.Copy(down, io.TeeReader(up, &toClient))
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := kvrpc.Dial(ctx, relayL.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call := func(method string, headers map[string]string, body []byte) {
		t.Helper()
		var kerr *kvrpc.Error
		if _, err := c.Call(ctx, method, headers, body); err != nil && !errors.As(err, &kerr) {
			t.Fatalf("%s: %v", method, err)
		}
	}
	call("Greet", map[string]string{"env": "canary", "trace-id": "4bf92f3577b34da6"}, []byte("ann"))
	call("Echo", map[string]string{"caller": "bücher-😀"}, []byte("grüß dich 🎉"))
	call("Echo", nil, nil)
	call("Missing", nil, []byte("x"))
	call("Fail", nil, nil)
	if err := c.Notify("Log", map[string]string{"env": "prod"}, []byte("started")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-logged:
	case <-ctx.Done():
		t.Fatal("the oneway call never reached the server")
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	call("Echo", nil, bytes.Repeat([]byte("0123456789abcdef"), 4096))

	calls, replies = split(t, toServer.Bytes()), split(t, toClient.Bytes())
	if len(calls) != 8 || len(replies) != 7 {
		t.Fatalf("recorded %d frames from the client and %d from the server; want 8 and 7", len(calls), len(replies))
	}
	return calls, replies
}

// split cuts a recorded stream into frames by their length field, as the README describes it.
func split(t testing.TB, b []byte) [][]byte {
	t.Helper()
	var frames [][]byte
	for len(b) > 0 {
		if len(b) < 8 {
			t.Fatalf("%d bytes left over after %d frames", len(b), len(frames))
		}
		n := 8 + int(binary.BigEndian.Uint32(b[4:8]))
		if n > len(b) {
			t.Fatalf("frame %d claims %d bytes; %d recorded", len(frames), n, len(b))
		}
		frames = append(frames, b[:n:n])
		b = b[n:]
	}
	return frames
}

func listen(t testing.TB, host string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// lockedBuffer is a bytes.Buffer that a relay goroutine writes while the test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
