package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
)

// fakeService is a rate limit service on a loopback socket that answers each check with what answer says
// and records what it was asked.
type fakeService struct {
	rlsv3.UnimplementedRateLimitServiceServer
	addr string

	mu         sync.Mutex
	answer     func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error)
	requests   []*rlsv3.RateLimitRequest
	authority  []string
	requestsCh chan struct{}
}

func startService(t testing.TB) *fakeService {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeService{addr: ln.Addr().String(), requestsCh: make(chan struct{}, 1024),
		answer: answerCode(rlsv3.RateLimitResponse_OK)}
	srv := grpc.NewServer()
	rlsv3.RegisterRateLimitServiceServer(srv, s)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return s
}

func (s *fakeService) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.authority = append(s.authority, md.Get(":authority")...)
	answer := s.answer
	s.mu.Unlock()
	select {
	case s.requestsCh <- struct{}{}:
	default:
	}
	return answer(ctx, req)
}

func (s *fakeService) setAnswer(f func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error)) {
	s.mu.Lock()
	s.answer = f
	s.mu.Unlock()
}

func (s *fakeService) asked() []*rlsv3.RateLimitRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*rlsv3.RateLimitRequest(nil), s.requests...)
}

func answerCode(c rlsv3.RateLimitResponse_Code) func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	return func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		return &rlsv3.RateLimitResponse{OverallCode: c}, nil
	}
}

// host is a filter.Host whose one cluster, "outbound|8081||rls.test", is the fake service (or nothing, once
// addr is empty).
type host struct {
	mu      sync.Mutex
	addr    string
	metrics *prometheus.Registry
}

const testCluster = "outbound|8081||rls.test"

func (h *host) DialCluster(ctx context.Context, cluster string) (net.Conn, error) {
	h.mu.Lock()
	addr := h.addr
	h.mu.Unlock()
	if cluster != testCluster || addr == "" {
		return nil, fmt.Errorf("cluster %q not found", cluster)
	}
	return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
}
func (h *host) Logger() *slog.Logger           { return slog.New(slog.DiscardHandler) }
func (h *host) Metrics() prometheus.Registerer { return h.metrics }

// exchange is a filter.Exchange that reports how the filter decided.
type exchange struct {
	msg     codec.Message
	decided chan string // "resume" or "reply <kind>: <detail>"
}

func newExchange(kv ...string) *exchange {
	ex := &exchange{decided: make(chan string, 2)}
	ex.msg.Type = codec.Request
	if len(kv) > 0 && kv[0] == "stream" {
		ex.msg.Type, kv = codec.StreamInit, kv[1:]
	}
	for i := 0; i+1 < len(kv); i += 2 {
		ex.msg.Metadata.Set(kv[i], kv[i+1])
	}
	return ex
}

func (ex *exchange) Request() *codec.Message { return &ex.msg }
func (ex *exchange) Reply(kind codec.ErrorKind, detail string) {
	ex.decided <- "reply " + kind.String() + ": " + detail
}
func (ex *exchange) Reroute() {}
func (ex *exchange) Resume()  { ex.decided <- "resume" }

// outcome runs a request through f and returns "continue", or how the filter decided the request it held.
func outcome(t testing.TB, f filter.Filter, ex *exchange) string {
	t.Helper()
	switch f.OnRequest(ex) {
	case filter.Continue:
		select {
		case d := <-ex.decided:
			t.Fatalf("the filter returned Continue and also decided %q", d)
		default:
		}
		return "continue"
	default:
		select {
		case d := <-ex.decided:
			select {
			case d2 := <-ex.decided:
				t.Fatalf("the request was decided twice: %q, then %q", d, d2)
			case <-time.After(10 * time.Millisecond):
			}
			return d
		case <-time.After(10 * time.Second):
			t.Fatal("the filter held the request and never decided it")
			return ""
		}
	}
}

// config is the JSON config of a filter on the test cluster; extra fields are spliced in. The timeout is
// generous unless extra sets one: the race detector slows the first check, which also dials.
func config(extra string) string {
	if !strings.Contains(extra, `"timeout"`) {
		extra = strings.TrimPrefix(extra+`,"timeout":"5s"`, ",")
	}
	c := `{"domain":"test","rateLimitService":{"grpcService":{"envoyGrpc":{"clusterName":"` + testCluster + `"}},
		"transportApiVersion":"V3"},"descriptors":[{"property":"method","descriptorKey":"method"},
		{"property":"user","descriptorKey":"user"}]`
	if extra != "" {
		c += "," + extra
	}
	return c + "}"
}

