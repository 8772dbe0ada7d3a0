package observe

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/store"
)

// Store returns the store's Observer. With tracing, each call in a batch
// of admissions or commits is a client span, a child of its caller's span
// (the request's handling span), covering the batch it shared with
// others; a call whose context carries no span records nothing, rather
// than starting a trace of its own. Without tracing it observes nothing.
func (t *Telemetry) Store() store.Observer { return storeObserver{t} }

type storeObserver struct{ t *Telemetry }

func (o storeObserver) Batch(op string, calls []context.Context) func([]error) {
	if o.t.provider == nil {
		return nil
	}
	attrs := []attribute.KeyValue{
		attribute.String("db.system.name", "postgresql"),
		attribute.String("db.operation.name", op),
	}
	if len(calls) > 1 {
		// Semantic conventions count a batch from two operations.
		attrs = append(attrs, attribute.Int("db.operation.batch.size", len(calls)))
	}
	spans := make([]trace.Span, len(calls))
	recording := false
	for i, c := range calls {
		if !trace.SpanContextFromContext(c).IsValid() {
			continue
		}
		_, spans[i] = o.t.tracer.Start(c, "store "+op, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
		recording = true
	}
	if !recording {
		return nil
	}
	return func(errs []error) {
		for i, span := range spans {
			if span == nil {
				continue
			}
			if err := errs[i]; err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}
	}
}

// StoreStats is what the store tells about the state every process shares.
// *store.Store implements it.
type StoreStats interface {
	OutboxBacklog(ctx context.Context) (int64, time.Duration, error)
	PendingDeadLetters(ctx context.Context) (map[string]int64, error)
	SelfServiceUserCounts(ctx context.Context) (map[string]int64, error)
	// SealedPasswordCounts counts the self-service passwords recorded as
	// sealed under the current key, and the others (an older key, or one
	// not recorded).
	SealedPasswordCounts(ctx context.Context) (current, previous int64, err error)
}

// WatchStore exports the shared state read from the store at each scrape:
// the outbox backlog and the age of its oldest event, the dead letters not
// replayed, the self-service users, and their passwords by sealing key.
// Every process reports the same values; alert on their max.
func (t *Telemetry) WatchStore(s StoreStats) error {
	return t.Register(&storeCollector{s: s, log: t.log})
}

var (
	descStoreUp = prometheus.NewDesc("cardbridge_store_stats_up",
		"1 when the last scrape could read the store's statistics, 0 when the database did not answer.", nil, nil)
	descBacklog = prometheus.NewDesc("cardbridge_outbox_backlog",
		"Outcome events committed but not yet published (all processes).", nil, nil)
	descOldest = prometheus.NewDesc("cardbridge_outbox_oldest_age_seconds",
		"Age of the oldest outcome event waiting in the outbox; 0 when it is empty.", nil, nil)
	descDeadLetters = prometheus.NewDesc("cardbridge_dead_letters_pending",
		"Dead letters not replayed, by reason (all processes).", []string{"reason"}, nil)
	descUsers = prometheus.NewDesc("cardbridge_self_service_users",
		"MBanq self-service users, by status (provisioning, active).", []string{"status"}, nil)
	descSealed = prometheus.NewDesc("cardbridge_sealed_passwords",
		"Self-service passwords by the key that sealed them: current (CARDBRIDGE_SECRET_KEY) or previous (an older or unrecorded key). The old keys can go once previous is 0.", []string{"key"}, nil)
)

// storeCollector queries at scrape time rather than on a timer: the values
// are as fresh as the scrape, and nothing runs when nobody looks.
type storeCollector struct {
	s   StoreStats
	log *slog.Logger
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descStoreUp, descBacklog, descOldest, descDeadLetters, descUsers, descSealed} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	// Bounded well under a scrape timeout (Prometheus' default is 10s).
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	n, oldest, err := c.s.OutboxBacklog(ctx)
	var dead, users map[string]int64
	var current, previous int64
	if err == nil {
		dead, err = c.s.PendingDeadLetters(ctx)
	}
	if err == nil {
		users, err = c.s.SelfServiceUserCounts(ctx)
	}
	if err == nil {
		current, previous, err = c.s.SealedPasswordCounts(ctx)
	}
	if err != nil {
		c.log.Warn("reading store statistics for metrics", "err", err)
		ch <- prometheus.MustNewConstMetric(descStoreUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descStoreUp, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(descBacklog, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, oldest.Seconds())
	byReason := map[string]int64{}
	for _, r := range event.Reasons() {
		byReason[r] = 0 // every reason, so an alert sees it rise from zero
	}
	for r, v := range dead {
		byReason[reasonLabel(r)] += v
	}
	for r, v := range byReason {
		ch <- prometheus.MustNewConstMetric(descDeadLetters, prometheus.GaugeValue, float64(v), r)
	}
	byStatus := map[string]int64{"provisioning": 0, "active": 0}
	for s, v := range users {
		byStatus[s] += v
	}
	for s, v := range byStatus {
		ch <- prometheus.MustNewConstMetric(descUsers, prometheus.GaugeValue, float64(v), s)
	}
	// Both always, so "previous > 0" sees the rise from zero at a rotation.
	ch <- prometheus.MustNewConstMetric(descSealed, prometheus.GaugeValue, float64(current), "current")
	ch <- prometheus.MustNewConstMetric(descSealed, prometheus.GaugeValue, float64(previous), "previous")
}
