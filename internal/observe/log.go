package observe

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

type logAttrsKey struct{}

// WithLogAttrs returns ctx carrying attrs, which every line logged with
// that context (by a Logger from this package) adds. Code deep in a call,
// such as the MBanq client, then names the request it works for without
// being told of requests.
func WithLogAttrs(ctx context.Context, attrs ...slog.Attr) context.Context {
	if prev, ok := ctx.Value(logAttrsKey{}).([]slog.Attr); ok {
		attrs = append(append([]slog.Attr(nil), prev...), attrs...)
	}
	return context.WithValue(ctx, logAttrsKey{}, attrs)
}

// Logger returns log with a handler that adds the context's log
// attributes (WithLogAttrs) and its trace id to every line logged with a
// context (InfoContext, LogAttrs...).
func Logger(log *slog.Logger) *slog.Logger {
	if _, ok := log.Handler().(contextHandler); ok {
		return log
	}
	return slog.New(contextHandler{log.Handler()})
}

type contextHandler struct{ next slog.Handler }

func (h contextHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	attrs, _ := ctx.Value(logAttrsKey{}).([]slog.Attr)
	sc := trace.SpanContextFromContext(ctx)
	if len(attrs) > 0 || sc.IsValid() {
		// The record is shared with the caller: add to a copy.
		r = r.Clone()
		r.AddAttrs(attrs...)
		if sc.IsValid() {
			r.AddAttrs(slog.String("trace_id", sc.TraceID().String()))
		}
	}
	return h.next.Handle(ctx, r)
}

func (h contextHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return contextHandler{h.next.WithAttrs(attrs)}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{h.next.WithGroup(name)}
}
