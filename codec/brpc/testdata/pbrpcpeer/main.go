// Command pbrpcpeer records the baidu_std frames that real baidu-golang/pbrpc v1.4.0 clients and servers
// exchange, for the brpc codec's tests, and checks that pbrpc reads what the codec writes: error replies, and
// frames whose correlation_id SetID padded to a longer varint.
//
// Run it from this directory: go run . (it writes ../pbrpc/*.bin and reads ../replies/*.bin and ../padded/*.bin).

// pbrpc draws chunk stream ids from math/rand's global source; seeding it makes recordings repeat byte for byte.
//
//go:debug randseednop=0
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	baidurpc "github.com/baidu-golang/pbrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	service = "example.EchoService"
	timeout = 5 * time.Second
)

func main() {
	rand.Seed(1) // deprecated, but the only way to fix the draws pbrpc makes from the global source
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pbrpcpeer:", err)
		os.Exit(1)
	}
}

func run() error {
	addr, stop, err := startServer()
	if err != nil {
		return err
	}
	defer stop()
	if err := record(addr, filepath.Join("..", "pbrpc")); err != nil {
		return err
	}
	if err := checkPadded(addr, filepath.Join("..", "padded")); err != nil {
		return err
	}
	return checkReplies(filepath.Join("..", "replies"))
}

// startServer runs a pbrpc server with an Echo method that returns its argument and attachment, and a Fail
// method that returns an error.
func startServer() (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := baidurpc.NewTpcServer(&baidurpc.ServerMeta{})
	echo := func(msg proto.Message, attachment []byte, _ *int64) (proto.Message, []byte, error) {
		in, _ := msg.(*wrapperspb.StringValue)
		return wrapperspb.String("echo: " + in.GetValue()), attachment, nil
	}
	fail := func(proto.Message, []byte, *int64) (proto.Message, []byte, error) {
		return nil, nil, errors.New("fail on purpose")
	}
	if _, err := srv.RegisterRpc(service, "Echo", echo, &wrapperspb.StringValue{}); err != nil {
		return "", nil, err
	}
	if _, err := srv.RegisterRpc(service, "Fail", fail, &wrapperspb.StringValue{}); err != nil {
		return "", nil, err
	}
	if err := srv.StartServer(l); err != nil {
		return "", nil, err
	}
	return l.Addr().String(), func() { srv.Stop(context.Background()) }, nil
}

// scenario is one call made through the recording relay.
type scenario struct {
	name   string
	method string
	svc    string
	arg    string
	setup  func(*baidurpc.RpcInvocation)
}

func record(server, dir string) error {
	gzip, snappy := int32(baidurpc.COMPRESS_GZIP), int32(baidurpc.COMPRESS_SNAPPY)
	logID := int64(42)
	scenarios := []scenario{
		{name: "echo", method: "Echo", arg: "hello"},
		{name: "ext-attachment-gzip", method: "Echo", arg: "hello gzip", setup: func(inv *baidurpc.RpcInvocation) {
			inv.RpcRequestMetaExt = map[string]string{"env": "canary", "tenant": "t1"}
			inv.Attachment = []byte("attached bytes")
			inv.CompressType = &gzip
			inv.LogId = &logID
		}},
		{name: "snappy-trace", method: "Echo", arg: strings.Repeat("snappy ", 20), setup: func(inv *baidurpc.RpcInvocation) {
			inv.CompressType = &snappy
			inv.TraceId, inv.SpanId, inv.ParentSpanId = 7, 8, 9
			inv.AuthenticateData = []byte("token")
		}},
		{name: "error", method: "Fail", arg: "x"},
		{name: "not-found", method: "Missing", arg: "x"},
		{name: "chunked", method: "Echo", arg: strings.Repeat("chunk", 10), setup: func(inv *baidurpc.RpcInvocation) {
			inv.ChunkSize = 16
		}},
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, sc := range scenarios {
		req, resp, err := recordCall(server, sc)
		if err != nil {
			return fmt.Errorf("%s: %w", sc.name, err)
		}
		for suffix, data := range map[string][]byte{"request": req, "response": resp} {
			if err := os.WriteFile(filepath.Join(dir, sc.name+"-"+suffix+".bin"), data, 0o644); err != nil {
				return err
			}
		}
		fmt.Printf("recorded %s: %d request bytes, %d response bytes\n", sc.name, len(req), len(resp))
	}
	return nil
}

// recordCall makes one call through a relay that keeps the bytes of each direction.
func recordCall(server string, sc scenario) (req, resp []byte, err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer l.Close()
	var mu sync.Mutex
	var reqBuf, respBuf bytes.Buffer
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		down, err := l.Accept()
		if err != nil {
			return
		}
		defer down.Close()
		up, err := net.Dial("tcp", server)
		if err != nil {
			return
		}
		defer up.Close()
		var wg sync.WaitGroup
		wg.Add(2)
		pipe := func(dst, src net.Conn, rec *bytes.Buffer) {
			defer wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					// Recorded before it is forwarded, so the recording is complete when the peer has it.
					mu.Lock()
					rec.Write(buf[:n])
					mu.Unlock()
					if _, werr := dst.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			dst.Close()
			src.Close()
		}
		go pipe(up, down, &reqBuf)
		go pipe(down, up, &respBuf)
		wg.Wait()
	}()

	callErr := call(l.Addr().String(), sc)
	if sc.method == "Echo" && callErr != nil {
		return nil, nil, callErr
	}
	if sc.method != "Echo" && callErr == nil {
		return nil, nil, errors.New("the call did not fail")
	}
	<-relayDone
	mu.Lock()
	defer mu.Unlock()
	return bytes.Clone(reqBuf.Bytes()), bytes.Clone(respBuf.Bytes()), nil
}

