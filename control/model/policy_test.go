package model_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/control/model"
)

// routeWith is a MetaRouter for demo.example whose one route carries extra (YAML at the route's indentation).
func routeWith(extra string) string {
	return `apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: policy, namespace: demo}
spec:
  hosts: [demo.example]
  routes:
  - name: r
    route: [{destination: {host: demo.example}}]
` + indent(extra, "    ")
}

func indent(s, by string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = by + l
	}
	return strings.Join(lines, "\n") + "\n"
}

func TestRoutePolicyValidation(t *testing.T) {
	tests := []struct {
		name  string
		extra string
		sev   model.Severity
		field string
		msg   string // empty: the route must have no problem at all
	}{
		{name: "everything, well formed", extra: `timeout: 2s
retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "connect-failure, reset,retriable-status-codes", retriableStatusCodes: [80]}
fault: {delay: {fixedDelay: 100ms, percentage: {value: 10}}, abort: {errorKind: no_healthy_upstream, percentage: {value: 5}}}
concurrencyLimit: {maxRequests: 100, perKey: method}`},
		{name: "aliases", extra: "retries: {attempts: 1, retryOn: '5xx,gateway-error'}"},
		{name: "no timeout at all", extra: "timeout: 0s\nretries: {attempts: 1, perTryTimeout: 1m}"},
		{name: "retries off", extra: "retries: {attempts: 0}"},
		{name: "negative timeout", extra: "timeout: -1s",
			sev: model.SeverityError, field: "spec.routes[0].timeout", msg: "must not be negative"},
		{name: "unknown retryOn name", extra: "retries: {attempts: 2, retryOn: 'connect-failure,5xx,refused-stream'}",
			sev: model.SeverityError, field: "spec.routes[0].retries.retryOn", msg: `"refused-stream" is not a retry condition`},
		{name: "empty retryOn entry", extra: "retries: {attempts: 2, retryOn: 'reset,,timeout'}",
			sev: model.SeverityError, field: "spec.routes[0].retries.retryOn", msg: "entry 2 is empty"},
		{name: "per-try timeout longer than the timeout", extra: "timeout: 1s\nretries: {attempts: 2, perTryTimeout: 2s}",
			sev: model.SeverityWarning, field: "spec.routes[0].retries.perTryTimeout", msg: "longer than the route's timeout (1s)"},
		{name: "per-try timeout longer than the default", extra: "retries: {attempts: 2, perTryTimeout: 20s}",
			sev: model.SeverityWarning, field: "spec.routes[0].retries.perTryTimeout", msg: "longer than the default route timeout (15s)"},
		{name: "zero per-try timeout", extra: "retries: {attempts: 2, perTryTimeout: 0s}",
			sev: model.SeverityError, field: "spec.routes[0].retries.perTryTimeout", msg: "must be greater than 0"},
		{name: "settings with attempts 0", extra: "retries: {retryOn: reset}",
			sev: model.SeverityWarning, field: "spec.routes[0].retries.attempts", msg: "0 turns retries off"},
		{name: "status retries without statuses", extra: "retries: {attempts: 1, retryOn: retriable-status-codes}",
			sev: model.SeverityWarning, field: "spec.routes[0].retries.retriableStatusCodes", msg: "no status is listed"},
		{name: "statuses without status retries", extra: "retries: {attempts: 1, retriableStatusCodes: [80]}",
			sev: model.SeverityWarning, field: "spec.routes[0].retries.retriableStatusCodes", msg: "does not name retriable-status-codes"},
		{name: "empty fault", extra: "fault: {}",
			sev: model.SeverityWarning, field: "spec.routes[0].fault", msg: "nothing is injected"},
		{name: "zero delay", extra: "fault: {delay: {fixedDelay: 0s}}",
			sev: model.SeverityError, field: "spec.routes[0].fault.delay.fixedDelay", msg: "greater than 0"},
		{name: "delay percentage", extra: "fault: {delay: {fixedDelay: 1s, percentage: {value: 101}}}",
			sev: model.SeverityError, field: "spec.routes[0].fault.delay.percentage.value", msg: "not a percentage"},
		{name: "abort percentage", extra: "fault: {abort: {errorKind: timeout, percentage: {value: -1}}}",
			sev: model.SeverityError, field: "spec.routes[0].fault.abort.percentage.value", msg: "not a percentage"},
		{name: "unknown error kind", extra: "fault: {abort: {errorKind: teapot}}",
			sev: model.SeverityError, field: "spec.routes[0].fault.abort.errorKind", msg: `unknown error kind "teapot"; one of route_not_found, no_healthy_upstream`},
		{name: "cluster_not_found", extra: "fault: {abort: {errorKind: cluster_not_found}}",
			sev: model.SeverityError, field: "spec.routes[0].fault.abort.errorKind", msg: "use no_healthy_upstream"},
		{name: "missing error kind", extra: "fault: {abort: {percentage: {value: 5}}}",
			sev: model.SeverityError, field: "spec.routes[0].fault.abort.errorKind", msg: "required"},
		{name: "zero concurrency", extra: "concurrencyLimit: {maxRequests: 0}",
			sev: model.SeverityError, field: "spec.routes[0].concurrencyLimit.maxRequests", msg: "at least 1"},
		{name: "negative attempts", extra: "retries: {attempts: -1}",
			sev: model.SeverityError, field: "spec.routes.retries.attempts", msg: "expected uint32"},
		{name: "misspelt field", extra: "retries: {attempts: 1, retryon: reset}",
			sev: model.SeverityError, field: "spec.routes[0].retries.retryon", msg: "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, problems := load(t, routeWith(tt.extra))
			if tt.msg == "" {
				wantCount(t, problems, 0, 0)
				return
			}
			wantProblem(t, problems, tt.sev, tt.field, tt.msg)
		})
	}
}

