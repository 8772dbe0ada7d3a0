package observe

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cardbridge/cardbridge/event"
)

// Outcomes of one delivery, the values of the outcome label.
const (
	OutcomeIssued    = "issued"    // this delivery committed a card.issued
	OutcomeFailed    = "failed"    // this delivery committed a card.failed
	OutcomeDuplicate = "duplicate" // the request had already been processed
	OutcomeRetry     = "retry"     // handed back for a later delivery
)

// metrics are the series cardbridge exports, in a registry of their own.
type metrics struct {
	reg *prometheus.Registry

	requests    *prometheus.CounterVec   // type, outcome
	duration    *prometheus.HistogramVec // outcome
	deliveries  prometheus.Histogram
	inFlight    prometheus.Gauge
	deadLetters *prometheus.CounterVec // reason
	provisioned prometheus.Counter
	paused      *prometheus.GaugeVec // reason
	dropped     prometheus.Counter
	// answeredScans, answeredScanned: scans of the outcome stream for
	// requests that may have been answered before (consumer/answered.go).
	answeredScans   *prometheus.CounterVec // result
	answeredScanned prometheus.Counter

	bankDuration *prometheus.HistogramVec // endpoint, status
	tokenGrants  *prometheus.CounterVec   // grant, result
	limiter      *limiterCollector

	relayDuration prometheus.Histogram
	relayEvents   *prometheus.CounterVec // result
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cardbridge_requests_total",
			Help: "Deliveries of request messages handled, by CloudEvent type (\"other\" for any type cardbridge does not process) and outcome: issued, failed, duplicate (already processed) or retry (handed back).",
		}, []string{"type", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cardbridge_request_duration_seconds",
			Help:    "Time from fetching a request message to settling it (ack, term or nak), by outcome.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"outcome"}),
		deliveries: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cardbridge_request_deliveries",
			Help:    "Deliveries a request message took until its outcome was settled (1 is the first try).",
			Buckets: []float64{1, 2, 3, 5, 10, 20, 50},
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cardbridge_requests_in_flight",
			Help: "Request messages being handled by this process now.",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cardbridge_dead_letters_total",
			Help: "Requests this process recorded as dead letters (answered with card.failed), by reason.",
		}, []string{"reason"}),
		paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cardbridge_consumer_paused",
			Help: "1 while this process is paused by a fault of the deployment (the reason label names it: invalid_tenant, oauth_client_refused, admin_login_refused, secret_key, self_service_role, permission_missing, bank_unreachable, bank_tls, bank_redirect...); 0, with an empty reason, while it runs.",
		}, []string{"reason"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cardbridge_messages_dropped_total",
			Help: "Request messages terminated without any record, because Postgres refused to store what they carry (after 3 deliveries); the log line names each. Should stay 0.",
		}),
		provisioned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cardbridge_self_service_users_provisioned_total",
			Help: "MBanq self-service users this process created (or adopted) for a client.",
		}),
		answeredScans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cardbridge_answered_scans_total",
			Help: "Scans of the outcome stream for requests without an inbox row that are old enough to have been answered before (after a database lost commits), by result: ok, or failed (the stream could not be read, or held too much to read). 0 in steady state.",
		}, []string{"result"}),
		answeredScanned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cardbridge_answered_scan_messages_total",
			Help: "Outcome stream messages (headers only) read by those scans.",
		}),
		bankDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cardbridge_mbanq_request_duration_seconds",
			Help:    "Latency of each HTTP attempt at MBanq, by endpoint (method and path, ids replaced by {id}) and HTTP status (\"error\" when no answer came).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15},
		}, []string{"endpoint", "status"}),
		tokenGrants: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cardbridge_mbanq_token_grants_total",
			Help: "OAuth token requests at MBanq, by grant (password: a fetch, refresh_token: a refresh) and result (ok, error).",
		}, []string{"grant", "result"}),
		limiter: newLimiterCollector(),
		relayDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cardbridge_relay_publish_duration_seconds",
			Help:    "Time the outbox relay took to publish one batch and get JetStream's acks.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		relayEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cardbridge_relay_events_total",
			Help: "Outcome events the relay sent, by result: published (acknowledged by JetStream) or failed (left in the outbox for the next pass).",
		}, []string{"result"}),
	}
	m.reg.MustRegister(
		m.requests, m.duration, m.deliveries, m.inFlight, m.deadLetters, m.provisioned, m.paused, m.dropped,
		m.answeredScans, m.answeredScanned,
		m.bankDuration, m.tokenGrants, m.limiter, m.relayDuration, m.relayEvents,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Series that alerts use start at zero rather than appearing with the
	// first event, so rate() and increase() see the first one too.
	for _, o := range []string{OutcomeIssued, OutcomeFailed, OutcomeDuplicate, OutcomeRetry} {
		m.requests.WithLabelValues(event.TypeCardRequested, o)
	}
	for _, r := range event.Reasons() {
		m.deadLetters.WithLabelValues(r)
	}
	m.answeredScans.WithLabelValues("ok")
	m.answeredScans.WithLabelValues("failed")
	m.relayEvents.WithLabelValues("published")
	m.relayEvents.WithLabelValues("failed")
	return m
}

// typeLabel bounds the type label: a type is chosen by whoever publishes,
// and every distinct value would be a new series.
func typeLabel(eventType string) string {
	if eventType == event.TypeCardRequested {
		return eventType
	}
	return "other"
}

// reasonLabel bounds the reason label to the contract's codes.
func reasonLabel(reason string) string {
	if event.KnownReason(reason) {
		return reason
	}
	return "other"
}
