package proxy

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// istioLabels is Istio's standard label set, in order. Kiali and the usual Grafana dashboards drop series that
// lack any of them, so every request series carries all of them, "unknown" where a value is not known.
var istioLabels = [...]string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
	"source_canonical_service", "source_canonical_revision",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
	"destination_canonical_service", "destination_canonical_revision",
	"request_protocol", "response_code", "response_flags", "connection_security_policy",
}

// Positions in istioLabels of the values that vary per response.
const (
	labelRequestProtocol = 18
	labelResponseCode    = 19
	labelResponseFlags   = 20
)

const unknown = "unknown"

// metrics are a proxy's Prometheus metrics.
type metrics struct {
	registry *prometheus.Registry

	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	reqBytes  *prometheus.HistogramVec
	respBytes *prometheus.HistogramVec

	decodeErrors            *prometheus.CounterVec
	localReplies            *prometheus.CounterVec
	upstreamConnects        *prometheus.CounterVec
	upstreamConnectFailures *prometheus.CounterVec
	upstreamUnknownReplies  *prometheus.CounterVec
	activeRequests          *prometheus.GaugeVec
	downstreamTotal         *prometheus.CounterVec
	downstreamActive        *prometheus.GaugeVec
	configUpdates           *prometheus.CounterVec

	upstreamTimeouts      *prometheus.CounterVec
	upstreamRetries       *prometheus.CounterVec
	upstreamRetryOverflow *prometheus.CounterVec
	upstreamOverflow      *prometheus.CounterVec
	outlierEjections      *prometheus.CounterVec
	outlierEjected        *prometheus.GaugeVec
	lateReplies           *prometheus.CounterVec
	mirrorRequests        *prometheus.CounterVec
	faults                *prometheus.CounterVec

	// series caches the request series of each (destination, status, flags), so a request costs a map lookup
	// rather than hashing 22 label values.
	series sync.Map // seriesKey -> *requestSeries
}

// Istio's default buckets.
var (
	durationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
		300000, 600000, 1800000, 3600000}
	byteBuckets = prometheus.ExponentialBuckets(1, 10, 10)
)

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_requests_total", Help: "Requests handled, by source, destination and response.",
		}, istioLabels[:]),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "istio_request_duration_milliseconds", Help: "Request duration in milliseconds.",
			Buckets: durationBuckets,
		}, istioLabels[:]),
		reqBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "istio_request_bytes", Help: "Request frame sizes in bytes.", Buckets: byteBuckets,
		}, istioLabels[:]),
		respBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "istio_response_bytes", Help: "Response frame sizes in bytes.", Buckets: byteBuckets,
		}, istioLabels[:]),
		decodeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_proxy_decode_errors_total",
			Help: "Frames that could not be decoded; each closed its connection.",
		}, []string{"listener", "protocol", "side"}),
		localReplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_proxy_local_replies_total", Help: "Requests the proxy answered itself, by reason.",
		}, []string{"listener", "reason"}),
		upstreamConnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_proxy_upstream_connects_total", Help: "Upstream connections established.",
		}, []string{"address"}),
		upstreamConnectFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_proxy_upstream_connect_failures_total", Help: "Upstream connection attempts that failed.",
		}, []string{"address"}),
		upstreamUnknownReplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_proxy_upstream_unknown_replies_total",
			Help: "Upstream replies whose request id matched no request in flight (dropped).",
		}, []string{"address"}),
		activeRequests: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meltemi_proxy_active_requests", Help: "Requests in flight.",
		}, []string{"listener"}),
		downstreamTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_proxy_downstream_connections_total", Help: "Downstream connections accepted.",
		}, []string{"listener"}),
		downstreamActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meltemi_proxy_downstream_connections_active", Help: "Downstream connections open.",
		}, []string{"listener"}),
		configUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_proxy_config_updates_total", Help: "Config updates, by result (accepted or rejected).",
		}, []string{"result"}),
		upstreamTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_proxy_upstream_timeouts_total",
			Help: "Tries that ran out of their route's timeout or per-try timeout, by cluster.",
		}, []string{"cluster"}),
		upstreamRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_proxy_upstream_retries_total", Help: "Retries sent, by cluster.",
		}, []string{"cluster"}),
		upstreamRetryOverflow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_proxy_upstream_retry_overflow_total",
			Help: "Retries not sent because the cluster's retry limit or budget was used up, by cluster.",
		}, []string{"cluster"}),
		upstreamOverflow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_proxy_upstream_overflow_total",
			Help: "Requests refused by a cluster's circuit breaker, by cluster and limit.",
		}, []string{"cluster", "limit"}),
		outlierEjections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_proxy_outlier_ejections_total", Help: "Endpoints ejected by outlier detection, by cluster.",
		}, []string{"cluster"}),
		outlierEjected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meltemi_proxy_outlier_ejected_endpoints", Help: "Endpoints ejected now, by cluster.",
		}, []string{"cluster"}),
		lateReplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_proxy_upstream_late_replies_total",
			Help: "Upstream replies that came after their request had timed out (dropped).",
		}, []string{"address"}),
		mirrorRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_proxy_mirror_requests_total",
			Help: "Mirrored copies of requests, by mirror cluster and result (sent, dropped).",
		}, []string{"cluster", "result"}),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_proxy_faults_injected_total", Help: "Faults injected, by listener and kind (delay, abort).",
		}, []string{"listener", "kind"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.reqBytes, m.respBytes, m.decodeErrors,
		m.localReplies, m.upstreamConnects, m.upstreamConnectFailures, m.upstreamUnknownReplies,
		m.activeRequests, m.downstreamTotal, m.downstreamActive, m.configUpdates, m.upstreamTimeouts,
		m.upstreamRetries, m.upstreamRetryOverflow, m.upstreamOverflow, m.outlierEjections, m.outlierEjected,
		m.lateReplies, m.mirrorRequests, m.faults} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// peerLabels are the label values of one (source, destination) pair, response values left blank. Built once
