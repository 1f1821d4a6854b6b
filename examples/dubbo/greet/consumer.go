package greet

import (
	"context"
	"fmt"
	"net"
	"time"

	"dubbo.apache.org/dubbo-go/v3/client"
	"dubbo.apache.org/dubbo-go/v3/common/constant"
	"dubbo.apache.org/dubbo-go/v3/common/extension"
)

// RequestTimeout is how long a call waits for its answer.
const RequestTimeout = 3 * time.Second

// Client calls GreetService at one address. One Client serves any number of goroutines: their calls share
// the connections dubbo-go keeps to that address, told apart by request id.
type Client struct {
	conn *client.Connection
}

// Dial returns a Client of GreetService at target (host:port), either a provider itself or the address the
// mesh gives the service. Something must answer there already: dubbo-go connects at once.
func Dial(target string) (c *Client, err error) {
	// dubbo-go would try twice, three seconds apart, and then panic; a plain TCP connection first gives a
	// quick, clear error instead.
	probe, err := net.DialTimeout("tcp", target, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("nothing answers at %s: %w", target, err)
	}
	probe.Close()

	ins, err := dubboInstance("greet-consumer")
	if err != nil {
		return nil, fmt.Errorf("dubbo instance: %w", err)
	}
	cli, err := ins.NewClient(
		// A direct URL instead of a registry: the mesh (or the provider) is at a known address.
		client.WithClientURL(target),
		client.WithClientProtocolDubbo(),
		client.WithClientSerialization(constant.Hessian2Serialization),
		// Fail fast: a failed call is reported as it is, not retried and hidden.
		client.WithClientClusterFailFast(),
		client.WithClientRequestTimeout(RequestTimeout),
		// dubbo-go v3.3.1 hands clients an empty TLS config otherwise; nil means plain TCP.
		client.SetClientTLS(nil),
	)
	if err != nil {
		return nil, fmt.Errorf("dubbo client: %w", err)
	}
	// Dial panics (on a nil invoker) when it cannot connect, e.g. if the target went away since the probe.
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("connect to %s: %v", target, r)
		}
	}()
	conn, err := cli.Dial(Interface)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", target, err)
	}
	return &Client{conn: conn}, nil
}

// SayHello calls sayHello(name) and returns the answer, "VERSION: hello NAME".
func (c *Client) SayHello(ctx context.Context, name string) (string, error) {
	var answer string
	if err := c.conn.CallUnary(ctx, []any{name}, &answer, MethodSayHello); err != nil {
		return "", err
	}
	return answer, nil
}

// CloseConnections closes every connection the process's Clients hold. dubbo-go v3.3.1 has no way to close
// one client: this destroys the whole dubbo protocol, so no Client of the process may be used afterwards.
func CloseConnections() {
	extension.GetProtocol(constant.DubboProtocol).Destroy()
}