// call makes one call with a real pbrpc client and closes it.
func call(addr string, sc scenario) error {
	host, portStr, _ := net.SplitHostPort(addr)
	var port int
	fmt.Sscan(portStr, &port)
	url := baidurpc.URL{}
	url.SetHost(&host).SetPort(&port)
	t := timeout
	conn, err := baidurpc.NewTCPConnection(url, &t)
	if err != nil {
		return err
	}
	client, err := baidurpc.NewRpcCient(conn)
	if err != nil {
		conn.Close()
		return err
	}
	defer func() {
		client.Close()
		conn.Close()
	}()
	svc := service
	if sc.svc != "" {
		svc = sc.svc
	}
	method := sc.method
	inv := baidurpc.NewRpcInvocation(&svc, &method)
	inv.SetParameterIn(wrapperspb.String(sc.arg))
	if sc.setup != nil {
		sc.setup(inv)
	}
	out := &wrapperspb.StringValue{}
	if _, err := client.SendRpcRequestWithTimeout(timeout, inv, out); err != nil {
		return err
	}
	if want := "echo: " + sc.arg; out.GetValue() != want {
		return fmt.Errorf("got %q, want %q", out.GetValue(), want)
	}
	return nil
}

// checkReplies serves each recorded error reply ("<code>-<kind>.bin", written for correlation_id 1, the id a
// new pbrpc client gives its first call) to a real pbrpc client and checks the error it reports.
func checkReplies(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.bin"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no error replies in %s", dir)
	}
	sort.Strings(files)
	for _, f := range files {
		reply, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		name := strings.TrimSuffix(filepath.Base(f), ".bin")
		code, kind, _ := strings.Cut(name, "-")
		got, err := callFake(reply)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if !strings.Contains(got, "code="+code) || !strings.Contains(got, "meltemi: "+kind) {
			return fmt.Errorf("%s: pbrpc client reports %q", name, got)
		}
		fmt.Printf("pbrpc client reads %s as: %s\n", name, got)
	}
	return nil
}

// checkPadded sends requests whose correlation_id SetID rewrote (padded to a longer varint, or written where
// the empty response meta was) to a real pbrpc server, and serves a response whose correlation_id (1) is
// padded to a real pbrpc client.
func checkPadded(server, dir string) error {
	for file, id := range map[string]int64{"request.bin": 2, "compacted-request.bin": 300} {
		if err := sendRaw(server, filepath.Join(dir, file), id); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		fmt.Printf("pbrpc server answers %s (correlation_id %d)\n", file, id)
	}

	reply, err := os.ReadFile(filepath.Join(dir, "response.bin"))
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	go serveOne(l, reply)
	if err := call(l.Addr().String(), scenario{method: "Echo", arg: "hello"}); err != nil {
		return fmt.Errorf("padded response: %w", err)
	}
	fmt.Println("pbrpc client reads a response with a padded correlation_id")
	return nil
}

// sendRaw sends the request in file to a pbrpc server and checks that it answers the echo call with id.
func sendRaw(server, file string, id int64) error {
	req, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	c, err := net.Dial("tcp", server)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(req); err != nil {
		return err
	}
	resp := baidurpc.NewRpcDataPackage()
	if err := resp.ReadIO(c); err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	out := &wrapperspb.StringValue{}
	if err := proto.Unmarshal(resp.GetData(), out); err != nil {
		return err
	}
	if got, code := resp.GetMeta().GetCorrelationId(), resp.GetMeta().GetResponse().GetErrorCode(); got != id || code != 0 ||
		out.GetValue() != "echo: hello" {
		return fmt.Errorf("the server answers id %d code %d %q", got, code, out.GetValue())
	}
	return nil
}

// serveOne accepts one connection, reads one request from it and answers with reply.
func serveOne(l net.Listener, reply []byte) {
	c, err := l.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	head := make([]byte, 12)
	if _, err := io.ReadFull(c, head); err != nil {
		return
	}
	body := make([]byte, binary.BigEndian.Uint32(head[4:8]))
	if _, err := io.ReadFull(c, body); err != nil {
		return
	}
	c.Write(reply)
	// Hold the connection until the client is done with it.
	io.Copy(io.Discard, c)
}

// callFake makes a call to a server that reads one request and answers it with reply, and returns the error
// the client reports.
func callFake(reply []byte) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	go serveOne(l, reply)
	err = call(l.Addr().String(), scenario{method: "Echo", arg: "x"})
	if err == nil {
		return "", errors.New("the call did not fail")
	}
	return err.Error(), nil
}