// newTestFilter builds and provisions a filter from config against h, and closes it when the test ends.
func newTestFilter(t testing.TB, h *host, cfg string) *limiter {
	t.Helper()
	f, err := Registration().New([]byte(cfg))
	if err != nil {
		t.Fatalf("config %s: %v", cfg, err)
	}
	l := f.(*limiter)
	if err := l.Provision(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name, config string
		want         []string
	}{
		{"empty", ``, []string{"config: required"}},
		{"not JSON", `{`, []string{"unexpected"}},
		{"unknown field", config(`"burst":3`), []string{`unknown field "burst"`}},
		{"nothing set", `{}`, []string{"domain: required", "rateLimitService: required",
			"descriptors: at least one is required"}},
		{"no cluster", `{"domain":"d","rateLimitService":{"grpcService":{"envoyGrpc":{}}},
			"descriptors":[{"property":"m","descriptorKey":"m"}]}`,
			[]string{"rateLimitService.grpcService.envoyGrpc.clusterName: required"}},
		{"google grpc", `{"domain":"d","rateLimitService":{"grpcService":{"googleGrpc":{"targetUri":"x:1","statPrefix":"s"}}},
			"descriptors":[{"property":"m","descriptorKey":"m"}]}`,
			[]string{"rateLimitService.grpcService.googleGrpc: not supported"}},
		{"descriptor without key", `{"domain":"d","rateLimitService":{"grpcService":{"envoyGrpc":{"clusterName":"c"}}},
			"descriptors":[{"property":"m"},{"descriptorKey":"k"}]}`,
			[]string{"descriptors[0].descriptorKey: required", "descriptors[1].property: required"}},
		{"zero timeout", config(`"timeout":"0s"`), []string{"timeout: 0s must be positive"}},
		{"negative timeout", config(`"timeout":"-1s"`), []string{"timeout: -1s must be positive"}},
		{"bad match", config(`"match":{"metadata":[{"name":"m","safeRegexMatch":{"regex":"("}},{"exactMatch":"x"}]}`),
			[]string{"match.metadata[0].safeRegexMatch.regex: bad regex", "match.metadata[1].name: required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Registration().New([]byte(tt.config))
			if err == nil {
				t.Fatalf("config %s accepted", tt.config)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name, config        string
		timeout             time.Duration
		deny                bool
		authority           string
		descriptors, checks int
	}{
		{"defaults", `{"domain":"d","rateLimitService":{"grpcService":{"envoyGrpc":{"clusterName":"` + testCluster + `"}}},
			"descriptors":[{"property":"m","descriptorKey":"m"},{"property":"u","descriptorKey":"u"}]}`,
			DefaultTimeout, false, testCluster, 2, 0},
		{"as translated from a MetaRouter", `{"match":{"metadata":[{"name":"method","stringMatch":{"exact":"sayHello"}}]},
			"domain":"production","timeout":"0.5s","failureModeDeny":true,
			"rateLimitService":{"grpcService":{"envoyGrpc":{"clusterName":"outbound|8081||rate-limit-server.istio-system.svc.cluster.local"}},
			"transportApiVersion":"V3"},"descriptors":[{"property":"method","descriptorKey":"method"}]}`,
			500 * time.Millisecond, true, "outbound|8081||rate-limit-server.istio-system.svc.cluster.local", 1, 1},
		{"proto field names and an authority", `{"domain":"d","failure_mode_deny":true,
			"rate_limit_service":{"grpc_service":{"envoy_grpc":{"cluster_name":"c","authority":"rls.example"}}},
			"descriptors":[{"property":"p","descriptor_key":"k"}]}`, DefaultTimeout, true, "rls.example", 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Registration().New([]byte(tt.config))
			if err != nil {
				t.Fatal(err)
			}
			l := f.(*limiter)
			if l.timeout != tt.timeout || l.failDeny != tt.deny || l.authority != tt.authority ||
				len(l.descriptors) != tt.descriptors || len(l.match) != tt.checks {
				t.Errorf("timeout %v deny %v authority %q, %d descriptors, %d matchers; want %v %v %q, %d, %d",
					l.timeout, l.failDeny, l.authority, len(l.descriptors), len(l.match), tt.timeout, tt.deny,
					tt.authority, tt.descriptors, tt.checks)
			}
		})
	}
}

func TestDecisions(t *testing.T) {
	svc := startService(t)
	// A service that does not answer within the filter's timeout (which gRPC passes on as the call's
	// deadline).
	slow := func(ctx context.Context, _ *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	failing := func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		return nil, status.Error(codes.Internal, "redis is down")
	}
	const match = `"match":{"metadata":[{"name":"method","prefixMatch":"say"}]}`
	tests := []struct {
		name    string
		config  string
		answer  func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error)
		down    bool     // the cluster has no endpoint
		request []string // metadata
		want    string
		asked   bool
		metric  string // the counter that moves
	}{
		{"allowed", config(match), answerCode(rlsv3.RateLimitResponse_OK),
			false, []string{"method", "sayHello", "user", "ann"}, "resume", true, "ok"},
		{"unknown is allowed, as in Envoy", config(match), answerCode(rlsv3.RateLimitResponse_UNKNOWN),
			false, []string{"method", "sayHello", "user", "ann"}, "resume", true, "ok"},
		{"over limit", config(match), answerCode(rlsv3.RateLimitResponse_OVER_LIMIT),
			false, []string{"method", "sayHello", "user", "ann"}, "reply over_limit: " + overLimitDetail, true, "over_limit"},
		{"not selected by the match", config(match), answerCode(rlsv3.RateLimitResponse_OVER_LIMIT),
			false, []string{"method", "bye", "user", "ann"}, "continue", false, ""},
		{"no match: every request", config(""), answerCode(rlsv3.RateLimitResponse_OVER_LIMIT),
			false, []string{"method", "bye", "user", "ann"}, "reply over_limit: " + overLimitDetail, true, "over_limit"},
		{"a property missing: not checked", config(match), answerCode(rlsv3.RateLimitResponse_OVER_LIMIT),
			false, []string{"method", "sayHello"}, "continue", false, ""},
		{"a stream: not checked", config(match), answerCode(rlsv3.RateLimitResponse_OVER_LIMIT),
			false, []string{"stream", "method", "sayHello", "user", "ann"}, "continue", false, ""},
		{"service error, failure mode allow", config(match), failing,
			false, []string{"method", "sayHello", "user", "ann"}, "resume", true, "failure_mode_allowed"},
		{"service error, failure mode deny", config(match + `,"failureModeDeny":true`), failing,
			false, []string{"method", "sayHello", "user", "ann"}, "reply over_limit: " + unavailableDetail, true, "error"},
		{"timeout, failure mode allow", config(match + `,"timeout":"0.05s"`), slow,
			false, []string{"method", "sayHello", "user", "ann"}, "resume", true, "failure_mode_allowed"},
		{"timeout, failure mode deny", config(match + `,"timeout":"0.05s","failureModeDeny":true`), slow,
			false, []string{"method", "sayHello", "user", "ann"}, "reply over_limit: " + unavailableDetail, true, "error"},
		{"service unreachable, failure mode deny", config(match + `,"failureModeDeny":true`), nil,
			true, []string{"method", "sayHello", "user", "ann"}, "reply over_limit: " + unavailableDetail, false, "error"},
		{"service unreachable, failure mode allow", config(match), nil,
			true, []string{"method", "sayHello", "user", "ann"}, "resume", false, "failure_mode_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.answer != nil {
				svc.setAnswer(tt.answer)
			}
			h := &host{addr: svc.addr, metrics: prometheus.NewRegistry()}
			if tt.down {
				h.addr = ""
			}
			l := newTestFilter(t, h, tt.config)
			before := len(svc.asked())
			if got := outcome(t, l, newExchange(tt.request...)); got != tt.want {
				t.Errorf("outcome %q, want %q", got, tt.want)
			}
			if asked := len(svc.asked()) > before; asked != tt.asked {
				t.Errorf("service asked = %v, want %v", asked, tt.asked)
			}
			for _, name := range []string{"ok", "over_limit", "error", "failure_mode_allowed"} {
				want := 0.0
				if name == tt.metric || name == "error" && tt.metric == "failure_mode_allowed" {
					want = 1
				}
				if got := counter(t, h.metrics, "meltemi_proxy_ratelimit_"+name+"_total"); got != want {
					t.Errorf("meltemi_proxy_ratelimit_%s_total = %v, want %v", name, got, want)
				}
			}
		})
	}
}