func TestDestinationRulePolicyValidation(t *testing.T) {
	rule := func(policy string) string {
		return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dr, namespace: demo}\n" +
			"spec:\n  host: demo.example\n  trafficPolicy:\n" + indent(policy, "    ")
	}
	tests := []struct {
		name   string
		policy string
		sev    model.Severity
		field  string
		msg    string
	}{
		{name: "everything used, well formed", policy: `connectionPool:
  tcp: {maxConnections: 100, connectTimeout: 1s, idleTimeout: 3600s}
  http: {http1MaxPendingRequests: 10, http2MaxRequests: 1000, maxRequestsPerConnection: 10, maxRetries: 3, idleTimeout: 30s}
outlierDetection: {consecutive5xxErrors: 5, consecutiveGatewayErrors: 3, splitExternalLocalOriginErrors: true,
  consecutiveLocalOriginFailures: 2, interval: 5s, baseEjectionTime: 1m, maxEjectionPercent: 50, minHealthPercent: 30}
retryBudget: {percent: 25, minRetryConcurrency: 5}
loadBalancer: {consistentHash: {httpHeaderName: userId, maglev: {tableSize: 65537}},
  localityLbSetting: {failover: [{from: eu, to: us}]}}
portLevelSettings:
- port: {number: 20880}
  connectionPool: {tcp: {maxConnections: 10}}`},
		{name: "maglev table not prime", policy: "loadBalancer: {consistentHash: {httpHeaderName: k, maglev: {tableSize: 65536}}}",
			sev: model.SeverityError, field: "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", msg: "not a prime"},
		{name: "negative max connections", policy: "connectionPool: {tcp: {maxConnections: -1}}",
			sev: model.SeverityError, field: "spec.trafficPolicy.connectionPool.tcp.maxConnections", msg: "must not be negative"},
		{name: "negative http setting", policy: "connectionPool: {http: {maxRetries: -2}}",
			sev: model.SeverityError, field: "spec.trafficPolicy.connectionPool.http.maxRetries", msg: "must not be negative"},
		{name: "ejection percent", policy: "outlierDetection: {maxEjectionPercent: 101}",
			sev: model.SeverityError, field: "spec.trafficPolicy.outlierDetection.maxEjectionPercent", msg: "not a percentage"},
		{name: "interval too short", policy: "outlierDetection: {interval: 0s}",
			sev: model.SeverityError, field: "spec.trafficPolicy.outlierDetection.interval", msg: "at least 1ms"},
		{name: "min health", policy: "outlierDetection: {minHealthPercent: 101}",
			sev: model.SeverityError, field: "spec.trafficPolicy.outlierDetection.minHealthPercent", msg: "not a percentage"},
		{name: "local origin without split", policy: "outlierDetection: {consecutiveLocalOriginFailures: 3}",
			sev: model.SeverityWarning, field: "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures", msg: "splitExternalLocalOriginErrors"},
		{name: "deprecated consecutiveErrors", policy: "outlierDetection: {consecutiveErrors: 3}",
			sev: model.SeverityWarning, field: "spec.trafficPolicy.outlierDetection.consecutiveErrors", msg: "deprecated and ignored"},
		{name: "retry budget percent", policy: "retryBudget: {percent: 120}",
			sev: model.SeverityError, field: "spec.trafficPolicy.retryBudget.percent", msg: "not a percentage"},
		{name: "retry budget interval", policy: "retryBudget: {budgetInterval: 1s}",
			sev: model.SeverityWarning, field: "spec.trafficPolicy.retryBudget.budgetInterval", msg: "not used"},
		{name: "tls", policy: "tls: {mode: ISTIO_MUTUAL}",
			sev: model.SeverityWarning, field: "spec.trafficPolicy.tls", msg: "plaintext"},
		{name: "keepalive", policy: "connectionPool: {tcp: {tcpKeepalive: {time: 1s}}}",
			sev: model.SeverityWarning, field: "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive", msg: "not used yet"},
		{name: "locality distribute", policy: "loadBalancer: {localityLbSetting: {distribute: [{from: a/*, to: {b/*: 100}}]}}",
			sev: model.SeverityWarning, field: "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute", msg: "not supported"},
		{name: "locality failover to itself", policy: "loadBalancer: {localityLbSetting: {failover: [{from: eu, to: eu}]}}",
			sev: model.SeverityError, field: "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]", msg: "the same region"},
		{name: "port twice", policy: "portLevelSettings: [{port: {number: 1}}, {port: {number: 1}}]",
			sev: model.SeverityError, field: "spec.trafficPolicy.portLevelSettings[1].port.number", msg: "has settings already"},
		{name: "port-level checks", policy: "portLevelSettings: [{port: {number: 1}, outlierDetection: {maxEjectionPercent: 200}}]",
			sev: model.SeverityError, field: "spec.trafficPolicy.portLevelSettings[0].outlierDetection.maxEjectionPercent", msg: "not a percentage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, problems := load(t, rule(tt.policy))
			if tt.msg == "" {
				wantCount(t, problems, 0, 0)
				return
			}
			wantProblem(t, problems, tt.sev, tt.field, tt.msg)
		})
	}
}

