package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/proxy"
)

// inNetnsEnv tells a test binary re-executed inside a network namespace that it is there.
const inNetnsEnv = "MELTEMI_TEST_IN_NETNS"

// inNetns runs the calling test again in a network namespace of its own, where the iptables rules given
// redirect traffic as a sidecar's init container would, and reports whether the caller is already there.
// It needs root, ip and iptables; without them the test is skipped, saying so.
func inNetns(t *testing.T, rules ...[]string) bool {
	t.Helper()
	if os.Getenv(inNetnsEnv) != "" {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace and iptables rules")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian packages iproute2 and iptables; make test installs them)", tool)
		}
	}
	ns := fmt.Sprintf("meltemi-test-%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	for _, r := range rules {
		run(append([]string{"ip", "netns", "exec", ns, "iptables"}, r...)...)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v",
		"-test.count=1")
	cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		t.Log(sc.Text())
	}
	if err != nil {
		t.Fatalf("in network namespace %s: %v", ns, err)
	}
	return false
}

// TestCaptureListenerHandsOnByOriginalDestination: connections that iptables redirects to a capture listener
// are served by the virtual listener of the address they were sent to, or by the one for 0.0.0.0 on their
// port; others are relayed to where they were going.
func TestCaptureListenerHandsOnByOriginalDestination(t *testing.T) {
	// The proxy's own connections carry mark 1337 and are let through, as a sidecar's init container lets
	// the proxy's through.
	if !inNetns(t, []string{"-t", "nat", "-A", "OUTPUT", "-m", "mark", "--mark", "1337", "-j", "RETURN"},
		[]string{"-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-m", "multiport", "--dports", "20880,20881,20882",
			"-j", "REDIRECT", "--to-ports", "15001"}) {
		return
	}
	a, b := startPServer(t, "a"), startPServer(t, "b")
	plain, err := net.Listen("tcp", "127.0.0.3:20882")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	virtual := func(name, addr, cluster string) proxy.Listener {
		l := listener(proxy.Route{Cluster: cluster})
		l.Name, l.Address, l.BindToPort = name, addr, new(bool)
		return l
	}
	h := newMarkedProxy(t, 1337, &proxy.Config{
		Listeners: []proxy.Listener{
			{Name: "outbound", Address: "127.0.0.1:15001", OriginalDst: true, Passthrough: true},
			virtual("to-a", "127.0.0.1:20880", "a"),
			virtual("to-b", "0.0.0.0:20881", "b"),
		},
		Clusters: []proxy.Cluster{clusterOf("a", a.addr()), clusterOf("b", b.addr())},
	})
	dial := func(addr string) *client {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c := &client{t: t, conn: conn, waits: map[uint64]chan reply{}, closed: make(chan struct{})}
		go c.readLoop()
		return c
	}
	if r := dial("127.0.0.1:20880").call("ok"); served(r) != "a" {
		t.Fatalf("to 127.0.0.1:20880: %+v, want a's answer", r)
	}
	if r := dial("127.0.0.2:20881").call("ok"); served(r) != "b" {
		t.Fatalf("to 127.0.0.2:20881: %+v, want b's answer (the 0.0.0.0 listener)", r)
	}
	h.waitCounter("meltemi_proxy_downstream_connections_total", map[string]string{"listener": "to-b"}, 1)

	conn, err := net.Dial("tcp", "127.0.0.3:20882")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("plain bytes\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "plain bytes\n" {
		t.Fatalf("passthrough echoed %q (%v)", line, err)
	}
	h.waitCounter("meltemi_proxy_downstream_connections_total", map[string]string{"listener": "outbound"}, 0)
}
