package trpc

// The meltemi binary as users run it, `meltemi mesh -f DIR`, configured only by Istio and Aeraki manifests,
// between real trpc-go clients and servers.

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"

	"trpc.group/trpc-go/trpc-go/errs"

	"github.com/meltemi-mesh/meltemi/codec"
	meltemitrpc "github.com/meltemi-mesh/meltemi/codec/trpc"
	"github.com/meltemi-mesh/meltemi/test/interop/trpc/echopb"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// meshManifests describes the Echo service: a ServiceEntry on the address clients dial, whose port name tells
// Meltemi it speaks tRPC, with the two servers as endpoints labelled by version; a DestinationRule with a
// subset per version; and a MetaRouter that matches on func: Shout goes to v2 and is stamped, Say is split
// 30/70 between v1 and v2, and anything else has no route.
func meshManifests(t *testing.T, serviceAddr string, port int, v1, v2 *echoServer) string {
	t.Helper()
	svc := meshtest.Service{Name: "echo", Host: echoHost, Addresses: []string{serviceAddr}, Port: port, Protocol: "trpc",
		Endpoints: []meshtest.Endpoint{{Addr: v1.addr, Version: v1.version}, {Addr: v2.addr, Version: v2.version}}}
	return svc.YAML(t) + "---\n" + svc.Router(fmt.Sprintf(`  - name: shout
    match:
      attributes:
        func:
          exact: %[2]s
    route:
    - destination:
        host: %[1]s
        subset: v2
    requestMutation:
    - key: x-routed-by
      value: meltemi-mesh
  - name: say
    match:
      attributes:
        func:
          exact: %[3]s
    route:
    - destination:
        host: %[1]s
        subset: v1
      weight: 30
    - destination:
        host: %[1]s
        subset: v2
      weight: 70
  - name: chat
    match:
      attributes:
        func:
          exact: %[4]s
    route:
    - destination:
        host: %[1]s
        subset: v2
`, echoHost, funcShout, funcSay, funcChat))
}

// TestMesh runs unary calls through `meltemi mesh`: routing on func, a request mutation, a weighted split of
// 1000 calls, and the error reply to a call no route matches.
func TestMesh(t *testing.T) {
	t.Parallel()
	bin := meshtest.Build(t, t.TempDir())
	block := meshtest.NewNet()
	v1, v2 := startEchoServer(t, block.Host(2), "v1"), startEchoServer(t, block.Host(3), "v2")
	serviceIP := block.Host(1)
	port := meshtest.FreePort(t, serviceIP)
	dir := t.TempDir()
	meshtest.WriteAtomically(t, dir, "echo.yaml", meshManifests(t, serviceIP, port, v1, v2))
	meshtest.StartMesh(t, bin, dir, block.Host(100))
	// The proxy binds the ServiceEntry's address and port in local mode: clients dial the service itself.
	addr := net.JoinHostPort(serviceIP, strconv.Itoa(port))
	ctx := testCtx(t)

	t.Run("func routes to a subset, with mutation", func(t *testing.T) {
		for i := range 5 {
			rsp, err := call(ctx, addr, funcShout, &echopb.EchoRequest{Text: fmt.Sprint("shout-", i)})
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			if rsp.GetVersion() != "v2" || string(rsp.GetMetadata()["x-routed-by"]) != "meltemi-mesh" {
				t.Fatalf("Shout answered by %q with metadata %q; want v2 reading x-routed-by=meltemi-mesh",
					rsp.GetVersion(), rsp.GetMetadata())
			}
		}
	})
	t.Run("weighted split", func(t *testing.T) {
		checkSplit(t, splitCalls(t, addr, funcSay, 1000), 1000, 0.3)
	})
	t.Run("a stream routed on func", func(t *testing.T) {
		s, err := newStreamClient().chat(streamCtx(t), addr)
		if err != nil {
			t.Fatalf("open the stream: %v", err)
		}
		for i := range 5 {
			rsp, err := exchange(s, fmt.Sprint("chat-", i))
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if rsp.GetVersion() != "v2" {
				t.Fatalf("message %d answered by %q; want v2", i, rsp.GetVersion())
			}
		}
		if err := closeChat(s); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("no route", func(t *testing.T) {
		_, err := call(ctx, addr, "/"+echoService+"/Missing", &echopb.EchoRequest{Text: "nowhere"})
		var e *errs.Error
		if !errors.As(err, &e) || e.Type != errs.ErrorTypeCalleeFramework ||
			int32(e.Code) != meltemitrpc.ErrorRet(codec.RouteNotFound) || !strings.Contains(e.Msg, "no route") {
			t.Fatalf("call with no route returned %v; want a callee framework error with code %d", err,
				meltemitrpc.ErrorRet(codec.RouteNotFound))
		}
	})
}
