package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
)

// Details of the local replies; the codec decides how they reach the client.
const (
	overLimitDetail   = "rate limit exceeded"
	unavailableDetail = "rate limit service unavailable"
)

// limiter is the filter: one per listener config, shared by all of that listener's connections, with one
// gRPC connection to the rate limit service.
type limiter struct {
	settings
	log    *slog.Logger
	stats  stats
	conn   *grpc.ClientConn
	client rlsv3.RateLimitServiceClient

	// ctx ends the checks in flight when the filter is closed.
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex // orders starting a check against Close
	closed bool
	checks sync.WaitGroup
}

var (
	_ filter.Provisioner         = (*limiter)(nil)
	_ interface{ Close() error } = (*limiter)(nil)
)

func newLimiter(s settings) *limiter {
	l := &limiter{settings: s, log: slog.New(slog.DiscardHandler), stats: newStats(s.domain)}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l
}

// Provision registers the filter's metrics and prepares the connection to the rate limit service's cluster,
// to an endpoint of whatever config the proxy serves when it is dialled.
func (l *limiter) Provision(h filter.Host) error {
	if lg := h.Logger(); lg != nil {
		l.log = lg
	}
	if reg := h.Metrics(); reg != nil {
		st, err := registerStats(reg, l.domain)
		if err != nil {
			return err
		}
		l.stats = st
	}
	cluster := l.cluster
	conn, err := grpc.NewClient("passthrough:///"+url.PathEscape(cluster),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(l.authority),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return h.DialCluster(ctx, cluster)
		}),
		// gRPC's default backoff grows to two minutes; a rate limit service that comes back should be asked
		// again within seconds. Checks fail fast (and take the failure mode) while it is away.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second,
		}}),
		// A check waits 20 ms by default, about what a connection takes to set up on a busy machine: once up,
		// the connection is kept rather than dropped when idle.
		grpc.WithIdleTimeout(0),
	)
	if err != nil {
		return fmt.Errorf("rateLimitService.grpcService.envoyGrpc.clusterName %q: %w", cluster, err)
	}
	// No dial yet: the cluster may come in the very config being applied, which the proxy serves only once
	// every filter of it is provisioned. The first check dials, and waits for the connection within its
	// timeout.
	l.conn, l.client = conn, rlsv3.NewRateLimitServiceClient(conn)
	return nil
}

// OnRequest lets a request the match does not select pass at once, and holds a selected one while the rate
// limit service is asked about it.
func (l *limiter) OnRequest(ex filter.Exchange) filter.Status {
	msg := ex.Request()
	// A held stream INIT would lose the frames its client sends before it is forwarded (see the proxy's
	// known limits): streams are not checked until the proxy keeps them.
	if msg.Type == codec.StreamInit || !l.match.Matches(&msg.Metadata) {
		return filter.Continue
	}
	md := &msg.Metadata
	// Envoy skips a descriptor it cannot fill, and with no descriptor left it asks nothing: a request that
	// lacks a property passes unchecked.
	for i := range l.descriptors {
		if _, ok := md.Get(l.descriptors[i].property); !ok {
			return filter.Continue
		}
	}
	entries := make([]*ratelimitv3.RateLimitDescriptor_Entry, len(l.descriptors))
	for i := range l.descriptors {
		v, _ := md.Get(l.descriptors[i].property)
		entries[i] = &ratelimitv3.RateLimitDescriptor_Entry{Key: l.descriptors[i].key, Value: v}
	}
	req := &rlsv3.RateLimitRequest{
		Domain:      l.domain,
		Descriptors: []*ratelimitv3.RateLimitDescriptor{{Entries: entries}},
		HitsAddend:  1,
	}
	if !l.begin() {
		return l.failed(ex, errors.New("filter closed"))
	}
	go l.check(ex, req)
	return filter.Stop
}

// begin counts a check in, unless the filter is closed.
func (l *limiter) begin() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.client == nil {
		return false
	}
	l.checks.Add(1)
	return true
}

// check asks the service and decides the request.
func (l *limiter) check(ex filter.Exchange, req *rlsv3.RateLimitRequest) {
	defer l.checks.Done()
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	resp, err := l.client.ShouldRateLimit(ctx, req)
	cancel()
	switch {
	case err != nil:
		if l.failed(ex, err) == filter.Continue {
			ex.Resume()
		}
	case resp.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT:
		l.stats.overLimit.Inc()
		ex.Reply(codec.OverLimit, overLimitDetail)
	default:
		// Envoy reads every answer but OVER_LIMIT as OK, UNKNOWN included.
		l.stats.ok.Inc()
		ex.Resume()
	}
}

// failed counts a check that got no answer and applies the failure mode: it answers the request when the
// mode is deny (and returns Stop), and returns Continue otherwise.
func (l *limiter) failed(ex filter.Exchange, err error) filter.Status {
	l.stats.errors.Inc()
	l.log.Debug("rate limit check failed", "domain", l.domain, "cluster", l.cluster, "deny", l.failDeny,
		"error", status.Convert(err).Message())
	if l.failDeny {
		ex.Reply(codec.OverLimit, unavailableDetail)
		return filter.Stop
	}
	l.stats.failureModeAllowed.Inc()
	return filter.Continue
}

// Close ends the checks in flight, which then take the failure mode, and closes the connection to the
// service. The proxy closes a filter once no config it serves uses it.
func (l *limiter) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	l.checks.Wait()
	if l.conn != nil {
		return l.conn.Close()
	}
	return nil
}

// stats are the filter's counters, Envoy's ratelimit.{ok,over_limit,error,failure_mode_allowed}, by domain.
type stats struct {
	ok, overLimit, errors, failureModeAllowed prometheus.Counter
}

var statNames = [...]struct{ name, help string }{
	{"meltemi_proxy_ratelimit_ok_total", "Requests the rate limit service allowed."},
	{"meltemi_proxy_ratelimit_over_limit_total", "Requests the rate limit service found over the limit, answered with the protocol's over-limit error."},
	{"meltemi_proxy_ratelimit_error_total", "Checks that got no answer from the rate limit service (unreachable, failed, timed out)."},
	{"meltemi_proxy_ratelimit_failure_mode_allowed_total", "Requests let through because their check failed and the failure mode allows."},
}

// newStats returns counters registered nowhere, for a filter that is not provisioned.
func newStats(domain string) stats {
	var c [len(statNames)]prometheus.Counter
	for i := range c {
		c[i] = prometheus.NewCounter(prometheus.CounterOpts{Name: statNames[i].name, Help: statNames[i].help,
			ConstLabels: prometheus.Labels{"domain": domain}})
	}
	return stats{c[0], c[1], c[2], c[3]}
}

// registerStats registers the filter's counter families in reg, or reuses them when an earlier instance of
// the filter (one a config update replaced, or another listener's) registered them, and returns the series of
// domain.
func registerStats(reg prometheus.Registerer, domain string) (stats, error) {
	var c [len(statNames)]prometheus.Counter
	for i, sn := range statNames {
		vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: sn.name, Help: sn.help}, []string{"domain"})
		if err := reg.Register(vec); err != nil {
			var are prometheus.AlreadyRegisteredError
			existing, ok := (*prometheus.CounterVec)(nil), false
			if errors.As(err, &are) {
				existing, ok = are.ExistingCollector.(*prometheus.CounterVec)
			}
			if !ok {
				return stats{}, fmt.Errorf("metric %s: %w", sn.name, err)
			}
			vec = existing
		}
		c[i] = vec.WithLabelValues(domain)
	}
	return stats{c[0], c[1], c[2], c[3]}, nil
}
