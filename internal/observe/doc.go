// Package observe is how the people who run cardbridge see into it:
// the process's logger (NewLogger), Prometheus metrics, OpenTelemetry
// tracing, and log lines that name the request they are about.
//
// One Telemetry per process holds a Prometheus registry of its own (not
// the global one, so several Services can run in one test binary) and a
// tracer. The consumer, the store, the MBanq client and the relay know
// nothing of Prometheus or of recording spans: each takes a small Observer
// interface in its configuration, and Telemetry hands out the
// implementations. (The consumer reads the trace context of its handling
// context, through OpenTelemetry's API, to decide what the outcome
// carries.)
//
// Tracing is off unless an OTLP endpoint is configured; until then
// cardbridge still forwards the caller's W3C trace context unchanged (to
// MBanq, and onto the outcome event) but starts no spans and exports
// nothing. When it is on, the handling of a request is a span, child of
// the request's traceparent; every MBanq attempt, and the request's share
// of each store batch, is a child span; and the outcome event carries the
// handling span's context, so a subscriber's spans hang under
// cardbridge's. Observers only read: the consumer decides what the
// outcome carries, from the context the request was handled in.
package observe
