package thriftinterop

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bytedance/gopkg/cloud/metainfo"

	kecho "github.com/meltemi-mesh/meltemi/test/interop/thrift/kitexgen/echo"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// TestKitex puts an in-process proxy between real Kitex clients and two real Kitex servers (v1 and v2), for
// each transport a Kitex client may speak.
func TestKitex(t *testing.T) {
	t.Parallel()
	for _, tr := range kitexTransports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			testKitexTransport(t, tr)
		})
	}
}

func testKitexTransport(t *testing.T, tr kitexTransport) {
	block := meshtest.NewNet()
	v1 := startKitexServer(t, block.Host(1), "v1")
	v2 := startKitexServer(t, block.Host(2), "v2")
	// Kitex sends a metainfo value <key> as the TTHeader key RPC_TRANSIT_<key>, and reads it back so.
	p := startRoutingProxy(t, block.Host(10), v1.addr, v2.addr, "RPC_TRANSIT_env", "canary",
		"RPC_TRANSIT_"+routedByKey)
	ctx := testCtx(t)
	c := dialKitex(t, p.Addr(mainListener), tr)

	t.Run("answers intact", func(t *testing.T) {
		for name, msg := range map[string]string{"empty": "", "non-ASCII": nonASCII,
			"64 KiB": strings.Repeat("0123456789abcdef", 64<<10/16), "64 KiB non-ASCII": strings.Repeat("é", 32<<10)} {
			got, err := c.Echo(ctx, msg)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got != "v1:"+msg {
				t.Fatalf("%s: answered %d bytes %.40q; want v1: and the %d bytes sent", name, len(got), got, len(msg))
			}
		}
	})

	t.Run("routes on method", func(t *testing.T) {
		if got, err := c.Echo(ctx, "a"); err != nil || got != "v1:a" {
			t.Fatalf("echo answered %q (%v); want v1:a", got, err)
		}
		_, err := c.Fail(ctx, "b")
		var ee *kecho.EchoError
		if !errors.As(err, &ee) || ee.Why != "v2:b" {
			t.Fatalf("fail returned %v (%T); want EchoError{why: v2:b}", err, err)
		}
	})

	t.Run("no route is a TApplicationException", func(t *testing.T) {
		got, err := dialKitex(t, p.Addr(narrowListener), tr).Echo(ctx, "nowhere")
		// Kitex reports a TApplicationException as a remote.TransError carrying its type.
		var tae interface{ TypeID() int32 }
		if !errors.As(err, &tae) {
			t.Fatalf("echo with no route answered %q, %v (%T); want a TApplicationException", got, err, err)
		}
		if tae.TypeID() != 1 || !strings.Contains(err.Error(), "meltemi: ") {
			t.Fatalf("TApplicationException type %d %q; want UNKNOWN_METHOD (1) from meltemi", tae.TypeID(), err)
		}
	})

	t.Run("oneway reaches the server", func(t *testing.T) {
		msg := "ping " + tr.name
		if err := c.Notify(ctx, msg); err != nil {
			t.Fatal(err)
		}
		meshtest.Poll(t, 10*time.Second, "the oneway call to reach v1", func() bool {
			got, err := c.Header(ctx, notifiedKey+msg)
			return err == nil && got == "v1:true"
		})
	})

	if tr.headers {
		t.Run("routes on RPC_TRANSIT_env and the server reads the mutation", func(t *testing.T) {
			canary := metainfo.WithValue(ctx, "env", "canary")
			if got, err := c.Echo(canary, "c"); err != nil || got != "v2:c" {
				t.Fatalf("echo with env=canary answered %q (%v); want v2:c", got, err)
			}
			if got, err := c.Header(canary, routedByKey); err != nil || got != "v2:"+routedByValue {
				t.Fatalf("v2 read %s as %q (%v); want v2:%s", routedByKey, got, err, routedByValue)
			}
			if got, err := c.Header(metainfo.WithValue(canary, "mine", nonASCII), "mine"); err != nil ||
				got != "v2:"+nonASCII {
				t.Fatalf("v2 read mine as %q (%v); want v2:%s", got, err, nonASCII)
			}
			if got, err := c.Header(metainfo.WithValue(ctx, "env", "prod"), routedByKey); err != nil || got != "v1:" {
				t.Fatalf("v1 read %s as %q (%v); want it absent", routedByKey, got, err)
			}
		})
	}

	t.Run("weighted split 20/80", func(t *testing.T) {
		split := dialKitex(t, p.Addr(splitListener), tr)
		checkSplit(t, 1000, 8, 0.2, func(_, i int) (string, error) {
			msg := fmt.Sprint("split-", i)
			got, err := split.Echo(ctx, msg)
			v, rest, _ := strings.Cut(got, ":")
			if err == nil && rest != msg {
				err = fmt.Errorf("echo(%q) answered %q, not its own answer", msg, got)
			}
			return v, err
		})
	})

}

// TestKitexTTHeaderFramed calls through the proxy with Kitex's TTHeaderFramed transport, which a Kitex server
// answers directly (checked first), and routes on its RPC_TRANSIT_env key.
func TestKitexTTHeaderFramed(t *testing.T) {
	t.Parallel()
	tr := kitexTTHeaderFramed
	block := meshtest.NewNet()
	v1 := startKitexServer(t, block.Host(1), "v1")
	v2 := startKitexServer(t, block.Host(2), "v2")
	p := startRoutingProxy(t, block.Host(10), v1.addr, v2.addr, "RPC_TRANSIT_env", "canary",
		"RPC_TRANSIT_"+routedByKey)
	ctx := testCtx(t)
	if got, err := dialKitex(t, v1.addr, tr).Echo(ctx, "direct"); err != nil || got != "v1:direct" {
		t.Fatalf("without the proxy, echo answered %q (%v); want v1:direct", got, err)
	}
	c := dialKitex(t, p.Addr(mainListener), tr)
	if got, err := c.Echo(ctx, nonASCII); err != nil || got != "v1:"+nonASCII {
		t.Fatalf("through the proxy, echo answered %q (%v); want v1:%s", got, err, nonASCII)
	}
	if got, err := c.Header(metainfo.WithValue(ctx, "env", "canary"), routedByKey); err != nil ||
		got != "v2:"+routedByValue {
		t.Fatalf("with env=canary, v2 read %s as %q (%v); want v2:%s", routedByKey, got, err, routedByValue)
	}
	// The proxy's own error reply keeps the transport's inner frame length, or the client could not read it.
	got, err := dialKitex(t, p.Addr(narrowListener), tr).Echo(ctx, "nowhere")
	var tae interface{ TypeID() int32 }
	if !errors.As(err, &tae) || tae.TypeID() != 1 || !strings.Contains(err.Error(), "meltemi: ") {
		t.Fatalf("echo with no route answered %q, %v (%T); want UNKNOWN_METHOD (1) from meltemi", got, err, err)
	}
}
