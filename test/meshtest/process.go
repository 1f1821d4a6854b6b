package meshtest

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// productModule is the module the binary is built from.
const productModule = "github.com/meltemi-mesh/meltemi"

// Build builds the meltemi binary into dir and returns its path. It is built inside Meltemi's own module,
// wherever the calling test module's replace directive points: that is the build users get, with the
// product's dependency versions, and it leaves the test module's go.mod alone.
func Build(t testing.TB, dir string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build meltemi: %v", err)
	}
	out, err := exec.CommandContext(ctx, goTool, "list", "-m", "-f", "{{.Dir}}", productModule).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", productModule, err)
	}
	root := strings.TrimSpace(string(out))
	bin := filepath.Join(dir, "meltemi")
	start := time.Now()
	build := exec.CommandContext(ctx, goTool, "build", "-o", bin, "./cmd/meltemi")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/meltemi in %s: %v\n%s", root, err, out)
	}
	t.Logf("built meltemi in %v", time.Since(start).Round(time.Millisecond))
	return bin
}

// Process is a command running as a child process. Its output is kept and shown when the test fails.
type Process struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	out    *logBuffer
	exited chan struct{}
	err    error // how it ended, once exited is closed
}

// Start runs bin with args and stops it when the test ends. name names it in failures.
func Start(t testing.TB, bin, name string, args ...string) *Process {
	t.Helper()
	p := &Process{t: t, name: name, out: &logBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// The child dies with the test binary even if the binary is killed before its cleanups run.
	p.cmd.SysProcAttr = childProcAttr()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s (%s) output:\n%s", name, strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// Name is the name the process was started with.
func (p *Process) Name() string { return p.name }

// Stop asks the process to end with SIGTERM, as a service manager does, and kills it if it does not within
// a few seconds.
func (p *Process) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.t.Errorf("%s did not exit within 10s of SIGTERM; killing it", p.name)
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// Kill ends the process at once with SIGKILL, as a crash or the OOM killer would, and waits until it is gone.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Alive fails the test with the process's output if it has ended.
func (p *Process) Alive(t testing.TB) {
	t.Helper()
	select {
	case <-p.exited:
		t.Fatalf("%s exited (%v); output:\n%s", p.name, p.err, p.out.String())
	default:
	}
}

// Output returns everything the process wrote so far.
func (p *Process) Output() string { return p.out.String() }

// logBuffer keeps a process's output, up to a bound that the logs of these short tests never reach.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

const logBufferMax = 4 << 20

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() < logBufferMax {
		b.buf.Write(p)
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Poll checks cond until it holds, with pauses growing from 1 ms to 100 ms, and fails the test if it does not
// within timeout.
func Poll(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for delay := time.Millisecond; !cond(); delay = min(2*delay, 100*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(delay)
	}
}
