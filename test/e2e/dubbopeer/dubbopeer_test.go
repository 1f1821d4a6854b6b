package dubbopeer

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	RunProvider()
	code := m.Run()
	CloseConsumers()
	os.Exit(code)
}

// TestConsumerCallsProviderDirectly checks the harness itself, with no proxy in between.
func TestConsumerCallsProviderDirectly(t *testing.T) {
	t.Parallel()
	p := StartProvider(t, "v1")
	c := NewConsumer(t, p.Addr)
	ctx := context.Background()

	t.Run("sayHello", func(t *testing.T) {
		got, err := c.SayHello(ctx, "meltemi")
		if err != nil || got != "v1:hello meltemi" {
			t.Fatalf("sayHello = %q, %v; want %q", got, err, "v1:hello meltemi")
		}
	})
	t.Run("echo 64 KiB", func(t *testing.T) {
		big := strings.Repeat("0123456789abcdef", 4096)
		got, err := c.Echo(ctx, big)
		if err != nil || got != big {
			t.Fatalf("echo of %d bytes = %d bytes, %v", len(big), len(got), err)
		}
	})
	t.Run("join", func(t *testing.T) {
		got, err := c.Join(ctx, "a", 42, "z")
		if err != nil || got != "v1:a-42-z" {
			t.Fatalf("join = %q, %v; want %q", got, err, "v1:a-42-z")
		}
	})
	t.Run("attachments", func(t *testing.T) {
		r, err := c.Inspect(WithAttachments(ctx, map[string]string{"x-test": "yes"}), "tag-1")
		if err != nil {
			t.Fatal(err)
		}
		if r.Version != "v1" || r.Tag != "tag-1" || r.Attachments["x-test"] != "yes" || r.Remote == "" {
			t.Fatalf("inspect = %+v (keys %v); want version v1, tag tag-1, x-test=yes, a remote address",
				r, r.SortedKeys())
		}
	})
	t.Run("response attachments", func(t *testing.T) {
		// dubbo-go v3.3.1 providers answer a client of protocol 2.0.2 with the request's attachments.
		callCtx, resp := WithResponseAttachments(WithAttachments(ctx, map[string]string{"x-test": "yes"}))
		if _, err := c.SayHello(callCtx, "a"); err != nil {
			t.Fatal(err)
		}
		if got := resp.Get(); got["dubbo"] != "2.0.2" || got["x-test"] != "yes" {
			t.Fatalf("response attachments %v; want dubbo=2.0.2 and x-test=yes among them", got)
		}
	})
	t.Run("oneway", func(t *testing.T) {
		if err := c.Notify(ctx, "ping-1"); err != nil {
			t.Fatal(err)
		}
		WaitFor(t, 10*time.Second, "provider saw notify(ping-1)", func() bool {
			n, err := c.Notified(ctx, "ping-1")
			return err == nil && n == 1
		})
	})
	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for i := range 64 {
			wg.Go(func() {
				want := fmt.Sprintf("call-%d", i)
				got, err := c.Echo(ctx, want)
				if err != nil || got != want {
					errs <- fmt.Errorf("echo(%q) = %q, %v", want, got, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// TestRawHeartbeat checks the raw frame helpers against a real provider, which answers heartbeats itself.
func TestRawHeartbeat(t *testing.T) {
	t.Parallel()
	p := StartProvider(t, "v1")
	rc := DialRaw(t, p.Addr)
	rc.Write(HeartbeatFrame(77))
	f := rc.ReadFrame()
	if f.Flag != FlagHeartbeatResponse || f.Status != StatusOK || f.ID != 77 {
		t.Fatalf("heartbeat answer = %v; want flag %#x status %d id 77", f, FlagHeartbeatResponse, StatusOK)
	}
}

// TestRawRequest checks that hand-made request frames are what a real provider understands.
func TestRawRequest(t *testing.T) {
	t.Parallel()
	p := StartProvider(t, "v2")
	rc := DialRaw(t, p.Addr)
	rc.Write(RequestFrame(5, true, MethodSayHello, []any{"raw"}, map[string]string{"x-raw": "1"}))
	f := rc.ReadFrame()
	if f.Flag != FlagResponse || f.Status != StatusOK || f.ID != 5 {
		t.Fatalf("answer = %v; want a response with status 20 and id 5", f)
	}
	if v, err := f.Value(); err != nil || v != "v2:hello raw" {
		t.Fatalf("answer value = %v, %v; want %q", v, err, "v2:hello raw")
	}
	// A oneway request gets no answer: the next frame is the heartbeat answer.
	rc.Write(RequestFrame(6, false, MethodNotify, []any{"raw-oneway"}, nil))
	rc.Write(HeartbeatFrame(7))
	if f := rc.ReadFrame(); f.ID != 7 || f.Flag != FlagHeartbeatResponse {
		t.Fatalf("after a oneway request and a heartbeat, got %v; want the heartbeat answer (id 7)", f)
	}
}

// TestNotifyIsOneway checks on the wire that Consumer.Notify sends a request without the two-way flag, which
// the oneway tests rely on.
func TestNotifyIsOneway(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", NextLoopback()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if conn, err := ln.Accept(); err == nil {
			accepted <- conn
		}
	}()
	c := NewConsumer(t, ln.Addr().String())
	var conn net.Conn
	select {
	case conn = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the consumer never connected")
	}
	defer conn.Close()
	if err := c.Notify(context.Background(), "on-the-wire"); err != nil {
		t.Fatal(err)
	}
	rc := &RawConn{t: t, conn: conn}
	f := rc.ReadFrame()
	if f.Flag != FlagOnewayRequest {
		t.Fatalf("notify went out as %v; want flag %#x (a oneway request)", f, FlagOnewayRequest)
	}
}
