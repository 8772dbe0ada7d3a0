package observe

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/cardbridge/cardbridge/internal/secret"
)

// Config says where telemetry goes.
type Config struct {
	// TracesURL is the OTLP/HTTP endpoint spans are exported to, e.g.
	// http://collector:4318/v1/traces. Empty turns tracing off.
	TracesURL string
	// ServiceName is service.name in traces (default "cardbridge");
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override it.
	ServiceName string
	// Exporter, when set, receives the spans instead of TracesURL (tests).
	Exporter sdktrace.SpanExporter
	// Logger receives export errors.
	Logger *slog.Logger
}

// Telemetry is one process's metrics and tracer. Its Observers are safe
// for concurrent use.
type Telemetry struct {
	m        *metrics
	tracer   trace.Tracer
	tracing  bool
	provider *sdktrace.TracerProvider // nil when tracing is off
	log      *slog.Logger

	inFlight atomic.Int64
	handled  sync.Map // outcome -> *atomic.Int64, for Snapshot
}

// propagator is W3C trace context, the format of the CloudEvents
// distributed-tracing extension and of MBanq's traceparent header.
var propagator = propagation.TraceContext{}

// New sets up metrics and, when cfg names an endpoint or an exporter,
// tracing. Shutdown flushes what is left.
func New(ctx context.Context, cfg Config) (*Telemetry, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Telemetry{m: newMetrics(), log: cfg.Logger, tracer: noop.NewTracerProvider().Tracer("")}
	exp := cfg.Exporter
	if exp == nil && cfg.TracesURL != "" {
		// The exporter would only log a bad URL and drop every span.
		if u, err := url.Parse(cfg.TracesURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("OTLP traces endpoint %q is not an http(s) URL", secret.RedactURL(cfg.TracesURL))
		}
		var err error
		// Headers, timeout, compression and certificates still come from
		// the standard OTEL_EXPORTER_OTLP_* variables, which the exporter
		// reads itself.
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(cfg.TracesURL))
		if err != nil {
			return nil, fmt.Errorf("OTLP trace exporter: %w", err)
		}
	}
	if exp == nil {
		return t, nil
	}
	name := cfg.ServiceName
	if name == "" {
		name = "cardbridge"
	}
	// Later options win: the environment overrides the default name.
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", name)),
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	// The SDK reports export failures through the process-wide handler
	// only; send them to our log rather than to the standard logger.
	log := cfg.Logger
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing", "err", err)
	}))
	t.provider = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	t.tracer = t.provider.Tracer("github.com/cardbridge/cardbridge")
	t.tracing = true
	return t, nil
}

// Tracing reports whether spans are recorded and exported.
func (t *Telemetry) Tracing() bool { return t.tracing }

// Flush exports the spans buffered so far, within ctx.
func (t *Telemetry) Flush(ctx context.Context) error {
	if t.provider == nil {
		return nil
	}
	return t.provider.ForceFlush(ctx)
}

// Shutdown exports the spans still buffered, within ctx.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t.provider == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// Handler serves the metrics in the Prometheus exposition format.
func (t *Telemetry) Handler() http.Handler {
	return promhttp.HandlerFor(t.m.reg, promhttp.HandlerOpts{
		// A failing collector (the database is down) must not hide every
		// other series: the scrape goes on without it.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      slogErrorLog{t.log},
	})
}

// Register adds a collector to the registry, e.g. WatchStore's.
func (t *Telemetry) Register(c prometheus.Collector) error { return t.m.reg.Register(c) }

// Snapshot is what this process did since it started, for the console.
type Snapshot struct {
	InFlight int64            `json:"inFlight"`
	Handled  map[string]int64 `json:"handled"` // by outcome
}

// Snapshot returns the current counts.
func (t *Telemetry) Snapshot() Snapshot {
	s := Snapshot{InFlight: t.inFlight.Load(), Handled: map[string]int64{}}
	for _, o := range []string{OutcomeIssued, OutcomeFailed, OutcomeDuplicate, OutcomeRetry} {
		s.Handled[o] = 0
	}
	t.handled.Range(func(k, v any) bool {
		s.Handled[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return s
}

func (t *Telemetry) countHandled(outcome string) {
	v, _ := t.handled.LoadOrStore(outcome, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// slogErrorLog adapts promhttp's error log to slog.
type slogErrorLog struct{ log *slog.Logger }

func (l slogErrorLog) Println(v ...any) { l.log.Warn("serving metrics", "err", fmt.Sprint(v...)) }

// seconds is d in seconds, as Prometheus wants it.
func seconds(d time.Duration) float64 { return d.Seconds() }