// counter reads the series of domain "test" of a counter family, 0 when absent.
func counter(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "domain" && lp.GetValue() == "test" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestRequestSent(t *testing.T) {
	svc := startService(t)
	h := &host{addr: svc.addr, metrics: prometheus.NewRegistry()}
	l := newTestFilter(t, h, config(""))
	if got := outcome(t, l, newExchange("user", "ann", "method", "sayHello", "other", "x")); got != "resume" {
		t.Fatalf("outcome %q", got)
	}
	asked := svc.asked()
	if len(asked) != 1 {
		t.Fatalf("%d checks, want 1", len(asked))
	}
	req := asked[0]
	if req.GetDomain() != "test" || req.GetHitsAddend() != 1 || len(req.GetDescriptors()) != 1 {
		t.Fatalf("request %v: want domain test, hits_addend 1, one descriptor", req)
	}
	// One descriptor, its entries in the config's order whatever the metadata's.
	var entries []string
	for _, e := range req.GetDescriptors()[0].GetEntries() {
		entries = append(entries, e.GetKey()+"="+e.GetValue())
	}
	if got := strings.Join(entries, ","); got != "method=sayHello,user=ann" {
		t.Errorf("entries %s, want method=sayHello,user=ann", got)
	}
	svc.mu.Lock()
	authority := svc.authority
	svc.mu.Unlock()
	if len(authority) != 1 || authority[0] != testCluster {
		t.Errorf(":authority %q, want the cluster name, as Envoy sends it", authority)
	}
}

func TestServiceComesBack(t *testing.T) {
	svc := startService(t)
	h := &host{metrics: prometheus.NewRegistry()} // no endpoint yet
	l := newTestFilter(t, h, config(`"failureModeDeny":true`))
	ex := func() *exchange { return newExchange("method", "sayHello", "user", "ann") }
	if got := outcome(t, l, ex()); got != "reply over_limit: "+unavailableDetail {
		t.Fatalf("with the service away: %q", got)
	}
	h.mu.Lock()
	h.addr = svc.addr
	h.mu.Unlock()
	// gRPC retries the connection with a backoff capped at 5 s; checks fail fast meanwhile.
	deadline := time.Now().Add(15 * time.Second)
	for outcome(t, l, ex()) != "resume" {
		if time.Now().After(deadline) {
			t.Fatal("the filter never reached the service once it was back")
		}
		select {
		case <-svc.requestsCh:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestCloseEndsChecksInFlight(t *testing.T) {
	svc := startService(t)
	release := make(chan struct{})
	svc.setAnswer(func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		<-release
		return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
	})
	defer close(release)
	h := &host{addr: svc.addr, metrics: prometheus.NewRegistry()}
	l := newTestFilter(t, h, config(`"timeout":"60s","failureModeDeny":true`))
	ex := newExchange("method", "sayHello", "user", "ann")
	if l.OnRequest(ex) != filter.Stop {
		t.Fatal("a selected request was not held")
	}
	select {
	case <-svc.requestsCh:
	case <-time.After(10 * time.Second):
		t.Fatal("the check never reached the service")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-ex.decided:
		if d != "reply over_limit: "+unavailableDetail {
			t.Errorf("a check ended by Close decided %q, want the failure mode's reply", d)
		}
	default:
		t.Fatal("Close returned with a check still undecided")
	}
	// A request that reaches a closed filter takes the failure mode at once.
	if got := outcome(t, l, newExchange("method", "sayHello", "user", "ann")); got != "reply over_limit: "+unavailableDetail {
		t.Errorf("after Close: %q", got)
	}
}

func TestMetricsSurviveRebuilds(t *testing.T) {
	svc := startService(t)
	h := &host{addr: svc.addr, metrics: prometheus.NewRegistry()}
	// A config update builds a new instance while the old one is still registered, and two listeners may
	// share a domain: each registers the same families.
	first := newTestFilter(t, h, config(""))
	second := newTestFilter(t, h, config(`"timeout":"6s"`))
	for _, l := range []*limiter{first, second} {
		if got := outcome(t, l, newExchange("method", "m", "user", "u")); got != "resume" {
			t.Fatalf("outcome %q", got)
		}
	}
	first.Close()
	if got := counter(t, h.metrics, "meltemi_proxy_ratelimit_ok_total"); got != 2 {
		t.Errorf("ok = %v, want 2: both instances count in the one series", got)
	}
	families, err := h.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "meltemi_proxy_ratelimit_ok_total" && len(f.GetMetric()) != 1 {
			t.Errorf("%d ok series, want 1", len(f.GetMetric()))
		}
	}
}

func TestRegisterStatsRefusesAClash(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "meltemi_proxy_ratelimit_ok_total", Help: "x"}))
	_, err := registerStats(reg, "d")
	if err == nil || !strings.Contains(err.Error(), "meltemi_proxy_ratelimit_ok_total") {
		t.Fatalf("error %v, want one naming the clashing metric", err)
	}
}