// TestTrafficPolicyMerge checks Istio's merge: port-level settings over the top level, a subset's fields
// each replacing the merged one whole, then the subset's own port-level settings.
func TestTrafficPolicyMerge(t *testing.T) {
	const rule = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: demo, namespace: demo}
spec:
  host: demo.example
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 1, connectTimeout: 1s}}
    outlierDetection: {consecutive5xxErrors: 1}
    loadBalancer: {simple: RANDOM}
    retryBudget: {percent: 10}
    portLevelSettings:
    - port: {number: 20880}
      connectionPool: {tcp: {maxConnections: 2}}
  subsets:
  - name: plain
    labels: {version: v1}
  - name: own
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {http: {maxRetries: 7}}
      loadBalancer: {consistentHash: {httpHeaderName: userId}}
      portLevelSettings:
      - port: {number: 20880}
        outlierDetection: {consecutive5xxErrors: 3}
`
	const entry = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: demo, namespace: demo}
spec:
  hosts: [demo.example]
  ports: [{number: 20880, name: tcp-dubbo}, {number: 20881, name: tcp-dubbo-b}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, labels: {version: v1}}]
`
	snap := mustBuild(t, localOpts, entry+"---\n"+rule)
	svc := snap.Service("demo.example")
	tests := []struct {
		port                uint32
		subset              string
		maxConns, maxRetry  int32
		consecutive5xx      uint32
		lb                  model.LBPolicy
		budget              float64
		connectTimeoutValid bool
	}{
		{20881, "", 1, 0, 1, model.LBRandom, 10, true},
		{20880, "", 2, 0, 1, model.LBRandom, 10, false},
		{20880, "plain", 2, 0, 1, model.LBRandom, 10, false},
		// The subset's connectionPool replaces the whole of the top level's, connectTimeout included.
		{20881, "own", 0, 7, 1, model.LBRingHash, 10, false},
		{20880, "own", 0, 7, 3, model.LBRingHash, 10, false},
	}
	for _, tt := range tests {
		tp := svc.TrafficPolicy(tt.port, tt.subset)
		cp := tp.GetConnectionPool()
		if cp.GetTcp().GetMaxConnections() != tt.maxConns || cp.GetHttp().GetMaxRetries() != tt.maxRetry ||
			tp.GetOutlierDetection().GetConsecutive_5XxErrors().GetValue() != tt.consecutive5xx ||
			tp.GetRetryBudget().GetPercent().GetValue() != tt.budget ||
			(cp.GetTcp().GetConnectTimeout() != nil) != tt.connectTimeoutValid {
			t.Errorf("port %d subset %q: merged policy %v", tt.port, tt.subset, tp)
		}
		if lb := svc.LoadBalancerFor(tt.port, tt.subset); lb.Policy != tt.lb {
			t.Errorf("port %d subset %q: load balancer %v, want %s", tt.port, tt.subset, lb, tt.lb)
		}
	}
	if tp := (&model.Service{}).TrafficPolicy(20880, ""); tp != nil {
		t.Errorf("no rule: policy %v, want nil", tp)
	}
	if lb := svc.LoadBalancerFor(20880, "own"); lb.HashKey != "userId" || lb.MinimumRingSize != 1024 {
		t.Errorf("ring hash without an algorithm: %+v, want userId and Envoy's 1024 written out, as Istio does", lb)
	}
}

