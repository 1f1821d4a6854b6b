package greet

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"dubbo.apache.org/dubbo-go/v3/protocol"
	"dubbo.apache.org/dubbo-go/v3/server"
)

// startTimeout bounds how long a provider may take to accept connections.
const startTimeout = 30 * time.Second

// Serve exports GreetService, answering with the version label, on listen (host:port) and returns once the
// provider accepts connections. It serves until the process exits: dubbo-go v3.3.1 has no way to stop a
// server.
func Serve(listen, version string) error {
	host, portText, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port <= 0 || port > 65535 {
		return fmt.Errorf("listen address %q: bad port", listen)
	}
	ins, err := dubboInstance("greet-provider-" + version)
	if err != nil {
		return fmt.Errorf("dubbo instance: %w", err)
	}
	srv, err := ins.NewServer(
		// The classic dubbo protocol on the given address. Serialisation is whatever each request says;
		// consumers in this example send Hessian 2.
		server.WithServerProtocol(protocol.WithDubbo(), protocol.WithIp(host), protocol.WithPort(port)),
		// dubbo-go v3.3.1 hands servers an empty TLS config that makes the dubbo protocol panic while it
		// starts listening; nil means plain TCP.
		server.SetServerTLS(nil),
	)
	if err != nil {
		return fmt.Errorf("dubbo server: %w", err)
	}
	if err := srv.RegisterService(&GreetService{Version: version}, server.WithInterface(Interface)); err != nil {
		return fmt.Errorf("register %s: %w", Interface, err)
	}
	// Serve exports the service and then blocks for good, so it runs on its own goroutine and Serve here
	// returns once the port answers.
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	return waitAccepting(dialable(host, port), served)
}

// dialable is the address to dial to reach a server listening on host:port: a server listening on every
// interface is reached on loopback.
func dialable(host string, port int) string {
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// waitAccepting polls addr until it accepts a connection, the server fails, or startTimeout passes.
func waitAccepting(addr string, served <-chan error) error {
	deadline := time.Now().Add(startTimeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after %v: %w", addr, startTimeout, err)
		}
		select {
		case err := <-served:
			return fmt.Errorf("serve on %s: %v", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
