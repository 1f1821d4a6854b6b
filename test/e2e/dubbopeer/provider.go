package dubbopeer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dubbo "dubbo.apache.org/dubbo-go/v3"
	_ "dubbo.apache.org/dubbo-go/v3/imports" // dubbo-go's protocols, filters and serializers register themselves
	"dubbo.apache.org/dubbo-go/v3/logger"
	"dubbo.apache.org/dubbo-go/v3/protocol"
	"dubbo.apache.org/dubbo-go/v3/server"
)

// providerEnv carries "HOST VERSION" to a child process that should serve as a provider.
const providerEnv = "MELTEMI_E2E_DUBBO_PROVIDER"

// startTimeout bounds how long a provider may take to accept connections.
const startTimeout = 30 * time.Second

// RunProvider turns the process into a provider and never returns when the harness started it as one; it
// returns at once otherwise. Call it first thing in TestMain of every test binary that starts providers.
func RunProvider() {
	spec, ok := os.LookupEnv(providerEnv)
	if !ok {
		return
	}
	if err := serveProvider(spec); err != nil {
		fmt.Fprintln(os.Stderr, "provider:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// serveProvider exports the greet service on HOST:a free port, reports the address on file descriptor 3, and
// serves until its stdin closes (the parent closes it to stop the provider, and the kernel does when the parent
// dies, so no provider outlives its test).
func serveProvider(spec string) error {
	host, version, ok := strings.Cut(spec, " ")
	if !ok {
		return fmt.Errorf("bad %s %q: want \"HOST VERSION\"", providerEnv, spec)
	}
	ready := os.NewFile(3, "ready")
	if ready == nil {
		return errors.New("no ready pipe on file descriptor 3")
	}
	// Remote metadata keeps dubbo-go's MetadataService from binding the port on every interface first.
	ins, err := dubbo.NewInstance(dubbo.WithName("meltemi-e2e-provider-"+version), dubbo.WithRemoteMetadata(),
		dubbo.WithLogger(logger.WithLevel("warn")))
	if err != nil {
		return fmt.Errorf("dubbo instance: %w", err)
	}
	quiet(os.Stderr)
	port, err := freePort(host)
	if err != nil {
		return err
	}
	srv, err := ins.NewServer(
		server.WithServerProtocol(protocol.WithDubbo(), protocol.WithIp(host), protocol.WithPort(port)),
		// dubbo-go v3.3.1 hands servers an empty TLS config that makes the dubbo protocol panic while listening.
		server.SetServerTLS(nil),
	)
	if err != nil {
		return fmt.Errorf("dubbo server: %w", err)
	}
	if err := srv.RegisterService(newGreetService(version), server.WithInterface(Interface)); err != nil {
		return fmt.Errorf("register %s: %w", Interface, err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()

	addr := net.JoinHostPort(host, strconv.Itoa(port))
	deadline := time.Now().Add(startTimeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		select {
		case err := <-served:
			return fmt.Errorf("serve on %s: %v", addr, err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting after %v: %v", addr, startTimeout, err)
		}
	}
	if _, err := fmt.Fprintln(ready, addr); err != nil {
		return fmt.Errorf("report address: %w", err)
	}
	ready.Close()
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// freePort returns a port nobody listens on at host right now. The provider binds it a moment later; each
// provider has a loopback address of its own, so nothing else competes for that port in between.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Provider is a dubbo-go provider running in a child process.
type Provider struct {
	// Addr is where it listens, host:port.
	Addr string
	// Version is the label its answers carry ("v1:hello ...").
	Version string

	cmd      *exec.Cmd
	stdin    io.WriteCloser
	out      *tailBuffer
	stopOnce sync.Once
	exited   chan struct{}
}

// StartProvider starts a provider with the version label on a loopback address of its own and stops it when
// the test ends. The test fails if the provider does not come up.
func StartProvider(t testing.TB, version string) *Provider {
	t.Helper()
	return StartProviderOn(t, NextLoopback(), version)
}

// StartProviderOn is StartProvider on a given host address; the provider picks a free port there.
func StartProviderOn(t testing.TB, host, version string) *Provider {
	t.Helper()
	var lastErr error
	// A port found free can be taken before the child binds it; one more try makes that harmless.
	for range 2 {
		p, err := startProvider(host, version)
		if err == nil {
			t.Cleanup(func() {
				p.Stop()
				if out := p.out.String(); t.Failed() && out != "" {
					t.Logf("provider %s %s output:\n%s", p.Version, p.Addr, out)
				}
			})
			return p
		}
		lastErr = err
	}
	t.Fatalf("start provider %s on %s: %v", version, host, lastErr)
	return nil
}

func startProvider(host, version string) (*Provider, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer readyR.Close()
	p := &Provider{Version: version, out: &tailBuffer{max: 64 << 10}, exited: make(chan struct{})}
	p.cmd = exec.Command(exe)
	p.cmd.Env = append(os.Environ(), providerEnv+"="+host+" "+version)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.ExtraFiles = []*os.File{readyW}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		readyW.Close()
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		readyW.Close()
		return nil, err
	}
	readyW.Close()
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()

	_ = readyR.SetReadDeadline(time.Now().Add(startTimeout + 5*time.Second))
	line, err := bufio.NewReader(readyR).ReadString('\n')
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("provider on %s did not report ready (%v); output:\n%s", host, err, p.out.String())
	}
	p.Addr = strings.TrimSpace(line)
	return p, nil
}

// Stop stops the provider and waits for its process to end.
func (p *Provider) Stop() {
	p.stopOnce.Do(func() {
		p.stdin.Close()
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