func TestParseRetryOn(t *testing.T) {
	got, err := model.ParseRetryOn(" reset , 5xx,reset,retriable-status-codes ")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"reset", "5xx", "retriable-status-codes"}; !slices.Equal(got, want) {
		t.Errorf("ParseRetryOn = %q, want %q", got, want)
	}
	if exp, want := model.ExpandRetryOn(got), []string{"reset", "connect-failure", "timeout", "failed",
		"retriable-status-codes"}; !slices.Equal(exp, want) {
		t.Errorf("ExpandRetryOn = %q, want %q", exp, want)
	}
	if got, err := model.ParseRetryOn(""); got != nil || err != nil {
		t.Errorf("empty: %q, %v", got, err)
	}
}

// TestIstioDurations reads durations as Istio's own decoder does: Go's forms ("3m") as well as protobuf's
// ("180s"), and names the field of one that is neither.
func TestIstioDurations(t *testing.T) {
	const rule = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dr, namespace: demo}\n" +
		"spec:\n  host: demo.example\n  trafficPolicy:\n    outlierDetection: {interval: %s, baseEjectionTime: 1m30.5s}\n" +
		"  subsets: [{name: a, trafficPolicy: {connectionPool: {tcp: {connectTimeout: 250ms}}}}]\n"
	objs, problems := load(t, fmt.Sprintf(rule, "180s"))
	wantCount(t, problems, 0, 0)
	od := objs.DestinationRules[0].Spec.GetTrafficPolicy().GetOutlierDetection()
	if od.GetInterval().AsDuration() != 3*time.Minute || od.GetBaseEjectionTime().AsDuration() != 90500*time.Millisecond {
		t.Errorf("durations %v, %v", od.GetInterval().AsDuration(), od.GetBaseEjectionTime().AsDuration())
	}
	if d := objs.DestinationRules[0].Spec.GetSubsets()[0].GetTrafficPolicy().GetConnectionPool().GetTcp().GetConnectTimeout(); d.AsDuration() != 250*time.Millisecond {
		t.Errorf("connect timeout %v", d.AsDuration())
	}
	_, problems = load(t, fmt.Sprintf(rule, "3 minutes"))
	wantProblem(t, problems, model.SeverityError, "spec.trafficPolicy.outlierDetection.interval", `"3 minutes" is not a duration`)
	_, problems = load(t, fmt.Sprintf(rule, "3"))
	wantProblem(t, problems, model.SeverityError, "spec.trafficPolicy.outlierDetection.interval", "expected a duration")
}
