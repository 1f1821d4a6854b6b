package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// child is a server run started as a process of this same binary, driven over the control protocol.
type child struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr *tail
	addr   string
	exited chan struct{} // closed once the process is reaped

	closeOut io.Closer // the read end of stdout

	mu sync.Mutex // one control request at a time
}

// startChild runs this binary's command name with args and waits, up to timeout, until it reports the
// address it serves on and that address accepts connections.
func startChild(ctx context.Context, timeout time.Duration, name string, args ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, append([]string{name, "-control"}, args...)...)
	c := &child{name: name, cmd: cmd, stderr: &tail{max: 8 << 10}, exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	// A pipe of our own rather than StdoutPipe, which Wait closes under a pending read: what the child wrote
	// before exiting must still be read.
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer pw.Close()
	cmd.Stdout = pw
	c.stdout = bufio.NewReader(pr)
	if err := cmd.Start(); err != nil {
		pr.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c.closeOut = pr
	go func() {
		cmd.Wait()
		close(c.exited)
	}()

	ready := make(chan error, 1)
	go func() {
		line, err := c.stdout.ReadString('\n')
		addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
		switch {
		case err != nil:
			ready <- fmt.Errorf("exited before it was ready: %w", err)
		case !ok:
			ready <- fmt.Errorf("said %q instead of ready", line)
		default:
			c.addr = addr
			ready <- nil
		}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err = <-ready:
	case <-timer.C:
		err = fmt.Errorf("not ready after %v", timeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err == nil {
		err = waitAccepting(ctx, c.addr, timeout)
	}
	if err != nil {
		c.stop()
		return nil, c.failure(err)
	}
	return c, nil
}

// failure wraps err with the child's name and the last of what it wrote to stderr.
func (c *child) failure(err error) error {
	if t := strings.TrimSpace(c.stderr.String()); t != "" {
		return fmt.Errorf("%s: %w\n%s", c.name, err, t)
	}
	return fmt.Errorf("%s: %w", c.name, err)
}

// waitAccepting polls addr until a connection to it succeeds or timeout passes.
func waitAccepting(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return conn.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s does not accept: %w", addr, err)
		case <-tick.C:
		}
	}
}

// alive reports whether the process is still running.
func (c *child) alive() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// cpu returns the CPU time (user + system) the child has used.
func (c *child) cpu() (time.Duration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.alive() {
		return 0, c.failure(errors.New("exited"))
	}
	if _, err := io.WriteString(c.stdin, "usage\n"); err != nil {
		return 0, c.failure(err)
	}
	line, err := c.stdout.ReadString('\n')
	if err != nil {
		return 0, c.failure(err)
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "usage" {
		return 0, c.failure(fmt.Errorf("bad usage reply %q", line))
	}
	user, err1 := strconv.ParseInt(f[1], 10, 64)
	sys, err2 := strconv.ParseInt(f[2], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, c.failure(err)
	}
	return time.Duration(user + sys), nil
}

// rss returns the child's resident set size in bytes, from /proc.
func (c *child) rss() (int64, error) {
	return procRSS(c.cmd.Process.Pid)
}

// procRSS reads VmRSS from /proc/PID/status.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// stop kills the child and reaps it. Closing stdin first would let it exit on its own, but a benchmark that
// is ending has nothing to wait for.
func (c *child) stop() {
	c.stdin.Close()
	c.cmd.Process.Kill()
	<-c.exited
	c.closeOut.Close()
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = t.buf[over:]
		if i := bytes.IndexByte(t.buf, '\n'); i >= 0 {
			t.buf = t.buf[i+1:]
		}
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
