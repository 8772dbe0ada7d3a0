package consumer

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/cardbridge/cardbridge/event"
)

// outcomeTrace returns ref with the trace context its outcome event
// carries: the outcome continues the trace the request was handled in.
// When this process records the handling, ctx holds a span of its own
// (not one extracted from the request), and the outcome carries that
// span's context, so a subscriber's spans hang under cardbridge's rather
// than skipping it. Otherwise the outcome carries the request's own trace
// context exactly as it came: re-encoding it would drop what this
// process cannot parse (a later traceparent version's fields, an odd
// tracestate) for no gain.
//
// The Observer only supplies ctx; the decision is made here, where the
// outcome is built, so no observer can rewrite what is published.
func outcomeTrace(ctx context.Context, ref event.RequestRef) event.RequestRef {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || sc.IsRemote() {
		return ref
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	ref.TraceParent, ref.TraceState = carrier["traceparent"], carrier["tracestate"]
	return ref
}
