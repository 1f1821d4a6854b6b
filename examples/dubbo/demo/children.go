package main

import (
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a process the demo started. Its output is kept, not shown, unless it fails.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *tailBuffer

	exited  chan struct{} // closed when the process has ended
	waitErr error         // how it ended, once exited is closed

	stopOnce sync.Once
}

// startChild starts path with args. The child gets a pipe for stdin that only the demo holds: the kernel
// closes it when the demo ends in any way, which a child can watch for.
func startChild(name, path string, args ...string) (*child, error) {
	c := &child{name: name, out: &tailBuffer{max: 32 << 10}, exited: make(chan struct{})}
	c.cmd = exec.Command(path, args...)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	c.cmd.SysProcAttr = childProcAttr()
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// stop asks the child to end (stdin closed, SIGTERM) and kills it if it has not within grace.
func (c *child) stop(grace time.Duration) {
	c.stopOnce.Do(func() {
		c.stdin.Close()
		if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			// Already gone, or a system without SIGTERM.
			_ = c.cmd.Process.Kill()
		}
		select {
		case <-c.exited:
		case <-time.After(grace):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	})
}

// failure describes a child that ended too early, with the end of its output.
func (c *child) failure() error {
	return fmt.Errorf("%s exited (%v)%s", c.name, c.waitErr, c.output())
}

// output is the end of the child's output, indented, for an error message.
func (c *child) output() string {
	out := strings.TrimSpace(c.out.String())
	if out == "" {
		return ""
	}
	return "; its output:\n    " + strings.ReplaceAll(out, "\n", "\n    ")
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
