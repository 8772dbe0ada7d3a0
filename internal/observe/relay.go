package observe

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cardbridge/cardbridge/relay"
	"github.com/cardbridge/cardbridge/store"
)

// Relay returns the outbox relay's Observer.
func (t *Telemetry) Relay() relay.Observer { return relayObserver{t} }

type relayObserver struct{ t *Telemetry }

func (o relayObserver) Published(events, acked int, elapsed time.Duration, _ error) {
	m := o.t.m
	m.relayDuration.Observe(seconds(elapsed))
	m.relayEvents.WithLabelValues("published").Add(float64(acked))
	if failed := events - acked; failed > 0 {
		m.relayEvents.WithLabelValues("failed").Add(float64(failed))
	}
}

// Publishing opens a producer span, a child of the request's handling
// span, that ends when JetStream has stored the outcome (or the publish
// failed). Without tracing it observes nothing.
func (o relayObserver) Publishing(ctx context.Context, e store.OutboxEvent) func(error) {
	if o.t.provider == nil {
		return nil
	}
	_, span := o.t.tracer.Start(ctx, "publish "+e.Subject, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.operation.type", "publish"),
		attribute.String("messaging.destination.name", e.Subject),
		attribute.String("messaging.message.id", e.EventID),
	))
	return func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}
