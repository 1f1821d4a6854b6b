package dubbopeer

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	dubbo "dubbo.apache.org/dubbo-go/v3"
	"dubbo.apache.org/dubbo-go/v3/client"
	"dubbo.apache.org/dubbo-go/v3/common/constant"
	"dubbo.apache.org/dubbo-go/v3/common/extension"
	"dubbo.apache.org/dubbo-go/v3/filter"
	"dubbo.apache.org/dubbo-go/v3/logger"
	"dubbo.apache.org/dubbo-go/v3/protocol/base"
	"dubbo.apache.org/dubbo-go/v3/protocol/result"
	getty "dubbo.apache.org/dubbo-go/v3/remoting/getty"
)

// attachmentFilter is the name of the consumer filter that puts context attachments on the wire.
const attachmentFilter = "meltemi-e2e-context-attachments"

// RequestTimeout is how long a consumer waits for an answer.
const RequestTimeout = 10 * time.Second

func init() {
	// Until a consumer instance exists, dubbo-go's default loggers would print at INFO.
	quiet(nil)
	extension.SetFilter(attachmentFilter, func() filter.Filter { return contextAttachments{} })
}

// contextAttachments copies the attachments a caller put in the context into the invocation. dubbo-go v3.3.1
// does that for the triple protocol only; its dubbo-protocol invoker ignores them.
type contextAttachments struct{}

func (contextAttachments) Invoke(ctx context.Context, invoker base.Invoker, inv base.Invocation) result.Result {
	if atts, ok := ctx.Value(constant.AttachmentKey).(map[string]any); ok {
		for k, v := range atts {
			inv.SetAttachment(k, v)
		}
	}
	return invoker.Invoke(ctx, inv)
}

// OnResponse hands the attachments of the response to a call made with WithResponseAttachments. A consumer
// filter is where dubbo-go shows them: Connection.CallUnary returns only the error.
func (contextAttachments) OnResponse(ctx context.Context, res result.Result, _ base.Invoker,
	_ base.Invocation) result.Result {
	if sink, ok := ctx.Value(responseAttachmentsKey{}).(*ResponseAttachments); ok && res != nil {
		sink.record(res.Attachments())
	}
	return res
}

// responseAttachmentsKey is the context key of a call's ResponseAttachments.
type responseAttachmentsKey struct{}

// ResponseAttachments are the string attachments the response to one call carried, as the consumer read them.
type ResponseAttachments struct {
	mu  sync.Mutex
	got map[string]string
}

// WithResponseAttachments returns a context whose call records the attachments of its response in the
// returned ResponseAttachments.
func WithResponseAttachments(ctx context.Context) (context.Context, *ResponseAttachments) {
	sink := &ResponseAttachments{}
	return context.WithValue(ctx, responseAttachmentsKey{}, sink), sink
}

func (r *ResponseAttachments) record(attachments map[string]any) {
	got := map[string]string{}
	for k, v := range attachments {
		if s, ok := v.(string); ok {
			got[k] = s
		}
	}
	r.mu.Lock()
	r.got = got
	r.mu.Unlock()
}

// Get returns the attachments recorded; nil until a response arrived.
func (r *ResponseAttachments) Get() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got
}

// WithAttachments returns a context whose calls carry attachments, in addition to any ctx already carries.
func WithAttachments(ctx context.Context, attachments map[string]string) context.Context {
	merged := map[string]any{}
	if prev, ok := ctx.Value(constant.AttachmentKey).(map[string]any); ok {
		maps.Copy(merged, prev)
	}
	for k, v := range attachments {
		merged[k] = v
	}
	return context.WithValue(ctx, constant.AttachmentKey, merged)
}

var (
	instanceOnce sync.Once
	instance     *dubbo.Instance
	instanceErr  error
)

// consumerInstance returns the process's one dubbo-go instance for consumers: creating an instance resets
// dubbo-go's global loggers, which would race with calls in flight on other consumers.
func consumerInstance() (*dubbo.Instance, error) {
	instanceOnce.Do(func() {
		instance, instanceErr = dubbo.NewInstance(dubbo.WithName("meltemi-e2e-consumer"),
			dubbo.WithRemoteMetadata(), dubbo.WithLogger(logger.WithLevel("error")))
		quiet(nil)
		// getty opens up to 16 connections per address by default, one more every few hundred milliseconds,
		// and spreads calls over them. One connection per address makes "how many connections did the
		// consumer open" a constant that tests can assert on.
		conf := getty.GetDefaultClientConfig()
		conf.ConnectionNum = 1
		getty.SetClientConf(*conf)
	})
	return instance, instanceErr
}

