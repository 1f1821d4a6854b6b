package dubbopeer

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Method names of the provider's test controls.
const (
	MethodControl = "control"
	MethodCalls   = "calls"
)

// Provider behaviours a test sets with Control: how sayHello and echo answer from then on.
const (
	// BehaveOK answers normally.
	BehaveOK = "ok"
	// BehaveFail throws, which a Dubbo consumer sees as a service exception.
	BehaveFail = "fail"
	// BehaveSlow answers after the given delay: "slow:250ms".
	BehaveSlow = "slow:"
)

// behaviour is how this provider process answers; one service runs per process.
var (
	behaviour atomic.Pointer[string]
	calls     sync.Map // method -> *atomic.Int32
)

// misbehave runs at the start of sayHello and echo: it counts the call and acts out the behaviour set.
func misbehave(method string) error {
	n, _ := calls.LoadOrStore(method, new(atomic.Int32))
	n.(*atomic.Int32).Add(1)
	b := behaviour.Load()
	switch {
	case b == nil || *b == BehaveOK:
		return nil
	case *b == BehaveFail:
		return errors.New("provider told to fail")
	case strings.HasPrefix(*b, BehaveSlow):
		if d, err := time.ParseDuration(strings.TrimPrefix(*b, BehaveSlow)); err == nil {
			time.Sleep(d) // the provider's simulated work
		}
	}
	return nil
}

// Control sets how sayHello and echo answer from now on (BehaveOK, BehaveFail, BehaveSlow+"250ms"), and
// answers with the version: a test calls it on the provider directly, not through the proxy.
func (s *GreetService) Control(_ context.Context, mode string) (string, error) {
	behaviour.Store(&mode)
	return s.version, nil
}

// Calls says how many calls of method (sayHello, echo) the provider has had.
func (s *GreetService) Calls(_ context.Context, method string) (int32, error) {
	if n, ok := calls.Load(method); ok {
		return n.(*atomic.Int32).Load(), nil
	}
	return 0, nil
}

// Control tells the provider at the consumer's address how to answer from now on.
func (c *Consumer) Control(ctx context.Context, mode string) error {
	_, err := c.callString(ctx, MethodControl, mode)
	return err
}

// Calls asks the provider how many calls of method it has had.
func (c *Consumer) Calls(ctx context.Context, method string) (int, error) {
	var n int32
	err := c.conn.CallUnary(ctx, []any{method}, &n, MethodCalls)
	return int(n), err
}

// SlowFor is the BehaveSlow mode for a delay.
func SlowFor(d time.Duration) string { return BehaveSlow + d.String() }
