package observe

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/cardbridge/cardbridge/consumer"
	"github.com/cardbridge/cardbridge/event"
)

// Consumer returns the consumer's Observer.
func (t *Telemetry) Consumer() consumer.Observer { return consumerObserver{t} }

type consumerObserver struct{ t *Telemetry }

func (o consumerObserver) Delivery(_ context.Context, deliveries uint64) consumer.Observation {
	o.t.m.inFlight.Inc()
	o.t.inFlight.Add(1)
	return &observation{t: o.t, start: time.Now(), deliveries: deliveries, typ: "other"}
}

func (o consumerObserver) UserProvisioned(int64) { o.t.m.provisioned.Inc() }

// AnsweredScan counts the scans of the outcome stream and the messages
// they read.
func (o consumerObserver) AnsweredScan(messages uint64, err error) {
	result := "ok"
	if err != nil {
		result = "failed"
	}
	o.t.m.answeredScans.WithLabelValues(result).Inc()
	o.t.m.answeredScanned.Add(float64(messages))
}

// Paused sets cardbridge_consumer_paused: one series at 1, labelled with
// the fault, while paused; one at 0 with an empty reason while running.
func (o consumerObserver) Paused(code string) {
	o.t.m.paused.Reset()
	if code == "" {
		o.t.m.paused.WithLabelValues("").Set(0)
		return
	}
	o.t.m.paused.WithLabelValues(code).Set(1)
}

// observation follows one delivery. The consumer calls its methods from
// the one goroutine handling the delivery, so it needs no lock.
type observation struct {
	t          *Telemetry
	start      time.Time
	deliveries uint64
	typ        string
	outcome    string
	reason     string
	span       trace.Span // nil when tracing is off or no request was named
}

// Request returns the context to handle the request in: its log
// attributes, and its trace context, continued by a handling span when
// tracing is on. It only reads ref: which trace context the outcome
// carries is the consumer's decision, made from this context.
func (d *observation) Request(ctx context.Context, eventType string, ref event.RequestRef) context.Context {
	d.typ = typeLabel(eventType)
	if ref.ID != "" || ref.Source != "" {
		// The same names as the consumer's own log lines use.
		ctx = WithLogAttrs(ctx,
			slog.String("request_source", ref.Source),
			slog.String("request_id", ref.ID),
			slog.String("employee_id", ref.EmployeeID))
	}
	if ref.TraceParent != "" {
		ctx = propagator.Extract(ctx, propagation.MapCarrier{"traceparent": ref.TraceParent, "tracestate": ref.TraceState})
	}
	if !d.t.tracing {
		// No span: the caller's context goes on as it came, to MBanq and
		// onto the outcome.
		return ctx
	}
	name := "process message"
	if d.typ != "other" {
		name = "process " + d.typ
	}
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.operation.type", "process"),
		attribute.Int64("messaging.message.delivery_count", int64(d.deliveries)),
	}
	if ref.ID != "" {
		attrs = append(attrs,
			attribute.String("cloudevents.event_id", ref.ID),
			attribute.String("cloudevents.event_source", ref.Source),
			attribute.String("cloudevents.event_type", eventType))
	}
	if ref.ClientID != 0 {
		attrs = append(attrs, attribute.Int64("cardbridge.client_id", ref.ClientID))
	}
	ctx, d.span = d.t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
	return ctx
}

func (d *observation) Outcome(outcome, reason string) {
	d.outcome, d.reason = outcome, reason
	if outcome == OutcomeFailed {
		d.t.m.deadLetters.WithLabelValues(reasonLabel(reason)).Inc()
	}
}

func (d *observation) Dropped() { d.t.m.dropped.Inc() }

func (d *observation) Settled(disposition string, err error) {
	outcome := d.outcome
	if outcome == "" {
		switch disposition {
		case "ack":
			outcome = OutcomeDuplicate
		case "term", "drop":
			outcome = OutcomeFailed
		default:
			outcome = OutcomeRetry
		}
	}
	m := d.t.m
	m.requests.WithLabelValues(d.typ, outcome).Inc()
	m.duration.WithLabelValues(outcome).Observe(seconds(time.Since(d.start)))
	if outcome != OutcomeRetry {
		m.deliveries.Observe(float64(d.deliveries))
	}
	m.inFlight.Dec()
	d.t.inFlight.Add(-1)
	d.t.countHandled(outcome)

	if d.span == nil {
		return
	}
	d.span.SetAttributes(attribute.String("cardbridge.outcome", outcome), attribute.String("cardbridge.disposition", disposition))
	if d.reason != "" {
		d.span.SetAttributes(attribute.String("cardbridge.reason", d.reason))
	}
	switch {
	case err != nil:
		d.span.RecordError(err)
		d.span.SetStatus(codes.Error, "acknowledging: "+err.Error())
	case outcome == OutcomeFailed:
		d.span.SetStatus(codes.Error, d.reason)
	case outcome == OutcomeRetry:
		d.span.SetStatus(codes.Error, "handed back for a later delivery")
	}
	d.span.End()
}