// Consumer is a real dubbo-go consumer of the greet service at one address.
//
// dubbo-go keeps one client per address for the whole process, so every Consumer of the same address shares
// it; the harness limits that client to one connection, on which calls from many goroutines are multiplexed
// by request id. Its client API cannot close
// that connection; CloseConsumers closes them all.
type Consumer struct {
	// Addr is the address the consumer calls.
	Addr string
	conn *client.Connection
}

// NewConsumer connects a consumer to addr (a provider, or the proxy's listener). Something must be listening
// there: dubbo-go connects at once and cannot start without a connection.
func NewConsumer(t testing.TB, addr string) *Consumer {
	t.Helper()
	c, err := newConsumer(addr)
	if err != nil {
		t.Fatalf("consumer of %s: %v", addr, err)
	}
	return c
}

func newConsumer(addr string) (c *Consumer, err error) {
	ins, err := consumerInstance()
	if err != nil {
		return nil, fmt.Errorf("dubbo instance: %w", err)
	}
	cli, err := ins.NewClient(
		client.WithClientURL(addr),
		client.WithClientProtocolDubbo(),
		client.WithClientSerialization(constant.Hessian2Serialization),
		client.WithClientFilter(attachmentFilter),
		// No retries: a test counts every failure the proxy causes.
		client.WithClientClusterFailFast(),
		client.WithClientRequestTimeout(RequestTimeout),
		// dubbo-go v3.3.1 hands clients an empty, non-nil TLS config otherwise.
		client.SetClientTLS(nil),
	)
	if err != nil {
		return nil, fmt.Errorf("dubbo client: %w", err)
	}
	// Dial panics (a nil invoker) when nothing answers at addr.
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("dial %s: %v", addr, r)
		}
	}()
	conn, err := cli.Dial(Interface)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &Consumer{Addr: addr, conn: conn}, nil
}

// SayHello calls sayHello(name); the answer is "VERSION:hello NAME".
func (c *Consumer) SayHello(ctx context.Context, name string) (string, error) {
	return c.callString(ctx, MethodSayHello, name)
}

// Echo calls echo(text).
func (c *Consumer) Echo(ctx context.Context, text string) (string, error) {
	return c.callString(ctx, MethodEcho, text)
}

// Join calls join(prefix, n, suffix), a call with arguments of three Hessian types.
func (c *Consumer) Join(ctx context.Context, prefix string, n int32, suffix string) (string, error) {
	return c.callString(ctx, MethodJoin, prefix, n, suffix)
}

// Inspect calls inspect(tag) and decodes what the provider saw.
func (c *Consumer) Inspect(ctx context.Context, tag string) (Report, error) {
	raw, err := c.callString(ctx, MethodInspect, tag)
	if err != nil {
		return Report{}, err
	}
	var r Report
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return Report{}, fmt.Errorf("inspect answer %q: %w", raw, err)
	}
	return r, nil
}

// Notify sends notify(tag) oneway: the request goes out without the two-way flag and nothing is awaited.
// dubbo-go sends a request oneway when its "async" attachment is true and no callback is set.
func (c *Consumer) Notify(ctx context.Context, tag string) error {
	ctx = WithAttachments(ctx, map[string]string{constant.AsyncKey: "true"})
	return c.conn.CallUnary(ctx, []any{tag}, nil, MethodNotify)
}

// Notified calls notified(tag): how many oneway notify(tag) calls the provider received.
func (c *Consumer) Notified(ctx context.Context, tag string) (int32, error) {
	var n int32
	err := c.conn.CallUnary(ctx, []any{tag}, &n, MethodNotified)
	return n, err
}

func (c *Consumer) callString(ctx context.Context, method string, args ...any) (string, error) {
	var out string
	if err := c.conn.CallUnary(ctx, args, &out, method); err != nil {
		return "", err
	}
	return out, nil
}

// CloseConsumers closes every consumer connection of the process. Call it when no test needs them any more,
// from TestMain after the tests ran.
func CloseConsumers() {
	if p, err := extensionProtocol(constant.DubboProtocol); err == nil {
		p.Destroy()
	}
}

func extensionProtocol(name string) (p base.Protocol, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("protocol %s: %v", name, r)
		}
	}()
	return extension.GetProtocol(name), nil
}