// per config for each endpoint of each cluster, and shared by its requests.
type peerLabels struct {
	values [len(istioLabels)]string
}

type seriesKey struct {
	peer     *peerLabels
	protocol string
	status   int32
	flags    string
}

type requestSeries struct {
	requests  prometheus.Counter
	duration  prometheus.Observer
	reqBytes  prometheus.Observer
	respBytes prometheus.Observer
}

// record counts one finished request.
func (m *metrics) record(peer *peerLabels, protocol string, status int32, flags string, d time.Duration,
	reqSize, respSize int) {
	key := seriesKey{peer: peer, protocol: protocol, status: status, flags: flags}
	s, ok := m.series.Load(key)
	if !ok {
		s = m.newSeries(key)
	}
	rs := s.(*requestSeries)
	rs.requests.Inc()
	rs.duration.Observe(float64(d) / float64(time.Millisecond))
	rs.reqBytes.Observe(float64(reqSize))
	if respSize >= 0 {
		rs.respBytes.Observe(float64(respSize))
	}
}

func (m *metrics) newSeries(key seriesKey) *requestSeries {
	values := key.peer.values
	values[labelResponseCode] = strconv.Itoa(int(key.status))
	if key.status < 0 {
		values[labelResponseCode] = unknown
	}
	values[labelResponseFlags] = key.flags
	values[labelRequestProtocol] = key.protocol
	lv := values[:]
	rs := &requestSeries{
		requests:  m.requests.WithLabelValues(lv...),
		duration:  m.duration.WithLabelValues(lv...),
		reqBytes:  m.reqBytes.WithLabelValues(lv...),
		respBytes: m.respBytes.WithLabelValues(lv...),
	}
	actual, _ := m.series.LoadOrStore(key, rs)
	return actual.(*requestSeries)
}

// newPeerLabels computes the label values for requests from node to an endpoint of a cluster. ep is nil for
// requests that never reached an endpoint (no route, no cluster, no healthy upstream).
func newPeerLabels(node *Node, svc *Service, ep *Endpoint) *peerLabels {
	or := func(v string) string {
		if v == "" {
			return unknown
		}
		return v
	}
	reporter := node.Reporter
	if reporter == "" {
		reporter = "source"
	}
	policy := unknown // a source reporter cannot tell what the destination enforced
	if reporter == "destination" {
		policy = "none"
	}
	var labels map[string]string
	if ep != nil {
		labels = ep.Labels
	}
	host, name, ns := unknown, unknown, unknown
	if svc != nil {
		host, name, ns = or(svc.Host), or(svc.Name), or(svc.Namespace)
	}
	dstApp := or(labels["app"])
	dstVersion := or(labels["version"])
	dstCanonical := firstOf(labels, "service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
	if dstCanonical == "" && ep != nil {
		dstCanonical = name
	}
	dstRevision := firstOf(labels, "service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")
	if dstRevision == "" && ep != nil {
		dstRevision = "latest"
	}
	srcCanonical := node.CanonicalService
	if srcCanonical == "" {
		srcCanonical = node.App
	}
	srcRevision := node.CanonicalRevision
	if srcRevision == "" {
		srcRevision = node.Version
	}
	p := &peerLabels{}
	copy(p.values[:], []string{
		reporter,
		or(node.Workload), or(node.Namespace), or(node.Principal), or(node.App), or(node.Version),
		or(srcCanonical), or(srcRevision),
		or(firstOf(labels, "workload", "app")), or(firstOf(labels, "namespace")), or(labels["principal"]), dstApp,
		dstVersion, host, name, ns,
		or(dstCanonical), or(dstRevision),
		"", "", "", policy,
	})
	if p.values[9] == unknown && ep != nil {
		p.values[9] = ns // an endpoint without a namespace label runs in its service's namespace
	}
	return p
}

func firstOf(labels map[string]string, keys ...string) string {
	for _, k := range keys {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return ""
}
