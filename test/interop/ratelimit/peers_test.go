package ratelimitinterop

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/meltemi-mesh/meltemi/test/interop/ratelimit/echogen/echo"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// peer returns the path of a server the tests need, from the environment variable that `make test` sets. A
// developer running `go test` by hand without it has the test skipped, with the way to get it; under CI the
// test fails instead, since make test must have provided it.
func peer(t *testing.T, env, what string) string {
	t.Helper()
	path := os.Getenv(env)
	if path == "" {
		msg := fmt.Sprintf("%s is not set: it names %s (run `make test`, or `eval $(hack/test-peers.sh)` and export "+
			"what it prints)", env, what)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if _, err := exec.LookPath(path); err != nil {
		t.Fatalf("%s=%s: %v", env, path, err)
	}
	return path
}

// startRedis runs a redis-server of the test's own on host, keeping nothing on disk.
func startRedis(t *testing.T, host string) string {
	t.Helper()
	bin := peer(t, "MELTEMI_REDIS_SERVER", "redis-server")
	addr := meshtest.FreeAddr(t, host)
	_, port, _ := net.SplitHostPort(addr)
	p := meshtest.Start(t, bin, "redis-server", "--port", port, "--bind", host, "--save", "", "--appendonly", "no",
		"--dir", t.TempDir())
	meshtest.Poll(t, 10*time.Second, "redis-server to answer PING on "+addr, func() bool {
		p.Alive(t)
		return redisPing(addr)
	})
	return addr
}

func redisPing(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	buf := make([]byte, 7)
	n, _ := c.Read(buf)
	return string(buf[:n]) == "+PONG\r\n"
}

// rateLimitService is a running Envoy rate limit service.
type rateLimitService struct {
	proc *meshtest.Process
	// grpcAddr is where it answers ShouldRateLimit.
	grpcAddr string
}

// startRateLimitService runs Envoy's rate limit service on host with one config file in its own YAML format,
// counting in the redis-server at redisAddr, and waits until it is healthy.
func startRateLimitService(t *testing.T, host, redisAddr, config string) *rateLimitService {
	t.Helper()
	bin := peer(t, "MELTEMI_RATELIMIT_SERVER", "Envoy's rate limit service (github.com/envoyproxy/ratelimit)")
	root := t.TempDir()
	// The service reads every file of RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config as a config.
	dir := filepath.Join(root, "ratelimit", "config")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "limits.yaml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	port := func() string {
		_, p, _ := net.SplitHostPort(meshtest.FreeAddr(t, host))
		return p
	}
	httpPort, grpcPort, debugPort := port(), port(), port()
	env := []string{
		// It binds every interface unless told otherwise.
		"HOST=" + host, "PORT=" + httpPort,
		"GRPC_HOST=" + host, "GRPC_PORT=" + grpcPort,
		"DEBUG_HOST=" + host, "DEBUG_PORT=" + debugPort,
		"USE_STATSD=false", "LOG_LEVEL=warn",
		"REDIS_SOCKET_TYPE=tcp", "REDIS_URL=" + redisAddr,
		"RUNTIME_ROOT=" + root, "RUNTIME_SUBDIRECTORY=ratelimit", "RUNTIME_WATCH_ROOT=false",
		"RUNTIME_IGNOREDOTFILES=true",
	}
	// env(1) replaces itself with the service, so the process the harness signals is the service.
	p := meshtest.Start(t, "/usr/bin/env", "ratelimit", append(append([]string{"-i"}, env...), bin)...)
	health := "http://" + net.JoinHostPort(host, httpPort) + "/healthcheck"
	client := &http.Client{Timeout: time.Second}
	meshtest.Poll(t, 30*time.Second, "the rate limit service to be healthy at "+health, func() bool {
		p.Alive(t)
		resp, err := client.Get(health)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return &rateLimitService{proc: p, grpcAddr: net.JoinHostPort(host, grpcPort)}
}

// echoServer is an Apache Thrift server speaking THeader (so that requests carry key/values the proxy reads
// as metadata), answering each call with its message.
type echoServer struct {
	addr string
	// calls counts the calls it answered, by method.
	calls *callCounter
}

func startEchoServer(t *testing.T, host string) *echoServer {
	t.Helper()
	s := &echoServer{calls: newCallCounter()}
	socket, err := thrift.NewTServerSocketTimeout(net.JoinHostPort(host, "0"), 0)
	if err != nil {
		t.Fatal(err)
	}
	conf := &thrift.TConfiguration{}
	srv := thrift.NewTSimpleServer4(echo.NewEchoProcessor(echoHandler{s}), socket,
		thrift.NewTHeaderTransportFactoryConf(nil, conf), thrift.NewTHeaderProtocolFactoryConf(conf))
	// Without a log context, a TSimpleServer started by Listen and AcceptLoop crashes on the first connection
	// error it logs.
	srv.SetLogContext(context.Background())
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	s.addr = socket.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.AcceptLoop()
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return s
}

type echoHandler struct{ s *echoServer }

func (h echoHandler) Echo(_ context.Context, msg string) (string, error) {
	h.s.calls.add("echo")
	return msg, nil
}

func (h echoHandler) Ping(_ context.Context, msg string) (string, error) {
	h.s.calls.add("ping")
	return msg, nil
}

// echoClient is a real Apache Thrift client on one THeader connection; its calls must not overlap.
type echoClient struct {
	c *echo.EchoClient
}

func dialEcho(t *testing.T, addr string) *echoClient {
	t.Helper()
	conf := &thrift.TConfiguration{ConnectTimeout: 5 * time.Second, SocketTimeout: 10 * time.Second}
	id := thrift.THeaderProtocolBinary
	conf.THeaderProtocolID = &id
	trans := thrift.NewTHeaderTransportConf(thrift.NewTSocketConf(addr, conf), conf)
	if err := trans.Open(); err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { trans.Close() })
	proto := thrift.NewTHeaderProtocolConf(trans, conf)
	return &echoClient{c: echo.NewEchoClient(thrift.NewTStandardClient(proto, proto))}
}

// call calls method ("echo" or "ping") with msg, sending the THeader key/values kv (pairs of keys and values).
func (c *echoClient) call(method, msg string, kv ...string) (string, error) {
	ctx := context.Background()
	var keys []string
	for i := 0; i+1 < len(kv); i += 2 {
		ctx = thrift.SetHeader(ctx, kv[i], kv[i+1])
		keys = append(keys, kv[i])
	}
	ctx = thrift.SetWriteHeaderList(ctx, keys)
	if method == "ping" {
		return c.c.Ping(ctx, msg)
	}
	return c.c.Echo(ctx, msg)
}
