package consumer_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cardbridge/cardbridge/consumer"
	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/observe"
)

const (
	callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	// A later version's traceparent, with a field of its own, and a
	// tracestate OpenTelemetry would not parse: what this process cannot
	// re-encode must still reach the outcome as it came.
	laterParent = "01-" + callerTrace + "-00f067aa0ba902b7-01-extra"
	oddState    = "Vendor X=1"
)

// The outcome's trace context is decided by the consumer from the context
// the request was handled in; the Observer supplies that context and
// nothing else. Without tracing, and without an Observer, the outcome
// carries the request's trace context byte for byte; with tracing, the
// context of the handling span, which continues the request's trace.
func TestTheOutcomeContinuesTheTraceItWasHandledIn(t *testing.T) {
	ctx := context.Background()
	ref := event.RequestRef{ID: "r-1", Source: "urn:erp:acme", EmployeeID: "E-1", ClientID: 1,
		TraceParent: laterParent, TraceState: oddState}

	require.Equal(t, ref, consumer.OutcomeTrace(ctx, ref), "no Observer: the request's own")

	off, err := observe.New(ctx, observe.Config{})
	require.NoError(t, err)
	d := off.Consumer().Delivery(ctx, 1)
	hctx := d.Request(ctx, event.TypeCardRequested, ref)
	require.Equal(t, ref, consumer.OutcomeTrace(hctx, ref), "tracing off: the request's own, unchanged")
	d.Settled("ack", nil)

	on, err := observe.New(ctx, observe.Config{Exporter: tracetest.NewInMemoryExporter()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = on.Shutdown(ctx) })
	ref.TraceParent, ref.TraceState = "00-"+callerTrace+"-00f067aa0ba902b7-01", "vendor=x"
	d = on.Consumer().Delivery(ctx, 1)
	hctx = d.Request(ctx, event.TypeCardRequested, ref)
	handling := trace.SpanContextFromContext(hctx)
	out := consumer.OutcomeTrace(hctx, ref)
	require.Equal(t, "00-"+callerTrace+"-"+handling.SpanID().String()+"-01", out.TraceParent, "tracing on: the handling span's")
	require.Equal(t, "vendor=x", out.TraceState)
	want := ref
	want.TraceParent, want.TraceState = out.TraceParent, out.TraceState
	require.Equal(t, want, out, "nothing else changes")
	d.Settled("ack", nil)
}
